//! The publisher's side of a channel repository: adding a release re-signs targets, snapshot and
//! timestamp with new versions; refreshing re-signs only the timestamp. Pure: bytes in, bytes out;
//! `crust publish` (builder) does the file I/O.

use crate::release::{self, ReleaseInfo, TargetRef};
use crate::tuf::{
    self, format_time, parse_unverified, verify, MetaFile, Role, Root, Snapshot, Target, Targets,
    Timestamp, TufError, SPEC_VERSION,
};
use crate::Version;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error(transparent)]
    Tuf(#[from] TufError),
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
    #[error("version {new} is not higher than the channel's latest release {latest}: publish a higher version (for example {suggest})")]
    NotNewer {
        new: Version,
        latest: Version,
        suggest: String,
    },
    #[error("the keys do not match the repository's root.json ({0}); use the keys directory the repository was made with")]
    KeyMismatch(String),
    #[error("the repository has no timestamp yet: publish a release first")]
    Empty,
}

/// The four role keys of a channel repository.
pub struct KeySet {
    pub root: SigningKey,
    pub targets: SigningKey,
    pub snapshot: SigningKey,
    pub timestamp: SigningKey,
}

impl KeySet {
    pub fn from_seeds(seeds: [[u8; 32]; 4]) -> KeySet {
        let [r, ta, s, ti] = seeds;
        KeySet {
            root: SigningKey::from_bytes(&r),
            targets: SigningKey::from_bytes(&ta),
            snapshot: SigningKey::from_bytes(&s),
            timestamp: SigningKey::from_bytes(&ti),
        }
    }

    pub fn get(&self, role: Role) -> &SigningKey {
        match role {
            Role::Root => &self.root,
            Role::Targets => &self.targets,
            Role::Snapshot => &self.snapshot,
            Role::Timestamp => &self.timestamp,
        }
    }

    /// A self-signed root.json naming these keys.
    pub fn root_metadata(&self, version: u64, expires: u64) -> Result<Vec<u8>, TufError> {
        let keys: Vec<(Role, &SigningKey)> = Role::ALL.iter().map(|&r| (r, self.get(r))).collect();
        let root = tuf::root_for(&keys, version, expires);
        tuf::sign(&root, &[&self.root])
    }
}

/// How long each role's signatures stay valid, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub root: u64,
    pub targets: u64,
    pub snapshot: u64,
    pub timestamp: u64,
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            root: 365 * 86400,
            targets: 365 * 86400,
            snapshot: 365 * 86400,
            timestamp: crate::def::DEFAULT_TIMESTAMP_EXPIRES,
        }
    }
}

/// A channel repository's current metadata, as read from its files.
#[derive(Debug, Clone)]
pub struct Repo {
    pub root_raw: Vec<u8>,
    pub targets: Option<Targets>,
    pub snapshot: Option<Snapshot>,
    pub timestamp: Option<Timestamp>,
}

impl Repo {
    pub fn load(
        root_raw: &[u8],
        targets: Option<&[u8]>,
        snapshot: Option<&[u8]>,
        timestamp: Option<&[u8]>,
    ) -> Result<Repo, TufError> {
        Ok(Repo {
            root_raw: root_raw.to_vec(),
            targets: targets
                .map(|r| parse_unverified("targets.json", r))
                .transpose()?,
            snapshot: snapshot
                .map(|r| parse_unverified("snapshot.json", r))
                .transpose()?,
            timestamp: timestamp
                .map(|r| parse_unverified("timestamp.json", r))
                .transpose()?,
        })
    }

    fn root(&self) -> Result<Root, TufError> {
        parse_unverified("root.json", &self.root_raw)
    }
}

/// The files a publication writes.
#[derive(Debug, Clone)]
pub struct Signed {
    pub targets: Option<Vec<u8>>,
    pub snapshot: Option<Vec<u8>>,
    pub timestamp: Vec<u8>,
}

fn self_check(root: &Root, role: Role, raw: &[u8]) -> Result<(), PublishError> {
    let file = role.file();
    let ok = match role {
        Role::Targets => verify::<Targets>(&file, raw, root, role).map(drop),
        Role::Snapshot => verify::<Snapshot>(&file, raw, root, role).map(drop),
        _ => verify::<Timestamp>(&file, raw, root, role).map(drop),
    };
    ok.map_err(|_| {
        PublishError::KeyMismatch(format!("the {role} key is not the one root.json names"))
    })
}

/// A release's three targets, with the `custom` description on `usr.img`.
pub struct NewRelease {
    pub info: ReleaseInfo,
    pub usr: TargetRef,
    pub kernel: TargetRef,
    pub initrd: TargetRef,
}

fn target(t: &TargetRef, custom: Value) -> Target {
    Target {
        length: t.length,
        hashes: BTreeMap::from([("sha256".to_string(), t.sha256.clone())]),
        custom: Some(custom),
    }
}

/// Adds a release: targets, snapshot and timestamp get the next versions and fresh expiries.
pub fn add_release(
    repo: &Repo,
    keys: &KeySet,
    rel: &NewRelease,
    now: u64,
    life: Lifetimes,
) -> Result<Signed, PublishError> {
    let root = repo.root()?;
    let mut targets = repo.targets.clone().unwrap_or(Targets {
        ty: "targets".into(),
        spec_version: SPEC_VERSION.into(),
        version: 0,
        expires: String::new(),
        targets: BTreeMap::new(),
    });
    if let Some(latest) = release::latest(&targets)? {
        if !rel.info.version.is_newer_than(&latest.info.version) {
            let suggest = latest
                .info
                .version
                .next_patch()
                .map_or_else(|| "a higher MAJOR".to_string(), |v| v.to_string());
            return Err(PublishError::NotNewer {
                new: rel.info.version,
                latest: latest.info.version,
                suggest,
            });
        }
    }
    let info = serde_json::to_value(&rel.info).map_err(|e| TufError::Json {
        file: "targets.json".into(),
        why: e.to_string(),
    })?;
    let v = rel.info.version.to_string();
    targets
        .targets
        .insert(rel.usr.path.clone(), target(&rel.usr, info));
    for (t, kind) in [(&rel.kernel, "kernel"), (&rel.initrd, "initrd")] {
        targets.targets.insert(
            t.path.clone(),
            target(t, serde_json::json!({ "kind": kind, "version": v })),
        );
    }
    targets.version += 1;
    targets.expires = format_time(now + life.targets);
    let targets_raw = tuf::sign(&targets, &[&keys.targets])?;
    self_check(&root, Role::Targets, &targets_raw)?;
    // The new set must read back as releases, or machines would refuse it.
    release::releases(&targets)?;

    let (snapshot_raw, timestamp_raw) =
        sign_snapshot_and_timestamp(repo, keys, &root, targets.version, &targets_raw, now, life)?;
    Ok(Signed {
        targets: Some(targets_raw),
        snapshot: Some(snapshot_raw),
        timestamp: timestamp_raw,
    })
}

fn sign_snapshot_and_timestamp(
    repo: &Repo,
    keys: &KeySet,
    root: &Root,
    targets_version: u64,
    targets_raw: &[u8],
    now: u64,
    life: Lifetimes,
) -> Result<(Vec<u8>, Vec<u8>), PublishError> {
    let snapshot = Snapshot {
        ty: "snapshot".into(),
        spec_version: SPEC_VERSION.into(),
        version: repo.snapshot.as_ref().map_or(0, |s| s.version) + 1,
        expires: format_time(now + life.snapshot),
        meta: BTreeMap::from([(
            "targets.json".to_string(),
            MetaFile::of(targets_version, targets_raw),
        )]),
    };
    let snapshot_raw = tuf::sign(&snapshot, &[&keys.snapshot])?;
    self_check(root, Role::Snapshot, &snapshot_raw)?;
    let ts = timestamp(repo, snapshot.version, &snapshot_raw, now, life);
    let ts_raw = tuf::sign(&ts, &[&keys.timestamp])?;
    self_check(root, Role::Timestamp, &ts_raw)?;
    Ok((snapshot_raw, ts_raw))
}

fn timestamp(
    repo: &Repo,
    snapshot_version: u64,
    snapshot_raw: &[u8],
    now: u64,
    life: Lifetimes,
) -> Timestamp {
    Timestamp {
        ty: "timestamp".into(),
        spec_version: SPEC_VERSION.into(),
        version: repo.timestamp.as_ref().map_or(0, |t| t.version) + 1,
        expires: format_time(now + life.timestamp),
        meta: BTreeMap::from([(
            "snapshot.json".to_string(),
            MetaFile::of(snapshot_version, snapshot_raw),
        )]),
    }
}

/// Re-signs the timestamp (next version, fresh expiry) so machines keep accepting the channel:
/// run it more often than the timestamp lifetime.
pub fn refresh(
    repo: &Repo,
    keys: &KeySet,
    now: u64,
    life: Lifetimes,
) -> Result<Signed, PublishError> {
    let root = repo.root()?;
    let old = repo.timestamp.as_ref().ok_or(PublishError::Empty)?;
    let mut ts = old.clone();
    ts.version += 1;
    ts.expires = format_time(now + life.timestamp);
    let raw = tuf::sign(&ts, &[&keys.timestamp])?;
    self_check(&root, Role::Timestamp, &raw)?;
    Ok(Signed {
        targets: None,
        snapshot: None,
        timestamp: raw,
    })
}
