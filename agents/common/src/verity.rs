//! The dm-verity superblock of a crust USR partition, shared by the builder (which writes it) and
//! init stage 1 (which reads it on the machine to build the dm-verity table).
//!
//! A USR partition holds, in order: the squashfs image, zero padding to a 4096-byte boundary, one
//! 4096-byte block whose first 512 bytes are the superblock `veritysetup format` writes, and then
//! the hash tree. Only the one parameter set crust writes is accepted (format version 1, sha256,
//! 4096-byte data and hash blocks), so a foreign or damaged superblock is refused instead of
//! producing a dm table the kernel would reject with a vaguer message.

use thiserror::Error;

/// Data and hash block size of every crust verity tree.
pub const BLOCK_SIZE: u64 = 4096;
/// Size of the on-disk superblock (it occupies the first hash block).
pub const SUPERBLOCK_SIZE: usize = 512;
/// Longest salt the superblock can hold.
pub const MAX_SALT: usize = 256;

const SIGNATURE: &[u8; 8] = b"verity\0\0";
const ALGORITHM: &str = "sha256";
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerityError {
    #[error("verity superblock: need {need} bytes, got {got}")]
    Short { need: usize, got: usize },
    #[error("no verity superblock (signature \"verity\" missing): the USR partition has no hash tree at this offset; rewrite it with `crust build`")]
    NoSignature,
    #[error("verity superblock field {field} is {value}, crust only uses {expected}")]
    Unsupported {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("verity salt is {0} bytes long, at most 256 fit in the superblock")]
    SaltTooLong(usize),
    #[error("verity superblock says 0 data blocks: the USR image is empty or damaged")]
    NoData,
    #[error("USR partition does not start with a squashfs superblock (magic \"hsqs\"): not a crust USR image")]
    NotSquashfs,
}

/// The fields of a crust verity superblock; the rest (version 1, hash type 1, sha256,
/// 4096/4096) is implied and checked by [`Superblock::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: [u8; 16],
    pub data_blocks: u64,
    /// At most [`MAX_SALT`] bytes.
    pub salt: Vec<u8>,
}

// Byte offsets inside the superblock (struct verity_sb in cryptsetup, little endian).
const OFF_VERSION: usize = 8;
const OFF_HASH_TYPE: usize = 12;
const OFF_UUID: usize = 16;
const OFF_ALGORITHM: usize = 32;
const OFF_DATA_BLOCK_SIZE: usize = 64;
const OFF_HASH_BLOCK_SIZE: usize = 68;
const OFF_DATA_BLOCKS: usize = 72;
const OFF_SALT_SIZE: usize = 80;
const OFF_SALT: usize = 88;

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Lowercase hex, without pulling a dependency into every agent.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

impl Superblock {
    /// The 512-byte superblock as `veritysetup format` writes it. A salt longer than
    /// [`MAX_SALT`] is cut; callers check with [`Superblock::check`] first.
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[..8].copy_from_slice(SIGNATURE);
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&1u32.to_le_bytes());
        b[OFF_HASH_TYPE..OFF_HASH_TYPE + 4].copy_from_slice(&1u32.to_le_bytes());
        b[OFF_UUID..OFF_UUID + 16].copy_from_slice(&self.uuid);
        b[OFF_ALGORITHM..OFF_ALGORITHM + ALGORITHM.len()].copy_from_slice(ALGORITHM.as_bytes());
        let bs = (BLOCK_SIZE as u32).to_le_bytes();
        b[OFF_DATA_BLOCK_SIZE..OFF_DATA_BLOCK_SIZE + 4].copy_from_slice(&bs);
        b[OFF_HASH_BLOCK_SIZE..OFF_HASH_BLOCK_SIZE + 4].copy_from_slice(&bs);
        b[OFF_DATA_BLOCKS..OFF_DATA_BLOCKS + 8].copy_from_slice(&self.data_blocks.to_le_bytes());
        let salt = &self.salt[..self.salt.len().min(MAX_SALT)];
        b[OFF_SALT_SIZE..OFF_SALT_SIZE + 2].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        b[OFF_SALT..OFF_SALT + salt.len()].copy_from_slice(salt);
        b
    }

    /// Refuses values that cannot be written or used.
    pub fn check(&self) -> Result<(), VerityError> {
        if self.salt.len() > MAX_SALT {
            return Err(VerityError::SaltTooLong(self.salt.len()));
        }
        if self.data_blocks == 0 {
            return Err(VerityError::NoData);
        }
        Ok(())
    }

    pub fn parse(buf: &[u8]) -> Result<Superblock, VerityError> {
        if buf.len() < SUPERBLOCK_SIZE {
            return Err(VerityError::Short {
                need: SUPERBLOCK_SIZE,
                got: buf.len(),
            });
        }
        if &buf[..8] != SIGNATURE {
            return Err(VerityError::NoSignature);
        }
        let expect_u32 = |field, off, want: u32, expected| {
            let v = u32_at(buf, off);
            if v == want {
                Ok(())
            } else {
                Err(VerityError::Unsupported {
                    field,
                    value: v.to_string(),
                    expected,
                })
            }
        };
        expect_u32("version", OFF_VERSION, 1, "1")?;
        expect_u32("hash_type", OFF_HASH_TYPE, 1, "1 (salt first)")?;
        expect_u32("data_block_size", OFF_DATA_BLOCK_SIZE, 4096, "4096")?;
        expect_u32("hash_block_size", OFF_HASH_BLOCK_SIZE, 4096, "4096")?;
        let alg = &buf[OFF_ALGORITHM..OFF_ALGORITHM + 32];
        let alg_len = alg.iter().position(|&c| c == 0).unwrap_or(alg.len());
        if &alg[..alg_len] != ALGORITHM.as_bytes() {
            return Err(VerityError::Unsupported {
                field: "algorithm",
                value: String::from_utf8_lossy(&alg[..alg_len]).into_owned(),
                expected: "sha256",
            });
        }
        let salt_len = usize::from(u16::from_le_bytes([
            buf[OFF_SALT_SIZE],
            buf[OFF_SALT_SIZE + 1],
        ]));
        if salt_len > MAX_SALT {
            return Err(VerityError::SaltTooLong(salt_len));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&buf[OFF_UUID..OFF_UUID + 16]);
        let sb = Superblock {
            uuid,
            data_blocks: u64_at(buf, OFF_DATA_BLOCKS),
            salt: buf[OFF_SALT..OFF_SALT + salt_len].to_vec(),
        };
        sb.check()?;
        Ok(sb)
    }

    /// The dm-verity target parameters (what follows `verity ` in a dm table line). The hash
    /// tree starts one block after the superblock, in units of hash blocks.
    pub fn dm_params(
        &self,
        data_dev: &str,
        hash_dev: &str,
        hash_offset: u64,
        root_hash_hex: &str,
    ) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            to_hex(&self.salt)
        };
        format!(
            "1 {data_dev} {hash_dev} {bs} {bs} {blocks} {start} {ALGORITHM} {root_hash_hex} {salt}",
            bs = BLOCK_SIZE,
            blocks = self.data_blocks,
            start = hash_offset / BLOCK_SIZE + 1,
        )
    }

    /// Sectors (512 bytes) of data the dm target maps: the table line's length field.
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks * (BLOCK_SIZE / 512)
    }
}

/// Where the verity superblock of a crust USR partition sits: the squashfs `bytes_used`
/// rounded up to [`BLOCK_SIZE`]. `first_block` is the start of the partition.
pub fn usr_hash_offset(first_block: &[u8]) -> Result<u64, VerityError> {
    if first_block.len() < 48 {
        return Err(VerityError::Short {
            need: 48,
            got: first_block.len(),
        });
    }
    if &first_block[..4] != SQUASHFS_MAGIC {
        return Err(VerityError::NotSquashfs);
    }
    let used = u64_at(first_block, 40);
    if used == 0 {
        return Err(VerityError::NotSquashfs);
    }
    Ok(used.div_ceil(BLOCK_SIZE) * BLOCK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            uuid: *b"0123456789abcdef",
            data_blocks: 129,
            salt: vec![0xab; 32],
        }
    }

    #[test]
    fn superblock_round_trips() {
        let sb = sample();
        let bytes = sb.to_bytes();
        assert_eq!(&bytes[..8], b"verity\0\0");
        assert_eq!(&bytes[32..38], b"sha256");
        assert_eq!(Superblock::parse(&bytes), Ok(sb));
        let empty_salt = Superblock {
            salt: vec![],
            ..sample()
        };
        assert_eq!(Superblock::parse(&empty_salt.to_bytes()), Ok(empty_salt));
    }

    #[test]
    fn parse_refuses_other_parameters() {
        let good = sample().to_bytes();
        let mut b = good;
        b[0] = b'V';
        assert_eq!(Superblock::parse(&b), Err(VerityError::NoSignature));
        for (off, field) in [
            (8, "version"),
            (12, "hash_type"),
            (64, "data_block_size"),
            (68, "hash_block_size"),
        ] {
            let mut b = good;
            b[off..off + 4].copy_from_slice(&512u32.to_le_bytes());
            match Superblock::parse(&b) {
                Err(VerityError::Unsupported { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut b = good;
        b[32..38].copy_from_slice(b"sha512");
        assert!(matches!(
            Superblock::parse(&b),
            Err(VerityError::Unsupported {
                field: "algorithm",
                ..
            })
        ));
        let mut b = good;
        b[80..82].copy_from_slice(&257u16.to_le_bytes());
        assert_eq!(Superblock::parse(&b), Err(VerityError::SaltTooLong(257)));
        let mut b = good;
        b[72..80].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Superblock::parse(&b), Err(VerityError::NoData));
        assert!(matches!(
            Superblock::parse(&good[..100]),
            Err(VerityError::Short { .. })
        ));
    }

    #[test]
    fn dm_params_name_the_tree_after_the_superblock() {
        let sb = Superblock {
            salt: vec![1, 0xfe],
            ..sample()
        };
        let root = "aa".repeat(32);
        assert_eq!(
            sb.dm_params("/dev/vda3", "/dev/vda3", 8192, &root),
            format!("1 /dev/vda3 /dev/vda3 4096 4096 129 3 sha256 {root} 01fe")
        );
        let no_salt = Superblock { salt: vec![], ..sb };
        assert!(no_salt.dm_params("a", "b", 0, &root).ends_with(" -"));
        assert_eq!(no_salt.data_sectors(), 129 * 8);
    }

    #[test]
    fn hash_offset_rounds_squashfs_size_up() {
        let mut block = vec![0u8; 4096];
        block[..4].copy_from_slice(b"hsqs");
        for (used, want) in [
            (1u64, 4096u64),
            (4096, 4096),
            (4097, 8192),
            (1_000_000, 1_003_520),
        ] {
            block[40..48].copy_from_slice(&used.to_le_bytes());
            assert_eq!(usr_hash_offset(&block), Ok(want));
        }
        block[0] = 0;
        assert_eq!(usr_hash_offset(&block), Err(VerityError::NotSquashfs));
        assert!(usr_hash_offset(&block[..10]).is_err());
    }
}
