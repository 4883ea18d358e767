#![allow(clippy::unwrap_used)]
use super::*;

const T0: i64 = 1_700_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;

fn put(key: &str, value: &str) -> Put {
    Put {
        key: key.into(),
        value: Some(value.into()),
        ..Put::default()
    }
}

fn set(key: &str, value: &str) -> Op {
    Op::Put(put(key, value))
}

fn run(s: &mut State, op: Op) -> Outcome {
    s.apply(&Command { now_ns: T0, op })
}

fn run_at(s: &mut State, now_ns: i64, op: Op) -> Outcome {
    s.apply(&Command { now_ns, op })
}

#[test]
fn set_get_and_index_bookkeeping() {
    let mut s = State::new();
    let e = run(&mut s, set("/foo", "bar")).unwrap();
    assert_eq!(e.action, "set");
    assert_eq!(e.node.key, "/foo");
    assert_eq!(e.node.value.as_deref(), Some("bar"));
    assert_eq!((e.node.created_index, e.node.modified_index), (1, 1));
    assert!(e.prev_node.is_none());
    let e = run(&mut s, set("foo", "baz")).unwrap();
    assert_eq!((e.node.created_index, e.node.modified_index), (2, 2));
    assert_eq!(e.prev_node.unwrap().value.as_deref(), Some("bar"));
    // Failed writes do not move the index.
    let err = run(
        &mut s,
        Op::Put(Put {
            prev_exist: Some(false),
            ..put("/foo", "x")
        }),
    )
    .unwrap_err();
    assert_eq!((err.error_code, err.index), (NODE_EXIST, 2));
    assert_eq!(s.index, 2);
    let g = s.get("/foo", false, T0).unwrap();
    assert_eq!(g.action, "get");
    assert_eq!(g.node.value.as_deref(), Some("baz"));
    assert_eq!(
        s.get("/nope", false, T0).unwrap_err().error_code,
        KEY_NOT_FOUND
    );
    assert_eq!((s.stats.sets_success, s.stats.create_fail), (2, 1));
    assert_eq!((s.stats.gets_success, s.stats.gets_fail), (1, 1));
    // JSON as etcd prints it.
    assert_eq!(
        serde_json::to_string(&g).unwrap(),
        r#"{"action":"get","node":{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2}}"#
    );
}

#[test]
fn directories_parents_and_listing() {
    let mut s = State::new();
    run(&mut s, set("/a/b/c", "1")).unwrap();
    run(&mut s, set("/a/_hidden", "h")).unwrap();
    run(&mut s, set("/a/d", "2")).unwrap();
    // Parents were made as directories at the write's index.
    let a = s.read("/a", false, T0).unwrap().node;
    assert!(a.dir);
    assert_eq!(a.created_index, 1);
    let names: Vec<_> = a.nodes.unwrap().into_iter().map(|n| n.key).collect();
    assert_eq!(names, ["/a/b", "/a/d"], "hidden keys are left out");
    // The hidden key itself reads fine.
    assert_eq!(
        s.read("/a/_hidden", false, T0)
            .unwrap()
            .node
            .value
            .as_deref(),
        Some("h")
    );
    // Non-recursive listings show child dirs without their nodes; recursive ones nest.
    let flat = s.read("/", false, T0).unwrap().node;
    assert!(flat.key.is_empty() && flat.dir);
    assert!(flat.nodes.as_ref().unwrap()[0].nodes.is_none());
    let deep = s.read("/a", true, T0).unwrap().node;
    let b = &deep.nodes.unwrap()[0];
    assert_eq!(b.nodes.as_ref().unwrap()[0].key, "/a/b/c");
    // A file is not a directory, and a directory is not a file.
    assert_eq!(
        run(&mut s, set("/a/d/x", "1")).unwrap_err().error_code,
        NOT_DIR
    );
    assert_eq!(
        run(&mut s, set("/a/b", "1")).unwrap_err().error_code,
        NOT_FILE
    );
    assert_eq!(
        run(&mut s, set("/", "1")).unwrap_err().error_code,
        ROOT_RONLY
    );
    // mkdir on an existing dir: 105.
    let mkdir = Op::Put(Put {
        key: "/a".into(),
        dir: true,
        prev_exist: Some(false),
        ..Put::default()
    });
    assert_eq!(run(&mut s, mkdir).unwrap_err().error_code, NODE_EXIST);
}

#[test]
fn delete_rules() {
    let mut s = State::new();
    run(&mut s, set("/d/x", "1")).unwrap();
    let del = |key: &str, dir, recursive| Op::Delete {
        key: key.into(),
        dir,
        recursive,
        prev_value: None,
        prev_index: None,
    };
    assert_eq!(
        run(&mut s, del("/d", false, false)).unwrap_err().error_code,
        NOT_FILE
    );
    assert_eq!(
        run(&mut s, del("/d", true, false)).unwrap_err().error_code,
        DIR_NOT_EMPTY
    );
    assert_eq!(
        run(&mut s, del("/nope", false, false))
            .unwrap_err()
            .error_code,
        KEY_NOT_FOUND
    );
    let e = run(&mut s, del("/d", true, true)).unwrap();
    assert_eq!(e.action, "delete");
    assert!(e.node.dir);
    assert_eq!((e.node.modified_index, e.node.created_index), (2, 1));
    assert!(s.read("/d/x", false, T0).is_err());
}

#[test]
fn compare_and_swap_and_delete() {
    let mut s = State::new();
    run(&mut s, set("/k", "one")).unwrap();
    let cas = |pv: Option<&str>, pi: Option<u64>, v: &str| {
        Op::Put(Put {
            prev_value: pv.map(Into::into),
            prev_index: pi,
            ..put("/k", v)
        })
    };
    let e = run(&mut s, cas(Some("two"), None, "x")).unwrap_err();
    assert_eq!(
        (e.error_code, e.cause.as_str()),
        (TEST_FAILED, "[two != one]")
    );
    let e = run(&mut s, cas(None, Some(9), "x")).unwrap_err();
    assert_eq!(e.cause, "[9 != 1]");
    let e = run(&mut s, cas(Some("two"), Some(9), "x")).unwrap_err();
    assert_eq!(e.cause, "[two != one] [9 != 1]");
    let e = run(&mut s, cas(Some("one"), Some(1), "two")).unwrap();
    assert_eq!(e.action, "compareAndSwap");
    assert_eq!(e.node.created_index, 1);
    assert_eq!(e.node.modified_index, 2);
    let cad = |pv: &str| Op::Delete {
        key: "/k".into(),
        dir: false,
        recursive: false,
        prev_value: Some(pv.into()),
        prev_index: None,
    };
    assert_eq!(run(&mut s, cad("one")).unwrap_err().error_code, TEST_FAILED);
    assert_eq!(run(&mut s, cad("two")).unwrap().action, "compareAndDelete");
    assert_eq!(s.stats.cas_fail, 3);
}

#[test]
fn update_and_create() {
    let mut s = State::new();
    let up = Op::Put(Put {
        prev_exist: Some(true),
        ..put("/u", "v")
    });
    assert_eq!(
        run(&mut s, up.clone()).unwrap_err().error_code,
        KEY_NOT_FOUND
    );
    assert_eq!(
        run(
            &mut s,
            Op::Put(Put {
                prev_exist: Some(false),
                ..put("/u", "v0")
            })
        )
        .unwrap()
        .action,
        "create"
    );
    let e = run(&mut s, up).unwrap();
    assert_eq!(e.action, "update");
    assert_eq!(e.prev_node.unwrap().value.as_deref(), Some("v0"));
}

#[test]
fn in_order_keys_are_named_by_index() {
    let mut s = State::new();
    run(&mut s, set("/other", "x")).unwrap();
    let post = Op::Post {
        dir: "/queue".into(),
        value: Some("job".into()),
        ttl: None,
    };
    let e = run(&mut s, post.clone()).unwrap();
    assert_eq!(e.action, "create");
    assert_eq!(e.node.key, "/queue/00000000000000000002");
    let e = run(&mut s, post).unwrap();
    assert_eq!(e.node.key, "/queue/00000000000000000003");
}

#[test]
fn ttl_expiry_goes_through_commands() {
    let mut s = State::new();
    let e = run(
        &mut s,
        Op::Put(Put {
            ttl: Some(5),
            ..put("/t", "v")
        }),
    )
    .unwrap();
    assert_eq!(e.node.ttl, 5);
    assert_eq!(e.node.expiration.as_deref(), Some("2023-11-14T22:13:25Z"));
    // Half a second later 4.5 s are left, shown rounded up.
    let g = s.read("/t", false, T0 + SEC / 2).unwrap();
    assert_eq!(g.node.ttl, 5);
    assert_eq!(s.next_expiry(), Some(T0 + 5 * SEC));
    // An expire command before the time does nothing.
    run_at(&mut s, T0 + 4 * SEC, Op::Expire).unwrap();
    assert_eq!(s.index, 1);
    let e = run_at(&mut s, T0 + 5 * SEC, Op::Expire).unwrap();
    assert_eq!(e.action, "expire");
    assert_eq!((e.node.key.as_str(), e.node.modified_index), ("/t", 2));
    assert_eq!(e.prev_node.unwrap().value.as_deref(), Some("v"));
    assert!(s.read("/t", false, T0).is_err());
    assert_eq!(s.stats.expire_count, 1);
    // Setting without a ttl makes a key permanent again.
    run(
        &mut s,
        Op::Put(Put {
            ttl: Some(1),
            ..put("/p", "v")
        }),
    )
    .unwrap();
    run(&mut s, set("/p", "w")).unwrap();
    assert_eq!(s.next_expiry(), None);
}

#[test]
fn refresh_keeps_value_and_is_silent() {
    let mut s = State::new();
    run(
        &mut s,
        Op::Put(Put {
            ttl: Some(5),
            ..put("/r", "v")
        }),
    )
    .unwrap();
    let r = Op::Put(Put {
        key: "/r".into(),
        ttl: Some(30),
        prev_exist: Some(true),
        refresh: true,
        ..Put::default()
    });
    let e = run(&mut s, r).unwrap();
    assert_eq!(e.node.value.as_deref(), Some("v"));
    assert_eq!(e.node.ttl, 30);
    assert_eq!(e.action, "update");
}

#[test]
fn watch_history_scan_and_clearing() {
    let mut s = State::new();
    run(&mut s, set("/w/a", "1")).unwrap();
    run(&mut s, set("/x", "1")).unwrap();
    run(&mut s, set("/w/b/c", "1")).unwrap();
    assert_eq!(s.scan("/w/a", false, 1).unwrap().unwrap().index(), 1);
    assert!(s.scan("/w/a", false, 2).unwrap().is_none());
    assert!(s.scan("/w", false, 1).unwrap().is_none(), "not recursive");
    assert_eq!(s.scan("/w", true, 2).unwrap().unwrap().node.key, "/w/b/c");
    // Deleting a directory ends a watch on a key below it.
    run(
        &mut s,
        Op::Delete {
            key: "/w".into(),
            dir: true,
            recursive: true,
            prev_value: None,
            prev_index: None,
        },
    )
    .unwrap();
    assert_eq!(
        s.scan("/w/b/c", false, 4).unwrap().unwrap().action,
        "delete"
    );
    for i in 0..HISTORY {
        run(&mut s, set("/y", &i.to_string())).unwrap();
    }
    let e = s.scan("/y", false, 2).unwrap_err();
    assert_eq!(e.error_code, EVENT_INDEX_CLEARED);
    assert_eq!(e.cause, "the requested history has been cleared [5/2]");
    assert!(s.scan("/y", false, s.index).unwrap().is_some());
}

#[test]
fn keys_are_cleaned_like_etcd() {
    assert_eq!(clean_key("foo"), "/foo");
    assert_eq!(clean_key("/a//b/./c/"), "/a/b/c");
    assert_eq!(clean_key("/a/../b"), "/b");
    assert_eq!(clean_key(""), "/");
    assert!(hidden_below("/a", "/a/_x/y"));
    assert!(!hidden_below("/_a", "/_a/x"));
}

#[test]
fn store_applies_encoded_commands_and_snapshots() {
    use crate::backend::Apply;
    let s = Store::new();
    let out = s.apply(
        7,
        1,
        &encode(&Command {
            now_ns: T0,
            op: set("/a", "b"),
        }),
    );
    assert_eq!(decode_outcome(&out).unwrap().node.modified_index, 1);
    assert_eq!(s.applied_index(), 7);
    let bad = decode_outcome(&s.apply(8, 1, b"nonsense")).unwrap_err();
    assert_eq!(bad.error_code, RAFT_INTERNAL);
    let snap = s.snapshot();
    let t = Store::new();
    t.restore(&snap).unwrap();
    assert_eq!(t.index(), 1);
    assert_eq!(t.applied_index(), 8);
    assert!(t.restore(b"{").is_err());
}

/// A small deterministic generator (xorshift) so the random tests below replay exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn maybe(&mut self) -> bool {
        self.next().is_multiple_of(3)
    }
}

fn random_command(r: &mut Rng, now: i64) -> Command {
    const KEYS: &[&str] = &["/a", "/a/b", "/a/b/c", "/d", "/d/_h", "/e", "/q"];
    const VALUES: &[&str] = &["", "1", "2", "x"];
    let key = r.pick(KEYS).to_string();
    let value = r.pick(VALUES).to_string();
    let ttl = r.maybe().then(|| r.next() % 4);
    let prev_value = r.maybe().then(|| r.pick(VALUES).to_string());
    let prev_index = r.maybe().then(|| r.next() % 40);
    let op = match r.next() % 6 {
        0 | 1 => Op::Put(Put {
            key,
            value: Some(value),
            ttl,
            prev_exist: r.maybe().then(|| r.maybe()),
            prev_value: prev_value.filter(|v| !v.is_empty()),
            prev_index,
            ..Put::default()
        }),
        2 => Op::Put(Put {
            key,
            dir: true,
            ttl,
            prev_exist: r.maybe().then(|| r.maybe()),
            refresh: ttl.is_some() && r.maybe(),
            ..Put::default()
        }),
        3 => Op::Post {
            dir: key,
            value: Some(value),
            ttl,
        },
        4 => Op::Delete {
            key,
            dir: r.maybe(),
            recursive: r.maybe(),
            prev_value: prev_value.filter(|v| !v.is_empty()),
            prev_index,
        },
        _ => Op::Expire,
    };
    Command { now_ns: now, op }
}

/// Replication relies on this: the same commands give the same answers and the same state on
/// every member, also on a member that restored a snapshot halfway. Along the way the index
/// only moves forward, a successful write's event carries the new index, and a failed one
/// leaves the index alone.
#[test]
fn random_histories_are_deterministic_and_survive_snapshots() {
    use crate::backend::Apply;
    for seed in 1..=20u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let cmds: Vec<Command> = (0..400)
            .map(|i| random_command(&mut r, T0 + i * SEC / 2))
            .collect();
        let a = Store::new();
        let b = Store::new();
        let mut c: Option<Store> = None;
        for (i, cmd) in cmds.iter().enumerate() {
            let bytes = encode(cmd);
            let raft = i as u64 + 1;
            let before = a.index();
            let out_a = decode_outcome(&a.apply(raft, 1, &bytes));
            match &out_a {
                // An Expire that removed nothing answers with an empty event (index 0).
                Ok(ev) if ev.index() == 0 => {
                    assert!(matches!(cmd.op, Op::Expire));
                    assert_eq!(a.index(), before);
                }
                Ok(ev) => {
                    assert_eq!(ev.index(), a.index(), "seed {seed} step {i}: {cmd:?}");
                    assert!(a.index() > before || matches!(cmd.op, Op::Expire));
                }
                Err(e) => {
                    assert_eq!(a.index(), before, "seed {seed} step {i}: {cmd:?} {e:?}");
                    assert!(e.status() >= 400, "{e:?}");
                }
            }
            let replica = c.as_ref().unwrap_or(&b);
            let out_r = decode_outcome(&replica.apply(raft, 1, &bytes));
            assert_eq!(out_a, out_r, "seed {seed} step {i}: {cmd:?}");
            if i == cmds.len() / 2 {
                let restored = Store::new();
                restored.restore(&b.snapshot()).unwrap();
                c = Some(restored);
            }
        }
        let c = c.unwrap();
        assert_eq!(a.applied_index(), c.applied_index());
        let (sa, sc) = (a.with(|s| s.clone()), c.with(|s| s.clone()));
        assert_eq!(sa.index, sc.index, "seed {seed}");
        assert_eq!(sa.stats, sc.stats, "seed {seed}");
        assert_eq!(sa.nodes, sc.nodes, "seed {seed}");
        assert_eq!(sa.history.len(), sc.history.len(), "seed {seed}");
        for (x, y) in sa.history.iter().zip(&sc.history) {
            assert_eq!(x, y, "seed {seed}");
        }
        let now = T0 + 400 * SEC;
        assert_eq!(
            a.with(|s| s.read("/", true, now)),
            c.with(|s| s.read("/", true, now))
        );
    }
}
