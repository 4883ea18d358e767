//! crust update-engine: keeps a machine on its channel's newest release.
//!
//! - [`engine`]: the update state machine (`UPDATE_STATUS_*`), timing and retry decisions; no I/O.
//! - [`rollout`]: the per-machine bucket and the channel's waves.
//! - [`conf`]: update.conf and the running release.
//! - [`http`]: a small HTTP/1.1 client (GET, Range).
//! - [`apply`]: TUF over HTTP, download into the inactive slot with resume, verify, activate.
//! - [`daemon`]: `crust-agent update-engine`: timer + control socket around the engine.
//! - [`proto`]: the socket's JSON-lines protocol; [`ctl`]: `crustctl update ...`.
//! - [`locksmith`]: reboot strategies, windows, the etcd semaphore; `locksmithd`, `crustctl locksmith`.
//! - [`assess`]: boot assessment of a freshly updated slot: bless when healthy, else fall back.
//! - [`verity`]: the verity root hash recomputed from the written slot.

pub mod apply;
pub mod assess;
pub mod conf;
pub mod ctl;
pub mod daemon;
pub mod engine;
pub mod http;
pub mod locksmith;
pub mod proto;
pub mod rollout;
pub mod verity;
