//! Reproducible FAT volumes: the ESP and OEM partitions of an image (builder) and the `config-2`
//! drives that carry cloud-config to QEMU nodes (qemu), written and read in one place.
//!
//! fatfs is used with its default features off, so it has no clock; it would then stamp every
//! entry with date 0 (month 0, day 0), which is not a valid date: OVMF's FAT driver refuses to
//! rename such a file (EFI_INVALID_PARAMETER), and renaming is how systemd-boot counts boot
//! attempts. [`DosEpoch`] stamps every entry 1980-01-01 00:00 instead, still fixed. The volume id
//! is the CRC32 of the label, and entries are written in the order given, so the same input gives
//! the same bytes.
//!
//! A volume is FAT32 when it is large enough (at least 65525 clusters; the cluster size is the
//! largest of 4096..512 bytes that still gives that many), otherwise the FAT12/16 fatfs picks.
//!
//! Two things fatfs 0.3.6 leaves wrong are corrected after writing, so `fsck.fat -n` finds
//! nothing: long-name entries in front of `.`/`..` (see `fix_dot_entries`) and the FSInfo
//! free-cluster summary left "unknown".

use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider,
};
use std::io::{Read, Seek, SeekFrom, Write};
use thiserror::Error;

/// Stamps every entry with the DOS epoch, 1980-01-01 00:00:00: fixed (reproducible) and valid.
#[derive(Debug)]
pub struct DosEpoch;

static DOS_EPOCH: DosEpoch = DosEpoch;

impl TimeProvider for DosEpoch {
    fn get_current_date(&self) -> Date {
        Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> DateTime {
        DateTime {
            date: self.get_current_date(),
            time: Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

/// FAT32 needs more clusters than this; fewer makes it FAT16 by definition.
pub const FAT32_MIN_CLUSTERS: u64 = 65525;
const SECTOR: u64 = 512;
const FAT32_RESERVED_SECTORS: u64 = 32;

#[derive(Debug, Error)]
pub enum FatError {
    #[error("FAT: label {0:?} must be 1 to 11 ASCII letters, digits, '-' or '_'")]
    BadLabel(String),
    #[error("FAT: {what} failed: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("FAT: formatted as {got:?} instead of FAT32; the cluster size choice is wrong for {size} bytes")]
    NotFat32 { got: FatType, size: u64 },
    #[error("FAT: {0:?} not found")]
    NotFound(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FatError {
    let what = what.into();
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            FatError::NotFound(what)
        } else {
            FatError::Io { what, source }
        }
    }
}

/// The fixed volume id of a FAT volume labelled `label`.
pub fn volume_id(label: &str) -> u32 {
    crc32fast::hash(label.as_bytes())
}

/// Clusters a FAT32 volume of `size` bytes gets with `cluster` bytes per cluster: what is left
/// after the reserved sectors and two FATs of 4 bytes per cluster (rounded up to sectors).
pub fn fat32_clusters(size: u64, cluster: u64) -> u64 {
    let sectors = size / SECTOR;
    let per_cluster = cluster / SECTOR;
    let avail = sectors.saturating_sub(FAT32_RESERVED_SECTORS);
    // Solve for the FAT size the way mkfs does: an upper bound of clusters sizes the FATs.
    let fat_sectors = ((avail / per_cluster + 2) * 4).div_ceil(SECTOR);
    avail.saturating_sub(2 * fat_sectors) / per_cluster
}

/// The largest cluster size (4096 down to 512 bytes) that keeps a `size`-byte volume FAT32,
/// with a small margin so formatter rounding cannot push it under the limit.
pub fn fat32_cluster_size(size: u64) -> Option<u32> {
    [4096u32, 2048, 1024, 512]
        .into_iter()
        .find(|&c| fat32_clusters(size, u64::from(c)) >= FAT32_MIN_CLUSTERS + 16)
}

fn label_bytes(label: &str) -> Result<[u8; 11], FatError> {
    let ok = !label.is_empty()
        && label.len() <= 11
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(FatError::BadLabel(label.to_string()));
    }
    let mut out = [b' '; 11];
    // Case is kept: a config drive must be labelled `config-2` exactly.
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(out)
}

/// One thing to put on a volume; paths are relative to the root, `/`-separated, and a path's
/// parent directories must come before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir(String),
    File(String, Vec<u8>),
}

/// Formats `dev` (exactly `size` bytes) as FAT labelled `label` (case kept) — FAT32 when `size`
/// allows it, otherwise the FAT12/16 that fatfs picks — and writes `entries` in order.
pub fn format<F: Read + Write + Seek>(
    mut dev: F,
    size: u64,
    label: &str,
    entries: &[Entry],
) -> Result<(), FatError> {
    let sectors = u32::try_from(size / SECTOR).map_err(|_| FatError::Io {
        what: format!("formatting {size} bytes"),
        source: std::io::Error::other("over 2 TiB"),
    })?;
    let mut opts = FormatVolumeOptions::new()
        .bytes_per_sector(SECTOR as u16)
        .total_sectors(sectors)
        .volume_label(label_bytes(label)?)
        .volume_id(volume_id(label));
    let cluster = fat32_cluster_size(size);
    if let Some(c) = cluster {
        opts = opts.fat_type(FatType::Fat32).bytes_per_cluster(c);
    }
    dev.rewind().map_err(io("seeking to the volume start"))?;
    fatfs::format_volume(&mut dev, opts).map_err(io(format!("formatting {label}")))?;
    dev.rewind().map_err(io("seeking to the volume start"))?;

    let fs = FileSystem::new(&mut dev, FsOptions::new().time_provider(&DOS_EPOCH))
        .map_err(io(format!("opening {label}")))?;
    if cluster.is_some() && fs.fat_type() != FatType::Fat32 {
        return Err(FatError::NotFat32 {
            got: fs.fat_type(),
            size,
        });
    }
    {
        let root = fs.root_dir();
        for entry in entries {
            match entry {
                Entry::Dir(name) => {
                    root.create_dir(name)
                        .map_err(io(format!("creating directory {name}")))?;
                }
                Entry::File(name, data) => {
                    let mut f = root
                        .create_file(name)
                        .map_err(io(format!("creating {name}")))?;
                    f.truncate().map_err(io(format!("truncating {name}")))?;
                    f.write_all(data)
                        .map_err(io(format!("writing {name} ({} bytes)", data.len())))?;
                    f.flush().map_err(io(format!("writing {name}")))?;
                }
            }
        }
    }
    // Counting free clusters fills in the FSInfo summary that format left "unknown"; fsck.fat
    // flags an uninitialised one.
    fs.stats()
        .map_err(io(format!("counting free clusters of {label}")))?;
    fs.unmount().map_err(io(format!("closing {label}")))?;
    fix_dot_entries(&mut dev).map_err(io(format!("fixing directory entries of {label}")))?;
    Ok(())
}

/// fatfs 0.3.6 puts a long-name entry in front of the `.` and `..` entries of every directory
/// it creates, and points `..` of top-level directories at the FAT32 root cluster instead of 0.
/// The FAT spec wants `.` and `..` as the first two plain entries (fsck.fat "repairs" them by
/// renaming and deleting, and firmware drivers may stumble), so rewrite them in place: `.`,
/// `..`, then two deleted slots where the long names were.
fn fix_dot_entries<F: Read + Write + Seek>(dev: &mut F) -> std::io::Result<()> {
    let g = Geometry::read(dev)?;
    let mut stack = vec![(g.root, true)];
    while let Some((loc, is_root)) = stack.pop() {
        let bytes = g.read_dir(dev, loc)?;
        for e in bytes.chunks_exact(DIR_ENTRY) {
            let attr = e[11];
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xe5 || attr == ATTR_LFN || attr & ATTR_VOLUME != 0 || attr & ATTR_DIR == 0 {
                continue;
            }
            if &e[..11] == DOT || &e[..11] == DOTDOT {
                continue;
            }
            let first = u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
                | u32::from(u16::from_le_bytes([e[26], e[27]]));
            g.fix_first_entries(dev, first, is_root)?;
            stack.push((DirLoc::Chain(first), false));
        }
    }
    Ok(())
}

const DIR_ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0f;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

#[derive(Debug, Clone, Copy)]
enum DirLoc {
    /// FAT12/16 root directory: a fixed region.
    Fixed {
        offset: u64,
        len: u64,
    },
    Chain(u32),
}

/// Just enough of a FAT volume's layout to walk its directories.
struct Geometry {
    cluster: u64,
    fat_offset: u64,
    data_offset: u64,
    bits: u8,
    clusters: u32,
    root: DirLoc,
}

impl Geometry {
    fn read<F: Read + Seek>(dev: &mut F) -> std::io::Result<Geometry> {
        let mut b = [0u8; 512];
        dev.seek(SeekFrom::Start(0))?;
        dev.read_exact(&mut b)?;
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let u32_at = |o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
        let bps = u16_at(11);
        let spc = u64::from(b[13]);
        let reserved = u16_at(14);
        let fats = u64::from(b[16]);
        let root_entries = u16_at(17);
        let total = if u16_at(19) != 0 {
            u16_at(19)
        } else {
            u32_at(32)
        };
        let fat_size = if u16_at(22) != 0 {
            u16_at(22)
        } else {
            u32_at(36)
        };
        if bps == 0 || spc == 0 {
            return Err(std::io::Error::other("boot sector has no geometry"));
        }
        let root_sectors = (root_entries * DIR_ENTRY as u64).div_ceil(bps);
        let root_offset = (reserved + fats * fat_size) * bps;
        let first_data = reserved + fats * fat_size + root_sectors;
        let clusters = total.saturating_sub(first_data) / spc;
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        let root = if bits == 32 {
            DirLoc::Chain(u32_at(44) as u32)
        } else {
            DirLoc::Fixed {
                offset: root_offset,
                len: root_sectors * bps,
            }
        };
        Ok(Geometry {
            cluster: bps * spc,
            fat_offset: reserved * bps,
            data_offset: first_data * bps,
            bits,
            clusters: clusters as u32,
            root,
        })
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c.saturating_sub(2)) * self.cluster
    }

    fn next<F: Read + Seek>(&self, dev: &mut F, c: u32) -> std::io::Result<Option<u32>> {
        let c64 = u64::from(c);
        let (off, len) = match self.bits {
            12 => (c64 + c64 / 2, 2),
            16 => (c64 * 2, 2),
            _ => (c64 * 4, 4),
        };
        let mut b = [0u8; 4];
        dev.seek(SeekFrom::Start(self.fat_offset + off))?;
        dev.read_exact(&mut b[..len])?;
        let v = u32::from_le_bytes(b);
        let (v, end) = match self.bits {
            12 => (if c % 2 == 1 { v >> 4 } else { v & 0xfff }, 0xff8),
            16 => (v, 0xfff8),
            _ => (v & 0x0fff_ffff, 0x0fff_fff8),
        };
        Ok((2..end).contains(&v).then_some(v))
    }

    fn read_dir<F: Read + Seek>(&self, dev: &mut F, loc: DirLoc) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut read = |dev: &mut F, offset: u64, len: u64| -> std::io::Result<()> {
            let mut buf = vec![0u8; len as usize];
            dev.seek(SeekFrom::Start(offset))?;
            dev.read_exact(&mut buf)?;
            out.extend_from_slice(&buf);
            Ok(())
        };
        match loc {
            DirLoc::Fixed { offset, len } => read(dev, offset, len)?,
            DirLoc::Chain(first) => {
                let mut c = Some(first);
                let mut guard = 0;
                while let Some(cl) = c {
                    read(dev, self.cluster_offset(cl), self.cluster)?;
                    guard += 1;
                    if guard > self.clusters {
                        return Err(std::io::Error::other("directory cluster chain loops"));
                    }
                    c = self.next(dev, cl)?;
                }
            }
        }
        Ok(out)
    }

    /// Rewrites `LFN . LFN ..` at the start of a directory to `. .. <deleted> <deleted>`.
    fn fix_first_entries<F: Read + Write + Seek>(
        &self,
        dev: &mut F,
        first: u32,
        parent_is_root: bool,
    ) -> std::io::Result<()> {
        let off = self.cluster_offset(first);
        let mut b = [0u8; 4 * DIR_ENTRY];
        dev.seek(SeekFrom::Start(off))?;
        dev.read_exact(&mut b)?;
        let slot = |i: usize| &b[i * DIR_ENTRY..(i + 1) * DIR_ENTRY];
        let fatfs_layout = slot(0)[11] == ATTR_LFN
            && &slot(1)[..11] == DOT
            && slot(2)[11] == ATTR_LFN
            && &slot(3)[..11] == DOTDOT;
        if !fatfs_layout {
            return Ok(());
        }
        let mut out = [0u8; 4 * DIR_ENTRY];
        out[..DIR_ENTRY].copy_from_slice(slot(1));
        out[DIR_ENTRY..2 * DIR_ENTRY].copy_from_slice(slot(3));
        if parent_is_root {
            // ".." of a top-level directory names the root as cluster 0, whatever FAT type.
            for i in [
                DIR_ENTRY + 20,
                DIR_ENTRY + 21,
                DIR_ENTRY + 26,
                DIR_ENTRY + 27,
            ] {
                out[i] = 0;
            }
        }
        out[2 * DIR_ENTRY] = 0xe5;
        out[3 * DIR_ENTRY] = 0xe5;
        dev.seek(SeekFrom::Start(off))?;
        dev.write_all(&out)
    }
}

/// Reads one file (path relative to the volume root, `/`-separated).
pub fn read_file<F: Read + Write + Seek>(mut dev: F, path: &str) -> Result<Vec<u8>, FatError> {
    dev.rewind().map_err(io("seeking to the volume start"))?;
    let fs = FileSystem::new(dev, FsOptions::new()).map_err(io("opening the FAT volume"))?;
    let mut data = Vec::new();
    fs.root_dir()
        .open_file(path.trim_start_matches('/'))
        .map_err(io(path))?
        .read_to_end(&mut data)
        .map_err(io(format!("reading {path}")))?;
    Ok(data)
}

/// Names in a directory (without `.` and `..`), sorted.
pub fn list_dir<F: Read + Write + Seek>(mut dev: F, path: &str) -> Result<Vec<String>, FatError> {
    dev.rewind().map_err(io("seeking to the volume start"))?;
    let fs = FileSystem::new(dev, FsOptions::new()).map_err(io("opening the FAT volume"))?;
    let root = fs.root_dir();
    let rel = path.trim_matches('/');
    let dir = if rel.is_empty() {
        root
    } else {
        root.open_dir(rel).map_err(io(path))?
    };
    let mut names = Vec::new();
    for e in dir.iter() {
        let name = e.map_err(io(format!("listing {path}")))?.file_name();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const MIB: u64 = 1024 * 1024;

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry::File(path.into(), data.to_vec())
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry::Dir("EFI".into()),
            Entry::Dir("EFI/BOOT".into()),
            file("EFI/BOOT/BOOTX64.EFI", &[0x4d; 300_000]),
            Entry::Dir("loader".into()),
            file("loader/loader.conf", b"timeout 0\n"),
            Entry::Dir("loader/entries".into()),
            file("loader/entries/crust-usr-a+3.conf", b"title crust\n"),
            Entry::Dir("crust".into()),
            Entry::Dir("crust/usr-a".into()),
            file(
                "crust/usr-a/vmlinuz",
                &(0..2_000_000u32).map(|i| i as u8).collect::<Vec<_>>(),
            ),
            Entry::Dir("crust/usr-b".into()),
        ]
    }

    fn image(size: u64, label: &str, entries: &[Entry]) -> Vec<u8> {
        let mut c = Cursor::new(vec![0u8; size as usize]);
        format(&mut c, size, label, entries).unwrap();
        c.into_inner()
    }

    #[test]
    fn cluster_size_keeps_fat32() {
        assert_eq!(fat32_cluster_size(128 * MIB), Some(1024));
        assert_eq!(fat32_cluster_size(64 * MIB), Some(512));
        assert_eq!(fat32_cluster_size(512 * MIB), Some(4096));
        assert_eq!(fat32_cluster_size(32 * MIB), None);
        for mib in [34, 64, 100, 128, 200, 256, 300, 1024] {
            let c = fat32_cluster_size(mib * MIB).unwrap();
            assert!(
                fat32_clusters(mib * MIB, u64::from(c)) > FAT32_MIN_CLUSTERS,
                "{mib}"
            );
        }
    }

    #[test]
    fn large_volume_is_fat32_reproducible_and_reads_back() {
        let a = image(128 * MIB, "EFI-SYSTEM", &entries());
        let b = image(128 * MIB, "EFI-SYSTEM", &entries());
        assert!(a == b, "two writes differ");
        let fs = FileSystem::new(Cursor::new(a.clone()), FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), FatType::Fat32);
        assert_eq!(fs.volume_label(), "EFI-SYSTEM");
        assert_eq!(fs.volume_id(), volume_id("EFI-SYSTEM"));
        drop(fs);
        let mut c = Cursor::new(a);
        assert_eq!(
            read_file(&mut c, "/loader/loader.conf").unwrap(),
            b"timeout 0\n"
        );
        assert_eq!(
            read_file(&mut c, "crust/usr-a/vmlinuz").unwrap().len(),
            2_000_000
        );
        assert_eq!(
            list_dir(&mut c, "loader/entries").unwrap(),
            ["crust-usr-a+3.conf"]
        );
        assert_eq!(list_dir(&mut c, "/").unwrap(), ["EFI", "crust", "loader"]);
        assert!(list_dir(&mut c, "crust/usr-b").unwrap().is_empty());
        assert!(matches!(
            read_file(&mut c, "nope"),
            Err(FatError::NotFound(_))
        ));
    }

    /// Firmware refuses to rename an entry whose dates are invalid, which breaks systemd-boot's
    /// boot counting; every entry must carry a real date.
    #[test]
    fn every_entry_has_a_valid_date() {
        let a = image(128 * MIB, "EFI-SYSTEM", &entries());
        let fs = FileSystem::new(Cursor::new(a), FsOptions::new()).unwrap();
        let mut dirs = vec![fs.root_dir()];
        let mut seen = 0;
        while let Some(d) = dirs.pop() {
            for e in d.iter() {
                let e = e.unwrap();
                let name = e.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                for date in [e.created().date, e.accessed(), e.modified().date] {
                    assert!(
                        (1..=12).contains(&date.month) && (1..=31).contains(&date.day),
                        "{name}: {date:?}"
                    );
                }
                seen += 1;
                if e.is_dir() {
                    dirs.push(e.to_dir());
                }
            }
        }
        assert!(seen >= 8, "{seen}");
    }

    #[test]
    fn refuses_bad_labels() {
        let mut c = Cursor::new(vec![0u8; (2 * MIB) as usize]);
        for label in ["TOO-LONG-LABEL", "", "a b", "é"] {
            assert!(matches!(
                format(&mut c, 2 * MIB, label, &[]),
                Err(FatError::BadLabel(_))
            ));
        }
    }

    #[test]
    fn small_volume_is_plain_fat() {
        let mut c = Cursor::new(vec![0u8; (2 * MIB) as usize]);
        format(&mut c, 2 * MIB, "OEM", &[file("oem-release", b"ID=qemu\n")]).unwrap();
        assert_eq!(read_file(&mut c, "oem-release").unwrap(), b"ID=qemu\n");
        c.rewind().unwrap();
        let fs = FileSystem::new(&mut c, FsOptions::new()).unwrap();
        assert_ne!(fs.fat_type(), FatType::Fat32);
        assert_eq!(fs.volume_label(), "OEM");
    }

    /// Runs `fsck.fat -n -v` on `img`; None (with the reason printed) without dosfstools.
    fn fsck(img: &[u8]) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fat.img");
        std::fs::write(&path, img).unwrap();
        let out = match std::process::Command::new("fsck.fat")
            .arg("-n")
            .arg("-v")
            .arg(&path)
            .output()
        {
            Ok(o) => o,
            Err(_) => {
                eprintln!("skipping: fsck.fat is not installed (apt-get install dosfstools)");
                return None;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        // With -n, anything fsck would repair is printed between the geometry and the summary.
        let body: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("sectors total"))
            .skip(1)
            .filter(|l| !l.starts_with("Checking"))
            .collect();
        assert_eq!(body.len(), 1, "fsck.fat found problems:\n{text}");
        Some(text)
    }

    /// dosfstools agrees it is a clean FAT32 volume.
    #[test]
    fn fsck_fat_accepts_fat32() {
        if let Some(text) = fsck(&image(128 * MIB, "EFI-SYSTEM", &entries())) {
            assert!(text.contains("32 bit entries"), "{text}");
        }
    }

    #[test]
    fn fsck_fat_accepts_a_config_drive() {
        let img = image(
            2 * MIB,
            "config-2",
            &[
                Entry::Dir("openstack".into()),
                Entry::Dir("openstack/latest".into()),
                file("openstack/latest/user_data", b"#cloud-config\n"),
                file("oem-release", b"ID=qemu\n"),
            ],
        );
        let mut c = Cursor::new(img);
        assert_eq!(
            FileSystem::new(&mut c, FsOptions::new())
                .unwrap()
                .volume_label(),
            "config-2"
        );
        assert_eq!(
            read_file(&mut c, "openstack/latest/user_data").unwrap(),
            b"#cloud-config\n"
        );
        fsck(&c.into_inner());
    }
}
