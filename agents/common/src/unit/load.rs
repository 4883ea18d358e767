//! Finding a unit's file, its drop-ins and its `.wants/`/`.requires/` links across the unit
//! directories. [`UnitTree`] is an in-memory snapshot of those directories, so all precedence
//! rules are pure functions over it; [`UnitTree::read`] is the thin loader from disk.

use super::model::{Source, Unit};
use super::specifier::{Host, UnitName};
use super::{UnitError, Warning};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The system unit directories, highest precedence first.
pub const SYSTEM_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
];

/// One directory entry in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A unit file or drop-in, with its text (symlinks followed).
    File(String),
    /// Masked: a symlink to `/dev/null`, or an empty file.
    Null,
    /// A symlink in a `.wants/`/`.requires/` directory: only its name matters.
    Link(PathBuf),
    /// Could not be read; the message says why.
    Unreadable(String),
}

/// A snapshot of unit directories: full path -> entry. Directories are implied by paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitTree {
    nodes: BTreeMap<PathBuf, Node>,
}

impl UnitTree {
    pub fn new() -> UnitTree {
        UnitTree::default()
    }

    pub fn insert(&mut self, path: impl Into<PathBuf>, node: Node) -> &mut UnitTree {
        self.nodes.insert(path.into(), node);
        self
    }

    /// Adds a file; empty text counts as masked, as systemd treats empty unit files.
    pub fn file(&mut self, path: impl Into<PathBuf>, text: &str) -> &mut UnitTree {
        let node = if text.is_empty() {
            Node::Null
        } else {
            Node::File(text.to_string())
        };
        self.insert(path, node)
    }

    pub fn get(&self, path: &Path) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// The entries directly inside `dir`, by file name, in lexical order.
    pub fn children<'a>(&'a self, dir: &Path) -> Vec<(&'a str, &'a Node)> {
        self.nodes
            .range(dir.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(dir))
            .filter(|(p, _)| p.parent() == Some(dir))
            .filter_map(|(p, n)| Some((p.file_name()?.to_str()?, n)))
            .collect()
    }

    /// Reads `dirs` from disk: their files and one level of `NAME.d/`, `NAME.wants/` and
    /// `NAME.requires/` subdirectories. Missing directories are skipped; unreadable entries
    /// become [`Node::Unreadable`].
    pub fn read(dirs: &[PathBuf]) -> UnitTree {
        let mut tree = UnitTree::new();
        for dir in dirs {
            let Ok(rd) = fs::read_dir(dir) else { continue };
            for entry in rd.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_dir = fs::metadata(&path).is_ok_and(|m| m.is_dir());
                let sub = [".d", ".wants", ".requires"]
                    .into_iter()
                    .find(|s| name.ends_with(s));
                match (is_dir, sub) {
                    (true, Some(kind)) => {
                        let Ok(rd) = fs::read_dir(&path) else {
                            continue;
                        };
                        for inner in rd.flatten() {
                            let p = inner.path();
                            let node = read_node(&p, kind != ".d");
                            tree.insert(p, node);
                        }
                    }
                    (true, None) => {}
                    (false, _) => {
                        let node = read_node(&path, false);
                        tree.insert(path, node);
                    }
                }
            }
        }
        tree
    }
}

fn read_node(path: &Path, link_only: bool) -> Node {
    if let Ok(target) = fs::read_link(path) {
        if target == Path::new("/dev/null") {
            return Node::Null;
        }
        if link_only {
            return Node::Link(target);
        }
    }
    if link_only {
        return Node::Link(PathBuf::new());
    }
    match fs::read_to_string(path) {
        Ok(t) if t.is_empty() => Node::Null,
        Ok(t) => Node::File(t),
        Err(e) => Node::Unreadable(e.to_string()),
    }
}

/// Reads the facts specifiers need from the running system: `/etc/machine-id`, the kernel's
/// hostname and boot id. A fact that cannot be read stays `None` (its specifier then errors).
pub fn host_from_system() -> Host {
    let read = |p: &str| {
        fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    Host {
        machine_id: read("/etc/machine-id"),
        hostname: read("/proc/sys/kernel/hostname"),
        // systemd prints %b without dashes
        boot_id: read("/proc/sys/kernel/random/boot_id").map(|b| b.replace('-', "")),
    }
}

/// What looking up a unit name found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Unit(Box<LoadedUnit>),
    /// The highest-precedence file for this name (or its template) is masked.
    Masked {
        path: PathBuf,
    },
    /// No directory has a file for it.
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedUnit {
    pub unit: Unit,
    pub warnings: Vec<Warning>,
    /// The unit file used (for an instance without its own file, the template's).
    pub fragment: PathBuf,
    /// Drop-ins in the order they were applied.
    pub dropins: Vec<PathBuf>,
}

/// The unit search path: directories, highest precedence first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub dirs: Vec<PathBuf>,
}

impl Lookup {
    /// [`SYSTEM_DIRS`].
    pub fn system() -> Lookup {
        Lookup::new(SYSTEM_DIRS.iter().map(PathBuf::from).collect())
    }

    pub fn new(dirs: Vec<PathBuf>) -> Lookup {
        Lookup { dirs }
    }

    /// The names whose files and `.d/`/`.wants/` directories apply to `name`: the template
    /// first for an instance, then the name itself.
    fn names(name: &UnitName) -> Vec<String> {
        let mut v: Vec<String> = name.template().into_iter().collect();
        v.push(name.full.clone());
        v
    }

    /// The unit file for `name`: its own file in the highest-precedence directory that has
    /// one, else (for an instance) the template's.
    pub fn fragment<'t>(&self, tree: &'t UnitTree, name: &UnitName) -> Option<(PathBuf, &'t Node)> {
        Lookup::names(name).iter().rev().find_map(|n| {
            self.dirs.iter().find_map(|d| {
                let p = d.join(n);
                tree.get(&p).map(|node| (p, node))
            })
        })
    }

    /// The drop-ins (`NAME.d/*.conf`) for `name`, in the order they apply: sorted by file name
    /// across all directories; of two with the same file name, the one in the higher-precedence
    /// directory wins, and within one directory the instance's wins over the template's. A
    /// drop-in masked by `/dev/null` removes that file name.
    pub fn dropins<'t>(&self, tree: &'t UnitTree, name: &UnitName) -> Vec<(PathBuf, &'t Node)> {
        let mut chosen: BTreeMap<String, (PathBuf, &'t Node)> = BTreeMap::new();
        for dir in self.dirs.iter().rev() {
            for n in Lookup::names(name) {
                let d = dir.join(format!("{n}.d"));
                for (file, node) in tree.children(&d) {
                    if file.ends_with(".conf") {
                        chosen.insert(file.to_string(), (d.join(file), node));
                    }
                }
            }
        }
        chosen
            .into_values()
            .filter(|(_, n)| !matches!(n, Node::Null))
            .collect()
    }

    /// Units named in `NAME.wants/` and `NAME.requires/` directories (the template's too), as
    /// `(wants, requires)`, sorted and without duplicates. Template entries in an instance's
    /// directories get the instance (`getty@.service` under `a@x.target.wants` is
    /// `getty@x.service`), as systemd does.
    pub fn dependency_links(&self, tree: &UnitTree, name: &UnitName) -> (Vec<String>, Vec<String>) {
        let collect = |suffix: &str| {
            let mut out: Vec<String> = Vec::new();
            for dir in &self.dirs {
                for n in Lookup::names(name) {
                    for (file, _) in tree.children(&dir.join(format!("{n}.{suffix}"))) {
                        let file = match (UnitName::parse(file), &name.instance) {
                            (Ok(f), Some(inst)) if f.is_template() && !inst.is_empty() => {
                                f.with_instance(inst).map_or(file.to_string(), |f| f.full)
                            }
                            _ => file.to_string(),
                        };
                        if !out.contains(&file) {
                            out.push(file);
                        }
                    }
                }
            }
            out.sort();
            out
        };
        (collect("wants"), collect("requires"))
    }

    /// Loads `name`: its file, drop-ins applied in order, and `.wants/`/`.requires/` links
    /// added to `Wants=`/`Requires=`.
    pub fn load(&self, tree: &UnitTree, name: &str, host: &Host) -> Result<Loaded, UnitError> {
        let invalid = |why: String| UnitError::Invalid {
            unit: name.to_string(),
            why,
        };
        let parsed = UnitName::parse(name).map_err(invalid)?;
        let Some((fragment, node)) = self.fragment(tree, &parsed) else {
            return Ok(Loaded::NotFound);
        };
        let text = match node {
            Node::File(t) => t.clone(),
            Node::Null => return Ok(Loaded::Masked { path: fragment }),
            Node::Link(_) => String::new(),
            Node::Unreadable(e) => {
                return Err(UnitError::Invalid {
                    unit: fragment.display().to_string(),
                    why: format!("cannot be read: {e}"),
                })
            }
        };
        let mut sources = vec![Source {
            path: fragment.display().to_string(),
            text,
        }];
        let mut dropins = Vec::new();
        for (path, node) in self.dropins(tree, &parsed) {
            match node {
                Node::File(t) => {
                    sources.push(Source {
                        path: path.display().to_string(),
                        text: t.clone(),
                    });
                    dropins.push(path);
                }
                Node::Unreadable(e) => {
                    return Err(UnitError::Invalid {
                        unit: path.display().to_string(),
                        why: format!("drop-in cannot be read: {e}"),
                    })
                }
                Node::Null | Node::Link(_) => {}
            }
        }
        let (mut unit, warnings) = Unit::from_sources(name, &sources, host)?;
        let (wants, requires) = self.dependency_links(tree, &parsed);
        for (list, extra) in [(&mut unit.wants, wants), (&mut unit.requires, requires)] {
            for n in extra {
                if !list.contains(&n) {
                    list.push(n);
                }
            }
        }
        Ok(Loaded::Unit(Box::new(LoadedUnit {
            unit,
            warnings,
            fragment,
            dropins,
        })))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const USR: &str = "/usr/lib/systemd/system";
    const RUN: &str = "/run/systemd/system";
    const ETC: &str = "/etc/systemd/system";

    fn at(dir: &str, rel: &str) -> PathBuf {
        Path::new(dir).join(rel)
    }

    fn load(tree: &UnitTree, name: &str) -> LoadedUnit {
        match Lookup::system().load(tree, name, &Host::default()).unwrap() {
            Loaded::Unit(u) => *u,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn etc_overrides_usr_and_masks_win() {
        let mut t = UnitTree::new();
        t.file(at(USR, "a.service"), "[Service]\nExecStart=/usr-a\n")
            .file(at(ETC, "a.service"), "[Service]\nExecStart=/etc-a\n")
            .file(at(USR, "b.service"), "[Service]\nExecStart=/b\n")
            .insert(at(RUN, "b.service"), Node::Null)
            .file(at(USR, "c.service"), "[Service]\nExecStart=/c\n")
            .file(at(ETC, "c.service"), "");
        let a = load(&t, "a.service");
        assert_eq!(a.unit.exec_start[0].argv, ["/etc-a"]);
        assert_eq!(a.fragment, at(ETC, "a.service"));
        let l = Lookup::system();
        assert_eq!(
            l.load(&t, "b.service", &Host::default()).unwrap(),
            Loaded::Masked {
                path: at(RUN, "b.service")
            }
        );
        assert!(matches!(
            l.load(&t, "c.service", &Host::default()).unwrap(),
            Loaded::Masked { .. }
        ));
        assert_eq!(
            l.load(&t, "nope.service", &Host::default()).unwrap(),
            Loaded::NotFound
        );
        assert!(l.load(&t, "bad name.service", &Host::default()).is_err());
    }

    #[test]
    fn dropin_precedence_and_order() {
        let mut t = UnitTree::new();
        t.file(
            at(USR, "a.service"),
            "[Service]\nExecStart=/a\nEnvironment=BASE=1\n",
        )
        // same file name in /usr/lib and /etc: only /etc's applies
        .file(
            at(USR, "a.service.d/10-x.conf"),
            "[Service]\nEnvironment=X=usr\n",
        )
        .file(
            at(ETC, "a.service.d/10-x.conf"),
            "[Service]\nEnvironment=X=etc\n",
        )
        // lexical order across directories: 05 (run) < 10 (etc) < 20 (usr)
        .file(
            at(USR, "a.service.d/20-y.conf"),
            "[Service]\nEnvironment=Y=usr\n",
        )
        .file(
            at(RUN, "a.service.d/05-z.conf"),
            "[Service]\nEnvironment=Z=run\n",
        )
        // masked drop-in removes the /usr one of the same name
        .file(
            at(USR, "a.service.d/30-gone.conf"),
            "[Service]\nEnvironment=G=1\n",
        )
        .insert(at(ETC, "a.service.d/30-gone.conf"), Node::Null)
        // not .conf: ignored
        .file(
            at(ETC, "a.service.d/README"),
            "[Service]\nEnvironment=R=1\n",
        )
        // a drop-in replacing ExecStart= the usual way
        .file(
            at(ETC, "a.service.d/50-exec.conf"),
            "[Service]\nExecStart=\nExecStart=/new a\n",
        );
        let a = load(&t, "a.service");
        let env: Vec<String> = a
            .unit
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(env, ["BASE=1", "Z=run", "X=etc", "Y=usr"]);
        assert_eq!(a.unit.exec_start.len(), 1);
        assert_eq!(a.unit.exec_start[0].argv, ["/new", "a"]);
        assert_eq!(
            a.dropins,
            [
                at(RUN, "a.service.d/05-z.conf"),
                at(ETC, "a.service.d/10-x.conf"),
                at(USR, "a.service.d/20-y.conf"),
                at(ETC, "a.service.d/50-exec.conf"),
            ]
        );
    }

    #[test]
    fn dropin_errors_name_the_dropin() {
        let mut t = UnitTree::new();
        t.file(at(USR, "a.service"), "[Service]\nExecStart=/a\n")
            .file(
                at(ETC, "a.service.d/x.conf"),
                "[Service]\n# c\nRestart=sometimes\n",
            )
            .file(at(ETC, "b.service"), "[Service]\nExecStart=/b\n")
            .file(at(ETC, "b.service.d/x.conf"), "[Service]\nExecStart=/b2\n")
            .file(at(ETC, "w.service"), "[Service]\nExecStart=/w\n")
            .file(at(ETC, "w.service.d/x.conf"), "[Service]\nNice=5\n");
        let l = Lookup::system();
        let e = l.load(&t, "a.service", &Host::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/systemd/system/a.service.d/x.conf:3: Restart=sometimes: not supported; use no, always, on-success, on-failure, on-abnormal, on-abort or on-watchdog"
        );
        let e = l.load(&t, "b.service", &Host::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("/etc/systemd/system/b.service.d/x.conf:2: a second ExecStart=")
                && msg.contains("first at /etc/systemd/system/b.service:2"),
            "{msg}"
        );
        let w = load(&t, "w.service");
        assert_eq!(
            w.warnings[0].to_string(),
            "/etc/systemd/system/w.service.d/x.conf:2: [Service] Nice= is not supported and is ignored"
        );
    }

    #[test]
    fn templates_instances_and_their_dropins() {
        let mut t = UnitTree::new();
        t.file(
            at(USR, "getty@.service"),
            "[Unit]\nDescription=Getty on %I\n[Service]\nExecStart=/sbin/agetty %i 115200\n",
        )
        .file(
            at(USR, "getty@.service.d/10-all.conf"),
            "[Service]\nEnvironment=WHO=%i\n",
        )
        .file(
            at(ETC, "getty@ttyS0.service.d/20-one.conf"),
            "[Service]\nEnvironment=ONLY=serial\n",
        )
        // an instance with its own file uses it
        .file(
            at(ETC, "getty@tty9.service"),
            "[Service]\nExecStart=/bin/own %i\n",
        );
        let s0 = load(&t, "getty@ttyS0.service");
        assert_eq!(s0.fragment, at(USR, "getty@.service"));
        assert_eq!(s0.unit.name, "getty@ttyS0.service");
        assert_eq!(s0.unit.description.as_deref(), Some("Getty on ttyS0"));
        assert_eq!(
            s0.unit.exec_start[0].argv,
            ["/sbin/agetty", "ttyS0", "115200"]
        );
        assert_eq!(
            s0.unit.environment,
            [
                ("WHO".into(), "ttyS0".into()),
                ("ONLY".into(), "serial".into())
            ]
        );
        let s1 = load(&t, "getty@tty1.service");
        assert_eq!(s1.unit.environment, [("WHO".into(), "tty1".into())]);
        let s9 = load(&t, "getty@tty9.service");
        assert_eq!(s9.unit.exec_start[0].argv, ["/bin/own", "tty9"]);
        assert_eq!(s9.fragment, at(ETC, "getty@tty9.service"));
        // the template itself cannot be loaded
        let e = Lookup::system()
            .load(&t, "getty@.service", &Host::default())
            .unwrap_err();
        assert!(e.to_string().contains("is a template"), "{e}");
        // masking the template masks every instance without its own file
        t.insert(at(ETC, "getty@.service"), Node::Null);
        assert!(matches!(
            Lookup::system()
                .load(&t, "getty@tty1.service", &Host::default())
                .unwrap(),
            Loaded::Masked { .. }
        ));
    }

    #[test]
    fn targets_collect_wants_and_requires_directories() {
        let mut t = UnitTree::new();
        t.file(
            at(USR, "multi-user.target"),
            "[Unit]\nDescription=Multi-User\nRequires=basic.target\nAfter=basic.target\n",
        )
        .insert(
            at(USR, "multi-user.target.wants/b.service"),
            Node::Link("../b.service".into()),
        )
        .insert(
            at(ETC, "multi-user.target.wants/a.service"),
            Node::Link("/usr/lib/systemd/system/a.service".into()),
        )
        .insert(
            at(ETC, "multi-user.target.wants/b.service"),
            Node::Link("x".into()),
        )
        .insert(
            at(RUN, "multi-user.target.requires/must.service"),
            Node::Link("x".into()),
        )
        .file(at(USR, "serial@.target"), "[Unit]\nDescription=%i\n")
        .insert(
            at(USR, "serial@.target.wants/getty@.service"),
            Node::Link("x".into()),
        );
        let m = load(&t, "multi-user.target");
        assert_eq!(m.unit.wants, ["a.service", "b.service"]);
        assert_eq!(m.unit.requires, ["basic.target", "must.service"]);
        assert_eq!(m.unit.after, ["basic.target"]);
        assert!(m.unit.exec_start.is_empty());
        let s = load(&t, "serial@ttyS0.target");
        assert_eq!(s.unit.wants, ["getty@ttyS0.service"]);
    }

    #[test]
    fn reads_directories_from_disk() {
        let dir = std::env::temp_dir().join(format!("crust-unit-load-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let etc = dir.join("etc");
        let usr = dir.join("usr");
        for d in [
            etc.join("a.service.d"),
            usr.join("multi-user.target.wants"),
            usr.join("unrelated"),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(usr.join("a.service"), "[Service]\nExecStart=/a\n").unwrap();
        fs::write(etc.join("a.service.d/x.conf"), "[Service]\nUser=core\n").unwrap();
        fs::write(usr.join("empty.service"), "").unwrap();
        fs::write(usr.join("unrelated/x.service"), "[Service]\nExecStart=/x\n").unwrap();
        std::os::unix::fs::symlink("/dev/null", etc.join("m.service")).unwrap();
        std::os::unix::fs::symlink(
            "../a.service",
            usr.join("multi-user.target.wants/a.service"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../ghost.service",
            usr.join("multi-user.target.wants/ghost.service"),
        )
        .unwrap();
        let dirs = vec![etc.clone(), usr.clone()];
        let tree = UnitTree::read(&dirs);
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(tree.get(&etc.join("m.service")), Some(&Node::Null));
        assert_eq!(tree.get(&usr.join("empty.service")), Some(&Node::Null));
        assert_eq!(tree.get(&usr.join("unrelated/x.service")), None);
        let l = Lookup::new(dirs);
        let name = UnitName::parse("multi-user.target").unwrap();
        assert_eq!(
            l.dependency_links(&tree, &name).0,
            ["a.service", "ghost.service"]
        );
        match l.load(&tree, "a.service", &Host::default()).unwrap() {
            Loaded::Unit(u) => assert_eq!(u.unit.user.as_deref(), Some("core")),
            other => panic!("{other:?}"),
        }
    }
}
