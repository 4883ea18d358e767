//! Recomputing the dm-verity root hash of a USR partition written by update-engine, in the
//! format `crust build` writes (crust_common::verity describes it: format 1, sha256, 4 KiB
//! blocks, salt hashed first). The builder has the same algorithm for writing; this side only
//! reads, so it stays in the image without the builder's dependencies.

use crust_common::verity::{Superblock, BLOCK_SIZE};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};

const BS: usize = BLOCK_SIZE as usize;

fn hash_block(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// The root over `leaves` (hashes of the data blocks), as the kernel computes it.
pub fn root_of(salt: &[u8], mut digests: Vec<[u8; 32]>) -> [u8; 32] {
    while digests.len() > 1 {
        digests = digests
            .chunks(BS / 32)
            .map(|group| {
                let mut block = [0u8; BS];
                for (i, d) in group.iter().enumerate() {
                    block[i * 32..i * 32 + 32].copy_from_slice(d);
                }
                hash_block(salt, &block)
            })
            .collect();
    }
    digests.first().copied().unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum VerityCheckError {
    #[error("reading the written slot failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Superblock(#[from] crust_common::verity::VerityError),
    #[error("the verity superblock does not match the signed release ({0})")]
    Params(&'static str),
    #[error("the verity root hash of the written slot is {got}, the signed release says {want}")]
    Root { got: String, want: String },
}

/// Reads the superblock at `hash_offset` inside the partition starting at `part_offset`, checks
/// it against the signed parameters, recomputes the root over the data blocks on disk and
/// compares it with `want` (hex).
pub fn check<F: Read + Seek>(
    disk: &mut F,
    part_offset: u64,
    hash_offset: u64,
    data_blocks: u64,
    salt: &[u8],
    want: &str,
) -> Result<(), VerityCheckError> {
    let mut sb = vec![0u8; crust_common::verity::SUPERBLOCK_SIZE];
    disk.seek(SeekFrom::Start(part_offset + hash_offset))?;
    disk.read_exact(&mut sb)?;
    let sb = Superblock::parse(&sb)?;
    if sb.data_blocks != data_blocks || data_blocks * BLOCK_SIZE != hash_offset {
        return Err(VerityCheckError::Params("data blocks"));
    }
    if sb.salt != salt {
        return Err(VerityCheckError::Params("salt"));
    }
    disk.seek(SeekFrom::Start(part_offset))?;
    let mut leaves = Vec::with_capacity(data_blocks as usize);
    let mut buf = vec![0u8; 64 * BS];
    let mut left = data_blocks as usize;
    while left > 0 {
        let n = left.min(64);
        disk.read_exact(&mut buf[..n * BS])?;
        leaves.extend(buf[..n * BS].chunks(BS).map(|b| hash_block(salt, b)));
        left -= n;
    }
    let got = crust_common::verity::to_hex(&root_of(salt, leaves));
    if got != want {
        return Err(VerityCheckError::Root {
            got,
            want: want.to_string(),
        });
    }
    Ok(())
}
