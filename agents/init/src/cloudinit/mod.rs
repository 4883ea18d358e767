//! `crust-agent cloudinit` (cloudinit.service): finds the user data and metadata, checks the
//! whole document, and only then applies it, as coreos-cloudinit did: hostname, SSH keys for
//! `core`, write_files, /etc/hosts, coreos.units (files, drop-ins, enable, mask, commands), the
//! etcd2/fleet/flannel/locksmith/update conversions, coreos.oem, and `$private_ipv4`-style
//! substitution. A document with errors is reported (console and this unit's output) and
//! nothing of it is applied; the boot goes on. A `#!` script runs once per distinct content.
//!
//! `crust-agent cloudinit --from-file FILE` applies a file instead of probing data sources.

pub mod apply;
pub mod source;

use crate::proto::Request;
use crust_common::cloudconfig::{self, Substitutions, UserDataKind};
use source::{Found, MetaData};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

const STATE_DIR: &str = "/var/lib/crust/cloudinit";
const FW_CFG_SYSFS: &str = "/sys/firmware/qemu_fw_cfg";

pub fn main(args: &[String]) -> i32 {
    let mut from_file = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--from-file" => from_file = it.next().cloned(),
            other => {
                eprintln!("cloudinit: unknown argument {other:?}; usage: crust-agent cloudinit [--from-file FILE]");
                return 2;
            }
        }
    }
    let found = match from_file {
        Some(f) => match std::fs::read(&f) {
            Ok(b) => Found {
                source: format!("file {f}"),
                user_data: Some(b),
                meta: MetaData::default(),
            },
            Err(e) => {
                eprintln!("cloudinit: reading {f}: {e}");
                return 1;
            }
        },
        None => match probe() {
            Ok(Some(f)) => f,
            Ok(None) => {
                println!("cloudinit: no data source found (config-2 drive, fw_cfg, cloud-config-url, EC2, GCE, OEM); nothing to do");
                return 0;
            }
            Err(e) => {
                report(&format!("cloudinit: {e}"));
                return 1;
            }
        },
    };
    println!("cloudinit: using {}", found.source);
    match run(&found) {
        Ok(()) => 0,
        Err(e) => {
            report(&format!("cloudinit: {e}"));
            1
        }
    }
}

/// Errors go to the console as well as to this unit's output.
fn report(msg: &str) {
    eprintln!("{msg}");
    if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        use std::io::Write;
        let _ = writeln!(c, "{msg}");
    }
}

/// Data sources in order; the first one present wins.
fn probe() -> Result<Option<Found>, String> {
    // A config-2 ISO on an emulated CD-ROM drive appears only with the SCSI CD driver (a module);
    // machines without SCSI devices skip it. isofs is loaded when an ISO is found.
    if std::fs::read_dir("/sys/bus/scsi/devices").is_ok_and(|mut d| d.next().is_some()) {
        let _ = load_module("sr_mod");
    }
    if let Some(f) = source::config_drive() {
        return f.map(Some);
    }
    if !Path::new(FW_CFG_SYSFS).exists() {
        let _ = load_module("qemu_fw_cfg");
    }
    if let Some(f) = source::fw_cfg(Path::new(FW_CFG_SYSFS)) {
        return f.map(Some);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(url) = source::cmdline_url(&cmdline) {
        return source::from_url(&url).map(Some);
    }
    let dmi =
        |f: &str| std::fs::read_to_string(format!("/sys/class/dmi/id/{f}")).unwrap_or_default();
    match source::cloud_from_dmi(&dmi("sys_vendor"), &dmi("product_name")) {
        Some(source::Cloud::Ec2) => return source::ec2("http://169.254.169.254").map(Some),
        Some(source::Cloud::Gce) => {
            return source::gce("http://metadata.google.internal").map(Some)
        }
        None => {}
    }
    if let Some(f) = source::oem() {
        return f.map(Some);
    }
    Ok(None)
}

/// Loads a kernel module and what it depends on, from the running kernel's modules.dep.
pub(crate) fn load_module(name: &str) -> Result<(), String> {
    use crate::kernel::{Kernel, Linux};
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| e.to_string())?;
    let base = Path::new("/usr/lib/modules").join(release);
    let dep = std::fs::read_to_string(base.join("modules.dep")).map_err(|e| e.to_string())?;
    let find = |n: &str| {
        dep.lines().find(|l| {
            let path = l.split(':').next().unwrap_or("");
            let file = path.rsplit('/').next().unwrap_or("");
            let stem = file.split(".ko").next().unwrap_or("");
            stem.replace('-', "_") == n.replace('-', "_")
        })
    };
    let line = find(name).ok_or_else(|| format!("module {name} is not in modules.dep"))?;
    let (path, deps) = line.split_once(':').unwrap_or((line, ""));
    let k = Linux;
    // Dependencies are listed nearest first; load the farthest first.
    for d in deps.split_whitespace().rev().chain([path]) {
        let _ = k.finit_module(&base.join(d));
    }
    Ok(())
}

/// The cluster NIC's address: eth0's lease, waited for (bounded) when the document needs it.
fn private_ipv4(wait: bool) -> Option<Ipv4Addr> {
    let deadline = Instant::now() + Duration::from_secs(if wait { 20 } else { 0 });
    loop {
        if let Some(a) = std::fs::read_to_string("/run/crust/net/eth0.ipv4")
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(a);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run(found: &Found) -> Result<(), String> {
    let bytes = cloudconfig::user_data_bytes(found.user_data.as_deref().unwrap_or_default())
        .map_err(|e| format!("the user data looks gzip-compressed but {e}; nothing applied"))?;
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let kind = cloudconfig::classify(&raw);
    let uses_addresses = raw.contains("$private_ipv4") || raw.contains("$public_ipv4");
    let private = found
        .meta
        .local_ipv4
        .or_else(|| private_ipv4(uses_addresses));
    let (private6, public6) = ipv6_of(
        &std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default(),
        "eth0",
    );
    let subs = Substitutions {
        private_ipv4: private,
        // Sources without a public address (config-2, fw_cfg) use the private one, so
        // `$public_ipv4` in CoreOS-era configs still names a reachable address.
        public_ipv4: found.meta.public_ipv4.or(private),
        private_ipv6: private6,
        public_ipv6: public6,
    };
    for var in subs.unresolved(&raw) {
        report(&format!(
            "cloudinit: warning: {var} is used but no address is known; it becomes empty"
        ));
    }
    if kind == UserDataKind::Unknown {
        return Err(
            "the user data is neither a #cloud-config nor a #! script; nothing applied".into(),
        );
    }
    let cfg = if kind == UserDataKind::CloudConfig {
        let text = cloudconfig::substitute(&raw, &subs);
        match cloudconfig::parse(&text) {
            Ok((cfg, warnings)) => {
                for w in warnings {
                    report(&format!(
                        "cloudinit: user data line {}: warning: {}",
                        w.line, w.message
                    ));
                }
                cfg
            }
            Err(e) => {
                let v = cloudconfig::validate(&text);
                report(&v.render("user-data"));
                return Err(format!("{e}; nothing from the document was applied"));
            }
        }
    } else {
        cloudconfig::CloudConfig::default()
    };
    let base = std::fs::read_to_string("/etc/coreos/update.conf")
        .or_else(|_| std::fs::read_to_string("/usr/share/coreos/update.conf"))
        .unwrap_or_default();
    let plan = apply::plan_with(
        &cfg,
        &found.meta,
        &base,
        &apply::Accounts::read(Path::new("/")),
    )?;
    apply::apply(Path::new("/"), &plan)?;
    if let Some(h) = &plan.hostname {
        let short = h.split('.').next().unwrap_or(h);
        nix::unistd::sethostname(short)
            .map_err(|e| format!("setting the hostname {short:?}: {e}"))?;
        std::fs::write("/etc/hostname", format!("{short}\n"))
            .map_err(|e| format!("writing /etc/hostname: {e}"))?;
    }
    call(&Request::DaemonReload)?;
    let mut failed = Vec::new();
    for c in &plan.commands {
        let req = match c.verb {
            "start" => Request::Start {
                unit: c.unit.clone(),
            },
            "stop" => Request::Stop {
                unit: c.unit.clone(),
            },
            // try-restart: only a running unit is restarted.
            "try-restart" => {
                let r = crate::ctl::call(
                    crate::proto::SOCKET,
                    &Request::IsActive {
                        unit: c.unit.clone(),
                    },
                )
                .map_err(|e| e.to_string())?;
                if r.active_state.as_deref() != Some("active") {
                    continue;
                }
                Request::Restart {
                    unit: c.unit.clone(),
                }
            }
            _ => Request::Restart {
                unit: c.unit.clone(),
            },
        };
        if let Err(e) = call(&req) {
            failed.push(format!("{} {}: {e}", c.verb, c.unit));
        }
    }
    println!(
        "cloudinit: applied {} file operation(s), {} unit command(s){}",
        plan.files.len(),
        plan.commands.len(),
        plan.hostname
            .as_ref()
            .map(|h| format!(", hostname {h}"))
            .unwrap_or_default()
    );
    if !failed.is_empty() {
        return Err(format!("unit commands failed: {}", failed.join("; ")));
    }
    // As coreos-cloudinit: the metadata (hostname, the platform's SSH keys) is applied first,
    // then a user-data script runs.
    if kind == UserDataKind::Script {
        return run_script_once(raw.as_bytes());
    }
    Ok(())
}

fn call(req: &Request) -> Result<(), String> {
    let r = crate::ctl::call(crate::proto::SOCKET, req).map_err(|e| e.to_string())?;
    if r.ok {
        Ok(())
    } else {
        Err(r.error.unwrap_or_else(|| "refused".into()))
    }
}

/// Runs a `#!` user-data script once per distinct content (a hash under /var/lib/crust).
fn run_script_once(script: &[u8]) -> Result<(), String> {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(script)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let done = Path::new(STATE_DIR).join(format!("script-{hash}.done"));
    if done.exists() {
        println!("cloudinit: the user-data script ran on an earlier boot; not again");
        return Ok(());
    }
    std::fs::create_dir_all(STATE_DIR).map_err(|e| format!("creating {STATE_DIR}: {e}"))?;
    let path = Path::new(STATE_DIR).join("user-data-script");
    std::fs::write(&path, script).map_err(|e| format!("writing {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    let status = std::process::Command::new(&path)
        .status()
        .map_err(|e| format!("running the user-data script: {e}"))?;
    std::fs::write(&done, format!("{status}\n")).map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the user-data script {status}"))
    }
}

/// `$private_ipv6` and `$public_ipv6` from the kernel's addresses of `link` (the text of
/// `/proc/net/if_inet6`): global-scope addresses only; a unique-local one (fc00::/7) is the
/// private address, a globally routed one the public address, and each stands in for the other
/// when only one kind exists (as `$public_ipv4` does).
pub fn ipv6_of(if_inet6: &str, link: &str) -> (Option<Ipv6Addr>, Option<Ipv6Addr>) {
    let mut ula = None;
    let mut global = None;
    for line in if_inet6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // address ifindex prefixlen scope flags name; scope 00 is global
        if f.len() != 6 || f[5] != link || f[3] != "00" {
            continue;
        }
        let Ok(bits) = u128::from_str_radix(f[0], 16) else {
            continue;
        };
        let a = Ipv6Addr::from(bits);
        if a.segments()[0] & 0xfe00 == 0xfc00 {
            ula.get_or_insert(a);
        } else {
            global.get_or_insert(a);
        }
    }
    (ula.or(global), global.or(ula))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_come_from_global_scope_on_the_link() {
        let text = "\
fe80000000000000505400fffe123456 02 40 20 80     eth0
fd000000000000000000000000000005 02 40 00 80     eth0
20010db8000000000000000000000005 02 40 00 80     eth0
20010db8000000000000000000000009 03 40 00 80     eth1
00000000000000000000000000000001 01 80 10 80       lo
";
        let (private, public) = ipv6_of(text, "eth0");
        assert_eq!(private, Some("fd00::5".parse().unwrap()));
        assert_eq!(public, Some("2001:db8::5".parse().unwrap()));
        let only_ula = "fd000000000000000000000000000005 02 40 00 80 eth0\n";
        assert_eq!(
            ipv6_of(only_ula, "eth0"),
            (
                Some("fd00::5".parse().unwrap()),
                Some("fd00::5".parse().unwrap())
            )
        );
        assert_eq!(ipv6_of(text, "eth2"), (None, None));
        assert_eq!(ipv6_of("garbage\n", "eth0"), (None, None));
    }
}
