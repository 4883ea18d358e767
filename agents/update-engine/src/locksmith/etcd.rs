//! etcd (v2 keys API) as a [`LockStore`], through crust kv's blocking client — the one etcd
//! client the agents share. Works against etcd (`--enable-v2`) and crust kv alike.

use super::semaphore::{LockStore, StoreError, Versioned};
use crust_kv::client::{Client, ClientError};

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// etcd error codes locksmith's protocol turns on.
const KEY_NOT_FOUND: u32 = 100;
const TEST_FAILED: u32 = 101;
const NODE_EXISTS: u32 = 105;

/// Opens a client for a comma-separated endpoint list (`LOCKSMITHD_ENDPOINT`).
pub fn connect(endpoints: &str) -> Result<Client, String> {
    Client::new(endpoints).map_err(|e| format!("etcd endpoints {endpoints:?}: {e}"))
}

fn other(e: ClientError) -> StoreError {
    StoreError::Other(e.to_string())
}

impl LockStore for Client {
    fn get(&mut self, key: &str) -> Result<Option<Versioned>, StoreError> {
        match Client::get(self, key, false) {
            Ok(ev) => Ok(Some(Versioned {
                value: ev.node.value.unwrap_or_default(),
                index: ev.node.modified_index,
            })),
            Err(e) if e.code() == Some(KEY_NOT_FOUND) => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    fn create(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        match Client::create(self, key, value, None) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(NODE_EXISTS) => Err(StoreError::Exists),
            Err(e) => Err(other(e)),
        }
    }

    fn cas(&mut self, key: &str, value: &str, prev_index: u64) -> Result<(), StoreError> {
        match self.compare_and_swap(key, value, None, Some(prev_index), None) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(TEST_FAILED) => Err(StoreError::Conflict),
            Err(e) => Err(other(e)),
        }
    }
}
