//! The shared libraries binaries need: DT_NEEDED and the program interpreter, followed
//! transitively through directories of unpacked Debian packages.
//!
//! Symlinks inside unpacked packages are often absolute (`/lib/x86_64-linux-gnu/libfoo.so.1.2`):
//! they are resolved against the package's own root (the search directory without its trailing
//! `usr/lib/<triplet>` part), then against the other packages' roots, never against the host's `/`.

use goblin::elf::Elf;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ElfError {
    #[error("{what}: malformed ELF: {why}")]
    Malformed { what: String, why: String },
    #[error("library {soname} needed by {needed_by:?} is in none of the search directories ({searched}); add the Debian package that ships it to the manifest's packages")]
    NotFound {
        soname: String,
        needed_by: PathBuf,
        searched: String,
    },
    #[error("{path:?}: symlink cannot be resolved inside its package ({why})")]
    Symlink { path: PathBuf, why: String },
    #[error("{path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ElfError + '_ {
    move |source| ElfError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a dynamically linked ELF file asks of the dynamic loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfDeps {
    /// PT_INTERP, e.g. `/lib64/ld-linux-x86-64.so.2`; None for static binaries and libraries.
    pub interpreter: Option<String>,
    /// DT_NEEDED sonames, in file order.
    pub needed: Vec<String>,
}

/// None when the bytes are not ELF (scripts, data).
pub fn deps(bytes: &[u8]) -> Result<Option<ElfDeps>, ElfError> {
    deps_of(bytes, "ELF data").map(|o| o.map(|(d, _)| d))
}

/// The ABI a library must match to be loadable next to an object: (64-bit, e_machine).
type Abi = (bool, u16);

fn deps_of(bytes: &[u8], what: &str) -> Result<Option<(ElfDeps, Abi)>, ElfError> {
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let elf = Elf::parse(bytes).map_err(|e| ElfError::Malformed {
        what: what.to_string(),
        why: e.to_string(),
    })?;
    Ok(Some((
        ElfDeps {
            interpreter: elf.interpreter.map(str::to_string),
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        },
        (elf.is_64, elf.header.e_machine),
    )))
}

/// A library of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// The name it is loaded by (DT_NEEDED, or the interpreter's file name).
    pub soname: String,
    /// The real file, symlinks resolved inside its root.
    pub path: PathBuf,
}

/// The root a search directory belongs to: the directory without its trailing library-directory
/// components (`<root>/usr/lib/x86_64-linux-gnu` -> `<root>`).
pub fn root_of(search_dir: &Path) -> PathBuf {
    let mut root = search_dir.to_path_buf();
    loop {
        let strip = root.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            matches!(n, "usr" | "lib" | "lib64" | "lib32" | "libx32" | "local")
                || n.ends_with("-linux-gnu")
                || n.ends_with("-linux-gnux32")
        });
        if !strip || !root.pop() {
            return root;
        }
    }
}

const MAX_SYMLINKS: usize = 40;

/// Resolves `rel` (a path relative to `root`) component by component, following symlinks inside
/// `root`; absolute symlink targets restart at `root`, or at one of `others` when `root` lacks
/// them. Returns the path of the real file, or why it cannot be found.
pub fn resolve_in_root(root: &Path, others: &[PathBuf], rel: &Path) -> Result<PathBuf, String> {
    let mut hops = 0;
    resolve_rec(root, others, rel, &mut hops)
}

fn resolve_rec(
    root: &Path,
    others: &[PathBuf],
    rel: &Path,
    hops: &mut usize,
) -> Result<PathBuf, String> {
    let mut cur = PathBuf::new();
    let mut todo: VecDeque<PathBuf> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    while let Some(comp) = todo.pop_front() {
        if comp.as_os_str() == ".." {
            cur.pop();
            continue;
        }
        let here = root.join(&cur).join(&comp);
        let meta = std::fs::symlink_metadata(&here).map_err(|e| format!("{here:?}: {e}"))?;
        if !meta.file_type().is_symlink() {
            cur.push(comp);
            continue;
        }
        *hops += 1;
        if *hops > MAX_SYMLINKS {
            return Err(format!("more than {MAX_SYMLINKS} symlinks at {here:?}"));
        }
        let target = std::fs::read_link(&here).map_err(|e| format!("{here:?}: {e}"))?;
        let rest: PathBuf = todo.drain(..).collect();
        if target.is_absolute() {
            let full = target.join(rest);
            let full = full.strip_prefix("/").unwrap_or(&full).to_path_buf();
            let mut last = resolve_rec(root, &[], &full, hops);
            for other in others.iter().filter(|o| o.as_path() != root) {
                if last.is_ok() {
                    break;
                }
                last = resolve_rec(other, &[], &full, hops);
            }
            return last;
        }
        let full = cur.join(target).join(rest);
        return resolve_rec(root, others, &full, hops);
    }
    Ok(root.join(cur))
}

/// Transitive DT_NEEDED closure of `binaries` (including their interpreter), searched by file name
/// in `search`, in order; sorted by soname. Libraries of another ABI (32-bit ones in a shared
/// directory) are passed over. A library not found is an error naming it and who needs it.
/// RPATH/RUNPATH are not honoured: Debian's packages install into the default directories.
pub fn library_closure(binaries: &[PathBuf], search: &[PathBuf]) -> Result<Vec<Library>, ElfError> {
    let roots: Vec<PathBuf> = search.iter().map(|d| root_of(d)).collect();
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    // (soname, who needs it, the ABI it must have)
    let mut queue: VecDeque<(String, PathBuf, Abi)> = VecDeque::new();
    let push = |queue: &mut VecDeque<_>, d: ElfDeps, by: &Path, abi: Abi| {
        let interp = d
            .interpreter
            .as_deref()
            .and_then(|i| Path::new(i).file_name())
            .map(|n| n.to_string_lossy().into_owned());
        for s in interp.into_iter().chain(d.needed) {
            queue.push_back((s, by.to_path_buf(), abi));
        }
    };

    for bin in binaries {
        let bytes = std::fs::read(bin).map_err(io_err(bin))?;
        if let Some((d, abi)) = deps_of(&bytes, &bin.display().to_string())? {
            push(&mut queue, d, bin, abi);
        }
    }

    while let Some((soname, needed_by, abi)) = queue.pop_front() {
        if found.contains_key(&soname) {
            continue;
        }
        let mut hit = None;
        for (dir, root) in search.iter().zip(&roots) {
            let candidate = dir.join(&soname);
            if std::fs::symlink_metadata(&candidate).is_err() {
                continue;
            }
            let rel = candidate.strip_prefix(root).unwrap_or(&candidate);
            let real = resolve_in_root(root, &roots, rel).map_err(|why| ElfError::Symlink {
                path: candidate.clone(),
                why,
            })?;
            let bytes = std::fs::read(&real).map_err(io_err(&real))?;
            match deps_of(&bytes, &real.display().to_string())? {
                Some((d, lib_abi)) if lib_abi == abi => {
                    hit = Some((real, d));
                    break;
                }
                _ => continue,
            }
        }
        let Some((real, d)) = hit else {
            return Err(ElfError::NotFound {
                soname,
                needed_by,
                searched: search
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        push(&mut queue, d, &real, abi);
        found.insert(soname, real);
    }
    Ok(found
        .into_iter()
        .map(|(soname, path)| Library { soname, path })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const HOST_LIBS: &[&str] = &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"];

    fn host_search() -> Vec<PathBuf> {
        HOST_LIBS.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn host_ls_deps() {
        let bytes = std::fs::read("/bin/ls").unwrap();
        let d = deps(&bytes).unwrap().unwrap();
        assert_eq!(
            d.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(d.needed.contains(&"libc.so.6".to_string()), "{d:?}");
    }

    #[test]
    fn non_elf_is_none_and_broken_elf_is_an_error() {
        assert_eq!(deps(b"#!/bin/sh\necho hi\n").unwrap(), None);
        assert_eq!(deps(b"").unwrap(), None);
        let bytes = std::fs::read("/bin/ls").unwrap();
        assert!(deps(&bytes[..100]).is_err());
    }

    #[test]
    fn roots_of_search_dirs() {
        assert_eq!(
            root_of(Path::new("/c/unpacked/libc6_2.36_ab/lib/x86_64-linux-gnu")),
            PathBuf::from("/c/unpacked/libc6_2.36_ab")
        );
        assert_eq!(
            root_of(Path::new("/c/p/usr/lib/x86_64-linux-gnu")),
            PathBuf::from("/c/p")
        );
        assert_eq!(root_of(Path::new("/c/p/usr/lib64")), PathBuf::from("/c/p"));
        assert_eq!(
            root_of(Path::new("/lib/x86_64-linux-gnu")),
            PathBuf::from("/")
        );
    }

    #[test]
    fn host_ls_closure() {
        let libs = library_closure(&[PathBuf::from("/bin/ls")], &host_search()).unwrap();
        let names: Vec<&str> = libs.iter().map(|l| l.soname.as_str()).collect();
        assert!(
            names.contains(&"libc.so.6") && names.contains(&"ld-linux-x86-64.so.2"),
            "{names:?}"
        );
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for l in &libs {
            assert!(
                !std::fs::symlink_metadata(&l.path)
                    .unwrap()
                    .file_type()
                    .is_symlink(),
                "{l:?}"
            );
        }
    }

    /// A fake unpacked libc6 whose absolute symlinks point at names the host does not have:
    /// resolving them against the host's / would fail.
    #[test]
    fn absolute_symlinks_resolve_inside_the_package() {
        let t = tempfile::tempdir().unwrap();
        let libc_root = t.path().join("libc6_1_x");
        let lib = libc_root.join("lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(libc_root.join("lib64")).unwrap();
        let host_libc = resolve_in_root(
            Path::new("/"),
            &[],
            Path::new("lib/x86_64-linux-gnu/libc.so.6"),
        )
        .unwrap();
        let host_ld =
            resolve_in_root(Path::new("/"), &[], Path::new("lib64/ld-linux-x86-64.so.2")).unwrap();
        std::fs::copy(&host_libc, lib.join("libc-crusttest.so")).unwrap();
        std::fs::copy(&host_ld, lib.join("ld-crusttest.so")).unwrap();
        symlink(
            "/lib/x86_64-linux-gnu/libc-crusttest.so",
            lib.join("libc.so.6"),
        )
        .unwrap();
        symlink("ld-crusttest.so", lib.join("ld-linux-x86-64.so.2")).unwrap();
        symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            libc_root.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        // a second package whose library points into the first one's tree
        let other = t.path().join("libfoo_1_y/usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&other).unwrap();
        symlink(
            "/lib/x86_64-linux-gnu/libc-crusttest.so",
            other.join("libfoo.so.1"),
        )
        .unwrap();

        let bin = PathBuf::from("/bin/true");
        let needed = deps(&std::fs::read(&bin).unwrap()).unwrap().unwrap().needed;
        assert_eq!(needed, ["libc.so.6"]);
        let libs = library_closure(&[bin], &[lib.clone(), other.clone()]).unwrap();
        assert_eq!(
            libs,
            [
                Library {
                    soname: "ld-linux-x86-64.so.2".into(),
                    path: lib.join("ld-crusttest.so")
                },
                Library {
                    soname: "libc.so.6".into(),
                    path: lib.join("libc-crusttest.so")
                },
            ]
        );
        let roots = [root_of(&lib), root_of(&other)];
        let p = resolve_in_root(
            &roots[1],
            &roots,
            Path::new("usr/lib/x86_64-linux-gnu/libfoo.so.1"),
        )
        .unwrap();
        assert_eq!(p, lib.join("libc-crusttest.so"));
        let p =
            resolve_in_root(&roots[0], &roots, Path::new("lib64/ld-linux-x86-64.so.2")).unwrap();
        assert_eq!(p, lib.join("ld-crusttest.so"));
    }

    #[test]
    fn missing_library_names_it_and_the_binary() {
        let t = tempfile::tempdir().unwrap();
        let e = library_closure(&[PathBuf::from("/bin/ls")], &[t.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/bin/ls")
                && (e.contains("libc.so.6") || e.contains("ld-linux") || e.contains("lib")),
            "{e}"
        );
    }

    #[test]
    fn symlink_loops_are_errors() {
        let t = tempfile::tempdir().unwrap();
        symlink("b", t.path().join("a")).unwrap();
        symlink("/a", t.path().join("b")).unwrap();
        let e = resolve_in_root(t.path(), &[], Path::new("a")).unwrap_err();
        assert!(e.contains("symlinks"), "{e}");
    }

    /// Over e2fsprogs and its libraries unpacked in the cache (run `crust build` once first).
    #[test]
    #[ignore]
    fn e2fsprogs_closure_from_cache() {
        let cache = crate::debian::Cache::from_env().unpacked();
        let dirs: Vec<PathBuf> = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        let Some(e2) = dirs.iter().find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("e2fsprogs_")
        }) else {
            eprintln!("no unpacked e2fsprogs in {cache:?}; skipping");
            return;
        };
        let mut search = Vec::new();
        for d in &dirs {
            for sub in ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"] {
                if d.join(sub).is_dir() {
                    search.push(d.join(sub));
                }
            }
        }
        let bins: Vec<PathBuf> = ["mke2fs", "e2fsck", "resize2fs", "tune2fs", "dumpe2fs"]
            .iter()
            .map(|b| e2.join("sbin").join(b))
            .collect();
        let libs = library_closure(&bins, &search).unwrap();
        for l in &libs {
            eprintln!("{} -> {}", l.soname, l.path.display());
            assert!(l.path.starts_with(&cache), "{l:?}");
        }
        assert!(libs.iter().any(|l| l.soname == "libext2fs.so.2"));
    }
}
