//! Assembles the two filesystem trees of an image from the unpacked inputs: USR (mounted at
//! `/usr`, so its paths are relative to `/usr`) and the initramfs (relative to `/`).
//!
//! Merged /usr: a package path outside `usr/` (`bin/busybox`, `sbin/mke2fs`, `lib/...`) lands at
//! the same place under `/usr`. Overlays mirror `/`: `usr/...` goes into USR as is, `etc/...` goes
//! to `/usr/share/crust/etc/...`, the defaults init copies into the writable `/etc` at boot.

use crate::elf;
use crate::kmod::Modules;
use crate::manifest::Manifest;
use crate::tree::{Source, Tree, TreeError};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// Where the default `/etc` content lives inside USR.
pub const ETC_DEFAULTS: &str = "share/crust/etc";
/// Libraries go here (Debian's multiarch directory, searched by Debian's ld.so by default).
pub const LIBDIR: &str = "lib/x86_64-linux-gnu";
/// Busybox applets that would fight init for the machine: init itself, and the shutdown
/// commands, which signal PID 1 in busybox's own convention. `crustctl poweroff|reboot` replace them.
const SKIPPED_APPLETS: &[&str] = &["init", "linuxrc", "halt", "poweroff", "reboot"];

#[derive(Debug, Error)]
pub enum UsrError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
    #[error("package {package}: {path} is listed under packages.{package}.install but the package has no such file; check `dpkg -c` of the .deb")]
    MissingFile { package: String, path: String },
    #[error("packages.{0} is listed in the manifest but was not resolved")]
    Unresolved(String),
    #[error("overlay {overlay:?}: {path:?} is outside usr/ and etc/; overlays may only add files under usr/ (USR) or etc/ (default /etc)")]
    OverlayPath { overlay: PathBuf, path: PathBuf },
    #[error("overlay directory {0:?} does not exist (overlays are relative to the manifest's directory)")]
    NoOverlay(PathBuf),
    #[error("cannot list busybox applets by running {path:?}: {why}")]
    Busybox { path: PathBuf, why: String },
    #[error("{0} is not in the unpacked packages; is busybox-static in the manifest's packages?")]
    NoBusybox(String),
}

/// One unpacked Debian package.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub name: String,
    pub root: PathBuf,
}

/// Everything the trees are made of.
pub struct Inputs<'a> {
    pub manifest: &'a Manifest,
    pub manifest_dir: &'a Path,
    pub packages: &'a [Unpacked],
    pub modules: &'a Modules,
    /// The static multi-call agent binary.
    pub agent: &'a Path,
    /// Build timestamp written into release files (SOURCE_DATE_EPOCH).
    pub epoch: u64,
}

/// Maps a path inside a package to its place in USR (relative to /usr), or None for paths that
/// cannot live in USR (/etc, /var).
pub fn usr_path(package_path: &str) -> Option<PathBuf> {
    let p = Path::new(package_path.trim_start_matches('/'));
    let mut comps = p.components();
    match comps.next() {
        Some(Component::Normal(first)) if first == "usr" => Some(comps.as_path().to_path_buf()),
        Some(Component::Normal(first))
            if ["bin", "sbin", "lib", "lib64"].iter().any(|d| first == *d) =>
        {
            Some(p.to_path_buf())
        }
        _ => None,
    }
}

fn package<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a Unpacked, UsrError> {
    inputs
        .packages
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| UsrError::Unresolved(name.to_string()))
}

/// Library search directories across all unpacked packages.
fn search_dirs(packages: &[Unpacked]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for p in packages {
        for d in [
            "lib/x86_64-linux-gnu",
            "usr/lib/x86_64-linux-gnu",
            "lib64",
            "lib",
            "usr/lib",
        ] {
            let full = p.root.join(d);
            if full.is_dir() {
                dirs.push(full);
            }
        }
    }
    dirs
}

/// The file `path` of package `pkg`, following a symlink inside the package if needed.
fn package_file(pkg: &Unpacked, path: &str) -> Result<PathBuf, UsrError> {
    let full = pkg.root.join(path.trim_start_matches('/'));
    let mut cur = full.clone();
    for _ in 0..16 {
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&cur).map_err(|_| UsrError::MissingFile {
                    package: pkg.name.clone(),
                    path: path.to_string(),
                })?;
                cur = if target.is_absolute() {
                    pkg.root.join(target.strip_prefix("/").unwrap_or(&target))
                } else {
                    cur.parent().unwrap_or(&pkg.root).join(target)
                };
            }
            Ok(m) if m.is_file() => return Ok(cur),
            _ => break,
        }
    }
    Err(UsrError::MissingFile {
        package: pkg.name.clone(),
        path: path.to_string(),
    })
}

/// The USR tree (paths relative to /usr).
pub fn usr_tree(inputs: &Inputs) -> Result<Tree, UsrError> {
    let m = inputs.manifest;
    let mut t = Tree::new();

    // The agent and its names come first so nothing else can take them.
    t.file(
        "bin/crust-agent",
        0o755,
        Source::Path(inputs.agent.to_path_buf()),
    )?;
    for a in &m.agents {
        t.symlink(format!("bin/{a}"), "crust-agent")?;
    }
    t.symlink("sbin/init", "../bin/crust-agent")?;

    // Files the manifest names, and the ELF binaries among them for the library closure.
    let mut elves = Vec::new();
    for (name, spec) in &m.packages {
        let pkg = package(inputs, name)?;
        for path in &spec.install {
            let src = package_file(pkg, path)?;
            let dest = usr_path(path).ok_or_else(|| UsrError::MissingFile {
                package: name.clone(),
                path: format!("{path} (only bin/, sbin/, lib/ and usr/ paths can be installed)"),
            })?;
            let bytes = std::fs::read(&src).map_err(|source| TreeError::Read {
                path: src.clone(),
                source,
            })?;
            if elf::deps(&bytes)?.is_some() {
                elves.push(src.clone());
            }
            t.file(dest, 0o755, Source::Path(src))?;
        }
    }

    // Shared libraries (and the dynamic loader) the installed binaries need.
    let libs = elf::library_closure(&elves, &search_dirs(inputs.packages))?;
    for lib in &libs {
        t.file(
            format!("{LIBDIR}/{}", lib.soname),
            0o755,
            Source::Path(lib.path.clone()),
        )?;
        if lib.soname.starts_with("ld-linux") {
            t.symlink(
                format!("lib64/{}", lib.soname),
                format!("../{LIBDIR}/{}", lib.soname),
            )?;
        }
    }

    // Kernel modules, all of them (the early ones too, so modules.dep is complete for modprobe).
    let mods = inputs.modules;
    let kdir = PathBuf::from(format!("lib/modules/{}", mods.release));
    for module in mods.modules.values() {
        t.file(
            kdir.join(&module.path),
            0o644,
            Source::Path(mods.dir.join(&module.path)),
        )?;
    }
    t.file(
        kdir.join("modules.dep"),
        0o644,
        Source::Bytes(mods.modules_dep().into_bytes()),
    )?;
    let builtin = mods.dir.join("modules.builtin");
    if builtin.is_file() {
        t.file(kdir.join("modules.builtin"), 0o644, Source::Path(builtin))?;
    }

    // Release files.
    t.file(
        "lib/os-release",
        0o644,
        Source::Bytes(os_release(m, inputs.epoch).into_bytes()),
    )?;
    t.file(
        "share/crust/release",
        0o644,
        Source::Bytes(release(m, &mods.release).into_bytes()),
    )?;

    // Overlays, in order; later ones win.
    for o in &m.overlays {
        let dir = inputs.manifest_dir.join(o);
        if !dir.is_dir() {
            return Err(UsrError::NoOverlay(dir));
        }
        let mut ov = Tree::new();
        ov.add_host_dir("", &dir)?;
        for (path, node) in ov.iter() {
            let dest = match path.components().next() {
                Some(Component::Normal(c)) if c == "usr" => {
                    path.strip_prefix("usr").map(Path::to_path_buf).ok()
                }
                Some(Component::Normal(c)) if c == "etc" => {
                    Some(Path::new(ETC_DEFAULTS).join(path.strip_prefix("etc").unwrap_or(path)))
                }
                _ => None,
            };
            let Some(dest) = dest else {
                return Err(UsrError::OverlayPath {
                    overlay: dir.clone(),
                    path: path.to_path_buf(),
                });
            };
            if dest.as_os_str().is_empty() {
                continue;
            }
            match node {
                crate::tree::Node::Dir { mode } => t.dir(&dest, *mode)?,
                crate::tree::Node::File { mode, source } => t.file(&dest, *mode, source.clone())?,
                crate::tree::Node::Symlink { target } => t.symlink(&dest, target.clone())?,
            }
        }
    }

    // Busybox applets last: a real binary of the same name always wins.
    let busybox = busybox_path(inputs)?;
    for applet in busybox_applets(&busybox)? {
        let Some(dest) = usr_path(&applet) else {
            continue;
        };
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if SKIPPED_APPLETS.contains(&name) || t.contains(&dest) {
            continue;
        }
        let depth = dest.components().count() - 1;
        let target = format!("{}bin/busybox", "../".repeat(depth));
        t.symlink(&dest, target)?;
    }
    Ok(t)
}

fn busybox_path(inputs: &Inputs) -> Result<PathBuf, UsrError> {
    let pkg = package(inputs, "busybox-static")?;
    package_file(pkg, "bin/busybox").map_err(|_| UsrError::NoBusybox("bin/busybox".into()))
}

/// Applet install paths (`bin/sh`, `usr/bin/awk`, ...) as busybox itself lists them. The busybox
/// from busybox-static is a static x86_64 binary, so it runs on the build host.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>, UsrError> {
    let out = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| UsrError::Busybox {
            path: busybox.to_path_buf(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(UsrError::Busybox {
            path: busybox.to_path_buf(),
            why: format!("exited with {}", out.status),
        });
    }
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    Ok(v)
}

pub fn os_release(m: &Manifest, epoch: u64) -> String {
    format!(
        "NAME=\"crust\"\nID={name}\nVERSION={v}\nVERSION_ID={v}\nBUILD_ID={epoch}\n\
         PRETTY_NAME=\"crust {v} ({ch})\"\nCRUST_CHANNEL={ch}\n",
        name = m.name,
        v = m.version,
        ch = m.channel,
    )
}

/// Flatcar-style release file (`/usr/share/crust/release`) that update tooling reads.
pub fn release(m: &Manifest, kernel: &str) -> String {
    format!(
        "CRUST_RELEASE_VERSION={}\nCRUST_RELEASE_CHANNEL={}\nCRUST_RELEASE_BOARD=amd64-usr\nCRUST_KERNEL_RELEASE={kernel}\n",
        m.version, m.channel
    )
}

/// The initramfs tree (relative to /): the agent as /init, busybox for the emergency shell, the
/// early modules and the list stage 1 loads them from, in dependency order.
pub fn initramfs_tree(inputs: &Inputs) -> Result<(Tree, Vec<String>), UsrError> {
    let m = inputs.manifest;
    let mods = inputs.modules;
    let mut t = Tree::new();
    t.file("init", 0o755, Source::Path(inputs.agent.to_path_buf()))?;
    t.file("bin/busybox", 0o755, Source::Path(busybox_path(inputs)?))?;
    t.symlink("bin/sh", "busybox")?;
    for d in ["dev", "proc", "sys", "run", "sysroot", "usr", "tmp"] {
        t.dir(d, 0o755)?;
    }
    t.symlink("lib64", "usr/lib64")?;
    t.file(
        "etc/initrd-release",
        0o644,
        Source::Bytes(os_release(m, inputs.epoch).into_bytes()),
    )?;
    let early = mods
        .closure(&m.kernel.early_modules)
        .map_err(|e| UsrError::MissingFile {
            package: m.kernel.package.clone(),
            path: e.to_string(),
        })?;
    let kdir = PathBuf::from(format!("lib/modules/{}", mods.release));
    let mut list = String::new();
    let mut names = Vec::new();
    for module in early {
        let dest = kdir.join(&module.path);
        t.file(&dest, 0o644, Source::Path(mods.dir.join(&module.path)))?;
        list.push_str(&format!("/{}\n", dest.display()));
        names.push(module.name.clone());
    }
    t.file(
        "etc/crust/early-modules",
        0o644,
        Source::Bytes(list.into_bytes()),
    )?;
    Ok((t, names))
}

/// Package name -> unpacked root, for callers that need one package's files.
pub fn by_name(packages: &[Unpacked]) -> BTreeMap<&str, &Path> {
    packages
        .iter()
        .map(|p| (p.name.as_str(), p.root.as_path()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_paths_are_merged_into_usr() {
        assert_eq!(usr_path("bin/busybox"), Some(PathBuf::from("bin/busybox")));
        assert_eq!(usr_path("/sbin/mke2fs"), Some(PathBuf::from("sbin/mke2fs")));
        assert_eq!(usr_path("usr/bin/awk"), Some(PathBuf::from("bin/awk")));
        assert_eq!(
            usr_path("lib/x86_64-linux-gnu/libc.so.6"),
            Some(PathBuf::from("lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(usr_path("etc/mke2fs.conf"), None);
        assert_eq!(usr_path("var/lib/x"), None);
    }

    #[test]
    fn os_release_names_version_and_channel() {
        let m = Manifest::parse(crate::manifest::DEFAULT_MANIFEST, "default").unwrap();
        let r = os_release(&m, 7);
        assert!(r.contains(&format!("VERSION_ID={}\n", m.version)));
        assert!(r.contains("CRUST_CHANNEL=alpha\n"));
        assert!(r.contains("ID=crust\n"));
    }
}
