//! A crust kv member: data dir, bootstrap, Raft, the peer API and the client API
//! (`crust-agent kv`, etcd2.service).
//!
//! Start-up decides from the data dir first, as etcd does:
//! - `<data-dir>/member/raft.redb` exists: restart; `--initial-cluster*` and `--discovery` are
//!   ignored, the stored identity must match `--name` (and `--initial-cluster-token` when one is
//!   given), else the member stops without touching the files;
//! - no data: bootstrap from `--initial-cluster` (state `new`), from `--discovery`, or join a
//!   running cluster (state `existing`, after `member add` there). The data dir is created in
//!   `member.tmp` and renamed into place only once it holds the member's identity, so an
//!   interrupted bootstrap leaves no half-made data dir.

use crate::api::{self, Api};
use crate::backend::Backend;
use crate::config::{ClusterState, Config};
use crate::raft::backend::{removal_applied, RaftBackend};
use crate::raft::durable::CommitGate;
use crate::raft::log_store::{self, Identity, LogStore};
use crate::raft::network::{self, ClusterInfo, Network, PeerClient};
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{cluster_id, member_id, token_hash, Node, Raft};
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {url}: {why}")]
    Bind { url: String, why: String },
    #[error("data dir {path}: {why}")]
    DataDir { path: String, why: String },
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    #[error("joining the cluster: {0}")]
    Join(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("this member ({0:x}) has been removed from the cluster; remove its data dir before it joins again")]
    Removed(u64),
}

/// Listeners bound before the server starts (tests pick free ports this way).
#[derive(Default)]
pub struct Listeners {
    pub client: Vec<std::net::TcpListener>,
    pub peer: Vec<std::net::TcpListener>,
}

/// What a started member reports.
#[derive(Clone)]
pub struct Started {
    pub id: u64,
    pub cluster_id: u64,
    pub client_addrs: Vec<SocketAddr>,
    pub peer_addrs: Vec<SocketAddr>,
    /// The Raft node (metrics for tests and embedders).
    pub raft: Raft,
}

/// `host:port` of an `http://HOST:PORT` URL; `localhost` binds the loopback address.
fn bind_url(url: &str) -> Result<std::net::TcpListener, ServerError> {
    let err = |why: String| ServerError::Bind {
        url: url.to_string(),
        why,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err("not http://".into()))?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| err("no port".into()))?;
    let host = match host {
        "localhost" => "127.0.0.1",
        h => h.trim_start_matches('[').trim_end_matches(']'),
    };
    let port: u16 = port.parse().map_err(|_| err("bad port".into()))?;
    std::net::TcpListener::bind((host, port)).map_err(|e| err(e.to_string()))
}

fn data_err(path: &Path, why: impl Into<String>) -> ServerError {
    ServerError::DataDir {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// What start-up found or made in the data dir.
struct Prepared {
    db: Arc<redb::Database>,
    identity: Identity,
    /// The initial membership, when this start bootstraps a new cluster.
    init: Option<BTreeMap<u64, Node>>,
}

fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("raft.redb")
}

fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("raft.journal")
}

fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("identity.json")
}

fn write_identity(dir: &Path, identity: &Identity) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(identity).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(dir.join("identity.json"))?;
    f.write_all(&bytes)?;
    f.sync_all()
}

/// Opens an existing data dir, refusing one that is unreadable or belongs to someone else.
/// The identity is checked before the database is opened, so a refusal changes no file.
fn open_existing(cfg: &Config) -> Result<Prepared, ServerError> {
    let damaged = |why: String| {
        data_err(
            &cfg.data_dir,
            format!(
                "{why}; the data dir is damaged or not crust kv's: move it away and rejoin the \
                 member (member remove, member add, --initial-cluster-state existing)"
            ),
        )
    };
    let ipath = identity_path(&cfg.data_dir);
    let bytes = std::fs::read(&ipath).map_err(|e| damaged(format!("{}: {e}", ipath.display())))?;
    let identity: Identity =
        serde_json::from_slice(&bytes).map_err(|e| damaged(format!("{}: {e}", ipath.display())))?;
    if identity.name != cfg.name {
        return Err(data_err(
            &cfg.data_dir,
            format!(
                "belongs to member {:?} ({:x}) of cluster {:x}, not to --name {:?}; use --name {:?} \
                 or another --data-dir",
                identity.name, identity.member_id, identity.cluster_id, cfg.name, identity.name
            ),
        ));
    }
    if cfg.token_given && identity.token != cfg.initial_cluster_token && cfg.discovery.is_none() {
        return Err(data_err(
            &cfg.data_dir,
            format!(
                "belongs to cluster {:x} made with token {:?}, not --initial-cluster-token {:?}; \
                 use that token or another --data-dir",
                identity.cluster_id, identity.token, cfg.initial_cluster_token
            ),
        ));
    }
    let path = db_path(&cfg.data_dir);
    let db = log_store::open_db(&path, false).map_err(|e| damaged(e.to_string()))?;
    Ok(Prepared {
        db,
        identity,
        init: None,
    })
}

/// Asks the members named in `--initial-cluster` for the cluster this member was added to.
async fn fetch_cluster(cfg: &Config, me: u64) -> Result<ClusterInfo, ServerError> {
    let client = PeerClient::new(&cfg.name, me, 0);
    let th = format!("{:x}", token_hash(&cfg.initial_cluster_token));
    let mut errors = Vec::new();
    for (name, urls) in &cfg.initial_cluster {
        if *name == cfg.name {
            continue;
        }
        for u in urls {
            match client
                .call::<ClusterInfo>(
                    u,
                    "GET",
                    "/raft/cluster",
                    Vec::new(),
                    &[(network::TOKEN_HEADER, th.clone())],
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(info) => return Ok(info),
                Err(e @ network::PeerError::Refused { .. }) => {
                    return Err(ServerError::Join(e.to_string()))
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    Err(ServerError::Join(format!(
        "no member of --initial-cluster answered ({}); start this member once the cluster runs",
        errors.join("; ")
    )))
}

/// Creates the data dir for a new member: `member.tmp` first, renamed when complete.
fn create_data_dir(cfg: &Config, identity: &Identity) -> Result<Arc<redb::Database>, ServerError> {
    let member = cfg.data_dir.join("member");
    let tmp = cfg.data_dir.join("member.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| {
        data_err(
            &cfg.data_dir,
            format!(
                "cannot create {}: {e}; check the path and permissions",
                tmp.display()
            ),
        )
    })?;
    {
        log_store::open_db(&tmp.join("raft.redb"), true)
            .map_err(|e| data_err(&cfg.data_dir, e.to_string()))?;
        write_identity(&tmp, identity).map_err(|e| {
            data_err(
                &cfg.data_dir,
                format!("cannot write the member identity: {e}"),
            )
        })?;
    }
    std::fs::rename(&tmp, &member).map_err(|e| {
        data_err(
            &cfg.data_dir,
            format!("cannot move {} into place: {e}", tmp.display()),
        )
    })?;
    // The rename is durable only once the directory is synced.
    if let Ok(d) = std::fs::File::open(&cfg.data_dir) {
        let _ = d.sync_all();
    }
    log_store::open_db(&db_path(&cfg.data_dir), false)
        .map_err(|e| data_err(&cfg.data_dir, e.to_string()))
}

async fn prepare(cfg: &Config) -> Result<Prepared, ServerError> {
    if db_path(&cfg.data_dir).exists() || identity_path(&cfg.data_dir).exists() {
        return open_existing(cfg);
    }
    let member = cfg.data_dir.join("member");
    if member.exists() {
        return Err(data_err(
            &cfg.data_dir,
            format!(
                "{} exists but holds no raft.redb: not a crust kv data dir (an etcd one?); move \
                 it away or use another --data-dir",
                member.display()
            ),
        ));
    }
    let (token, cluster) = match &cfg.discovery {
        Some(url) => {
            let (url, name, urls) = (
                url.clone(),
                cfg.name.clone(),
                cfg.initial_advertise_peer_urls.clone(),
            );
            // etcd uses the discovery URL as the cluster token.
            let me = member_id(&urls, &url);
            let u = url.clone();
            let cluster = tokio::task::spawn_blocking(move || {
                crate::discovery::bootstrap(&u, &name, &urls, me)
            })
            .await
            .map_err(|e| ServerError::Raft(e.to_string()))??;
            (url, cluster)
        }
        None => (
            cfg.initial_cluster_token.clone(),
            cfg.initial_cluster.clone(),
        ),
    };
    let me = member_id(&cfg.initial_advertise_peer_urls, &token);
    let (cid, init) = match (cfg.initial_cluster_state, &cfg.discovery) {
        (ClusterState::Existing, None) => {
            let info = fetch_cluster(cfg, me).await?;
            if !info.members.iter().any(|m| m.id == me) {
                return Err(ServerError::Join(format!(
                    "this member ({me:x}, peer URLs {}) is not in cluster {:x}; add it first \
                     (etcdctl member add {} {}) and check --initial-cluster-token",
                    cfg.initial_advertise_peer_urls.join(","),
                    info.cluster_id,
                    cfg.name,
                    cfg.initial_advertise_peer_urls.join(",")
                )));
            }
            (info.cluster_id, None)
        }
        _ => {
            let nodes: BTreeMap<u64, Node> = cluster
                .iter()
                .map(|(name, urls)| {
                    (
                        member_id(urls, &token),
                        Node {
                            name: name.clone(),
                            peer_urls: urls.clone(),
                            client_urls: Vec::new(),
                        },
                    )
                })
                .collect();
            let ids: BTreeSet<u64> = nodes.keys().copied().collect();
            (cluster_id(&ids, &token), Some(nodes))
        }
    };
    let identity = Identity {
        name: cfg.name.clone(),
        member_id: me,
        cluster_id: cid,
        token,
    };
    let db = create_data_dir(cfg, &identity)?;
    Ok(Prepared { db, identity, init })
}

fn raft_config(cfg: &Config) -> Result<openraft::Config, ServerError> {
    openraft::Config {
        cluster_name: "crust-kv".into(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_ms,
        election_timeout_max: cfg.election_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count),
        // etcd keeps entries after a snapshot so a briefly lagging member catches up from
        // the log; half a snapshot interval does the same here.
        max_in_snapshot_log_to_keep: cfg.snapshot_count / 2,
        install_snapshot_timeout: cfg.election_ms.max(1000),
        ..Default::default()
    }
    .validate()
    .map_err(|e| ServerError::Raft(format!("bad raft settings: {e}")))
}

/// Tells the service manager (Type=notify) the member serves.
fn notify_ready() {
    if let Err(e) = crust_common::notify::sd_notify("READY=1") {
        eprintln!("kv: {e}");
    }
}

/// Runs a member until `stop` completes, the member is removed, or something fails.
/// `ready` gets the member's identity once it serves.
pub async fn run(
    cfg: Config,
    listeners: Option<Listeners>,
    stop: impl Future<Output = ()>,
    ready: impl FnOnce(&Started),
) -> Result<(), ServerError> {
    let listeners = match listeners {
        Some(l) => l,
        None => Listeners {
            client: cfg
                .listen_client_urls
                .iter()
                .map(|u| bind_url(u))
                .collect::<Result<_, _>>()?,
            peer: cfg
                .listen_peer_urls
                .iter()
                .map(|u| bind_url(u))
                .collect::<Result<_, _>>()?,
        },
    };
    let prepared = prepare(&cfg).await?;
    let Identity {
        member_id: id,
        cluster_id: cid,
        ref token,
        ..
    } = prepared.identity;
    let token = token.clone();
    let store = Arc::new(Store::new());
    let log = LogStore::open(prepared.db.clone(), &journal_path(&cfg.data_dir), id)
        .map_err(|e| data_err(&cfg.data_dir, e))?;
    let sm = StateMachine::open(store.clone(), prepared.db.clone())
        .map_err(|e| data_err(&cfg.data_dir, e))?
        .after_log(log.durable());
    let client = Arc::new(PeerClient::new(&cfg.name, id, cid));
    let applied = sm.applied_index();
    let commits = CommitGate::new(log.durable());
    let raft = Raft::new(
        id,
        Arc::new(raft_config(&cfg)?),
        Network {
            client: client.clone(),
            commits: commits.clone(),
        },
        log.clone(),
        sm,
    )
    .await
    .map_err(|e| ServerError::Raft(e.to_string()))?;
    let backend = Arc::new(RaftBackend::new(
        raft.clone(),
        applied,
        id,
        cid,
        &token,
        &cfg.name,
        client,
        Duration::from_millis((cfg.election_ms * 5).max(5000)),
    ));

    let mut tasks = vec![tokio::spawn(commits.release(raft.clone()))];
    let mut peer_addrs = Vec::new();
    for l in listeners.peer {
        let (addr, l) = async_listener(l, "peer")?;
        peer_addrs.push(addr);
        let router = network::router(backend.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(l, router).await;
        }));
    }

    if let Some(nodes) = prepared.init {
        match raft.initialize(nodes).await {
            Ok(()) => {}
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => {}
            Err(e) => return Err(ServerError::Raft(format!("cannot initialize: {e}"))),
        }
    }

    let dyn_backend: Arc<dyn Backend> = backend.clone();
    let api = Api {
        backend: dyn_backend.clone(),
        store: store.clone(),
        name: cfg.name.clone(),
        started: SystemTime::now(),
    };
    let mut client_addrs = Vec::new();
    for l in listeners.client {
        let (addr, l) = async_listener(l, "client")?;
        client_addrs.push(addr);
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let _ = api::serve(l, api).await;
        }));
    }
    tasks.push(api::spawn_expiry(dyn_backend, store));
    {
        let b = backend.clone();
        let (name, urls) = (cfg.name.clone(), cfg.advertise_client_urls.clone());
        tasks.push(tokio::spawn(async move {
            while let Err(e) = b.publish(&name, &urls).await {
                tracing::debug!("publishing member attributes: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }));
    }
    {
        let b = backend.clone();
        tasks.push(tokio::spawn(async move { b.tidy_membership().await }));
    }
    {
        // Leader changes in the journal, as etcd logs its elections.
        let mut m = raft.metrics();
        let name = cfg.name.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            loop {
                let (leader, term) = {
                    let b = m.borrow();
                    (b.current_leader, b.current_term)
                };
                if last != Some(leader) {
                    match leader {
                        Some(l) => eprintln!("kv {name}: leader is {l:x} at term {term}"),
                        None => eprintln!("kv {name}: no leader at term {term}"),
                    }
                }
                last = Some(leader);
                if m.changed().await.is_err() {
                    return;
                }
            }
        }));
    }
    eprintln!(
        "kv {}: member {id:x} of cluster {cid:x} serving clients on {:?}, peers on {:?}",
        cfg.name, client_addrs, peer_addrs
    );
    ready(&Started {
        id,
        cluster_id: cid,
        client_addrs,
        peer_addrs,
        raft: raft.clone(),
    });
    notify_ready();

    // A member removed from the membership stops, as etcd does.
    let mut notice = backend.removed();
    let removed = async {
        let mut m = raft.metrics();
        let mut seen = false;
        // A leader that removed itself keeps going for a few heartbeats, so that the others
        // learn the change committed and the request is answered.
        let linger = Duration::from_millis(cfg.heartbeat_ms * 5);
        loop {
            let gone = {
                let b = m.borrow();
                seen |= b.membership_config.membership().get_node(&id).is_some();
                // Only once the change is applied here, that is committed: a configuration
                // without this member may still be replaced before it commits.
                seen && removal_applied(&b, id)
            };
            if gone {
                tokio::time::sleep(linger).await;
                return;
            }
            if m.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let result = tokio::select! {
        _ = stop => Ok(()),
        _ = removed => Err(ServerError::Removed(id)),
        _ = notice.wait_for(|r| *r) => Err(ServerError::Removed(id)),
    };
    for t in &tasks {
        t.abort();
    }
    let _ = raft.shutdown().await;
    let flushed = tokio::task::spawn_blocking(move || log.close()).await;
    if let Err(e) = flushed.map_err(|e| e.to_string()).and_then(|r| r) {
        eprintln!("kv {}: cannot write the commit position: {e}", cfg.name);
    }
    result
}

/// A member on a thread of its own (tests, embedding); dropping it stops the member and
/// waits until its data dir is closed.
pub struct Member {
    pub started: Started,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://{}", self.started.client_addrs[0])
    }

    /// Stops the member and returns how its run ended.
    pub fn stop(mut self) -> Result<(), String> {
        self.shutdown()
    }

    /// Whether the member stopped on its own (removed, failed).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn shutdown(&mut self) -> Result<(), String> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("member thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Starts a member on its own thread and runtime and returns once it serves (or failed to
/// start).
pub fn spawn_thread(cfg: Config, listeners: Option<Listeners>) -> Result<Member, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Started>();
    let name = cfg.name.clone();
    let thread = std::thread::Builder::new()
        .name(format!("kv-{name}"))
        .spawn(move || {
            let r = rt.block_on(run(
                cfg,
                listeners,
                async {
                    let _ = stop_rx.await;
                },
                |s| {
                    let _ = ready_tx.send(s.clone());
                },
            ));
            // Wait for blocking redb work so the database file is closed when this returns.
            rt.shutdown_timeout(Duration::from_secs(10));
            r.map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?;
    match ready_rx.recv() {
        Ok(started) => Ok(Member {
            started,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Err(_) => Err(thread
            .join()
            .unwrap_or_else(|_| Err("member thread panicked".into()))
            .err()
            .unwrap_or_else(|| "member stopped before serving".into())),
    }
}

/// `crust-agent kv` / `etcd2` / `etcd`: `argv[0]` is the program name.
pub fn main(argv: &[String]) -> i32 {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ETCD_"))
        .collect();
    let cfg = match crate::config::parse(argv.get(1..).unwrap_or(&[]), &env) {
        Ok(c) => c,
        Err(crate::config::ConfigError::Info(text)) => {
            println!("{text}");
            return 0;
        }
        Err(e) => {
            eprintln!("crust kv: {e}");
            return 2;
        }
    };
    for w in &cfg.warnings {
        eprintln!("crust kv: warning: {w}");
    }
    // One runtime thread: members spend most of a write waiting on peers and the disk, and
    // on a small machine (three members on two cores in `crust bench kv`) a single thread
    // with no cross-thread wake-ups measured 15% more writes than tokio's default pool. The
    // disk commits still run on the blocking pool.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crust kv: cannot start the runtime: {e}");
            return 1;
        }
    };
    let r = rt.block_on(run(cfg, None, shutdown_signal(), |_| {}));
    rt.shutdown_timeout(Duration::from_secs(10));
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("crust kv: {e}");
            1
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// A bound std listener handed to tokio, with its address (`what` names it in errors).
fn async_listener(
    l: std::net::TcpListener,
    what: &str,
) -> Result<(std::net::SocketAddr, tokio::net::TcpListener), ServerError> {
    let addr = l.local_addr().map_err(|e| ServerError::Bind {
        url: what.into(),
        why: e.to_string(),
    })?;
    let bind = |e: std::io::Error| ServerError::Bind {
        url: addr.to_string(),
        why: e.to_string(),
    };
    l.set_nonblocking(true).map_err(bind)?;
    let l = tokio::net::TcpListener::from_std(l).map_err(bind)?;
    Ok((addr, l))
}
