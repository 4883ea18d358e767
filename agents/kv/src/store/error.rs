//! etcd v2's error codes, messages and HTTP statuses (etcd `error/error.go`), so clients that
//! switch on `errorCode` behave the same against crust kv.

use serde::{Deserialize, Serialize};

/// One etcd v2 error: the JSON body `{"errorCode","message","cause","index"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({cause}) [{error_code}]")]
pub struct EtcdError {
    #[serde(rename = "errorCode")]
    pub error_code: u32,
    pub message: String,
    #[serde(default)]
    pub cause: String,
    #[serde(default)]
    pub index: u64,
}

pub const KEY_NOT_FOUND: u32 = 100;
pub const TEST_FAILED: u32 = 101;
pub const NOT_FILE: u32 = 102;
pub const NOT_DIR: u32 = 104;
pub const NODE_EXIST: u32 = 105;
pub const ROOT_RONLY: u32 = 107;
pub const DIR_NOT_EMPTY: u32 = 108;
pub const VALUE_REQUIRED: u32 = 200;
pub const PREV_VALUE_REQUIRED: u32 = 201;
pub const TTL_NAN: u32 = 202;
pub const INDEX_NAN: u32 = 203;
pub const INVALID_FIELD: u32 = 209;
pub const INVALID_FORM: u32 = 210;
pub const REFRESH_VALUE: u32 = 211;
pub const REFRESH_TTL_REQUIRED: u32 = 212;
pub const RAFT_INTERNAL: u32 = 300;
pub const LEADER_ELECT: u32 = 301;
pub const WATCHER_CLEARED: u32 = 400;
pub const EVENT_INDEX_CLEARED: u32 = 401;

/// etcd's message for a code.
pub fn message(code: u32) -> &'static str {
    match code {
        KEY_NOT_FOUND => "Key not found",
        TEST_FAILED => "Compare failed",
        NOT_FILE => "Not a file",
        NOT_DIR => "Not a directory",
        NODE_EXIST => "Key already exists",
        ROOT_RONLY => "Root is read only",
        DIR_NOT_EMPTY => "Directory not empty",
        VALUE_REQUIRED => "Value is Required in POST form",
        PREV_VALUE_REQUIRED => "PrevValue is Required in POST form",
        TTL_NAN => "The given TTL in POST form is not a number",
        INDEX_NAN => "The given index in POST form is not a number",
        INVALID_FIELD => "Invalid field",
        INVALID_FORM => "Invalid POST form",
        REFRESH_VALUE => "Value provided on refresh",
        REFRESH_TTL_REQUIRED => "A TTL must be provided on refresh",
        RAFT_INTERNAL => "Raft Internal Error",
        LEADER_ELECT => "During Leader Election",
        WATCHER_CLEARED => "watcher is cleared due to etcd recovery",
        EVENT_INDEX_CLEARED => "The event in requested index is outdated and cleared",
        _ => "Internal error",
    }
}

impl EtcdError {
    pub fn new(code: u32, cause: impl Into<String>, index: u64) -> EtcdError {
        EtcdError {
            error_code: code,
            message: message(code).to_string(),
            cause: cause.into(),
            index,
        }
    }

    /// The HTTP status etcd answers this error with (unlisted codes are 400).
    pub fn status(&self) -> u16 {
        match self.error_code {
            KEY_NOT_FOUND => 404,
            NOT_FILE | DIR_NOT_EMPTY => 403,
            TEST_FAILED | NODE_EXIST => 412,
            RAFT_INTERNAL | LEADER_ELECT => 500,
            _ => 400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_json_match_etcd() {
        let e = EtcdError::new(KEY_NOT_FOUND, "/foo", 7);
        assert_eq!(e.status(), 404);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"errorCode":100,"message":"Key not found","cause":"/foo","index":7}"#
        );
        assert_eq!(EtcdError::new(NODE_EXIST, "", 0).status(), 412);
        assert_eq!(EtcdError::new(TEST_FAILED, "", 0).status(), 412);
        assert_eq!(EtcdError::new(DIR_NOT_EMPTY, "", 0).status(), 403);
        assert_eq!(EtcdError::new(NOT_DIR, "", 0).status(), 400);
        assert_eq!(EtcdError::new(TTL_NAN, "", 0).status(), 400);
        assert_eq!(EtcdError::new(LEADER_ELECT, "", 0).status(), 500);
    }
}
