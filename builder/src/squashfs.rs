//! The USR filesystem: a [`Tree`] written as squashfs with backhand.
//!
//! Reproducibility comes from the inputs: the tree is sorted and carries its own modes, every
//! inode is owned by root and stamped with the one `mtime` given (the root directory's inode is
//! stamped 0, as backhand offers no setter for it), compression is single-threaded zstd, and no
//! padding is added so the returned length is exactly the superblock's `bytes_used`, where the
//! verity tree starts (rounded up to 4096, see `crust_common::verity::usr_hash_offset`). A
//! block device holding the image must cover `bytes_used`: a loop device drops a trailing
//! partial sector, so an unpadded file does not mount; the verity padding takes care of that.
//!
//! zstd because the Debian cloud kernel has `CONFIG_SQUASHFS_ZSTD=y` (checked in
//! `boot/config-6.1.0-*-cloud-amd64`), and it decompresses faster than xz on a booting machine.
//! Directory entries come out sorted by name bytes, which the kernel's lookup requires: backhand
//! keeps its nodes ordered by path components; `entries_are_sorted_for_the_kernel` checks it.

use crate::tree::{Node, Source, Tree, TreeError};
use backhand::compression::{CompressionOptions, Compressor, Zstd};
use backhand::{BackhandError, FilesystemCompressor, FilesystemWriter, NodeHeader};
use std::io::{Cursor, Seek, Write};
use thiserror::Error;

/// 128 KiB, squashfs-tools' default and the kernel's sweet spot for readahead.
pub const BLOCK_SIZE: u32 = 128 * 1024;
/// zstd level. Measured on the kernel's 91 MB of modules: 9 takes 1.8 s for 21.05 MB, 12 takes
/// 5.7 s for 21.19 MB, 15 (mksquashfs's default) 12.8 s for 20.0 MB; the build budget is 20 s.
pub const ZSTD_LEVEL: u32 = 9;

#[derive(Debug, Error)]
pub enum SquashfsError {
    #[error("squashfs: cannot add {path:?}: {source}")]
    Add {
        path: String,
        #[source]
        source: BackhandError,
    },
    #[error("squashfs: writing the image failed: {0}")]
    Write(#[source] BackhandError),
    #[error("squashfs: {0}")]
    Tree(#[from] TreeError),
    #[error("squashfs: cannot find the output position: {0}")]
    Io(#[from] std::io::Error),
    #[error("squashfs: backhand wrote {written} bytes but the superblock says {used}; refusing an image whose verity offset would be wrong")]
    Length { written: u64, used: u64 },
}

fn header(mode: u32, mtime: u32) -> NodeHeader {
    NodeHeader::new((mode & 0o7777) as u16, 0, 0, mtime)
}

/// Writes `tree` as squashfs at the current position of `out`. Returns the bytes written, which
/// equal the squashfs `bytes_used`.
pub fn write<W: Write + Seek>(tree: &Tree, out: &mut W, mtime: u32) -> Result<u64, SquashfsError> {
    let mut fs = FilesystemWriter::default();
    fs.set_time(mtime);
    fs.set_block_size(BLOCK_SIZE);
    fs.set_only_root_id();
    fs.set_root_mode(0o755);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    fs.set_no_padding();
    let compressor = FilesystemCompressor::new(
        Compressor::Zstd,
        Some(CompressionOptions::Zstd(Zstd {
            compression_level: ZSTD_LEVEL,
        })),
    )
    .map_err(SquashfsError::Write)?;
    fs.set_compressor(compressor);

    for (path, node) in tree.iter() {
        let added = match node {
            Node::Dir { mode } => fs.push_dir(path, header(*mode, mtime)),
            Node::File { mode, source } => match source {
                Source::Bytes(b) => {
                    fs.push_file(Cursor::new(b.as_slice()), path, header(*mode, mtime))
                }
                // Opened only while its data is written, so large trees need no open files.
                Source::Path(p) => fs.push_file_from_path(p.clone(), path, header(*mode, mtime)),
            },
            Node::Symlink { target } => {
                fs.push_symlink(target.as_str(), path, header(0o777, mtime))
            }
        };
        added.map_err(|source| SquashfsError::Add {
            path: path.display().to_string(),
            source,
        })?;
    }

    let start = out.stream_position()?;
    let (superblock, written) = fs
        .write_with_offset(&mut *out, start)
        .map_err(SquashfsError::Write)?;
    if written != superblock.bytes_used {
        return Err(SquashfsError::Length {
            written,
            used: superblock.bytes_used,
        });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhand::{FilesystemReader, InnerNode};
    use std::io::Read;
    use std::path::Path;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.dir("usr/bin", 0o755).unwrap();
        t.file(
            "usr/bin/tool",
            0o755,
            Source::Bytes(b"#!/bin/sh\necho hi\n".to_vec()),
        )
        .unwrap();
        t.file(
            "usr/share/big",
            0o644,
            Source::Bytes((0..400_000u32).map(|i| (i % 251) as u8).collect()),
        )
        .unwrap();
        t.file("usr/share/empty", 0o600, Source::Bytes(vec![]))
            .unwrap();
        t.file("usr/bin/su", 0o4755, Source::Bytes(b"setuid".to_vec()))
            .unwrap();
        t.symlink("bin", "usr/bin").unwrap();
        t.dir("usr/lib/private", 0o700).unwrap();
        t
    }

    fn build(t: &Tree) -> Vec<u8> {
        let mut c = Cursor::new(Vec::new());
        let n = write(t, &mut c, 1_700_000_000).unwrap();
        let v = c.into_inner();
        assert_eq!(n, v.len() as u64);
        v
    }

    #[test]
    fn same_tree_same_bytes() {
        assert!(build(&sample()) == build(&sample()));
    }

    #[test]
    fn reads_back_with_modes_links_and_contents() {
        let img = build(&sample());
        assert_eq!(&img[..4], b"hsqs");
        let used = u64::from_le_bytes(img[40..48].try_into().unwrap());
        assert_eq!(used, img.len() as u64);
        let fs = FilesystemReader::from_reader(Cursor::new(img)).unwrap();
        let mut seen = Vec::new();
        for node in fs.files() {
            let path = node.fullpath.display().to_string();
            assert_eq!((node.header.uid, node.header.gid), (0, 0), "{path}");
            if path != "/" {
                assert_eq!(node.header.mtime, 1_700_000_000, "{path}");
            }
            match &node.inner {
                InnerNode::File(f) => {
                    let mut data = Vec::new();
                    fs.file(f).reader().read_to_end(&mut data).unwrap();
                    let want = match sample().get(path.trim_start_matches('/')) {
                        Some(Node::File {
                            source: Source::Bytes(b),
                            mode,
                        }) => {
                            assert_eq!(u32::from(node.header.permissions), *mode, "{path}");
                            b.clone()
                        }
                        other => panic!("{path}: {other:?}"),
                    };
                    assert!(data == want, "{path} contents differ");
                }
                InnerNode::Symlink(l) => assert_eq!(l.link.to_str(), Some("usr/bin")),
                InnerNode::Dir(_) => {}
                other => panic!("unexpected {other:?}"),
            }
            seen.push((path, node.header.permissions));
        }
        assert!(seen.contains(&("/usr/lib/private".into(), 0o700)));
        assert!(seen.contains(&("/usr/bin/su".into(), 0o4755)));
        assert_eq!(seen.len(), sample().len() + 1);
    }

    /// The kernel looks names up assuming byte order (strcmp); unsquashfs lists directory
    /// entries in their on-disk order.
    #[test]
    fn entries_are_sorted_for_the_kernel() {
        let mut t = Tree::new();
        t.dir("d/a", 0o755).unwrap();
        for name in ["a.b", "a-b", "B", "_x", "a/z", "a/Z", "ab", "a0"] {
            t.file(
                format!("d/{name}"),
                0o644,
                Source::Bytes(name.as_bytes().to_vec()),
            )
            .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqfs");
        std::fs::write(&path, build(&t)).unwrap();
        let out = match std::process::Command::new("unsquashfs")
            .arg("-l")
            .arg("-d")
            .arg("")
            .arg(&path)
            .output()
        {
            Ok(o) => o,
            Err(_) => {
                eprintln!("skipping: unsquashfs is not installed (apt-get install squashfs-tools)");
                return;
            }
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("/d/"))
            .filter(|l| !l.contains('/'))
            .map(str::to_string)
            .collect();
        let mut sorted = listed.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(listed, sorted);
        assert_eq!(listed.len(), 7, "{listed:?}");
    }

    /// The running kernel mounts it (as root with loop devices; skipped otherwise).
    #[test]
    fn the_kernel_mounts_it() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root || !Path::new("/dev/loop-control").exists() {
            eprintln!("skipping: needs root and loop devices to mount squashfs");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("usr.img");
        let mut bytes = build(&sample());
        bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
        std::fs::write(&img, bytes).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(&img)
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success(), "mount failed");
        let tool = std::fs::read(mnt.join("usr/bin/tool"));
        let link = std::fs::read_link(mnt.join("bin"));
        let big = std::fs::read(mnt.join("usr/share/big")).map(|b| b.len());
        let st = std::process::Command::new("umount")
            .arg(&mnt)
            .status()
            .unwrap();
        assert_eq!(tool.unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(link.unwrap(), Path::new("usr/bin"));
        assert_eq!(big.unwrap(), 400_000);
        assert!(st.success(), "umount failed");
    }
}
