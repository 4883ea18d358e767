//! Management access over SSH: each cluster has its own ed25519 key (made with `ssh-keygen` in
//! the cluster directory), handed to every node through its metadata, and each node's SSH port is
//! forwarded from a 127.0.0.1 port by QEMU user networking (`restrict=on`).

use crate::error::{io, Error, Result};
use crate::shell::ExecOutput;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The user that cloud-config keys and metadata keys are given to (as on CoreOS).
pub const USER: &str = "core";

/// The cluster's key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub private: PathBuf,
    pub public: String,
}

/// Where a cluster keeps its key.
pub fn key_path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("ssh").join("id_ed25519")
}

/// Makes the cluster's key unless it exists; returns it.
pub fn ensure_key(ssh_keygen: &Path, cluster_dir: &Path, comment: &str) -> Result<Key> {
    let private = key_path(cluster_dir);
    let public_path = private.with_extension("pub");
    if !private.exists() {
        let dir = private.parent().unwrap_or(cluster_dir);
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let out = Command::new(ssh_keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(&private)
            .stdin(Stdio::null())
            .output()
            .map_err(io(format!("running {}", ssh_keygen.display())))?;
        if !out.status.success() {
            return Err(Error::Invalid {
                what: "ssh key",
                value: private.display().to_string(),
                reason: format!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
    }
    let public = std::fs::read_to_string(&public_path)
        .map_err(io(format!("reading {}", public_path.display())))?;
    Ok(Key {
        private,
        public: public.trim().to_string(),
    })
}

/// The `ssh` arguments that reach `core` on a node through its forwarded port. Host keys are
/// made fresh on each node's first boot, so they are not checked (the port is on loopback and
/// belongs to this cluster).
pub fn args(key: &Path, port: u16) -> Vec<String> {
    let mut a: Vec<String> = [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(key.display().to_string());
    a.extend(["-p".into(), port.to_string(), format!("{USER}@127.0.0.1")]);
    a
}

/// Runs `cmd` on a node over SSH and collects its output (stderr appended to stdout). A node
/// that is ready may still be making its host keys: a connection that the server resets or
/// refuses is tried again for up to 30 s.
pub fn run(ssh: &Path, key: &Path, port: u16, cmd: &str) -> Result<ExecOutput> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = run_once(ssh, key, port, cmd)?;
        let not_up = out.status == 255
            && [
                "kex_exchange_identification",
                "Connection refused",
                "Connection reset",
                "Connection closed",
            ]
            .iter()
            .any(|s| out.stdout.contains(s));
        if !not_up || std::time::Instant::now() > deadline {
            return Ok(out);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn run_once(ssh: &Path, key: &Path, port: u16, cmd: &str) -> Result<ExecOutput> {
    let out = Command::new(ssh)
        .args(args(key, port))
        .arg("--")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("running {}", ssh.display())))?;
    let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(ExecOutput {
        status: out.status.code().unwrap_or(255),
        stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_reach_core_on_loopback() {
        let a = args(Path::new("/s/c/ssh/id_ed25519"), 40022).join(" ");
        assert!(
            a.contains("-i /s/c/ssh/id_ed25519 -p 40022 core@127.0.0.1"),
            "{a}"
        );
        assert!(a.contains("BatchMode=yes"), "{a}");
    }

    #[test]
    fn key_is_made_once() {
        let Ok(keygen) = which_ssh_keygen() else {
            eprintln!("skipping: ssh-keygen is not installed (apt-get install openssh-client)");
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let k1 = ensure_key(&keygen, d.path(), "crust-test").unwrap();
        assert!(k1.public.starts_with("ssh-ed25519 "), "{}", k1.public);
        assert!(k1.public.ends_with("crust-test"));
        let k2 = ensure_key(&keygen, d.path(), "crust-test").unwrap();
        assert_eq!(k1, k2);
    }

    fn which_ssh_keygen() -> std::result::Result<PathBuf, ()> {
        ["/usr/bin/ssh-keygen", "/bin/ssh-keygen"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or(())
    }
}
