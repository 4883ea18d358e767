#![allow(clippy::unwrap_used)] // test code: a failure is the test failing
//! Fault tests of a 3-member kv cluster: the leader killed, a member restarted on its data
//! directory, a minority cut off, and concurrent clients checked for linearizability while
//! the leader dies and a member is partitioned. Every scenario runs against crust kv
//! (`crust-agent kv`) and against etcd 3.4 (`--enable-v2`), the reference, so a scenario that
//! fails on etcd points at the harness or the test, not at crust.
//!
//! Members run as processes on 127.0.0.1 behind peer proxies (`crust_kv::testkit`). The
//! scenarios run one at a time (a lock): three clusters electing at once on a small machine
//! would measure the machine.

use crust_common::http::Conn;
use crust_kv::linearizability::{self, Outcome};
use crust_kv::testkit::history::{spawn_clients, Recorder, Workload};
use crust_kv::testkit::{Cluster, Flavor, Spec};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn etcd() -> Option<Flavor> {
    let found = || Flavor::etcd().available().is_ok();
    if !found() && is_root() && std::path::Path::new("/usr/bin/apt-get").exists() {
        let _ = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "etcd-server",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
    }
    match Flavor::etcd().available() {
        Ok(()) => Some(Flavor::etcd()),
        Err(why) => {
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// This test's own crust-agent, or `CRUST_AGENT_BIN` (e.g. a static image build).
fn crust() -> Option<Flavor> {
    let agent = std::env::var_os("CRUST_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_crust-agent")));
    let flavor = Flavor::Crust { agent };
    match flavor.available() {
        Ok(()) => Some(flavor),
        Err(why) => {
            eprintln!("skipping: {why}");
            None
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The value, or a panic with the harness's message (member logs included).
fn must<T>(r: Result<T, crust_kv::testkit::TestkitError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Three members, healthy, with an agreed leader.
fn up(flavor: Flavor) -> Cluster {
    let mut c = must(Cluster::start(Spec::new(flavor, 3)));
    must(c.wait_healthy(Duration::from_secs(30)));
    c
}

/// Runs `scenario` against crust kv and etcd.
macro_rules! against_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn crust() {
                let _one = super::serial();
                if let Some(f) = super::crust() {
                    super::$scenario(f);
                }
            }
            #[test]
            fn etcd() {
                let _one = super::serial();
                if let Some(f) = super::etcd() {
                    super::$scenario(f);
                }
            }
        }
    )*};
}

against_both!(
    leader_killed,
    restarted_member_catches_up,
    minority_cannot_commit,
    linearizable_under_faults,
);

const TIMEOUT: Duration = Duration::from_secs(2);

fn put(conn: &mut Conn, key: &str, value: &str) -> Option<u16> {
    conn.request(
        "PUT",
        &format!("/v2/keys{key}"),
        Some(&format!("value={value}")),
    )
    .ok()
    .map(|r| r.status)
}

/// A local (non-quorum) read: what this member has applied.
fn local_value(c: &Cluster, member: usize, key: &str) -> Option<String> {
    let r = c
        .conn(member, TIMEOUT)
        .request("GET", &format!("/v2/keys{key}"), None)
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    v["node"]["value"].as_str().map(str::to_string)
}

/// A quorum read through `member`: the value, or `None` when the key does not exist. Retries
/// answers that say nothing (timeouts, no leader yet) for up to 20 s, then panics with the
/// last one, so that "no answer" is never mistaken for "not there".
fn quorum_value(c: &Cluster, member: usize, key: &str) -> Option<String> {
    let start = Instant::now();
    let mut conn = c.conn(member, Duration::from_secs(5));
    loop {
        let last = match conn.request("GET", &format!("/v2/keys{key}?quorum=true"), None) {
            Ok(r) if r.status == 200 || r.status == 404 => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                if r.status == 200 {
                    return v["node"]["value"].as_str().map(str::to_string);
                }
                if v["errorCode"].as_u64() == Some(100) {
                    return None;
                }
                format!("{} {}", r.status, r.body)
            }
            Ok(r) => format!("{} {}", r.status, r.body),
            Err(e) => e.to_string(),
        };
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "quorum read of {key} through {}: {last}\n{}",
            c.name(member),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `key=value` through any member until one acknowledges it.
fn put_acked(c: &Cluster, key: &str, value: &str, within: Duration) {
    let start = Instant::now();
    let mut m = 0;
    loop {
        if let Some(200 | 201) = put(&mut c.conn(m, TIMEOUT), key, value) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "no member acknowledged {key}={value}\n{}",
            c.logs()
        );
        m = (m + 1) % c.len();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until member `m`'s local reads show every `(key, value)`.
fn wait_caught_up(c: &Cluster, m: usize, expect: &[(String, String)], within: Duration) {
    let start = Instant::now();
    loop {
        let missing: Vec<&(String, String)> = expect
            .iter()
            .filter(|(k, v)| local_value(c, m, k).as_deref() != Some(v))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{} still lacks {} of {} writes (first {:?})\n{}",
            c.name(m),
            missing.len(),
            expect.len(),
            missing[0],
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client writing fresh keys `{prefix}/N` until stopped, moving to the next member after
/// an error; returns the writes that were acknowledged.
fn writer(
    addrs: Vec<SocketAddr>,
    prefix: &'static str,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut m = 0;
        let mut conn = Conn::new(addrs[m], TIMEOUT);
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let (k, v) = (format!("{prefix}/{n}"), format!("v{n}"));
            match put(&mut conn, &k, &v) {
                Some(200 | 201) => acked.lock().unwrap().push((k, v)),
                _ => {
                    m = (m + 1) % addrs.len();
                    conn = Conn::new(addrs[m], TIMEOUT);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    })
}

fn wait_count(acked: &Mutex<Vec<(String, String)>>, n: usize, c: &Cluster, what: &str) {
    let start = Instant::now();
    while acked.lock().unwrap().len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: only {} writes acknowledged\n{}",
            acked.lock().unwrap().len(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (a) The leader dies under a steady writer: the survivors elect a leader within a few
/// election timeouts, keep acknowledging writes, and every write acknowledged before or
/// after the kill is there.
fn leader_killed(flavor: Flavor) {
    let mut c = up(flavor);
    let old = must(c.wait_leader(c.elections(10)));
    let addrs: Vec<SocketAddr> = (0..c.len()).map(|i| c.client_addr(i)).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(addrs, "/a", acked.clone(), stop.clone());
    wait_count(&acked, 20, &c, "before the kill");
    c.kill(old);
    let at_kill = acked.lock().unwrap().len();
    let new = must(c.wait_leader_except(Some(old), c.elections(10)));
    wait_count(&acked, at_kill + 20, &c, "after the kill");
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    for (k, v) in &acked {
        assert_eq!(
            quorum_value(&c, new, k).as_deref(),
            Some(v.as_str()),
            "acknowledged write {k}={v} lost after the leader {} died\n{}",
            c.name(old),
            c.logs()
        );
    }
    assert_eq!(
        c.net().unidentified(),
        0,
        "peer connections from unknown processes"
    );
}

/// (b) A follower killed with SIGKILL misses writes, comes back on its data directory and
/// catches up with all of them (and keeps what it had).
fn restarted_member_catches_up(flavor: Flavor) {
    let mut c = up(flavor);
    let leader = must(c.wait_leader(c.elections(10)));
    let f = (leader + 1) % c.len();
    let mut expect = Vec::new();
    for i in 0..10 {
        let (k, v) = (format!("/b/before{i}"), format!("v{i}"));
        put_acked(&c, &k, &v, Duration::from_secs(20));
        expect.push((k, v));
    }
    wait_caught_up(&c, f, &expect, Duration::from_secs(20));
    c.kill(f);
    for i in 0..30 {
        let (k, v) = (format!("/b/while-down{i}"), format!("v{i}"));
        put_acked(&c, &k, &v, Duration::from_secs(20));
        expect.push((k, v));
    }
    must(c.restart(f));
    wait_caught_up(&c, f, &expect, Duration::from_secs(30));
    // It serves again as a full member: a write through it is acknowledged and seen.
    put_acked(&c, "/b/after", "x", Duration::from_secs(20));
    assert_eq!(quorum_value(&c, f, "/b/after").as_deref(), Some("x"));
    assert_eq!(
        c.net().unidentified(),
        0,
        "peer connections from unknown processes"
    );
}

/// (c) The leader is cut off from both followers: writes sent to it are never acknowledged,
/// while the two others elect a leader and acknowledge writes; after the heal the old
/// leader has every write of the majority.
fn minority_cannot_commit(flavor: Flavor) {
    let mut c = up(flavor);
    let cut = must(c.wait_leader(c.elections(10)));
    put_acked(&c, "/c/before", "1", Duration::from_secs(20));
    c.isolate(cut);
    let addr = c.client_addr(cut);
    let minority = std::thread::spawn(move || {
        // Spread over several election timeouts: before and after the cut-off leader could
        // notice that it lost its followers.
        let mut answers = Vec::new();
        let mut conn = Conn::new(addr, TIMEOUT);
        for i in 0..6 {
            let r = conn.request(
                "PUT",
                &format!("/v2/keys/c/minority{i}"),
                Some("value=lost"),
            );
            answers.push(r.map(|r| (r.status, r.body)).map_err(|e| e.to_string()));
            std::thread::sleep(Duration::from_millis(300));
        }
        answers
    });
    let majority: Vec<usize> = (0..c.len()).filter(|&m| m != cut).collect();
    let new = must(c.wait_leader_except(Some(cut), c.elections(10)));
    assert!(majority.contains(&new));
    let mut expect = vec![("/c/before".to_string(), "1".to_string())];
    for i in 0..20 {
        let (k, v) = (format!("/c/majority{i}"), format!("v{i}"));
        let mut conn = c.conn(majority[i % 2], TIMEOUT);
        let mut tries = 0;
        while !matches!(put(&mut conn, &k, &v), Some(200 | 201)) {
            tries += 1;
            assert!(
                tries < 50,
                "the majority does not acknowledge {k}\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        expect.push((k, v));
    }
    let answers = minority.join().unwrap();
    for (status, body) in answers.iter().flatten() {
        assert!(
            !(200..300).contains(status),
            "the cut-off member {} acknowledged a write: {status} {body}",
            c.name(cut)
        );
    }
    c.heal();
    must(c.wait_healthy(Duration::from_secs(30)));
    wait_caught_up(&c, cut, &expect, Duration::from_secs(30));
    assert_eq!(
        c.net().unidentified(),
        0,
        "peer connections from unknown processes"
    );
}

/// (d) Five clients read (quorum), write and CAS five keys while the leader is killed and
/// restarted and then the new leader is partitioned away and healed; the recorded history
/// must be linearizable.
fn linearizable_under_faults(flavor: Flavor) {
    let mut c = up(flavor);
    let rec = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<SocketAddr> = (0..c.len()).map(|i| c.client_addr(i)).collect();
    let clients = spawn_clients(
        addrs,
        Workload {
            clients: 5,
            keys: 5,
            timeout: Duration::from_millis(1500),
            pause: Duration::from_millis(20),
            seed: 7,
        },
        rec.clone(),
        stop.clone(),
    );
    let phase = |d: u64| std::thread::sleep(Duration::from_millis(d));
    phase(1500);
    let first = must(c.wait_leader(c.elections(10)));
    c.kill(first);
    let second = must(c.wait_leader_except(Some(first), c.elections(10)));
    phase(1500);
    must(c.restart(first));
    must(c.wait_healthy(Duration::from_secs(30)));
    phase(1000);
    c.isolate(second);
    must(c.wait_leader_except(Some(second), c.elections(10)));
    phase(2500);
    c.heal();
    must(c.wait_healthy(Duration::from_secs(30)));
    phase(1500);
    stop.store(true, Ordering::SeqCst);
    for t in clients {
        t.join().unwrap();
    }
    let history = rec.entries();
    let count = |f: &dyn Fn(&Outcome) -> bool| history.iter().filter(|e| f(&e.outcome)).count();
    let reads = count(&|o| matches!(o, Outcome::Read(_)));
    let writes = count(&|o| matches!(o, Outcome::Written | Outcome::Cas(true)));
    let refused = count(&|o| matches!(o, Outcome::Cas(false)));
    let unknown = count(&|o| matches!(o, Outcome::Unknown));
    eprintln!(
        "{} operations: {reads} reads, {writes} acknowledged writes/CAS, {refused} refused CAS, {unknown} unknown",
        history.len()
    );
    // The history has to be worth checking: the clients made progress through the faults.
    assert!(
        reads >= 20 && writes >= 20,
        "too little progress\n{}",
        c.logs()
    );
    if let Err(e) = linearizability::check(&history) {
        panic!("{e}");
    }
    assert_eq!(
        c.net().unidentified(),
        0,
        "peer connections from unknown processes"
    );
}

/// The checker is not vacuous on real histories: the same workload against a healthy
/// cluster, with one acknowledged write's value changed afterwards, is rejected.
#[test]
fn a_tampered_etcd_history_is_rejected() {
    let _one = serial();
    let Some(flavor) = etcd() else { return };
    let c = up(flavor);
    let rec = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<SocketAddr> = (0..c.len()).map(|i| c.client_addr(i)).collect();
    let clients = spawn_clients(
        addrs,
        Workload {
            clients: 3,
            keys: 1,
            timeout: Duration::from_secs(2),
            pause: Duration::from_millis(5),
            seed: 11,
        },
        rec.clone(),
        stop.clone(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    for t in clients {
        t.join().unwrap();
    }
    let mut history = rec.entries();
    linearizability::check(&history).unwrap();
    // A read that saw a value nobody wrote.
    let i = history
        .iter()
        .position(|e| matches!(e.outcome, Outcome::Read(Some(_))))
        .expect("some read saw a value");
    history[i].outcome = Outcome::Read(Some("never-written".into()));
    assert!(linearizability::check(&history).is_err());
}
