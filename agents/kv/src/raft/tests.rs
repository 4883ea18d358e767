//! The storage against openraft's shared storage suite, and recovery from the redb file.

use super::log_store::{open_db, LogStore};
use super::state_machine::StateMachine;
use super::types::{Cmd, Entry, LogId, StorageError, TypeConfig};
use crate::backend::Apply;
use crate::store::{self, Command, Op, Put, Store};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
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
        Ok((dir, LogStore::new(db), sm))
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
        let mut log = LogStore::new(db.clone());
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
        let mut log = LogStore::new(db.clone());
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
