//! `crust inspect IMAGE`: reads a built image back and tells what is in it — partitions, each USR
//! slot's state as both the gptprio bits and the ESP's loader entries see it, the version and
//! verity root hash the entries name, and whether that slot's hash tree is there and matches.
//!
//! Everything is read through a read-only handle; the image is never modified.

use crate::disk::{self, PartInfo, ReadOnly, Region, DISK_GUID};
use crate::esp;
use crate::verity;
use crust_common::cmdline;
use crust_common::slot::{EntryName, GptPrio, Slot, ENTRIES_DIR};
use crust_common::verity::{usr_hash_offset, Superblock, BLOCK_SIZE};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InspectError {
    #[error("not a crust image: {path:?}: {why}")]
    NotCrust { path: PathBuf, why: String },
    #[error("cannot read {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One loader entry found on the ESP for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryReport {
    pub file: String,
    pub name: EntryName,
    pub version: Option<String>,
    /// `usrhash=` from the `options` line.
    pub usrhash: Option<String>,
    /// `mount.usr=` from the `options` line.
    pub mount_usr: Option<String>,
}

/// What sits in a USR partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsrContent {
    /// No squashfs at its start: a slot never written (USR-B before the first update).
    Empty,
    /// A squashfs, but no verity superblock where it should follow.
    NoVerity { hash_offset: u64, why: String },
    Verity {
        hash_offset: u64,
        superblock: Superblock,
        /// The root hash recomputed from the partition's data.
        root_hash: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReport {
    pub slot: Slot,
    pub gptprio: GptPrio,
    pub entries: Vec<EntryReport>,
    pub usr: UsrContent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub image: PathBuf,
    pub size_bytes: u64,
    pub disk_guid: String,
    pub partitions: Vec<PartInfo>,
    pub slots: Vec<SlotReport>,
    /// Loader entries on the ESP that are not crust's (listed, not interpreted).
    pub other_entries: Vec<String>,
}

pub fn inspect(image: &Path) -> Result<Report, InspectError> {
    let not_crust = |why: String| InspectError::NotCrust {
        path: image.to_path_buf(),
        why,
    };
    let io = |source| InspectError::Io {
        path: image.to_path_buf(),
        source,
    };
    // A missing or unreadable file is not "not a crust image": say what is wrong with it.
    std::fs::File::open(image).map_err(io)?;
    let partitions = disk::read_gpt(image).map_err(|e| not_crust(e.to_string()))?;
    let disk_guid = disk::read_disk_guid(image).map_err(|e| not_crust(e.to_string()))?;
    check_labels(&partitions).map_err(not_crust)?;
    let mut file = File::open(image).map_err(io)?;
    let size_bytes = file.metadata().map_err(io)?.len();
    let part = |n: u32| partitions.iter().find(|p| p.number == n);

    let (mut entries, other_entries) = match part(disk::ESP_NUMBER) {
        Some(p) => read_entries(&mut file, p).map_err(|e| not_crust(format!("EFI-SYSTEM: {e}")))?,
        None => (Vec::new(), Vec::new()),
    };
    let mut slots = Vec::new();
    for slot in Slot::ALL {
        let Some(p) = part(slot.partition_number()) else {
            continue;
        };
        let mine: Vec<EntryReport> = entries
            .iter()
            .filter(|e| e.name.slot == slot)
            .cloned()
            .collect();
        entries.retain(|e| e.name.slot != slot);
        slots.push(SlotReport {
            slot,
            gptprio: GptPrio(p.attributes),
            entries: mine,
            usr: read_usr(&mut file, p).map_err(io)?,
        });
    }
    Ok(Report {
        image: image.to_path_buf(),
        size_bytes,
        disk_guid,
        partitions,
        slots,
        other_entries,
    })
}

/// Refuses images whose partitions are not crust's: the labels and USR PARTUUIDs must match.
fn check_labels(parts: &[PartInfo]) -> Result<(), String> {
    let expect = [
        (disk::ESP_NUMBER, "EFI-SYSTEM"),
        (Slot::A.partition_number(), Slot::A.label()),
        (Slot::B.partition_number(), Slot::B.label()),
        (disk::OEM_NUMBER, "OEM"),
        (disk::ROOT_NUMBER, "ROOT"),
    ];
    for (number, label) in expect {
        match parts.iter().find(|p| p.number == number) {
            None => return Err(format!("no partition {number} ({label})")),
            Some(p) if p.label != label => {
                return Err(format!(
                    "partition {number} is labelled {:?}, expected {label:?}",
                    p.label
                ))
            }
            Some(_) => {}
        }
    }
    for slot in Slot::ALL {
        let p = parts.iter().find(|p| p.number == slot.partition_number());
        if let Some(p) = p {
            if !p.partuuid.eq_ignore_ascii_case(slot.partuuid()) {
                return Err(format!(
                    "{} has PARTUUID {}, expected {}",
                    slot.label(),
                    p.partuuid,
                    slot.partuuid()
                ));
            }
        }
    }
    Ok(())
}

type Entries = (Vec<EntryReport>, Vec<String>);

fn read_entries(file: &mut File, esp_part: &PartInfo) -> Result<Entries, esp::EspError> {
    let mut region = Region::new(
        ReadOnly(&mut *file),
        esp_part.first_lba * disk::SECTOR,
        esp_part.size_bytes,
    );
    let names = match esp::list_dir(&mut region, ENTRIES_DIR) {
        Ok(n) => n,
        Err(esp::FatError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut crust = Vec::new();
    let mut other = Vec::new();
    for file_name in names {
        let Ok(name) = EntryName::parse(&file_name) else {
            other.push(file_name);
            continue;
        };
        let text = esp::read_file(&mut region, &format!("{ENTRIES_DIR}/{file_name}"))?;
        let text = String::from_utf8_lossy(&text);
        let mut report = EntryReport {
            file: file_name,
            name,
            version: None,
            usrhash: None,
            mount_usr: None,
        };
        for line in text.lines() {
            let (key, value) = line
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((line.trim(), ""));
            match key {
                "version" => report.version = Some(value.trim().to_string()),
                "options" => {
                    report.usrhash = cmdline::value(value, cmdline::USRHASH).map(str::to_string);
                    report.mount_usr =
                        cmdline::value(value, cmdline::MOUNT_USR).map(str::to_string);
                }
                _ => {}
            }
        }
        crust.push(report);
    }
    Ok((crust, other))
}

fn read_usr(file: &mut File, p: &PartInfo) -> std::io::Result<UsrContent> {
    let base = p.first_lba * disk::SECTOR;
    let mut first = vec![0u8; BLOCK_SIZE as usize];
    file.seek(SeekFrom::Start(base))?;
    file.read_exact(&mut first)?;
    let hash_offset = match usr_hash_offset(&first) {
        Ok(o) => o,
        Err(_) => return Ok(UsrContent::Empty),
    };
    if hash_offset + BLOCK_SIZE > p.size_bytes {
        return Ok(UsrContent::NoVerity {
            hash_offset,
            why: format!(
                "the squashfs claims {hash_offset} bytes, past the {}-byte partition",
                p.size_bytes
            ),
        });
    }
    let mut sb = vec![0u8; crust_common::verity::SUPERBLOCK_SIZE];
    file.seek(SeekFrom::Start(base + hash_offset))?;
    file.read_exact(&mut sb)?;
    let superblock = match Superblock::parse(&sb) {
        Ok(s) => s,
        Err(e) => {
            return Ok(UsrContent::NoVerity {
                hash_offset,
                why: e.to_string(),
            })
        }
    };
    if superblock.data_blocks * BLOCK_SIZE != hash_offset {
        return Ok(UsrContent::NoVerity {
            hash_offset,
            why: format!(
                "superblock covers {} data blocks, but the squashfs ends at block {}",
                superblock.data_blocks,
                hash_offset / BLOCK_SIZE
            ),
        });
    }
    file.seek(SeekFrom::Start(base))?;
    let mut data = std::io::BufReader::with_capacity(1 << 20, &mut *file);
    let root = verity::root_hash_of(&mut data, superblock.data_blocks, &superblock.salt)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(UsrContent::Verity {
        hash_offset,
        superblock,
        root_hash: crust_common::verity::to_hex(&root),
    })
}

impl UsrContent {
    /// Whether the slot's partition holds a squashfs with its verity tree.
    pub fn has_verity(&self) -> bool {
        matches!(self, UsrContent::Verity { .. })
    }
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{:.1} MiB", bytes as f64 / 1048576.0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "image {}", self.image.display())?;
        let guid_note = if self.disk_guid == DISK_GUID {
            ""
        } else {
            " (not crust's fixed GUID)"
        };
        writeln!(
            f,
            "  size {}, disk GUID {}{guid_note}",
            mib(self.size_bytes),
            self.disk_guid
        )?;
        writeln!(f, "partitions")?;
        for p in &self.partitions {
            writeln!(
                f,
                "  {:>2}  {:<11} {:>9}  {}",
                p.number,
                p.label,
                mib(p.size_bytes),
                p.partuuid
            )?;
        }
        for s in &self.slots {
            writeln!(
                f,
                "slot {} ({}, partition {})",
                s.slot,
                s.slot.label(),
                s.slot.partition_number()
            )?;
            writeln!(f, "  gptprio       {}", s.gptprio)?;
            if s.entries.is_empty() {
                writeln!(f, "  loader entry  none")?;
            }
            for e in &s.entries {
                let counter = match e.name.counter {
                    None => "blessed".to_string(),
                    Some(c) if c.left == 0 => {
                        format!("0 tries left, {} done: skipped by the boot loader", c.done)
                    }
                    Some(c) => format!("{} tries left, {} done", c.left, c.done),
                };
                writeln!(f, "  loader entry  {} ({counter})", e.file)?;
                writeln!(
                    f,
                    "  version       {}",
                    e.version.as_deref().unwrap_or("(none)")
                )?;
                writeln!(
                    f,
                    "  usrhash       {}",
                    e.usrhash.as_deref().unwrap_or("(none)")
                )?;
                let expected = format!("PARTUUID={}", s.slot.partuuid());
                match &e.mount_usr {
                    Some(m) if m.eq_ignore_ascii_case(&expected) => {}
                    Some(m) => writeln!(f, "  mount.usr     {m} (expected {expected})")?,
                    None => writeln!(f, "  mount.usr     (none; expected {expected})")?,
                }
            }
            match &s.usr {
                UsrContent::Empty => writeln!(f, "  verity        none (no squashfs: empty slot)")?,
                UsrContent::NoVerity { hash_offset, why } => {
                    writeln!(f, "  verity        MISSING at offset {hash_offset}: {why}")?
                }
                UsrContent::Verity {
                    hash_offset,
                    superblock,
                    root_hash,
                } => {
                    writeln!(
                        f,
                        "  verity        superblock at offset {hash_offset}, {} data blocks",
                        superblock.data_blocks
                    )?;
                    let verdict = match s.entries.iter().find_map(|e| e.usrhash.as_deref()) {
                        Some(h) if h.eq_ignore_ascii_case(root_hash) => "matches the loader entry",
                        Some(_) => {
                            "DOES NOT MATCH the loader entry's usrhash: this slot will not boot"
                        }
                        None => "no loader entry names it",
                    };
                    writeln!(f, "  root hash     {root_hash} ({verdict})")?;
                }
            }
        }
        if !self.other_entries.is_empty() {
            writeln!(f, "other loader entries")?;
            for e in &self.other_entries {
                writeln!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{layout, write_gpt, Layout};
    use crate::manifest::Partitions;
    use crate::tree::{Source, Tree};
    use std::io::Write;

    fn small() -> Layout {
        layout(&Partitions {
            esp_mib: 64,
            bios_boot_mib: 1,
            usr_mib: 16,
            oem_mib: 1,
            root_mib: 16,
        })
    }

    fn entry(hash: &str) -> String {
        format!(
            "title crust 1.0.0 (usr-a)\nversion 1.0.0\nlinux /crust/usr-a/vmlinuz\ninitrd /crust/usr-a/initrd\n\
             options console=ttyS0,115200n8 mount.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 usrhash={hash}\n"
        )
    }

    /// A small but complete image: GPT, ESP with slot A's entry, USR-A squashfs + verity.
    fn build(dir: &Path, l: &Layout, corrupt_after_hash: bool) -> (PathBuf, String) {
        let path = dir.join("crust.img");
        let mut img = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        img.set_len(l.total_bytes).unwrap();
        write_gpt(&mut img, l, &[(Slot::A, GptPrio::new(1, 0, true))]).unwrap();

        let mut usr = Tree::new();
        usr.file(
            "usr/lib/os-release",
            0o644,
            Source::Bytes(b"ID=crust\n".to_vec()),
        )
        .unwrap();
        usr.file("usr/bin/x", 0o755, Source::Bytes(vec![9; 50_000]))
            .unwrap();
        let a = l.part(3);
        let mut region = Region::new(&mut img, a.offset(), a.size_bytes);
        let n = crate::squashfs::write(&usr, &mut region, 1).unwrap();
        let info = verity::append_hash_tree(&mut region, n, b"salt", [1; 16]).unwrap();
        let hash = hex::encode(info.root_hash);
        if corrupt_after_hash {
            region.seek(SeekFrom::Start(100)).unwrap();
            region.write_all(b"!").unwrap();
        }

        let mut t = Tree::new();
        t.file(
            "loader/loader.conf",
            0o644,
            Source::Bytes(b"timeout 0\n".to_vec()),
        )
        .unwrap();
        t.file(
            "loader/entries/crust-usr-a+3.conf",
            0o644,
            Source::Bytes(entry(&hash).into_bytes()),
        )
        .unwrap();
        t.file(
            "loader/entries/debian.conf",
            0o644,
            Source::Bytes(b"title x\n".to_vec()),
        )
        .unwrap();
        let e = l.part(1);
        esp::write(
            Region::new(&mut img, e.offset(), e.size_bytes),
            e.size_bytes,
            &t,
        )
        .unwrap();
        (path, hash)
    }

    #[test]
    fn reports_partitions_slots_and_verity() {
        let dir = tempfile::tempdir().unwrap();
        let (path, hash) = build(dir.path(), &small(), false);
        let r = inspect(&path).unwrap();
        assert_eq!(r.disk_guid, DISK_GUID);
        assert_eq!(r.partitions.len(), 6);
        let a = &r.slots[0];
        assert_eq!((a.slot, a.gptprio), (Slot::A, GptPrio::new(1, 0, true)));
        assert_eq!(a.entries.len(), 1);
        assert_eq!(a.entries[0].version.as_deref(), Some("1.0.0"));
        assert_eq!(a.entries[0].usrhash.as_deref(), Some(hash.as_str()));
        assert_eq!(a.entries[0].name, EntryName::new(Slot::A, 3));
        match &a.usr {
            UsrContent::Verity { root_hash, .. } => assert_eq!(root_hash, &hash),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.slots[1].usr, UsrContent::Empty);
        assert!(r.slots[1].entries.is_empty());
        assert_eq!(r.other_entries, ["debian.conf"]);

        let text = r.to_string();
        for want in [
            "   1  EFI-SYSTEM     64 MiB  3a5f8c1e-9b2d-4e07-8c61-0d4f2a7b1e01",
            "   9  ROOT           16 MiB",
            "slot a (USR-A, partition 3)",
            "gptprio       priority=1 tries=0 successful=1",
            "loader entry  crust-usr-a+3.conf (3 tries left, 0 done)",
            "version       1.0.0",
            &format!("root hash     {hash} (matches the loader entry)"),
            "slot b (USR-B, partition 4)",
            "verity        none (no squashfs: empty slot)",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        // Stable: the same image gives the same text.
        assert_eq!(text, inspect(&path).unwrap().to_string());
    }

    #[test]
    fn a_changed_byte_shows_as_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = build(dir.path(), &small(), true);
        let text = inspect(&path).unwrap().to_string();
        assert!(text.contains("DOES NOT MATCH"), "{text}");
    }

    #[test]
    fn refuses_foreign_disks() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("zeros.img");
        File::create(&plain).unwrap().set_len(4 << 20).unwrap();
        let e = inspect(&plain).unwrap_err().to_string();
        assert!(e.starts_with("not a crust image"), "{e}");

        let mut l = small();
        l.parts[2].label = "data";
        let path = dir.path().join("other.img");
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(l.total_bytes).unwrap();
        write_gpt(&mut f, &l, &[(Slot::A, GptPrio::new(1, 0, true))]).unwrap();
        let e = inspect(&path).unwrap_err().to_string();
        assert!(
            e.contains("not a crust image") && e.contains("partition 3 is labelled \"data\""),
            "{e}"
        );
    }
}
