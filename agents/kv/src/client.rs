//! A blocking etcd v2 client for the agents (fleet, flannel, update-engine) and `crustctl kv`,
//! on the agents' one HTTP client. Endpoints are tried in order until one answers; etcd's
//! errors come back typed ([`EtcdError`] with its `errorCode`).

use crate::store::error::EtcdError;
use crate::store::Event;
use crust_common::http::{self, HttpError, Url};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// etcd answered with an error body (404 key not found, 412 compare failed, ...).
    #[error("{}: {} ({}) [{}]", .0.error_code, .0.message, .0.cause, .0.index)]
    Etcd(EtcdError),
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("no endpoint answered: {0}")]
    Unreachable(String),
    #[error("{url}: unexpected answer (HTTP {status}): {body}")]
    Unexpected {
        url: String,
        status: u16,
        body: String,
    },
}

impl ClientError {
    /// etcd's error code, when etcd answered with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            ClientError::Etcd(e) => Some(e.error_code),
            _ => None,
        }
    }
}

/// A member as `/v2/members` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MemberInfo {
    pub id: String,
    pub name: String,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Client {
    endpoints: Vec<Url>,
}

/// Options of a write (`None` leaves the parameter out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOpts {
    pub ttl: Option<u64>,
    pub prev_exist: Option<bool>,
    pub prev_value: Option<String>,
    pub prev_index: Option<u64>,
    pub dir: bool,
    pub refresh: bool,
}

impl Client {
    /// `endpoints`: comma-separated `http://host:port` URLs (etcdctl's `--endpoints`).
    pub fn new(endpoints: &str) -> Result<Client, ClientError> {
        let endpoints = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(Url::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::Unreachable("no endpoints given".into()));
        }
        Ok(Client { endpoints })
    }

    fn send(
        &self,
        method: &str,
        path_and_query: &str,
        form: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(u16, String), ClientError> {
        let mut last = String::new();
        for e in &self.endpoints {
            let url = Url {
                path: path_and_query.to_string(),
                ..e.clone()
            };
            match http::request_with(method, &url, None, form, &[], timeout) {
                Ok(r) => {
                    let status = r.status;
                    let body = r
                        .text()
                        .map_err(|e| ClientError::Unreachable(format!("{url}: {e}")))?;
                    return Ok((status, body));
                }
                Err(HttpError::Connect { addr, source }) => {
                    last = format!("{addr}: {source}");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ClientError::Unreachable(last))
    }

    fn keys(
        &self,
        method: &str,
        key: &str,
        query: &str,
        form: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Event, ClientError> {
        // Cleaned as the server would (`a//b/` -> `/a/b`): etcd answers unclean paths with a
        // redirect, which callers that join key parts should never have to handle.
        let key = crate::store::clean_key(key);
        let path = format!("/v2/keys{}{}", encode_path(&key), query);
        let (status, body) = self.send(method, &path, form, timeout)?;
        if let Ok(ev) = serde_json::from_str::<Event>(&body) {
            if status < 300 {
                return Ok(ev);
            }
        }
        if let Ok(e) = serde_json::from_str::<EtcdError>(&body) {
            return Err(ClientError::Etcd(e));
        }
        Err(ClientError::Unexpected {
            url: path,
            status,
            body,
        })
    }

    pub fn get(&self, key: &str, recursive: bool) -> Result<Event, ClientError> {
        let q = if recursive {
            "?recursive=true&sorted=true"
        } else {
            "?sorted=true"
        };
        self.keys("GET", key, q, None, Some(http::TIMEOUT))
    }

    /// A linearizable read (`quorum=true`).
    pub fn get_quorum(&self, key: &str, recursive: bool) -> Result<Event, ClientError> {
        let q = if recursive {
            "?recursive=true&sorted=true&quorum=true"
        } else {
            "?quorum=true"
        };
        self.keys("GET", key, q, None, Some(http::TIMEOUT))
    }

    /// PUT with `value` (ignored for directories and refreshes) and `opts`.
    pub fn put(
        &self,
        key: &str,
        value: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Event, ClientError> {
        let mut form = Vec::new();
        if let Some(v) = value {
            form.push(format!("value={}", http::urlencode(v)));
        }
        if let Some(t) = opts.ttl {
            form.push(format!("ttl={t}"));
        }
        if let Some(p) = opts.prev_exist {
            form.push(format!("prevExist={p}"));
        }
        if let Some(p) = &opts.prev_value {
            form.push(format!("prevValue={}", http::urlencode(p)));
        }
        if let Some(p) = opts.prev_index {
            form.push(format!("prevIndex={p}"));
        }
        if opts.dir {
            form.push("dir=true".into());
        }
        if opts.refresh {
            form.push("refresh=true".into());
        }
        self.keys("PUT", key, "", Some(&form.join("&")), Some(http::TIMEOUT))
    }

    pub fn set(&self, key: &str, value: &str, ttl: Option<u64>) -> Result<Event, ClientError> {
        self.put(
            key,
            Some(value),
            &WriteOpts {
                ttl,
                ..WriteOpts::default()
            },
        )
    }

    /// Creates `key` only if it does not exist (`prevExist=false`; error 105 otherwise).
    pub fn create(&self, key: &str, value: &str, ttl: Option<u64>) -> Result<Event, ClientError> {
        self.put(
            key,
            Some(value),
            &WriteOpts {
                ttl,
                prev_exist: Some(false),
                ..WriteOpts::default()
            },
        )
    }

    /// Replaces `key` only if it holds `prev_value` and/or was last modified at `prev_index`.
    pub fn compare_and_swap(
        &self,
        key: &str,
        value: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        ttl: Option<u64>,
    ) -> Result<Event, ClientError> {
        self.put(
            key,
            Some(value),
            &WriteOpts {
                ttl,
                prev_value: prev_value.map(str::to_string),
                prev_index,
                ..WriteOpts::default()
            },
        )
    }

    pub fn mkdir(&self, key: &str, ttl: Option<u64>) -> Result<Event, ClientError> {
        self.put(
            key,
            None,
            &WriteOpts {
                ttl,
                dir: true,
                prev_exist: Some(false),
                ..WriteOpts::default()
            },
        )
    }

    /// Deletes a key, or a directory with `recursive` (an empty one with `dir`).
    pub fn delete(&self, key: &str, dir: bool, recursive: bool) -> Result<Event, ClientError> {
        let q = format!("?dir={dir}&recursive={recursive}");
        self.keys("DELETE", key, &q, None, Some(http::TIMEOUT))
    }

    /// Deletes `key` only if it holds `prev_value` and/or was last modified at `prev_index`.
    pub fn compare_and_delete(
        &self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<Event, ClientError> {
        let mut q = Vec::new();
        if let Some(v) = prev_value {
            q.push(format!("prevValue={}", http::urlencode(v)));
        }
        if let Some(i) = prev_index {
            q.push(format!("prevIndex={i}"));
        }
        self.keys(
            "DELETE",
            key,
            &format!("?{}", q.join("&")),
            None,
            Some(http::TIMEOUT),
        )
    }

    /// Changes to `key` (and below it with `recursive`) from `after_index + 1` on, as an
    /// iterator that long-polls; an index that fell out of etcd's history ends it with
    /// error 401.
    pub fn watch(&self, key: &str, recursive: bool, after_index: Option<u64>) -> Watch<'_> {
        Watch {
            client: self,
            key: key.to_string(),
            recursive,
            next: after_index.map(|i| i + 1),
        }
    }

    pub fn members(&self) -> Result<Vec<MemberInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Members {
            members: Vec<MemberInfo>,
        }
        let (status, body) = self.send("GET", "/v2/members", None, Some(http::TIMEOUT))?;
        serde_json::from_str::<Members>(&body)
            .map(|m| m.members)
            .map_err(|_| ClientError::Unexpected {
                url: "/v2/members".into(),
                status,
                body,
            })
    }

    /// The current leader (`/v2/members/leader`).
    pub fn leader(&self) -> Result<MemberInfo, ClientError> {
        let (status, body) = self.send("GET", "/v2/members/leader", None, Some(http::TIMEOUT))?;
        serde_json::from_str(&body).map_err(|_| ClientError::Unexpected {
            url: "/v2/members/leader".into(),
            status,
            body,
        })
    }

    /// Whether `endpoint`'s `/health` says it is healthy.
    pub fn healthy(endpoint: &str) -> Result<bool, ClientError> {
        let c = Client::new(endpoint)?;
        let (status, body) = c.send("GET", "/health", None, Some(Duration::from_secs(5)))?;
        Ok(status == 200 && body.contains("\"true\""))
    }
}

/// An iterator of watch events (see [`Client::watch`]).
pub struct Watch<'a> {
    client: &'a Client,
    key: String,
    recursive: bool,
    next: Option<u64>,
}

impl Iterator for Watch<'_> {
    type Item = Result<Event, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut q = format!("?wait=true&recursive={}", self.recursive);
        if let Some(i) = self.next {
            q.push_str(&format!("&waitIndex={i}"));
        }
        let r = self.client.keys("GET", &self.key, &q, None, None);
        if let Ok(ev) = &r {
            self.next = Some(ev.index() + 1);
        }
        Some(r)
    }
}

/// Percent-encodes each path segment, keeping the slashes.
fn encode_path(key: &str) -> String {
    key.split('/')
        .map(http::urlencode)
        .collect::<Vec<_>>()
        .join("/")
}
