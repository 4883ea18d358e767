#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing
//! Raft clusters of crust kv members on 127.0.0.1, each member on a thread of its own with its
//! own data dir: election, replication through any member, leader loss, restart and catch-up
//! (from the log and by snapshot), member add/remove, refusals, discovery.

use crust_common::http;
use crust_kv::client::Client;
use crust_kv::config;
use crust_kv::server::{self, Listeners, Member};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Polls `f` until it gives a value; panics naming `what` after [`WAIT`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request with a body of type `ctype` to `addr` (`http://host:port` or `host:port`).
fn http(addr: &str, method: &str, path: &str, body: &str, ctype: &str) -> (u16, String) {
    let addr = addr.trim_start_matches("http://");
    let url = http::Url::parse(&format!("http://{addr}{path}")).unwrap();
    let ct = [("Content-Type", ctype)];
    let r = http::request_with(method, &url, None, Some(body), &ct, Some(WAIT)).unwrap();
    (r.status, r.text().unwrap())
}

struct Spec {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
}

impl Spec {
    fn peer_url(&self) -> String {
        format!("http://{}", self.peer)
    }
    fn client_url(&self) -> String {
        format!("http://{}", self.client)
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn spec(root: &Path, name: &str) -> Spec {
    Spec {
        name: name.into(),
        client: free_addr(),
        peer: free_addr(),
        dir: root.join(name),
    }
}

fn initial_cluster(specs: &[&Spec]) -> String {
    specs
        .iter()
        .map(|s| format!("{}={}", s.name, s.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

/// etcd's flags for `s`, plus `extra`.
fn args(s: &Spec, extra: &[String]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--name",
        &s.name,
        "--data-dir",
        &s.dir.display().to_string(),
        "--listen-client-urls",
        &s.client_url(),
        "--advertise-client-urls",
        &s.client_url(),
        "--listen-peer-urls",
        &s.peer_url(),
        "--initial-advertise-peer-urls",
        &s.peer_url(),
        "--heartbeat-interval=100",
        "--election-timeout=1000",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    a.extend(extra.iter().cloned());
    a
}

fn start(s: &Spec, extra: &[String]) -> Result<Member, String> {
    let cfg = config::parse(&args(s, extra), &[]).map_err(|e| e.to_string())?;
    // The ports were free a moment ago; a restart rebinds the same ones.
    let listeners = Listeners {
        client: vec![TcpListener::bind(s.client).map_err(|e| e.to_string())?],
        peer: vec![TcpListener::bind(s.peer).map_err(|e| e.to_string())?],
    };
    server::spawn_thread(cfg, Some(listeners))
}

struct Cluster {
    _root: tempfile::TempDir,
    specs: Vec<Spec>,
    members: Vec<Option<Member>>,
    extra: Vec<String>,
}

impl Cluster {
    fn up(n: usize, token: &str, extra: &[&str]) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let specs: Vec<Spec> = (0..n)
            .map(|i| spec(root.path(), &format!("m{i}")))
            .collect();
        let ic = initial_cluster(&specs.iter().collect::<Vec<_>>());
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.extend([
            "--initial-cluster".into(),
            ic,
            "--initial-cluster-token".into(),
            token.into(),
        ]);
        let members = specs
            .iter()
            .map(|s| Some(start(s, &extra).unwrap()))
            .collect();
        let c = Cluster {
            _root: root,
            specs,
            members,
            extra,
        };
        c.leader();
        c
    }

    fn client(&self, i: usize) -> Client {
        Client::new(&self.specs[i].client_url()).unwrap()
    }

    /// The index of the member every running member agrees leads.
    fn leader(&self) -> usize {
        wait_for("a leader all running members agree on", || {
            let mut leaders = self
                .members
                .iter()
                .flatten()
                .map(|m| m.started.raft.metrics().borrow().current_leader);
            let first = leaders.next()??;
            if !leaders.all(|l| l == Some(first)) {
                return None;
            }
            self.members
                .iter()
                .position(|m| m.as_ref().is_some_and(|m| m.started.id == first))
        })
    }

    fn stop(&mut self, i: usize) {
        let m = self.members[i].take().unwrap();
        m.stop().unwrap();
    }

    fn restart(&mut self, i: usize) {
        self.members[i] = Some(start(&self.specs[i], &self.extra).unwrap());
    }

    fn raft(&self, i: usize) -> crust_kv::raft::types::Raft {
        self.members[i].as_ref().unwrap().started.raft.clone()
    }
}

/// A write acknowledged by the cluster; "during leader election" (301) is retried, as
/// etcdctl does, anything else fails the test.
fn put(c: &Client, key: &str, value: &str) {
    wait_for("an acknowledged write", || match c.set(key, value, None) {
        Ok(_) => Some(()),
        Err(e) if e.code() == Some(301) => None,
        Err(e) => panic!("writing {key}: {e}"),
    })
}

fn value(c: &Client, key: &str) -> Option<String> {
    c.get(key, false).ok().and_then(|e| e.node.value)
}

#[test]
fn three_members_elect_replicate_and_survive_leader_loss() {
    let mut c = Cluster::up(3, "t1", &[]);
    let leader = c.leader();
    let follower = (leader + 1) % 3;
    // A write through a follower is forwarded, and visible on every member.
    put(&c.client(follower), "/a", "1");
    assert_eq!(value(&c.client(follower), "/a").as_deref(), Some("1"));
    for i in 0..3 {
        assert_eq!(
            c.client(i)
                .get_quorum("/a", false)
                .unwrap()
                .node
                .value
                .as_deref(),
            Some("1"),
            "quorum read on member {i}"
        );
    }
    // /v2/members shows every member with its published name and client URL.
    let members = wait_for("all members published", || {
        let m = c.client(0).members().ok()?;
        m.iter().all(|m| !m.client_urls.is_empty()).then_some(m)
    });
    let mut names: Vec<_> = members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["m0", "m1", "m2"]);
    // Ids as etcd shows them: hex of a 64-bit number, all different.
    let mut ids: Vec<u64> = members
        .iter()
        .map(|m| u64::from_str_radix(&m.id, 16).unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    // Acknowledged writes survive the leader's loss.
    for i in 0..20 {
        put(&c.client(follower), &format!("/k/{i}"), &i.to_string());
    }
    c.stop(leader);
    let new_leader = c.leader();
    assert_ne!(new_leader, leader);
    let survivor = (0..3).find(|i| *i != leader && *i != new_leader).unwrap();
    for i in 0..20 {
        assert_eq!(
            c.client(survivor)
                .get_quorum(&format!("/k/{i}"), false)
                .unwrap()
                .node
                .value,
            Some(i.to_string())
        );
    }
    put(&c.client(survivor), "/after", "x");

    // The old leader restarts from its data dir and catches up from the log.
    c.restart(leader);
    let old = c.client(leader);
    wait_for("the restarted member to apply /after", || {
        (value(&old, "/after").as_deref() == Some("x")).then_some(())
    });
    assert_eq!(value(&old, "/k/19").as_deref(), Some("19"));
    // Writes through the restarted member work too.
    put(&old, "/back", "y");
    assert_eq!(
        c.client(new_leader)
            .get_quorum("/back", false)
            .unwrap()
            .node
            .value
            .as_deref(),
        Some("y")
    );
}

#[test]
fn lagging_member_catches_up_by_snapshot_after_compaction() {
    let mut c = Cluster::up(3, "t2", &["--snapshot-count=10"]);
    let leader = c.leader();
    let lagging = (leader + 1) % 3;
    let writer = (leader + 2) % 3;
    put(&c.client(writer), "/before", "1");
    wait_for("the lagging member to apply /before", || {
        value(&c.client(lagging), "/before").map(|_| ())
    });
    let behind = c.raft(lagging).metrics().borrow().last_log_index.unwrap();
    c.stop(lagging);
    for i in 0..60 {
        put(&c.client(writer), &format!("/s/{i}"), "v");
    }
    // The leader compacted its log past what the stopped member has.
    let purged = wait_for("the leader to purge its log", || {
        let p = c.raft(leader).metrics().borrow().purged?.index;
        (p > behind).then_some(p)
    });
    c.restart(lagging);
    let cl = c.client(lagging);
    wait_for("the restarted member to catch up", || {
        value(&cl, "/s/59").map(|_| ())
    });
    let snap = c.raft(lagging).metrics().borrow().snapshot.unwrap().index;
    assert!(
        snap >= purged,
        "caught up by installing a snapshot ({snap} >= {purged})"
    );
    for i in 0..60 {
        assert_eq!(value(&cl, &format!("/s/{i}")).as_deref(), Some("v"));
    }
    assert_eq!(value(&cl, "/before").as_deref(), Some("1"));
}

#[test]
fn member_add_then_remove() {
    let c = Cluster::up(3, "t3", &[]);
    let root = tempfile::tempdir().unwrap();
    let new = spec(root.path(), "m3");
    let (status, body) = http(
        &c.specs[1].client_url(),
        "POST",
        "/v2/members",
        &format!("{{\"peerURLs\":[\"{}\"]}}", new.peer_url()),
        "application/json",
    );
    assert_eq!(status, 201, "{body}");
    let added: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = added["id"].as_str().unwrap().to_string();
    let mut all: Vec<&Spec> = c.specs.iter().collect();
    all.push(&new);
    let extra = vec![
        "--initial-cluster".to_string(),
        initial_cluster(&all),
        "--initial-cluster-state=existing".into(),
        "--initial-cluster-token=t3".into(),
    ];
    let m3 = start(&new, &extra).unwrap();
    assert_eq!(format!("{:x}", m3.started.id), id);
    put(&c.client(0), "/four", "4");
    let c3 = Client::new(&new.client_url()).unwrap();
    wait_for("the new member to apply /four", || {
        value(&c3, "/four").map(|_| ())
    });
    wait_for("the new member to publish its name", || {
        let m = c.client(0).members().ok()?;
        (m.len() == 4
            && m.iter()
                .any(|m| m.name == "m3" && !m.client_urls.is_empty()))
        .then_some(())
    });
    // Writes through the new member reach the others.
    put(&c3, "/from-new", "y");
    assert_eq!(
        c.client(2)
            .get_quorum("/from-new", false)
            .unwrap()
            .node
            .value
            .as_deref(),
        Some("y")
    );

    // PUT changes a member's peer URLs through the log (here to the same URL: the member keeps
    // working); an unknown id is 404 before Raft is asked.
    let (status, body) = http(
        &c.specs[2].client_url(),
        "PUT",
        &format!("/v2/members/{id}"),
        &format!("{{\"peerURLs\":[\"{}\"]}}", new.peer_url()),
        "application/json",
    );
    assert_eq!(status, 204, "{body}");
    let (status, _) = http(
        &c.specs[2].client_url(),
        "PUT",
        "/v2/members/1234",
        &format!("{{\"peerURLs\":[\"{}\"]}}", new.peer_url()),
        "application/json",
    );
    assert_eq!(status, 404);
    put(&c3, "/after-update", "z");

    let (status, body) = http(
        &c.specs[0].client_url(),
        "DELETE",
        &format!("/v2/members/{id}"),
        "",
        "text/plain",
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(c.client(0).members().unwrap().len(), 3);
    wait_for("the removed member to stop", || m3.finished().then_some(()));
    let err = m3.stop().unwrap_err();
    assert!(err.contains("removed from the cluster"), "{err}");
    put(&c.client(0), "/three-again", "3");
}

#[test]
fn other_clusters_are_refused() {
    let c = Cluster::up(3, "right", &[]);
    let root = tempfile::tempdir().unwrap();
    // Joining with another token: refused by the cluster, with the reason.
    let new = spec(root.path(), "x");
    let mut all: Vec<&Spec> = c.specs.iter().collect();
    all.push(&new);
    let err = start(
        &new,
        &[
            "--initial-cluster".into(),
            initial_cluster(&all),
            "--initial-cluster-state=existing".into(),
            "--initial-cluster-token=wrong".into(),
        ],
    )
    .err()
    .unwrap();
    assert!(err.contains("token mismatch"), "{err}");
    assert!(
        !new.dir.join("member").exists(),
        "a refused join leaves no data dir"
    );
    // Raft traffic stamped with another cluster id is refused (412) with the reason.
    let (status, body) = http(
        &c.specs[0].peer_url(),
        "POST",
        "/raft/vote",
        "{}",
        "application/json",
    );
    assert_eq!(status, 412);
    assert!(body.contains("cluster id mismatch"), "{body}");
    // A member bootstrapped as a new cluster with another token cannot disturb this one.
    let rogue = spec(root.path(), "rogue");
    let ic = format!(
        "{},rogue={}",
        initial_cluster(&c.specs.iter().collect::<Vec<_>>()),
        rogue.peer_url()
    );
    let r = start(
        &rogue,
        &[
            "--initial-cluster".into(),
            ic,
            "--initial-cluster-token=other".into(),
        ],
    )
    .unwrap();
    put(&c.client(0), "/still", "fine");
    assert_eq!(c.client(0).members().unwrap().len(), 3);
    assert_eq!(r.started.raft.metrics().borrow().current_leader, None);
    drop(r);
}

#[test]
fn damaged_or_foreign_data_dirs_stop_the_member() {
    let root = tempfile::tempdir().unwrap();
    let s = spec(root.path(), "solo");
    let m = start(&s, &[]).unwrap();
    put(&Client::new(&s.client_url()).unwrap(), "/x", "1");
    m.stop().unwrap();
    // Restart ignores --initial-cluster: the data is there.
    let ic = format!("solo={},ghost=http://127.0.0.1:1", s.peer_url());
    let m = start(&s, &["--initial-cluster".into(), ic]).unwrap();
    assert_eq!(
        value(&Client::new(&s.client_url()).unwrap(), "/x").as_deref(),
        Some("1")
    );
    m.stop().unwrap();

    // Another member's name, another token: refused, files untouched.
    let db = s.dir.join("member/raft.redb");
    let before = std::fs::read(&db).unwrap();
    let mut other = spec(root.path(), "other");
    other.dir = s.dir.clone();
    let err = start(&other, &[]).err().unwrap();
    assert!(err.contains("belongs to member \"solo\""), "{err}");
    let err = start(&s, &["--initial-cluster-token=another".into()])
        .err()
        .unwrap();
    assert!(err.contains("token"), "{err}");
    assert!(
        std::fs::read(&db).unwrap() == before,
        "refused starts leave the database as it was"
    );

    // A damaged database: refused, files untouched.
    let mut junk = before.clone();
    for b in junk.iter_mut().take(4096) {
        *b ^= 0xff;
    }
    std::fs::write(&db, &junk).unwrap();
    let err = start(&s, &[]).err().unwrap();
    assert!(err.contains("damaged"), "{err}");
    assert!(
        std::fs::read(&db).unwrap() == junk,
        "a damaged database is left as it was"
    );

    // etcd's own data dir layout is not taken for ours.
    let e = spec(root.path(), "etcd");
    std::fs::create_dir_all(e.dir.join("member/wal")).unwrap();
    let err = start(&e, &[]).err().unwrap();
    assert!(err.contains("not a crust kv data dir"), "{err}");
}

#[test]
fn discovery_bootstraps_three_members() {
    let disc = crust_kv::local::spawn_thread("127.0.0.1:0", "discovery").unwrap();
    let base = format!("http://{}/v2/keys/_etcd/registry/tok", disc.addr);
    Client::new(&format!("http://{}", disc.addr))
        .unwrap()
        .set("/_etcd/registry/tok/_config/size", "3", None)
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let specs: Vec<Spec> = (0..3)
        .map(|i| spec(root.path(), &format!("d{i}")))
        .collect();
    let extra = vec!["--discovery".to_string(), base.clone()];
    let members: Vec<Member> = std::thread::scope(|s| {
        let hs: Vec<_> = specs
            .iter()
            .map(|sp| {
                let extra = extra.clone();
                s.spawn(move || start(sp, &extra).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let cid = members[0].started.cluster_id;
    assert!(members.iter().all(|m| m.started.cluster_id == cid));
    let c0 = Client::new(&specs[0].client_url()).unwrap();
    // Three members that started together may hold another election or two before they
    // settle: `put` retries while the answer is "during leader election".
    put(&c0, "/d", "1");
    for s in &specs {
        let c = Client::new(&s.client_url()).unwrap();
        assert_eq!(
            c.get_quorum("/d", false).unwrap().node.value.as_deref(),
            Some("1")
        );
    }
    assert_eq!(c0.members().unwrap().len(), 3);
    // A fourth member finds the cluster full.
    let late = spec(root.path(), "late");
    let err = start(&late, &extra).err().unwrap();
    assert!(err.contains("discovery: cluster is full"), "{err}");
    drop(members);
}

#[test]
fn removing_the_leader_hands_over_to_the_rest() {
    let mut c = Cluster::up(3, "tl", &[]);
    let leader = c.leader();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    put(&c.client(follower), "/before", "1");
    let id = c.members[leader].as_ref().unwrap().started.id;
    // Asked through a follower, as any member accepts any request.
    let (status, body) = http(
        &c.specs[follower].client_url(),
        "DELETE",
        &format!("/v2/members/{id:x}"),
        "",
        "text/plain",
    );
    assert_eq!(status, 204, "{body}");
    let old = c.members[leader].take().unwrap();
    wait_for("the removed leader to stop", || {
        old.finished().then_some(())
    });
    let err = old.stop().unwrap_err();
    assert!(err.contains("removed from the cluster"), "{err}");
    let new_leader = c.leader();
    assert_ne!(new_leader, leader);
    // The new configuration reaches the other member with the new leader's log.
    for i in [follower, other] {
        wait_for("the remaining members to list two members", || {
            (c.client(i).members().ok()?.len() == 2).then_some(())
        });
    }
    put(&c.client(follower), "/after", "2");
    for i in [follower, other] {
        let got = c.client(i).get_quorum("/after", false).unwrap();
        assert_eq!(got.node.value.as_deref(), Some("2"));
        assert_eq!(value(&c.client(i), "/before").as_deref(), Some("1"));
    }
}

#[test]
fn a_member_removed_while_down_stops_when_it_comes_back() {
    let mut c = Cluster::up(3, "td", &[]);
    let leader = c.leader();
    let gone = (leader + 1) % 3;
    let id = c.members[gone].as_ref().unwrap().started.id;
    c.stop(gone);
    let (status, body) = http(
        &c.specs[leader].client_url(),
        "DELETE",
        &format!("/v2/members/{id:x}"),
        "",
        "text/plain",
    );
    assert_eq!(status, 204, "{body}");
    put(&c.client(leader), "/while-down", "x");
    // It comes back from its data dir, still counting itself a member: it never got the
    // notice. Its first campaign is answered with 410 and it stops.
    let back = start(&c.specs[gone], &c.extra).unwrap();
    wait_for("the removed member to stop", || {
        back.finished().then_some(())
    });
    let err = back.stop().unwrap_err();
    assert!(err.contains("removed from the cluster"), "{err}");
    assert_eq!(c.client(leader).members().unwrap().len(), 2);
    put(&c.client(leader), "/after", "y");
}

/// A follower answers a write once the leader committed it and does not wait to apply it
/// itself; its own reads and watches still come after every write it acknowledged.
#[test]
fn a_follower_reads_its_own_writes_at_once() {
    let c = Cluster::up(3, "ryw", &[]);
    let leader = c.leader();
    let follower = (leader + 1) % 3;
    let f = c.client(follower);
    for i in 0..200 {
        let v = i.to_string();
        let set = f.set("/ryw", &v, None).unwrap();
        assert_eq!(value(&f, "/ryw").as_deref(), Some(v.as_str()), "read {i}");
        assert!(f.get("/ryw", false).unwrap().node.modified_index >= set.node.modified_index);
    }
    // A watch from "now" right after a write starts after that write: its first event is
    // the next change, made through another member.
    f.set("/ryw-watch", "mine", None).unwrap();
    let watcher = std::thread::spawn({
        let url = c.specs[follower].client_url();
        move || {
            let f = Client::new(&url).unwrap();
            f.watch("/ryw-watch", false, None).next().unwrap().unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    put(&c.client(leader), "/ryw-watch", "theirs");
    let ev = watcher.join().unwrap();
    assert_eq!(ev.node.value.as_deref(), Some("theirs"));
}
