//! Kernel modules without modules.dep: Debian's kernel package ships none (depmod runs at install
//! time), so the dependencies come from each module's `.modinfo` section (`depends=`), and this
//! module writes the modules.dep that busybox modprobe reads in the image.

use goblin::container::{Container, Ctx};
use goblin::elf::{Elf, SectionHeader};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Normalized: '-' -> '_'.
    pub name: String,
    /// Relative to [`Modules::dir`].
    pub path: PathBuf,
    /// Normalized names of the modules it needs loaded first.
    pub depends: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modules {
    pub release: String,
    /// `<unpacked>/lib/modules/<release>`.
    pub dir: PathBuf,
    pub modules: BTreeMap<String, Module>,
    /// Normalized names of modules built into the kernel (modules.builtin).
    pub builtin: BTreeSet<String>,
}

#[derive(Debug, Error)]
pub enum KmodError {
    #[error(
        "{0:?} has no lib/modules/<release>/ directory; is this an unpacked linux-image package?"
    )]
    NoModulesDir(PathBuf),
    #[error("{path:?} holds several kernel releases ({releases}); use a package with exactly one")]
    SeveralReleases { path: PathBuf, releases: String },
    #[error("module {path:?}: {why}")]
    BadModule { path: PathBuf, why: String },
    #[error("module {name} is in both {first:?} and {second:?}")]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("no kernel module named {name} in release {release} (and it is not built in); check kernel.early-modules in the manifest")]
    Unknown { name: String, release: String },
    #[error(
        "module {module} depends on {missing}, which release {release} neither ships nor builds in"
    )]
    MissingDependency {
        module: String,
        missing: String,
        release: String,
    },
    #[error("modules depend on each other in a cycle: {0}")]
    Cycle(String),
    #[error("{path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KmodError + '_ {
    move |source| KmodError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The kernel's spelling of a module name: `dm-verity` and `dm_verity` are the same module.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name a file name implies (`dm-verity.ko.xz` -> `dm_verity`), or None for a file
/// that is not a module.
fn module_file_name(file: &str) -> Option<String> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .filter(|n| !n.is_empty())
        .map(normalize)
}

/// The bytes of the `.modinfo` section of an ELF relocatable object (a .ko).
pub fn modinfo_section(bytes: &[u8]) -> Result<&[u8], String> {
    let header = Elf::parse_header(bytes).map_err(|e| format!("not an ELF file: {e}"))?;
    let container =
        if header.e_ident[goblin::elf::header::EI_CLASS] == goblin::elf::header::ELFCLASS64 {
            Container::Big
        } else {
            Container::Little
        };
    let endian = header.endianness().map_err(|e| e.to_string())?;
    let ctx = Ctx::new(container, endian);
    let sections =
        SectionHeader::parse(bytes, header.e_shoff as usize, header.e_shnum as usize, ctx)
            .map_err(|e| format!("section headers: {e}"))?;
    let range = |s: &SectionHeader| -> Result<&[u8], String> {
        let start = s.sh_offset as usize;
        start
            .checked_add(s.sh_size as usize)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| "section outside the file".to_string())
    };
    let names = sections
        .get(header.e_shstrndx as usize)
        .ok_or("no section name table")
        .and_then(|s| range(s).map_err(|_| "section name table outside the file"))?;
    for s in &sections {
        let name = names
            .get(s.sh_name..)
            .and_then(|n| n.split(|b| *b == 0).next())
            .unwrap_or_default();
        if name == b".modinfo" {
            return range(s);
        }
    }
    Err("no .modinfo section".into())
}

/// `.modinfo` content: NUL-separated `key=value` strings (keys repeat, e.g. `alias`).
pub fn parse_modinfo(section: &[u8]) -> Vec<(String, String)> {
    section
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn read_module(path: &Path) -> Result<Vec<u8>, KmodError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    let r = if name.ends_with(".xz") {
        liblzma::read::XzDecoder::new(f).read_to_end(&mut out)
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(f).and_then(|mut d| d.read_to_end(&mut out))
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(f).read_to_end(&mut out)
    } else {
        f.read_to_end(&mut out)
    };
    r.map_err(|e| KmodError::BadModule {
        path: path.to_path_buf(),
        why: format!("cannot read or decompress: {e}"),
    })?;
    Ok(out)
}

/// One module file: its name and dependencies from `.modinfo`.
fn read_one(dir: &Path, rel: &Path) -> Result<Module, KmodError> {
    let path = dir.join(rel);
    let bytes = read_module(&path)?;
    let bad = |why: String| KmodError::BadModule {
        path: path.clone(),
        why,
    };
    let info = parse_modinfo(modinfo_section(&bytes).map_err(bad)?);
    let file_name = rel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(module_file_name)
        .unwrap_or_default();
    let name = info
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| normalize(v))
        .unwrap_or(file_name);
    let depends = info
        .iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| v.split(','))
        .filter(|d| !d.is_empty())
        .map(normalize)
        .collect();
    Ok(Module {
        name,
        path: rel.to_path_buf(),
        depends,
    })
}

fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), KmodError> {
    let here = dir.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&here)
        .map_err(io_err(&here))?
        .collect::<Result<_, _>>()
        .map_err(io_err(&here))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type().map_err(io_err(&e.path()))?;
        let child = rel.join(e.file_name());
        if ft.is_dir() {
            walk(dir, &child, out)?;
        } else if ft.is_file() && module_file_name(&e.file_name().to_string_lossy()).is_some() {
            out.push(child);
        }
    }
    Ok(())
}

/// Finds `lib/modules/<release>/` (or `usr/lib/modules/<release>/`) in an unpacked kernel package.
fn find_release(unpacked: &Path) -> Result<(String, PathBuf), KmodError> {
    for base in ["lib/modules", "usr/lib/modules"] {
        let base = unpacked.join(base);
        let Ok(rd) = std::fs::read_dir(&base) else {
            continue;
        };
        let mut releases: Vec<String> = rd
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        releases.sort();
        match releases.as_slice() {
            [] => continue,
            [one] => return Ok((one.clone(), base.join(one))),
            many => {
                return Err(KmodError::SeveralReleases {
                    path: base,
                    releases: many.join(", "),
                })
            }
        }
    }
    Err(KmodError::NoModulesDir(unpacked.to_path_buf()))
}

/// Scans an unpacked kernel package: finds lib/modules/<release>/, reads every module's .modinfo
/// section and modules.builtin.
pub fn scan(unpacked_kernel: &Path) -> Result<Modules, KmodError> {
    let (release, dir) = find_release(unpacked_kernel)?;
    let mut files = Vec::new();
    walk(&dir, Path::new(""), &mut files)?;

    // Reading ~90 MB of modules dominates; split it over the cores.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = files.len().div_ceil(threads).max(1);
    let read: Vec<Result<Module, KmodError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(|| {
                    part.iter()
                        .map(|rel| read_one(&dir, rel))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Err(KmodError::BadModule {
                        path: dir.clone(),
                        why: "reader thread panicked".into(),
                    })]
                })
            })
            .collect()
    });

    let mut modules: BTreeMap<String, Module> = BTreeMap::new();
    for m in read {
        let m = m?;
        if let Some(old) = modules.get(&m.name) {
            return Err(KmodError::Duplicate {
                name: m.name,
                first: old.path.clone(),
                second: m.path,
            });
        }
        modules.insert(m.name.clone(), m);
    }

    let builtin_path = dir.join("modules.builtin");
    let builtin = match std::fs::read_to_string(&builtin_path) {
        Ok(text) => parse_builtin(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => return Err(io_err(&builtin_path)(e)),
    };
    Ok(Modules {
        release,
        dir,
        modules,
        builtin,
    })
}

/// modules.builtin: one `kernel/fs/ext4/ext4.ko` path a line.
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .filter_map(module_file_name)
        .collect()
}

/// A kernel config file (`boot/config-<release>`) as name -> value (`y`, `m`, `"ascii"`, and `n`
/// for `# CONFIG_X is not set`).
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                out.insert(name.to_string(), "n".to_string());
            }
        } else if let Some((k, v)) = line.split_once('=') {
            if k.starts_with("CONFIG_") {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

impl Modules {
    /// The named modules plus their dependencies, dependencies first (load order). Built-in names
    /// are skipped; an unknown name is an error naming it. `-` and `_` spellings are the same.
    pub fn closure(&self, names: &[String]) -> Result<Vec<&Module>, KmodError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for n in names {
            let n = normalize(n);
            if self.modules.contains_key(&n) {
                self.visit(&n, &mut Vec::new(), &mut done, &mut order)?;
            } else if !self.builtin.contains(&n) {
                return Err(KmodError::Unknown {
                    name: n,
                    release: self.release.clone(),
                });
            }
        }
        Ok(order)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<&'a Module>,
    ) -> Result<(), KmodError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            stack.push(name.to_string());
            return Err(KmodError::Cycle(stack.join(" -> ")));
        }
        let Some(m) = self.modules.get(name) else {
            return Ok(());
        };
        stack.push(name.to_string());
        for d in &m.depends {
            if self.modules.contains_key(d) {
                self.visit(d, stack, done, order)?;
            } else if !self.builtin.contains(d) {
                return Err(KmodError::MissingDependency {
                    module: name.to_string(),
                    missing: d.clone(),
                    release: self.release.clone(),
                });
            }
        }
        stack.pop();
        done.insert(name.to_string());
        order.push(m);
        Ok(())
    }

    /// A modules.dep in kmod's format, one line per module sorted by path: the module, then all
    /// its transitive dependencies in reverse load order (modprobe loads them from the end).
    /// Modules whose dependencies cannot be resolved get no dependencies listed.
    pub fn modules_dep(&self) -> String {
        let mut lines: Vec<(String, String)> = self
            .modules
            .values()
            .map(|m| {
                let path = m.path.to_string_lossy().into_owned();
                let deps = self
                    .closure(std::slice::from_ref(&m.name))
                    .unwrap_or_default();
                let rest: Vec<String> = deps
                    .iter()
                    .rev()
                    .filter(|d| d.name != m.name)
                    .map(|d| d.path.to_string_lossy().into_owned())
                    .collect();
                let line = if rest.is_empty() {
                    format!("{path}:\n")
                } else {
                    format!("{path}: {}\n", rest.join(" "))
                };
                (path, line)
            })
            .collect();
        lines.sort();
        lines.into_iter().map(|(_, l)| l).collect()
    }

    /// vmlinuz path inside the unpacked package (boot/vmlinuz-<release>).
    pub fn vmlinuz(&self, unpacked_kernel: &Path) -> PathBuf {
        unpacked_kernel.join(format!("boot/vmlinuz-{}", self.release))
    }

    /// The kernel's build configuration (boot/config-<release>), see [`parse_config`].
    pub fn config(&self, unpacked_kernel: &Path) -> Result<BTreeMap<String, String>, KmodError> {
        let path = unpacked_kernel.join(format!("boot/config-{}", self.release));
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(parse_config(&text))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A minimal ELF64 relocatable object with a `.modinfo` section holding `info`.
    fn fake_ko(info: &[&str]) -> Vec<u8> {
        let mut modinfo = Vec::new();
        for kv in info {
            modinfo.extend_from_slice(kv.as_bytes());
            modinfo.push(0);
        }
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut f = vec![0u8; 64];
        let modinfo_off = f.len();
        f.extend_from_slice(&modinfo);
        let shstr_off = f.len();
        f.extend_from_slice(shstrtab);
        f.resize(f.len().next_multiple_of(8), 0);
        let shoff = f.len();
        let sh = |name: u32, ty: u32, off: usize, size: usize| {
            let mut s = vec![0u8; 64];
            s[0..4].copy_from_slice(&name.to_le_bytes());
            s[4..8].copy_from_slice(&ty.to_le_bytes());
            s[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            s[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            s
        };
        f.extend(sh(0, 0, 0, 0));
        f.extend(sh(1, 1, modinfo_off, modinfo.len()));
        f.extend(sh(10, 3, shstr_off, shstrtab.len()));
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // 64-bit
        f[5] = 1; // little endian
        f[6] = 1; // version
        f[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        f[58..60].copy_from_slice(&64u16.to_le_bytes()); // shentsize
        f[60..62].copy_from_slice(&3u16.to_le_bytes()); // shnum
        f[62..64].copy_from_slice(&2u16.to_le_bytes()); // shstrndx
        f
    }

    fn fake_kernel() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("lib/modules/6.1.0-9-test");
        let files: &[(&str, &[&str])] = &[
            (
                "kernel/drivers/virtio/virtio_ring.ko",
                &["name=virtio_ring", "depends="],
            ),
            (
                "kernel/drivers/virtio/virtio.ko",
                &["name=virtio", "depends=virtio_ring"],
            ),
            (
                "kernel/drivers/net/virtio_net.ko",
                &[
                    "alias=virtio:d00000001v*",
                    "depends=net_failover,virtio_ring,virtio",
                    "name=virtio_net",
                ],
            ),
            (
                "kernel/drivers/net/net_failover.ko",
                &["depends=failover", "name=net_failover"],
            ),
            (
                "kernel/net/core/failover.ko",
                &["depends=", "name=failover"],
            ),
            (
                "kernel/drivers/md/dm-verity.ko",
                &["depends=dm-bufio,dm-mod,crc32c_generic", "name=dm_verity"],
            ),
            (
                "kernel/drivers/md/dm-bufio.ko",
                &["depends=", "name=dm_bufio"],
            ),
            ("kernel/drivers/md/dm-mod.ko", &["depends=", "name=dm_mod"]),
        ];
        for (path, info) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, fake_ko(info)).unwrap();
        }
        std::fs::write(
            dir.join("modules.builtin"),
            "kernel/crypto/crc32c_generic.ko\nkernel/fs/ext4/ext4.ko\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.order"), "").unwrap();
        std::fs::create_dir_all(t.path().join("boot")).unwrap();
        std::fs::write(
            t.path().join("boot/config-6.1.0-9-test"),
            "# comment\nCONFIG_DM_VERITY=m\nCONFIG_FAT_DEFAULT_IOCHARSET=\"ascii\"\n# CONFIG_SQUASHFS_LZ4 is not set\n",
        )
        .unwrap();
        t
    }

    fn names(ms: &[&Module]) -> Vec<String> {
        ms.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn scan_reads_modinfo_and_builtin() {
        let t = fake_kernel();
        let m = scan(t.path()).unwrap();
        assert_eq!(m.release, "6.1.0-9-test");
        assert_eq!(m.modules.len(), 8);
        assert_eq!(
            m.modules["dm_verity"].path,
            PathBuf::from("kernel/drivers/md/dm-verity.ko")
        );
        assert_eq!(
            m.modules["dm_verity"].depends,
            ["dm_bufio", "dm_mod", "crc32c_generic"]
        );
        assert!(m.modules["virtio_ring"].depends.is_empty());
        assert!(m.builtin.contains("crc32c_generic") && m.builtin.contains("ext4"));
        assert_eq!(
            m.vmlinuz(t.path()),
            t.path().join("boot/vmlinuz-6.1.0-9-test")
        );
        let c = m.config(t.path()).unwrap();
        assert_eq!(c["CONFIG_DM_VERITY"], "m");
        assert_eq!(c["CONFIG_FAT_DEFAULT_IOCHARSET"], "\"ascii\"");
        assert_eq!(c["CONFIG_SQUASHFS_LZ4"], "n");
    }

    #[test]
    fn closure_is_in_load_order_and_skips_builtins() {
        let t = fake_kernel();
        let m = scan(t.path()).unwrap();
        let c = m
            .closure(&[
                "virtio-net".into(),
                "ext4".into(),
                "dm-verity".into(),
                "virtio".into(),
            ])
            .unwrap();
        assert_eq!(
            names(&c),
            [
                "failover",
                "net_failover",
                "virtio_ring",
                "virtio",
                "virtio_net",
                "dm_bufio",
                "dm_mod",
                "dm_verity"
            ]
        );
        let e = m.closure(&["nope".into()]).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("early-modules"), "{e}");
    }

    #[test]
    fn missing_dependency_and_cycles_are_errors() {
        let mut m = Modules {
            release: "r".into(),
            ..Modules::default()
        };
        let add = |m: &mut Modules, n: &str, d: &[&str]| {
            m.modules.insert(
                n.into(),
                Module {
                    name: n.into(),
                    path: PathBuf::from(format!("kernel/{n}.ko")),
                    depends: d.iter().map(|s| s.to_string()).collect(),
                },
            );
        };
        add(&mut m, "a", &["b"]);
        add(&mut m, "b", &["ghost"]);
        let e = m.closure(&["a".into()]).unwrap_err().to_string();
        assert!(e.contains("b depends on ghost"), "{e}");
        add(&mut m, "b", &["c"]);
        add(&mut m, "c", &["a"]);
        let e = m.closure(&["a".into()]).unwrap_err().to_string();
        assert!(e.contains("a -> b -> c -> a"), "{e}");
    }

    #[test]
    fn modules_dep_in_kmod_format() {
        let t = fake_kernel();
        let m = scan(t.path()).unwrap();
        let dep = m.modules_dep();
        let lines: Vec<&str> = dep.lines().collect();
        assert_eq!(lines.len(), 8);
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
        assert!(lines.contains(&"kernel/drivers/md/dm-bufio.ko:"));
        assert!(lines.contains(
            &"kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko"
        ));
        assert!(lines.contains(&"kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko kernel/drivers/md/dm-bufio.ko"));
    }

    #[test]
    fn bad_files_are_named() {
        let t = fake_kernel();
        let p = t.path().join("lib/modules/6.1.0-9-test/kernel/bad.ko");
        std::fs::write(&p, b"not elf").unwrap();
        let e = scan(t.path()).unwrap_err().to_string();
        assert!(e.contains("bad.ko"), "{e}");
        let e = scan(&t.path().join("boot")).unwrap_err().to_string();
        assert!(e.contains("lib/modules"), "{e}");
    }

    #[test]
    fn config_and_builtin_parsers() {
        let b = parse_builtin(
            "kernel/arch/x86/events/amd/amd-uncore.ko\n\nkernel/fs/binfmt_script.ko\n",
        );
        assert_eq!(
            b.into_iter().collect::<Vec<_>>(),
            ["amd_uncore", "binfmt_script"]
        );
        assert_eq!(
            module_file_name("dm-verity.ko.zst").as_deref(),
            Some("dm_verity")
        );
        assert_eq!(module_file_name("modules.dep"), None);
    }

    /// Over the real Debian kernel in the cache (run `crust build` once first).
    #[test]
    #[ignore]
    fn real_kernel_from_cache() {
        let cache = crate::debian::Cache::from_env().unpacked();
        let Some(k) = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with("linux-image-") && !n.starts_with("linux-image-cloud-amd64")
            })
        else {
            eprintln!("no unpacked kernel in {cache:?}; skipping");
            return;
        };
        let t = std::time::Instant::now();
        let m = scan(&k).unwrap();
        eprintln!(
            "scanned {} modules, {} builtin in {:?}",
            m.modules.len(),
            m.builtin.len(),
            t.elapsed()
        );
        let early: Vec<String> = [
            "virtio_pci",
            "virtio_blk",
            "virtio_scsi",
            "virtio_net",
            "virtio_console",
            "sd_mod",
            "nvme",
            "squashfs",
            "dm_verity",
            "vfat",
            "nls_cp437",
            "nls_ascii",
            "efivarfs",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = m.closure(&early).unwrap();
        eprintln!("early closure ({}): {}", c.len(), names(&c).join(" "));
        let cfg = m.config(&k).unwrap();
        for key in [
            "CONFIG_SQUASHFS_ZSTD",
            "CONFIG_SQUASHFS_XZ",
            "CONFIG_RD_ZSTD",
            "CONFIG_RD_GZIP",
            "CONFIG_DM_VERITY",
            "CONFIG_EFIVAR_FS",
            "CONFIG_VFAT_FS",
            "CONFIG_FAT_DEFAULT_IOCHARSET",
            "CONFIG_BLK_DEV_DM",
        ] {
            eprintln!("{key}={}", cfg.get(key).map_or("(absent)", String::as_str));
        }
        let dep = m.modules_dep();
        assert_eq!(dep.lines().count(), m.modules.len());
        assert!(m.vmlinuz(&k).is_file());
    }
}
