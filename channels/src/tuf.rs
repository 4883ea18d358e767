//! TUF (The Update Framework) metadata: the four roles, ed25519 signatures over canonical JSON,
//! and the client-side update procedure with its protections.
//!
//! Written here instead of using the `tough` crate: the verifier runs in the image, whose one
//! static binary has a size budget, and `tough` brings tokio, reqwest, rustls and aws-lc-rs (a C
//! build) with it. The signer lives beside the verifier so both produce the same canonical bytes.
//!
//! What the client ([`Trusted::refresh`]) guarantees, following the TUF specification's client
//! workflow (section 5):
//! - root rotation: `N+1.root.json` must be signed by a threshold of the old *and* the new root
//!   keys, and versions go up by exactly one;
//! - rollback protection: no role's version may be lower than the one stored from the last
//!   refresh, and the snapshot may not list a lower targets version than before;
//! - freeze protection: expired metadata of any role is refused (`timestamp.json` expires soonest);
//! - mix-and-match protection: snapshot and targets must match the versions and hashes that the
//!   signed timestamp and snapshot name.

use crate::canonical::{to_canonical, CanonicalError};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use thiserror::Error;

/// The TUF specification version this metadata follows.
pub const SPEC_VERSION: &str = "1.0.31";

/// Upper bounds on fetched files, so a hostile server cannot fill memory.
pub const MAX_ROOT_BYTES: u64 = 512 * 1024;
pub const MAX_TIMESTAMP_BYTES: u64 = 16 * 1024;
pub const MAX_META_BYTES: u64 = 8 * 1024 * 1024;
/// How many root rotations one refresh follows at most (the spec's default is 32).
pub const MAX_ROOT_ROTATIONS: u64 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp];
    pub fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Targets => "targets",
            Role::Snapshot => "snapshot",
            Role::Timestamp => "timestamp",
        }
    }
    pub fn file(self) -> String {
        format!("{}.json", self.name())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Error)]
pub enum TufError {
    #[error("fetching {file} failed: {why}")]
    Fetch { file: String, why: String },
    #[error("{file} is missing on the update server: the channel repository is incomplete; publish to it again with `crust publish`")]
    Missing { file: String },
    #[error("{file} is larger than {max} bytes: refused (a server must not make the client read without bound)")]
    TooLarge { file: String, max: u64 },
    #[error("{file} is not valid TUF metadata: {why}")]
    Json { file: String, why: String },
    #[error("{file} has {valid} valid {role} signature(s), {threshold} needed: it was not signed by the keys the trusted root names (tampered, or signed with other keys than `crust keys init` made)")]
    Signatures {
        file: String,
        role: Role,
        valid: usize,
        threshold: u32,
    },
    #[error("{file} says _type {found:?}, expected {expected:?}")]
    WrongType {
        file: String,
        expected: &'static str,
        found: String,
    },
    #[error("{role} metadata expired at {expires} (now {now}): refused as frozen; the publisher must refresh it (`crust publish --channel CHANNEL --refresh`)")]
    Expired {
        role: Role,
        expires: String,
        now: String,
    },
    #[error("{role} metadata version {got} is lower than the trusted version {stored}: refused as a rollback (a replayed older release)")]
    Rollback { role: Role, stored: u64, got: u64 },
    #[error("{role} metadata has version {got}, but {by} names version {expected}: refused (mixed metadata)")]
    VersionMismatch {
        role: Role,
        by: &'static str,
        expected: u64,
        got: u64,
    },
    #[error("{file} does not match the length or sha256 that {by} records: refused (tampered or mixed metadata)")]
    HashMismatch { file: String, by: &'static str },
    #[error("key {keyid}: {why}")]
    BadKey { keyid: String, why: String },
    #[error("time {0:?} is not an RFC 3339 UTC time like 2030-01-01T00:00:00Z")]
    Time(String),
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
}

fn json_err(file: &str) -> impl FnOnce(serde_json::Error) -> TufError + '_ {
    move |e| TufError::Json {
        file: file.to_string(),
        why: e.to_string(),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    crust_hex(&Sha256::digest(bytes))
}

fn crust_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Time: RFC 3339 in UTC, seconds precision, without a date crate.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` into Unix seconds.
pub fn parse_time(s: &str) -> Result<u64, TufError> {
    let err = || TufError::Time(s.to_string());
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return Err(err());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, TufError> {
        let t = s.get(r).ok_or_else(err)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        t.parse().map_err(|_| err())
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let month_days = [
        31,
        28 + u32::from(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d == 0
        || d > month_days[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || se > 59
        || y < 1970
    {
        return Err(err());
    }
    let days = days_from_civil(i64::from(y), mo, d);
    Ok(days as u64 * 86400 + u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(se))
}

// ---------------------------------------------------------------------------------------------
// Metadata types.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    pub keytype: String,
    pub scheme: String,
    pub keyval: KeyVal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVal {
    /// Hex of the 32-byte ed25519 public key.
    pub public: String,
}

impl Key {
    pub fn ed25519(vk: &VerifyingKey) -> Key {
        Key {
            keytype: "ed25519".into(),
            scheme: "ed25519".into(),
            keyval: KeyVal {
                public: crust_hex(vk.as_bytes()),
            },
        }
    }

    /// The key id: sha256 of the key's canonical JSON, as TUF defines it.
    pub fn id(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        sha256_hex(&to_canonical(&v).unwrap_or_default())
    }

    fn verifying_key(&self, keyid: &str) -> Result<VerifyingKey, TufError> {
        let bad = |why: &str| TufError::BadKey {
            keyid: keyid.to_string(),
            why: why.to_string(),
        };
        if self.keytype != "ed25519" || self.scheme != "ed25519" {
            return Err(bad("only ed25519 keys are supported"));
        }
        let raw = unhex(&self.keyval.public).ok_or_else(|| bad("public key is not hex"))?;
        let arr: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("public key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&arr).map_err(|_| bad("public key is not a valid ed25519 point"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleKeys {
    pub keyids: Vec<String>,
    pub threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    #[serde(rename = "_type")]
    pub ty: String,
    pub spec_version: String,
    pub consistent_snapshot: bool,
    pub version: u64,
    pub expires: String,
    pub keys: BTreeMap<String, Key>,
    pub roles: BTreeMap<String, RoleKeys>,
}

/// What timestamp and snapshot record about another metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaFile {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<BTreeMap<String, String>>,
}

impl MetaFile {
    pub fn of(version: u64, raw: &[u8]) -> MetaFile {
        MetaFile {
            version,
            length: Some(raw.len() as u64),
            hashes: Some(BTreeMap::from([("sha256".to_string(), sha256_hex(raw))])),
        }
    }

    fn check(&self, file: &str, by: &'static str, raw: &[u8]) -> Result<(), TufError> {
        let mismatch = || TufError::HashMismatch {
            file: file.to_string(),
            by,
        };
        if self.length.is_some_and(|l| l != raw.len() as u64) {
            return Err(mismatch());
        }
        if let Some(h) = &self.hashes {
            match h.get("sha256") {
                Some(want) if *want == sha256_hex(raw) => {}
                _ => return Err(mismatch()),
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    #[serde(rename = "_type")]
    pub ty: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    pub meta: BTreeMap<String, MetaFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(rename = "_type")]
    pub ty: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    pub meta: BTreeMap<String, MetaFile>,
}

/// One target file: its length and hashes, and free-form `custom` data (crust's release
/// description, see [`crate::release`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub length: u64,
    pub hashes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
}

impl Target {
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    #[serde(rename = "_type")]
    pub ty: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    pub targets: BTreeMap<String, Target>,
}

/// The common header of every role's `signed` part.
pub trait Metadata: Serialize + DeserializeOwned {
    const ROLE: Role;
    fn version(&self) -> u64;
    fn expires(&self) -> &str;
    fn ty(&self) -> &str;
    fn spec_version(&self) -> &str;
}

macro_rules! metadata {
    ($t:ty, $role:expr) => {
        impl Metadata for $t {
            const ROLE: Role = $role;
            fn version(&self) -> u64 {
                self.version
            }
            fn expires(&self) -> &str {
                &self.expires
            }
            fn ty(&self) -> &str {
                &self.ty
            }
            fn spec_version(&self) -> &str {
                &self.spec_version
            }
        }
    };
}
metadata!(Root, Role::Root);
metadata!(Timestamp, Role::Timestamp);
metadata!(Snapshot, Role::Snapshot);
metadata!(Targets, Role::Targets);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sig {
    pub keyid: String,
    pub sig: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    signed: Value,
    signatures: Vec<Sig>,
}

/// Signs `signed` with every key in `keys`: the bytes of a metadata file, pretty-printed (the
/// signature covers the canonical form, so the layout of the file does not matter).
pub fn sign<T: Metadata>(signed: &T, keys: &[&SigningKey]) -> Result<Vec<u8>, TufError> {
    let value = serde_json::to_value(signed).map_err(json_err(&T::ROLE.file()))?;
    let bytes = to_canonical(&value)?;
    let signatures = keys
        .iter()
        .map(|k| Sig {
            keyid: Key::ed25519(&k.verifying_key()).id(),
            sig: crust_hex(&k.sign(&bytes).to_bytes()),
        })
        .collect();
    let env = Envelope {
        signed: value,
        signatures,
    };
    let mut out = serde_json::to_vec_pretty(&env).map_err(json_err(&T::ROLE.file()))?;
    out.push(b'\n');
    Ok(out)
}

/// Reads a metadata file's `signed` part without checking signatures (for the publisher's own
/// files, and as the first step of [`verify`]).
pub fn parse_unverified<T: Metadata>(file: &str, raw: &[u8]) -> Result<T, TufError> {
    let env: Envelope = serde_json::from_slice(raw).map_err(json_err(file))?;
    let t: T = serde_json::from_value(env.signed).map_err(json_err(file))?;
    check_header(file, &t)?;
    Ok(t)
}

fn check_header<T: Metadata>(file: &str, t: &T) -> Result<(), TufError> {
    if t.ty() != T::ROLE.name() {
        return Err(TufError::WrongType {
            file: file.to_string(),
            expected: T::ROLE.name(),
            found: t.ty().to_string(),
        });
    }
    if !t.spec_version().starts_with("1.") {
        return Err(TufError::Json {
            file: file.to_string(),
            why: format!("spec_version {:?} is not 1.x", t.spec_version()),
        });
    }
    parse_time(t.expires())?;
    Ok(())
}

/// Checks that a threshold of `role`'s keys in `root` signed `raw`, and returns its content.
pub fn verify<T: Metadata>(file: &str, raw: &[u8], root: &Root, role: Role) -> Result<T, TufError> {
    let env: Envelope = serde_json::from_slice(raw).map_err(json_err(file))?;
    let bytes = to_canonical(&env.signed)?;
    let rk = root.roles.get(role.name()).ok_or_else(|| TufError::Json {
        file: "root.json".into(),
        why: format!("no {role} role"),
    })?;
    let threshold = rk.threshold.max(1);
    // Each key counts once, however many signatures carry its id.
    let mut good = BTreeSet::new();
    for s in &env.signatures {
        if !rk.keyids.contains(&s.keyid) || good.contains(&s.keyid) {
            continue;
        }
        let Some(key) = root.keys.get(&s.keyid) else {
            continue;
        };
        if key.id() != s.keyid {
            continue;
        }
        let vk = key.verifying_key(&s.keyid)?;
        let Some(sig) = unhex(&s.sig).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            continue;
        };
        if vk
            .verify_strict(&bytes, &Signature::from_bytes(&sig))
            .is_ok()
        {
            good.insert(s.keyid.clone());
        }
    }
    if good.len() < threshold as usize {
        return Err(TufError::Signatures {
            file: file.to_string(),
            role,
            valid: good.len(),
            threshold,
        });
    }
    let t: T = serde_json::from_value(env.signed).map_err(json_err(file))?;
    check_header(file, &t)?;
    Ok(t)
}

fn check_expiry<T: Metadata>(t: &T, now: u64) -> Result<(), TufError> {
    if parse_time(t.expires())? <= now {
        return Err(TufError::Expired {
            role: T::ROLE,
            expires: t.expires().to_string(),
            now: format_time(now),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The client.

/// Where metadata comes from (HTTP on the machine, a directory or a map in tests).
pub trait Source {
    /// The file's bytes, `Ok(None)` when the server has no such file; at most `max` bytes
    /// (longer is an error).
    fn fetch(&mut self, file: &str, max: u64) -> Result<Option<Vec<u8>>, TufError>;
}

/// Versions seen in the last successful refresh: the floor for rollback protection. Persisted by
/// the caller between runs (update-engine keeps it under /var/lib/crust/update-engine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    pub timestamp: u64,
    pub snapshot: u64,
    pub targets: u64,
}

/// The client's trusted state: the newest verified root, and the floor versions.
#[derive(Debug, Clone)]
pub struct Trusted {
    pub root: Root,
    /// The bytes of `root`, to persist after a rotation.
    pub root_raw: Vec<u8>,
    pub seen: Seen,
}

impl Trusted {
    /// Starts from a root of trust (the one baked into the image, or the newer one persisted).
    /// A root is self-signed: a threshold of its own root keys must have signed it.
    pub fn new(root_raw: &[u8], seen: Seen) -> Result<Trusted, TufError> {
        let unverified: Root = parse_unverified("root.json", root_raw)?;
        let root = verify("root.json", root_raw, &unverified, Role::Root)?;
        Ok(Trusted {
            root,
            root_raw: root_raw.to_vec(),
            seen,
        })
    }

    /// One refresh as the TUF client workflow: root rotations, then timestamp, snapshot and
    /// targets, each verified against the trusted root, checked for rollback and expiry.
    /// On error nothing of the trusted state changes, except an already verified root rotation.
    pub fn refresh(&mut self, src: &mut dyn Source, now: u64) -> Result<Targets, TufError> {
        // 1. Root rotation.
        for _ in 0..MAX_ROOT_ROTATIONS {
            let next = self.root.version + 1;
            let file = format!("{next}.root.json");
            let Some(raw) = src.fetch(&file, MAX_ROOT_BYTES)? else {
                break;
            };
            let by_old: Root = verify(&file, &raw, &self.root, Role::Root)?;
            let by_new: Root = verify(&file, &raw, &by_old, Role::Root)?;
            if by_new.version != next {
                return Err(TufError::VersionMismatch {
                    role: Role::Root,
                    by: "its file name",
                    expected: next,
                    got: by_new.version,
                });
            }
            // New timestamp/snapshot keys invalidate the floors (spec 5.3.11).
            if by_new.roles.get("timestamp") != self.root.roles.get("timestamp") {
                self.seen.timestamp = 0;
                self.seen.snapshot = 0;
            }
            if by_new.roles.get("snapshot") != self.root.roles.get("snapshot") {
                self.seen.snapshot = 0;
            }
            self.root = by_new;
            self.root_raw = raw;
        }
        check_expiry(&self.root, now)?;

        // 2. Timestamp.
        let file = Role::Timestamp.file();
        let raw = src
            .fetch(&file, MAX_TIMESTAMP_BYTES)?
            .ok_or(TufError::Missing { file: file.clone() })?;
        let ts: Timestamp = verify(&file, &raw, &self.root, Role::Timestamp)?;
        if ts.version < self.seen.timestamp {
            return Err(TufError::Rollback {
                role: Role::Timestamp,
                stored: self.seen.timestamp,
                got: ts.version,
            });
        }
        let snap_meta = ts.meta.get("snapshot.json").ok_or_else(|| TufError::Json {
            file: file.clone(),
            why: "no meta entry for snapshot.json".into(),
        })?;
        if snap_meta.version < self.seen.snapshot {
            return Err(TufError::Rollback {
                role: Role::Snapshot,
                stored: self.seen.snapshot,
                got: snap_meta.version,
            });
        }
        check_expiry(&ts, now)?;

        // 3. Snapshot.
        let file = Role::Snapshot.file();
        let max = snap_meta
            .length
            .unwrap_or(MAX_META_BYTES)
            .min(MAX_META_BYTES);
        let raw = src
            .fetch(&file, max)?
            .ok_or(TufError::Missing { file: file.clone() })?;
        snap_meta.check(&file, "timestamp.json", &raw)?;
        let snap: Snapshot = verify(&file, &raw, &self.root, Role::Snapshot)?;
        if snap.version != snap_meta.version {
            return Err(TufError::VersionMismatch {
                role: Role::Snapshot,
                by: "timestamp.json",
                expected: snap_meta.version,
                got: snap.version,
            });
        }
        let targets_meta = snap
            .meta
            .get("targets.json")
            .ok_or_else(|| TufError::Json {
                file: file.clone(),
                why: "no meta entry for targets.json".into(),
            })?;
        if targets_meta.version < self.seen.targets {
            return Err(TufError::Rollback {
                role: Role::Targets,
                stored: self.seen.targets,
                got: targets_meta.version,
            });
        }
        check_expiry(&snap, now)?;

        // 4. Targets.
        let file = Role::Targets.file();
        let max = targets_meta
            .length
            .unwrap_or(MAX_META_BYTES)
            .min(MAX_META_BYTES);
        let raw = src
            .fetch(&file, max)?
            .ok_or(TufError::Missing { file: file.clone() })?;
        targets_meta.check(&file, "snapshot.json", &raw)?;
        let targets: Targets = verify(&file, &raw, &self.root, Role::Targets)?;
        if targets.version != targets_meta.version {
            return Err(TufError::VersionMismatch {
                role: Role::Targets,
                by: "snapshot.json",
                expected: targets_meta.version,
                got: targets.version,
            });
        }
        check_expiry(&targets, now)?;

        self.seen = Seen {
            timestamp: ts.version,
            snapshot: snap.version,
            targets: targets.version,
        };
        Ok(targets)
    }
}

/// Root metadata for four ed25519 keys, one per role, threshold 1 each.
pub fn root_for(keys: &[(Role, &SigningKey)], version: u64, expires: u64) -> Root {
    let mut all = BTreeMap::new();
    let mut roles = BTreeMap::new();
    for (role, k) in keys {
        let key = Key::ed25519(&k.verifying_key());
        let id = key.id();
        all.insert(id.clone(), key);
        roles
            .entry(role.name().to_string())
            .or_insert_with(|| RoleKeys {
                keyids: Vec::new(),
                threshold: 1,
            })
            .keyids
            .push(id);
    }
    Root {
        ty: "root".into(),
        spec_version: SPEC_VERSION.into(),
        consistent_snapshot: false,
        version,
        expires: format_time(expires),
        keys: all,
        roles,
    }
}

#[cfg(test)]
mod tests;
