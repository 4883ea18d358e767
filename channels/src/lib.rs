//! Release channels, versions and signed release metadata, in one place.
//!
//! - [`version`]: `MAJOR.MINOR.PATCH` versions whose MINOR names the channel, and channel names.
//! - [`def`]: channel definitions (`channels/*.yaml`): server, check interval, rollout waves.
//! - [`tuf`] + [`canonical`]: TUF metadata, signatures over canonical JSON, the client checks.
//! - [`release`]: what a release is inside the signed targets metadata.
//! - [`publish`]: the publisher's side (pure; `crust publish` does the file I/O).
//!
//! The host (`crust publish`) and the machine (update-engine) use the same types, so what is
//! signed and what is checked cannot drift apart.

pub mod canonical;
pub mod def;
pub mod publish;
pub mod release;
pub mod tuf;
pub mod version;

pub use version::{Channel, Version, VersionError};
