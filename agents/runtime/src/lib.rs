//! crust runtime: daemonless container runtime: OCI images, namespaces, cgroup v2.
//!
//! Not built yet: this crate only reserves its place in the workspace. The image does not ship a
//! unit for it and `crust-agent runtime` refuses to run, so nothing pretends to work.
