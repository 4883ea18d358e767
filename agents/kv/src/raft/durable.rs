//! What keeps a leader's early flush report safe (see [`super::log_store`]).
//!
//! A leader's append is reported flushed before its fsync so that replication overlaps the
//! leader's disk write, and openraft may then count the leader towards a quorum for an entry
//! only a follower has on disk. Two rules keep such an entry unobservable until the leader has
//! it on disk too, so that a quorum of durable copies stands behind everything observed:
//! - no member applies an entry before it is durable in its own log
//!   ([`Durable::wait_for`], used by the state machine), so no client is answered early;
//! - a leader tells followers only a commit index that is durable in its own log
//!   ([`CommitGate::clamp`], used when sending append-entries), and sends a heartbeat as soon
//!   as a withheld commit index becomes durable ([`CommitGate::release`]).

use super::types::{LogId, Raft, StorageError};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// What is durable in a member's log, published by the log writer.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    /// The last entry on disk (or the last purged one when the log is empty).
    pub last: Option<LogId>,
    /// Why the writer stopped: it refuses every later change, and the member must stop.
    pub failed: Option<Arc<str>>,
}

impl Durable {
    fn index(&self) -> u64 {
        self.last.map_or(0, |l| l.index)
    }

    /// Waits until the entry at `index` is durable; an error once the writer failed.
    pub async fn wait_for(
        rx: &mut watch::Receiver<Durable>,
        index: u64,
    ) -> Result<(), StorageError> {
        let err = |e: &str| -> StorageError {
            StorageIOError::new(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                openraft::AnyError::error(e),
            )
            .into()
        };
        let d = rx
            .wait_for(|d| d.failed.is_some() || d.index() >= index)
            .await
            .map_err(|_| err("the log writer has stopped"))?;
        match &d.failed {
            Some(e) => Err(err(e)),
            None => Ok(()),
        }
    }
}

/// Holds back, in outgoing append-entries, a commit index the leader has not yet on disk.
pub struct CommitGate {
    durable: watch::Receiver<Durable>,
    /// The highest commit index held back and not yet released (0: none).
    withheld: AtomicU64,
    wake: Notify,
}

impl CommitGate {
    pub fn new(durable: watch::Receiver<Durable>) -> Arc<CommitGate> {
        Arc::new(CommitGate {
            durable,
            withheld: AtomicU64::new(0),
            wake: Notify::new(),
        })
    }

    /// Lowers `commit` to the last durable entry when that is behind it.
    pub fn clamp(&self, commit: &mut Option<LogId>) {
        let Some(c) = *commit else { return };
        let on_disk = self.durable.borrow().clone();
        if on_disk.index() >= c.index {
            return;
        }
        *commit = on_disk.last;
        self.withheld.fetch_max(c.index, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Runs for the member's life: once a withheld commit index is durable, has the leader
    /// send it at once rather than with the next heartbeat or append.
    pub async fn release(self: Arc<Self>, raft: Raft) {
        let mut durable = self.durable.clone();
        loop {
            let on_disk = durable.borrow_and_update().index();
            let w = self.withheld.load(Ordering::SeqCst);
            if w != 0 && on_disk >= w {
                let _ = self
                    .withheld
                    .compare_exchange(w, 0, Ordering::SeqCst, Ordering::SeqCst);
                if raft.trigger().heartbeat().await.is_err() {
                    return;
                }
                continue;
            }
            tokio::select! {
                r = durable.changed() => if r.is_err() { return },
                () = self.wake.notified() => {}
            }
        }
    }
}
