//! The FAT partitions of an image: the ESP (FAT32, label `EFI-SYSTEM`) and the OEM partition,
//! from a [`Tree`]. Formatting, reproducibility and reading back live in `crust-fat`, which the
//! config drives of QEMU nodes share.
//!
//! The ESP must really be FAT32 (UEFI asks for it; FAT16 ESPs trip some firmware): that needs at
//! least 65525 clusters, so the cluster size is the largest of 4096..512 bytes that still gives
//! that many (1024 bytes for the default 128 MiB ESP; at least ~33 MiB is needed at 512 bytes).

use crate::tree::{Node, Tree, TreeError};
pub use crust_fat::{fat32_cluster_size, list_dir, read_file, volume_id, FatError};
use std::io::{Read, Seek, Write};
use thiserror::Error;

/// Label of the EFI system partition (the same as the GPT partition name).
pub const ESP_LABEL: &str = "EFI-SYSTEM";
/// `crc32("EFI-SYSTEM")`, the ESP's FAT volume id (serial number), as [`volume_id`] computes.
pub const ESP_VOLUME_ID: u32 = 0x265e_282b;

#[derive(Debug, Error)]
pub enum EspError {
    #[error("FAT: {size} bytes is too small for FAT32 (at least {} clusters of 512 bytes, about 33 MiB); raise partitions.esp-mib", crust_fat::FAT32_MIN_CLUSTERS)]
    TooSmallForFat32 { size: u64 },
    #[error("FAT: {0:?} is a symlink; FAT has none, put only files and directories on the ESP and OEM partitions")]
    Symlink(String),
    #[error("FAT: {0}")]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Fat(#[from] FatError),
}

/// Formats `dev` (exactly `size` bytes, positioned at its start) as the ESP: FAT32 labelled
/// `EFI-SYSTEM`, and copies `tree` into it.
pub fn write<F: Read + Write + Seek>(dev: F, size: u64, tree: &Tree) -> Result<(), EspError> {
    if fat32_cluster_size(size).is_none() {
        return Err(EspError::TooSmallForFat32 { size });
    }
    write_fat(dev, size, tree, ESP_LABEL)
}

/// Formats `dev` as FAT labelled `label` (FAT32 when `size` allows it) and copies `tree`
/// (directories and files only, in the tree's sorted order) into it.
pub fn write_fat<F: Read + Write + Seek>(
    dev: F,
    size: u64,
    tree: &Tree,
    label: &str,
) -> Result<(), EspError> {
    let mut entries = Vec::with_capacity(tree.len());
    for (path, node) in tree.iter() {
        let name = path.to_string_lossy().into_owned();
        match node {
            Node::Dir { .. } => entries.push(crust_fat::Entry::Dir(name)),
            Node::File { source, .. } => {
                let data = source.read()?.into_owned();
                entries.push(crust_fat::Entry::File(name, data));
            }
            Node::Symlink { .. } => return Err(EspError::Symlink(name)),
        }
    }
    Ok(crust_fat::format(dev, size, label, &entries)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Source;
    use std::io::Cursor;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn volume_id_constant_matches_label() {
        assert_eq!(volume_id(ESP_LABEL), ESP_VOLUME_ID);
    }

    #[test]
    fn esp_is_fat32_labelled_and_reads_back() {
        let mut t = Tree::new();
        t.file(
            "loader/loader.conf",
            0o644,
            Source::Bytes(b"timeout 0\n".to_vec()),
        )
        .unwrap();
        t.dir("crust/usr-b", 0o755).unwrap();
        let mut c = Cursor::new(vec![0u8; (64 * MIB) as usize]);
        write(&mut c, 64 * MIB, &t).unwrap();
        assert_eq!(
            read_file(&mut c, "loader/loader.conf").unwrap(),
            b"timeout 0\n"
        );
        assert_eq!(list_dir(&mut c, "/").unwrap(), ["crust", "loader"]);
        c.rewind().unwrap();
        let fs = fatfs::FileSystem::new(&mut c, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        assert_eq!(fs.volume_label(), ESP_LABEL);
        assert_eq!(fs.volume_id(), ESP_VOLUME_ID);
    }

    #[test]
    fn refuses_small_esp_and_symlinks() {
        let mut c = Cursor::new(vec![0u8; (16 * MIB) as usize]);
        assert!(matches!(
            write(&mut c, 16 * MIB, &Tree::new()),
            Err(EspError::TooSmallForFat32 { .. })
        ));
        let mut t = Tree::new();
        t.symlink("x", "y").unwrap();
        assert!(matches!(
            write_fat(&mut c, 16 * MIB, &t, "OEM"),
            Err(EspError::Symlink(_))
        ));
    }
}
