//! Slot state: which USR partition boots, in one place.
//!
//! Two representations tell the same story and must never disagree:
//! - the loader entry file names on the ESP (Boot Loader Specification boot counting, which
//!   systemd-boot acts on: `crust-usr-b+1.conf` has one try left, `+0` is skipped), and
//! - the CoreOS `gptprio` attribute bits of the USR-A/USR-B GPT entries, which CoreOS tooling
//!   (`cgpt show`) reads.
//!
//! This module holds the names and bit layouts; the functions that change state on a disk build
//! on [`SlotState`] so both views are written together.

use std::fmt;
use thiserror::Error;

pub mod gpt;

/// One of the two USR slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    A,
    B,
}

/// GPT type GUID of USR partitions (CoreOS "usr" type).
pub const USR_TYPE_GUID: &str = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6";

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// Lowercase letter used in paths and entry names.
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// GPT partition label.
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "USR-A",
            Slot::B => "USR-B",
        }
    }

    /// GPT partition number.
    pub fn partition_number(self) -> u32 {
        match self {
            Slot::A => 3,
            Slot::B => 4,
        }
    }

    /// Fixed PARTUUID (the same on every crust disk, as on CoreOS).
    pub fn partuuid(self) -> &'static str {
        match self {
            Slot::A => "7130c94a-213a-4e5a-8e26-6cce9662f132",
            Slot::B => "e03dd35c-7c2d-4a47-b3fe-27f15780a57c",
        }
    }

    pub fn from_partuuid(uuid: &str) -> Option<Slot> {
        Slot::ALL
            .into_iter()
            .find(|s| s.partuuid().eq_ignore_ascii_case(uuid))
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Directory on the ESP holding this slot's kernel and initramfs.
    pub fn esp_dir(self) -> String {
        format!("crust/usr-{}", self.letter())
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// The CoreOS gptprio attribute bits of a GPT entry: priority (48-51), tries (52-55),
/// successful (56). Other attribute bits are preserved untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GptPrio(pub u64);

impl GptPrio {
    const PRIORITY_SHIFT: u32 = 48;
    const TRIES_SHIFT: u32 = 52;
    const SUCCESSFUL_BIT: u32 = 56;

    pub fn new(priority: u8, tries: u8, successful: bool) -> GptPrio {
        GptPrio(0)
            .with_priority(priority)
            .with_tries(tries)
            .with_successful(successful)
    }

    pub fn priority(self) -> u8 {
        ((self.0 >> Self::PRIORITY_SHIFT) & 0xf) as u8
    }
    pub fn tries(self) -> u8 {
        ((self.0 >> Self::TRIES_SHIFT) & 0xf) as u8
    }
    pub fn successful(self) -> bool {
        self.0 & (1 << Self::SUCCESSFUL_BIT) != 0
    }
    /// Values above 15 saturate at 15, the field's maximum.
    pub fn with_priority(self, p: u8) -> GptPrio {
        let v = u64::from(p.min(15));
        GptPrio(self.0 & !(0xf << Self::PRIORITY_SHIFT) | v << Self::PRIORITY_SHIFT)
    }
    pub fn with_tries(self, t: u8) -> GptPrio {
        let v = u64::from(t.min(15));
        GptPrio(self.0 & !(0xf << Self::TRIES_SHIFT) | v << Self::TRIES_SHIFT)
    }
    pub fn with_successful(self, s: bool) -> GptPrio {
        if s {
            GptPrio(self.0 | 1 << Self::SUCCESSFUL_BIT)
        } else {
            GptPrio(self.0 & !(1 << Self::SUCCESSFUL_BIT))
        }
    }
}

impl fmt::Display for GptPrio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "priority={} tries={} successful={}",
            self.priority(),
            self.tries(),
            u8::from(self.successful())
        )
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{name:?} is not a crust loader entry name (expected crust-usr-a.conf, crust-usr-b+3.conf or crust-usr-a+2-1.conf)")]
pub struct EntryNameError {
    pub name: String,
}

/// A loader entry file name with its Boot Loader Spec boot counter:
/// `crust-usr-a.conf` (blessed), `crust-usr-b+3.conf` (3 tries left),
/// `crust-usr-b+2-1.conf` (2 left, 1 done; systemd-boot renames on each attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    pub slot: Slot,
    /// `None` once blessed: no counter at all.
    pub counter: Option<BootCounter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootCounter {
    pub left: u32,
    pub done: u32,
}

/// Directory on the ESP holding the loader entries.
pub const ENTRIES_DIR: &str = "loader/entries";

impl EntryName {
    pub fn new(slot: Slot, tries_left: u32) -> EntryName {
        EntryName {
            slot,
            counter: Some(BootCounter {
                left: tries_left,
                done: 0,
            }),
        }
    }

    pub fn blessed(slot: Slot) -> EntryName {
        EntryName {
            slot,
            counter: None,
        }
    }

    /// The entry id systemd-boot reports in `LoaderEntrySelected`: the name without `.conf`
    /// and without the counter.
    pub fn id(&self) -> String {
        format!("crust-usr-{}", self.slot)
    }

    /// A slot whose counter reached `+0` is skipped by systemd-boot.
    pub fn bootable(&self) -> bool {
        self.counter.is_none_or(|c| c.left > 0)
    }

    pub fn parse(name: &str) -> Result<EntryName, EntryNameError> {
        let err = || EntryNameError {
            name: name.to_string(),
        };
        let stem = name.strip_suffix(".conf").ok_or_else(err)?;
        let rest = stem.strip_prefix("crust-usr-").ok_or_else(err)?;
        let (letter, counter) = match rest.split_once('+') {
            Some((l, c)) => (l, Some(c)),
            None => (rest, None),
        };
        let slot = match letter {
            "a" => Slot::A,
            "b" => Slot::B,
            _ => return Err(err()),
        };
        let counter = match counter {
            None => None,
            Some(c) => {
                let (left, done) = match c.split_once('-') {
                    Some((l, d)) => (l, Some(d)),
                    None => (c, None),
                };
                let num = |s: &str| {
                    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                        None
                    } else {
                        s.parse::<u32>().ok()
                    }
                };
                Some(BootCounter {
                    left: num(left).ok_or_else(err)?,
                    done: match done {
                        Some(d) => num(d).ok_or_else(err)?,
                        None => 0,
                    },
                })
            }
        };
        Ok(EntryName { slot, counter })
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id())?;
        match self.counter {
            None => {}
            Some(BootCounter { left, done: 0 }) => write!(f, "+{left}")?,
            Some(BootCounter { left, done }) => write!(f, "+{left}-{done}")?,
        }
        f.write_str(".conf")
    }
}

/// The state of one slot as both views see it. Converting to gptprio bits is the single rule
/// that keeps `cgpt show` in agreement with the loader entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotState {
    pub slot: Slot,
    /// Boot priority among slots; the active, newest slot has the highest. 0 means never boot.
    pub priority: u8,
    pub entry: EntryName,
}

impl SlotState {
    /// The gptprio bits this state implies, merged into the existing attribute bits.
    pub fn gptprio(&self, existing: u64) -> GptPrio {
        let (tries, successful) = match self.entry.counter {
            None => (0, true),
            Some(c) => (c.left.min(15) as u8, false),
        };
        GptPrio(existing)
            .with_priority(self.priority)
            .with_tries(tries)
            .with_successful(successful)
    }
}

/// The body of a slot's loader entry (Boot Loader Spec type 1). `cmdline` already carries the
/// slot's `mount.usr=` and `usrhash=`. Both slots' entries carry the same `sort-key` (the OS
/// name): systemd-boot then orders them by `version`, newest first, after putting entries with
/// no tries left last, which is how a freshly installed slot gets booted and a failed one is
/// passed over. Without a sort key it orders by file name only, so `crust-usr-b.conf` would
/// always win over a newer `crust-usr-a+1.conf`.
pub fn entry_body(name: &str, version: &str, slot: Slot, cmdline: &str) -> String {
    let dir = slot.esp_dir();
    format!("title {name} {version} (usr-{slot})\nsort-key {name}\nversion {version}\nlinux /{dir}/vmlinuz\ninitrd /{dir}/initrd\noptions {cmdline}\n")
}

/// The states of both slots after installing a release into `new` with `tries` boot attempts:
/// `new` gets priority 2 and a counted entry; `other` (with its current entry) stays bootable at
/// priority 1 as the fallback, never 0.
pub fn activation(new: Slot, tries: u32, other_entry: EntryName) -> [SlotState; 2] {
    [
        SlotState {
            slot: new,
            priority: 2,
            entry: EntryName::new(new, tries),
        },
        SlotState {
            slot: new.other(),
            priority: 1,
            entry: other_entry,
        },
    ]
}

/// The booted slot's state once its boot is judged healthy: blessed, highest priority.
pub fn blessing(slot: Slot) -> SlotState {
    SlotState {
        slot,
        priority: 2,
        entry: EntryName::blessed(slot),
    }
}

/// The loader entries of each slot found in an entries directory listing.
pub fn entries_of(files: &[String], slot: Slot) -> Vec<EntryName> {
    files
        .iter()
        .filter_map(|f| EntryName::parse(f).ok())
        .filter(|e| e.slot == slot)
        .collect()
}

/// The one function that changes slot state on a machine: names the slot's loader entry on the
/// ESP after `state` (writing `body` when given, else renaming the existing entry), removes the
/// slot's other entries, makes the ESP durable (syncfs: fsync of a vfat directory does not
/// write the FAT), then writes the gptprio bits of `state` and of `also` into the GPT and syncs
/// the disk. Returns the entry's new file name.
pub fn set_state(
    esp: &std::path::Path,
    disk: &mut std::fs::File,
    state: &SlotState,
    also: &[SlotState],
    body: Option<&str>,
) -> Result<String, gpt::GptError> {
    use std::io::Write;
    let dir = esp.join(ENTRIES_DIR);
    std::fs::create_dir_all(&dir)?;
    let files: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let name = state.entry.to_string();
    let existing = entries_of(&files, state.slot);
    match body {
        Some(text) => {
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(&name))?;
        }
        None => {
            let from = existing.first().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no loader entry for slot {} in {}",
                        state.slot,
                        dir.display()
                    ),
                )
            })?;
            std::fs::rename(dir.join(from.to_string()), dir.join(&name))?;
        }
    }
    for old in existing {
        let old = old.to_string();
        if old != name {
            match std::fs::remove_file(dir.join(&old)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    let d = std::fs::File::open(&dir)?;
    // SAFETY: syncfs only reads the descriptor, which `d` keeps open for the call.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut all = vec![*state];
    all.extend_from_slice(also);
    gpt::write_states(disk, &all)?;
    disk.sync_all()?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gptprio_fields_round_trip_and_keep_other_bits() {
        let other = 1u64 << 60 | 1; // a type-specific bit and "required partition"
        let p = GptPrio(other)
            .with_priority(2)
            .with_tries(15)
            .with_successful(true);
        assert_eq!((p.priority(), p.tries(), p.successful()), (2, 15, true));
        assert_eq!(p.0 & other, other);
        let q = p.with_priority(0).with_tries(0).with_successful(false);
        assert_eq!(q.0, other);
        assert_eq!(GptPrio::new(20, 1, false).priority(), 15);
        // CoreOS's documented example: priority 1, successful 1 on USR-A.
        assert_eq!(GptPrio::new(1, 0, true).0, 0x0101_0000_0000_0000);
    }

    #[test]
    fn entry_names_round_trip() {
        for (name, slot, counter) in [
            ("crust-usr-a.conf", Slot::A, None),
            ("crust-usr-b+3.conf", Slot::B, Some((3, 0))),
            ("crust-usr-a+2-1.conf", Slot::A, Some((2, 1))),
            ("crust-usr-b+0-3.conf", Slot::B, Some((0, 3))),
        ] {
            let e = EntryName::parse(name).unwrap();
            assert_eq!(e.slot, slot);
            assert_eq!(e.counter.map(|c| (c.left, c.done)), counter);
            assert_eq!(e.to_string(), name);
        }
        assert!(!EntryName::parse("crust-usr-b+0-3.conf").unwrap().bootable());
        assert!(EntryName::parse("crust-usr-a.conf").unwrap().bootable());
    }

    #[test]
    fn rejects_foreign_entry_names() {
        for bad in [
            "crust-usr-c.conf",
            "debian.conf",
            "crust-usr-a+.conf",
            "crust-usr-a+1-.conf",
            "crust-usr-a+x.conf",
            "crust-usr-a",
        ] {
            assert!(EntryName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_state_writes_entry_and_gptprio_together() {
        let t = tempfile::tempdir().unwrap();
        let esp = t.path().join("esp");
        let entries = esp.join(ENTRIES_DIR);
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(entries.join("crust-usr-a.conf"), "a").unwrap();
        std::fs::write(entries.join("crust-usr-b+0-1.conf"), "old b").unwrap();
        let disk_path = t.path().join("disk");
        std::fs::write(&disk_path, gpt::test_disk(8)).unwrap();
        let mut disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk_path)
            .unwrap();
        let [new, old] = activation(Slot::B, 1, EntryName::blessed(Slot::A));
        let body = entry_body("crust", "1.0.1", Slot::B, "console=ttyS0 usrhash=ab");
        let name = set_state(&esp, &mut disk, &new, &[old], Some(&body)).unwrap();
        assert_eq!(name, "crust-usr-b+1.conf");
        let mut names: Vec<String> = std::fs::read_dir(&entries)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["crust-usr-a.conf", "crust-usr-b+1.conf"]);
        assert!(std::fs::read_to_string(entries.join(&name))
            .unwrap()
            .contains("version 1.0.1\nlinux /crust/usr-b/vmlinuz"));
        let [a, b] = gpt::read_usr(&mut disk).unwrap();
        assert_eq!(a.prio, GptPrio::new(1, 0, true));
        assert_eq!(b.prio, GptPrio::new(2, 1, false));
        // systemd-boot tried it once; blessing renames it and marks it successful.
        std::fs::rename(entries.join(&name), entries.join("crust-usr-b+0-1.conf")).unwrap();
        let name = set_state(&esp, &mut disk, &blessing(Slot::B), &[], None).unwrap();
        assert_eq!(name, "crust-usr-b.conf");
        assert_eq!(std::fs::read_to_string(entries.join(&name)).unwrap(), body);
        let [_, b] = gpt::read_usr(&mut disk).unwrap();
        assert_eq!(b.prio, GptPrio::new(2, 0, true));
        // No entry to rename: an error, and the GPT is not touched.
        std::fs::remove_file(entries.join("crust-usr-a.conf")).unwrap();
        assert!(set_state(&esp, &mut disk, &blessing(Slot::A), &[], None).is_err());
        assert_eq!(
            gpt::read_usr(&mut disk).unwrap()[0].prio,
            GptPrio::new(1, 0, true)
        );
    }

    #[test]
    fn slot_state_maps_to_gptprio() {
        let fresh = SlotState {
            slot: Slot::B,
            priority: 2,
            entry: EntryName::new(Slot::B, 1),
        };
        assert_eq!(fresh.gptprio(0), GptPrio::new(2, 1, false));
        let good = SlotState {
            slot: Slot::A,
            priority: 1,
            entry: EntryName::blessed(Slot::A),
        };
        assert_eq!(good.gptprio(0), GptPrio::new(1, 0, true));
        assert_eq!(
            Slot::from_partuuid(&Slot::B.partuuid().to_uppercase()),
            Some(Slot::B)
        );
    }
}
