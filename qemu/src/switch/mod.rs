//! The cluster network: a virtual L2 switch run as a userspace process (or thread), with DHCP
//! and fault injection.
//!
//! Every node's first NIC is a QEMU `-netdev dgram` whose local end is `<node>/net.sock` and
//! whose remote end is the switch's one datagram socket, `<cluster>/switch/switch.sock`; the
//! switch tells nodes apart by the sender's socket path. No root, no TAP, no host IP traffic.
//!
//! Addressing (node `i`, counting from 0, `n = i + 1`): MAC `02:00:00:00:hi:lo` and IPv4
//! `10.0.hi.lo/24` where `n = hi * 256 + lo`; with at most 64 nodes that is `10.0.0.1` ...
//! `10.0.0.64`. The switch itself is `10.0.0.254` / `02:00:00:00:00:fe` (DHCP server identifier;
//! it answers ARP for that address). No router, no DNS.
//!
//! Pieces: [`frame`] parsing and building, [`dhcp`] the server, [`fault`] the rules,
//! [`fabric`] the forwarding engine (all pure), [`control`] the JSON-lines protocol on
//! `control.sock`, [`daemon`] the sockets.

pub mod control;
pub mod daemon;
pub mod dhcp;
pub mod fabric;
pub mod fault;
pub mod frame;

use crate::node::LaunchMode;
use crate::process;
use control::Request;
use fabric::{Port, Subnet, SwitchStatus};
use frame::Mac;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Nodes the addressing scheme can number inside one /24 (1 ..= 253; .254 is the switch).
pub const MAX_PORTS: usize = 253;
const MAX_SOCKET_PATH: usize = 107;
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub fn node_mac(index: usize) -> Mac {
    let n = index + 1;
    Mac([2, 0, 0, 0, (n >> 8) as u8, n as u8])
}

pub fn node_ip(index: usize) -> Ipv4Addr {
    let n = index + 1;
    Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)
}

/// The cluster network's fixed addresses.
pub fn subnet() -> Subnet {
    Subnet {
        switch_mac: Mac([2, 0, 0, 0, 0, 0xfe]),
        switch_ip: Ipv4Addr::new(10, 0, 0, 254),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        lease_secs: 86400,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("switch config {path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("switch control socket {sock}: {detail}; is the cluster up? (`crust cluster status`)")]
    Control { sock: PathBuf, detail: String },
    #[error("the switch refused the request: {0}")]
    Refused(String),
    #[error("the cluster switch did not start: {detail}; see {log}")]
    Start { log: PathBuf, detail: String },
    #[error(
        "socket path {path} is {len} bytes, over the {MAX_SOCKET_PATH}-byte unix limit; \
         set CRUST_STATE to a shorter directory"
    )]
    SocketPath { path: PathBuf, len: usize },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SwitchError {
    let what = what.into();
    move |source| SwitchError::Io { what, source }
}

impl From<SwitchError> for crate::Error {
    fn from(e: SwitchError) -> Self {
        match e {
            SwitchError::Io { what, source } => crate::Error::Io { what, source },
            other => crate::Error::Io {
                what: "cluster network".into(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// One port as `switch.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// The node's end: QEMU's `local.path`, which is where its frames come from.
    pub socket: PathBuf,
}

/// `<cluster>/switch/switch.json`: what the switch serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Seeds the loss PRNG, so a cluster's drops repeat from run to run.
    pub seed: u64,
    pub ports: Vec<PortConfig>,
    /// A host loopback port where the switch process also serves the cluster's etcd-style
    /// discovery (a single-member crust kv), for `cluster up --discovery`.
    #[serde(default)]
    pub discovery_port: Option<u16>,
}

impl SwitchConfig {
    /// Node `i` of `nodes` gets [`node_mac`]`(i)`, [`node_ip`]`(i)` and `<node dir>/net.sock`.
    pub fn for_nodes(cluster: &str, nodes: &[(String, PathBuf)]) -> Self {
        SwitchConfig {
            seed: fault::seed_from(cluster),
            ports: nodes
                .iter()
                .enumerate()
                .map(|(i, (name, dir))| PortConfig {
                    name: name.clone(),
                    mac: node_mac(i),
                    ip: node_ip(i),
                    socket: net_sock(dir),
                })
                .collect(),
            discovery_port: None,
        }
    }

    pub fn ports(&self) -> Vec<Port> {
        self.ports
            .iter()
            .map(|p| Port {
                name: p.name.clone(),
                mac: p.mac,
                ip: p.ip,
            })
            .collect()
    }

    pub fn write(&self, path: &Path) -> Result<(), SwitchError> {
        let json = serde_json::to_string_pretty(self).map_err(|e| SwitchError::Config {
            path: path.into(),
            detail: e.to_string(),
        })?;
        std::fs::write(path, json + "\n").map_err(io(format!("writing {}", path.display())))
    }

    pub fn read(path: &Path) -> Result<Self, SwitchError> {
        let text =
            std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        let c: SwitchConfig = serde_json::from_str(&text).map_err(|e| SwitchError::Config {
            path: path.into(),
            detail: e.to_string(),
        })?;
        if c.ports.len() > MAX_PORTS {
            return Err(SwitchError::Config {
                path: path.into(),
                detail: format!("{} ports, at most {MAX_PORTS}", c.ports.len()),
            });
        }
        Ok(c)
    }
}

/// The node's end of its cluster NIC.
pub fn net_sock(node_dir: &Path) -> PathBuf {
    node_dir.join("net.sock")
}

/// The files of a cluster's switch, all in `<cluster>/switch/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchPaths {
    pub dir: PathBuf,
}

impl SwitchPaths {
    pub fn of_cluster(cluster_dir: &Path) -> Self {
        SwitchPaths {
            dir: cluster_dir.join("switch"),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("switch.json")
    }
    /// Where nodes send their frames (QEMU's `remote.path`).
    pub fn data_sock(&self) -> PathBuf {
        self.dir.join("switch.sock")
    }
    pub fn control_sock(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("switch.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("switch.log")
    }

    /// Fails early when a socket path of the switch or of a node would not fit `sockaddr_un`.
    pub fn check_socket_len(&self, config: &SwitchConfig) -> Result<(), SwitchError> {
        let paths = [self.data_sock(), self.control_sock()];
        let nodes = config.ports.iter().map(|p| p.socket.clone());
        for path in paths.into_iter().chain(nodes) {
            let len = path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(SwitchError::SocketPath { path, len });
            }
        }
        Ok(())
    }
}

/// Where the switch runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `PROGRAM cluster switch-daemon --dir D --daemonize`: outlives the starting command.
    Daemon(PathBuf),
    /// The same without `--daemonize`, our child with `PR_SET_PDEATHSIG`.
    Child(PathBuf),
    /// A thread of this process: for programs that are not the crust CLI (test binaries),
    /// which cannot run `cluster switch-daemon`. It ends with the process at the latest.
    Thread,
}

/// The crust CLI can run the switch as its own process; any other program hosts it in a thread.
pub fn choose_host(mode: LaunchMode, exe: Option<&Path>) -> Host {
    match exe {
        Some(p) if p.file_name().is_some_and(|n| n == "crust") => match mode {
            LaunchMode::Daemon => Host::Daemon(p.to_path_buf()),
            LaunchMode::Child => Host::Child(p.to_path_buf()),
        },
        _ => Host::Thread,
    }
}

/// Whether `pid` is the switch daemon serving `dir`.
pub fn is_switch(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let dir = dir.as_os_str().as_encoded_bytes();
    args.contains(&&b"switch-daemon"[..]) && args.contains(&dir)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A handle on a cluster's switch, wherever it runs.
#[derive(Debug)]
pub struct Switch {
    paths: SwitchPaths,
    child: Mutex<Option<Child>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Switch {
    /// A handle on a switch that may or may not run (a reopened cluster).
    pub fn open(cluster_dir: &Path) -> Switch {
        Switch {
            paths: SwitchPaths::of_cluster(cluster_dir),
            child: Mutex::new(None),
            thread: Mutex::new(None),
        }
    }

    pub fn paths(&self) -> &SwitchPaths {
        &self.paths
    }

    /// Writes `switch.json` and starts the switch; returns once it answers on its control
    /// socket.
    pub fn start(
        cluster_dir: &Path,
        config: &SwitchConfig,
        host: &Host,
    ) -> Result<Switch, SwitchError> {
        let sw = Switch::open(cluster_dir);
        let p = &sw.paths;
        p.check_socket_len(config)?;
        std::fs::create_dir_all(&p.dir).map_err(io(format!("creating {}", p.dir.display())))?;
        config.write(&p.config())?;
        match host {
            Host::Thread => {
                let bound = daemon::bind(p)?;
                let handle = std::thread::Builder::new()
                    .name("crust-switch".into())
                    .spawn(move || {
                        if let Err(e) = daemon::serve(bound) {
                            eprintln!("crust switch: {e}");
                        }
                    })
                    .map_err(io("starting the switch thread"))?;
                *lock(&sw.thread) = Some(handle);
            }
            Host::Daemon(program) | Host::Child(program) => {
                let daemonize = matches!(host, Host::Daemon(_));
                let child = sw.spawn(program, daemonize)?;
                *lock(&sw.child) = child;
            }
        }
        sw.wait_answering()?;
        Ok(sw)
    }

    fn spawn(&self, program: &Path, daemonize: bool) -> Result<Option<Child>, SwitchError> {
        let p = &self.paths;
        let log_path = p.log();
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("creating {}", log_path.display())))?;
        let log2 = log.try_clone().map_err(io("duplicating a file handle"))?;
        let mut cmd = Command::new(program);
        cmd.args(["cluster", "switch-daemon", "--dir"])
            .arg(&p.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        crate::process::unblock_signals(&mut cmd);
        if daemonize {
            cmd.arg("--daemonize");
        } else {
            crate::process::die_with_parent(&mut cmd);
        }
        let mut child = cmd.spawn().map_err(|e| SwitchError::Start {
            log: log_path.clone(),
            detail: format!("running {}: {e}", program.display()),
        })?;
        if daemonize {
            // The first process exits once the daemon has its sockets and pidfile.
            let status = child
                .wait()
                .map_err(io("waiting for the switch to daemonize"))?;
            if !status.success() {
                return Err(self.start_failed(format!("switch-daemon exited with {status}")));
            }
            return Ok(None);
        }
        Ok(Some(child))
    }

    fn start_failed(&self, what: String) -> SwitchError {
        let log = std::fs::read_to_string(self.paths.log()).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        SwitchError::Start {
            log: self.paths.log(),
            detail: if last.is_empty() {
                what
            } else {
                format!("{what}: {}", last.trim())
            },
        }
    }

    fn wait_answering(&self) -> Result<(), SwitchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.request(&Request::Status) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    if let Some(c) = lock(&self.child).as_mut() {
                        if let Ok(Some(status)) = c.try_wait() {
                            return Err(
                                self.start_failed(format!("switch-daemon exited with {status}"))
                            );
                        }
                    }
                    if Instant::now() >= deadline {
                        let _ = self.stop();
                        return Err(self
                            .start_failed(format!("not answering after {START_TIMEOUT:?} ({e})")));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn request(&self, req: &Request) -> Result<SwitchStatus, SwitchError> {
        control::request(&self.paths.control_sock(), req, CONTROL_TIMEOUT)
    }

    pub fn status(&self) -> Result<SwitchStatus, SwitchError> {
        self.request(&Request::Status)
    }

    /// The switch daemon's pid; `None` when it runs as a thread or not at all.
    pub fn pid(&self) -> Option<i32> {
        process::read_pidfile(&self.paths.pidfile()).filter(|&p| is_switch(p, &self.paths.dir))
    }

    /// Asks the switch to stop, then makes sure: a daemon that does not go is killed, a thread
    /// is joined. Safe to call when nothing runs.
    pub fn stop(&self) -> Result<(), SwitchError> {
        let asked = self.request(&Request::Shutdown).is_ok();
        if let Some(t) = lock(&self.thread).take() {
            if asked {
                let _ = t.join();
            }
        }
        if let Some(mut c) = lock(&self.child).take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !matches!(c.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.pid() {
            use nix::sys::signal::{kill, Signal};
            let pid_t = nix::unistd::Pid::from_raw(pid);
            let gone = |t: Duration| {
                let deadline = Instant::now() + t;
                loop {
                    if !is_switch(pid, &self.paths.dir) || process::has_exited(pid) {
                        return true;
                    }
                    if Instant::now() >= deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            if !gone(Duration::from_secs(2)) {
                let _ = kill(pid_t, Signal::SIGTERM);
                if !gone(Duration::from_secs(2)) {
                    let _ = kill(pid_t, Signal::SIGKILL);
                    gone(Duration::from_secs(5));
                }
            }
        }
        for f in [
            self.paths.control_sock(),
            self.paths.data_sock(),
            self.paths.pidfile(),
        ] {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing_scheme() {
        assert_eq!(node_mac(0).to_string(), "02:00:00:00:00:01");
        assert_eq!(node_ip(0), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(node_mac(63).to_string(), "02:00:00:00:00:40");
        assert_eq!(node_ip(63), Ipv4Addr::new(10, 0, 0, 64));
        assert_eq!(node_ip(MAX_PORTS - 1), Ipv4Addr::new(10, 0, 0, 253));
        assert_eq!(node_mac(299).to_string(), "02:00:00:00:01:2c");
        assert_eq!(node_ip(299), Ipv4Addr::new(10, 0, 1, 44));
        let s = subnet();
        assert!((0..MAX_PORTS).all(|i| node_ip(i) != s.switch_ip && node_mac(i) != s.switch_mac));
    }

    #[test]
    fn host_choice() {
        let crust = Path::new("/usr/bin/crust");
        let test = Path::new("/w/target/release/deps/network-0123");
        assert_eq!(
            choose_host(LaunchMode::Daemon, Some(crust)),
            Host::Daemon(crust.into())
        );
        assert_eq!(
            choose_host(LaunchMode::Child, Some(crust)),
            Host::Child(crust.into())
        );
        assert_eq!(choose_host(LaunchMode::Daemon, Some(test)), Host::Thread);
        assert_eq!(choose_host(LaunchMode::Child, None), Host::Thread);
    }

    #[test]
    fn config_round_trip_and_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<(String, PathBuf)> = (0..3)
            .map(|i| (format!("node{i}"), dir.path().join(format!("node{i}"))))
            .collect();
        let c = SwitchConfig::for_nodes("default", &nodes);
        assert_eq!(c.ports[2].socket, dir.path().join("node2/net.sock"));
        assert_eq!(c.ports[2].ip, Ipv4Addr::new(10, 0, 0, 3));
        let path = dir.path().join("switch.json");
        c.write(&path).expect("write");
        assert_eq!(SwitchConfig::read(&path).expect("read"), c);
        std::fs::write(&path, r#"{"seed":1,"ports":[],"extra":1}"#).expect("write");
        assert!(SwitchConfig::read(&path).is_err());

        let paths = SwitchPaths::of_cluster(dir.path());
        assert!(paths.check_socket_len(&c).is_ok());
        let long = SwitchPaths::of_cluster(&PathBuf::from(format!("/{}", "d".repeat(90))));
        let e = long.check_socket_len(&c).unwrap_err();
        assert!(e.to_string().contains("CRUST_STATE"), "{e}");
    }

    #[test]
    fn switch_process_recognition() {
        assert!(!is_switch(
            std::process::id() as i32,
            Path::new("/nowhere/switch")
        ));
    }
}
