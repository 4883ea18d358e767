//! The seam between the etcd v2 API (store + HTTP) and replication (Raft).
//!
//! The store is a deterministic state machine over opaque command bytes; replication decides the
//! order of commands and calls [`Apply`] on every member in that order. The HTTP layer talks only
//! to a [`Backend`], so it runs unchanged over a single in-process member (tests, the host-side
//! discovery service) and over a Raft group.

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What replication drives: applied once per committed entry, in log order, on every member.
/// Implementations use interior mutability; calls never overlap.
pub trait Apply: Send + Sync + 'static {
    /// Applies the command committed at `index` in `term`; the answer goes back to the proposer.
    fn apply(&self, index: u64, term: u64, command: &[u8]) -> Vec<u8>;
    /// The raft index of the last applied entry (the index the store has reached).
    fn applied_index(&self) -> u64;
    /// A full, self-contained copy of the state, for snapshots and log compaction.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot taken by [`Apply::snapshot`].
    fn restore(&self, snapshot: &[u8]) -> Result<(), String>;
}

/// A member of the cluster as `/v2/members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// etcd's member id, shown as 16 lowercase hex digits.
    pub id: u64,
    pub name: String,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No leader right now (election in progress or no quorum): etcd answers 500 / raft errors.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The proposal was not committed in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A membership request that cannot be done (unknown id, duplicate peer URL, ...).
    #[error("{0}")]
    Membership(String),
    #[error("{0}")]
    Other(String),
}

/// What the HTTP layer needs from replication.
pub trait Backend: Send + Sync + 'static {
    /// Replicates `command` and returns what [`Apply::apply`] answered once the entry is
    /// committed and applied (on the leader; a member that answers before applying it itself
    /// makes [`Backend::local_read`] wait for it). Any member accepts proposals (forwarding to
    /// the leader is the backend's job).
    fn propose(&self, command: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, BackendError>>;
    /// Returns once this member has applied everything committed before the call (a read
    /// barrier for `quorum=true`).
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Returns once this member has applied every write it has acknowledged, so that a local
    /// read or watch after a write on the same member sees that write.
    fn local_read(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }
    /// This member's id.
    fn id(&self) -> u64;
    /// The cluster id for `X-Etcd-Cluster-ID` (derived from the initial cluster and token).
    fn cluster_id(&self) -> u64;
    /// Current raft term and commit/applied index, for `X-Raft-Term` / `X-Raft-Index`.
    fn raft_term(&self) -> u64;
    fn raft_index(&self) -> u64;
    /// The leader's member id, when one is known.
    fn leader(&self) -> Option<u64>;
    fn members(&self) -> Vec<Member>;
    fn add_member(&self, peer_urls: Vec<String>) -> BoxFuture<'_, Result<Member, BackendError>>;
    fn remove_member(&self, id: u64) -> BoxFuture<'_, Result<(), BackendError>>;
    fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), BackendError>>;
}
