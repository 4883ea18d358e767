//! Growing ROOT to the end of a disk that is larger than the image: move the backup GPT to the
//! new last sector and extend the last partition, 1 MiB aligned.
//!
//! Written against raw header bytes rather than through the `gpt` crate's writer, because that
//! writer packs used entries to the front of the table and so would renumber partitions (ROOT must
//! stay partition 9). The `gpt` crate still does the reading elsewhere in init.

use thiserror::Error;

pub const SECTOR: u64 = 512;
/// Partitions end on 1 MiB boundaries, like every partitioning tool since 2010.
pub const ALIGN_SECTORS: u64 = 2048;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GrowError {
    #[error("the primary GPT header is invalid ({0}); repair the disk's partition table")]
    BadHeader(&'static str),
    #[error("partition {0} is not in the GPT")]
    NoPartition(u32),
    #[error("partition {partno} ends at sector {last} but must be the last partition on the disk (partition {other} ends at {other_last})")]
    NotLast {
        partno: u32,
        last: u64,
        other: u32,
        other_last: u64,
    },
    #[error("the disk ({sectors} sectors) is smaller than its GPT says ({needed} sectors); the image was written to a too-small disk")]
    DiskTooSmall { sectors: u64, needed: u64 },
}

/// What to write, and the partition's new extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowPlan {
    pub partno: u32,
    pub first_lba: u64,
    pub old_last_lba: u64,
    pub new_last_lba: u64,
    /// (byte offset on the disk, bytes), in the order to write them: backup structures first,
    /// so a crash in between still leaves a valid primary.
    pub writes: Vec<(u64, Vec<u8>)>,
}

impl GrowPlan {
    pub fn grows_partition(&self) -> bool {
        self.new_last_lba > self.old_last_lba
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
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Reads the primary header (LBA 1, 512 bytes) far enough to know where the entries are:
/// (entries LBA, number of entries, entry size).
pub fn entries_location(header: &[u8]) -> Result<(u64, u32, u32), GrowError> {
    check_header(header)?;
    Ok((u64_at(header, 72), u32_at(header, 80), u32_at(header, 84)))
}

fn check_header(h: &[u8]) -> Result<usize, GrowError> {
    if h.len() < 92 || &h[0..8] != b"EFI PART" {
        return Err(GrowError::BadHeader("no EFI PART signature"));
    }
    let size = u32_at(h, 12) as usize;
    if !(92..=h.len()).contains(&size) {
        return Err(GrowError::BadHeader("bad header size"));
    }
    let mut copy = h[..size].to_vec();
    put32(&mut copy, 16, 0);
    if crc32fast::hash(&copy) != u32_at(h, 16) {
        return Err(GrowError::BadHeader("header checksum mismatch"));
    }
    let entry_size = u32_at(h, 84);
    if entry_size < 128
        || !entry_size.is_multiple_of(8)
        || u32_at(h, 80) == 0
        || u32_at(h, 80) > 1024
    {
        return Err(GrowError::BadHeader("bad partition entry geometry"));
    }
    Ok(size)
}

/// Decides whether partition `partno` must grow (or only the backup GPT move) on a disk of
/// `disk_sectors`, and computes every sector to write. `None`: already at the disk's end.
pub fn plan(
    mbr: &[u8],
    header: &[u8],
    entries: &[u8],
    disk_sectors: u64,
    partno: u32,
) -> Result<Option<GrowPlan>, GrowError> {
    let hsize = check_header(header)?;
    let (part_start, num, esize) = entries_location(header)?;
    let table_bytes = u64::from(num) * u64::from(esize);
    if (entries.len() as u64) < table_bytes {
        return Err(GrowError::BadHeader("partition entries truncated"));
    }
    let entries = &entries[..table_bytes as usize];
    if crc32fast::hash(entries) != u32_at(header, 88) {
        return Err(GrowError::BadHeader("partition entries checksum mismatch"));
    }
    let old_backup = u64_at(header, 32);
    let table_sectors = table_bytes.div_ceil(SECTOR);
    let first_usable = u64_at(header, 40);

    let index = partno
        .checked_sub(1)
        .filter(|i| *i < num)
        .ok_or(GrowError::NoPartition(partno))? as usize;
    let entry = |i: usize| &entries[i * esize as usize..(i + 1) * esize as usize];
    let is_used = |e: &[u8]| e[0..16].iter().any(|&b| b != 0);
    let target = entry(index);
    if !is_used(target) {
        return Err(GrowError::NoPartition(partno));
    }
    let first_lba = u64_at(target, 32);
    let old_last = u64_at(target, 40);
    for i in 0..num as usize {
        let e = entry(i);
        if i != index && is_used(e) && u64_at(e, 40) > old_last {
            return Err(GrowError::NotLast {
                partno,
                last: old_last,
                other: i as u32 + 1,
                other_last: u64_at(e, 40),
            });
        }
    }

    let needed = old_last + 1 + table_sectors + 1;
    if disk_sectors < needed || disk_sectors < first_usable + table_sectors + 2 {
        return Err(GrowError::DiskTooSmall {
            sectors: disk_sectors,
            needed,
        });
    }
    let backup_lba = disk_sectors - 1;
    let backup_entries = backup_lba - table_sectors;
    let last_usable = backup_entries - 1;
    let aligned_last = ((last_usable + 1) / ALIGN_SECTORS * ALIGN_SECTORS).saturating_sub(1);
    let new_last = old_last.max(aligned_last).min(last_usable);
    if old_backup == backup_lba && u64_at(header, 48) == last_usable && new_last == old_last {
        return Ok(None);
    }

    let mut new_entries = entries.to_vec();
    put64(
        &mut new_entries[index * esize as usize..(index + 1) * esize as usize],
        40,
        new_last,
    );
    let entries_crc = crc32fast::hash(&new_entries);
    let mut entries_sectors = new_entries.clone();
    entries_sectors.resize((table_sectors * SECTOR) as usize, 0);

    let make_header = |current: u64, other: u64, entries_at: u64| {
        let mut h = header[..SECTOR as usize].to_vec();
        put64(&mut h, 24, current);
        put64(&mut h, 32, other);
        put64(&mut h, 48, last_usable);
        put64(&mut h, 72, entries_at);
        put32(&mut h, 88, entries_crc);
        put32(&mut h, 16, 0);
        let crc = crc32fast::hash(&h[..hsize]);
        put32(&mut h, 16, crc);
        h
    };
    let primary = make_header(1, backup_lba, part_start);
    let backup = make_header(backup_lba, 1, backup_entries);

    let mut writes = vec![
        (backup_entries * SECTOR, entries_sectors.clone()),
        (backup_lba * SECTOR, backup),
        (part_start * SECTOR, entries_sectors),
        (SECTOR, primary),
    ];
    // The protective MBR's one partition covers the whole disk (capped at 32 bits).
    if mbr.len() >= 512 && mbr[510..512] == [0x55, 0xaa] && mbr[450] == 0xee {
        let mut m = mbr[..512].to_vec();
        let size = (disk_sectors - 1).min(u64::from(u32::MAX)) as u32;
        put32(&mut m, 458, size);
        writes.push((0, m));
    }
    // A stale backup header left inside the grown partition would confuse tools that scan for it.
    if old_backup != backup_lba && old_backup < disk_sectors && old_backup > new_last.min(old_last)
    {
        writes.insert(0, (old_backup * SECTOR, vec![0u8; SECTOR as usize]));
    }
    Ok(Some(GrowPlan {
        partno,
        first_lba,
        old_last_lba: old_last,
        new_last_lba: new_last,
        writes,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A disk image in memory: protective MBR, GPT with partitions 1 (2048..4095) and 9
    /// (4096..last), backup at the end. `entries` is 128 x 128 bytes as everywhere.
    pub fn disk(sectors: u64, root_last: u64) -> Vec<u8> {
        let mut d = vec![0u8; (sectors * SECTOR) as usize];
        d[450] = 0xee;
        put32(&mut d, 454, 1);
        put32(&mut d, 458, (sectors - 1) as u32);
        d[510] = 0x55;
        d[511] = 0xaa;
        let mut entries = vec![0u8; 128 * 128];
        for (i, first, last, name) in [
            (0usize, 2048u64, 4095u64, "EFI"),
            (8, 4096, root_last, "ROOT"),
        ] {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0] = 1 + i as u8; // any non-zero type
            e[16] = 0x42;
            put64(e, 32, first);
            put64(e, 40, last);
            for (j, c) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
            }
        }
        let ecrc = crc32fast::hash(&entries);
        let backup = sectors - 1;
        let mk = |cur: u64, other: u64, at: u64| {
            let mut h = vec![0u8; 512];
            h[0..8].copy_from_slice(b"EFI PART");
            put32(&mut h, 8, 0x0001_0000);
            put32(&mut h, 12, 92);
            put64(&mut h, 24, cur);
            put64(&mut h, 32, other);
            put64(&mut h, 40, 34);
            put64(&mut h, 48, backup - 33);
            put64(&mut h, 72, at);
            put32(&mut h, 80, 128);
            put32(&mut h, 84, 128);
            put32(&mut h, 88, ecrc);
            let crc = crc32fast::hash(&h[..92]);
            put32(&mut h, 16, crc);
            h
        };
        let s = SECTOR as usize;
        d[s..2 * s].copy_from_slice(&mk(1, backup, 2));
        d[2 * s..2 * s + entries.len()].copy_from_slice(&entries);
        let be = (backup - 32) as usize * s;
        d[be..be + entries.len()].copy_from_slice(&entries);
        d[backup as usize * s..].copy_from_slice(&mk(backup, 1, backup - 32));
        d
    }

    fn plan_for(d: &[u8]) -> Result<Option<GrowPlan>, GrowError> {
        let s = SECTOR as usize;
        plan(
            &d[..s],
            &d[s..2 * s],
            &d[2 * s..34 * s],
            d.len() as u64 / SECTOR,
            9,
        )
    }

    fn apply(d: &mut [u8], p: &GrowPlan) {
        for (at, bytes) in &p.writes {
            let at = *at as usize;
            d[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }

    #[test]
    fn image_at_its_own_size_needs_nothing() {
        // 8 MiB disk: last usable = 16383 - 33 = 16350; ROOT aligned end = 14335.
        let d = disk(16384, 14335);
        assert_eq!(plan_for(&d), Ok(None));
    }

    #[test]
    fn grows_to_aligned_end_and_moves_backup() {
        let small = disk(16384, 14335);
        let mut big = small.clone();
        big.resize(32768 * SECTOR as usize, 0); // the VM's disk was made bigger
        let p = plan_for(&big).unwrap().unwrap();
        assert_eq!(
            (p.first_lba, p.old_last_lba, p.new_last_lba),
            (4096, 14335, 30719)
        );
        assert!(p.grows_partition());
        apply(&mut big, &p);
        // The result is a consistent GPT at the new size: planning again finds nothing to do,
        // and the backup header at the new end verifies.
        assert_eq!(plan_for(&big), Ok(None));
        let s = SECTOR as usize;
        let backup = &big[32767 * s..];
        assert_eq!(entries_location(backup).unwrap().0, 32767 - 32);
        assert_eq!(u64_at(backup, 24), 32767);
        assert_eq!(u32_at(&big, 458), 32767);
        // Old backup header sector wiped.
        assert!(big[16383 * s..16384 * s].iter().all(|&b| b == 0));
    }

    #[test]
    fn small_growth_moves_only_the_backup() {
        let mut d = disk(16384, 14335);
        d.resize(16384 * SECTOR as usize + 4096, 0); // 8 sectors more: less than 1 MiB
        let p = plan_for(&d).unwrap().unwrap();
        assert!(!p.grows_partition());
        apply(&mut d, &p);
        assert_eq!(plan_for(&d), Ok(None));
    }

    #[test]
    fn refuses_corruption_and_odd_layouts() {
        let mut d = disk(16384, 14335);
        d[SECTOR as usize + 40] ^= 1;
        assert_eq!(
            plan_for(&d),
            Err(GrowError::BadHeader("header checksum mismatch"))
        );
        let d = disk(16384, 14335);
        let s = SECTOR as usize;
        assert_eq!(
            plan(&d[..s], &d[s..2 * s], &d[2 * s..34 * s], 16384, 5),
            Err(GrowError::NoPartition(5))
        );
        assert!(matches!(
            plan(&d[..s], &d[s..2 * s], &d[2 * s..34 * s], 16384, 1),
            Err(GrowError::NotLast { other: 9, .. })
        ));
        assert!(matches!(
            plan(&d[..s], &d[s..2 * s], &d[2 * s..34 * s], 8000, 9),
            Err(GrowError::DiskTooSmall { .. })
        ));
    }
}
