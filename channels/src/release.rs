//! What a release is, as the signed targets metadata describes it.
//!
//! A release is three TUF targets under `releases/VERSION/`: `usr.img` (squashfs + dm-verity
//! tree, written whole into the inactive USR partition), `vmlinuz` and `initrd` (copied to the
//! ESP). The `usr.img` target's `custom` field carries [`ReleaseInfo`]: version, channel, the
//! verity root hash that goes on the kernel command line as `usrhash=`, and the rollout waves.

use crate::def::Wave;
use crate::tuf::Targets;
use crate::{Channel, Version};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The `custom` field of a release's `usr.img` target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInfo {
    pub version: Version,
    pub channel: Channel,
    /// dm-verity root hash (hex) of the USR image: `usrhash=` on the kernel command line.
    pub usrhash: String,
    /// Where the superblock and tree start inside `usr.img`.
    pub verity: VerityParams,
    /// Machines older than this must first update to an intermediate release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<Version>,
    /// Unix seconds of publication: the rollout waves count from here.
    pub published: u64,
    pub rollout: Vec<Wave>,
    /// The kernel command line of the release's loader entry, without `mount.usr=` and
    /// `usrhash=` (the machine adds those for the slot it writes).
    pub cmdline: String,
    pub kernel: String,
    pub initrd: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerityParams {
    pub hash_offset: u64,
    pub data_blocks: u64,
    pub salt: String,
}

/// A target as the machine downloads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    pub path: String,
    pub length: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub info: ReleaseInfo,
    pub usr: TargetRef,
    pub kernel: TargetRef,
    pub initrd: TargetRef,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReleaseError {
    #[error("target {path}: custom release data is invalid: {why}")]
    Custom { path: String, why: String },
    #[error(
        "target {path}: the release names {what} {missing:?}, which targets.json does not list"
    )]
    Missing {
        path: String,
        what: &'static str,
        missing: String,
    },
    #[error("target {path}: no sha256 hash")]
    NoHash { path: String },
    #[error("target {path} describes release {version}, but its path says otherwise")]
    PathMismatch { path: String, version: Version },
}

/// Target paths of a release.
pub fn usr_path(v: &Version) -> String {
    format!("releases/{v}/usr.img")
}
pub fn kernel_path(v: &Version) -> String {
    format!("releases/{v}/vmlinuz")
}
pub fn initrd_path(v: &Version) -> String {
    format!("releases/{v}/initrd")
}

fn target_ref(
    t: &Targets,
    path: &str,
    what: &'static str,
    from: &str,
) -> Result<TargetRef, ReleaseError> {
    let tg = t.targets.get(path).ok_or_else(|| ReleaseError::Missing {
        path: from.to_string(),
        what,
        missing: path.to_string(),
    })?;
    Ok(TargetRef {
        path: path.to_string(),
        length: tg.length,
        sha256: tg
            .sha256()
            .ok_or_else(|| ReleaseError::NoHash {
                path: path.to_string(),
            })?
            .to_string(),
    })
}

/// Every release in the targets metadata, oldest first.
pub fn releases(t: &Targets) -> Result<Vec<Release>, ReleaseError> {
    let mut out = Vec::new();
    for (path, tg) in &t.targets {
        if !path.ends_with("/usr.img") {
            continue;
        }
        let custom = tg.custom.clone().ok_or_else(|| ReleaseError::Custom {
            path: path.clone(),
            why: "missing".into(),
        })?;
        let info: ReleaseInfo =
            serde_json::from_value(custom).map_err(|e| ReleaseError::Custom {
                path: path.clone(),
                why: e.to_string(),
            })?;
        if *path != usr_path(&info.version) {
            return Err(ReleaseError::PathMismatch {
                path: path.clone(),
                version: info.version,
            });
        }
        out.push(Release {
            usr: target_ref(t, path, "usr image", path)?,
            kernel: target_ref(t, &info.kernel, "kernel", path)?,
            initrd: target_ref(t, &info.initrd, "initrd", path)?,
            info,
        });
    }
    out.sort_by_key(|r| r.info.version);
    Ok(out)
}

/// The newest release, if any.
pub fn latest(t: &Targets) -> Result<Option<Release>, ReleaseError> {
    Ok(releases(t)?.pop())
}
