//! crust flannel: overlay network: subnet leases in kv, udp / vxlan / host-gw backends.
//!
//! Not built yet: this crate only reserves its place in the workspace. The image does not ship a
//! unit for it and `crust-agent flannel` refuses to run, so nothing pretends to work.
