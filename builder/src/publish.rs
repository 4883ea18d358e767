//! `crust publish --channel CHANNEL BUILD_DIR`: adds a build (its `crust.json`, `usr.img`,
//! `vmlinuz`, `initrd`) to that channel's TUF repository under `--repo` and re-signs targets,
//! snapshot and timestamp. `--refresh` only re-signs the timestamp.
//!
//! Files are written with a temporary name and renamed, targets first and `timestamp.json` last,
//! so a machine that fetches during a publication sees either the old or the new release set.

use crate::keys::{self, KeysError};
use crust_channels::def::{ChannelDef, DefError};
use crust_channels::publish::{self, KeySet, Lifetimes, NewRelease, PublishError, Repo};
use crust_channels::release::{self, ReleaseInfo, TargetRef, VerityParams};
use crust_channels::{Channel, Version, VersionError};
use serde::Deserialize;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(clap::Args, Debug, Clone)]
pub struct PublishArgs {
    /// Channel to publish to: stable, beta or alpha (the build's MINOR must match it).
    #[arg(long)]
    pub channel: Channel,
    /// A `crust build --out` directory (crust.json, usr.img, vmlinuz, initrd).
    #[arg(required_unless_present = "refresh")]
    pub build_dir: Option<PathBuf>,
    /// Repository root; the channel's repository is REPO/CHANNEL.
    #[arg(long, default_value = "repo")]
    pub repo: PathBuf,
    /// Keys directory made by `crust keys init`.
    #[arg(long, default_value = "keys", env = "CRUST_KEYS")]
    pub keys: PathBuf,
    /// Channel definitions directory (CHANNEL.yaml: rollout waves, timestamp lifetime).
    #[arg(long)]
    pub channels_dir: Option<PathBuf>,
    /// Machines older than this version must not jump straight to this release.
    #[arg(long)]
    pub min_version: Option<Version>,
    /// Override the channel's timestamp lifetime (90s, 15m, 2h, 1d).
    #[arg(long, value_parser = parse_secs)]
    pub timestamp_expires: Option<u64>,
    /// Only re-sign timestamp.json with a fresh expiry (run it more often than its lifetime).
    #[arg(long)]
    pub refresh: bool,
}

fn parse_secs(s: &str) -> Result<u64, String> {
    crust_channels::def::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 90s, 15m, 2h or 1d"))
}

#[derive(Debug, Error)]
pub enum PublishCmdError {
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Def(#[from] DefError),
    #[error(transparent)]
    Tuf(#[from] crust_channels::tuf::TufError),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Build(#[from] crate::build::BuildError),
    #[error(transparent)]
    Verity(#[from] crate::verity::VerityError),
    #[error("{path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path:?} is not a crust build description: {why}")]
    BuildJson { path: PathBuf, why: String },
    #[error("{name} in {dir:?} does not match crust.json (size or sha256 differ): the build directory was changed after `crust build`; rebuild it")]
    Changed { name: String, dir: PathBuf },
    #[error("usr.img's verity root hash is {got}, crust.json says {want}: the USR image is damaged; rebuild it")]
    RootHash { got: String, want: String },
    #[error("the repository {0:?} was made with other keys than --keys: its root.json differs from the keys directory's")]
    OtherRoot(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishCmdError + '_ {
    move |source| PublishCmdError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The part of `crust.json` publishing needs.
#[derive(Debug, Deserialize)]
pub struct BuildJson {
    pub version: Version,
    pub channel: Channel,
    pub cmdline: String,
    pub verity: BuildVerity,
    pub files: Vec<BuildFile>,
}

#[derive(Debug, Deserialize)]
pub struct BuildVerity {
    pub root_hash: String,
    pub salt: String,
    pub data_blocks: u64,
    pub hash_offset: u64,
}

#[derive(Debug, Deserialize)]
pub struct BuildFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// The command line without the per-slot words the machine adds itself.
pub fn base_cmdline(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .filter(|w| {
            let key = w.split('=').next().unwrap_or(w);
            ![
                crust_common::cmdline::MOUNT_USR,
                crust_common::cmdline::USRHASH,
                crust_common::cmdline::VERIFY,
            ]
            .contains(&key)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A channel's repository directory and its metadata directory.
pub fn channel_dir(repo: &Path, channel: Channel) -> PathBuf {
    repo.join(channel.name())
}

fn read_opt(p: &Path) -> Result<Option<Vec<u8>>, PublishCmdError> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(p)(e)),
    }
}

/// Loads (or starts) a channel repository trusted by `root`.
fn open_repo(dir: &Path, root: &[u8]) -> Result<Repo, PublishCmdError> {
    let meta = dir.join("metadata");
    std::fs::create_dir_all(&meta).map_err(io(&meta))?;
    match read_opt(&meta.join("root.json"))? {
        Some(existing) if existing != root => {
            return Err(PublishCmdError::OtherRoot(dir.to_path_buf()))
        }
        Some(_) => {}
        None => {
            write_atomic(&meta.join("1.root.json"), root)?;
            write_atomic(&meta.join("root.json"), root)?;
        }
    }
    Ok(Repo::load(
        root,
        read_opt(&meta.join("targets.json"))?.as_deref(),
        read_opt(&meta.join("snapshot.json"))?.as_deref(),
        read_opt(&meta.join("timestamp.json"))?.as_deref(),
    )?)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PublishCmdError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn write_signed(dir: &Path, s: &publish::Signed) -> Result<(), PublishCmdError> {
    let meta = dir.join("metadata");
    if let Some(t) = &s.targets {
        write_atomic(&meta.join("targets.json"), t)?;
    }
    if let Some(t) = &s.snapshot {
        write_atomic(&meta.join("snapshot.json"), t)?;
    }
    write_atomic(&meta.join("timestamp.json"), &s.timestamp)
}

fn lifetimes(args: &PublishArgs) -> Result<Lifetimes, PublishCmdError> {
    let dir = args
        .channels_dir
        .clone()
        .unwrap_or_else(|| crate::agent::source_dir().join("channels"));
    let def = ChannelDef::load(&dir.join(format!("{}.yaml", args.channel)))?;
    Ok(Lifetimes {
        timestamp: args.timestamp_expires.unwrap_or(def.timestamp_expires),
        ..Lifetimes::default()
    })
}

/// Checks a build directory and describes it as a release (does not write anything).
pub fn release_of(
    build_dir: &Path,
    channel: Channel,
    min_version: Option<Version>,
    waves: Vec<crust_channels::def::Wave>,
    now: u64,
) -> Result<NewRelease, PublishCmdError> {
    let json_path = build_dir.join("crust.json");
    let text = std::fs::read(&json_path).map_err(io(&json_path))?;
    let b: BuildJson = serde_json::from_slice(&text).map_err(|e| PublishCmdError::BuildJson {
        path: json_path.clone(),
        why: e.to_string(),
    })?;
    b.version.check_channel(channel)?;
    let mut refs = Vec::new();
    for (name, path) in [
        ("usr.img", release::usr_path(&b.version)),
        ("vmlinuz", release::kernel_path(&b.version)),
        ("initrd", release::initrd_path(&b.version)),
    ] {
        let (length, sha256) = crate::build::sha256_file(&build_dir.join(name))?;
        let recorded = b.files.iter().find(|f| f.name == name);
        if recorded.is_none_or(|f| f.size != length || f.sha256 != sha256) {
            return Err(PublishCmdError::Changed {
                name: name.to_string(),
                dir: build_dir.to_path_buf(),
            });
        }
        refs.push(TargetRef {
            path,
            length,
            sha256,
        });
    }
    // The root hash machines will put on their command line must be the image's real one.
    let usr = build_dir.join("usr.img");
    let mut f = std::fs::File::open(&usr).map_err(io(&usr))?;
    let salt = hex::decode(&b.verity.salt).map_err(|e| PublishCmdError::BuildJson {
        path: json_path.clone(),
        why: format!("verity.salt: {e}"),
    })?;
    f.seek(SeekFrom::Start(0)).map_err(io(&usr))?;
    let got = hex::encode(crate::verity::root_hash_of(
        &mut (&mut f).take(b.verity.hash_offset),
        b.verity.data_blocks,
        &salt,
    )?);
    if got != b.verity.root_hash {
        return Err(PublishCmdError::RootHash {
            got,
            want: b.verity.root_hash,
        });
    }
    let [usr, kernel, initrd]: [TargetRef; 3] =
        refs.try_into().map_err(|_| PublishCmdError::BuildJson {
            path: json_path.clone(),
            why: "internal: three targets expected".into(),
        })?;
    Ok(NewRelease {
        info: ReleaseInfo {
            version: b.version,
            channel,
            usrhash: b.verity.root_hash.clone(),
            verity: VerityParams {
                hash_offset: b.verity.hash_offset,
                data_blocks: b.verity.data_blocks,
                salt: b.verity.salt.clone(),
            },
            min_version,
            published: now,
            rollout: waves,
            cmdline: base_cmdline(&b.cmdline),
            kernel: kernel.path.clone(),
            initrd: initrd.path.clone(),
        },
        usr,
        kernel,
        initrd,
    })
}

/// Publishes (or refreshes) with explicit keys, root and time: what the CLI and tests share.
pub fn publish_with(
    args: &PublishArgs,
    keys: &KeySet,
    root: &[u8],
    now: u64,
) -> Result<String, PublishCmdError> {
    let life = lifetimes(args)?;
    let dir = channel_dir(&args.repo, args.channel);
    // Refreshing must not create an empty channel repository as a side effect.
    if args.refresh && !dir.join("metadata/timestamp.json").is_file() {
        return Err(PublishError::Empty.into());
    }
    if args.refresh {
        let repo = open_repo(&dir, root)?;
        let signed = publish::refresh(&repo, keys, now, life)?;
        write_signed(&dir, &signed)?;
        return Ok(format!(
            "{}: timestamp re-signed, valid for {}s",
            args.channel, life.timestamp
        ));
    }
    let build_dir = args.build_dir.as_deref().unwrap_or(Path::new("."));
    let defs = args
        .channels_dir
        .clone()
        .unwrap_or_else(|| crate::agent::source_dir().join("channels"));
    let def = ChannelDef::load(&defs.join(format!("{}.yaml", args.channel)))?;
    // Check the build before touching the repository: a refused build leaves nothing behind.
    let rel = release_of(build_dir, args.channel, args.min_version, def.rollout, now)?;
    let repo = open_repo(&dir, root)?;
    // Sign first: a refused version (not newer) must not leave copied files behind.
    let signed = publish::add_release(&repo, keys, &rel, now, life)?;
    for (t, name) in [
        (&rel.usr, "usr.img"),
        (&rel.kernel, "vmlinuz"),
        (&rel.initrd, "initrd"),
    ] {
        let dest = dir.join("targets").join(&t.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let tmp = dest.with_extension("tmp");
        std::fs::copy(build_dir.join(name), &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    }
    write_signed(&dir, &signed)?;
    Ok(format!(
        "published {} to {} in {} (usrhash {})",
        rel.info.version,
        args.channel,
        dir.display(),
        &rel.info.usrhash[..16]
    ))
}

pub fn run(args: &PublishArgs) -> Result<String, PublishCmdError> {
    let keys = keys::load(&args.keys)?;
    let root = keys::root_json(&args.keys)?;
    publish_with(args, &keys, &root, keys::now())
}

/// Small but real build directories for tests of publishing and updating (here and in
/// update-engine's host tests): a `usr.img` with a genuine verity tree, a kernel and initrd
/// stand-in, and a matching `crust.json`. Contents depend on the version, so releases differ.
pub mod fixture {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Writes a build of `version` with `blocks` 4 KiB data blocks into `dir`.
    pub fn fake_build(dir: &Path, version: &str, blocks: u64) -> Result<(), PublishCmdError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut data = Vec::new();
        let mut i = 0u64;
        while (data.len() as u64) < blocks * 4096 - 100 {
            data.extend_from_slice(&Sha256::digest(format!("{version} {i}").as_bytes()));
            i += 1;
        }
        data[..4].copy_from_slice(b"hsqs");
        let usr = dir.join("usr.img");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&usr)
            .map_err(io(&usr))?;
        std::io::Write::write_all(&mut f, &data).map_err(io(&usr))?;
        let salt = Sha256::digest(version.as_bytes()).to_vec();
        let info = crate::verity::append_hash_tree(&mut f, data.len() as u64, &salt, [7u8; 16])?;
        drop(f);
        std::fs::write(
            dir.join("vmlinuz"),
            format!("kernel {version}\n").repeat(100),
        )
        .map_err(io(dir))?;
        std::fs::write(dir.join("initrd"), format!("initrd {version}\n").repeat(50))
            .map_err(io(dir))?;
        let mut files = Vec::new();
        for name in ["usr.img", "vmlinuz", "initrd"] {
            let (size, sha256) = crate::build::sha256_file(&dir.join(name))?;
            files.push(serde_json::json!({"name": name, "size": size, "sha256": sha256}));
        }
        let v: Version = version.parse()?;
        let json = serde_json::json!({
            "version": version,
            "channel": v.channel().map_or("alpha", |c| c.name()),
            "cmdline": format!("console=ttyS0 mount.usr=PARTUUID=x usrhash={}", hex::encode(info.root_hash)),
            "verity": {
                "root_hash": hex::encode(info.root_hash),
                "salt": hex::encode(&info.salt),
                "data_blocks": info.data_blocks,
                "hash_offset": info.hash_offset,
                "squashfs_bytes": data.len(),
            },
            "files": files,
        });
        let p = dir.join("crust.json");
        std::fs::write(&p, serde_json::to_vec_pretty(&json).unwrap_or_default()).map_err(io(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(repo: &Path, build: Option<&Path>, channel: Channel) -> PublishArgs {
        PublishArgs {
            channel,
            build_dir: build.map(Path::to_path_buf),
            repo: repo.to_path_buf(),
            keys: PathBuf::new(),
            channels_dir: Some(crate::agent::source_dir().join("channels")),
            min_version: None,
            timestamp_expires: None,
            refresh: false,
        }
    }

    #[test]
    fn keys_publish_show_and_refusals() {
        let t = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        let keys = crate::keys::init(&t.path().join("keys"), now).unwrap();
        let root = crate::keys::root_json(&t.path().join("keys")).unwrap();
        let repo = t.path().join("repo");
        for v in ["2.1.0", "2.1.1"] {
            let b = t.path().join(v);
            fixture::fake_build(&b, v, 3).unwrap();
            let msg =
                publish_with(&args(&repo, Some(&b), Channel::Beta), &keys, &root, now).unwrap();
            assert!(msg.contains(v), "{msg}");
        }
        assert!(repo.join("beta/targets/releases/2.1.1/usr.img").is_file());
        let (_, rels, _) = crate::channel::verified(&repo, Channel::Beta, now + 1).unwrap();
        assert_eq!(rels.len(), 2);
        assert_eq!(rels[1].info.cmdline, "console=ttyS0");
        assert_eq!(rels[1].info.rollout.last().map(|w| w.percent), Some(100));
        // Not newer: refused, nothing copied.
        let b = t.path().join("2.1.0");
        let e = publish_with(&args(&repo, Some(&b), Channel::Beta), &keys, &root, now).unwrap_err();
        assert!(e.to_string().contains("not higher"), "{e}");
        // Wrong channel for the version.
        let e =
            publish_with(&args(&repo, Some(&b), Channel::Stable), &keys, &root, now).unwrap_err();
        assert!(e.to_string().contains("MINOR must be 2"), "{e}");
        // A changed artifact is noticed.
        let c = t.path().join("2.1.5");
        fixture::fake_build(&c, "2.1.5", 2).unwrap();
        std::fs::write(c.join("initrd"), b"other").unwrap();
        let e = publish_with(&args(&repo, Some(&c), Channel::Beta), &keys, &root, now).unwrap_err();
        assert!(matches!(e, PublishCmdError::Changed { .. }), "{e}");
        // Refresh re-signs only the timestamp, and never creates a repository.
        let mut empty = args(&repo, None, Channel::Stable);
        empty.refresh = true;
        assert!(publish_with(&empty, &keys, &root, now).is_err());
        assert!(!repo.join("stable").exists());
        let mut a = args(&repo, None, Channel::Beta);
        a.refresh = true;
        a.timestamp_expires = Some(60);
        publish_with(&a, &keys, &root, now + 10).unwrap();
        assert!(crate::channel::verified(&repo, Channel::Beta, now + 69).is_ok());
        let e = crate::channel::verified(&repo, Channel::Beta, now + 70).unwrap_err();
        assert!(format!("{e:#}").contains("expired"), "{e:#}");
        // Other keys cannot publish into this repository.
        let other = crate::keys::init(&t.path().join("k2"), now).unwrap();
        let root2 = crate::keys::root_json(&t.path().join("k2")).unwrap();
        let good = t.path().join("2.1.6");
        fixture::fake_build(&good, "2.1.6", 2).unwrap();
        let e = publish_with(
            &args(&repo, Some(&good), Channel::Beta),
            &other,
            &root2,
            now,
        )
        .unwrap_err();
        assert!(matches!(e, PublishCmdError::OtherRoot(_)), "{e}");
    }

    #[test]
    fn strips_per_slot_words() {
        assert_eq!(
            base_cmdline(
                "console=ttyS0 quiet mount.usr=PARTUUID=x usrhash=ab crust.verify=lazy panic=10"
            ),
            "console=ttyS0 quiet panic=10"
        );
    }
}
