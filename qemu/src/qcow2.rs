//! Writes an empty qcow2 (version 3) overlay whose backing file is a raw image.
//!
//! `qemu-img create -f qcow2 -F raw -b IMAGE overlay SIZE` would do the same, but Debian's
//! `qemu-system-x86` does not ship `qemu-img`, and on some of our machines the `qemu-utils`
//! package conflicts with a newer `qemu-img` from backports. An empty overlay is four clusters
//! of fixed structure, so writing it here removes the dependency.
//!
//! Layout (64 KiB clusters): 0 header + backing-format extension + backing file name,
//! 1 refcount table, 2 refcount block, 3 L1 table (all L2 pointers zero: every read falls through
//! to the backing file, or zeroes beyond its end).

use crate::error::{Error, Result};
use std::path::Path;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: usize = 1 << CLUSTER_BITS;
const MAGIC: u32 = 0x5146_49fb; // "QFI\xfb"
const HEADER_LEN: u32 = 104;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// 16-bit refcounts, QEMU's default.
const REFCOUNT_ORDER: u32 = 4;
const REFCOUNT_TABLE: u64 = CLUSTER as u64;
const REFCOUNT_BLOCK: u64 = 2 * CLUSTER as u64;
const L1_TABLE: u64 = 3 * CLUSTER as u64;
/// One L2 table maps this many bytes.
const L2_SPAN: u64 = (CLUSTER as u64 / 8) * CLUSTER as u64;
/// One L1 cluster holds this many L2 pointers, which bounds the virtual size (4 TiB).
const MAX_L1: u64 = CLUSTER as u64 / 8;

/// The bytes of an empty overlay of `size` bytes over the raw image at `backing`.
pub fn overlay_bytes(backing: &str, size: u64) -> Result<Vec<u8>> {
    let invalid = |reason: String| Error::Invalid {
        what: "overlay",
        value: backing.to_string(),
        reason,
    };
    if size == 0 || size & 511 != 0 {
        return Err(invalid(format!(
            "disk size {size} must be a non-zero multiple of 512"
        )));
    }
    let l1_size = size.div_ceil(L2_SPAN);
    if l1_size > MAX_L1 {
        return Err(invalid(format!("disk size {size} is over 4 TiB")));
    }
    let mut ext = Vec::new();
    put32(&mut ext, EXT_BACKING_FORMAT);
    put32(&mut ext, 3);
    ext.extend_from_slice(b"raw\0\0\0\0\0"); // padded to 8
    put32(&mut ext, 0); // end of extensions
    put32(&mut ext, 0);
    let backing_offset = HEADER_LEN as usize + ext.len();
    if backing_offset + backing.len() > CLUSTER || backing.is_empty() {
        return Err(invalid("backing file path is empty or too long".into()));
    }

    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    put32(&mut h, MAGIC);
    put32(&mut h, 3); // version
    put64(&mut h, backing_offset as u64);
    put32(&mut h, backing.len() as u32);
    put32(&mut h, CLUSTER_BITS);
    put64(&mut h, size);
    put32(&mut h, 0); // no encryption
    put32(&mut h, l1_size as u32);
    put64(&mut h, L1_TABLE);
    put64(&mut h, REFCOUNT_TABLE);
    put32(&mut h, 1); // refcount table clusters
    put32(&mut h, 0); // snapshots
    put64(&mut h, 0);
    put64(&mut h, 0); // incompatible features
    put64(&mut h, 0); // compatible features
    put64(&mut h, 0); // autoclear features
    put32(&mut h, REFCOUNT_ORDER);
    put32(&mut h, HEADER_LEN);
    debug_assert_eq!(h.len(), HEADER_LEN as usize);

    let mut out = vec![0u8; 4 * CLUSTER];
    out[..h.len()].copy_from_slice(&h);
    out[h.len()..backing_offset].copy_from_slice(&ext);
    out[backing_offset..backing_offset + backing.len()].copy_from_slice(backing.as_bytes());
    let rt = REFCOUNT_TABLE as usize;
    out[rt..rt + 8].copy_from_slice(&REFCOUNT_BLOCK.to_be_bytes());
    // Clusters 0..4 are in use once each.
    let rb = REFCOUNT_BLOCK as usize;
    for i in 0..4 {
        out[rb + 2 * i..rb + 2 * i + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Ok(out)
}

/// Writes the overlay file. `backing` must be absolute (QEMU resolves relative names against the
/// overlay's directory, which would tie the overlay to where it was made).
pub fn create_overlay(path: &Path, backing: &Path, size: u64) -> Result<()> {
    let name = backing
        .to_str()
        .filter(|_| backing.is_absolute())
        .ok_or_else(|| Error::Invalid {
            what: "image path",
            value: backing.display().to_string(),
            reason: "must be absolute and UTF-8".into(),
        })?;
    let bytes = overlay_bytes(name, size)?;
    std::fs::write(path, bytes).map_err(crate::error::io(format!("writing {}", path.display())))
}

fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }
    fn be64(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    #[test]
    fn header_fields() {
        let size = 8 << 30;
        let b = overlay_bytes("/img/crust.img", size).expect("valid");
        assert_eq!(b.len(), 4 * CLUSTER);
        assert_eq!(&b[..4], b"QFI\xfb");
        assert_eq!(be32(&b, 4), 3);
        assert_eq!(be32(&b, 20), 16);
        assert_eq!(be64(&b, 24), size);
        assert_eq!(be32(&b, 36), 16, "8 GiB / 512 MiB per L2 table");
        assert_eq!(be64(&b, 40), L1_TABLE);
        assert_eq!(be64(&b, 48), REFCOUNT_TABLE);
        assert_eq!(be32(&b, 96), 4);
        assert_eq!(be32(&b, 100), 104);
        let (off, len) = (be64(&b, 8) as usize, be32(&b, 16) as usize);
        assert_eq!(&b[off..off + len], b"/img/crust.img");
        assert_eq!(be32(&b, 104), EXT_BACKING_FORMAT);
        assert_eq!(&b[112..115], b"raw");
        assert_eq!(be64(&b, REFCOUNT_TABLE as usize), REFCOUNT_BLOCK);
        let rb = REFCOUNT_BLOCK as usize;
        let refs: Vec<u8> = b[rb..rb + 10].to_vec();
        assert_eq!(refs, [0, 1, 0, 1, 0, 1, 0, 1, 0, 0]);
        assert!(b[L1_TABLE as usize..].iter().all(|&x| x == 0));
    }

    #[test]
    fn rejects_bad_sizes_and_paths() {
        assert!(overlay_bytes("/i", 0).is_err());
        assert!(overlay_bytes("/i", 1000).is_err());
        assert!(overlay_bytes("/i", (4 << 40) + 512).is_err());
        assert!(overlay_bytes("/i", 4 << 40).is_ok());
        assert!(overlay_bytes("", 1 << 30).is_err());
        assert!(overlay_bytes(&"x".repeat(CLUSTER), 1 << 30).is_err());
        assert!(create_overlay(Path::new("/tmp/x"), Path::new("rel.img"), 1 << 30).is_err());
        // A size that is not a whole L2 span still gets an L1 entry for its tail.
        let b = overlay_bytes("/i", (512 << 20) + 512).expect("valid");
        assert_eq!(be32(&b, 36), 2);
    }
}
