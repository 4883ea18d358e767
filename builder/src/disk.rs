//! The disk image: partition layout (pure), the GPT, and a byte window per partition.
//!
//! Layout, CoreOS numbering, in this order on disk, each 1 MiB aligned, ROOT last so stage 1 can
//! grow it to the end of a larger disk:
//!
//! | # | label | PARTUUID |
//! |---|---|---|
//! | 1 | EFI-SYSTEM | 3a5f8c1e-9b2d-4e07-8c61-0d4f2a7b1e01 |
//! | 2 | BIOS-BOOT | 3a5f8c1e-9b2d-4e07-8c61-0d4f2a7b1e02 |
//! | 3 | USR-A | 7130c94a-213a-4e5a-8e26-6cce9662f132 (CoreOS's) |
//! | 4 | USR-B | e03dd35c-7c2d-4a47-b3fe-27f15780a57c (CoreOS's) |
//! | 6 | OEM | 3a5f8c1e-9b2d-4e07-8c61-0d4f2a7b1e06 |
//! | 9 | ROOT | 3a5f8c1e-9b2d-4e07-8c61-0d4f2a7b1e09 |
//!
//! crust's own PARTUUIDs share one prefix and end in the partition number, so they are easy to
//! recognise; like the disk GUID (`00000000-0000-0000-0000-000000000001`, as CoreOS images
//! use), they are the same on every image, which keeps images byte-for-byte reproducible.
//!
//! The GPT is written here rather than with the gpt crate: gpt 4.1 packs used entries at the
//! front of the entry array, which would renumber OEM and ROOT to 5 and 6. The gpt crate
//! reads it back (and checks both headers' CRCs) in [`read_gpt`] and the tests.

use crate::manifest::Partitions;
use crust_common::slot::{GptPrio, Slot, SlotState, USR_TYPE_GUID};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;
/// Partition entries in each table (the UEFI minimum, what every tool writes).
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors the entry array takes: 128 * 128 / 512.
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

pub const DISK_GUID: &str = "00000000-0000-0000-0000-000000000001";

pub const ESP_TYPE_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
pub const BIOS_BOOT_TYPE_GUID: &str = "21686148-6449-6e6f-744e-656564454649";
pub const LINUX_DATA_TYPE_GUID: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
/// CoreOS "resizable root" type: stage 1 grows ROOT to the end of the disk.
pub const ROOT_TYPE_GUID: &str = "3884dd41-8582-4404-b9a8-e9b84f2df50e";

pub const ESP_PARTUUID: &str = "3a5f8c1e-9b2d-4e07-8c61-0d4f2a7b1e01";
pub const BIOS_BOOT_PARTUUID: &str = "3a5f8c1e-9b2d-4e07-8c61-0d4f2a7b1e02";
pub const OEM_PARTUUID: &str = "3a5f8c1e-9b2d-4e07-8c61-0d4f2a7b1e06";
pub const ROOT_PARTUUID: &str = "3a5f8c1e-9b2d-4e07-8c61-0d4f2a7b1e09";

pub const ESP_NUMBER: u32 = 1;
pub const BIOS_BOOT_NUMBER: u32 = 2;
pub const OEM_NUMBER: u32 = 6;
pub const ROOT_NUMBER: u32 = 9;

#[derive(Debug, Error)]
pub enum DiskError {
    #[error("disk image {path:?}: cannot {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("disk image is {got} bytes but the layout needs {need}; size the file with set_len(layout.total_bytes) first")]
    WrongSize { got: u64, need: u64 },
    #[error("{path:?} has no valid GPT (both headers and their CRCs must check out): {source}")]
    Gpt {
        path: PathBuf,
        #[source]
        source: gpt::GptError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    pub number: u32,
    pub label: &'static str,
    pub type_guid: &'static str,
    pub partuuid: &'static str,
    pub first_lba: u64,
    pub size_bytes: u64,
}

impl PartSpec {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn last_lba(&self) -> u64 {
        self.first_lba + self.size_bytes / SECTOR - 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub parts: Vec<PartSpec>,
    pub total_bytes: u64,
}

/// The partitions for `p`, starting at 1 MiB, back to back, with 1 MiB left at the end for the
/// backup GPT (33 sectors) so the image stays a whole number of MiB.
pub fn layout(p: &Partitions) -> Layout {
    let specs: [(u32, &'static str, &'static str, &'static str, u64); 6] = [
        (
            ESP_NUMBER,
            "EFI-SYSTEM",
            ESP_TYPE_GUID,
            ESP_PARTUUID,
            p.esp_mib,
        ),
        (
            BIOS_BOOT_NUMBER,
            "BIOS-BOOT",
            BIOS_BOOT_TYPE_GUID,
            BIOS_BOOT_PARTUUID,
            p.bios_boot_mib,
        ),
        (
            3,
            Slot::A.label(),
            USR_TYPE_GUID,
            Slot::A.partuuid(),
            p.usr_mib,
        ),
        (
            4,
            Slot::B.label(),
            USR_TYPE_GUID,
            Slot::B.partuuid(),
            p.usr_mib,
        ),
        (
            OEM_NUMBER,
            "OEM",
            LINUX_DATA_TYPE_GUID,
            OEM_PARTUUID,
            p.oem_mib,
        ),
        (
            ROOT_NUMBER,
            "ROOT",
            ROOT_TYPE_GUID,
            ROOT_PARTUUID,
            p.root_mib,
        ),
    ];
    let mut at = MIB;
    let mut parts = Vec::new();
    for (number, label, type_guid, partuuid, mib) in specs {
        parts.push(PartSpec {
            number,
            label,
            type_guid,
            partuuid,
            first_lba: at / SECTOR,
            size_bytes: mib * MIB,
        });
        at += mib * MIB;
    }
    Layout {
        parts,
        total_bytes: at + MIB,
    }
}

impl Layout {
    /// The partition numbered `number`. Panics on a number the layout does not have: numbers
    /// are the constants above, never outside input.
    pub fn part(&self, number: u32) -> &PartSpec {
        self.parts
            .iter()
            .find(|p| p.number == number)
            .unwrap_or_else(|| panic!("crust layouts have no partition {number}"))
    }

    pub fn total_sectors(&self) -> u64 {
        self.total_bytes / SECTOR
    }
}

/// Anything that says which gptprio bits a USR slot gets: a [`SlotState`] (derived from its
/// loader entry) or an explicit `(Slot, GptPrio)`, as a factory image sets them.
pub trait SlotAttributes {
    fn slot(&self) -> Slot;
    fn gptprio(&self) -> GptPrio;
}

impl SlotAttributes for SlotState {
    fn slot(&self) -> Slot {
        self.slot
    }
    fn gptprio(&self) -> GptPrio {
        SlotState::gptprio(self, 0)
    }
}

impl SlotAttributes for (Slot, GptPrio) {
    fn slot(&self) -> Slot {
        self.0
    }
    fn gptprio(&self) -> GptPrio {
        self.1
    }
}

fn guid_le(s: &str) -> [u8; 16] {
    // The constants above are valid; a typo would show in every test.
    uuid::Uuid::parse_str(s)
        .map(|u| u.to_bytes_le())
        .unwrap_or_else(|e| panic!("bad GUID constant {s}: {e}"))
}

fn entry_bytes(p: &PartSpec, attributes: u64) -> [u8; ENTRY_SIZE as usize] {
    let mut e = [0u8; ENTRY_SIZE as usize];
    e[0..16].copy_from_slice(&guid_le(p.type_guid));
    e[16..32].copy_from_slice(&guid_le(p.partuuid));
    e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
    e[40..48].copy_from_slice(&p.last_lba().to_le_bytes());
    e[48..56].copy_from_slice(&attributes.to_le_bytes());
    for (i, unit) in p.label.encode_utf16().take(36).enumerate() {
        e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    e
}

fn header_bytes(layout: &Layout, primary: bool, entries_crc: u32) -> [u8; SECTOR as usize] {
    let last = layout.total_sectors() - 1;
    let (my_lba, alt_lba, entries_lba) = if primary {
        (1, last, 2)
    } else {
        (last, 1, last - ENTRY_SECTORS)
    };
    let mut h = [0u8; SECTOR as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
    h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes());
    h[48..56].copy_from_slice(&(last - ENTRY_SECTORS - 1).to_le_bytes());
    h[56..72].copy_from_slice(&guid_le(DISK_GUID));
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The GPT as bytes: what goes at offset 0 (protective MBR, primary header, entries) and what
/// goes in the last 33 sectors (entries, backup header). `attributes(n)` gives partition n's
/// attribute bits.
pub fn gpt_bytes(layout: &Layout, attributes: impl Fn(u32) -> u64) -> (Vec<u8>, Vec<u8>) {
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for p in &layout.parts {
        let at = (p.number as usize - 1) * ENTRY_SIZE as usize;
        entries[at..at + ENTRY_SIZE as usize]
            .copy_from_slice(&entry_bytes(p, attributes(p.number)));
    }
    let crc = crc32fast::hash(&entries);
    let mbr_size = u32::try_from(layout.total_sectors() - 1).unwrap_or(u32::MAX);
    let mut head = gpt::mbr::ProtectiveMBR::with_lb_size(mbr_size)
        .to_bytes()
        .to_vec();
    head.extend_from_slice(&header_bytes(layout, true, crc));
    head.extend_from_slice(&entries);
    let mut tail = entries;
    tail.extend_from_slice(&header_bytes(layout, false, crc));
    (head, tail)
}

/// Writes the protective MBR and the primary and backup GPT for `layout` into `file`, which must
/// already be `layout.total_bytes` long. USR-A/USR-B get the gptprio bits `slots` give; a slot
/// not listed gets none (priority 0: never booted).
pub fn write_gpt<S: SlotAttributes>(
    file: &mut File,
    layout: &Layout,
    slots: &[S],
) -> Result<(), DiskError> {
    let io = |what| {
        move |source| DiskError::Io {
            path: PathBuf::from("<image>"),
            what,
            source,
        }
    };
    let len = file.metadata().map_err(io("stat"))?.len();
    if len != layout.total_bytes {
        return Err(DiskError::WrongSize {
            got: len,
            need: layout.total_bytes,
        });
    }
    let attributes = |number: u32| {
        slots
            .iter()
            .find(|s| s.slot().partition_number() == number)
            .map(|s| s.gptprio().0)
            .unwrap_or(0)
    };
    let (head, tail) = gpt_bytes(layout, attributes);
    file.seek(SeekFrom::Start(0)).map_err(io("seek in"))?;
    file.write_all(&head)
        .map_err(io("write the primary GPT to"))?;
    file.seek(SeekFrom::Start(layout.total_bytes - tail.len() as u64))
        .map_err(io("seek in"))?;
    file.write_all(&tail)
        .map_err(io("write the backup GPT to"))?;
    Ok(())
}

/// One partition as read back from a GPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub label: String,
    /// Lowercase, hyphenated.
    pub type_guid: String,
    pub partuuid: String,
    pub first_lba: u64,
    pub size_bytes: u64,
    pub attributes: u64,
}

/// Opens an image's GPT read-only with the gpt crate, insisting that both headers are valid.
fn open_gpt(path: &Path) -> Result<gpt::GptDisk<std::fs::File>, DiskError> {
    gpt::GptConfig::new()
        .writable(false)
        .only_valid_headers(true)
        .open(path)
        .map_err(|source| DiskError::Gpt {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads the partitions back.
pub fn read_gpt(path: &Path) -> Result<Vec<PartInfo>, DiskError> {
    Ok(open_gpt(path)?
        .partitions()
        .iter()
        .map(|(&number, p)| PartInfo {
            number,
            label: p.name.clone(),
            type_guid: p.part_type_guid.guid.to_string(),
            partuuid: p.part_guid.to_string(),
            first_lba: p.first_lba,
            size_bytes: (p.last_lba + 1).saturating_sub(p.first_lba) * SECTOR,
            attributes: p.flags,
        })
        .collect())
}

/// The disk GUID of an image, from its (valid) GPT.
pub fn read_disk_guid(path: &Path) -> Result<String, DiskError> {
    Ok(open_gpt(path)?.guid().to_string())
}

/// A `Read + Write + Seek` window `[offset, offset + len)` over `inner`: a partition of an image.
/// Reads stop at the end; writes past it fail, so a filesystem writer cannot spill into the
/// next partition.
#[derive(Debug)]
pub struct Region<F> {
    inner: F,
    offset: u64,
    len: u64,
    pos: u64,
}

impl<F> Region<F> {
    pub fn new(inner: F, offset: u64, len: u64) -> Region<F> {
        Region {
            inner,
            offset,
            len,
            pos: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn into_inner(self) -> F {
        self.inner
    }
}

impl<F: Read + Seek> Read for Region<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.offset + self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<F: Write + Seek> Write for Region<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.len.saturating_sub(self.pos);
        if left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("write past the end of a {}-byte partition", self.len),
            ));
        }
        let n = (buf.len() as u64).min(left) as usize;
        self.inner.seek(SeekFrom::Start(self.offset + self.pos))?;
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<F> Seek for Region<F> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of a partition",
            )),
        }
    }
}

/// Makes a read-only handle usable where a `Read + Write + Seek` is required (fatfs opens
/// volumes that way even to read them): every write fails.
#[derive(Debug)]
pub struct ReadOnly<F>(pub F);

impl<F: Read> Read for ReadOnly<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<F> Write for ReadOnly<F> {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "opened read-only",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<F: Seek> Seek for ReadOnly<F> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_common::slot::EntryName;

    fn parts() -> Partitions {
        Partitions {
            esp_mib: 128,
            bios_boot_mib: 2,
            usr_mib: 1024,
            oem_mib: 128,
            root_mib: 64,
        }
    }

    #[test]
    fn layout_is_aligned_ordered_and_root_last() {
        let l = layout(&parts());
        let numbers: Vec<u32> = l.parts.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 6, 9]);
        assert_eq!(l.part(1).first_lba, 2048);
        assert_eq!(l.part(2).first_lba, 2048 + 128 * 2048);
        assert_eq!(l.part(3).first_lba, 2048 * (1 + 128 + 2));
        assert_eq!(l.part(4).first_lba, l.part(3).first_lba + 1024 * 2048);
        for w in l.parts.windows(2) {
            assert_eq!(
                w[0].last_lba() + 1,
                w[1].first_lba,
                "{} -> {}",
                w[0].label,
                w[1].label
            );
        }
        for p in &l.parts {
            assert_eq!(p.offset() % MIB, 0, "{}", p.label);
        }
        assert_eq!(l.total_bytes, (1 + 128 + 2 + 1024 * 2 + 128 + 64 + 1) * MIB);
        let root = l.part(9);
        assert_eq!(root.label, "ROOT");
        // ROOT ends before the backup GPT's 33 sectors.
        assert!(root.last_lba() < l.total_sectors() - 33);
        assert_eq!(l.part(3).partuuid, Slot::A.partuuid());
    }

    fn slots() -> [SlotState; 2] {
        [
            SlotState {
                slot: Slot::A,
                priority: 1,
                entry: EntryName::new(Slot::A, 3),
            },
            SlotState {
                slot: Slot::B,
                priority: 0,
                entry: EntryName::new(Slot::B, 0),
            },
        ]
    }

    fn image(dir: &Path) -> (PathBuf, Layout) {
        let l = layout(&parts());
        let path = dir.join("disk.img");
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(l.total_bytes).unwrap();
        write_gpt(&mut f, &l, &slots()).unwrap();
        (path, l)
    }

    #[test]
    fn gpt_reads_back_with_the_gpt_crate_and_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let (path, l) = image(dir.path());
        let got = read_gpt(&path).unwrap();
        assert_eq!(got.len(), 6);
        for (g, want) in got.iter().zip(&l.parts) {
            assert_eq!(g.number, want.number);
            assert_eq!(g.label, want.label);
            assert_eq!(g.type_guid, want.type_guid);
            assert_eq!(g.partuuid, want.partuuid);
            assert_eq!(
                (g.first_lba, g.size_bytes),
                (want.first_lba, want.size_bytes)
            );
        }
        let usr_a = GptPrio(got[2].attributes);
        assert_eq!(
            (usr_a.priority(), usr_a.tries(), usr_a.successful()),
            (1, 3, false)
        );
        assert_eq!(got[3].attributes, 0);
        assert_eq!(read_disk_guid(&path).unwrap(), DISK_GUID);

        let (head, tail) = gpt_bytes(&l, |_| 0);
        let (head2, tail2) = gpt_bytes(&l, |_| 0);
        assert!(head == head2 && tail == tail2);
        // The backup header sits in the last sector and points back at the primary.
        let mut f = File::open(&path).unwrap();
        let mut img = [0u8; 512];
        f.read_exact(&mut img).unwrap();
        let mut last = [0u8; 512];
        f.seek(SeekFrom::End(-512)).unwrap();
        f.read_exact(&mut last).unwrap();
        assert_eq!(&last[..8], b"EFI PART");
        assert_eq!(
            u64::from_le_bytes(last[24..32].try_into().unwrap()),
            l.total_sectors() - 1
        );
        assert_eq!(u64::from_le_bytes(last[32..40].try_into().unwrap()), 1);
        assert_eq!(&img[510..512], &[0x55, 0xaa]);
        assert_eq!(img[450], 0xee);
    }

    #[test]
    fn explicit_gptprio_pairs_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&parts());
        let path = dir.path().join("d.img");
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(l.total_bytes).unwrap();
        write_gpt(
            &mut f,
            &l,
            &[
                (Slot::A, GptPrio::new(1, 0, true)),
                (Slot::B, GptPrio::new(0, 0, false)),
            ],
        )
        .unwrap();
        assert_eq!(
            read_gpt(&path).unwrap()[2].attributes,
            GptPrio::new(1, 0, true).0
        );
        f.set_len(l.total_bytes + 512).unwrap();
        assert!(matches!(
            write_gpt(&mut f, &l, &slots()),
            Err(DiskError::WrongSize { .. })
        ));
    }

    fn run(cmd: &str, args: &[&str]) -> Option<String> {
        match std::process::Command::new(cmd).args(args).output() {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                assert!(
                    o.status.success(),
                    "{cmd} {args:?}: {text}{}",
                    String::from_utf8_lossy(&o.stderr)
                );
                Some(text)
            }
            Err(_) => {
                eprintln!("skipping: {cmd} is not installed (apt-get install fdisk gdisk)");
                None
            }
        }
    }

    #[test]
    fn sfdisk_and_sgdisk_agree() {
        let dir = tempfile::tempdir().unwrap();
        let (path, l) = image(dir.path());
        let p = path.to_str().unwrap();
        if let Some(json) = run("sfdisk", &["--json", p]) {
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            let t = &v["partitiontable"];
            assert_eq!(t["label"], "gpt");
            assert_eq!(t["id"].as_str().unwrap().to_lowercase(), DISK_GUID);
            let parts = t["partitions"].as_array().unwrap();
            assert_eq!(parts.len(), 6);
            for (j, want) in parts.iter().zip(&l.parts) {
                assert!(
                    j["node"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!("img{}", want.number)),
                    "{j}"
                );
                assert_eq!(j["start"].as_u64(), Some(want.first_lba));
                assert_eq!(j["size"].as_u64(), Some(want.size_bytes / 512));
                assert_eq!(j["uuid"].as_str().unwrap().to_lowercase(), want.partuuid);
                assert_eq!(j["type"].as_str().unwrap().to_lowercase(), want.type_guid);
                assert_eq!(j["name"], want.label);
            }
        }
        if let Some(out) = run("sgdisk", &["-v", p]) {
            assert!(out.contains("No problems found"), "{out}");
        }
        if let Some(out) = run("sgdisk", &["-A", "3:show", p]) {
            // priority 1 (bit 48), tries 3 (bits 52, 53).
            for bit in ["48", "52", "53"] {
                assert!(
                    out.lines()
                        .any(|l| l.trim().starts_with(&format!("3:{bit}:"))),
                    "{out}"
                );
            }
            assert!(!out.contains("3:56:"), "{out}");
        }
    }

    #[test]
    fn region_confines_io() {
        let mut c = std::io::Cursor::new(vec![0u8; 100]);
        {
            let mut r = Region::new(&mut c, 10, 20);
            r.write_all(&[1; 20]).unwrap();
            assert!(r.write_all(&[2]).is_err());
            r.seek(SeekFrom::Start(15)).unwrap();
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).unwrap();
            assert_eq!(buf, vec![1; 5]);
            assert_eq!(r.seek(SeekFrom::End(-20)).unwrap(), 0);
            assert!(r.seek(SeekFrom::Current(-1)).is_err());
        }
        let v = c.into_inner();
        assert_eq!(&v[..10], &[0; 10]);
        assert_eq!(&v[10..30], &[1; 20]);
        assert_eq!(&v[30..], &[0; 70][..]);
    }
}
