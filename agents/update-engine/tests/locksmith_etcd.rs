//! The locksmith semaphore against crust kv and a real etcd 3.4 (`--enable-v2`) on 127.0.0.1: the same
//! conformance suite the in-memory store passes, and a race of several machines for one slot.
//! Skipped (with a message) when `etcd` is not installed (`scripts/setup` installs it).
#![allow(clippy::unwrap_used)]

use crust_update_engine::locksmith::etcd::connect;
use crust_update_engine::locksmith::semaphore::{conformance, LockError, Locker, SemError};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd() -> Option<Etcd> {
    if Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("etcd is not installed: skipping the real-etcd locksmith test");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (c, p) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{c}");
    let child = Command::new("etcd")
        .args([
            "--enable-v2",
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{p}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{p}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{p}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let e = Etcd {
        child,
        url,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let u = crust_update_engine::http::Url::parse(&format!("{}/v2/keys/", e.url)).unwrap();
    while crust_update_engine::http::get(&u, None)
        .map(|r| r.status)
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "etcd did not answer within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(e)
}

#[test]
fn real_etcd_passes_the_semaphore_suite_and_never_double_grants() {
    let Some(e) = etcd() else { return };
    conformance(connect(&e.url).unwrap(), None).unwrap();
    conformance(connect(&e.url).unwrap(), Some("workers")).unwrap();
    // The stored value is locksmith's JSON.
    let u = crust_update_engine::http::Url::parse(&format!(
        "{}/v2/keys/coreos.com/updateengine/rebootlock/semaphore",
        e.url
    ))
    .unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(
        &mut crust_update_engine::http::get(&u, None).unwrap().body,
        &mut body,
    )
    .unwrap();
    assert!(
        body.contains(r#"{\"semaphore\":-1,\"max\":0,\"holders\":[\"m2\"]}"#),
        "{body}"
    );

    // Eight machines race for one slot of a fresh group: exactly one wins.
    let winners: Vec<bool> = (0..8)
        .map(|i| {
            let url = e.url.clone();
            std::thread::spawn(move || {
                let mut l = Locker::new(connect(&url).unwrap(), Some("race"));
                match l.lock(&format!("machine-{i}")) {
                    Ok(_) => true,
                    Err(LockError::Sem(SemError::Full { .. })) => false,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    let s = Locker::new(connect(&e.url).unwrap(), Some("race"))
        .get()
        .unwrap();
    assert_eq!((s.semaphore, s.holders.len()), (0, 1));
}

/// The same suite and race against crust kv (single member, on 127.0.0.1), which machines run
/// as etcd2.service.
#[test]
fn crust_kv_passes_the_semaphore_suite_and_never_double_grants() {
    let kv = crust_kv::local::spawn_thread("127.0.0.1:0", "locksmith-test").unwrap();
    let url = format!("http://{}", kv.addr);
    conformance(connect(&url).unwrap(), None).unwrap();
    conformance(connect(&url).unwrap(), Some("workers")).unwrap();
    let winners = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut l = Locker::new(connect(&url).unwrap(), Some("race"));
                match l.lock(&format!("machine-{i}")) {
                    Ok(_) => true,
                    Err(LockError::Sem(SemError::Full { .. })) => false,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|w| *w)
        .count();
    assert_eq!(winners, 1);
}
