//! The etcd v2 keys API as a [`LockStore`]: `GET /v2/keys/KEY`, `PUT ...?prevExist=false`,
//! `PUT ...?prevIndex=N`, over the small HTTP client. Works with etcd (`--enable-v2`) and with
//! crust kv, which speaks the same API.

use super::semaphore::{LockStore, StoreError, Versioned};
use crate::http::{self, urlencode, Url};
use serde::Deserialize;
use std::io::Read;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

pub struct EtcdV2 {
    /// Tried in order; the first that answers wins (LOCKSMITHD_ENDPOINT is a comma list).
    pub endpoints: Vec<Url>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    node: Option<Node>,
    #[serde(default, rename = "errorCode")]
    error_code: Option<u32>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    value: Option<String>,
    #[serde(rename = "modifiedIndex")]
    modified_index: u64,
}

impl EtcdV2 {
    pub fn parse(endpoints: &str) -> Result<EtcdV2, String> {
        let endpoints = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| Url::parse(e).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err("no etcd endpoint given".into());
        }
        Ok(EtcdV2 { endpoints })
    }

    fn call(
        &self,
        method: &str,
        key: &str,
        query: &str,
        form: Option<&str>,
    ) -> Result<(u16, Body), StoreError> {
        let mut last = String::new();
        for ep in &self.endpoints {
            let mut url = ep.join(&format!("v2/keys/{key}"));
            url.path.push_str(query);
            match http::request(method, &url, None, form) {
                Ok(r) => {
                    let mut text = String::new();
                    r.body
                        .take(1 << 20)
                        .read_to_string(&mut text)
                        .map_err(|e| StoreError::Other(format!("{url}: {e}")))?;
                    let body: Body = serde_json::from_str(&text).map_err(|e| {
                        StoreError::Other(format!(
                            "{url}: not an etcd v2 answer ({e}): {}",
                            text.trim()
                        ))
                    })?;
                    return Ok((r.status, body));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(StoreError::Other(last))
    }

    fn other(status: u16, b: &Body) -> StoreError {
        StoreError::Other(format!(
            "HTTP {status}, etcd error {}: {}",
            b.error_code.unwrap_or(0),
            b.message.clone().unwrap_or_default()
        ))
    }
}

impl LockStore for EtcdV2 {
    fn get(&mut self, key: &str) -> Result<Option<Versioned>, StoreError> {
        match self.call("GET", key, "", None)? {
            (200, Body { node: Some(n), .. }) => Ok(Some(Versioned {
                value: n.value.unwrap_or_default(),
                index: n.modified_index,
            })),
            (404, _) => Ok(None),
            (s, b) => Err(Self::other(s, &b)),
        }
    }

    fn create(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        match self.call(
            "PUT",
            key,
            "?prevExist=false",
            Some(&format!("value={}", urlencode(value))),
        )? {
            (201 | 200, _) => Ok(()),
            (
                412,
                Body {
                    error_code: Some(105),
                    ..
                },
            ) => Err(StoreError::Exists),
            (s, b) => Err(Self::other(s, &b)),
        }
    }

    fn cas(&mut self, key: &str, value: &str, prev_index: u64) -> Result<(), StoreError> {
        match self.call(
            "PUT",
            key,
            &format!("?prevIndex={prev_index}"),
            Some(&format!("value={}", urlencode(value))),
        )? {
            (200 | 201, _) => Ok(()),
            (
                412,
                Body {
                    error_code: Some(101),
                    ..
                },
            ) => Err(StoreError::Conflict),
            (s, b) => Err(Self::other(s, &b)),
        }
    }
}
