//! Process clusters for fault tests and benchmarks (feature `testkit`): N members of etcd 3.4
//! (`--enable-v2`) or crust kv (`crust-agent kv`), started with the same etcd command line on
//! 127.0.0.1 with free ports and temporary data directories.
//!
//! Every member's peer URL (and advertised client URL) points at a proxy the harness runs
//! ([`proxy`]), so a test can cut a member off or split the cluster (new connections refused, established ones closed, in both
//! directions) and heal it. Members can be killed with SIGKILL and restarted on their data
//! directory. Members die with the thread that started them (`PR_SET_PDEATHSIG`) and with the
//! [`Cluster`] value, so a failing test leaves no process behind: start and restart members
//! from the thread that owns the cluster.
//!
//! [`history`] records what concurrent clients saw, for [`crate::linearizability`].

pub mod history;
pub mod proxy;

use crust_common::http::Conn;
use proxy::{Net, Proxy};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("cannot start {program}: {source}; install it (etcd: `apt-get install etcd-server`) or pass its path")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} within {waited:?}; member logs:\n{logs}")]
    Timeout {
        what: String,
        waited: Duration,
        logs: String,
    },
    #[error("{0}")]
    Usage(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestkitError {
    let what = what.into();
    move |source| TestkitError::Io { what, source }
}

/// Which server the members run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavor {
    /// etcd 3.4 (`program`, usually `etcd` from Debian's etcd-server), with `--enable-v2`.
    Etcd { program: PathBuf },
    /// crust kv: `agent kv ARGS`, `agent` being a `crust-agent` binary.
    Crust { agent: PathBuf },
}

impl Flavor {
    /// Debian's etcd on `PATH`.
    pub fn etcd() -> Flavor {
        Flavor::Etcd {
            program: PathBuf::from("etcd"),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Flavor::Etcd { .. } => "etcd",
            Flavor::Crust { .. } => "crust",
        }
    }

    /// Whether this flavor can run here: `Err` says what is missing and how to get it.
    pub fn available(&self) -> Result<(), String> {
        let (program, args): (&Path, &[&str]) = match self {
            Flavor::Etcd { program } => (program, &["--version"]),
            Flavor::Crust { agent } => (agent, &["kv", "--version"]),
        };
        let missing = |e: std::io::Error| match self {
            Flavor::Etcd { .. } => format!(
                "{}: {e}; install etcd 3.4 with `apt-get install etcd-server`",
                program.display()
            ),
            Flavor::Crust { .. } => format!(
                "{}: {e}; build it with `cargo build -p crust-agent`",
                program.display()
            ),
        };
        let out_path = std::env::temp_dir().join(format!(
            "crust-testkit-probe-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::SeqCst)
        ));
        let out = std::fs::File::create(&out_path).map_err(missing)?;
        let err = out.try_clone().map_err(missing)?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(missing)?;
        // A server that does not know --version would start serving: give it a moment only.
        let start = Instant::now();
        while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        if text.contains("not part of this build") || text.contains("unknown agent") {
            return Err(format!(
                "{} has no kv agent yet: {}",
                program.display(),
                text.trim()
            ));
        }
        Ok(())
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    pub flavor: Flavor,
    pub members: usize,
    /// etcd's `--heartbeat-interval` (ms).
    pub heartbeat_ms: u64,
    /// etcd's `--election-timeout` (ms).
    pub election_ms: u64,
    /// Peer traffic through the harness's proxies (needed for partitions); a benchmark may
    /// turn it off so that members talk directly.
    pub proxied: bool,
}

impl Spec {
    /// `members` members of `flavor` with etcd's default timings, proxied.
    pub fn new(flavor: Flavor, members: usize) -> Spec {
        Spec {
            flavor,
            members,
            heartbeat_ms: 100,
            election_ms: 1000,
            proxied: true,
        }
    }
}

struct Member {
    name: String,
    client: SocketAddr,
    /// The client URL the member advertises (its client proxy, or `client`).
    advertised_client: SocketAddr,
    peer: SocketAddr,
    /// Where the other members reach this one (its proxy, or `peer`).
    advertised: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running cluster; every member is killed and the temporary directory removed on drop.
pub struct Cluster {
    spec: Spec,
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
    net: Arc<Net>,
    proxies: Vec<Proxy>,
}

static CLUSTERS: AtomicU64 = AtomicU64::new(0);

fn free_port() -> Result<SocketAddr, TestkitError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("picking a free port on 127.0.0.1"))
}

impl Cluster {
    /// Starts the members (without waiting for them: see [`Cluster::wait_healthy`]).
    pub fn start(spec: Spec) -> Result<Cluster, TestkitError> {
        if spec.members == 0 {
            return Err(TestkitError::Usage(
                "a cluster needs at least one member".into(),
            ));
        }
        let seq = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let token = format!("crust-test-{}-{seq}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{token}-{}", spec.flavor.label()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let net = Arc::new(Net::new(spec.members));
        let mut members = Vec::new();
        let mut proxies = Vec::new();
        for i in 0..spec.members {
            let client = free_port()?;
            let peer = free_port()?;
            let mut proxy = |target, peer| -> Result<SocketAddr, TestkitError> {
                if !spec.proxied {
                    return Ok(target);
                }
                let l = TcpListener::bind("127.0.0.1:0")
                    .map_err(io("binding a proxy port on 127.0.0.1"))?;
                let p = Proxy::start(l, i, target, net.clone(), peer)
                    .map_err(io("starting a proxy"))?;
                let a = p.addr();
                proxies.push(p);
                Ok(a)
            };
            let advertised = proxy(peer, true)?;
            let advertised_client = proxy(client, false)?;
            members.push(Member {
                name: format!("m{i}"),
                client,
                advertised_client,
                peer,
                advertised,
                data_dir: dir.join(format!("m{i}.data")),
                log: dir.join(format!("m{i}.log")),
                child: None,
            });
        }
        let mut cluster = Cluster {
            spec,
            dir,
            token,
            members,
            net,
            proxies,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The member's client address (`127.0.0.1:PORT`).
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        self.members[i].client
    }

    /// The member's client URL.
    pub fn client_url(&self, i: usize) -> String {
        format!("http://{}", self.members[i].client)
    }

    /// Every member's client URL, comma-separated (etcdctl's `--endpoints`).
    pub fn endpoints(&self) -> String {
        (0..self.len())
            .map(|i| self.client_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// A keep-alive connection to member `i`.
    pub fn conn(&self, i: usize, timeout: Duration) -> Conn {
        Conn::new(self.client_addr(i), timeout)
    }

    /// The peer network (partitions, heal).
    pub fn net(&self) -> &Net {
        &self.net
    }

    fn args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.advertised))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = Vec::new();
        if let Flavor::Crust { .. } = self.spec.flavor {
            args.push("kv".to_string());
        }
        for (flag, value) in [
            ("--name", m.name.clone()),
            ("--data-dir", m.data_dir.display().to_string()),
            ("--listen-client-urls", format!("http://{}", m.client)),
            (
                "--advertise-client-urls",
                format!("http://{}", m.advertised_client),
            ),
            ("--listen-peer-urls", format!("http://{}", m.peer)),
            (
                "--initial-advertise-peer-urls",
                format!("http://{}", m.advertised),
            ),
            ("--initial-cluster", initial),
            ("--initial-cluster-state", "new".into()),
            ("--initial-cluster-token", self.token.clone()),
            ("--heartbeat-interval", self.spec.heartbeat_ms.to_string()),
            ("--election-timeout", self.spec.election_ms.to_string()),
        ] {
            args.push(flag.to_string());
            args.push(value);
        }
        if let Flavor::Etcd { .. } = self.spec.flavor {
            args.push("--enable-v2".into());
        }
        args
    }

    fn spawn(&mut self, i: usize) -> Result<(), TestkitError> {
        let program = match &self.spec.flavor {
            Flavor::Etcd { program } => program.clone(),
            Flavor::Crust { agent } => agent.clone(),
        };
        let args = self.args(i);
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(io(format!("opening {}", m.log.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io(format!("opening {}", m.log.display())))?;
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_default());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| TestkitError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        self.net.set_pid(i, Some(child.id()));
        m.child = Some(child);
        Ok(())
    }

    /// Whether member `i`'s process is running (it may have exited on its own).
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL to member `i`, and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.net.set_pid(i, None);
    }

    /// Starts member `i` again on its data directory (after [`Cluster::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<(), TestkitError> {
        self.kill(i);
        self.spawn(i)
    }

    /// Cuts member `i` off from every other member, both directions.
    pub fn isolate(&self, i: usize) {
        let rest: Vec<usize> = (0..self.len()).filter(|&o| o != i).collect();
        self.net.partition(&[&[i], &rest]);
    }

    /// Splits the members into groups that cannot reach each other.
    pub fn partition(&self, groups: &[&[usize]]) {
        self.net.partition(groups);
    }

    pub fn heal(&self) {
        self.net.heal();
    }

    /// The last lines of every member's log, for error messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} ({})\n", m.name, m.log.display()));
            for l in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// What member `i` says about itself (`/v2/stats/self`): (id, name, state, leader id).
    pub fn stats_self(&self, i: usize) -> Option<SelfStats> {
        let mut c = self.conn(i, Duration::from_secs(2));
        let r = c.request("GET", "/v2/stats/self", None).ok()?;
        if r.status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        Some(SelfStats {
            id: v["id"].as_str()?.to_string(),
            name: v["name"].as_str()?.to_string(),
            leader: v["state"].as_str() == Some("StateLeader"),
            leader_id: v["leaderInfo"]["leader"].as_str().unwrap_or("").to_string(),
        })
    }

    /// The member that leads now: one that says it leads and that a majority of all members
    /// (itself included) name as leader. `None` when there is no such member.
    pub fn leader_now(&mut self) -> Option<usize> {
        let stats: Vec<Option<SelfStats>> = (0..self.len())
            .map(|i| {
                if self.is_running(i) {
                    self.stats_self(i)
                } else {
                    None
                }
            })
            .collect();
        let majority = self.len() / 2 + 1;
        stats.iter().enumerate().find_map(|(i, s)| {
            let s = s.as_ref()?;
            let backers = stats
                .iter()
                .flatten()
                .filter(|o| o.leader_id == s.id)
                .count();
            (s.leader && backers >= majority).then_some(i)
        })
    }

    /// Waits until a leader is agreed on (see [`Cluster::leader_now`]).
    pub fn wait_leader(&mut self, within: Duration) -> Result<usize, TestkitError> {
        self.wait_leader_except(None, within)
    }

    /// Waits until a member other than `old` leads.
    pub fn wait_leader_except(
        &mut self,
        old: Option<usize>,
        within: Duration,
    ) -> Result<usize, TestkitError> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.leader_now() {
                if Some(l) != old {
                    return Ok(l);
                }
            }
            if start.elapsed() > within {
                return Err(TestkitError::Timeout {
                    what: match old {
                        Some(o) => format!("no leader other than {}", self.members[o].name),
                        None => "no leader".into(),
                    },
                    waited: within,
                    logs: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running member that is not cut off answers `/health` with true and
    /// a leader is agreed on.
    pub fn wait_healthy(&mut self, within: Duration) -> Result<usize, TestkitError> {
        let start = Instant::now();
        loop {
            let mut all = true;
            for i in 0..self.len() {
                if !self.is_running(i) || self.net.is_isolated(i) {
                    continue;
                }
                let mut c = self.conn(i, Duration::from_secs(2));
                let ok = c
                    .request("GET", "/health", None)
                    .map(|r| r.status == 200 && r.body.contains("true"))
                    .unwrap_or(false);
                all &= ok;
            }
            if all {
                if let Some(l) = self.leader_now() {
                    return Ok(l);
                }
            }
            if start.elapsed() > within {
                return Err(TestkitError::Timeout {
                    what: "the cluster did not become healthy".into(),
                    waited: within,
                    logs: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A duration of `n` election timeouts (for waits).
    pub fn elections(&self, n: u32) -> Duration {
        Duration::from_millis(self.spec.election_ms) * n
    }
}

/// What `/v2/stats/self` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfStats {
    pub id: String,
    pub name: String,
    pub leader: bool,
    pub leader_id: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        self.net.close_all();
        self.proxies.clear();
        if std::env::var_os("CRUST_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The child gets SIGKILL when the thread that spawned it ends (a test that panics, a
/// benchmark interrupted), so no member outlives its test.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
