//! The Raft log, the vote and the commit position in redb.
//!
//! One redb file (`<data-dir>/member/raft.redb`) holds the log (`log`: index -> JSON entry),
//! the small records (`meta`: vote, committed, last purged id) and the latest snapshot
//! (written by [`super::state_machine`]).
//!
//! fsync policy: every append, vote, truncation and purge is its own write transaction
//! committed with [`redb::Durability::Immediate`] (redb fsyncs before `commit` returns), and
//! openraft is told entries are flushed only after that commit, so a member never acknowledges
//! an entry or a vote it could lose in a crash. Appends carry many client writes each (the
//! leader batches proposals, see [`super::batch`]), so one fsync covers a whole batch. The
//! commit position is not written on its own (on Linux even redb's `Eventual` durability is an
//! fsync): it is kept in memory and written with the next append, and when the member stops.
//! Losing it in a crash only means a restarted member re-applies fewer entries until the leader
//! tells it the commit index again.
//! The commits run on tokio's blocking pool so an fsync never holds up a runtime worker.

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
pub(crate) const SNAPSHOT_META: &str = "snapshot_meta";
pub(crate) const SNAPSHOT_DATA: &str = "snapshot_data";

/// Who this data dir belongs to: written once at bootstrap (`member/identity.json`, beside the
/// database, so a start that refuses the data dir never opens the database), checked at every
/// start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {why}")]
    Open { path: String, why: String },
    #[error("{path}: {why}")]
    Io { path: String, why: String },
}

/// Opens an existing database without creating or repairing anything a clean open would not
/// (redb refuses files that are not redb databases), or creates a new one when `create`.
pub fn open_db(path: &Path, create: bool) -> Result<Arc<Database>, DiskError> {
    let shown = path.display().to_string();
    // A member stopped a moment ago may still be closing the file.
    let mut tries = 0;
    let db = loop {
        let r = if create {
            Database::create(path)
        } else {
            Database::open(path)
        };
        match r {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 30 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => break r,
        }
    }
    .map_err(|e| DiskError::Open {
        path: shown.clone(),
        why: format!("cannot open the raft database: {e}"),
    })?;
    if !create {
        return Ok(Arc::new(db));
    }
    // Create the tables so readers never see "table does not exist".
    let io = |e: &dyn std::fmt::Display| DiskError::Io {
        path: shown.clone(),
        why: e.to_string(),
    };
    let mut tx = db.begin_write().map_err(|e| io(&e))?;
    tx.set_durability(Durability::Immediate);
    tx.open_table(LOG).map_err(|e| io(&e))?;
    tx.open_table(META).map_err(|e| io(&e))?;
    tx.commit().map_err(|e| io(&e))?;
    Ok(Arc::new(db))
}

pub(crate) fn get_meta<T: serde::de::DeserializeOwned>(
    db: &Database,
    key: &str,
) -> Result<Option<T>, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let t = tx.open_table(META).map_err(|e| e.to_string())?;
    match t.get(key).map_err(|e| e.to_string())? {
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| format!("record {key:?} does not decode: {e}")),
        None => Ok(None),
    }
}

pub(crate) fn put_meta<T: serde::Serialize>(
    db: &Database,
    key: &str,
    value: &T,
    durability: Durability,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let mut tx = db.begin_write().map_err(|e| e.to_string())?;
    tx.set_durability(durability);
    {
        let mut t = tx.open_table(META).map_err(|e| e.to_string())?;
        t.insert(key, bytes.as_slice()).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

/// The log store; clones share the database (the clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The newest commit position not yet written: it goes with the next append, or with
    /// [`LogStore::flush_committed`] when the member stops.
    committed: Arc<std::sync::Mutex<Option<Option<LogId>>>>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore {
            db,
            committed: Arc::default(),
        }
    }

    fn take_committed(&self) -> Option<Option<LogId>> {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Writes the commit position not yet written, durably: when the member stops, so that
    /// it restarts with everything it had applied (a crash only delays that until the leader
    /// tells it the commit index again).
    pub fn flush_committed(&self) -> Result<(), String> {
        match self.take_committed() {
            Some(c) => put_meta(&self.db, COMMITTED, &c, Durability::Immediate),
            None => Ok(()),
        }
    }

    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let t = tx.open_table(LOG).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for item in t.range(range).map_err(|e| e.to_string())? {
            let (_, v) = item.map_err(|e| e.to_string())?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<Entry>, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let t = tx.open_table(LOG).map_err(|e| e.to_string())?;
        let last = t.last().map_err(|e| e.to_string())?;
        match last {
            Some((_, v)) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// Removes the entries in `range` and optionally records a new last-purged id, in one
    /// durable transaction.
    fn remove_range(
        &self,
        range: impl RangeBounds<u64>,
        purged: Option<&LogId>,
    ) -> Result<(), String> {
        let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.set_durability(Durability::Immediate);
        {
            let mut t = tx.open_table(LOG).map_err(|e| e.to_string())?;
            t.retain_in(range, |_, _| false)
                .map_err(|e| e.to_string())?;
            if let Some(p) = purged {
                let bytes = serde_json::to_vec(p).map_err(|e| e.to_string())?;
                let mut m = tx.open_table(META).map_err(|e| e.to_string())?;
                m.insert(PURGED, bytes.as_slice())
                    .map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_range(range)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = get_meta(&self.db, PURGED)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last = self
            .last_entry()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?
            .map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let db = self.db.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || put_meta(&db, VOTE, &vote, Durability::Immediate))
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        get_meta(&self.db, VOTE).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get_meta::<Option<LogId>>(&self.db, COMMITTED)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            let bytes = serde_json::to_vec(&e)
                .map_err(|err| io_err(ErrorSubject::Logs, ErrorVerb::Write, err))?;
            rows.push((e.log_id.index, bytes));
        }
        let db = self.db.clone();
        let committed = match self.take_committed() {
            Some(c) => Some(
                serde_json::to_vec(&c)
                    .map_err(|err| io_err(ErrorSubject::Store, ErrorVerb::Write, err))?,
            ),
            None => None,
        };
        let write = move || -> Result<(), String> {
            let mut tx = db.begin_write().map_err(|e| e.to_string())?;
            tx.set_durability(Durability::Immediate);
            {
                let mut t = tx.open_table(LOG).map_err(|e| e.to_string())?;
                for (i, b) in &rows {
                    t.insert(*i, b.as_slice()).map_err(|e| e.to_string())?;
                }
                if let Some(c) = &committed {
                    let mut m = tx.open_table(META).map_err(|e| e.to_string())?;
                    m.insert(COMMITTED, c.as_slice())
                        .map_err(|e| e.to_string())?;
                }
            }
            tx.commit().map_err(|e| e.to_string())
        };
        let r = tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        match r {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.clone())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index.., None)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(..=log_id.index, Some(&log_id))
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
