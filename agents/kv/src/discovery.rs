//! The etcd v2 discovery protocol, as a client (what `--discovery URL` does on first start).
//!
//! 1. `GET URL/_config/size`: how many members the cluster starts with;
//! 2. `PUT URL/<member id hex>` with `value=name=peerURL` and `prevExist=false`: register;
//! 3. list `URL` (waiting on it while fewer than `size` members registered);
//! 4. the first `size` registrations by `createdIndex` are the initial cluster; a member that
//!    is not among them gets etcd's "discovery: cluster is full".
//!
//! The discovery service is itself an etcd v2 API (a crust kv: `crust kv serve`, or the one
//! `crust cluster up --discovery` runs). Blocking: it runs once, before the member starts.

use crate::store::{Event, NodeView};
use crust_common::http::{self, Url};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "discovery: cluster is full ({size} members registered at {url} before this one); \
             start this machine with --initial-cluster-state existing after `member add`, or \
             use a new discovery URL"
    )]
    Full { url: String, size: usize },
    #[error(
        "discovery: size key not found at {0}/_config/size; create it with \
             `curl -X PUT {0}/_config/size -d value=3` (the number of initial members)"
    )]
    SizeNotFound(String),
    #[error("discovery: {url}/_config/size is {value:?}, not a positive number of members")]
    BadSize { url: String, value: String },
    #[error(
        "discovery: {url}/{id} is already registered as {theirs:?}, not {ours:?}; another \
             member has the same peer URLs, or use a new discovery URL"
    )]
    Duplicate {
        url: String,
        id: String,
        theirs: String,
        ours: String,
    },
    #[error("discovery: {0}; check that the discovery URL answers")]
    Unreachable(String),
    #[error("discovery: {url}: unexpected answer (HTTP {status}): {body}")]
    Unexpected {
        url: String,
        status: u16,
        body: String,
    },
}

fn request(
    method: &str,
    url: &str,
    form: Option<&str>,
    timeout: Option<Duration>,
) -> Result<(u16, String, Option<u64>), DiscoveryError> {
    let u = Url::parse(url).map_err(|e| DiscoveryError::Unreachable(e.to_string()))?;
    let r = http::request_with(method, &u, None, form, &[], timeout)
        .map_err(|e| DiscoveryError::Unreachable(e.to_string()))?;
    let status = r.status;
    let index = r.header("x-etcd-index").and_then(|v| v.parse().ok());
    let body = r
        .text()
        .map_err(|e| DiscoveryError::Unreachable(format!("{url}: {e}")))?;
    Ok((status, body, index))
}

/// Retries transient failures (the discovery service restarting) a few times.
fn retrying<T>(mut f: impl FnMut() -> Result<T, DiscoveryError>) -> Result<T, DiscoveryError> {
    let mut wait = Duration::from_millis(200);
    for _ in 0..8 {
        match f() {
            Err(DiscoveryError::Unreachable(why)) => {
                eprintln!("kv: {why}; retrying in {wait:?}");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
    f()
}

/// The registration value etcd writes: `name=url` for each peer URL, comma-separated.
pub fn registration(name: &str, peer_urls: &[String]) -> String {
    peer_urls
        .iter()
        .map(|u| format!("{name}={u}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs the protocol and returns the initial cluster (`name -> peer URLs`).
pub fn bootstrap(
    url: &str,
    name: &str,
    peer_urls: &[String],
    id: u64,
) -> Result<BTreeMap<String, Vec<String>>, DiscoveryError> {
    let url = url.trim_end_matches('/');
    let size_url = format!("{url}/_config/size");
    let (status, body, _) = retrying(|| request("GET", &size_url, None, Some(http::TIMEOUT)))?;
    if status == 404 {
        return Err(DiscoveryError::SizeNotFound(url.to_string()));
    }
    let ev: Event = serde_json::from_str(&body).map_err(|_| DiscoveryError::Unexpected {
        url: size_url.clone(),
        status,
        body: body.clone(),
    })?;
    let value = ev.node.value.unwrap_or_default();
    let size: usize =
        value
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(DiscoveryError::BadSize {
                url: url.to_string(),
                value,
            })?;

    // etcd names the registration by the id as Go prints it: hex without padding.
    let me = format!("{id:x}");
    let ours = registration(name, peer_urls);
    let me_url = format!("{url}/{me}");
    let form = format!("value={}&prevExist=false", http::urlencode(&ours));
    let (status, body, _) = retrying(|| request("PUT", &me_url, Some(&form), Some(http::TIMEOUT)))?;
    match status {
        200 | 201 => {}
        412 => {
            // Registered before (a start that failed after registering): fine if it is us.
            let (_, body, _) = retrying(|| request("GET", &me_url, None, Some(http::TIMEOUT)))?;
            let theirs = serde_json::from_str::<Event>(&body)
                .ok()
                .and_then(|e| e.node.value)
                .unwrap_or_default();
            if theirs != ours {
                return Err(DiscoveryError::Duplicate {
                    url: url.to_string(),
                    id: me,
                    theirs,
                    ours,
                });
            }
        }
        _ => {
            return Err(DiscoveryError::Unexpected {
                url: me_url,
                status,
                body,
            })
        }
    }

    loop {
        let list_url = format!("{url}?recursive=true&sorted=true");
        let (status, body, index) =
            retrying(|| request("GET", &list_url, None, Some(http::TIMEOUT)))?;
        let ev: Event = serde_json::from_str(&body).map_err(|_| DiscoveryError::Unexpected {
            url: list_url.clone(),
            status,
            body: body.clone(),
        })?;
        let mut regs: Vec<NodeView> = ev
            .node
            .nodes
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !n.dir && !n.key.ends_with("/_config"))
            .collect();
        regs.sort_by_key(|n| n.created_index);
        if regs.len() >= size {
            regs.truncate(size);
            if !regs.iter().any(|n| n.key.ends_with(&format!("/{me}"))) {
                return Err(DiscoveryError::Full {
                    url: url.to_string(),
                    size,
                });
            }
            let mut cluster: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for n in regs {
                for part in n.value.unwrap_or_default().split(',') {
                    if let Some((name, u)) = part.split_once('=') {
                        cluster
                            .entry(name.to_string())
                            .or_default()
                            .push(u.to_string());
                    }
                }
            }
            return Ok(cluster);
        }
        eprintln!(
            "kv {name}: discovery: {} of {size} members registered at {url}; waiting",
            regs.len()
        );
        // Wait for the next change (or a minute, then list again).
        let wait_url = match index {
            Some(i) => format!("{url}?wait=true&recursive=true&waitIndex={}", i + 1),
            None => format!("{url}?wait=true&recursive=true"),
        };
        match request("GET", &wait_url, None, Some(Duration::from_secs(60))) {
            Ok(_) => {}
            Err(e) => {
                eprintln!("kv {name}: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
