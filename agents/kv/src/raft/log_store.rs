//! The Raft log, the vote and the commit position in redb.
//!
//! One redb file (`<data-dir>/member/raft.redb`) holds the log (`log`: index -> JSON entry),
//! the small records (`meta`: vote, committed, last purged id, the last journal record folded)
//! and the latest snapshot (written by [`super::state_machine`]). Appends reach it through the
//! journal beside it (`member/raft.journal`, [`super::journal`]).
//!
//! fsync policy:
//! - Every change (append, vote, truncation, purge) is made durable in the order openraft
//!   asked for it, before it is reported done (except a leader's append, below).
//! - Appends are written to the journal: one record and one `fdatasync` per round. Once the
//!   journal holds [`FOLD_BYTES`] of entries, or when any other change comes (a vote, a
//!   truncation, a purge), or when the member stops, its entries and that change are folded
//!   into redb in one transaction committed with [`redb::Durability::Immediate`] (redb fsyncs
//!   before `commit` returns), and the journal starts over. So redb's scattered page writes
//!   are paid once per fold rather than on every write's path, and every change other than an
//!   append finds the log whole in redb. Opening the store folds what the journal holds
//!   before anything reads the log.
//! - A writer thread does the writing: it puts everything queued while the previous round ran
//!   into one round, so one fsync covers many appends.
//! - A vote, truncation or purge returns once it is durable. A follower's append is reported
//!   flushed only once it is durable, so a member never acknowledges an entry or a vote it
//!   could lose in a crash.
//! - A follower writes an append itself, in openraft's core task, when nothing is queued for
//!   the writer and the append is small (a leader sends a follower one append at a time, so
//!   this is the common case). Handing it to the writer thread and back costs two thread
//!   wake-ups on the path of every client write; on two cores with three members they
//!   measured about 0.1 ms of a 1.2 ms single-client write. The member's runtime is held up
//!   for that one commit, as etcd's raft loop is while it writes its WAL.
//! - A leader's own append is reported flushed as soon as it is queued, so that openraft
//!   replicates it while the leader's disk writes it (openraft 0.9 waits for the flush report
//!   before it replicates). The leader then counts itself towards a quorum early; what keeps
//!   that safe is [`super::durable`]: no member applies an entry (so no client is answered)
//!   before it is durable on that member, and a leader never tells followers an entry is
//!   committed before it is durable on the leader. A quorum of durable copies therefore stands
//!   behind everything anyone has observed, as with etcd, whose leader also writes its log
//!   while it sends it.
//! - Entries not yet in redb (queued, or only in the journal) stay readable from memory (the
//!   tail), for replication and reads.
//! - The commit position is not written on its own (on Linux even redb's `Eventual`
//!   durability is an fsync): it is kept in memory and written with each fold (at most up to
//!   the last entry folded), and when the member stops. Losing it in a crash only means a
//!   restarted member re-applies fewer entries until the leader tells it the commit index
//!   again.

use super::durable::Durable;
use super::journal::{self, Journal};
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, watch};

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
/// The number of the last journal record folded into redb.
const JOURNAL_SEQ: &str = "journal_seq";
/// Folds the journal once it holds this many bytes of entries. A fold holds up the writes
/// behind it while it writes them all into redb: with 1 MiB (about 1900 single-client writes)
/// that took 20-30 ms, every 1900th write; a quarter of that spreads the same work over
/// four shorter pauses.
const FOLD_BYTES: usize = 256 << 10;
/// A follower writes appends up to this size itself (the module docs say why); larger ones,
/// such as a lagging follower's catch-up, go to the writer thread so that the member's
/// runtime is never held up for long.
const INLINE_MAX_BYTES: usize = 256 << 10;
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

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A change for the writer thread. `done` hears the outcome once it is durable (or failed).
enum Op {
    Append {
        rows: Vec<(LogId, Vec<u8>)>,
        /// `None` for a leader's append, reported flushed when it was queued.
        flushed: Option<LogFlushed<TypeConfig>>,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    Purge {
        upto: LogId,
        done: oneshot::Sender<Result<(), String>>,
    },
    Vote {
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Folds the journal into redb (with the commit position) now.
    Fold {
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Ends the writer once what was queued before it is written.
    Stop,
}

impl Op {
    fn finish(self, result: &Result<(), String>) {
        match self {
            Op::Append { flushed, .. } => {
                if let Some(f) = flushed {
                    f.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
            }
            Op::Truncate { done, .. }
            | Op::Purge { done, .. }
            | Op::Vote { done, .. }
            | Op::Fold { done } => {
                let _ = done.send(result.clone());
            }
            Op::Stop => {}
        }
    }
}

/// What the log store's clones and its writer thread share. The writer holds no sender, so
/// it ends (and lets go of the database) once the last [`LogStore`] is dropped.
struct Shared {
    db: Arc<Database>,
    /// This member's id: appends made under its own committed vote are a leader's.
    me: u64,
    /// Entries not yet in redb (queued, or only in the journal), by index: always a suffix of
    /// the log.
    tail: Mutex<BTreeMap<u64, Entry>>,
    /// The last vote saved or read.
    vote: Mutex<Option<Vote>>,
    /// The newest commit position not yet written: it goes with the next fold.
    committed: Mutex<Option<Option<LogId>>>,
    durable: watch::Sender<Durable>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Changes queued for the writer thread and not yet finished.
    queued: AtomicUsize,
    journal: Mutex<JournalState>,
}

/// The journal and the appends it holds that redb does not have yet, in order.
struct JournalState {
    journal: Journal,
    rows: Vec<(LogId, Vec<u8>)>,
    /// The entries' bytes in `rows`.
    bytes: usize,
}

/// The log store; clones share the database and the writer (the clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Op>,
}

impl LogStore {
    /// The log store of member `me` in `db` with its journal at `journal_path` (made when
    /// missing; what it holds is folded into redb first), and its writer thread.
    pub fn open(db: Arc<Database>, journal_path: &Path, me: u64) -> Result<LogStore, String> {
        let folded = get_meta::<u64>(&db, JOURNAL_SEQ)?.unwrap_or(0);
        let (journal, records) = Journal::open(journal_path, folded).map_err(|e| e.to_string())?;
        let mut journal = JournalState {
            journal,
            rows: Vec::new(),
            bytes: 0,
        };
        if !records.is_empty() {
            replay(&db, &mut journal, &records)
                .map_err(|e| format!("{}: cannot fold the journal: {e}", journal_path.display()))?;
        }
        let last = last_log_id(&db)?;
        let shared = Arc::new(Shared {
            db,
            me,
            tail: Mutex::default(),
            vote: Mutex::default(),
            committed: Mutex::default(),
            durable: watch::Sender::new(Durable { last, failed: None }),
            writer: Mutex::default(),
            queued: AtomicUsize::new(0),
            journal: Mutex::new(journal),
        });
        let (writer, rx) = mpsc::channel();
        let w = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kv-log-writer".into())
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_writer(&w, &rx);
                }));
                // Whoever still waits for the disk (an apply, a late change) hears it.
                let why = match ran {
                    Ok(()) => "the log writer has stopped",
                    Err(_) => "the log writer crashed",
                };
                w.durable.send_modify(|d| {
                    d.failed.get_or_insert_with(|| why.into());
                });
            })
            .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
        *lock(&shared.writer) = Some(thread);
        Ok(LogStore { shared, writer })
    }

    /// Follows what is durable in this member's log.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.shared.durable.subscribe()
    }

    /// Queues `op`; an error if the writer failed earlier (it then refuses everything).
    fn queue(&self, op: Op) -> Result<(), String> {
        let failed = self.shared.durable.borrow().failed.clone();
        if let Some(e) = failed {
            let e = e.to_string();
            op.finish(&Err(e.clone()));
            return Err(e);
        }
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        self.writer.send(op).map_err(|e| {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            let why = "the log writer has stopped".to_string();
            e.0.finish(&Err(why.clone()));
            why
        })
    }

    /// Queues `op` built around a completion and waits until it is durable.
    async fn write(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        self.queue(op(done))?;
        rx.await
            .map_err(|_| "the log writer has stopped".to_string())
            .and_then(|r| r)
    }

    /// Whether this member leads under its last saved vote.
    fn leading(&self) -> bool {
        lock(&self.shared.vote)
            .is_some_and(|v| v.committed && v.leader_id.node_id == self.shared.me)
    }

    /// Folds the journal into redb with the commit position, and ends the writer thread once
    /// everything queued is written: when the member stops, so that it restarts with
    /// everything it had applied (a crash only delays that until the leader tells it the
    /// commit index again), and so that the files are no longer written once the member is
    /// gone. Blocks.
    pub fn close(&self) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        let result = self.queue(Op::Fold { done }).and_then(|()| {
            rx.blocking_recv()
                .map_err(|_| "the log writer has stopped".to_string())
                .and_then(|r| r)
        });
        let _ = self.writer.send(Op::Stop);
        let thread = lock(&self.shared.writer).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        result
    }

    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, String> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        if from >= to {
            return Ok(Vec::new());
        }
        // The tail first: whatever is not in it at this moment is in redb already.
        let (tail_start, pending) = {
            let tail = lock(&self.shared.tail);
            let start = tail.keys().next().copied().unwrap_or(u64::MAX);
            let pending: Vec<Entry> = tail.range(from..to).map(|(_, e)| e.clone()).collect();
            (start, pending)
        };
        let mut out = Vec::new();
        if from < tail_start {
            let tx = self.shared.db.begin_read().map_err(|e| e.to_string())?;
            let t = tx.open_table(LOG).map_err(|e| e.to_string())?;
            for item in t
                .range(from..to.min(tail_start))
                .map_err(|e| e.to_string())?
            {
                let (_, v) = item.map_err(|e| e.to_string())?;
                out.push(serde_json::from_slice(v.value()).map_err(|e| e.to_string())?);
            }
        }
        out.extend(pending);
        Ok(out)
    }
}

/// The id of the last entry in redb, or of the last purged one when the log is empty.
fn last_log_id(db: &Database) -> Result<Option<LogId>, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let log = tx.open_table(LOG).map_err(|e| e.to_string())?;
    let meta = tx.open_table(META).map_err(|e| e.to_string())?;
    last_in(&log, &meta)
}

/// [`last_log_id`] within a transaction, read or write.
fn last_in(
    log: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<LogId>, String> {
    if let Some((_, v)) = log.last().map_err(|e| e.to_string())? {
        let e: Entry = serde_json::from_slice(v.value()).map_err(|e| e.to_string())?;
        return Ok(Some(e.log_id));
    }
    match meta.get(PURGED).map_err(|e| e.to_string())? {
        Some(v) => serde_json::from_slice(v.value())
            .map_err(|e| format!("record {PURGED:?} does not decode: {e}")),
        None => Ok(None),
    }
}

/// Writes the journal's `records` (found at start) into redb in one durable transaction and
/// lets the journal start over after them.
fn replay(db: &Database, j: &mut JournalState, records: &[journal::Record]) -> Result<(), String> {
    let rows = records
        .iter()
        .flat_map(|r| &r.rows)
        .map(|(index, bytes)| (*index, bytes.as_slice()));
    write_fold(db, rows, &[], None, j.journal.last_seq())?;
    j.journal.restart();
    Ok(())
}

/// Whether a round of `ops` goes to the journal: only appends do, while the journal holds
/// less than [`FOLD_BYTES`] and has room; the record to write if so.
fn journal_record(j: &JournalState, ops: &[Op]) -> Option<Vec<u8>> {
    if j.bytes >= FOLD_BYTES {
        return None;
    }
    let mut rows = Vec::new();
    for op in ops {
        match op {
            Op::Append { rows: r, .. } => {
                rows.extend(r.iter().map(|(id, b)| (id.index, b.as_slice())));
            }
            _ => return None,
        }
    }
    let record = journal::encode(j.journal.next_seq(), rows);
    j.journal.fits(record.len()).then_some(record)
}

/// The writer thread: each round takes everything queued, writes it durably, then reports.
fn run_writer(shared: &Shared, rx: &mpsc::Receiver<Op>) {
    let mut stopping = false;
    while !stopping {
        let Ok(first) = rx.recv() else { return };
        let mut ops: Vec<Op> = std::iter::once(first).chain(rx.try_iter()).collect();
        let gathered = ops.len();
        if let Some(at) = ops.iter().position(|op| matches!(op, Op::Stop)) {
            stopping = true;
            for late in ops.split_off(at) {
                late.finish(&Err("the log writer has stopped".into()));
            }
        }
        if !ops.is_empty() {
            let result = round(shared, &ops);
            for op in ops {
                op.finish(&result);
            }
        }
        shared.queued.fetch_sub(gathered, Ordering::SeqCst);
    }
}

/// One durable round: appends alone go to the journal as one record; anything else, or a
/// journal that holds enough, folds the journal and `ops` into redb in one transaction. Then
/// reports the new durable position, or marks the log failed.
fn round(shared: &Shared, ops: &[Op]) -> Result<(), String> {
    let failed = shared.durable.borrow().failed.clone();
    if let Some(e) = failed {
        return Err(e.to_string());
    }
    let mut j = lock(&shared.journal);
    let written = match journal_record(&j, ops) {
        Some(record) => j
            .journal
            .append(&record)
            .map_err(|e| e.to_string())
            .map(|()| {
                let mut last = None;
                for op in ops {
                    if let Op::Append { rows, .. } = op {
                        j.bytes += rows.iter().map(|(_, b)| b.len()).sum::<usize>();
                        j.rows.extend(rows.iter().cloned());
                        last = rows.last().map(|(id, _)| Some(*id)).or(last);
                    }
                }
                last
            }),
        None => fold(shared, &mut j, ops).map(Some),
    };
    drop(j);
    match written {
        Ok(last) => {
            if let Some(last) = last {
                shared.durable.send_modify(|d| d.last = last);
            }
            Ok(())
        }
        Err(e) => {
            let e = format!("cannot write the raft log: {e}");
            shared
                .durable
                .send_modify(|d| d.failed = Some(e.as_str().into()));
            Err(e)
        }
    }
}

/// Writes the journal's appends and then `ops` into redb in one durable transaction, with the
/// commit position and the journal's last record number; the journal starts over and the
/// entries written leave the tail. Answers the last log id in redb.
fn fold(shared: &Shared, j: &mut JournalState, ops: &[Op]) -> Result<Option<LogId>, String> {
    let committed = lock(&shared.committed).take();
    let rows = j.rows.iter().map(|(id, b)| (id.index, b.as_slice()));
    let last = write_fold(&shared.db, rows, ops, committed, j.journal.last_seq())?;
    j.journal.restart();
    j.bytes = 0;
    let folded = std::mem::take(&mut j.rows);
    let mut tail = lock(&shared.tail);
    let appended = ops.iter().flat_map(|op| match op {
        Op::Append { rows, .. } => rows.as_slice(),
        _ => &[],
    });
    for (id, _) in folded.iter().chain(appended) {
        // Unless a truncation replaced it meanwhile.
        if tail.get(&id.index).is_some_and(|e| e.log_id == *id) {
            tail.remove(&id.index);
        }
    }
    Ok(last)
}

/// Removes the entries `from..=to` of the log (which has no holes). Key by key: redb's
/// `retain_in` took 127 ms to remove the 5000 entries a purge after a snapshot removes, this
/// 22 ms.
fn remove_range(log: &mut redb::Table<u64, &[u8]>, from: u64, to: u64) -> Result<(), String> {
    for i in from..=to {
        log.remove(i).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The redb transaction of [`fold`] and [`replay`]: `rows` (the journal's: log index, entry),
/// then `ops` in order. The commit position written is at most the last entry written, so it
/// never names one redb lacks.
fn write_fold<'a>(
    db: &Database,
    rows: impl Iterator<Item = (u64, &'a [u8])>,
    ops: &[Op],
    committed: Option<Option<LogId>>,
    journal_seq: u64,
) -> Result<Option<LogId>, String> {
    let mut tx = db.begin_write().map_err(|e| e.to_string())?;
    tx.set_durability(Durability::Immediate);
    let last;
    {
        let mut log = tx.open_table(LOG).map_err(|e| e.to_string())?;
        let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
        for (index, bytes) in rows {
            log.insert(index, bytes).map_err(|e| e.to_string())?;
        }
        for op in ops {
            match op {
                Op::Append { rows, .. } => {
                    for (id, bytes) in rows {
                        log.insert(id.index, bytes.as_slice())
                            .map_err(|e| e.to_string())?;
                    }
                }
                Op::Truncate { from, .. } => {
                    let last = log
                        .last()
                        .map_err(|e| e.to_string())?
                        .map(|(k, _)| k.value());
                    remove_range(&mut log, *from, last.unwrap_or(0))?;
                }
                Op::Purge { upto, .. } => {
                    let first = log
                        .first()
                        .map_err(|e| e.to_string())?
                        .map(|(k, _)| k.value());
                    remove_range(&mut log, first.unwrap_or(u64::MAX), upto.index)?;
                    let bytes = serde_json::to_vec(upto).map_err(|e| e.to_string())?;
                    meta.insert(PURGED, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                Op::Vote { bytes, .. } => {
                    meta.insert(VOTE, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                Op::Fold { .. } | Op::Stop => {}
            }
        }
        last = last_in(&log, &meta)?;
        if let Some(c) = committed {
            let c = match (c, last) {
                (Some(c), Some(l)) if c.index > l.index => Some(l),
                (Some(_), None) => None,
                (c, _) => c,
            };
            let bytes = serde_json::to_vec(&c).map_err(|e| e.to_string())?;
            meta.insert(COMMITTED, bytes.as_slice())
                .map_err(|e| e.to_string())?;
        }
        let seq = serde_json::to_vec(&journal_seq).map_err(|e| e.to_string())?;
        meta.insert(JOURNAL_SEQ, seq.as_slice())
            .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(last)
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
        let read = |e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let purged: Option<LogId> = get_meta(&self.shared.db, PURGED).map_err(read)?;
        let queued = lock(&self.shared.tail)
            .last_key_value()
            .map(|(_, e)| e.log_id);
        let last = match queued {
            Some(l) => Some(l),
            None => last_log_id(&self.shared.db).map_err(read)?,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let write = |e: String| io_err(ErrorSubject::Vote, ErrorVerb::Write, e);
        let bytes = serde_json::to_vec(vote).map_err(|e| write(e.to_string()))?;
        *lock(&self.shared.vote) = Some(*vote);
        self.write(|done| Op::Vote { bytes, done })
            .await
            .map_err(write)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote: Option<Vote> = get_meta(&self.shared.db, VOTE)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))?;
        *lock(&self.shared.vote) = vote;
        Ok(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *lock(&self.shared.committed) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get_meta::<Option<LogId>>(&self.shared.db, COMMITTED)
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
        let write = |e: String| io_err(ErrorSubject::Logs, ErrorVerb::Write, e);
        let mut rows = Vec::new();
        let mut queued = Vec::new();
        for e in entries {
            let bytes = serde_json::to_vec(&e).map_err(|err| write(err.to_string()))?;
            rows.push((e.log_id, bytes));
            queued.push(e);
        }
        {
            let mut tail = lock(&self.shared.tail);
            for e in queued {
                tail.insert(e.log_id.index, e);
            }
        }
        let bytes: usize = rows.iter().map(|(_, b)| b.len()).sum();
        let flushed = if self.leading() {
            callback.log_io_completed(Ok(()));
            None
        } else if bytes > INLINE_MAX_BYTES
            || self.shared.queued.load(Ordering::SeqCst) > 0
            || lock(&self.shared.journal).bytes >= FOLD_BYTES
        {
            Some(callback)
        } else {
            // A follower's append with nothing queued before it and no fold due: written to
            // the journal here rather than handed to the writer thread (see the module docs).
            // Only openraft's core queues changes, and it is the caller, so nothing can be
            // queued meanwhile.
            let ops = [Op::Append {
                rows,
                flushed: None,
            }];
            let result = round(&self.shared, &ops);
            callback.log_io_completed(result.clone().map_err(std::io::Error::other));
            return result.map_err(write);
        };
        self.queue(Op::Append { rows, flushed }).map_err(write)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        lock(&self.shared.tail).split_off(&log_id.index);
        self.write(|done| Op::Truncate {
            from: log_id.index,
            done,
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut tail = lock(&self.shared.tail);
            let kept = tail.split_off(&(log_id.index + 1));
            *tail = kept;
        }
        self.write(|done| Op::Purge { upto: log_id, done })
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
