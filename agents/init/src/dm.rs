//! The device-mapper ioctl interface (`linux/dm-ioctl.h`), encoded by hand: stage 1 needs three
//! calls (create, load one table, resume) and a whole libdevmapper binding would be far heavier
//! than the 312-byte struct it wraps.

use crate::kernel::Kernel;
use std::io;

/// `sizeof(struct dm_ioctl)` on every Linux ABI.
pub const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
pub const DM_TARGET_SPEC_SIZE: usize = 40;
/// The interface version we speak; the kernel accepts any request with major 4 and a minor not
/// newer than its own.
pub const DM_VERSION: [u32; 3] = [4, 0, 0];

pub const DM_READONLY_FLAG: u32 = 1 << 0;
pub const DM_SUSPEND_FLAG: u32 = 1 << 1;

/// The subset of `enum { DM_VERSION_CMD = 0, ... }` that init uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmCmd {
    Version = 0,
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    TableLoad = 9,
}

impl DmCmd {
    /// `_IOWR(DM_IOCTL, cmd, struct dm_ioctl)`.
    pub fn request(self) -> u64 {
        const IOC_READ_WRITE: u64 = 3;
        (IOC_READ_WRITE << 30) | ((DM_IOCTL_SIZE as u64) << 16) | (0xfd << 8) | self as u64
    }
}

/// One target line of a table: `start length type params`, in 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub sectors: u64,
    pub kind: String,
    pub params: String,
}

/// Encodes a `struct dm_ioctl`, followed by the target specs for `DM_TABLE_LOAD`.
pub fn encode(name: &str, uuid: &str, flags: u32, targets: &[Target]) -> io::Result<Vec<u8>> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    if name.is_empty() || name.len() >= 128 || name.contains('/') {
        return Err(invalid(format!(
            "dm device name {name:?} must be 1-127 bytes without /"
        )));
    }
    if uuid.len() >= 129 {
        return Err(invalid(format!(
            "dm uuid {uuid:?} is longer than 128 bytes"
        )));
    }
    let mut buf = vec![0u8; DM_IOCTL_SIZE];
    for (i, v) in DM_VERSION.iter().enumerate() {
        put32(&mut buf, i * 4, *v);
    }
    put32(&mut buf, 16, DM_IOCTL_SIZE as u32); // data_start
    put32(&mut buf, 20, targets.len() as u32); // target_count
    put32(&mut buf, 28, flags);
    buf[48..48 + name.len()].copy_from_slice(name.as_bytes());
    buf[176..176 + uuid.len()].copy_from_slice(uuid.as_bytes());
    for t in targets {
        if t.kind.is_empty() || t.kind.len() >= 16 {
            return Err(invalid(format!(
                "dm target type {:?} must be 1-15 bytes",
                t.kind
            )));
        }
        let spec_at = buf.len();
        let mut spec = vec![0u8; DM_TARGET_SPEC_SIZE];
        spec[0..8].copy_from_slice(&t.start.to_le_bytes());
        spec[8..16].copy_from_slice(&t.sectors.to_le_bytes());
        spec[24..24 + t.kind.len()].copy_from_slice(t.kind.as_bytes());
        spec.extend_from_slice(t.params.as_bytes());
        spec.push(0);
        // Each spec starts 8-byte aligned; `next` is the offset from this spec to the next one.
        while !spec.len().is_multiple_of(8) {
            spec.push(0);
        }
        let next = spec.len() as u32;
        spec[20..24].copy_from_slice(&next.to_le_bytes());
        buf.extend_from_slice(&spec);
        debug_assert_eq!(spec_at % 8, 0);
    }
    let size = buf.len() as u32;
    put32(&mut buf, 12, size); // data_size
    Ok(buf)
}

fn put32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The `dev` field the kernel fills in, decoded into (major, minor) (`huge_encode_dev` format).
pub fn decode_dev(buf: &[u8]) -> Option<(u32, u32)> {
    let dev = u64::from_le_bytes(buf.get(40..48)?.try_into().ok()?);
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    Some((major, minor))
}

/// Creates a read-only dm device `name` with one target and activates it. Returns its
/// (major, minor). On a failed table load the half-made device is removed again so a retry
/// (or the emergency shell user) starts clean.
pub fn create_device(k: &dyn Kernel, name: &str, target: &Target) -> io::Result<(u32, u32)> {
    let uuid = format!("CRUST-{name}");
    let mut create = encode(name, &uuid, DM_READONLY_FLAG, &[])?;
    k.dm_ioctl(DmCmd::DevCreate, &mut create)
        .map_err(|e| with_context(e, &format!("DM_DEV_CREATE {name}")))?;
    let loaded = (|| {
        let mut load = encode(name, "", DM_READONLY_FLAG, std::slice::from_ref(target))?;
        k.dm_ioctl(DmCmd::TableLoad, &mut load).map_err(|e| {
            with_context(
                e,
                &format!("DM_TABLE_LOAD {name} ({} {})", target.kind, target.params),
            )
        })?;
        // DEV_SUSPEND without DM_SUSPEND_FLAG means resume: it swaps the loaded table in.
        let mut resume = encode(name, "", 0, &[])?;
        k.dm_ioctl(DmCmd::DevSuspend, &mut resume)
            .map_err(|e| with_context(e, &format!("DM_DEV_SUSPEND (resume) {name}")))?;
        decode_dev(&resume)
            .or_else(|| decode_dev(&create))
            .ok_or_else(|| io::Error::other("dm returned no device number"))
    })();
    if loaded.is_err() {
        if let Ok(mut remove) = encode(name, "", 0, &[]) {
            let _ = k.dm_ioctl(DmCmd::DevRemove, &mut remove);
        }
    }
    loaded
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::RecordingKernel;

    #[test]
    fn request_numbers_match_the_kernel_header() {
        // Values as computed by the C macros on x86_64.
        assert_eq!(DmCmd::Version.request(), 0xc138fd00);
        assert_eq!(DmCmd::DevCreate.request(), 0xc138fd03);
        assert_eq!(DmCmd::DevSuspend.request(), 0xc138fd06);
        assert_eq!(DmCmd::TableLoad.request(), 0xc138fd09);
    }

    #[test]
    fn encodes_header_and_one_target() {
        let t = Target {
            start: 0,
            sectors: 80,
            kind: "verity".into(),
            params: "1 253:3 253:3 4096 4096 10 2 sha256 ab cd".into(),
        };
        let b = encode(
            "usr",
            "CRUST-usr",
            DM_READONLY_FLAG,
            std::slice::from_ref(&t),
        )
        .unwrap();
        assert_eq!(&b[0..12], &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        assert_eq!(u32_at(12) as usize, b.len());
        assert_eq!(u32_at(16) as usize, DM_IOCTL_SIZE);
        assert_eq!(u32_at(20), 1);
        assert_eq!(u32_at(28), DM_READONLY_FLAG);
        assert_eq!(&b[48..52], b"usr\0");
        assert_eq!(&b[176..186], b"CRUST-usr\0");
        let spec = &b[DM_IOCTL_SIZE..];
        assert_eq!(u64::from_le_bytes(spec[8..16].try_into().unwrap()), 80);
        assert_eq!(&spec[24..31], b"verity\0");
        let params = &spec[40..40 + t.params.len() + 1];
        assert_eq!(&params[..t.params.len()], t.params.as_bytes());
        assert_eq!(params[t.params.len()], 0);
        assert_eq!(b.len() % 8, 0);
        assert_eq!(u32_at(DM_IOCTL_SIZE + 20) as usize, spec.len());
    }

    #[test]
    fn refuses_bad_names() {
        assert!(encode("", "", 0, &[]).is_err());
        assert!(encode("a/b", "", 0, &[]).is_err());
        assert!(encode(&"x".repeat(128), "", 0, &[]).is_err());
    }

    #[test]
    fn decodes_device_numbers() {
        let mut b = vec![0u8; DM_IOCTL_SIZE];
        // major 253, minor 0x1234: (minor & 0xff) | major << 8 | (minor & !0xff) << 12
        let dev: u64 = 0x34 | (253 << 8) | (0x1200 << 12);
        b[40..48].copy_from_slice(&dev.to_le_bytes());
        assert_eq!(decode_dev(&b), Some((253, 0x1234)));
    }

    #[test]
    fn creates_loads_and_resumes_or_cleans_up() {
        let t = Target {
            start: 0,
            sectors: 8,
            kind: "verity".into(),
            params: "p".into(),
        };
        let k = RecordingKernel::default();
        create_device(&k, "usr", &t).unwrap();
        assert_eq!(
            k.calls(),
            [
                "dm DevCreate usr",
                "dm TableLoad usr verity p",
                "dm DevSuspend usr"
            ]
        );

        let k = RecordingKernel::default();
        k.fail("dm TableLoad", libc::EINVAL);
        let e = create_device(&k, "usr", &t).unwrap_err();
        assert!(e.to_string().contains("DM_TABLE_LOAD usr"), "{e}");
        assert_eq!(
            k.calls(),
            [
                "dm DevCreate usr",
                "dm TableLoad usr verity p",
                "dm DevRemove usr"
            ]
        );
    }
}
