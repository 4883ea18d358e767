//! crust kv: a key-value store that speaks the etcd v2 HTTP API (etcd2.service).
//!
//! - [`store`]: the etcd v2 data model as a deterministic state machine (keys, directories,
//!   TTLs decided through the log, compare-and-swap, in-order keys, watch history).
//! - [`backend`]: the seam to replication: the store is an [`backend::Apply`], the HTTP layer
//!   talks to a [`backend::Backend`].
//! - [`local`]: a single-member backend (tests, the host-side discovery service).
//! - [`client`]: a blocking etcd v2 client for the agents; [`ctl`]: `crustctl kv`.
//! - [`linearizability`]: a checker for histories recorded by the fault tests.
//! - `testkit` (feature `testkit`): process clusters of etcd or crust kv behind peer proxies
//!   that can partition them, for fault tests and `crust bench kv`.

pub mod api;
pub mod backend;
pub mod client;
pub mod config;
pub mod ctl;
pub mod discovery;
pub mod linearizability;
pub mod local;
pub mod raft;
pub mod server;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
