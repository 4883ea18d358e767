//! The storage against openraft's shared storage suite, and recovery from the redb file.

use super::durable::{CommitGate, Durable};
use super::log_store::{open_db, LogStore};
use super::state_machine::StateMachine;
use super::types::{Cmd, Entry, LogId, StorageError, TypeConfig};
use crate::backend::Apply;
use crate::store::{self, Command, Op, Put, Store};
use openraft::storage::{LogState, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use std::sync::Arc;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine<Store>, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine<Store>), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(&dir.path().join("raft.redb"), true).expect("open db");
        let sm = StateMachine::open(Arc::new(Store::new()), db.clone()).expect("sm");
        let log = LogStore::open(db, &dir.path().join("raft.journal"), 0).expect("log store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite passes");
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn set(key: &str, value: &str) -> Cmd {
    let cmd = Command {
        now_ns: 1,
        op: Op::Put(Put {
            key: key.into(),
            value: Some(value.into()),
            ..Put::default()
        }),
    };
    Cmd(vec![String::from_utf8(store::encode(&cmd)).expect("utf8")])
}

/// The journal beside the database at `db`.
fn journal(db: &std::path::Path) -> std::path::PathBuf {
    db.with_extension("journal")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn log_vote_and_snapshot_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    rt().block_on(async {
        let db = open_db(&path, true).expect("create");
        let mut log = LogStore::open(db.clone(), &journal(&path), 0).expect("log store");
        let store = Arc::new(Store::new());
        let mut sm = StateMachine::open(store.clone(), db.clone()).expect("sm");
        let entries: Vec<Entry> = (1..=5)
            .map(|i| Entry {
                log_id: log_id(1, i),
                payload: EntryPayload::Normal(set(&format!("/k{i}"), "v")),
            })
            .collect();
        log.blocking_append(entries.clone()).await.expect("append");
        log.save_vote(&openraft::Vote::new(1, 7))
            .await
            .expect("vote");
        sm.apply(entries[..3].to_vec()).await.expect("apply");
        let mut b = sm.get_snapshot_builder().await;
        let snap = b.build_snapshot().await.expect("snapshot");
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 3)));
        sm.apply(entries[3..].to_vec()).await.expect("apply");
    });
    // A new process: the store comes back from the snapshot, the log and vote from redb.
    rt().block_on(async {
        let db = open_db(&path, false).expect("reopen");
        let mut log = LogStore::open(db.clone(), &journal(&path), 0).expect("log store");
        let store = Arc::new(Store::new());
        let mut sm = StateMachine::open(store.clone(), db).expect("sm");
        let (applied, _) = sm.applied_state().await.expect("applied");
        assert_eq!(applied, Some(log_id(1, 3)));
        assert_eq!(store.applied_index(), 3);
        assert!(store.with(|s| s.read("/k3", false, 1)).is_ok());
        assert!(store.with(|s| s.read("/k4", false, 1)).is_err());
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(openraft::Vote::new(1, 7))
        );
        let got = log.try_get_log_entries(4..=5).await.expect("entries");
        assert_eq!(got.len(), 2);
        sm.apply(got).await.expect("replay");
        assert!(store.with(|s| s.read("/k5", false, 1)).is_ok());
    });
}

#[test]
fn garbage_is_not_a_database_and_stays_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let junk = vec![0x5au8; 8192];
    std::fs::write(&path, &junk).expect("write");
    assert!(open_db(&path, false).is_err());
    assert_eq!(std::fs::read(&path).expect("read"), junk);
}

fn entries(term: u64, from: u64, to: u64) -> Vec<Entry> {
    entries_with(term, from, to, &format!("t{term}"))
}

/// Entries `from..=to` of `term`, each setting `/k{index}` to `value`.
fn entries_with(term: u64, from: u64, to: u64, value: &str) -> Vec<Entry> {
    (from..=to)
        .map(|i| Entry {
            log_id: log_id(term, i),
            payload: EntryPayload::Normal(set(&format!("/k{i}"), value)),
        })
        .collect()
}

async fn durable_at(log: &LogStore, index: u64) {
    let mut rx = log.durable();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        Durable::wait_for(&mut rx, index),
    )
    .await
    .expect("the entry becomes durable")
    .expect("no write error");
}

#[test]
fn a_leaders_queued_entries_are_readable_and_truncation_replaces_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    rt().block_on(async {
        let db = open_db(&path, true).expect("create");
        let mut log = LogStore::open(db, &journal(&path), 7).expect("log store");
        // Under its own committed vote, member 7 appends as the leader: reported flushed
        // when queued, readable at once from the tail.
        log.save_vote(&openraft::Vote::new_committed(1, 7))
            .await
            .expect("vote");
        log.blocking_append(entries(1, 1, 5)).await.expect("append");
        let got = log.try_get_log_entries(2..=5).await.expect("read");
        assert_eq!(got, entries(1, 2, 5));
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 5)));
        // Deposed: a new leader's entries replace 4 and 5; a follower's append returns once
        // it is durable.
        log.save_vote(&openraft::Vote::new_committed(2, 8))
            .await
            .expect("vote");
        log.truncate(log_id(1, 4)).await.expect("truncate");
        log.blocking_append(entries(2, 4, 4)).await.expect("append");
        assert!(log.durable().borrow().last == Some(log_id(2, 4)));
        let mut want = entries(1, 1, 3);
        want.extend(entries(2, 4, 4));
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), want);
        log.purge(log_id(1, 2)).await.expect("purge");
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), want[2..]);
    });
    // What was reported durable is what a new process reads.
    rt().block_on(async {
        let db = open_db(&path, false).expect("reopen");
        let mut log = LogStore::open(db, &journal(&path), 7).expect("log store");
        let mut want = entries(1, 3, 3);
        want.extend(entries(2, 4, 4));
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), want);
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
        assert_eq!(state.last_log_id, Some(log_id(2, 4)));
    });
}

#[test]
fn a_leaders_append_becomes_durable_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    rt().block_on(async {
        let db = open_db(&path, true).expect("create");
        let mut log = LogStore::open(db, &journal(&path), 3).expect("log store");
        log.save_vote(&openraft::Vote::new_committed(4, 3))
            .await
            .expect("vote");
        for i in 1..=50 {
            log.blocking_append(entries(4, i, i)).await.expect("append");
        }
        durable_at(&log, 50).await;
        assert_eq!(log.durable().borrow().last, Some(log_id(4, 50)));
        assert_eq!(
            log.try_get_log_entries(..).await.expect("read"),
            entries(4, 1, 50)
        );
    });
}

#[test]
fn the_state_machine_applies_nothing_before_it_is_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let db = open_db(&dir.path().join("raft.redb"), true).expect("create");
        let (durable, rx) = tokio::sync::watch::channel(Durable::default());
        let store = Arc::new(Store::new());
        let mut sm = StateMachine::open(store.clone(), db)
            .expect("sm")
            .after_log(rx);
        let applying = tokio::spawn(async move {
            sm.apply(entries(1, 1, 3)).await.expect("apply");
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(store.applied_index(), 0, "applied before durable");
        durable.send_modify(|d| d.last = Some(log_id(1, 2)));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(store.applied_index(), 0, "applied before all were durable");
        durable.send_modify(|d| d.last = Some(log_id(1, 3)));
        applying.await.expect("applied");
        assert_eq!(store.applied_index(), 3);
    });
}

#[test]
fn a_failed_write_fails_waiting_applies() {
    rt().block_on(async {
        let (durable, mut rx) = tokio::sync::watch::channel(Durable::default());
        durable.send_modify(|d| d.failed = Some("disk full".into()));
        let err = Durable::wait_for(&mut rx, 1).await.expect_err("an error");
        assert!(err.to_string().contains("disk full"), "{err}");
    });
}

#[test]
fn a_leader_tells_followers_only_a_commit_index_it_has_on_disk() {
    let (durable, rx) = tokio::sync::watch::channel(Durable::default());
    let gate = CommitGate::new(rx);
    durable.send_modify(|d| d.last = Some(log_id(1, 5)));
    let mut commit = Some(log_id(1, 4));
    gate.clamp(&mut commit);
    assert_eq!(commit, Some(log_id(1, 4)));
    let mut commit = Some(log_id(1, 7));
    gate.clamp(&mut commit);
    assert_eq!(commit, Some(log_id(1, 5)));
    let mut commit = None;
    gate.clamp(&mut commit);
    assert_eq!(commit, None);
}

fn big_entries(term: u64, from: u64, to: u64) -> Vec<Entry> {
    entries_with(term, from, to, &"x".repeat(1500))
}

#[test]
fn a_followers_appends_are_durable_when_reported_small_or_large() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let mut want = entries(3, 1, 2);
    want.extend(big_entries(3, 3, 302));
    want.extend(entries(3, 303, 305));
    let log = rt().block_on(async {
        let db = open_db(&path, true).expect("create");
        let mut log = LogStore::open(db, &journal(&path), 5).expect("log store");
        // Member 9 leads: member 5 is a follower.
        log.save_vote(&openraft::Vote::new_committed(3, 9))
            .await
            .expect("vote");
        // Small appends are written in the caller, a catch-up of ~450 KiB by the writer
        // thread; either way the append is durable when it is reported flushed, in order.
        log.blocking_append(entries(3, 1, 2)).await.expect("append");
        assert_eq!(log.durable().borrow().last, Some(log_id(3, 2)));
        log.blocking_append(big_entries(3, 3, 302))
            .await
            .expect("append");
        assert_eq!(log.durable().borrow().last, Some(log_id(3, 302)));
        log.blocking_append(entries(3, 303, 305))
            .await
            .expect("append");
        assert_eq!(log.durable().borrow().last, Some(log_id(3, 305)));
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), want);
        // Commit positions saved in quick succession: the last one is written when the
        // member stops.
        log.save_committed(Some(log_id(3, 2)))
            .await
            .expect("commit");
        log.blocking_append(entries(3, 306, 306))
            .await
            .expect("append");
        log.save_committed(Some(log_id(3, 305)))
            .await
            .expect("commit");
        log
    });
    log.close().expect("close");
    drop(log);
    want.extend(entries(3, 306, 306));
    rt().block_on(async {
        let db = open_db(&path, false).expect("reopen");
        let mut log = LogStore::open(db, &journal(&path), 5).expect("log store");
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), want);
        assert_eq!(
            log.read_committed().await.expect("committed"),
            Some(log_id(3, 305))
        );
    });
}

/// Opens the log store of member `me` at `path` (made when `create`).
fn open_log(path: &std::path::Path, create: bool, me: u64) -> LogStore {
    let db = open_db(path, create).expect("open db");
    LogStore::open(db, &journal(path), me).expect("log store")
}

/// Member 5's log store at `path` opened again (as after a crash), with the entries and log
/// state it reads.
async fn reopened(path: &std::path::Path) -> (LogStore, Vec<Entry>, LogState<TypeConfig>) {
    let mut log = open_log(path, false, 5);
    let got = log.try_get_log_entries(..).await.expect("read");
    let state = log.get_log_state().await.expect("state");
    (log, got, state)
}

/// A new log store of member 5 at `path`, following member `leader` in `term`.
async fn new_follower(path: &std::path::Path, term: u64, leader: u64) -> LogStore {
    let mut log = open_log(path, true, 5);
    log.save_vote(&openraft::Vote::new_committed(term, leader))
        .await
        .expect("vote");
    log
}

#[test]
fn appends_in_the_journal_survive_a_crash_and_are_folded_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    rt().block_on(async {
        let mut log = new_follower(&path, 3, 9).await;
        // As a follower: each append is durable when reported (in the journal).
        for i in 1..=20 {
            log.blocking_append(entries(3, i, i)).await.expect("append");
        }
        // Then as the leader of term 4: reported at once, durable in the background.
        log.save_vote(&openraft::Vote::new_committed(4, 5))
            .await
            .expect("vote");
        log.blocking_append(entries(4, 21, 30))
            .await
            .expect("append");
        durable_at(&log, 30).await;
        // A crash: no close, nothing folded since the vote.
    });
    let mut want = entries(3, 1, 20);
    want.extend(entries(4, 21, 30));
    rt().block_on(async {
        let (mut log, got, state) = reopened(&path).await;
        assert_eq!(got, want);
        assert_eq!(state.last_log_id, Some(log_id(4, 30)));
        assert_eq!(log.durable().borrow().last, Some(log_id(4, 30)));
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(openraft::Vote::new_committed(4, 5))
        );
        // The start folded them: the next crash loses nothing either, and the entries are
        // not applied twice from an old journal record.
        log.blocking_append(entries(4, 31, 31))
            .await
            .expect("append");
        durable_at(&log, 31).await;
    });
    want.extend(entries(4, 31, 31));
    rt().block_on(async {
        let (_, got, _) = reopened(&path).await;
        assert_eq!(got, want);
    });
}

#[test]
fn a_truncation_over_journaled_entries_holds_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    rt().block_on(async {
        let mut log = new_follower(&path, 1, 9).await;
        log.blocking_append(entries(1, 1, 5)).await.expect("append");
        // A new leader's entries replace 4 and 5 (journaled, not yet in redb).
        log.save_vote(&openraft::Vote::new_committed(2, 8))
            .await
            .expect("vote");
        log.truncate(log_id(1, 4)).await.expect("truncate");
        log.blocking_append(entries(2, 4, 6)).await.expect("append");
        log.purge(log_id(1, 1)).await.expect("purge");
        log.blocking_append(entries(2, 7, 7)).await.expect("append");
    });
    let mut want = entries(1, 2, 3);
    want.extend(entries(2, 4, 7));
    rt().block_on(async {
        let (_, got, state) = reopened(&path).await;
        assert_eq!(got, want);
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    });
}

#[test]
fn a_full_journal_is_folded_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    // About 2.5 MiB of 1.5 KiB entries, 10 per append: the journal folds on the way.
    let n = 1700;
    rt().block_on(async {
        let mut log = new_follower(&path, 1, 9).await;
        for first in (1..=n).step_by(10) {
            log.blocking_append(big_entries(1, first, first + 9))
                .await
                .expect("append");
            assert_eq!(log.durable().borrow().last, Some(log_id(1, first + 9)));
        }
        log.save_committed(Some(log_id(1, n)))
            .await
            .expect("commit");
        assert_eq!(
            log.try_get_log_entries(..).await.expect("read"),
            big_entries(1, 1, n)
        );
    });
    rt().block_on(async {
        let (mut log, got, _) = reopened(&path).await;
        assert_eq!(got, big_entries(1, 1, n));
        // The commit position went with a fold: never beyond what that fold wrote.
        let c = log.read_committed().await.expect("committed");
        assert!(c.is_none_or(|c| c.index <= n), "{c:?}");
    });
}
