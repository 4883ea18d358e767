//! Slot state on a disk: the USR-A/USR-B entries of the GPT (found by their partition labels)
//! and the one function that writes their gptprio bits, in the backup and the primary table.
//!
//! Raw header bytes rather than the `gpt` crate: that crate's writer repacks the entry array
//! (renumbering partitions), and only the attribute field of two entries may change here. The
//! backup table is written first, so a power cut in between leaves a valid primary that still
//! describes the old state completely.

use super::{GptPrio, Slot, SlotState};
use std::io::{Read, Seek, SeekFrom, Write};
use thiserror::Error;

const SECTOR: u64 = 512;

#[derive(Debug, Error)]
pub enum GptError {
    #[error("reading or writing the partition table failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the disk's GPT is invalid ({0}); the disk is not a crust disk or its partition table is damaged")]
    Bad(&'static str),
    #[error("no partition labelled {0} in the GPT: not a crust A/B disk")]
    NoSlot(&'static str),
}

/// A USR partition as the GPT describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsrPartition {
    pub slot: Slot,
    /// Index in the entry array (partition number - 1).
    pub index: u32,
    pub first_lba: u64,
    pub last_lba: u64,
    pub prio: GptPrio,
}

impl UsrPartition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

struct Table {
    header: Vec<u8>,
    entries: Vec<u8>,
    entries_lba: u64,
    esize: usize,
}

fn read_table<F: Read + Seek>(disk: &mut F, lba: u64) -> Result<Table, GptError> {
    let mut header = vec![0u8; SECTOR as usize];
    disk.seek(SeekFrom::Start(lba * SECTOR))?;
    disk.read_exact(&mut header)?;
    if &header[..8] != b"EFI PART" {
        return Err(GptError::Bad("no EFI PART signature"));
    }
    let hsize = u32_at(&header, 12) as usize;
    if !(92..=SECTOR as usize).contains(&hsize) {
        return Err(GptError::Bad("bad header size"));
    }
    let mut copy = header[..hsize].to_vec();
    copy[16..20].fill(0);
    if crc32fast::hash(&copy) != u32_at(&header, 16) {
        return Err(GptError::Bad("header checksum mismatch"));
    }
    let (entries_lba, num, esize) = (
        u64_at(&header, 72),
        u32_at(&header, 80),
        u32_at(&header, 84) as usize,
    );
    if esize < 128 || esize % 8 != 0 || num == 0 || num > 1024 {
        return Err(GptError::Bad("bad partition entry geometry"));
    }
    let mut entries = vec![0u8; num as usize * esize];
    disk.seek(SeekFrom::Start(entries_lba * SECTOR))?;
    disk.read_exact(&mut entries)?;
    if crc32fast::hash(&entries) != u32_at(&header, 88) {
        return Err(GptError::Bad("partition entries checksum mismatch"));
    }
    Ok(Table {
        header,
        entries,
        entries_lba,
        esize,
    })
}

fn label(entry: &[u8]) -> String {
    let units: Vec<u16> = entry[56..128]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn find(t: &Table, slot: Slot) -> Result<UsrPartition, GptError> {
    for (i, e) in t.entries.chunks_exact(t.esize).enumerate() {
        if e[..16].iter().any(|&b| b != 0) && label(e) == slot.label() {
            return Ok(UsrPartition {
                slot,
                index: i as u32,
                first_lba: u64_at(e, 32),
                last_lba: u64_at(e, 40),
                prio: GptPrio(u64_at(e, 48)),
            });
        }
    }
    Err(GptError::NoSlot(slot.label()))
}

/// USR-A and USR-B as the primary GPT describes them.
pub fn read_usr<F: Read + Seek>(disk: &mut F) -> Result<[UsrPartition; 2], GptError> {
    let t = read_table(disk, 1)?;
    Ok([find(&t, Slot::A)?, find(&t, Slot::B)?])
}

/// The one writer of slot state into the GPT: sets each given slot's gptprio bits (priority,
/// tries, successful, from [`SlotState::gptprio`]) in the backup and then the primary table,
/// with their checksums, and flushes. Other attribute bits and entries are untouched.
pub fn write_states<F: Read + Write + Seek>(
    disk: &mut F,
    states: &[SlotState],
) -> Result<(), GptError> {
    let primary = read_table(disk, 1)?;
    let backup_lba = u64_at(&primary.header, 32);
    let backup = read_table(disk, backup_lba)?;
    for mut t in [backup, primary] {
        for st in states {
            let p = find(&t, st.slot)?;
            let at = p.index as usize * t.esize + 48;
            let bits = st.gptprio(p.prio.0).0;
            t.entries[at..at + 8].copy_from_slice(&bits.to_le_bytes());
        }
        let ecrc = crc32fast::hash(&t.entries);
        t.header[88..92].copy_from_slice(&ecrc.to_le_bytes());
        let hsize = u32_at(&t.header, 12) as usize;
        t.header[16..20].fill(0);
        let hcrc = crc32fast::hash(&t.header[..hsize]);
        t.header[16..20].copy_from_slice(&hcrc.to_le_bytes());
        disk.seek(SeekFrom::Start(t.entries_lba * SECTOR))?;
        disk.write_all(&t.entries)?;
        let my_lba = u64_at(&t.header, 24);
        disk.seek(SeekFrom::Start(my_lba * SECTOR))?;
        disk.write_all(&t.header)?;
        disk.flush()?;
    }
    Ok(())
}

/// A minimal valid GPT with CoreOS numbering for tests of slot state on a disk image (used by
/// this crate's and update-engine's tests): partitions 1 (EFI-SYSTEM), 3 (USR-A), 4 (USR-B),
/// each `usr_sectors` long for the USR ones.
pub fn test_disk(usr_sectors: u64) -> Vec<u8> {
    let num = 128usize;
    let esize = 128usize;
    let table_sectors = (num * esize) as u64 / SECTOR;
    let first_usable = 2 + table_sectors;
    let parts: [(u32, &str, u64); 3] = [
        (1, "EFI-SYSTEM", 64),
        (3, "USR-A", usr_sectors),
        (4, "USR-B", usr_sectors),
    ];
    let data: u64 = parts.iter().map(|p| p.2).sum();
    let total = first_usable + data + table_sectors + 1;
    let last_usable = total - table_sectors - 2;
    let mut disk = vec![0u8; (total * SECTOR) as usize];
    let mut entries = vec![0u8; num * esize];
    let mut lba = first_usable;
    for (n, name, len) in parts {
        let e = &mut entries[(n as usize - 1) * esize..n as usize * esize];
        e[..16].copy_from_slice(&[0x5a; 16]);
        e[16..32].copy_from_slice(&[n as u8; 16]);
        e[32..40].copy_from_slice(&lba.to_le_bytes());
        e[40..48].copy_from_slice(&(lba + len - 1).to_le_bytes());
        for (i, u) in name.encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        lba += len;
    }
    let ecrc = crc32fast::hash(&entries);
    for (my, other, elba) in [
        (1u64, total - 1, 2u64),
        (total - 1, 1, total - 1 - table_sectors),
    ] {
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[72..80].copy_from_slice(&elba.to_le_bytes());
        h[80..84].copy_from_slice(&(num as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(esize as u32).to_le_bytes());
        h[88..92].copy_from_slice(&ecrc.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        let at = (my * SECTOR) as usize;
        disk[at..at + 92].copy_from_slice(&h);
        let at = (elba * SECTOR) as usize;
        disk[at..at + entries.len()].copy_from_slice(&entries);
    }
    disk
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::EntryName;
    use std::io::Cursor;

    #[test]
    fn finds_usr_partitions_and_writes_both_tables() {
        let mut d = Cursor::new(test_disk(100));
        let [a, b] = read_usr(&mut d).unwrap();
        assert_eq!((a.slot, a.index, b.index), (Slot::A, 2, 3));
        assert_eq!(b.first_lba, a.last_lba + 1);
        assert_eq!(a.size(), 100 * 512);
        let before = d.get_ref().clone();
        let st = SlotState {
            slot: Slot::B,
            priority: 2,
            entry: EntryName::new(Slot::B, 1),
        };
        write_states(&mut d, &[st]).unwrap();
        let [a2, b2] = read_usr(&mut d).unwrap();
        assert_eq!(a2, a, "the other slot is untouched");
        assert_eq!(b2.prio, GptPrio::new(2, 1, false));
        // The backup table agrees (and its checksums are valid).
        let backup_lba = u64_at(&d.get_ref()[512..1024], 32);
        let t = read_table(&mut d, backup_lba).unwrap();
        assert_eq!(find(&t, Slot::B).unwrap().prio, GptPrio::new(2, 1, false));
        // Only the attribute fields, the entry CRCs and the header CRCs changed.
        let changed = d
            .get_ref()
            .iter()
            .zip(&before)
            .filter(|(x, y)| x != y)
            .count();
        assert!(changed <= 2 * (8 + 4 + 4), "{changed} bytes changed");
    }

    #[test]
    fn refuses_damaged_tables_and_foreign_disks() {
        let mut raw = test_disk(10);
        raw[512 + 40] ^= 1;
        assert!(matches!(
            read_usr(&mut Cursor::new(raw)),
            Err(GptError::Bad(_))
        ));
        let mut raw = test_disk(10);
        raw[1024 + 2 * 128 + 56] = b'X';
        let at = 1024;
        let crc = crc32fast::hash(&raw[at..at + 128 * 128]);
        raw[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        raw[512 + 16..512 + 20].fill(0);
        let hcrc = crc32fast::hash(&raw[512..512 + 92]);
        raw[512 + 16..512 + 20].copy_from_slice(&hcrc.to_le_bytes());
        assert!(matches!(
            read_usr(&mut Cursor::new(raw)),
            Err(GptError::NoSlot("USR-A"))
        ));
    }
}
