//! Concurrent clients that read (`quorum=true`), write and compare-and-swap a few keys and
//! record what they saw, as a history for [`crate::linearizability::check`].

use crate::linearizability::{Entry, Op, Outcome};
use crust_common::http::{Conn, ConnError};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Collects entries from many threads with one clock.
pub struct Recorder {
    start: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn push(&self, e: Entry) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(e);
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Runs `op` on `key` through `conn`. `None` when the request surely never reached a server
/// (no connection), so it did not happen; [`Outcome::Unknown`] when it may have.
pub fn perform(conn: &mut Conn, key: &str, op: &Op) -> Option<Outcome> {
    let path = format!("/v2/keys{key}");
    let reply = match op {
        Op::Read => conn.request("GET", &format!("{path}?quorum=true"), None),
        Op::Write(v) => conn.request("PUT", &path, Some(&format!("value={}", enc(v)))),
        Op::Cas { expect, new } => conn.request(
            "PUT",
            &path,
            Some(&format!("value={}&prevValue={}", enc(new), enc(expect))),
        ),
    };
    let reply = match reply {
        Ok(r) => r,
        Err(ConnError::NotSent { .. }) => return None,
        Err(ConnError::NoAnswer { .. }) => return Some(Outcome::Unknown),
    };
    let code = || {
        serde_json::from_str::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["errorCode"].as_u64())
    };
    Some(match (op, reply.status) {
        (Op::Read, 200) => serde_json::from_str::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["node"]["value"].as_str().map(str::to_string))
            .map_or(Outcome::Unknown, |v| Outcome::Read(Some(v))),
        (Op::Read, 404) if code() == Some(100) => Outcome::Read(None),
        (Op::Write(_), 200 | 201) => Outcome::Written,
        (Op::Cas { .. }, 200 | 201) => Outcome::Cas(true),
        // Compare failed, or no key to compare with: refused without effect.
        (Op::Cas { .. }, 412) if code() == Some(101) => Outcome::Cas(false),
        (Op::Cas { .. }, 404) if code() == Some(100) => Outcome::Cas(false),
        // Anything else (a server-side timeout, no leader) does not say whether a write
        // was applied.
        _ => Outcome::Unknown,
    })
}

fn enc(v: &str) -> String {
    crust_common::http::urlencode(v)
}

/// What the clients do.
#[derive(Debug, Clone)]
pub struct Workload {
    pub clients: usize,
    /// Keys `/lin/k0` .. `/lin/k{keys-1}`.
    pub keys: usize,
    /// Per request; an operation that takes longer is unknown.
    pub timeout: Duration,
    /// Between one client's operations (keeps histories small enough to check).
    pub pause: Duration,
    pub seed: u64,
}

/// Starts `w.clients` threads against the members at `addrs` (client `c` starts with member
/// `c % addrs.len()` and moves to the next one after an error) until `stop` is set.
pub fn spawn_clients(
    addrs: Vec<SocketAddr>,
    w: Workload,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    (0..w.clients)
        .map(|c| {
            let addrs = addrs.clone();
            let w = w.clone();
            let rec = recorder.clone();
            let stop = stop.clone();
            std::thread::spawn(move || client(c, &addrs, &w, &rec, &stop))
        })
        .collect()
}

fn client(c: usize, addrs: &[SocketAddr], w: &Workload, rec: &Recorder, stop: &AtomicBool) {
    let mut rng = Rng(w
        .seed
        .wrapping_add(c as u64 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1);
    let mut member = c % addrs.len();
    let mut conn = Conn::new(addrs[member], w.timeout);
    let mut last_seen: Vec<Option<String>> = vec![None; w.keys];
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let k = rng.below(w.keys as u64) as usize;
        let key = format!("/lin/k{k}");
        seq += 1;
        let value = format!("c{c}-{seq}");
        let op = match rng.below(10) {
            0..=3 => Op::Read,
            4..=6 => Op::Write(value),
            _ => Op::Cas {
                expect: last_seen[k].clone().unwrap_or_else(|| "none".into()),
                new: value,
            },
        };
        let invoke = rec.now();
        let outcome = perform(&mut conn, &key, &op);
        let complete = rec.now();
        match &outcome {
            Some(Outcome::Read(v)) => last_seen[k] = v.clone(),
            Some(Outcome::Written) | Some(Outcome::Cas(true)) => {
                if let Op::Write(v) | Op::Cas { new: v, .. } = &op {
                    last_seen[k] = Some(v.clone());
                }
            }
            _ => {}
        }
        if matches!(outcome, None | Some(Outcome::Unknown)) {
            member = (member + 1) % addrs.len();
            conn = Conn::new(addrs[member], w.timeout);
            // Back off as a real client would: a member that fails fast would otherwise fill
            // the history with unknown operations.
            std::thread::sleep(w.pause * 5);
        }
        if let Some(outcome) = outcome {
            rec.push(Entry {
                key,
                client: c,
                op,
                invoke,
                complete,
                outcome,
            });
        }
        std::thread::sleep(w.pause);
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
