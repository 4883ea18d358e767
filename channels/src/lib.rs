//! Release channels, versions and signed release metadata, in one place.
//!
//! - [`version`]: `MAJOR.MINOR.PATCH` versions whose MINOR names the channel, and channel names.
//!
//! The host (`crust publish`) and the machine (update-engine) use the same types, so what is
//! signed and what is checked cannot drift apart.

pub mod version;

pub use version::{Channel, Version, VersionError};
