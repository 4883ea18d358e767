//! The append journal in front of the redb log (`member/raft.journal`).
//!
//! A redb commit rewrites a handful of scattered pages (the log table's leaf and branches, the
//! table tree, the freed-page tree, the header) and costs about 0.2 ms of CPU; a write needs
//! two of them on its path (the leader's and a follower's). The journal makes an append
//! durable with one sequential write into a file whose blocks already exist and one
//! `fdatasync`, as etcd's WAL does; its appends are folded into redb in one transaction now
//! and then ([`super::log_store`] says when). redb stays the log: every other change (vote,
//! truncation, purge) goes to redb after the journal is folded, a start folds what the
//! journal holds before anything reads the log, and so does a clean stop.
//!
//! Format: a file of [`CAPACITY`] bytes, written full of zeros when it is made (so that later
//! writes allocate nothing and `fdatasync` flushes only data). Records follow each other from
//! offset 0:
//!
//! ```text
//! magic "CRJ1" | seq u64 | payload length u32 | CRC-32 of (seq, length, payload) u32 | payload
//! payload: rows u32, then per row: log index u64 | length u32 | the entry's JSON
//! ```
//!
//! (integers little-endian). Sequence numbers grow by one from record to record and never
//! restart; redb remembers the last one folded. After a fold the next record goes to offset 0
//! again, so what follows the newest records is older records or their remains: reading
//! stops at the first record that is not whole (a torn write), fails its CRC, or is not the
//! next in sequence. [`decode`] is that reader, a pure function.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The journal file's size.
pub const CAPACITY: u64 = 4 << 20;
const MAGIC: &[u8; 4] = b"CRJ1";
const HEAD: usize = 4 + 8 + 4 + 4;

/// One journal record: appended rows (log index, the entry's JSON), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub rows: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {why}")]
    Io { path: String, why: String },
    #[error(
        "{path}: record {} is missing or damaged but record {} after it is intact: the \
         journal lost acknowledged entries and the data dir is damaged; restore it from a \
         backup, or remove this member (etcdctl member remove) and add it back with an empty \
         --data-dir", .gap.missing, .gap.found
    )]
    Lost { path: String, gap: Gap },
    #[error(
        "{path}: {found} bytes where the raft journal has {CAPACITY}: the data dir is damaged; \
         restore it from a backup, or remove this member (etcdctl member remove) and add it \
         back with an empty --data-dir"
    )]
    Size { path: String, found: u64 },
}

/// Encodes one record.
pub fn encode<'a>(seq: u64, rows: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut payload = vec![0u8; 4];
    let mut count = 0u32;
    for (index, bytes) in rows {
        payload.extend_from_slice(&index.to_le_bytes());
        payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        payload.extend_from_slice(bytes);
        count += 1;
    }
    payload[..4].copy_from_slice(&count.to_le_bytes());
    let mut out = Vec::with_capacity(HEAD + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(seq, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// The record at the start of `b` if it is whole and intact, with its length.
fn record_at(b: &[u8]) -> Option<(Record, usize)> {
    if b.get(..4)? != MAGIC {
        return None;
    }
    let seq = u64_at(b, 4)?;
    let len = u32_at(b, 12)? as usize;
    let payload = b.get(HEAD..HEAD.checked_add(len)?)?;
    if u32_at(b, 16)? != crc(seq, payload) {
        return None;
    }
    let count = u32_at(payload, 0)?;
    let mut rows = Vec::new();
    let mut at = 4;
    for _ in 0..count {
        let index = u64_at(payload, at)?;
        let n = u32_at(payload, at + 8)? as usize;
        let start = at + 12;
        rows.push((index, payload.get(start..start.checked_add(n)?)?.to_vec()));
        at = start + n;
    }
    // A payload with bytes after its rows was not written by `encode`.
    (at == payload.len()).then_some((Record { seq, rows }, HEAD + len))
}

/// An intact record numbered after a missing or damaged one: records were lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub missing: u64,
    pub found: u64,
}

/// The records at the start of `bytes` numbered `after + 1`, `after + 2`, ... up to the
/// first that is missing, torn or damaged. Only the last record written can be torn, and
/// everything behind the new records is older than `after`, so an intact record numbered
/// beyond that point means the journal lost records: that is an error, not the end.
pub fn decode(bytes: &[u8], after: u64) -> Result<Vec<Record>, Gap> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut seq = after.wrapping_add(1);
    while let Some((r, len)) = bytes
        .get(at..)
        .and_then(record_at)
        .filter(|(r, _)| r.seq == seq)
    {
        out.push(r);
        at += len;
        seq = seq.wrapping_add(1);
    }
    let rest = bytes.get(at + 1..).unwrap_or_default();
    let later = rest
        .windows(MAGIC.len())
        .enumerate()
        .filter(|(_, w)| w == MAGIC)
        .filter_map(|(i, _)| record_at(&rest[i..]))
        .find(|(r, _)| r.seq >= seq);
    match later {
        Some((r, _)) => Err(Gap {
            missing: seq,
            found: r.seq,
        }),
        None => Ok(out),
    }
}

/// The open journal: where the next record goes and its number.
pub struct Journal {
    file: File,
    path: PathBuf,
    offset: u64,
    next_seq: u64,
}

impl Journal {
    /// Opens the journal at `path`, making it when it is missing, and reads the records after
    /// `folded` (the last sequence number redb has). The next record goes to offset 0 and is
    /// numbered after the last of those: the caller folds them into redb before it appends.
    pub fn open(path: &Path, folded: u64) -> Result<(Journal, Vec<Record>), JournalError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| JournalError::Io {
            path: shown.clone(),
            why: e.to_string(),
        };
        if !path.exists() {
            make(path).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let found = file.metadata().map_err(io)?.len();
        if found != CAPACITY {
            return Err(JournalError::Size {
                path: shown.clone(),
                found,
            });
        }
        let mut bytes = Vec::with_capacity(CAPACITY as usize);
        file.read_to_end(&mut bytes).map_err(io)?;
        let records = decode(&bytes, folded).map_err(|gap| JournalError::Lost {
            path: shown.clone(),
            gap,
        })?;
        let last = records.last().map_or(folded, |r| r.seq);
        let journal = Journal {
            file,
            path: path.to_path_buf(),
            offset: 0,
            next_seq: last.wrapping_add(1),
        };
        Ok((journal, records))
    }

    /// Whether a record of `len` bytes (from [`encode`]) fits after the ones written.
    pub fn fits(&self, len: usize) -> bool {
        self.offset.saturating_add(len as u64) <= CAPACITY
    }

    /// The number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The number of the last record written (what a fold records in redb).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.wrapping_sub(1)
    }

    /// Writes a record encoded with [`Journal::next_seq`] and makes it durable.
    pub fn append(&mut self, record: &[u8]) -> Result<(), JournalError> {
        let io = |e: std::io::Error| JournalError::Io {
            path: self.path.display().to_string(),
            why: e.to_string(),
        };
        self.file.write_all_at(record, self.offset).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.offset += record.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(())
    }

    /// After a fold: the next record goes to the start again.
    pub fn restart(&mut self) {
        self.offset = 0;
    }
}

/// Makes a journal full of zeros: written under another name, flushed, then renamed into
/// place, so a crash never leaves a short one.
fn make(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("journal.tmp");
    {
        let mut f = File::create(&tmp)?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = CAPACITY;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(first: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
        (first..first + n)
            .map(|i| (i, format!("{{\"entry\":{i}}}").into_bytes()))
            .collect()
    }

    fn enc(seq: u64, rows: &[(u64, Vec<u8>)]) -> Vec<u8> {
        encode(seq, rows.iter().map(|(i, b)| (*i, b.as_slice())))
    }

    #[test]
    fn records_read_back_in_sequence_and_stop_at_damage() {
        let mut file = Vec::new();
        let third_ends = enc(5, &rows(50, 3)).len() * 3;
        for seq in 5..9 {
            file.extend(enc(seq, &rows(seq * 10, 3)));
        }
        let whole = decode(&file, 4).expect("whole");
        assert_eq!(whole.len(), 4);
        assert_eq!(
            whole[2],
            Record {
                seq: 7,
                rows: rows(70, 3)
            }
        );
        // Only records after the folded number count, and only from the start: older ones
        // behind them are the remains of earlier rounds.
        assert_eq!(decode(&file, 8), Ok(vec![]));
        assert_eq!(decode(&file[third_ends..], 7), Ok(whole[3..].to_vec()));
        // A torn last record (any cut) ends the journal before it.
        for cut in [third_ends + 1, third_ends + 20, file.len() - 1] {
            assert_eq!(
                decode(&file[..cut], 4),
                Ok(whole[..3].to_vec()),
                "cut at {cut}"
            );
        }
        // A flipped bit anywhere in a record ends the journal before it.
        for at in [
            third_ends + 5,
            third_ends + 13,
            third_ends + 17,
            file.len() - 2,
        ] {
            let mut bad = file.clone();
            bad[at] ^= 0x10;
            assert_eq!(decode(&bad, 4), Ok(whole[..3].to_vec()), "flip at {at}");
        }
        // Damage before intact later records is records lost, not the end of the journal;
        // and so is a journal that lacks the record after the folded one but has later ones.
        let mut bad = file.clone();
        bad[third_ends / 3 + 30] ^= 1;
        assert_eq!(
            decode(&bad, 4),
            Err(Gap {
                missing: 6,
                found: 7
            })
        );
        assert_eq!(
            decode(&file, 5),
            Err(Gap {
                missing: 6,
                found: 6
            })
        );
        // Zeros (a fresh journal) and noise decode to nothing, never panic.
        assert_eq!(decode(&[0u8; 4096], 0), Ok(vec![]));
        let noise: Vec<u8> = (0..20000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for start in 0..64 {
            assert_eq!(decode(&noise[start..], 0), Ok(vec![]));
        }
    }

    #[test]
    fn after_a_fold_older_records_behind_the_new_ones_are_not_read() {
        // Epoch one: records 1..=4 of long rows; folded; epoch two writes 5 and 6 over the
        // start with short rows. What follows 6 is the remains of epoch one.
        let mut file = Vec::new();
        for seq in 1..=4 {
            file.extend(enc(seq, &rows(seq * 100, 20)));
        }
        let mut second = enc(5, &rows(500, 1));
        second.extend(enc(6, &rows(600, 1)));
        file[..second.len()].copy_from_slice(&second);
        let got = decode(&file, 4).expect("records");
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn a_journal_is_made_full_size_and_appends_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.journal");
        let (mut j, found) = Journal::open(&path, 0).expect("make");
        assert!(found.is_empty());
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), CAPACITY);
        for first in [1, 4] {
            let r = enc(j.next_seq(), &rows(first, 3));
            assert!(j.fits(r.len()));
            j.append(&r).expect("append");
        }
        assert_eq!(j.last_seq(), 2);
        drop(j);
        let (mut j, found) = Journal::open(&path, 0).expect("reopen");
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].rows, rows(4, 3));
        assert_eq!(j.next_seq(), 3);
        // Folded up to 2: the next record starts over at offset 0 and only it is read.
        j.restart();
        j.append(&enc(3, &rows(7, 1))).expect("append");
        drop(j);
        let (_, found) = Journal::open(&path, 2).expect("reopen");
        assert_eq!(
            found,
            [Record {
                seq: 3,
                rows: rows(7, 1)
            }]
        );
        // A record larger than the file never fits.
        let (j, _) = Journal::open(&path, 3).expect("reopen");
        assert!(!j.fits(CAPACITY as usize + 1));
    }

    #[test]
    fn a_journal_of_the_wrong_size_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.journal");
        std::fs::write(&path, b"not a journal").expect("write");
        let e = Journal::open(&path, 0).err().expect("refused");
        assert!(e.to_string().contains("13 bytes"), "{e}");
        assert!(e.to_string().contains("--data-dir"), "{e}");
        assert_eq!(std::fs::read(&path).expect("read"), b"not a journal");
    }

    #[test]
    fn a_journal_that_lost_a_record_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.journal");
        let (mut j, _) = Journal::open(&path, 0).expect("make");
        for first in [1, 4, 7] {
            j.append(&enc(j.next_seq(), &rows(first, 3)))
                .expect("append");
        }
        drop(j);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEAD + 2] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let e = Journal::open(&path, 0).err().expect("refused");
        assert!(matches!(e, JournalError::Lost { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("record 1 is missing or damaged but record 2"),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
    }
}
