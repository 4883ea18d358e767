//! Where clusters keep their files, and the names that are safe to use there.
//!
//! Layout: `<root>/<cluster>/cluster.json` and one directory per node, `<root>/<cluster>/<node>/`,
//! holding everything that node's QEMU uses (see [`NodePaths`]).

use crate::error::{Error, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The cluster name used when none is given.
pub const DEFAULT_CLUSTER: &str = "default";

/// Unix socket paths are limited to 108 bytes including the trailing NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The environment values that decide the state root, read once so the choice is testable.
#[derive(Debug, Default, Clone)]
pub struct StateEnv {
    pub crust_state: Option<OsString>,
    pub xdg_state_home: Option<OsString>,
    pub home: Option<OsString>,
}

impl StateEnv {
    pub fn from_process() -> Self {
        StateEnv {
            crust_state: std::env::var_os("CRUST_STATE"),
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
        }
    }

    /// `$CRUST_STATE`, else `$XDG_STATE_HOME/crust/clusters`, else
    /// `~/.local/state/crust/clusters`. Empty values count as unset; a relative
    /// `XDG_STATE_HOME` is ignored, as the XDG spec asks.
    pub fn root(&self) -> Result<PathBuf> {
        let set = |v: &Option<OsString>| v.as_ref().filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(p) = set(&self.crust_state) {
            return Ok(p);
        }
        if let Some(p) = set(&self.xdg_state_home).filter(|p| p.is_absolute()) {
            return Ok(p.join("crust").join("clusters"));
        }
        if let Some(h) = set(&self.home) {
            return Ok(h.join(".local/state/crust/clusters"));
        }
        Err(Error::Invalid {
            what: "environment",
            value: String::new(),
            reason: "none of CRUST_STATE, XDG_STATE_HOME, HOME is set; set CRUST_STATE".into(),
        })
    }
}

/// Cluster and node names become directory names, so they are kept to a safe alphabet.
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let reason = if name.is_empty() || name.len() > 32 {
        "must be 1 to 32 characters"
    } else if !name.chars().all(ok_char) {
        "may only use letters, digits, '-' and '_'"
    } else if name.starts_with('-') {
        "must not start with '-'"
    } else {
        return Ok(());
    };
    Err(Error::Invalid {
        what,
        value: name.into(),
        reason: reason.into(),
    })
}

/// Nodes are `node0`, `node1`, ... (the DESIGN.md contract).
pub fn node_name(index: usize) -> String {
    format!("node{index}")
}

/// The files of one node. All paths are absolute so that QEMU's command line names the node
/// directory, which is how `down` recognises its own processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    pub dir: PathBuf,
}

impl NodePaths {
    pub fn new(dir: PathBuf) -> Self {
        NodePaths { dir }
    }
    pub fn overlay(&self) -> PathBuf {
        self.dir.join("overlay.qcow2")
    }
    pub fn vars(&self) -> PathBuf {
        self.dir.join("vars.fd")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    /// QEMU's own stdout/stderr (start-up errors land here).
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    pub fn shell_sock(&self) -> PathBuf {
        self.dir.join("shell.sock")
    }
    pub fn qmp_sock(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// Fails early, with a fix, when the socket paths would not fit in `sockaddr_un`.
    pub fn check_socket_len(&self) -> Result<()> {
        for p in [self.shell_sock(), self.qmp_sock()] {
            let len = p.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(Error::Invalid {
                    what: "state directory",
                    value: self.dir.display().to_string(),
                    reason: format!(
                        "socket path is {len} bytes, over the {MAX_SOCKET_PATH}-byte unix limit; \
                         set CRUST_STATE to a shorter directory"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Makes `p` absolute against the current directory without touching the file system.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(crate::error::io(format!("resolving {}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(c: Option<&str>, x: Option<&str>, h: Option<&str>) -> StateEnv {
        StateEnv {
            crust_state: c.map(Into::into),
            xdg_state_home: x.map(Into::into),
            home: h.map(Into::into),
        }
    }

    #[test]
    fn state_root_precedence() {
        let cases = [
            (env(Some("/s"), Some("/x"), Some("/h")), "/s"),
            (env(Some(""), Some("/x"), Some("/h")), "/x/crust/clusters"),
            (
                env(None, Some("rel"), Some("/h")),
                "/h/.local/state/crust/clusters",
            ),
            (
                env(None, None, Some("/h")),
                "/h/.local/state/crust/clusters",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.root().ok(), Some(PathBuf::from(want)), "{e:?}");
        }
        assert!(env(None, None, None).root().is_err());
    }

    #[test]
    fn names() {
        for good in ["default", "a", "ci-3_x", "node0"] {
            assert!(check_name("cluster name", good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a/b", "-x", "a b", &"x".repeat(33)] {
            assert!(check_name("cluster name", bad).is_err(), "{bad}");
        }
        assert_eq!(node_name(3), "node3");
    }

    #[test]
    fn socket_path_limit() {
        assert!(NodePaths::new("/s/default/node0".into())
            .check_socket_len()
            .is_ok());
        let long = PathBuf::from(format!("/{}", "d".repeat(100)));
        let e = NodePaths::new(long).check_socket_len().unwrap_err();
        assert!(e.to_string().contains("CRUST_STATE"), "{e}");
    }
}
