//! A named group of nodes sharing a state directory: create, reopen, wait, tear down.

use crate::accel::{self, Accel};
use crate::command::{qemu_args, ClusterNic, Mgmt, QemuSpec};
use crate::config::{self, Delivery, MetaData};
use crate::error::{io, Error, Result};
use crate::image;
use crate::node::{LaunchMode, Node, NodeStatus};
use crate::process::Stopped;
use crate::qcow2;
use crate::ssh;
use crate::state::{self, NodePaths, StateEnv};
use crate::switch::control::Request;
use crate::switch::fabric::SwitchStatus;
use crate::switch::{self, Switch, SwitchConfig, SwitchPaths};
use crate::tools::{self, Tools};
use crust_common::ready::Ready;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CLUSTER_FILE: &str = "cluster.json";
const MAX_NODES: usize = 64;

/// What to create.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub image: PathBuf,
    pub nodes: usize,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Virtual disk size of each node; larger than the image so first boot grows ROOT.
    pub disk_size: u64,
    pub mode: LaunchMode,
    /// State root; `None` means the usual one (see [`StateEnv::root`]).
    pub state_root: Option<PathBuf>,
    /// User data for every node (a `#cloud-config`, a `#!` script, ...), passed as given:
    /// callers validate it first when they want to (`crust cluster up` does).
    pub cloud_config: Option<Vec<u8>>,
    /// How the user data and per-node metadata reach the nodes.
    pub delivery: Delivery,
    /// Host services guests reach at `HOST_SERVICES_IP`: `(guest port, host loopback port)`.
    pub guestfwd: Vec<(u16, u16)>,
    /// Give the cluster a fresh etcd discovery URL, served from the host; `$discovery` in the
    /// user data is replaced with it.
    pub discovery: bool,
}

impl ClusterSpec {
    pub fn new(image: impl Into<PathBuf>, nodes: usize) -> Self {
        ClusterSpec {
            name: state::DEFAULT_CLUSTER.into(),
            image: image.into(),
            nodes,
            memory_mib: 512,
            cpus: 1,
            disk_size: 8 << 30,
            mode: LaunchMode::Daemon,
            state_root: None,
            cloud_config: None,
            delivery: Delivery::ConfigDrive,
            guestfwd: Vec::new(),
            discovery: false,
        }
    }
}

/// Where guests reach the discovery service: `http://10.0.2.100:2379/v2/keys/discovery/TOKEN`.
pub const DISCOVERY_GUEST_PORT: u16 = 2379;
/// The placeholder in user data that `discovery` replaces with the cluster's URL.
pub const DISCOVERY_PLACEHOLDER: &str = "$discovery";

/// The cluster's etcd discovery service (a single-member crust kv in the switch process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryInfo {
    /// Host loopback port it listens on.
    pub port: u16,
    /// The URL guests use.
    pub url: String,
    /// The key under which members register (`/discovery/TOKEN`).
    pub key: String,
}

/// Guest ports each node forwards from a host loopback port.
pub const GUEST_SSH_PORT: u16 = 22;
pub const GUEST_KV_PORT: u16 = 2379;

/// A node's forwarded host ports (127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePorts {
    pub ssh: u16,
    pub kv: u16,
}

/// What `cluster.json` records so later commands can reopen and restart nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub image: PathBuf,
    pub nodes: Vec<String>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub disk_size: u64,
    pub accel: Accel,
    pub qemu: PathBuf,
    pub ovmf_code: PathBuf,
    pub ssh: PathBuf,
    pub nc: PathBuf,
    pub delivery: Delivery,
    /// One entry per node, in node order.
    pub ports: Vec<NodePorts>,
    pub guestfwd: Vec<(u16, u16)>,
    /// Whether a user-data document was given.
    pub user_data: bool,
    #[serde(default)]
    pub discovery: Option<DiscoveryInfo>,
}

/// A node that reached ready, and how long that took from QEMU start as seen by the host.
#[derive(Debug, Clone)]
pub struct NodeReady {
    pub node: String,
    pub ready: Ready,
    pub elapsed: Option<Duration>,
}

#[derive(Debug)]
pub struct Cluster {
    name: String,
    dir: PathBuf,
    file: ClusterFile,
    nodes: Vec<Node>,
    switch: Switch,
    mode: LaunchMode,
    removed: bool,
}

fn state_root(given: Option<&Path>) -> Result<PathBuf> {
    let root = match given {
        Some(p) => p.to_path_buf(),
        None => StateEnv::from_process().root()?,
    };
    state::absolute(&root)
}

impl Cluster {
    /// Checks the inputs, prepares every node and starts them all; does not wait for ready
    /// (see [`Cluster::wait_ready`]). `note` hears about slow or surprising steps.
    pub fn create(spec: &ClusterSpec, note: &dyn Fn(&str)) -> Result<Cluster> {
        state::check_name("cluster name", &spec.name)?;
        if spec.nodes == 0 || spec.nodes > MAX_NODES {
            return Err(Error::Invalid {
                what: "node count",
                value: spec.nodes.to_string(),
                reason: format!("must be 1 to {MAX_NODES}"),
            });
        }
        let image = state::absolute(&spec.image)?;
        let image_size = image::check(&image)?;
        let disk_size = spec.disk_size.max(image_size).next_multiple_of(1 << 20);
        let tools = tools::ensure(note)?;
        let root = state_root(spec.state_root.as_deref())?;
        let dir = root.join(&spec.name);
        if dir.exists() {
            match Cluster::open(Some(&root), &spec.name) {
                Ok(old) if old.nodes.iter().any(Node::is_running) => {
                    return Err(Error::ClusterUp {
                        name: spec.name.clone(),
                    });
                }
                stale => {
                    if let Ok(old) = &stale {
                        // A switch left behind by a cluster whose nodes are all gone.
                        let _ = old.switch.stop();
                    }
                    note(&format!(
                        "removing stale state of cluster {:?} in {}",
                        spec.name,
                        dir.display()
                    ));
                    std::fs::remove_dir_all(&dir)
                        .map_err(io(format!("removing {}", dir.display())))?;
                }
            }
        }
        if let Some(u) = &spec.cloud_config {
            if u.len() > config::MAX_USER_DATA {
                return Err(Error::Invalid {
                    what: "cloud-config",
                    value: format!("{} bytes", u.len()),
                    reason: format!(
                        "user data is limited to {} bytes; move large files to a URL",
                        config::MAX_USER_DATA
                    ),
                });
            }
        }
        let choice = accel::detect(&tools)?;
        note(&format!(
            "accelerator: {} ({})",
            choice.accel.name(),
            choice.reason
        ));
        let file = ClusterFile {
            image: image.clone(),
            nodes: (0..spec.nodes).map(state::node_name).collect(),
            memory_mib: spec.memory_mib,
            cpus: spec.cpus,
            disk_size,
            accel: choice.accel,
            qemu: tools.qemu.clone(),
            ovmf_code: tools.ovmf_code.clone(),
            ssh: tools.ssh.clone(),
            nc: tools.nc.clone(),
            delivery: spec.delivery,
            ports: free_ports(spec.nodes)?,
            guestfwd: spec.guestfwd.clone(),
            user_data: spec.cloud_config.is_some(),
            discovery: None,
        };
        let mut file = file;
        let mut user_data = spec.cloud_config.clone();
        if spec.discovery {
            let port = free_ports(1)?[0].ssh;
            let token = random_token()?;
            let url = format!(
                "http://{}:{DISCOVERY_GUEST_PORT}/v2/keys/discovery/{token}",
                crate::command::HOST_SERVICES_IP
            );
            file.guestfwd.push((DISCOVERY_GUEST_PORT, port));
            if let Some(u) = &mut user_data {
                let text = String::from_utf8_lossy(u).replace(DISCOVERY_PLACEHOLDER, &url);
                *u = text.into_bytes();
            }
            file.discovery = Some(DiscoveryInfo {
                port,
                url,
                key: format!("/discovery/{token}"),
            });
        }
        let mut cluster = Cluster {
            name: spec.name.clone(),
            nodes: Self::nodes_of(&spec.name, &dir, &file, spec.mode),
            switch: Switch::open(&dir),
            dir,
            file,
            mode: spec.mode,
            removed: false,
        };
        // From here on a failure removes what was made (and stops what was started).
        let prepared = cluster.prepare(&tools, user_data.as_deref()).and_then(|_| {
            cluster.switch = cluster.start_switch(spec.mode)?;
            if let Some(d) = &cluster.file.discovery {
                seed_discovery(d, cluster.nodes.len())?;
            }
            for node in &cluster.nodes {
                node.start()?;
            }
            Ok(())
        });
        if let Err(e) = prepared {
            let _ = cluster.teardown();
            return Err(e);
        }
        Ok(cluster)
    }

    fn switch_config(&self) -> SwitchConfig {
        let nodes: Vec<(String, PathBuf)> = self
            .nodes
            .iter()
            .map(|n| (n.name().to_string(), n.dir().to_path_buf()))
            .collect();
        let mut c = SwitchConfig::for_nodes(&self.name, &nodes);
        c.discovery_port = self.file.discovery.as_ref().map(|d| d.port);
        c
    }

    /// The switch runs before any node so that no frame of a booting guest is lost.
    fn start_switch(&self, mode: LaunchMode) -> Result<Switch> {
        let exe = std::env::current_exe().ok();
        let host = switch::choose_host(mode, exe.as_deref());
        Ok(Switch::start(&self.dir, &self.switch_config(), &host)?)
    }

    fn prepare(&self, tools: &Tools, user_data: Option<&[u8]>) -> Result<()> {
        for node in &self.nodes {
            NodePaths::new(node.dir().to_path_buf()).check_socket_len()?;
        }
        SwitchPaths::of_cluster(&self.dir).check_socket_len(&self.switch_config())?;
        std::fs::create_dir_all(&self.dir)
            .map_err(io(format!("creating {}", self.dir.display())))?;
        let json = serde_json::to_string_pretty(&self.file).map_err(|source| Error::Json {
            what: "encoding cluster.json".into(),
            source,
        })?;
        let path = self.dir.join(CLUSTER_FILE);
        std::fs::write(&path, json + "\n").map_err(io(format!("writing {}", path.display())))?;
        let key = ssh::ensure_key(
            &tools.ssh_keygen,
            &self.dir,
            &format!("crust-{}", self.name),
        )?;
        for node in &self.nodes {
            let paths = NodePaths::new(node.dir().to_path_buf());
            std::fs::create_dir(&paths.dir)
                .map_err(io(format!("creating {}", paths.dir.display())))?;
            qcow2::create_overlay(&paths.overlay(), &self.file.image, self.file.disk_size)?;
            std::fs::copy(&tools.ovmf_vars, paths.vars()).map_err(io(format!(
                "copying {} to {}",
                tools.ovmf_vars.display(),
                paths.vars().display()
            )))?;
            let meta = MetaData::for_node(&self.name, node.name(), Some(&key.public));
            config::write_node(&paths, self.file.delivery, user_data, &meta)?;
        }
        Ok(())
    }

    fn nodes_of(cluster: &str, dir: &Path, file: &ClusterFile, mode: LaunchMode) -> Vec<Node> {
        file.nodes
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let paths = NodePaths::new(dir.join(name));
                let cluster_nic = Some(ClusterNic {
                    local: switch::net_sock(&paths.dir),
                    remote: SwitchPaths::of_cluster(dir).data_sock(),
                    mac: switch::node_mac(i),
                });
                let ports = file.ports.get(i).copied();
                let mut mgmt = Mgmt {
                    hostfwd: Vec::new(),
                    guestfwd: file.guestfwd.clone(),
                    nc: file.nc.clone(),
                };
                if let Some(p) = ports {
                    mgmt.hostfwd = vec![(p.ssh, GUEST_SSH_PORT), (p.kv, GUEST_KV_PORT)];
                }
                let args = qemu_args(&QemuSpec {
                    name: &format!("{cluster}-{name}"),
                    accel: file.accel,
                    memory_mib: file.memory_mib,
                    cpus: file.cpus,
                    ovmf_code: &file.ovmf_code,
                    paths: &paths,
                    daemonize: mode == LaunchMode::Daemon,
                    cluster_nic,
                    mgmt,
                    config_args: {
                        let mut a = config::qemu_args(&paths, file.delivery, file.user_data);
                        a.extend(["-uuid".to_string(), config::node_uuid(cluster, name)]);
                        a
                    },
                });
                let access = ports.map(|p| crate::node::SshAccess {
                    ssh: file.ssh.clone(),
                    key: ssh::key_path(dir),
                    port: p.ssh,
                });
                Node::new(name.clone(), paths, file.qemu.clone(), args, mode, access)
            })
            .collect()
    }

    /// Reopens a cluster made by an earlier command (its nodes restart daemonized).
    pub fn open(state_root_dir: Option<&Path>, name: &str) -> Result<Cluster> {
        state::check_name("cluster name", name)?;
        let root = state_root(state_root_dir)?;
        let dir = root.join(name);
        let path = dir.join(CLUSTER_FILE);
        let text = std::fs::read_to_string(&path).map_err(|_| Error::ClusterNotFound {
            name: name.into(),
            dir: root.clone(),
        })?;
        let file: ClusterFile = serde_json::from_str(&text).map_err(|source| Error::Json {
            what: format!("reading {}", path.display()),
            source,
        })?;
        for n in &file.nodes {
            state::check_name("node name", n)?;
        }
        Ok(Cluster {
            name: name.into(),
            nodes: Self::nodes_of(name, &dir, &file, LaunchMode::Daemon),
            switch: Switch::open(&dir),
            dir,
            file,
            mode: LaunchMode::Daemon,
            removed: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &ClusterFile {
        &self.file
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name` (`node0`, ...).
    pub fn node_named(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .ok_or_else(|| Error::NodeNotFound {
                cluster: self.name.clone(),
                node: name.into(),
                known: self.file.nodes.join(", "),
            })
    }

    /// Waits, for all nodes at once, for their first ready line.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Vec<NodeReady>> {
        let results: Vec<Result<NodeReady>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes
                .iter()
                .map(|n| {
                    s.spawn(move || {
                        let ready = n.wait_ready(1, timeout)?;
                        Ok(NodeReady {
                            node: n.name().into(),
                            ready,
                            elapsed: n.started_at().map(|t| t.elapsed()),
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(r) => r,
                    Err(_) => Err(Error::Invalid {
                        what: "wait",
                        value: String::new(),
                        reason: "a waiting thread panicked".into(),
                    }),
                })
                .collect()
        });
        results.into_iter().collect()
    }

    pub fn status(&self) -> Vec<NodeStatus> {
        self.nodes.iter().map(Node::status).collect()
    }

    /// The cluster switch, for its pid and raw control requests.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    /// Ports, leases, counters and active fault rules of the cluster network.
    pub fn switch_status(&self) -> Result<SwitchStatus> {
        Ok(self.switch.status()?)
    }

    /// Cuts the cluster network into sets of node indices: frames pass only within a set, and
    /// a node in no set reaches nobody. Replaces an earlier partition.
    /// `c.partition(&[&[0], &[1, 2]])`.
    pub fn partition(&self, sets: &[&[usize]]) -> Result<SwitchStatus> {
        let sets = sets.iter().map(|s| s.to_vec()).collect();
        Ok(self.switch.request(&Request::Partition { sets })?)
    }

    /// Cuts one node off from all others (it still gets its DHCP lease).
    pub fn isolate(&self, node: usize) -> Result<SwitchStatus> {
        Ok(self.switch.request(&Request::Isolate { node })?)
    }

    /// Drops `percent` of the frames between nodes, in a pattern repeatable per cluster name.
    pub fn set_loss(&self, percent: u8) -> Result<SwitchStatus> {
        Ok(self.switch.request(&Request::Loss { percent })?)
    }

    /// Delays every frame (`node: None`), or every frame to or from one node, by `ms`.
    pub fn set_delay(&self, node: Option<usize>, ms: u32) -> Result<SwitchStatus> {
        Ok(self.switch.request(&Request::Delay { node, ms })?)
    }

    /// Removes every partition, isolation, loss and delay.
    pub fn heal(&self) -> Result<SwitchStatus> {
        Ok(self.switch.request(&Request::Heal)?)
    }

    /// The index of the node called `name`, for the fault calls above.
    pub fn node_index(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name() == name)
            .ok_or_else(|| Error::NodeNotFound {
                cluster: self.name.clone(),
                node: name.into(),
                known: self.file.nodes.join(", "),
            })
    }

    /// Stops every node and removes the cluster's state directory.
    pub fn down(mut self) -> Result<Vec<(String, Stopped)>> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<Vec<(String, Stopped)>> {
        let mut stopped = Vec::new();
        let mut first_err = None;
        for n in &self.nodes {
            match n.stop() {
                Ok(s) => stopped.push((n.name().to_string(), s)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        self.switch.stop()?;
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .map_err(io(format!("removing {}", self.dir.display())))?;
        }
        self.removed = true;
        Ok(stopped)
    }
}

/// 16 random bytes in hex, for a discovery token.
fn random_token() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io("reading /dev/urandom for a discovery token"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Writes the expected cluster size where etcd's discovery protocol reads it.
fn seed_discovery(d: &DiscoveryInfo, size: usize) -> Result<()> {
    let path = format!("/v2/keys{}/_config/size", d.key);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match http_put(d.port, &path, &format!("value={size}")) {
            Ok(201) | Ok(200) => return Ok(()),
            Ok(status) => {
                return Err(Error::Invalid {
                    what: "discovery service",
                    value: format!("127.0.0.1:{}", d.port),
                    reason: format!("setting the cluster size answered HTTP {status}"),
                })
            }
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(io(format!(
                    "reaching the discovery service on 127.0.0.1:{}",
                    d.port
                ))(e))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One form-encoded PUT to 127.0.0.1 with the agents' HTTP client; returns the HTTP status.
fn http_put(port: u16, path: &str, body: &str) -> std::io::Result<u16> {
    let url = crust_common::http::Url {
        host: "127.0.0.1".into(),
        port,
        path: path.into(),
    };
    crust_common::http::request("PUT", &url, None, Some(body))
        .map(|r| r.status)
        .map_err(std::io::Error::other)
}

/// Picks `n` pairs of free 127.0.0.1 ports (held together while choosing so none repeats).
fn free_ports(n: usize) -> Result<Vec<NodePorts>> {
    let mut held = Vec::new();
    for _ in 0..n * 2 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(io("choosing a free port on 127.0.0.1"))?;
        held.push(l);
    }
    let port = |l: &std::net::TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(io("reading a bound port"))
    };
    held.chunks(2)
        .map(|pair| {
            Ok(NodePorts {
                ssh: port(&pair[0])?,
                kv: port(&pair[1])?,
            })
        })
        .collect()
}

impl Drop for Cluster {
    /// A cluster whose QEMUs are our children goes away with its handle, including on panic.
    fn drop(&mut self) {
        if self.mode == LaunchMode::Child && !self.removed {
            let _ = self.teardown();
        }
    }
}
