//! The peer API between members, on the peer URL (`--listen-peer-urls`), and its client.
//!
//! Routes (all JSON, all POST except `/raft/cluster`):
//! - `/raft/append`, `/raft/vote`, `/raft/snapshot`: openraft's RPCs, answered with
//!   `Result<response, RaftError>`; the leader answers a vote request from a member it no
//!   longer has with `410 Gone`, and a member told so stops;
//! - `/raft/forward`: a [`Forward`] a follower hands to the leader (batches of client
//!   writes, read barriers, membership changes), answered with `Result<ForwardOk, WireError>`;
//! - `/raft/removed`: the leader's notice to a member it removed (it stops, as etcd does);
//! - `GET /raft/cluster`: the cluster id and members, for a member joining with
//!   `--initial-cluster-state existing` (it sends a hash of its token instead of a cluster id).
//!
//! Every request carries `X-Crust-Cluster-Id` (or `X-Crust-Token-Hash` on `/raft/cluster`) and
//! `X-Crust-Member-Id`; a member of another cluster gets `412` with the reason, and both sides
//! log it (at most every 10 s per peer, heartbeats would flood the journal otherwise).
//!
//! The client is HTTP/1.1 over tokio with hyper's connection API, one pooled connection set per
//! peer (no TLS: peer traffic stays on the machines' network as etcd2 on CoreOS ran it by
//! default).

use super::backend::RaftBackend;
use super::durable::CommitGate;
use super::types::{Node, TypeConfig};
use crate::backend::BackendError;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Full};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CLUSTER_HEADER: &str = "x-crust-cluster-id";
pub const MEMBER_HEADER: &str = "x-crust-member-id";
pub const TOKEN_HEADER: &str = "x-crust-token-hash";

/// What a follower asks the leader to do on its behalf.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forward {
    /// Client writes (the JSON of store commands) a follower received meanwhile, answered
    /// one by one.
    ProposeAll(Vec<String>),
    /// The leader's read index, confirmed by a quorum (the follower then waits to apply it).
    ReadIndex,
    AddMember {
        peer_urls: Vec<String>,
    },
    RemoveMember {
        id: u64,
    },
    UpdateMember {
        id: u64,
        peer_urls: Vec<String>,
    },
    /// A member announces its name and client URLs (as etcd publishes member attributes).
    Publish {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardOk {
    /// For [`Forward::ProposeAll`]: each write's answer (the store's) and the log index it
    /// was committed at, or why it failed.
    Answers(Vec<Result<(String, u64), WireError>>),
    ReadIndex(u64),
    /// Membership changes: the result and the log index of the change.
    Member(crate::backend::Member, u64),
    Done(u64),
}

impl ForwardOk {
    /// The log index a follower waits to apply before answering its client.
    pub fn index(&self) -> u64 {
        match self {
            ForwardOk::Answers(a) => a
                .iter()
                .filter_map(|r| r.as_ref().ok().map(|(_, i)| *i))
                .max()
                .unwrap_or(0),
            ForwardOk::ReadIndex(i) | ForwardOk::Member(_, i) | ForwardOk::Done(i) => *i,
        }
    }
}

/// A [`BackendError`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireError {
    NoLeader(String),
    Timeout(String),
    Membership(String),
    Other(String),
}

impl From<BackendError> for WireError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NoLeader(s) => WireError::NoLeader(s),
            BackendError::Timeout(s) => WireError::Timeout(s),
            BackendError::Membership(s) => WireError::Membership(s),
            BackendError::Other(s) => WireError::Other(s),
        }
    }
}

impl From<WireError> for BackendError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NoLeader(s) => BackendError::NoLeader(s),
            WireError::Timeout(s) => BackendError::Timeout(s),
            WireError::Membership(s) => BackendError::Membership(s),
            WireError::Other(s) => BackendError::Other(s),
        }
    }
}

/// What `GET /raft/cluster` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: u64,
    pub members: Vec<crate::backend::Member>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{url}: {why}")]
    Connect { url: String, why: String },
    #[error("{url}: refused: {why}")]
    Refused { url: String, why: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: no answer within {0:?}", .timeout)]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: the answer does not decode: {why}")]
    Decode { url: String, why: String },
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Rate-limits a log line per key.
#[derive(Default)]
pub struct LogLimiter(Mutex<HashMap<String, Instant>>);

impl LogLimiter {
    pub fn allow(&self, key: &str) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match m.get(key) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(10) => false,
            _ => {
                m.insert(key.to_string(), now);
                true
            }
        }
    }
}

/// The HTTP/1.1 client members use to talk to each other.
pub struct PeerClient {
    /// This member's id and cluster id, sent with every request.
    pub member_id: u64,
    pub cluster_id: std::sync::atomic::AtomicU64,
    pool: Arc<Pool>,
    pub limiter: LogLimiter,
    pub name: String,
    /// Becomes true when a peer says this member was removed from the cluster (the leader's
    /// notice, or the leader's 410 to a member that was down while it was removed).
    pub removed: tokio::sync::watch::Sender<bool>,
}

impl PeerClient {
    pub fn new(name: &str, member_id: u64, cluster_id: u64) -> PeerClient {
        PeerClient {
            member_id,
            cluster_id: std::sync::atomic::AtomicU64::new(cluster_id),
            pool: Arc::new(Mutex::new(HashMap::new())),
            limiter: LogLimiter::default(),
            name: name.to_string(),
            removed: tokio::sync::watch::channel(false).0,
        }
    }

    fn cluster_id(&self) -> u64 {
        self.cluster_id.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends one request to `base` (a peer URL) and decodes a 200 answer as `R`.
    pub async fn call<R: DeserializeOwned>(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Vec<u8>,
        extra: &[(&str, String)],
        timeout: Duration,
    ) -> Result<R, PeerError> {
        let url = format!("{}{}", base.trim_end_matches('/'), path);
        let parsed = crust_common::http::Url::parse(base).map_err(|e| PeerError::Connect {
            url: url.clone(),
            why: format!("{e} (peer URLs are http://HOST:PORT)"),
        })?;
        let authority = format!("{}:{}", parsed.host, parsed.port);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &authority)
            .header("content-type", "application/json")
            .header(CLUSTER_HEADER, format!("{:x}", self.cluster_id()))
            .header(MEMBER_HEADER, format!("{:x}", self.member_id));
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PeerError::Connect {
                url: url.clone(),
                why: e.to_string(),
            })?;
        // The exchange runs in a task of its own: a caller that stops waiting (openraft's
        // heartbeat timeouts are short) does not cut the connection mid-request, which would
        // make members open a new connection for every late answer; the task finishes the
        // exchange and puts the connection back in the pool.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (pool, auth, shown) = (self.pool.clone(), authority.clone(), url.clone());
        tokio::spawn(async move {
            let r = tokio::time::timeout(EXCHANGE_LIMIT, exchange(&pool, &auth, &shown, req))
                .await
                .unwrap_or_else(|_| {
                    Err(PeerError::Timeout {
                        url: shown.clone(),
                        timeout: EXCHANGE_LIMIT,
                    })
                });
            let _ = tx.send(r);
        });
        let (status, bytes) = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| PeerError::Timeout {
                url: url.clone(),
                timeout,
            })?
            .map_err(|_| PeerError::Connect {
                url: url.clone(),
                why: "request task ended".into(),
            })??;
        match status {
            200 => serde_json::from_slice(&bytes).map_err(|e| PeerError::Decode {
                url,
                why: e.to_string(),
            }),
            412 => Err(PeerError::Refused {
                url,
                why: String::from_utf8_lossy(&bytes).into_owned(),
            }),
            410 => {
                self.removed.send_replace(true);
                Err(PeerError::Refused {
                    url,
                    why: String::from_utf8_lossy(&bytes).into_owned(),
                })
            }
            s => Err(PeerError::Status {
                url,
                status: s,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }

    /// Posts JSON to a peer, logging a refusal (wrong cluster) at most every 10 s.
    pub async fn post<Q: Serialize, R: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &Q,
        timeout: Duration,
    ) -> Result<R, PeerError> {
        let bytes = serde_json::to_vec(body).map_err(|e| PeerError::Decode {
            url: base.to_string(),
            why: e.to_string(),
        })?;
        let r = self.call(base, "POST", path, bytes, &[], timeout).await;
        if let Err(PeerError::Refused { url, why }) = &r {
            if self.limiter.allow(base) {
                tracing::error!("{url} refused us: {why}");
                eprintln!("kv {}: peer {url} refused this member: {why}", self.name);
            }
        }
        r
    }
}

/// How long a request may take in the background after its caller stopped waiting.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

type Pool = Mutex<HashMap<String, Vec<Sender>>>;

/// One request on a pooled (or new) keep-alive connection to `authority`.
async fn exchange(
    pool: &Pool,
    authority: &str,
    url: &str,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), PeerError> {
    let err = |e: &dyn std::fmt::Display| PeerError::Connect {
        url: url.to_string(),
        why: e.to_string(),
    };
    let mut sender = loop {
        let pooled = pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(authority)
            .and_then(Vec::pop);
        match pooled {
            Some(mut s) => {
                if !s.is_closed() && s.ready().await.is_ok() {
                    break s;
                }
            }
            None => break connect(authority, url).await?,
        }
    };
    let resp = sender.send_request(req).await.map_err(|e| err(&e))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| err(&e))?
        .to_bytes();
    give_back(pool, authority, sender);
    Ok((status, bytes))
}

fn give_back(pool: &Pool, authority: &str, s: Sender) {
    let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
    let v = pool.entry(authority.to_string()).or_default();
    if v.len() < 8 {
        v.push(s);
    }
}

async fn connect(authority: &str, url: &str) -> Result<Sender, PeerError> {
    let err = |e: &dyn std::fmt::Display| PeerError::Connect {
        url: url.to_string(),
        why: e.to_string(),
    };
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| err(&e))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| err(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// openraft's network factory: one [`PeerConn`] per target member.
pub struct Network {
    pub client: Arc<PeerClient>,
    pub commits: Arc<CommitGate>,
}

pub struct PeerConn {
    client: Arc<PeerClient>,
    commits: Arc<CommitGate>,
    target: u64,
    url: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: u64, node: &Node) -> PeerConn {
        PeerConn {
            client: self.client.clone(),
            commits: self.commits.clone(),
            target,
            url: node.peer_urls.first().cloned().unwrap_or_default(),
        }
    }
}

impl PeerConn {
    async fn rpc<Q, R, E>(
        &self,
        path: &str,
        req: &Q,
        option: &RPCOption,
    ) -> Result<R, RPCError<u64, Node, RaftError<u64, E>>>
    where
        Q: Serialize,
        R: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let r: Result<Result<R, RaftError<u64, E>>, PeerError> = self
            .client
            .post(&self.url, path, req, option.hard_ttl())
            .await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(RPCError::Unreachable(Unreachable::from(
                openraft::AnyError::error(e.to_string()),
            ))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Node, RaftError<u64>>> {
        self.commits.clamp(&mut rpc.leader_commit);
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Node, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Node, RaftError<u64>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}

/// The peer API's routes, served on the peer listener.
pub fn router(backend: Arc<RaftBackend>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/forward", post(forward))
        .route("/raft/cluster", get(cluster))
        .route("/raft/removed", post(removed))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(backend)
}

fn header_hex(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// Refuses a request from another cluster (412 with the reason), logging it.
fn check_cluster(b: &RaftBackend, h: &HeaderMap) -> Result<(), Box<Response>> {
    let ours = crate::backend::Backend::cluster_id(b);
    let theirs = header_hex(h, CLUSTER_HEADER);
    if theirs == Some(ours) {
        return Ok(());
    }
    let from = header_hex(h, MEMBER_HEADER)
        .map(|i| format!("{i:x}"))
        .unwrap_or_else(|| "unknown".into());
    let why = format!(
        "cluster id mismatch: member {from} sent cluster id {} but this member belongs to \
         cluster {ours:x}; check --initial-cluster-token and --initial-cluster, or use a \
         fresh --data-dir",
        theirs
            .map(|t| format!("{t:x}"))
            .unwrap_or_else(|| "none".into()),
    );
    if b.limiter().allow(&from) {
        eprintln!("kv {}: refusing peer request: {why}", b.name());
    }
    Err(Box::new(
        (StatusCode::PRECONDITION_FAILED, why).into_response(),
    ))
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => (StatusCode::OK, [("content-type", "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new((StatusCode::BAD_REQUEST, format!("bad request body: {e}")).into_response())
    })
}

async fn append(State(b): State<Arc<RaftBackend>>, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check_cluster(&b, &h) {
        return *r;
    }
    let req: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    json(&b.raft().append_entries(req).await)
}

async fn vote(State(b): State<Arc<RaftBackend>>, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check_cluster(&b, &h) {
        return *r;
    }
    let req: VoteRequest<u64> = match decode(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if let Some(r) = removed_candidate(&b, &h) {
        return r;
    }
    json(&b.raft().vote(req).await)
}

async fn snapshot(State(b): State<Arc<RaftBackend>>, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check_cluster(&b, &h) {
        return *r;
    }
    let req: InstallSnapshotRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    json(&b.raft().install_snapshot(req).await)
}

async fn forward(State(b): State<Arc<RaftBackend>>, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check_cluster(&b, &h) {
        return *r;
    }
    let req: Forward = match decode(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let r: Result<ForwardOk, WireError> = b.execute_local(req).await.map_err(WireError::from);
    json(&r)
}

async fn cluster(State(b): State<Arc<RaftBackend>>, h: HeaderMap) -> Response {
    let ours = b.token_hash();
    if header_hex(&h, TOKEN_HEADER) != Some(ours) {
        let from = header_hex(&h, MEMBER_HEADER)
            .map(|i| format!("{i:x}"))
            .unwrap_or_else(|| "unknown".into());
        let why = format!(
            "cluster token mismatch: member {from} wants to join with another \
             --initial-cluster-token than this cluster's; use the cluster's token"
        );
        if b.limiter().allow(&from) {
            eprintln!("kv {}: refusing join request: {why}", b.name());
        }
        return (StatusCode::PRECONDITION_FAILED, why).into_response();
    }
    json(&ClusterInfo {
        cluster_id: crate::backend::Backend::cluster_id(&*b),
        members: crate::backend::Backend::members(&*b),
    })
}

/// A member that was down while it was removed never got the leader's notice; when it comes
/// back it campaigns, and the leader, which knows the membership for sure, answers 410 Gone
/// so that it stops (etcd's removed members stop the same way). Only the leader answers so: a
/// follower may not have applied a member add yet.
fn removed_candidate(b: &RaftBackend, h: &HeaderMap) -> Option<Response> {
    let from = header_hex(h, MEMBER_HEADER)?;
    let known = {
        let metrics = b.raft().metrics();
        let m = metrics.borrow();
        if m.state != openraft::ServerState::Leader {
            return None;
        }
        m.membership_config.membership().get_node(&from).is_some()
    };
    if known {
        return None;
    }
    let why = format!("member {from:x} has been removed from the cluster");
    if b.limiter().allow(&format!("removed-{from:x}")) {
        eprintln!("kv {}: refusing a vote request: {why}", b.name());
    }
    Some((StatusCode::GONE, why).into_response())
}

/// The leader tells a member it was removed (after the change committed).
async fn removed(State(b): State<Arc<RaftBackend>>, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check_cluster(&b, &h) {
        return *r;
    }
    let id: u64 = match decode(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    b.removal_notice(id);
    json(&())
}
