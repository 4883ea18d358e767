//! crust fleet: cluster scheduler: engine + agent, fleet HTTP API, CLI.
//!
//! Not built yet: this crate only reserves its place in the workspace. The image does not ship a
//! unit for it and `crust-agent fleet` refuses to run, so nothing pretends to work.
