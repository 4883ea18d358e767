//! The dm-verity hash tree appended to the USR squashfs, in the exact format `veritysetup format`
//! writes (format version 1: the salt is hashed before each block; sha256; 4096-byte data and
//! hash blocks; superblock first, then the tree with its root-most level first).
//!
//! Written here rather than by calling `veritysetup` because the build must run without root and
//! without host tools, and the format is small: the superblock lives in
//! `crust_common::verity` (stage 1 parses it on the machine), the tree is below.

use crust_common::verity::{Superblock, BLOCK_SIZE};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use thiserror::Error;

pub use crust_common::verity::VerityError as SuperblockError;

const BS: usize = BLOCK_SIZE as usize;
const DIGEST: usize = 32;
/// Digests per hash block: 4096 / 32.
const FANOUT: usize = BS / DIGEST;

#[derive(Debug, Error)]
pub enum VerityError {
    #[error("verity: cannot {what} the USR image: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("verity: the USR image is {len} bytes but the file holds only {got}; the squashfs writer stopped early")]
    ShortData { len: u64, got: u64 },
    #[error("verity: {0}")]
    Superblock(#[from] SuperblockError),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> VerityError {
    move |source| VerityError::Io { what, source }
}

/// What the build records about the tree, and what stage 1 and `inspect` need to find it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityInfo {
    pub root_hash: [u8; 32],
    pub salt: Vec<u8>,
    pub data_blocks: u64,
    /// Byte offset of the superblock (= padded data length).
    pub hash_offset: u64,
    /// Data, padding, superblock block and tree: what must fit in the partition.
    pub total_len: u64,
}

/// sha256(salt || block): the format-1 hash of one data or hash block.
pub fn hash_block(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// The hash levels above `leaves` (the digests of the data blocks): `levels[0]` hashes the data,
/// the last level is a single block whose hash is the root. One data block has no levels at all
/// (its own hash is the root), as in the kernel and cryptsetup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTree {
    pub root: [u8; 32],
    /// Each level's hash blocks, concatenated, 4096 bytes per block.
    pub levels: Vec<Vec<u8>>,
}

impl HashTree {
    pub fn build(salt: &[u8], leaves: Vec<[u8; 32]>) -> HashTree {
        let mut digests = leaves;
        let mut levels = Vec::new();
        while digests.len() > 1 {
            let blocks = digests.len().div_ceil(FANOUT);
            let mut level = vec![0u8; blocks * BS];
            for (i, d) in digests.iter().enumerate() {
                let at = (i / FANOUT) * BS + (i % FANOUT) * DIGEST;
                level[at..at + DIGEST].copy_from_slice(d);
            }
            digests = level.chunks(BS).map(|b| hash_block(salt, b)).collect();
            levels.push(level);
        }
        HashTree {
            root: digests.first().copied().unwrap_or_default(),
            levels,
        }
    }

    /// Hash blocks on disk (after the superblock block).
    pub fn blocks(&self) -> u64 {
        self.levels.iter().map(|l| (l.len() / BS) as u64).sum()
    }

    /// The on-disk order: root-most level first, data-hashing level last.
    pub fn on_disk(&self) -> impl Iterator<Item = &[u8]> {
        self.levels.iter().rev().map(Vec::as_slice)
    }
}

/// Pads data `[0, data_len)` of `f` with zeros to a 4096 multiple, writes the superblock at that
/// offset and the sha256 hash tree after it. Nothing past the tree is touched.
pub fn append_hash_tree<F: Read + Write + Seek>(
    f: &mut F,
    data_len: u64,
    salt: &[u8],
    uuid: [u8; 16],
) -> Result<VerityInfo, VerityError> {
    let data_blocks = data_len.div_ceil(BLOCK_SIZE);
    let sb = Superblock {
        uuid,
        data_blocks,
        salt: salt.to_vec(),
    };
    sb.check()?;
    let hash_offset = data_blocks * BLOCK_SIZE;

    // Zero the padding in the file first, so the hashed bytes and the stored bytes are the same.
    f.seek(SeekFrom::Start(data_len)).map_err(io("seek in"))?;
    f.write_all(&vec![0u8; (hash_offset - data_len) as usize])
        .map_err(io("pad"))?;

    f.seek(SeekFrom::Start(0)).map_err(io("seek in"))?;
    let mut leaves = Vec::with_capacity(data_blocks as usize);
    let mut chunk = vec![0u8; 256 * BS];
    let mut done = 0u64;
    while done < hash_offset {
        let want = ((hash_offset - done) as usize).min(chunk.len());
        read_full(f, &mut chunk[..want]).map_err(|e| match e {
            ReadFull::Io(source) => VerityError::Io {
                what: "read",
                source,
            },
            ReadFull::Eof(got) => VerityError::ShortData {
                len: data_len,
                got: done + got as u64,
            },
        })?;
        leaves.extend(chunk[..want].chunks(BS).map(|b| hash_block(salt, b)));
        done += want as u64;
    }

    let tree = HashTree::build(salt, leaves);
    f.seek(SeekFrom::Start(hash_offset))
        .map_err(io("seek in"))?;
    let mut first = vec![0u8; BS];
    first[..crust_common::verity::SUPERBLOCK_SIZE].copy_from_slice(&sb.to_bytes());
    f.write_all(&first).map_err(io("write the superblock to"))?;
    for level in tree.on_disk() {
        f.write_all(level).map_err(io("write the hash tree to"))?;
    }
    Ok(VerityInfo {
        root_hash: tree.root,
        salt: salt.to_vec(),
        data_blocks,
        hash_offset,
        total_len: hash_offset + BLOCK_SIZE + tree.blocks() * BLOCK_SIZE,
    })
}

/// Recomputes the root hash of `data_blocks` blocks read from `r` (positioned at the data's
/// start): what `inspect` compares with the loader entry's `usrhash=`.
pub fn root_hash_of<R: Read>(
    r: &mut R,
    data_blocks: u64,
    salt: &[u8],
) -> Result<[u8; 32], VerityError> {
    let mut leaves = Vec::with_capacity(data_blocks as usize);
    let mut block = vec![0u8; BS];
    for i in 0..data_blocks {
        read_full(r, &mut block).map_err(|e| match e {
            ReadFull::Io(source) => VerityError::Io {
                what: "read",
                source,
            },
            ReadFull::Eof(got) => VerityError::ShortData {
                len: data_blocks * BLOCK_SIZE,
                got: i * BLOCK_SIZE + got as u64,
            },
        })?;
        leaves.push(hash_block(salt, &block));
    }
    Ok(HashTree::build(salt, leaves).root)
}

enum ReadFull {
    Io(std::io::Error),
    Eof(usize),
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), ReadFull> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(ReadFull::Eof(got)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadFull::Io(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const SALT: &[u8] = b"crust-test-salt";
    const UUID: [u8; 16] = [7; 16];

    fn data(blocks: usize, tail: usize) -> Vec<u8> {
        (0..blocks * BS + tail)
            .map(|i| (i * 7 + i / BS) as u8)
            .collect()
    }

    fn build(d: &[u8]) -> (VerityInfo, Vec<u8>) {
        let mut c = Cursor::new(d.to_vec());
        let info = append_hash_tree(&mut c, d.len() as u64, SALT, UUID).unwrap();
        (info, c.into_inner())
    }

    fn h(b: &[u8]) -> [u8; 32] {
        hash_block(SALT, b)
    }

    #[test]
    fn one_block_is_its_own_root() {
        let d = data(0, 100);
        let (info, out) = build(&d);
        let mut padded = d.clone();
        padded.resize(BS, 0);
        assert_eq!(info.root_hash, h(&padded));
        assert_eq!(
            (info.data_blocks, info.hash_offset, info.total_len),
            (1, 4096, 8192)
        );
        assert_eq!(out.len(), 8192);
        assert_eq!(&out[..BS], &padded[..]);
        let sb = Superblock::parse(&out[BS..]).unwrap();
        assert_eq!(
            (sb.data_blocks, sb.uuid, sb.salt.as_slice()),
            (1, UUID, SALT)
        );
    }

    #[test]
    fn exactly_128_blocks_fill_one_hash_block() {
        let d = data(128, 0);
        let (info, out) = build(&d);
        let level0: Vec<u8> = d.chunks(BS).flat_map(h).collect();
        assert_eq!(level0.len(), BS);
        assert_eq!(info.root_hash, h(&level0));
        assert_eq!(info.total_len, (128 + 1 + 1) * 4096);
        assert_eq!(&out[129 * BS..], &level0[..]);
    }

    #[test]
    fn block_129_adds_a_level_stored_first() {
        let d = data(128, 1);
        let (info, out) = build(&d);
        assert_eq!(info.data_blocks, 129);
        let mut padded = d.clone();
        padded.resize(129 * BS, 0);
        let mut level0: Vec<u8> = padded.chunks(BS).flat_map(h).collect();
        level0.resize(2 * BS, 0);
        let mut level1: Vec<u8> = level0.chunks(BS).flat_map(h).collect();
        level1.resize(BS, 0);
        assert_eq!(info.root_hash, h(&level1));
        let tree = 130 * BS; // after data and superblock
        assert_eq!(&out[tree..tree + BS], &level1[..]);
        assert_eq!(&out[tree + BS..], &level0[..]);
        assert_eq!(info.total_len as usize, out.len());
        assert_eq!(
            root_hash_of(&mut &out[..], 129, SALT).unwrap(),
            info.root_hash
        );
        assert!(root_hash_of(&mut &out[..100], 129, SALT).is_err());
    }

    #[test]
    fn padding_overwrites_stale_bytes_and_nothing_past_the_tree() {
        let mut file = data(1, 10);
        file.resize(5 * BS, 0xee); // stale bytes from an earlier image in the same place
        let mut c = Cursor::new(file);
        let info = append_hash_tree(&mut c, (BS + 10) as u64, SALT, UUID).unwrap();
        let out = c.into_inner();
        assert!(out[BS + 10..2 * BS].iter().all(|&b| b == 0));
        assert_eq!(info.total_len, 4 * 4096);
        assert!(out[4 * BS..].iter().all(|&b| b == 0xee));
    }

    #[test]
    fn refuses_empty_data_and_long_salt() {
        let mut c = Cursor::new(Vec::new());
        assert!(append_hash_tree(&mut c, 0, SALT, UUID).is_err());
        let mut c = Cursor::new(vec![1u8; 10]);
        assert!(append_hash_tree(&mut c, 10, &[0; 257], UUID).is_err());
    }

    /// Runs a host tool, or returns None (with the reason printed) when it is not installed.
    fn tool(name: &str, args: &[&str]) -> Option<std::process::Output> {
        match std::process::Command::new(name).args(args).output() {
            Ok(o) => Some(o),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("skipping: {name} is not installed (apt-get install cryptsetup-bin)");
                None
            }
            Err(e) => panic!("cannot run {name}: {e}"),
        }
    }

    fn field<'a>(dump: &'a str, name: &str) -> &'a str {
        dump.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim_start_matches(':').trim())
            .unwrap_or_else(|| panic!("no {name} in dump:\n{dump}"))
    }

    /// The tree agrees with cryptsetup: `veritysetup verify` accepts it, `dump` reads the same
    /// superblock, `format` with the same salt and uuid writes the same bytes, and a flipped data
    /// byte is caught.
    #[test]
    fn veritysetup_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usr.img");
        // Several MiB, not block-aligned, with three tree levels' worth of boundaries crossed.
        let len = 5 * 1024 * 1024 + 1234;
        let mut d = Vec::with_capacity(len);
        let mut x = 0x9e37_79b9_u32;
        while d.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            d.extend_from_slice(&x.to_le_bytes());
        }
        d.truncate(len);
        std::fs::write(&path, &d).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let info = append_hash_tree(&mut f, len as u64, SALT, UUID).unwrap();
        drop(f);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), info.total_len);
        let p = path.to_str().unwrap();
        let root = hex::encode(info.root_hash);
        let offset = format!("--hash-offset={}", info.hash_offset);

        let Some(out) = tool("veritysetup", &["verify", p, p, &root, &offset]) else {
            return;
        };
        assert!(
            out.status.success(),
            "verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let out = tool("veritysetup", &["dump", p, &offset]).unwrap();
        let dump = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "dump: {dump}");
        assert_eq!(
            field(&dump, "UUID"),
            uuid::Uuid::from_bytes(UUID).to_string()
        );
        assert_eq!(field(&dump, "Hash type"), "1");
        assert_eq!(field(&dump, "Data blocks"), info.data_blocks.to_string());
        assert_eq!(field(&dump, "Data block size"), "4096");
        assert_eq!(field(&dump, "Hash block size"), "4096");
        assert_eq!(field(&dump, "Hash algorithm"), "sha256");
        assert_eq!(field(&dump, "Salt"), hex::encode(SALT));

        // cryptsetup's own writer, on a copy of the padded data, gives the same bytes.
        let theirs = dir.path().join("theirs.img");
        std::fs::write(
            &theirs,
            &std::fs::read(&path).unwrap()[..info.hash_offset as usize],
        )
        .unwrap();
        let t = theirs.to_str().unwrap();
        let out = tool(
            "veritysetup",
            &[
                "format",
                t,
                t,
                &offset,
                &format!("--salt={}", hex::encode(SALT)),
                &format!("--uuid={}", uuid::Uuid::from_bytes(UUID)),
            ],
        )
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "format: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(field(&stdout, "Root hash"), root);
        assert!(
            std::fs::read(&theirs).unwrap() == std::fs::read(&path).unwrap(),
            "trees differ"
        );

        let mut img = std::fs::read(&path).unwrap();
        img[3 * BS + 17] ^= 1;
        std::fs::write(&path, &img).unwrap();
        let out = tool("veritysetup", &["verify", p, p, &root, &offset]).unwrap();
        assert!(
            !out.status.success(),
            "a flipped data byte was not detected"
        );
    }
}
