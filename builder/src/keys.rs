//! `crust keys init`: the ed25519 keys of the channel repositories' four TUF roles, and the
//! self-signed `root.json` that images carry as their root of trust
//! (`/usr/share/crust/update/root.json`, added by `crust build --keys DIR`).
//!
//! A keys directory holds `root.key`, `targets.key`, `snapshot.key`, `timestamp.key` (the
//! 32-byte ed25519 seed in hex, mode 0600) and `root.json`. All three channels use the same keys,
//! so a machine can switch channels without a new root of trust.

use crust_channels::publish::KeySet;
use crust_channels::tuf::{self, Role};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where `crust build` puts the root of trust, relative to the USR tree (mounted at /usr, so
/// machines read `/usr/share/crust/update/root.json`).
pub const ROOT_IN_IMAGE: &str = "share/crust/update/root.json";
/// How long a new root.json stays valid: machines refuse updates signed under an expired root.
pub const ROOT_LIFETIME: u64 = 5 * 365 * 86400;

#[derive(clap::Args, Debug, Clone)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum KeysCommand {
    /// Make the four role keys and a self-signed root.json.
    Init {
        /// Directory for the keys (created with mode 0700; existing keys are never overwritten).
        #[arg(long, default_value = "keys", env = "CRUST_KEYS")]
        dir: PathBuf,
    },
}

#[derive(Debug, Error)]
pub enum KeysError {
    #[error("{0:?} already holds keys: refusing to overwrite them (machines trust the root.json made from them); choose another --dir")]
    Exists(PathBuf),
    #[error("{path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0:?} is not a key file (64 hex digits, an ed25519 seed written by `crust keys init`)"
    )]
    BadKey(PathBuf),
    #[error("no keys in {0:?}: run `crust keys init --dir {0:?}` first")]
    Missing(PathBuf),
    #[error(transparent)]
    Tuf(#[from] tuf::TufError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeysError + '_ {
    move |source| KeysError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn key_file(dir: &Path, role: Role) -> PathBuf {
    dir.join(format!("{}.key", role.name()))
}

fn random_seed() -> Result<[u8; 32], KeysError> {
    let p = Path::new("/dev/urandom");
    let mut f = std::fs::File::open(p).map_err(io(p))?;
    let mut seed = [0u8; 32];
    f.read_exact(&mut seed).map_err(io(p))?;
    Ok(seed)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeysError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Creates the keys and root.json in `dir`; `now` is Unix seconds.
pub fn init(dir: &Path, now: u64) -> Result<KeySet, KeysError> {
    if Role::ALL.iter().any(|&r| key_file(dir, r).exists()) || dir.join("root.json").exists() {
        return Err(KeysError::Exists(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    let seeds = [
        random_seed()?,
        random_seed()?,
        random_seed()?,
        random_seed()?,
    ];
    let keys = KeySet::from_seeds(seeds);
    for role in Role::ALL {
        let seed = keys.get(role).to_bytes();
        write_new(
            &key_file(dir, role),
            (hex::encode(seed) + "\n").as_bytes(),
            0o600,
        )?;
    }
    let root = keys.root_metadata(1, now + ROOT_LIFETIME)?;
    write_new(&dir.join("root.json"), &root, 0o644)?;
    Ok(keys)
}

/// Reads the four keys of a keys directory.
pub fn load(dir: &Path) -> Result<KeySet, KeysError> {
    if !key_file(dir, Role::Root).exists() {
        return Err(KeysError::Missing(dir.to_path_buf()));
    }
    let mut seeds = [[0u8; 32]; 4];
    for (i, role) in [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp]
        .into_iter()
        .enumerate()
    {
        let p = key_file(dir, role);
        let text = std::fs::read_to_string(&p).map_err(io(&p))?;
        let raw = hex::decode(text.trim()).map_err(|_| KeysError::BadKey(p.clone()))?;
        seeds[i] = raw.try_into().map_err(|_| KeysError::BadKey(p.clone()))?;
    }
    Ok(KeySet::from_seeds(seeds))
}

/// The root of trust of a keys directory (what images carry).
pub fn root_json(dir: &Path) -> Result<Vec<u8>, KeysError> {
    let p = dir.join("root.json");
    if !p.exists() {
        return Err(KeysError::Missing(dir.to_path_buf()));
    }
    let raw = std::fs::read(&p).map_err(io(&p))?;
    // Refuse a root.json that is not self-signed before it is baked into an image.
    tuf::Trusted::new(&raw, tuf::Seen::default())?;
    Ok(raw)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn run(args: &KeysArgs) -> Result<(), KeysError> {
    match &args.command {
        KeysCommand::Init { dir } => {
            let keys = init(dir, now())?;
            let id = tuf::Key::ed25519(&keys.root.verifying_key()).id();
            println!(
                "keys written to {} (root key id {}); build images with `crust build --keys {}` to trust them",
                dir.display(),
                &id[..16],
                dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_gives_the_same_keys_and_refuses_overwrite() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("k");
        let made = init(&dir, 1_800_000_000).unwrap();
        let loaded = load(&dir).unwrap();
        for r in Role::ALL {
            assert_eq!(made.get(r).to_bytes(), loaded.get(r).to_bytes());
        }
        assert_ne!(made.root.to_bytes(), made.targets.to_bytes());
        let root = root_json(&dir).unwrap();
        let trusted = tuf::Trusted::new(&root, tuf::Seen::default()).unwrap();
        assert_eq!(trusted.root.roles.len(), 4);
        let mode = std::fs::metadata(key_file(&dir, Role::Root))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(init(&dir, 1), Err(KeysError::Exists(_))));
        assert!(matches!(load(t.path()), Err(KeysError::Missing(_))));
    }
}
