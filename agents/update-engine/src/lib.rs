//! crust update-engine: keeps a machine on its channel's newest release.
//!
//! - [`engine`]: the update state machine (`UPDATE_STATUS_*`), timing and retry decisions; no I/O.
//! - [`rollout`]: the per-machine bucket and the channel's waves.

pub mod engine;
pub mod rollout;
