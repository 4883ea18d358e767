//! The QEMU command line of one node, built without I/O so it can be checked in unit tests.

use crate::accel::{qemu_opt, Accel};
use crate::state::NodePaths;
use crate::switch::frame::Mac;
use std::path::{Path, PathBuf};

/// Name the guest's console shell port has; the image's shell unit opens `/dev/hvc0`, and the
/// name lets tools find the port as `/dev/virtio-ports/org.crust.shell` too.
pub const SHELL_PORT: &str = "org.crust.shell";

/// Everything that varies between node command lines.
#[derive(Debug, Clone)]
pub struct QemuSpec<'a> {
    pub name: &'a str,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub ovmf_code: &'a Path,
    pub paths: &'a NodePaths,
    /// Whether QEMU forks into the background (CLI) or stays our child (tests).
    pub daemonize: bool,
    /// The NIC on the cluster switch; it comes before the management NIC so the guest names
    /// it eth0.
    pub cluster_nic: Option<ClusterNic>,
    /// Port forwards on the management NIC.
    pub mgmt: Mgmt,
    /// Arguments that attach the node's configuration (see [`crate::config::qemu_args`]).
    pub config_args: Vec<String>,
}

/// Where guests find host services (discovery, channel server, registry) on the management
/// network: QEMU's user network forwards connections to this address to host loopback ports.
pub const HOST_SERVICES_IP: &str = "10.0.2.100";

/// Port forwards of the management NIC (QEMU user networking, `restrict=on`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mgmt {
    /// `(host port on 127.0.0.1, guest port)`: host connections reach guest services.
    pub hostfwd: Vec<(u16, u16)>,
    /// `(guest port on HOST_SERVICES_IP, host port on 127.0.0.1)`: guest connections reach
    /// host services.
    pub guestfwd: Vec<(u16, u16)>,
    /// The netcat QEMU runs for each guest connection to a host service.
    pub nc: PathBuf,
}

impl Mgmt {
    /// The `-netdev user,...` value.
    pub fn netdev(&self) -> String {
        let mut s = String::from("user,id=mgmt,restrict=on");
        for (host, guest) in &self.hostfwd {
            s.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        // `cmd:` starts one relay per connection; a `tcp:` chardev would carry only one
        // connection for the machine's whole life. `-N` passes the guest's half-close on.
        for (guest, host) in &self.guestfwd {
            s.push_str(&format!(
                ",guestfwd=tcp:{HOST_SERVICES_IP}:{guest}-cmd:{} -N 127.0.0.1 {host}",
                qemu_opt(&self.nc.display().to_string())
            ));
        }
        s
    }
}

/// A node's port on the cluster switch: QEMU sends frames from `local` to `remote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNic {
    pub local: PathBuf,
    pub remote: PathBuf,
    pub mac: Mac,
}

/// Arguments after the program name. Paths are taken as given (callers pass absolute ones).
pub fn qemu_args(spec: &QemuSpec) -> Vec<String> {
    let p = spec.paths;
    let path = |x: &Path| qemu_opt(&x.display().to_string());
    let mut a: Vec<String> = spec.accel.args().iter().map(|s| s.to_string()).collect();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", spec.name]);
    push(&["-machine", "q35"]);
    push(&["-m", &spec.memory_mib.to_string()]);
    push(&["-smp", &spec.cpus.to_string()]);
    push(&["-display", "none", "-nodefaults", "-no-user-config"]);
    if spec.daemonize {
        push(&["-daemonize"]);
    }
    push(&["-pidfile", &p.pidfile().display().to_string()]);
    push(&[
        "-drive",
        &format!(
            "if=pflash,format=raw,readonly=on,file={}",
            path(spec.ovmf_code)
        ),
    ]);
    push(&[
        "-drive",
        &format!("if=pflash,format=raw,file={}", path(&p.vars())),
    ]);
    // bootindex makes OVMF boot the disk first and drop network boot options, so a disk that
    // fails to boot fails fast instead of waiting out PXE and HTTP boot timeouts.
    push(&[
        "-drive",
        &format!("file={},if=none,id=disk0,format=qcow2", path(&p.overlay())),
    ]);
    push(&["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]);
    push(&["-serial", &format!("file:{}", p.console().display())]);
    push(&["-device", "virtio-serial-pci"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=shell,path={},server=on,wait=off",
            path(&p.shell_sock())
        ),
    ]);
    push(&[
        "-device",
        &format!("virtconsole,chardev=shell,name={SHELL_PORT}"),
    ]);
    // Kept for later lifecycle verbs (graceful powerdown, reboot, link control).
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", path(&p.qmp_sock())),
    ]);
    if let Some(nic) = &spec.cluster_nic {
        push(&[
            "-netdev",
            &format!(
                "dgram,id=c0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
                path(&nic.local),
                path(&nic.remote)
            ),
        ]);
        push(&[
            "-device",
            &format!("virtio-net-pci,netdev=c0,mac={},romfile=", nic.mac),
        ]);
    }
    push(&["-netdev", &spec.mgmt.netdev()]);
    // No iPXE option ROM: crust never boots from the management network.
    push(&["-device", "virtio-net-pci,netdev=mgmt,romfile="]);
    push(&["-device", "virtio-rng-pci"]);
    a.extend(spec.config_args.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(paths: &'a NodePaths, daemonize: bool) -> QemuSpec<'a> {
        QemuSpec {
            name: "default-node0",
            accel: Accel::Tcg,
            memory_mib: 512,
            cpus: 1,
            ovmf_code: Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            paths,
            daemonize,
            cluster_nic: Some(ClusterNic {
                local: paths.dir.join("net.sock"),
                remote: "/s/default/switch/switch.sock".into(),
                mac: Mac([2, 0, 0, 0, 0, 1]),
            }),
            mgmt: Mgmt::default(),
            config_args: Vec::new(),
        }
    }

    #[test]
    fn full_command_line() {
        let paths = NodePaths::new("/s/default/node0".into());
        let args = qemu_args(&spec(&paths, true)).join(" ");
        let want = "-accel tcg -name default-node0 -machine q35 -m 512 -smp 1 -display none \
            -nodefaults -no-user-config -daemonize -pidfile /s/default/node0/qemu.pid \
            -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
            -drive if=pflash,format=raw,file=/s/default/node0/vars.fd \
            -drive file=/s/default/node0/overlay.qcow2,if=none,id=disk0,format=qcow2 \
            -device virtio-blk-pci,drive=disk0,bootindex=1 \
            -serial file:/s/default/node0/console.log -device virtio-serial-pci \
            -chardev socket,id=shell,path=/s/default/node0/shell.sock,server=on,wait=off \
            -device virtconsole,chardev=shell,name=org.crust.shell \
            -qmp unix:/s/default/node0/qmp.sock,server=on,wait=off \
            -netdev dgram,id=c0,local.type=unix,local.path=/s/default/node0/net.sock,\
            remote.type=unix,remote.path=/s/default/switch/switch.sock \
            -device virtio-net-pci,netdev=c0,mac=02:00:00:00:00:01,romfile= \
            -netdev user,id=mgmt,restrict=on -device virtio-net-pci,netdev=mgmt,romfile= \
            -device virtio-rng-pci";
        assert_eq!(args, want);
    }

    #[test]
    fn child_mode_and_odd_paths() {
        let paths = NodePaths::new("/s/a,b/node0".into());
        let args = qemu_args(&spec(&paths, false));
        assert!(!args.iter().any(|a| a == "-daemonize"));
        assert!(args
            .iter()
            .any(|a| a == "file=/s/a,,b/node0/overlay.qcow2,if=none,id=disk0,format=qcow2"));
        // Never -no-reboot: a guest reboot restarts in place and prints another ready line.
        assert!(!args.iter().any(|a| a == "-no-reboot"));
        assert!(args.iter().any(|a| a == "user,id=mgmt,restrict=on"));
        // The cluster NIC is the first network device, so the guest calls it eth0.
        let nics: Vec<&String> = args
            .iter()
            .filter(|a| a.starts_with("virtio-net-pci"))
            .collect();
        assert_eq!(nics.len(), 2);
        assert!(nics[0].contains("netdev=c0"), "{nics:?}");
    }

    #[test]
    fn management_forwards_stay_on_loopback_and_restricted() {
        let m = Mgmt {
            hostfwd: vec![(40022, 22), (40079, 2379)],
            guestfwd: vec![(2379, 41000)],
            nc: "/usr/bin/nc".into(),
        };
        assert_eq!(
            m.netdev(),
            "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22,\
             hostfwd=tcp:127.0.0.1:40079-:2379,\
             guestfwd=tcp:10.0.2.100:2379-cmd:/usr/bin/nc -N 127.0.0.1 41000"
        );
    }
}
