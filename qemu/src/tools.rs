//! Finding (and, where allowed, installing) the host tools a cluster needs: QEMU, OVMF, the
//! OpenSSH client and netcat.
//!
//! Overlays are written by this crate (`qcow2`), so `qemu-img` is not needed.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const QEMU: &str = "qemu-system-x86_64";

/// The apt command that provides every tool here. `qemu-utils` is left out on purpose: some
/// machines carry a newer `qemu-img` from backports that it would conflict with.
pub const INSTALL_COMMAND: [&str; 8] = [
    "apt-get",
    "install",
    "-y",
    "--no-install-recommends",
    "qemu-system-x86",
    "ovmf",
    "openssh-client",
    "netcat-openbsd",
];

/// Host tools, all present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub qemu: PathBuf,
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
    /// `ssh` and `ssh-keygen`, for management access to nodes.
    pub ssh: PathBuf,
    pub ssh_keygen: PathBuf,
    /// `nc` (OpenBSD netcat): QEMU runs one per guest connection to a host service
    /// (`guestfwd=...-cmd:nc`), since a chardev forward carries a single connection.
    pub nc: PathBuf,
}

/// What to do about missing tools.
#[derive(Debug, PartialEq, Eq)]
pub enum InstallPlan {
    /// Run this command (we are root on Debian or Ubuntu).
    Run(Vec<String>),
    /// Tell the user to run this command.
    Tell(String),
}

/// Installing is only attempted as root on an apt-based system; everyone else gets the command.
pub fn install_plan(is_root: bool, os_release: &str) -> InstallPlan {
    let apt_based = os_release.lines().any(|l| {
        let Some((key, value)) = l.split_once('=') else {
            return false;
        };
        let value = value.trim_matches('"').to_ascii_lowercase();
        (key == "ID" || key == "ID_LIKE")
            && value
                .split_whitespace()
                .any(|v| v == "debian" || v == "ubuntu")
    });
    let cmd: Vec<String> = INSTALL_COMMAND.iter().map(|s| s.to_string()).collect();
    if is_root && apt_based {
        InstallPlan::Run(cmd)
    } else {
        let sudo = if is_root { "" } else { "sudo " };
        InstallPlan::Tell(format!("{sudo}{}", cmd.join(" ")))
    }
}

/// Looks for the tools without changing anything. Returns the first missing one otherwise.
pub fn find() -> std::result::Result<Tools, &'static str> {
    let qemu = which(QEMU).ok_or(QEMU)?;
    let code = PathBuf::from(OVMF_CODE);
    let vars = PathBuf::from(OVMF_VARS);
    if !code.is_file() {
        return Err(OVMF_CODE);
    }
    if !vars.is_file() {
        return Err(OVMF_VARS);
    }
    let ssh = which("ssh").ok_or("ssh")?;
    let ssh_keygen = which("ssh-keygen").ok_or("ssh-keygen")?;
    let nc = which("nc").ok_or("nc")?;
    Ok(Tools {
        qemu,
        ovmf_code: code,
        ovmf_vars: vars,
        ssh,
        ssh_keygen,
        nc,
    })
}

/// Finds the tools, installing them with apt when that is allowed. `note` hears about the install
/// before it starts (it can take a minute).
pub fn ensure(note: &dyn Fn(&str)) -> Result<Tools> {
    let missing = match find() {
        Ok(t) => return Ok(t),
        Err(m) => m,
    };
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    match install_plan(nix::unistd::geteuid().is_root(), &os_release) {
        InstallPlan::Tell(command) => Err(Error::ToolMissing {
            what: missing.into(),
            command,
        }),
        InstallPlan::Run(cmd) => {
            let shown = cmd.join(" ");
            note(&format!("{missing} not found; running `{shown}`"));
            let status = Command::new(&cmd[0])
                .args(&cmd[1..])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map_err(|e| Error::InstallFailed {
                    command: shown.clone(),
                    status: e.to_string(),
                })?;
            if !status.success() {
                return Err(Error::InstallFailed {
                    command: shown,
                    status: status.to_string(),
                });
            }
            find().map_err(|m| Error::ToolMissing {
                what: format!("{m} (still, after installing)"),
                command: shown,
            })
        }
    }
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_only_as_root_on_apt_systems() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12\"\nID=debian\n";
        let mint = "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
        let fedora = "ID=fedora\n";
        let cmd = INSTALL_COMMAND.join(" ");
        assert!(matches!(install_plan(true, debian), InstallPlan::Run(c) if c.join(" ") == cmd));
        assert!(matches!(install_plan(true, mint), InstallPlan::Run(_)));
        assert_eq!(install_plan(true, fedora), InstallPlan::Tell(cmd.clone()));
        assert_eq!(
            install_plan(false, debian),
            InstallPlan::Tell(format!("sudo {cmd}"))
        );
    }
}
