//! The etcd v2 store as a deterministic state machine: a tree of keys and directories with
//! etcd's index bookkeeping, TTLs, compare-and-swap, in-order keys, hidden keys and a 1000-event
//! watch history. No clocks and no I/O: every command carries the proposer's wall-clock time
//! (`now_ns`), and TTL expiry is itself a command ([`Op::Expire`]) decided by the leader, so all
//! members compute the same answers.
//!
//! [`Store`] wraps the state for use by the HTTP layer and replication ([`crate::backend::Apply`]).

pub mod error;
#[cfg(test)]
mod tests;

use error::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Events kept for `wait=true&waitIndex=N` (etcd keeps 1000).
pub const HISTORY: usize = 1000;
/// Largest value accepted (etcd v2 had no explicit limit; its v3 default request limit is
/// 1.5 MiB). Larger values get error 209 with this limit in the cause.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// One write, with the proposer's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub now_ns: i64,
    pub op: Op,
}

/// Writes, as the HTTP layer decides them from a request (see `api::params`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// PUT: set, create (`prev_exist: Some(false)`), update (`Some(true)`) or compare-and-swap
    /// (with `prev_value`/`prev_index`). `value: None` with `dir: true` makes a directory.
    Put(Put),
    /// POST: an in-order key under `dir`, named after its index.
    Post {
        dir: String,
        value: Option<String>,
        ttl: Option<u64>,
    },
    /// DELETE, or compare-and-delete with `prev_value`/`prev_index`.
    Delete {
        key: String,
        dir: bool,
        recursive: bool,
        prev_value: Option<String>,
        prev_index: Option<u64>,
    },
    /// Removes every node whose expiration is at or before the command's time.
    Expire,
}

/// The parameters of a PUT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Put {
    pub key: String,
    pub value: Option<String>,
    pub dir: bool,
    pub ttl: Option<u64>,
    pub prev_exist: Option<bool>,
    pub prev_value: Option<String>,
    pub prev_index: Option<u64>,
    pub refresh: bool,
}

/// A node as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeView {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ttl: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeView>>,
    #[serde(rename = "modifiedIndex", default, skip_serializing_if = "is_zero_u64")]
    pub modified_index: u64,
    #[serde(rename = "createdIndex", default, skip_serializing_if = "is_zero_u64")]
    pub created_index: u64,
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// An answer to a read or a write, and what watchers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub action: String,
    pub node: NodeView,
    #[serde(rename = "prevNode", default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<NodeView>,
    /// A TTL refresh: kept in the history but not sent to waiting watchers (etcd 2.3).
    #[serde(skip)]
    pub refresh: bool,
}

impl Event {
    /// The etcd index this event happened at (0 for reads).
    pub fn index(&self) -> u64 {
        self.node.modified_index
    }
}

/// What a command's application answers (serialized back to the proposer).
pub type Outcome = Result<Event, EtcdError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Node {
    /// `None` for a directory.
    value: Option<String>,
    created: u64,
    modified: u64,
    /// Unix nanoseconds.
    expires: Option<i64>,
}

/// Success and failure counters of `/v2/stats/store`, counted when commands apply so every
/// member agrees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    #[serde(rename = "getsSuccess")]
    pub gets_success: u64,
    #[serde(rename = "getsFail")]
    pub gets_fail: u64,
    #[serde(rename = "setsSuccess")]
    pub sets_success: u64,
    #[serde(rename = "setsFail")]
    pub sets_fail: u64,
    #[serde(rename = "deleteSuccess")]
    pub delete_success: u64,
    #[serde(rename = "deleteFail")]
    pub delete_fail: u64,
    #[serde(rename = "updateSuccess")]
    pub update_success: u64,
    #[serde(rename = "updateFail")]
    pub update_fail: u64,
    #[serde(rename = "createSuccess")]
    pub create_success: u64,
    #[serde(rename = "createFail")]
    pub create_fail: u64,
    #[serde(rename = "compareAndSwapSuccess")]
    pub cas_success: u64,
    #[serde(rename = "compareAndSwapFail")]
    pub cas_fail: u64,
    #[serde(rename = "compareAndDeleteSuccess")]
    pub cad_success: u64,
    #[serde(rename = "compareAndDeleteFail")]
    pub cad_fail: u64,
    #[serde(rename = "expireCount")]
    pub expire_count: u64,
    #[serde(default)]
    pub watchers: u64,
}

/// The whole deterministic state (also the snapshot format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct State {
    /// etcd's index: advances on every successful write, expirations included.
    pub index: u64,
    /// Every node by full path; the root `/` is implicit.
    nodes: BTreeMap<String, Node>,
    /// The refresh mark of each event is kept in snapshots (the API's JSON leaves it out), so
    /// a member that restores one still keeps refreshes from live watchers.
    #[serde(with = "history_with_refresh")]
    history: VecDeque<Event>,
    pub stats: StoreStats,
}

mod history_with_refresh {
    use super::Event;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::VecDeque;

    pub fn serialize<S: Serializer>(h: &VecDeque<Event>, s: S) -> Result<S::Ok, S::Error> {
        h.iter()
            .map(|e| (e, e.refresh))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<Event>, D::Error> {
        let v: Vec<(Event, bool)> = Vec::deserialize(d)?;
        Ok(v.into_iter()
            .map(|(mut e, refresh)| {
                e.refresh = refresh;
                e
            })
            .collect())
    }
}

/// Cleans a key the way etcd does (`path.Clean` of `/` + key): one leading slash, no trailing
/// slash, no empty or `.` segments, `..` resolved.
pub fn clean_key(key: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in key.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent(key: &str) -> Option<&str> {
    if key == "/" {
        return None;
    }
    match key.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&key[..i]),
        None => None,
    }
}

/// Whether any segment of `key` below `base` starts with `_` (hidden from listings and from
/// recursive watchers of `base`).
pub fn hidden_below(base: &str, key: &str) -> bool {
    let rest = key.strip_prefix(base).unwrap_or(key);
    rest.split('/').any(|s| s.starts_with('_'))
}

pub use crust_common::time::rfc3339_nano;

impl State {
    pub fn new() -> State {
        State::default()
    }

    fn err(&self, code: u32, cause: impl Into<String>) -> EtcdError {
        EtcdError::new(code, cause, self.index)
    }

    fn view(&self, key: &str, n: &Node, now_ns: i64) -> NodeView {
        let (expiration, ttl) = match n.expires {
            Some(at) => {
                let left = at - now_ns;
                // Seconds left, rounded up, as etcd shows them.
                let mut ttl = left.div_euclid(1_000_000_000);
                if left.rem_euclid(1_000_000_000) > 0 {
                    ttl += 1;
                }
                (Some(rfc3339_nano(at)), ttl)
            }
            None => (None, 0),
        };
        NodeView {
            key: key.to_string(),
            value: n.value.clone(),
            dir: n.value.is_none(),
            expiration,
            ttl,
            nodes: None,
            modified_index: n.modified,
            created_index: n.created,
        }
    }

    /// Direct children of `dir` (a full path), in key order.
    fn children<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let depth = prefix.len();
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter(move |(k, _)| !k[depth..].contains('/'))
    }

    /// Every node at or below `key`.
    fn subtree_keys(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key}/");
        let mut keys: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if self.nodes.contains_key(key) {
            keys.push(key.to_string());
        }
        keys
    }

    fn dir_view(&self, key: &str, recursive: bool, now_ns: i64) -> Vec<NodeView> {
        let mut out = Vec::new();
        for (k, n) in self.children(key) {
            if hidden_below(key, k) {
                continue;
            }
            let mut v = self.view(k, n, now_ns);
            if v.dir && recursive {
                v.nodes = Some(self.dir_view(k, true, now_ns));
            }
            out.push(v);
        }
        out
    }

    /// A GET of `key`.
    pub fn get(&mut self, key: &str, recursive: bool, now_ns: i64) -> Outcome {
        let key = clean_key(key);
        let r = self.read(&key, recursive, now_ns);
        match &r {
            Ok(_) => self.stats.gets_success += 1,
            Err(_) => self.stats.gets_fail += 1,
        }
        r
    }

    /// A GET that leaves the counters alone.
    pub fn read(&self, key: &str, recursive: bool, now_ns: i64) -> Outcome {
        let key = clean_key(key);
        let node = if key == "/" {
            NodeView {
                dir: true,
                nodes: Some(self.dir_view("/", recursive, now_ns)),
                ..NodeView::default()
            }
        } else {
            let n = self
                .nodes
                .get(&key)
                .ok_or_else(|| self.err(KEY_NOT_FOUND, key.clone()))?;
            let mut v = self.view(&key, n, now_ns);
            if v.dir {
                v.nodes = Some(self.dir_view(&key, recursive, now_ns));
            }
            v
        };
        Ok(Event {
            action: "get".into(),
            node,
            prev_node: None,
            refresh: false,
        })
    }

    /// Applies one write. Failed writes change nothing but the failure counters.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        let now = cmd.now_ns;
        let (kind, r) = match &cmd.op {
            Op::Put(Put {
                key,
                value,
                dir,
                ttl,
                prev_exist,
                prev_value,
                prev_index,
                refresh,
            }) => {
                let key = clean_key(key);
                let expires =
                    ttl.map(|t| now.saturating_add((t as i64).saturating_mul(1_000_000_000)));
                // A refresh is the same write with the node's current value, kept from
                // waiting watchers.
                let value = if *refresh {
                    match self.nodes.get(&key) {
                        Some(n) => n.value.clone(),
                        None => {
                            return self.failed(Kind::Set, self.err(KEY_NOT_FOUND, key.clone()))
                        }
                    }
                } else {
                    value.clone()
                };
                let (kind, mut r) = if *prev_exist == Some(false) {
                    (
                        Kind::Create,
                        self.create(&key, value, *dir, expires, false, now),
                    )
                } else if prev_value.is_some() || prev_index.is_some() {
                    (
                        Kind::Cas,
                        self.cas(
                            &key,
                            prev_value.as_deref(),
                            *prev_index,
                            value,
                            expires,
                            now,
                        ),
                    )
                } else if *prev_exist == Some(true) {
                    (Kind::Update, self.update(&key, value, expires, now))
                } else {
                    (
                        Kind::Set,
                        self.create(&key, value, *dir, expires, true, now),
                    )
                };
                if let Ok(e) = &mut r {
                    e.refresh = *refresh;
                }
                (kind, r)
            }
            Op::Post { dir, value, ttl } => {
                let dir = clean_key(dir);
                let expires =
                    ttl.map(|t| now.saturating_add((t as i64).saturating_mul(1_000_000_000)));
                let key = if dir == "/" {
                    format!("/{:020}", self.index + 1)
                } else {
                    format!("{dir}/{:020}", self.index + 1)
                };
                (
                    Kind::Create,
                    self.create(&key, value.clone(), value.is_none(), expires, false, now),
                )
            }
            Op::Delete {
                key,
                dir,
                recursive,
                prev_value,
                prev_index,
            } => {
                let key = clean_key(key);
                if prev_value.is_some() || prev_index.is_some() {
                    (
                        Kind::Cad,
                        self.cad(&key, prev_value.as_deref(), *prev_index, now),
                    )
                } else {
                    (Kind::Delete, self.delete(&key, *dir, *recursive, now))
                }
            }
            Op::Expire => return self.expire(now),
        };
        self.count(kind, r.is_ok());
        if let Ok(e) = &r {
            self.record(e.clone());
        }
        r
    }

    fn failed(&mut self, kind: Kind, e: EtcdError) -> Outcome {
        self.count(kind, false);
        Err(e)
    }

    fn count(&mut self, kind: Kind, ok: bool) {
        let s = &mut self.stats;
        let (good, bad) = match kind {
            Kind::Set => (&mut s.sets_success, &mut s.sets_fail),
            Kind::Create => (&mut s.create_success, &mut s.create_fail),
            Kind::Update => (&mut s.update_success, &mut s.update_fail),
            Kind::Cas => (&mut s.cas_success, &mut s.cas_fail),
            Kind::Delete => (&mut s.delete_success, &mut s.delete_fail),
            Kind::Cad => (&mut s.cad_success, &mut s.cad_fail),
        };
        if ok {
            *good += 1;
        } else {
            *bad += 1;
        }
    }

    fn record(&mut self, e: Event) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(e);
    }

    /// Checks that every ancestor of `key` is a directory (or missing).
    fn check_parents(&self, key: &str) -> Result<(), EtcdError> {
        let mut p = parent(key);
        while let Some(dir) = p {
            if dir == "/" {
                break;
            }
            if let Some(n) = self.nodes.get(dir) {
                if n.value.is_some() {
                    return Err(self.err(NOT_DIR, dir));
                }
            }
            p = parent(dir);
        }
        Ok(())
    }

    fn make_parents(&mut self, key: &str, index: u64) {
        let mut p = parent(key);
        while let Some(dir) = p {
            if dir == "/" || self.nodes.contains_key(dir) {
                break;
            }
            self.nodes.insert(
                dir.to_string(),
                Node {
                    value: None,
                    created: index,
                    modified: index,
                    expires: None,
                },
            );
            p = parent(dir);
        }
    }

    fn check_value(&self, value: &Option<String>) -> Result<(), EtcdError> {
        match value {
            Some(v) if v.len() > MAX_VALUE_BYTES => Err(self.err(
                INVALID_FIELD,
                format!(
                    "value is {} bytes; the limit is {MAX_VALUE_BYTES} bytes",
                    v.len()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// set (`replace`) or create.
    fn create(
        &mut self,
        key: &str,
        value: Option<String>,
        dir: bool,
        expires: Option<i64>,
        replace: bool,
        now: i64,
    ) -> Outcome {
        if key == "/" {
            return Err(self.err(ROOT_RONLY, "/"));
        }
        self.check_value(&value)?;
        self.check_parents(key)?;
        let prev = match self.nodes.get(key) {
            Some(_) if !replace => return Err(self.err(NODE_EXIST, key)),
            Some(n) if n.value.is_none() => return Err(self.err(NOT_FILE, key)),
            Some(n) => Some(self.view(key, n, now)),
            None => None,
        };
        let index = self.index + 1;
        self.index = index;
        self.make_parents(key, index);
        let node = Node {
            value: if dir {
                None
            } else {
                Some(value.unwrap_or_default())
            },
            created: index,
            modified: index,
            expires,
        };
        let view = self.view(key, &node, now);
        self.nodes.insert(key.to_string(), node);
        Ok(Event {
            action: if replace { "set" } else { "create" }.into(),
            node: view,
            prev_node: prev,
            refresh: false,
        })
    }

    fn update(
        &mut self,
        key: &str,
        value: Option<String>,
        expires: Option<i64>,
        now: i64,
    ) -> Outcome {
        if key == "/" {
            return Err(self.err(ROOT_RONLY, "/"));
        }
        self.check_value(&value)?;
        let n = self
            .nodes
            .get(key)
            .ok_or_else(|| self.err(KEY_NOT_FOUND, key))?;
        if n.value.is_none() && value.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err(self.err(NOT_FILE, key));
        }
        self.rewrite(key, value, expires, now, "update")
    }

    /// Gives an existing node a new value (files only) and expiry at the next index; the
    /// answer carries the node before and after.
    fn rewrite(
        &mut self,
        key: &str,
        value: Option<String>,
        expires: Option<i64>,
        now: i64,
        action: &str,
    ) -> Outcome {
        let n = self
            .nodes
            .get(key)
            .ok_or_else(|| self.err(KEY_NOT_FOUND, key))?;
        let prev = self.view(key, n, now);
        let index = self.index + 1;
        let mut node = n.clone();
        if node.value.is_some() {
            node.value = Some(value.unwrap_or_default());
        }
        node.modified = index;
        node.expires = expires;
        self.index = index;
        let view = self.view(key, &node, now);
        self.nodes.insert(key.to_string(), node);
        Ok(Event {
            action: action.into(),
            node: view,
            prev_node: Some(prev),
            refresh: false,
        })
    }

    fn compare(
        &self,
        n: &Node,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<(), EtcdError> {
        let value_ok = prev_value.is_none_or(|p| n.value.as_deref() == Some(p));
        let index_ok = prev_index.is_none_or(|i| n.modified == i);
        if value_ok && index_ok {
            return Ok(());
        }
        let actual = n.value.clone().unwrap_or_default();
        let cause = match (value_ok, index_ok) {
            (true, false) => format!("[{} != {}]", prev_index.unwrap_or(0), n.modified),
            (false, true) => format!("[{} != {actual}]", prev_value.unwrap_or("")),
            _ => format!(
                "[{} != {actual}] [{} != {}]",
                prev_value.unwrap_or(""),
                prev_index.unwrap_or(0),
                n.modified
            ),
        };
        Err(self.err(TEST_FAILED, cause))
    }

    fn cas(
        &mut self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        value: Option<String>,
        expires: Option<i64>,
        now: i64,
    ) -> Outcome {
        if key == "/" {
            return Err(self.err(ROOT_RONLY, "/"));
        }
        self.check_value(&value)?;
        let n = self
            .nodes
            .get(key)
            .ok_or_else(|| self.err(KEY_NOT_FOUND, key))?;
        if n.value.is_none() {
            return Err(self.err(NOT_FILE, key));
        }
        self.compare(n, prev_value, prev_index)?;
        self.rewrite(key, value, expires, now, "compareAndSwap")
    }

    fn remove_tree(&mut self, key: &str) {
        for k in self.subtree_keys(key) {
            self.nodes.remove(&k);
        }
    }

    fn delete(&mut self, key: &str, dir: bool, recursive: bool, now: i64) -> Outcome {
        if key == "/" {
            return Err(self.err(ROOT_RONLY, "/"));
        }
        let n = self
            .nodes
            .get(key)
            .ok_or_else(|| self.err(KEY_NOT_FOUND, key))?;
        let is_dir = n.value.is_none();
        if is_dir {
            if !dir && !recursive {
                return Err(self.err(NOT_FILE, key));
            }
            if !recursive && self.children(key).next().is_some() {
                return Err(self.err(DIR_NOT_EMPTY, key));
            }
        }
        let prev = self.view(key, n, now);
        let created = n.created;
        let index = self.index + 1;
        self.index = index;
        self.remove_tree(key);
        Ok(Event {
            action: "delete".into(),
            node: NodeView {
                key: key.to_string(),
                dir: is_dir,
                modified_index: index,
                created_index: created,
                ..NodeView::default()
            },
            prev_node: Some(prev),
            refresh: false,
        })
    }

    fn cad(
        &mut self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        now: i64,
    ) -> Outcome {
        let n = self
            .nodes
            .get(key)
            .ok_or_else(|| self.err(KEY_NOT_FOUND, key))?;
        if n.value.is_none() {
            return Err(self.err(NOT_FILE, key));
        }
        self.compare(n, prev_value, prev_index)?;
        let prev = self.view(key, n, now);
        let created = n.created;
        let index = self.index + 1;
        self.index = index;
        self.nodes.remove(key);
        Ok(Event {
            action: "compareAndDelete".into(),
            node: NodeView {
                key: key.to_string(),
                modified_index: index,
                created_index: created,
                ..NodeView::default()
            },
            prev_node: Some(prev),
            refresh: false,
        })
    }

    /// The earliest expiration still pending, for the expiry driver.
    pub fn next_expiry(&self) -> Option<i64> {
        self.nodes.values().filter_map(|n| n.expires).min()
    }

    /// Removes expired nodes (shallowest first; a directory takes its subtree with it), one
    /// `expire` event and one index each. Answers the last event, or an unchanged read of `/`.
    fn expire(&mut self, now: i64) -> Outcome {
        let due: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.expires.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        let mut last = None;
        for key in due {
            let Some(n) = self.nodes.get(&key) else {
                continue; // went with an expired parent
            };
            let prev = self.view(&key, n, now);
            let index = self.index + 1;
            self.index = index;
            let e = Event {
                action: "expire".into(),
                node: NodeView {
                    key: key.clone(),
                    dir: n.value.is_none(),
                    modified_index: index,
                    created_index: n.created,
                    ..NodeView::default()
                },
                prev_node: Some(prev),
                refresh: false,
            };
            self.remove_tree(&key);
            self.stats.expire_count += 1;
            self.record(e.clone());
            last = Some(e);
        }
        match last {
            Some(e) => Ok(e),
            None => Ok(Event {
                action: "expire".into(),
                node: NodeView::default(),
                prev_node: None,
                refresh: false,
            }),
        }
    }

    /// The first event at or after `since` that a watcher of `key` sees, `Ok(None)` if none
    /// happened yet, or error 401 when `since` fell out of the history.
    pub fn scan(&self, key: &str, recursive: bool, since: u64) -> Result<Option<Event>, EtcdError> {
        let key = clean_key(key);
        let start = self
            .history
            .front()
            .map(|e| e.index())
            .unwrap_or(self.index + 1);
        if since < start && since <= self.index && !self.history.is_empty() {
            return Err(EtcdError::new(
                EVENT_INDEX_CLEARED,
                format!("the requested history has been cleared [{start}/{since}]"),
                self.index,
            ));
        }
        let prefix = if key == "/" {
            "/".to_string()
        } else {
            format!("{key}/")
        };
        Ok(self
            .history
            .iter()
            .filter(|e| e.index() >= since)
            .find(|e| {
                let k = &e.node.key;
                let mut ok = *k == key || (recursive && k.starts_with(&prefix));
                // Deleting or expiring a directory also ends watches below it.
                if (e.action == "delete" || e.action == "expire")
                    && e.prev_node.as_ref().is_some_and(|p| p.dir)
                {
                    ok = ok || key.starts_with(&format!("{k}/"));
                }
                ok
            })
            .cloned())
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Set,
    Create,
    Update,
    Cas,
    Delete,
    Cad,
}

/// The store as replication and the HTTP layer share it: the state behind a lock, the raft
/// position of the last applied entry, and a signal watchers wait on.
pub struct Store {
    inner: Mutex<Inner>,
    changed: tokio::sync::watch::Sender<u64>,
}

struct Inner {
    state: State,
    applied: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        Store {
            inner: Mutex::new(Inner {
                state: State::new(),
                applied: 0,
            }),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Apply never panics halfway through a change of its own making; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the state (reads; writes go through replication).
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.lock().state)
    }

    /// The current etcd index.
    pub fn index(&self) -> u64 {
        self.lock().state.index
    }

    /// A receiver that changes whenever a write applies.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Applies an encoded [`Command`]; the answer is an encoded [`Outcome`].
    pub fn apply_command(&self, raft_index: u64, bytes: &[u8]) -> Vec<u8> {
        let outcome: Outcome = match serde_json::from_slice::<Command>(bytes) {
            Ok(cmd) => {
                let mut g = self.lock();
                let r = g.state.apply(&cmd);
                g.applied = g.applied.max(raft_index);
                let idx = g.state.index;
                drop(g);
                self.changed.send_replace(idx);
                r
            }
            Err(e) => {
                // Still an applied entry: the position moves on, the state does not change.
                let mut g = self.lock();
                g.applied = g.applied.max(raft_index);
                Err(EtcdError::new(
                    RAFT_INTERNAL,
                    format!("undecodable command: {e}"),
                    g.state.index,
                ))
            }
        };
        serde_json::to_vec(&outcome).unwrap_or_default()
    }
}

/// Encodes a command for [`crate::backend::Backend::propose`].
pub fn encode(cmd: &Command) -> Vec<u8> {
    serde_json::to_vec(cmd).unwrap_or_default()
}

/// Decodes what [`Store::apply_command`] answered.
pub fn decode_outcome(bytes: &[u8]) -> Outcome {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        Err(EtcdError::new(
            RAFT_INTERNAL,
            format!("undecodable answer: {e}"),
            0,
        ))
    })
}

impl crate::backend::Apply for Store {
    fn apply(&self, index: u64, _term: u64, command: &[u8]) -> Vec<u8> {
        self.apply_command(index, command)
    }

    fn applied_index(&self) -> u64 {
        self.lock().applied
    }

    fn snapshot(&self) -> Vec<u8> {
        let g = self.lock();
        serde_json::to_vec(&(g.applied, &g.state)).unwrap_or_default()
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let (applied, state): (u64, State) = serde_json::from_slice(snapshot)
            .map_err(|e| format!("kv snapshot does not decode: {e}"))?;
        let idx = state.index;
        {
            let mut g = self.lock();
            g.state = state;
            g.applied = applied;
        }
        self.changed.send_replace(idx);
        Ok(())
    }
}
