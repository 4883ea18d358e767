//! Reboot coordination as CoreOS's locksmith did it.
//!
//! - [`semaphore`]: locksmith's semaphore JSON and its lock/unlock/set-max rules (pure), and the
//!   compare-and-swap loop over any [`semaphore::LockStore`] (etcd v2, or the in-memory fake).
//! - [`window`]: reboot windows (`REBOOT_WINDOW_START` like `Thu 04:00`, `REBOOT_WINDOW_LENGTH`
//!   like `1h30m`).
//! - [`strategy`]: what to do now, given the strategy, the window and the update state (pure).
//! - [`etcd`]: etcd (v2 API, through crust kv's client) as a `LockStore`.
//! - [`daemon`]: `crust-agent locksmithd`; [`ctl`]: `crustctl locksmith status|lock|unlock|set-max`.

pub mod ctl;
pub mod daemon;
pub mod etcd;
pub mod semaphore;
pub mod strategy;
pub mod window;
