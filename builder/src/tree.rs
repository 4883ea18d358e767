//! An in-memory model of a filesystem tree, the one input both the squashfs writer (USR) and the
//! cpio writer (initramfs) consume. Keeping it in memory, sorted, with explicit modes and no
//! host metadata is what makes the images reproducible: nothing is read from the host's clock,
//! umask, uid or directory order.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Bytes(Vec<u8>),
    /// A file on the host (for example inside an extracted .deb in the cache), read when written.
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, source: Source },
    Symlink { target: String },
}

#[derive(Debug, Error)]
pub enum TreeError {
    #[error(
        "path {0:?} must be relative, without `..` (paths in a tree are relative to its root)"
    )]
    BadPath(PathBuf),
    #[error("{path:?} is already a {existing} in the tree; cannot add it again as a {new}")]
    Conflict {
        path: PathBuf,
        existing: &'static str,
        new: &'static str,
    },
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "directory",
            Node::File { .. } => "file",
            Node::Symlink { .. } => "symlink",
        }
    }
}

/// A sorted tree of nodes keyed by relative path (`usr/bin/busybox`); the root itself is implicit.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<PathBuf, Node>,
}

fn check(path: &Path) -> Result<PathBuf, TreeError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return Err(TreeError::BadPath(path.to_path_buf())),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(TreeError::BadPath(path.to_path_buf()));
    }
    Ok(out)
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Adds a directory and any missing parents (mode 0755). Adding an existing directory again
    /// updates its mode.
    pub fn dir(&mut self, path: impl AsRef<Path>, mode: u32) -> Result<(), TreeError> {
        let path = check(path.as_ref())?;
        self.parents(&path)?;
        self.insert(path, Node::Dir { mode })
    }

    /// Adds a file (replacing an earlier file at the same path: later layers win, like overlays).
    pub fn file(
        &mut self,
        path: impl AsRef<Path>,
        mode: u32,
        source: Source,
    ) -> Result<(), TreeError> {
        let path = check(path.as_ref())?;
        self.parents(&path)?;
        self.insert(path, Node::File { mode, source })
    }

    pub fn symlink(
        &mut self,
        path: impl AsRef<Path>,
        target: impl Into<String>,
    ) -> Result<(), TreeError> {
        let path = check(path.as_ref())?;
        self.parents(&path)?;
        self.insert(
            path,
            Node::Symlink {
                target: target.into(),
            },
        )
    }

    fn parents(&mut self, path: &Path) -> Result<(), TreeError> {
        let mut ancestors: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        ancestors.reverse();
        for a in ancestors {
            match self.nodes.get(a) {
                Some(Node::Dir { .. }) => {}
                Some(other) => {
                    return Err(TreeError::Conflict {
                        path: a.to_path_buf(),
                        existing: other.kind(),
                        new: "directory",
                    })
                }
                None => {
                    self.nodes
                        .insert(a.to_path_buf(), Node::Dir { mode: 0o755 });
                }
            }
        }
        Ok(())
    }

    fn insert(&mut self, path: PathBuf, node: Node) -> Result<(), TreeError> {
        if let Some(existing) = self.nodes.get(&path) {
            let same_kind = std::mem::discriminant(existing) == std::mem::discriminant(&node);
            if !same_kind {
                return Err(TreeError::Conflict {
                    path,
                    existing: existing.kind(),
                    new: node.kind(),
                });
            }
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    pub fn get(&self, path: impl AsRef<Path>) -> Option<&Node> {
        self.nodes.get(path.as_ref())
    }

    pub fn contains(&self, path: impl AsRef<Path>) -> bool {
        self.nodes.contains_key(path.as_ref())
    }

    /// Nodes in sorted path order (parents before children).
    pub fn iter(&self) -> impl Iterator<Item = (&Path, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_path(), n))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Copies every node of `other` under `prefix` ("" for the root), later wins.
    pub fn merge(&mut self, prefix: impl AsRef<Path>, other: &Tree) -> Result<(), TreeError> {
        for (p, n) in other.iter() {
            let dest = prefix.as_ref().join(p);
            match n {
                Node::Dir { mode } => self.dir(&dest, *mode)?,
                Node::File { mode, source } => self.file(&dest, *mode, source.clone())?,
                Node::Symlink { target } => self.symlink(&dest, target.clone())?,
            }
        }
        Ok(())
    }

    /// Adds a host directory recursively (files keep their permission bits, owner is root).
    /// Used for overlays; entries are visited in sorted order.
    pub fn add_host_dir(&mut self, prefix: impl AsRef<Path>, dir: &Path) -> Result<(), TreeError> {
        use std::os::unix::fs::PermissionsExt;
        let read = |p: &Path| -> Result<Vec<PathBuf>, TreeError> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect())
                .map_err(|source| TreeError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
            v.sort();
            Ok(v)
        };
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for p in read(&d)? {
                let rel = prefix.as_ref().join(p.strip_prefix(dir).unwrap_or(&p));
                let meta = std::fs::symlink_metadata(&p).map_err(|source| TreeError::Read {
                    path: p.clone(),
                    source,
                })?;
                let mode = meta.permissions().mode() & 0o7777;
                if meta.file_type().is_symlink() {
                    let t = std::fs::read_link(&p).map_err(|source| TreeError::Read {
                        path: p.clone(),
                        source,
                    })?;
                    self.symlink(&rel, t.to_string_lossy().into_owned())?;
                } else if meta.is_dir() {
                    self.dir(&rel, mode)?;
                    stack.push(p);
                } else {
                    // Keep only the executable bit from git checkouts, whose umask varies.
                    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                    self.file(&rel, mode, Source::Path(p))?;
                }
            }
        }
        Ok(())
    }
}

impl Source {
    pub fn read(&self) -> Result<std::borrow::Cow<'_, [u8]>, TreeError> {
        match self {
            Source::Bytes(b) => Ok(std::borrow::Cow::Borrowed(b)),
            Source::Path(p) => std::fs::read(p)
                .map(std::borrow::Cow::Owned)
                .map_err(|source| TreeError::Read {
                    path: p.clone(),
                    source,
                }),
        }
    }

    /// Size in bytes (for sizing checks before anything is written).
    pub fn size(&self) -> Result<u64, TreeError> {
        match self {
            Source::Bytes(b) => Ok(b.len() as u64),
            Source::Path(p) => {
                std::fs::metadata(p)
                    .map(|m| m.len())
                    .map_err(|source| TreeError::Read {
                        path: p.clone(),
                        source,
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_order_is_sorted() {
        let mut t = Tree::new();
        t.file("usr/bin/b", 0o755, Source::Bytes(vec![])).unwrap();
        t.symlink("bin", "usr/bin").unwrap();
        let paths: Vec<_> = t
            .iter()
            .map(|(p, _)| p.to_str().unwrap().to_string())
            .collect();
        assert_eq!(paths, ["bin", "usr", "usr/bin", "usr/bin/b"]);
    }

    #[test]
    fn refuses_conflicts_and_escapes() {
        let mut t = Tree::new();
        t.file("etc/x", 0o644, Source::Bytes(vec![])).unwrap();
        assert!(t.dir("etc/x/y", 0o755).is_err());
        assert!(t.symlink("etc/x", "y").is_err());
        assert!(t.file("../etc", 0o644, Source::Bytes(vec![])).is_err());
        assert!(t.file("/etc/abs", 0o644, Source::Bytes(vec![])).is_err());
        // A file replaces a file: overlays win over packages.
        t.file("etc/x", 0o600, Source::Bytes(b"new".to_vec()))
            .unwrap();
        assert_eq!(
            t.get("etc/x"),
            Some(&Node::File {
                mode: 0o600,
                source: Source::Bytes(b"new".to_vec())
            })
        );
    }
}
