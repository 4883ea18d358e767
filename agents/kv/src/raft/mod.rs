//! Replication of the etcd v2 store with openraft 0.9 (storage v2) over HTTP between members.
//!
//! - [`types`]: the openraft type configuration, the node record, member and cluster ids.
//! - [`log_store`]: the Raft log, vote and commit position in redb (`member/raft.redb`).
//! - [`journal`]: the append journal in front of the redb log (`member/raft.journal`).
//! - [`durable`]: what keeps a leader's early flush report safe.
//! - [`state_machine`]: [`crate::store::Store`] driven through [`crate::backend::Apply`], with
//!   snapshots kept in the same redb file.
//! - [`network`]: the peer API (append-entries, vote, install-snapshot, forwarded proposals,
//!   read barriers and membership changes) and its HTTP/1.1 client.
//! - [`backend`]: [`backend::RaftBackend`], the [`crate::backend::Backend`] the client API uses.
//! - [`batch`]: client writes that arrive together share a log entry and a forward request.

pub mod backend;
pub mod batch;
pub mod durable;
pub mod journal;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod tests;

pub use types::{cluster_id, member_id, Node, Raft, TypeConfig};
