use super::*;
use crate::def::Wave;
use crate::publish::{add_release, refresh, KeySet, Lifetimes, NewRelease, PublishError, Repo};
use crate::release::{self, ReleaseInfo, TargetRef, VerityParams};
use crate::{Channel, Version};
use std::collections::HashMap;

const NOW: u64 = 1_800_000_000;

/// Test-only keys: fixed seeds, never used outside tests.
fn test_keys(n: u8) -> KeySet {
    KeySet::from_seeds([[n; 32], [n + 1; 32], [n + 2; 32], [n + 3; 32]])
}

#[derive(Default, Clone)]
struct Server(HashMap<String, Vec<u8>>);

impl Source for Server {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Option<Vec<u8>>, TufError> {
        match self.0.get(file) {
            Some(b) if b.len() as u64 > max => Err(TufError::TooLarge {
                file: file.into(),
                max,
            }),
            Some(b) => Ok(Some(b.clone())),
            None => Ok(None),
        }
    }
}

impl Server {
    fn repo(&self) -> Repo {
        Repo::load(
            &self.0["root.json"],
            self.0.get("targets.json").map(Vec::as_slice),
            self.0.get("snapshot.json").map(Vec::as_slice),
            self.0.get("timestamp.json").map(Vec::as_slice),
        )
        .unwrap()
    }
    fn publish(
        &mut self,
        keys: &KeySet,
        version: &str,
        now: u64,
        life: Lifetimes,
    ) -> Result<(), PublishError> {
        let v: Version = version.parse().unwrap();
        let t = |p: String, n: u8| TargetRef {
            length: 10,
            sha256: format!("{n:02x}").repeat(32),
            path: p,
        };
        let rel = NewRelease {
            info: ReleaseInfo {
                version: v,
                channel: Channel::Beta,
                usrhash: "ab".repeat(32),
                verity: VerityParams {
                    hash_offset: 4096,
                    data_blocks: 1,
                    salt: "00".into(),
                },
                min_version: None,
                published: now,
                rollout: vec![Wave {
                    after: 0,
                    percent: 100,
                }],
                cmdline: "console=ttyS0".into(),
                kernel: release::kernel_path(&v),
                initrd: release::initrd_path(&v),
            },
            usr: t(release::usr_path(&v), 1),
            kernel: t(release::kernel_path(&v), 2),
            initrd: t(release::initrd_path(&v), 3),
        };
        let s = add_release(&self.repo(), keys, &rel, now, life)?;
        self.0.insert("targets.json".into(), s.targets.unwrap());
        self.0.insert("snapshot.json".into(), s.snapshot.unwrap());
        self.0.insert("timestamp.json".into(), s.timestamp);
        Ok(())
    }
}

fn fresh(keys: &KeySet) -> Server {
    let mut s = Server::default();
    s.0.insert(
        "root.json".into(),
        keys.root_metadata(1, NOW + 365 * 86400).unwrap(),
    );
    s
}

fn client(s: &Server) -> Trusted {
    Trusted::new(&s.0["root.json"], Seen::default()).unwrap()
}

#[test]
fn times_round_trip() {
    for t in [0, 86399, 951_782_400, 1_709_164_800, NOW, 4_102_444_800] {
        assert_eq!(
            parse_time(&format_time(t)).unwrap(),
            t,
            "{}",
            format_time(t)
        );
    }
    assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
    for bad in [
        "2030-02-30T00:00:00Z",
        "2030-01-01 00:00:00Z",
        "2030-01-01T00:00:00",
        "2030-13-01T00:00:00Z",
        "2030-01-01T24:00:00Z",
    ] {
        assert!(parse_time(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_published_release_verifies() {
    let keys = test_keys(1);
    let mut s = fresh(&keys);
    s.publish(&keys, "1.1.0", NOW, Lifetimes::default())
        .unwrap();
    s.publish(&keys, "1.1.1", NOW, Lifetimes::default())
        .unwrap();
    let mut c = client(&s);
    let t = c.refresh(&mut s, NOW + 10).unwrap();
    let rels = release::releases(&t).unwrap();
    assert_eq!(rels.len(), 2);
    assert_eq!(rels[1].info.version.to_string(), "1.1.1");
    assert_eq!(rels[1].kernel.sha256, "02".repeat(32));
    assert_eq!(
        c.seen,
        Seen {
            timestamp: 2,
            snapshot: 2,
            targets: 2
        }
    );
}

#[test]
fn refuses_a_version_that_is_not_newer() {
    let keys = test_keys(1);
    let mut s = fresh(&keys);
    s.publish(&keys, "1.1.3", NOW, Lifetimes::default())
        .unwrap();
    for v in ["1.1.3", "1.1.2", "0.1.9"] {
        let e = s.publish(&keys, v, NOW, Lifetimes::default()).unwrap_err();
        assert!(e.to_string().contains("1.1.4"), "{e}");
    }
}

#[test]
fn tampered_metadata_is_refused() {
    let keys = test_keys(1);
    let mut s = fresh(&keys);
    s.publish(&keys, "1.1.0", NOW, Lifetimes::default())
        .unwrap();
    // A changed hash in targets.json: the snapshot's hash no longer matches.
    let t = String::from_utf8(s.0["targets.json"].clone()).unwrap();
    let mut bad = s.clone();
    bad.0.insert(
        "targets.json".into(),
        t.replacen(&"01".repeat(32), &"ff".repeat(32), 1)
            .into_bytes(),
    );
    let e = client(&s).refresh(&mut bad, NOW).unwrap_err();
    assert!(matches!(e, TufError::HashMismatch { .. }), "{e}");
    // A changed timestamp: its signature no longer verifies.
    let ts = String::from_utf8(s.0["timestamp.json"].clone()).unwrap();
    let mut bad = s.clone();
    bad.0.insert(
        "timestamp.json".into(),
        ts.replacen("\"version\": 1", "\"version\": 7", 1)
            .into_bytes(),
    );
    let e = client(&s).refresh(&mut bad, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            TufError::Signatures {
                role: Role::Timestamp,
                valid: 0,
                ..
            }
        ),
        "{e}"
    );
    // Metadata signed with other keys than the root names.
    let other = test_keys(50);
    let mut foreign = fresh(&other);
    foreign
        .publish(&other, "1.1.0", NOW, Lifetimes::default())
        .unwrap();
    foreign
        .0
        .insert("root.json".into(), s.0["root.json"].clone());
    let e = client(&s).refresh(&mut foreign, NOW).unwrap_err();
    assert!(matches!(e, TufError::Signatures { .. }), "{e}");
    // The publisher refuses to sign with keys the repository's root does not name.
    let e = s
        .publish(&other, "1.1.1", NOW, Lifetimes::default())
        .unwrap_err();
    assert!(matches!(e, PublishError::KeyMismatch(_)), "{e}");
}

#[test]
fn expired_timestamp_is_refused_and_refresh_revives_it() {
    let keys = test_keys(1);
    let mut s = fresh(&keys);
    let life = Lifetimes {
        timestamp: 60,
        ..Lifetimes::default()
    };
    s.publish(&keys, "1.1.0", NOW, life).unwrap();
    let mut c = client(&s);
    c.refresh(&mut s, NOW + 59).unwrap();
    let e = c.refresh(&mut s, NOW + 60).unwrap_err();
    assert!(
        matches!(
            e,
            TufError::Expired {
                role: Role::Timestamp,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--refresh"));
    let r = refresh(&s.repo(), &keys, NOW + 100, life).unwrap();
    s.0.insert("timestamp.json".into(), r.timestamp);
    c.refresh(&mut s, NOW + 120).unwrap();
    assert_eq!(c.seen.timestamp, 2);
}

#[test]
fn replayed_older_metadata_is_a_rollback() {
    let keys = test_keys(1);
    let mut s = fresh(&keys);
    s.publish(&keys, "1.1.0", NOW, Lifetimes::default())
        .unwrap();
    let old = s.clone();
    s.publish(&keys, "1.1.1", NOW, Lifetimes::default())
        .unwrap();
    let mut c = client(&s);
    c.refresh(&mut s, NOW).unwrap();
    let mut replay = old.clone();
    let e = c.refresh(&mut replay, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            TufError::Rollback {
                role: Role::Timestamp,
                stored: 2,
                got: 1
            }
        ),
        "{e}"
    );
    // A fresh timestamp over the old snapshot: the snapshot version is the rollback.
    let mut mixed = old.clone();
    mixed.0.insert(
        "timestamp.json".into(),
        refresh(&s.repo(), &keys, NOW, Lifetimes::default())
            .unwrap()
            .timestamp,
    );
    let e = c.refresh(&mut mixed, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            TufError::HashMismatch { .. }
                | TufError::VersionMismatch { .. }
                | TufError::Rollback { .. }
        ),
        "{e}"
    );
    // The state did not move backwards.
    assert_eq!(c.seen.targets, 2);
}

#[test]
fn root_rotation_needs_old_and_new_keys() {
    let keys = test_keys(1);
    let mut s = fresh(&keys);
    s.publish(&keys, "1.1.0", NOW, Lifetimes::default())
        .unwrap();
    let mut c = client(&s);
    let new = test_keys(10);
    let root2 = root_for(
        &Role::ALL
            .iter()
            .map(|&r| (r, new.get(r)))
            .collect::<Vec<_>>(),
        2,
        NOW + 86400 * 30,
    );
    // Signed by the new root key only: refused.
    let mut only_new = s.clone();
    only_new
        .0
        .insert("2.root.json".into(), sign(&root2, &[&new.root]).unwrap());
    let e = c.clone().refresh(&mut only_new, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            TufError::Signatures {
                role: Role::Root,
                ..
            }
        ),
        "{e}"
    );
    // Signed by both: accepted; metadata signed by the old timestamp key is then refused.
    let mut both = s.clone();
    both.0.insert(
        "2.root.json".into(),
        sign(&root2, &[&keys.root, &new.root]).unwrap(),
    );
    let e = c.refresh(&mut both, NOW).unwrap_err();
    assert_eq!(c.root.version, 2);
    assert!(
        matches!(
            e,
            TufError::Signatures {
                role: Role::Timestamp,
                ..
            }
        ),
        "{e}"
    );
    // Re-published with the new keys, the client follows.
    both.0
        .insert("root.json".into(), both.0["2.root.json"].clone());
    both.0.remove("timestamp.json");
    both.0.remove("snapshot.json");
    both.0.remove("targets.json");
    both.publish(&new, "1.1.1", NOW, Lifetimes::default())
        .unwrap();
    c.refresh(&mut both, NOW).unwrap();
}

#[test]
fn expired_root_is_refused() {
    let keys = test_keys(1);
    let mut s = Server::default();
    s.0.insert("root.json".into(), keys.root_metadata(1, NOW + 5).unwrap());
    s.publish(&keys, "1.1.0", NOW, Lifetimes::default())
        .unwrap();
    let e = client(&s).refresh(&mut s, NOW + 5).unwrap_err();
    assert!(
        matches!(
            e,
            TufError::Expired {
                role: Role::Root,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn duplicate_signatures_count_once() {
    let keys = test_keys(1);
    let mut root = root_for(
        &Role::ALL
            .iter()
            .map(|&r| (r, keys.get(r)))
            .collect::<Vec<_>>(),
        1,
        NOW + 100,
    );
    root.roles.get_mut("root").unwrap().threshold = 2;
    let raw = sign(&root, &[&keys.root, &keys.root]).unwrap();
    let e = Trusted::new(&raw, Seen::default()).unwrap_err();
    assert!(
        matches!(
            e,
            TufError::Signatures {
                valid: 1,
                threshold: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn mutated_metadata_is_refused_or_means_the_same() {
    let keys = test_keys(1);
    let mut s = fresh(&keys);
    s.publish(&keys, "1.1.0", NOW, Lifetimes::default())
        .unwrap();
    let good = client(&s).refresh(&mut s.clone(), NOW).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    for file in [
        "timestamp.json",
        "snapshot.json",
        "targets.json",
        "root.json",
    ] {
        for _ in 0..100 {
            let mut bad = s.clone();
            let bytes = bad.0.get_mut(file).unwrap();
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = (next() % 256) as u8;
            let root = bad.0["root.json"].clone();
            // Never a panic; either an error or exactly the genuine content (e.g. a changed
            // space between JSON tokens).
            let r = Trusted::new(&root, Seen::default()).and_then(|mut c| c.refresh(&mut bad, NOW));
            if let Ok(t) = r {
                assert_eq!(
                    t, good,
                    "{file} byte {at} changed the meaning and was accepted"
                );
                accepted += 1;
            }
        }
    }
    assert!(
        accepted < 200,
        "{accepted} of 400 mutations accepted: most must be refused"
    );
}
