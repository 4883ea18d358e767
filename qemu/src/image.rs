//! A cheap check that a file is a crust disk image, done before anything is started.

use crate::error::{Error, Result};
use std::path::Path;

/// Partition labels every crust image carries (DESIGN.md, disk layout).
pub const REQUIRED_LABELS: [&str; 2] = ["EFI-SYSTEM", "USR-A"];

/// Size in bytes of a readable crust image at `path`.
pub fn check(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|_| Error::ImageMissing(path.to_path_buf()))?;
    let not_crust = |reason: String| Error::NotCrustImage {
        path: path.to_path_buf(),
        reason,
    };
    if !meta.is_file() {
        return Err(not_crust("not a regular file".into()));
    }
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(path)
        .map_err(|e| not_crust(format!("no readable GPT ({e})")))?;
    let labels: Vec<&str> = disk
        .partitions()
        .values()
        .map(|p| p.name.as_str())
        .collect();
    check_labels(&labels).map_err(not_crust)?;
    Ok(meta.len())
}

/// Pure part of [`check`]: the labels that are missing, as a message.
pub fn check_labels(labels: &[&str]) -> std::result::Result<(), String> {
    let missing: Vec<&str> = REQUIRED_LABELS
        .iter()
        .copied()
        .filter(|want| !labels.contains(want))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "partition table lacks {} (has: {})",
            missing.join(", "),
            if labels.is_empty() {
                "no partitions".to_string()
            } else {
                labels.join(", ")
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(check_labels(&["EFI-SYSTEM", "BIOS-BOOT", "USR-A", "USR-B", "ROOT"]).is_ok());
        let e = check_labels(&["EFI-SYSTEM"]).unwrap_err();
        assert_eq!(e, "partition table lacks USR-A (has: EFI-SYSTEM)");
        assert!(check_labels(&[]).unwrap_err().contains("no partitions"));
    }

    #[test]
    fn missing_and_garbage_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.img");
        assert!(matches!(check(&missing), Err(Error::ImageMissing(_))));
        let junk = dir.path().join("junk.img");
        std::fs::write(&junk, vec![0u8; 64 * 1024]).expect("write");
        let e = check(&junk).unwrap_err();
        assert!(matches!(e, Error::NotCrustImage { .. }), "{e}");
        assert!(matches!(
            check(dir.path()),
            Err(Error::NotCrustImage { .. })
        ));
    }
}
