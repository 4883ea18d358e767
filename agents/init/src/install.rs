//! `enable`, `disable`, `mask`, `unmask`, `cat` and `list-unit-files`: what systemctl does to unit
//! files, on a root directory so it is tested on the host. Enabling links the unit into each
//! `WantedBy=` target's `.wants/` (and `RequiredBy=`'s `.requires/`) under `/etc/systemd/system`
//! (or `/run/systemd/system` with `runtime`); masking links it to `/dev/null`.

use crust_common::unit::Unit;
use std::fs;
use std::path::{Path, PathBuf};

/// Unit directories, highest precedence first (as init reads them).
use crust_common::unit::SYSTEM_DIRS as DIRS;

fn at(root: &Path, dir: &str) -> PathBuf {
    root.join(dir.trim_start_matches('/'))
}

/// The file defining `name`, highest precedence first (templates for instances).
pub fn find(root: &Path, name: &str) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = DIRS.iter().map(|d| at(root, d)).collect();
    find_in(&dirs, name)
}

/// The file defining `name` in `dirs` (highest precedence first); an instance
/// (`a@x.service`) falls back to its template (`a@.service`).
pub fn find_in(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    let template = crust_common::unit::UnitName::parse(name)
        .ok()
        .filter(|n| n.instance.as_deref().is_some_and(|i| !i.is_empty()))
        .map(|n| format!("{}@.{}", n.prefix, n.kind));
    std::iter::once(name.to_string())
        .chain(template)
        .find_map(|n| {
            dirs.iter()
                .map(|d| d.join(&n))
                .find(|p| fs::symlink_metadata(p).is_ok())
        })
}

/// Whether the highest-precedence file for `name` is a link to /dev/null.
pub fn masked(root: &Path, name: &str) -> bool {
    find(root, name).is_some_and(|p| is_masked(&p))
}

fn is_masked(p: &Path) -> bool {
    fs::read_link(p).is_ok_and(|t| t == Path::new("/dev/null"))
}

fn target_dir(runtime: bool) -> &'static str {
    if runtime {
        DIRS[1]
    } else {
        DIRS[0]
    }
}

/// Links `name` into the targets its [Install] section names; returns the links made.
pub fn enable(root: &Path, name: &str, runtime: bool) -> Result<Vec<String>, String> {
    let path = find(root, name).ok_or_else(|| format!("Unit file {name} does not exist."))?;
    if is_masked(&path) {
        return Err(format!("Unit file {name} is masked; unmask it first."));
    }
    let text = fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let (unit, _) = Unit::from_text(name, &text).map_err(|e| e.to_string())?;
    let mut made = Vec::new();
    let links = unit
        .wanted_by
        .iter()
        .map(|t| format!("{t}.wants"))
        .chain(unit.required_by.iter().map(|t| format!("{t}.requires")));
    for dir in links {
        let d = at(root, target_dir(runtime)).join(&dir);
        fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        let link = d.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(
                path.strip_prefix(root)
                    .map(|p| Path::new("/").join(p))
                    .unwrap_or(path.clone()),
                &link,
            )
            .map_err(|e| format!("linking {}: {e}", link.display()))?;
            made.push(format!("{}/{dir}/{name}", target_dir(runtime)));
        }
    }
    if made.is_empty() && unit.wanted_by.is_empty() && unit.required_by.is_empty() {
        return Err(format!(
            "{name} has no [Install] section (WantedBy=/RequiredBy=); start it instead, or add one"
        ));
    }
    Ok(made)
}

/// Removes `name`'s links from every `.wants`/`.requires` directory in /etc and /run.
pub fn disable(root: &Path, name: &str) -> Result<Vec<String>, String> {
    let mut removed = Vec::new();
    for d in &DIRS[..2] {
        let Ok(rd) = fs::read_dir(at(root, d)) else {
            continue;
        };
        for e in rd.flatten() {
            let dn = e.file_name().to_string_lossy().into_owned();
            if !(dn.ends_with(".wants") || dn.ends_with(".requires")) {
                continue;
            }
            let link = e.path().join(name);
            if fs::symlink_metadata(&link).is_ok() {
                fs::remove_file(&link).map_err(|e| format!("removing {}: {e}", link.display()))?;
                removed.push(format!("{d}/{dn}/{name}"));
            }
        }
    }
    Ok(removed)
}

/// Links `name` to /dev/null in /etc (or /run) so nothing can start it.
pub fn mask(root: &Path, name: &str, runtime: bool) -> Result<(), String> {
    let d = at(root, target_dir(runtime));
    fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    let link = d.join(name);
    if let Ok(m) = fs::symlink_metadata(&link) {
        if !m.file_type().is_symlink() {
            return Err(format!(
                "{} is a unit file, not a link; move it away to mask {name}",
                link.display()
            ));
        }
        fs::remove_file(&link).map_err(|e| e.to_string())?;
    }
    std::os::unix::fs::symlink("/dev/null", &link)
        .map_err(|e| format!("linking {}: {e}", link.display()))
}

pub fn unmask(root: &Path, name: &str) -> Result<(), String> {
    for d in &DIRS[..2] {
        let link = at(root, d).join(name);
        if is_masked(&link) {
            fs::remove_file(&link).map_err(|e| format!("removing {}: {e}", link.display()))?;
        }
    }
    Ok(())
}

/// The unit file and its drop-ins, each preceded by a `# path` line, as `systemctl cat`.
pub fn cat(root: &Path, name: &str) -> Result<String, String> {
    let path = find(root, name).ok_or_else(|| format!("No files found for {name}."))?;
    let mut out = format!(
        "# {}\n{}",
        Path::new("/")
            .join(path.strip_prefix(root).unwrap_or(&path))
            .display(),
        fs::read_to_string(&path).unwrap_or_default()
    );
    for d in DIRS.iter().rev() {
        let Ok(rd) = fs::read_dir(at(root, d).join(format!("{name}.d"))) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        files.sort();
        for f in files {
            out.push_str(&format!(
                "\n# {}\n{}",
                Path::new("/")
                    .join(f.strip_prefix(root).unwrap_or(&f))
                    .display(),
                fs::read_to_string(&f).unwrap_or_default()
            ));
        }
    }
    Ok(out)
}

/// Every unit file with its state: enabled, disabled, static (no [Install]) or masked.
pub fn list(root: &Path) -> Vec<(String, &'static str)> {
    let mut names = std::collections::BTreeSet::new();
    for d in DIRS {
        if let Ok(rd) = fs::read_dir(at(root, d)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with(".service") || n.ends_with(".target") {
                    names.insert(n);
                }
            }
        }
    }
    names
        .into_iter()
        .map(|n| {
            let state = match find(root, &n) {
                Some(p) if is_masked(&p) => "masked",
                Some(p) => {
                    let enabled = DIRS.iter().any(|d| {
                        fs::read_dir(at(root, d))
                            .into_iter()
                            .flatten()
                            .flatten()
                            .any(|e| {
                                let dn = e.file_name().to_string_lossy().into_owned();
                                (dn.ends_with(".wants") || dn.ends_with(".requires"))
                                    && fs::symlink_metadata(e.path().join(&n)).is_ok()
                            })
                    });
                    let has_install = fs::read_to_string(&p).is_ok_and(|t| t.contains("[Install]"));
                    if enabled {
                        "enabled"
                    } else if has_install {
                        "disabled"
                    } else {
                        "static"
                    }
                }
                None => "bad",
            };
            (n, state)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_disable_mask_cat_and_list() {
        let r = tempfile::tempdir().unwrap();
        let root = r.path();
        let usr = at(root, DIRS[2]);
        fs::create_dir_all(&usr).unwrap();
        fs::write(
            usr.join("a.service"),
            "[Service]\nExecStart=/bin/a\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        fs::write(usr.join("s.service"), "[Service]\nExecStart=/bin/s\n").unwrap();
        fs::create_dir_all(usr.join("a.service.d")).unwrap();
        fs::write(
            usr.join("a.service.d/10-x.conf"),
            "[Service]\nEnvironment=X=1\n",
        )
        .unwrap();
        assert_eq!(
            enable(root, "a.service", false).unwrap(),
            ["/etc/systemd/system/multi-user.target.wants/a.service"]
        );
        let link = at(root, DIRS[0]).join("multi-user.target.wants/a.service");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/usr/lib/systemd/system/a.service")
        );
        assert!(enable(root, "s.service", false)
            .unwrap_err()
            .contains("[Install]"));
        assert!(enable(root, "nope.service", false).is_err());
        let l = list(root);
        assert!(l.contains(&("a.service".into(), "enabled")), "{l:?}");
        assert!(l.contains(&("s.service".into(), "static")), "{l:?}");
        assert_eq!(disable(root, "a.service").unwrap().len(), 1);
        assert!(list(root).contains(&("a.service".into(), "disabled")));
        mask(root, "a.service", false).unwrap();
        assert!(list(root).contains(&("a.service".into(), "masked")));
        assert!(enable(root, "a.service", false)
            .unwrap_err()
            .contains("masked"));
        unmask(root, "a.service").unwrap();
        assert!(list(root).contains(&("a.service".into(), "disabled")));
        let c = cat(root, "a.service").unwrap();
        assert!(
            c.starts_with("# /usr/lib/systemd/system/a.service\n[Service]"),
            "{c}"
        );
        assert!(
            c.contains(
                "# /usr/lib/systemd/system/a.service.d/10-x.conf\n[Service]\nEnvironment=X=1"
            ),
            "{c}"
        );
    }
}
