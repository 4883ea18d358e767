//! Types shared by crust's agents and its host builder.
//!
//! Each concept lives in exactly one place: the on-disk slot state (`slot`), the kernel command line
//! contract between the builder and stage 1 (`cmdline`), the ready line init prints and the host
//! waits for (`ready`), the unit-file model (`unit`), the agents' one HTTP client (`http`), and the sd_notify sender
//! (`notify`).

pub mod cloudconfig;
pub mod cmdline;
pub mod http;
pub mod notify;
pub mod ready;
pub mod slot;
pub mod time;
pub mod unit;
pub mod verity;
