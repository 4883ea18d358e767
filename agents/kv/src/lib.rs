//! crust kv: Raft key-value store speaking the etcd v2 HTTP API (etcd2.service).
//!
//! Not built yet: this crate only reserves its place in the workspace. The image does not ship a
//! unit for it and `crust-agent kv` refuses to run, so nothing pretends to work.
