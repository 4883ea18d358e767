//! Blessing the boot: once every enabled unit is active, the loader entry that booted loses its
//! boot counter (`crust-usr-a+2-1.conf` -> `crust-usr-a.conf`), so systemd-boot keeps choosing it.

use crust_common::slot::{EntryName, Slot};

/// `LoaderEntrySelected-<systemd-boot vendor guid>` in efivarfs.
pub const LOADER_ENTRY_SELECTED: &str = "LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// An efivarfs file: 4 bytes of attributes, then the value; systemd-boot stores strings as
/// NUL-terminated UTF-16LE.
pub fn decode_efi_string(raw: &[u8]) -> Option<String> {
    let body = raw.get(4..)?;
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok().filter(|s| !s.is_empty())
}

/// The slot a `LoaderEntrySelected` value names. systemd-boot reports the entry id, which may or
/// may not still carry the counter and `.conf` depending on its version; accept all forms.
pub fn slot_of_entry_id(id: &str) -> Option<Slot> {
    let name = if id.ends_with(".conf") {
        id.to_string()
    } else {
        format!("{id}.conf")
    };
    EntryName::parse(&name).ok().map(|e| e.slot)
}

/// Which slot booted: the firmware's word first, the kernel command line second.
pub fn booted_slot(selected: Option<&str>, cmdline: Option<Slot>) -> Option<Slot> {
    selected.and_then(slot_of_entry_id).or(cmdline)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bless {
    Rename { from: String, to: String },
    AlreadyBlessed(String),
    NoEntry(Slot),
}

/// Decides what to do with the entry files in `loader/entries` for the booted slot.
pub fn plan(slot: Slot, entry_files: &[String]) -> Bless {
    let mine: Vec<EntryName> = entry_files
        .iter()
        .filter_map(|f| EntryName::parse(f).ok())
        .filter(|e| e.slot == slot)
        .collect();
    let blessed = EntryName::blessed(slot);
    if mine.iter().any(|e| e.counter.is_none()) {
        return Bless::AlreadyBlessed(blessed.to_string());
    }
    match mine.first() {
        Some(counted) => Bless::Rename {
            from: counted.to_string(),
            to: blessed.to_string(),
        },
        None => Bless::NoEntry(slot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn efi(s: &str) -> Vec<u8> {
        let mut v = vec![6, 0, 0, 0];
        for u in s.encode_utf16().chain([0]) {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v
    }

    #[test]
    fn decodes_loader_entry_selected() {
        assert_eq!(
            decode_efi_string(&efi("crust-usr-a+2-1.conf")).as_deref(),
            Some("crust-usr-a+2-1.conf")
        );
        assert_eq!(decode_efi_string(&[6, 0, 0]), None);
        assert_eq!(decode_efi_string(&efi("")), None);
    }

    #[test]
    fn finds_the_booted_slot() {
        for id in [
            "crust-usr-b",
            "crust-usr-b+2-1",
            "crust-usr-b+2-1.conf",
            "crust-usr-b.conf",
        ] {
            assert_eq!(booted_slot(Some(id), Some(Slot::A)), Some(Slot::B), "{id}");
        }
        assert_eq!(booted_slot(Some("debian"), Some(Slot::A)), Some(Slot::A));
        assert_eq!(booted_slot(None, Some(Slot::A)), Some(Slot::A));
        assert_eq!(booted_slot(None, None), None);
    }

    #[test]
    fn blesses_only_the_booted_counted_entry() {
        let files: Vec<String> = ["crust-usr-a+2-1.conf", "crust-usr-b+3.conf", "notes.txt"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            plan(Slot::A, &files),
            Bless::Rename {
                from: "crust-usr-a+2-1.conf".into(),
                to: "crust-usr-a.conf".into()
            }
        );
        let files = vec![
            "crust-usr-a.conf".to_string(),
            "crust-usr-b+3.conf".to_string(),
        ];
        assert_eq!(
            plan(Slot::A, &files),
            Bless::AlreadyBlessed("crust-usr-a.conf".into())
        );
        assert_eq!(plan(Slot::B, &[]), Bless::NoEntry(Slot::B));
    }
}
