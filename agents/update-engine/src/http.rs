//! The agents' HTTP client lives in crust-common; update-engine uses it under this name.

pub use crust_common::http::*;
