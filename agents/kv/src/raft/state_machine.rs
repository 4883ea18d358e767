//! The state machine: [`crate::store::Store`] behind [`Apply`], with the latest snapshot kept
//! in the member's redb file.
//!
//! The store itself lives in memory. At start the latest snapshot is restored and openraft
//! re-applies the committed entries after it from the log, so a restarted member recovers its
//! data from its data dir alone. A snapshot is written (redb, `Immediate`) before openraft may
//! purge the entries it covers.
//!
//! In a member, the state machine applies an entry only once it is durable in the member's
//! own log ([`StateMachine::after_log`], see [`super::durable`]).

use super::durable::Durable;
use super::log_store::{get_meta, SNAPSHOT_DATA, SNAPSHOT_META};
use super::types::{
    Answer, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::backend::Apply;
use openraft::storage::SnapshotSignature;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::StorageIOError;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, Durability};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

fn snap_err(
    sig: Option<SnapshotSignature<u64>>,
    verb: ErrorVerb,
    e: impl ToString,
) -> StorageError {
    io_err(ErrorSubject::Snapshot(sig), verb, e)
}

/// A snapshot as it is stored: openraft's metadata and the bytes of [`Apply::snapshot`].
fn load_snapshot(db: &Database) -> Result<Option<(SnapshotMeta, Vec<u8>)>, String> {
    let meta: Option<SnapshotMeta> = get_meta(db, SNAPSHOT_META)?;
    let Some(meta) = meta else { return Ok(None) };
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let t = tx
        .open_table(super::log_store::META)
        .map_err(|e| e.to_string())?;
    let data = t
        .get(SNAPSHOT_DATA)
        .map_err(|e| e.to_string())?
        .map(|v| v.value().to_vec())
        .ok_or("the snapshot metadata is there but its data is missing")?;
    Ok(Some((meta, data)))
}

fn save_snapshot(db: &Database, meta: &SnapshotMeta, data: &[u8]) -> Result<(), String> {
    let m = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
    let mut tx = db.begin_write().map_err(|e| e.to_string())?;
    tx.set_durability(Durability::Immediate);
    {
        let mut t = tx
            .open_table(super::log_store::META)
            .map_err(|e| e.to_string())?;
        t.insert(SNAPSHOT_META, m.as_slice())
            .map_err(|e| e.to_string())?;
        t.insert(SNAPSHOT_DATA, data).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

pub struct StateMachine<A: Apply> {
    app: Arc<A>,
    db: Arc<Database>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots_built: Arc<AtomicU64>,
    /// The index of the last applied entry, for members waiting to apply a write.
    applied: tokio::sync::watch::Sender<u64>,
    /// What is durable in the member's log, when applies wait for it.
    durable: Option<tokio::sync::watch::Receiver<Durable>>,
}

impl<A: Apply> StateMachine<A> {
    /// Restores `app` from the snapshot in `db`, if there is one.
    pub fn open(app: Arc<A>, db: Arc<Database>) -> Result<StateMachine<A>, String> {
        let mut sm = StateMachine {
            app,
            db,
            last_applied: None,
            membership: StoredMembership::default(),
            snapshots_built: Arc::new(AtomicU64::new(0)),
            applied: tokio::sync::watch::channel(0).0,
            durable: None,
        };
        if let Some((meta, data)) = load_snapshot(&sm.db)? {
            sm.app
                .restore(&data)
                .map_err(|e| format!("the stored snapshot does not restore: {e}"))?;
            sm.last_applied = meta.last_log_id;
            sm.membership = meta.last_membership.clone();
            sm.published();
        }
        Ok(sm)
    }

    /// Applies entries only once `durable` shows them on disk in the member's own log.
    pub fn after_log(mut self, durable: tokio::sync::watch::Receiver<Durable>) -> Self {
        self.durable = Some(durable);
        self
    }

    /// Follows the index of the last applied entry.
    pub fn applied_index(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn published(&self) {
        let index = self.last_applied.map(|l| l.index).unwrap_or(0);
        self.applied.send_replace(index);
    }
}

/// Takes a consistent copy when openraft asks for a builder (between two applies), and
/// persists it when openraft asks to build.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let meta = self.meta.clone();
        let data = std::mem::take(&mut self.data);
        let sig = meta.signature();
        let (meta, data) = tokio::task::spawn_blocking(move || {
            save_snapshot(&db, &meta, &data).map(|()| (meta, data))
        })
        .await
        .map_err(|e| snap_err(Some(sig.clone()), ErrorVerb::Write, e))?
        .map_err(|e| snap_err(Some(sig), ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<A: Apply> RaftStateMachine<TypeConfig> for StateMachine<A> {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answer>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let (Some(durable), Some(last)) = (self.durable.as_mut(), entries.last()) {
            Durable::wait_for(durable, last.log_id.index).await?;
        }
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            self.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Answer::default()),
                EntryPayload::Normal(cmd) => {
                    let (index, term) = (e.log_id.index, e.log_id.leader_id.term);
                    let answers = cmd
                        .0
                        .iter()
                        .map(|c| {
                            let r = self.app.apply(index, term, c.as_bytes());
                            String::from_utf8_lossy(&r).into_owned()
                        })
                        .collect();
                    out.push(Answer(answers));
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Answer::default());
                }
            }
        }
        self.published();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let n = self.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id.term, l.index),
            None => format!("0-0-{n}"),
        };
        SnapshotBuilder {
            db: self.db.clone(),
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data: self.app.snapshot(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let sig = meta.signature();
        self.app
            .restore(&data)
            .map_err(|e| snap_err(Some(sig.clone()), ErrorVerb::Read, e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.published();
        let db = self.db.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || save_snapshot(&db, &meta, &data))
            .await
            .map_err(|e| snap_err(Some(sig.clone()), ErrorVerb::Write, e))?
            .map_err(|e| snap_err(Some(sig), ErrorVerb::Write, e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let loaded = load_snapshot(&self.db).map_err(|e| snap_err(None, ErrorVerb::Read, e))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
