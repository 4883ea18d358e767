//! crust update-engine: channel client, A/B apply, boot assessment, reboot coordination.
//!
//! Not built yet: this crate only reserves its place in the workspace. The image does not ship a
//! unit for it and `crust-agent update-engine` refuses to run, so nothing pretends to work.
