//! Debian packages into the cache, with their dependency closure.
//!
//! The closure logic ([`closure`]) is pure: it asks a [`PackageSource`] for package metadata, one
//! batch of names per breadth-first level (each `apt-cache` call costs most of a second, whatever
//! the number of names). Two sources exist: [`AptSource`] asks apt (online builds) and
//! [`MemorySource`] holds paragraphs in memory (offline builds read them from the control files of
//! the cached .debs; tests write them by hand). Both speak deb822, parsed by [`parse_paragraphs`].

use crate::progress::Progress;
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;

/// Where downloaded and unpacked packages are kept between builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// $CRUST_CACHE, else $XDG_CACHE_HOME/crust, else ~/.cache/crust.
    pub fn from_env() -> Cache {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let root = if let Some(c) = var("CRUST_CACHE") {
            PathBuf::from(c)
        } else if let Some(x) = var("XDG_CACHE_HOME") {
            PathBuf::from(x).join("crust")
        } else if let Some(h) = var("HOME") {
            PathBuf::from(h).join(".cache/crust")
        } else {
            PathBuf::from(".cache/crust")
        };
        Cache { root }
    }

    pub fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    pub fn unpacked(&self) -> PathBuf {
        self.root.join("unpacked")
    }
}

/// A package of the closure, downloaded into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deb {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The .deb in `cache.root/debs/`.
    pub path: PathBuf,
    /// Hex SHA256 of the .deb.
    pub sha256: String,
    /// The packages of the closure this one depends on (resolved names, not virtual ones).
    pub depends: Vec<String>,
}

#[derive(Debug, Error)]
pub enum DebianError {
    #[error("{origin}: line {line}: {why}")]
    Paragraph {
        origin: String,
        line: usize,
        why: String,
    },
    #[error("package {package}: field {field}: cannot parse {value:?}: {why}")]
    Field {
        package: String,
        field: String,
        value: String,
        why: String,
    },
    #[error("package {package} needed by {needed_by} is not known to apt; check the name, or run `apt-get update` if the package lists are stale")]
    Unknown { package: String, needed_by: String },
    #[error("package {package} needed by {needed_by} is not in the cache {cache:?} and --offline forbids downloading it; run once without --offline, or `cd {cache:?} && apt-get download {package}`")]
    NotCached {
        package: String,
        needed_by: String,
        cache: PathBuf,
    },
    #[error("apt has no package lists (nothing in /var/lib/apt/lists); run `apt-get update` as root, then build again")]
    NoAptLists,
    #[error("cannot run `{command}`: {source}; is apt installed (Debian or Ubuntu host)?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("apt has no SHA256 for {package} {version}; cannot verify the download")]
    NoChecksum { package: String, version: String },
    #[error("{path:?}: SHA256 is {actual} but apt's metadata says {expected}; delete the file and build again")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("`apt-get download {package}={version}` produced no .deb in {dir:?}")]
    NotDownloaded {
        package: String,
        version: String,
        dir: PathBuf,
    },
    #[error("{path:?} is not a usable .deb: {why}; delete it and build again")]
    BadDeb { path: PathBuf, why: String },
    #[error("{path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DebianError + '_ {
    move |source| DebianError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// deb822

/// One deb822 paragraph: fields in file order. Field names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    pub fields: Vec<(String, String)>,
}

impl Paragraph {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses deb822 text (`apt-cache show` output, a .deb's control file). Continuation lines are
/// joined with '\n'; a ` .` line (an empty line inside a multi-line value) becomes an empty line.
/// `origin` names the source in errors.
pub fn parse_paragraphs(text: &str, origin: &str) -> Result<Vec<Paragraph>, DebianError> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for (i, line) in text.lines().enumerate() {
        let err = |why: &str| DebianError::Paragraph {
            origin: origin.to_string(),
            line: i + 1,
            why: why.to_string(),
        };
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some((_, value)) = cur.fields.last_mut() else {
                return Err(err("continuation line without a field before it"));
            };
            let rest = line.trim();
            value.push('\n');
            if rest != "." {
                value.push_str(rest);
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(err("expected `Field: value`"));
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(err("bad field name"));
        }
        cur.fields.push((key.to_string(), value.trim().to_string()));
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// One alternative of a dependency: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    /// The multiarch qualifier (`any`, `native`, `amd64`); names the same package for us.
    pub arch: Option<String>,
    /// `(op, version)`, e.g. `(">=", "2.34")`.
    pub version: Option<(String, String)>,
}

/// Parses a relationship field (Depends, Pre-Depends, Provides): comma-separated groups of
/// `|`-separated alternatives. Architecture restrictions (`[amd64]`) and build profiles (`<!x>`)
/// are dropped: they appear only in source packages.
pub fn parse_relations(value: &str) -> Result<Vec<Vec<Dep>>, String> {
    let mut groups = Vec::new();
    for group in value.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            alts.push(parse_dep(alt.trim())?);
        }
        groups.push(alts);
    }
    Ok(groups)
}

fn parse_dep(s: &str) -> Result<Dep, String> {
    // Cut off restrictions first: `foo (>= 1) [amd64] <!nocheck>`; `<` inside the parentheses
    // belongs to the version operator.
    let from = s.find(')').unwrap_or(0);
    let end = s[from..]
        .find(['[', '<'])
        .filter(|_| from > 0 || !s.contains('('))
        .map_or(s.len(), |i| from + i);
    let s = &s[..end];
    let (head, version) = match s.split_once('(') {
        Some((head, rest)) => {
            let inner = rest
                .split_once(')')
                .map(|(v, _)| v)
                .ok_or_else(|| format!("{s:?}: `(` without `)`"))?
                .trim();
            let op_len = inner
                .find(|c: char| !matches!(c, '<' | '>' | '='))
                .unwrap_or(inner.len());
            let (op, ver) = inner.split_at(op_len);
            let ver = ver.trim();
            if !matches!(op, "<<" | "<=" | "=" | ">=" | ">>" | "<" | ">") || ver.is_empty() {
                return Err(format!("{s:?}: bad version constraint"));
            }
            (head, Some((op.to_string(), ver.to_string())))
        }
        None => (s, None),
    };
    let head = head.trim();
    let (name, arch) = match head.split_once(':') {
        Some((n, a)) => (n, Some(a.to_string())),
        None => (head, None),
    };
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c);
    if name.is_empty() || !name.chars().all(valid) {
        return Err(format!("{head:?} is not a package name"));
    }
    Ok(Dep {
        name: name.to_string(),
        arch,
        version,
    })
}

/// Compares Debian versions (`[epoch:]upstream[-revision]`) as dpkg does.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    // '~' sorts before everything, even the end of the string; letters before non-letters.
    fn order(c: Option<char>) -> i32 {
        match c {
            None => 0,
            Some('~') => -1,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (mut a, mut b) = (a, b);
        while !a.is_empty() || !b.is_empty() {
            let na = a.find(|c: char| c.is_ascii_digit()).unwrap_or(a.len());
            let nb = b.find(|c: char| c.is_ascii_digit()).unwrap_or(b.len());
            let (sa, sb) = (&a[..na], &b[..nb]);
            let (mut ca, mut cb) = (sa.chars(), sb.chars());
            loop {
                let (x, y) = (ca.next(), cb.next());
                if x.is_none() && y.is_none() {
                    break;
                }
                match order(x).cmp(&order(y)) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            a = &a[na..];
            b = &b[nb..];
            let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
            let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
            let num = |s: &str| {
                let t = s.trim_start_matches('0');
                (t.len(), t.to_string())
            };
            match num(&a[..da]).cmp(&num(&b[..db])) {
                Ordering::Equal => {}
                o => return o,
            }
            a = &a[da..];
            b = &b[db..];
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua, ub))
        .then_with(|| part(ra, rb))
}

// ---------------------------------------------------------------------------------------------
// Package metadata and the closure

/// What the closure needs to know about one package version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub priority: String,
    /// Depends and Pre-Depends.
    pub depends: Vec<Vec<Dep>>,
    /// Names this package also answers to (virtual packages).
    pub provides: Vec<String>,
    /// From apt's metadata (online) or the .deb's hash (offline, filled when chosen).
    pub sha256: Option<String>,
    /// The .deb, when it is already on disk (offline).
    pub path: Option<PathBuf>,
}

impl Candidate {
    pub fn from_paragraph(p: &Paragraph) -> Result<Candidate, DebianError> {
        let name = p.get("Package").unwrap_or_default().to_string();
        let field = |f: &str| -> Result<Vec<Vec<Dep>>, DebianError> {
            match p.get(f) {
                None => Ok(Vec::new()),
                Some(v) => parse_relations(v).map_err(|why| DebianError::Field {
                    package: name.clone(),
                    field: f.to_string(),
                    value: v.to_string(),
                    why,
                }),
            }
        };
        let required = |f: &str| -> Result<String, DebianError> {
            p.get(f)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| DebianError::Field {
                    package: name.clone(),
                    field: f.to_string(),
                    value: String::new(),
                    why: "missing".into(),
                })
        };
        let version = required("Version")?;
        let arch = required("Architecture")?;
        if name.is_empty() {
            return Err(DebianError::Field {
                package: "(unnamed)".into(),
                field: "Package".into(),
                value: String::new(),
                why: "missing".into(),
            });
        }
        let mut depends = field("Pre-Depends")?;
        depends.extend(field("Depends")?);
        let provides = field("Provides")?
            .into_iter()
            .flatten()
            .map(|d| d.name)
            .collect();
        Ok(Candidate {
            version,
            arch,
            priority: p.get("Priority").unwrap_or("optional").to_string(),
            depends,
            provides,
            sha256: p.get("SHA256").map(str::to_string),
            path: None,
            name,
        })
    }
}

/// Where the closure gets package metadata from.
pub trait PackageSource {
    /// For each name that is known: the real package of that name (one candidate) or, for a
    /// virtual name, the candidates of its providers. Unknown names are left out of the map.
    fn lookup(&mut self, names: &[String])
        -> Result<BTreeMap<String, Vec<Candidate>>, DebianError>;
}

/// A package the closure chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub candidate: Candidate,
    /// Names of the chosen packages it depends on, sorted.
    pub depends: Vec<String>,
}

/// The closure failed: `package` was needed (by `needed_by`) but the source does not know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub package: String,
    pub needed_by: String,
}

fn priority_rank(p: &str) -> u8 {
    match p {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        "optional" => 3,
        _ => 4,
    }
}

/// The dependency closure of `roots`, not following the names in `skip`, sorted by name. For
/// `a | b` the first alternative the source knows wins (a skipped alternative satisfies the
/// group); a virtual name goes to a provider already chosen, else the one of highest Priority.
pub fn closure(
    source: &mut dyn PackageSource,
    roots: &[String],
    skip: &[String],
) -> Result<Result<Vec<Resolved>, Missing>, DebianError> {
    let skip: BTreeSet<&str> = skip.iter().map(String::as_str).collect();
    // Every name ever looked up, with what the source said (None: unknown).
    let mut known: BTreeMap<String, Option<Vec<Candidate>>> = BTreeMap::new();
    let mut chosen: BTreeMap<String, Resolved> = BTreeMap::new();
    // Requests of this level: (name, who needs it).
    let mut level: Vec<(Vec<String>, String)> = roots
        .iter()
        .map(|r| (vec![r.clone()], "the manifest".to_string()))
        .collect();

    while !level.is_empty() {
        let wanted: Vec<String> = level
            .iter()
            .flat_map(|(alts, _)| alts.iter())
            .filter(|n| !known.contains_key(*n) && !skip.contains(n.as_str()))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !wanted.is_empty() {
            let mut found = source.lookup(&wanted)?;
            for n in wanted {
                let c = found.remove(&n).filter(|c| !c.is_empty());
                known.insert(n, c);
            }
        }

        let mut next = Vec::new();
        for (alts, needed_by) in level {
            let mut pick = None;
            for alt in &alts {
                if skip.contains(alt.as_str()) {
                    break;
                }
                if let Some(Some(cands)) = known.get(alt) {
                    pick = Some(choose(alt, cands, &chosen));
                    break;
                }
            }
            let satisfied_by_skip = alts.iter().any(|a| skip.contains(a.as_str()));
            let Some(cand) = pick else {
                if satisfied_by_skip {
                    continue;
                }
                return Ok(Err(Missing {
                    package: alts.join(" | "),
                    needed_by,
                }));
            };
            if let Some(parent) = chosen.get_mut(&needed_by) {
                if !parent.depends.contains(&cand.name) {
                    parent.depends.push(cand.name.clone());
                    parent.depends.sort();
                }
            }
            if chosen.contains_key(&cand.name) {
                continue;
            }
            for group in &cand.depends {
                let names = group.iter().map(|d| d.name.clone()).collect();
                next.push((names, cand.name.clone()));
            }
            chosen.insert(
                cand.name.clone(),
                Resolved {
                    candidate: cand,
                    depends: Vec::new(),
                },
            );
        }
        level = next;
    }
    Ok(Ok(chosen.into_values().collect()))
}

fn choose(name: &str, cands: &[Candidate], chosen: &BTreeMap<String, Resolved>) -> Candidate {
    if let Some(real) = cands.iter().find(|c| c.name == name) {
        return real.clone();
    }
    if let Some(c) = cands.iter().find(|c| chosen.contains_key(&c.name)) {
        return c.clone();
    }
    let mut sorted: Vec<&Candidate> = cands.iter().collect();
    sorted.sort_by(|a, b| {
        priority_rank(&a.priority)
            .cmp(&priority_rank(&b.priority))
            .then_with(|| a.name.cmp(&b.name))
    });
    // `cands` is non-empty (checked by the caller), so the fallback is never used.
    sorted
        .first()
        .map(|c| (*c).clone())
        .unwrap_or_else(|| cands[0].clone())
}

/// Package metadata held in memory: the newest version of each name, and who provides what.
#[derive(Debug, Default)]
pub struct MemorySource {
    packages: BTreeMap<String, Candidate>,
    providers: BTreeMap<String, BTreeSet<String>>,
}

impl MemorySource {
    pub fn new(candidates: impl IntoIterator<Item = Candidate>) -> MemorySource {
        let mut s = MemorySource::default();
        for c in candidates {
            s.add(c);
        }
        s
    }

    pub fn add(&mut self, c: Candidate) {
        if let Some(old) = self.packages.get(&c.name) {
            if compare_versions(&old.version, &c.version) != Ordering::Less {
                return;
            }
        }
        for p in &c.provides {
            self.providers
                .entry(p.clone())
                .or_default()
                .insert(c.name.clone());
        }
        self.packages.insert(c.name.clone(), c);
    }
}

impl PackageSource for MemorySource {
    fn lookup(
        &mut self,
        names: &[String],
    ) -> Result<BTreeMap<String, Vec<Candidate>>, DebianError> {
        let mut out = BTreeMap::new();
        for n in names {
            if let Some(c) = self.packages.get(n) {
                out.insert(n.clone(), vec![c.clone()]);
            } else if let Some(ps) = self.providers.get(n) {
                // A provider may have been superseded by a newer version that no longer provides.
                let cands: Vec<Candidate> = ps
                    .iter()
                    .filter_map(|p| self.packages.get(p))
                    .filter(|c| c.provides.contains(n))
                    .cloned()
                    .collect();
                out.insert(n.clone(), cands);
            }
        }
        Ok(out)
    }
}

/// Package metadata from apt's lists, through `apt-cache`.
pub struct AptSource;

const HOST_ARCHES: &[&str] = &["amd64", "all"];

fn run(cmd: &mut Command) -> Result<String, DebianError> {
    let command = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|source| DebianError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(DebianError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl AptSource {
    fn show(names: &[String]) -> Result<Vec<Candidate>, DebianError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let text = run(Command::new("apt-cache")
            .args(["show", "--no-all-versions", "--"])
            .args(names)
            .env("LC_ALL", "C"))?;
        let mut out = Vec::new();
        for p in parse_paragraphs(&text, "apt-cache show")? {
            let c = Candidate::from_paragraph(&p)?;
            if HOST_ARCHES.contains(&c.arch.as_str()) {
                out.push(c);
            }
        }
        Ok(out)
    }
}

/// Parses `apt-cache showpkg` output into name -> providers (the `Reverse Provides:` section).
pub fn parse_showpkg_providers(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_provides = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("Package: ") {
            current = Some(name.trim().to_string());
            in_provides = false;
        } else if line.starts_with("Reverse Provides:") {
            in_provides = true;
        } else if in_provides && !line.starts_with(' ') && line.contains(' ') {
            if let (Some(cur), Some(provider)) = (&current, line.split_whitespace().next()) {
                out.entry(cur.clone())
                    .or_default()
                    .insert(provider.to_string());
            }
        } else {
            in_provides = false;
        }
    }
    out
}

impl PackageSource for AptSource {
    fn lookup(
        &mut self,
        names: &[String],
    ) -> Result<BTreeMap<String, Vec<Candidate>>, DebianError> {
        let mut out: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for c in AptSource::show(names)? {
            if names.contains(&c.name) {
                out.insert(c.name.clone(), vec![c]);
            }
        }
        let rest: Vec<String> = names
            .iter()
            .filter(|n| !out.contains_key(*n))
            .cloned()
            .collect();
        if rest.is_empty() {
            return Ok(out);
        }
        let text = run(Command::new("apt-cache")
            .args(["showpkg", "--"])
            .args(&rest)
            .env("LC_ALL", "C"))?;
        let providers = parse_showpkg_providers(&text);
        let all: Vec<String> = providers
            .values()
            .flatten()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let cands = AptSource::show(&all)?;
        for (virt, ps) in providers {
            let list: Vec<Candidate> = cands
                .iter()
                .filter(|c| ps.contains(&c.name) && c.provides.contains(&virt))
                .cloned()
                .collect();
            if !list.is_empty() {
                out.insert(virt, list);
            }
        }
        Ok(out)
    }
}

fn apt_has_lists() -> bool {
    std::fs::read_dir("/var/lib/apt/lists")
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// .deb files

/// Opens the member of a .deb whose name starts with `prefix` (`control.tar`, `data.tar`) and
/// hands a decompressing reader to `f`.
fn with_member<T>(
    deb: &Path,
    prefix: &str,
    f: impl FnOnce(&mut dyn Read) -> Result<T, DebianError>,
) -> Result<T, DebianError> {
    let bad = |why: String| DebianError::BadDeb {
        path: deb.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(deb).map_err(io_err(deb))?;
    let mut ar = ar::Archive::new(BufReader::new(file));
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| bad(format!("ar archive: {e}")))?;
        let id = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_string();
        let Some(ext) = id.strip_prefix(prefix) else {
            continue;
        };
        return match ext {
            ".xz" => f(&mut liblzma::read::XzDecoder::new(entry)),
            ".zst" => {
                let mut d = zstd::stream::read::Decoder::new(entry).map_err(io_err(deb))?;
                f(&mut d)
            }
            ".gz" => f(&mut flate2::read::GzDecoder::new(entry)),
            "" => {
                let mut e = entry;
                f(&mut e)
            }
            other => Err(bad(format!("{id}: unsupported compression {other:?}"))),
        };
    }
    Err(bad(format!("no {prefix}.* member")))
}

/// The control paragraph of a .deb.
pub fn read_control(deb: &Path) -> Result<Paragraph, DebianError> {
    let bad = |why: String| DebianError::BadDeb {
        path: deb.to_path_buf(),
        why,
    };
    let text = with_member(deb, "control.tar", |r| {
        let mut tar = tar::Archive::new(r);
        for entry in tar
            .entries()
            .map_err(|e| bad(format!("control.tar: {e}")))?
        {
            let mut entry = entry.map_err(|e| bad(format!("control.tar: {e}")))?;
            let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
            if path.file_name().is_some_and(|n| n == "control") {
                let mut s = String::new();
                entry
                    .read_to_string(&mut s)
                    .map_err(|e| bad(format!("control: {e}")))?;
                return Ok(s);
            }
        }
        Err(bad("control.tar has no control file".into()))
    })?;
    parse_paragraphs(&text, &deb.display().to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| bad("empty control file".into()))
}

fn sha256_file(path: &Path) -> Result<String, DebianError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(hex::encode(h.finalize()))
}

/// The file name `apt-get download` gives a package (the epoch's ':' is URL-escaped).
fn deb_file_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// Every .deb in the cache, as candidates (offline resolution).
fn cached_source(dir: &Path) -> Result<MemorySource, DebianError> {
    let mut src = MemorySource::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(src),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    paths.sort();
    for path in paths {
        let mut c = Candidate::from_paragraph(&read_control(&path)?)?;
        c.sha256 = None;
        c.path = Some(path);
        src.add(c);
    }
    Ok(src)
}

/// Computes the dependency closure (Depends + Pre-Depends; for `a | b` the first alternative that
/// exists; virtual packages through Provides) of `roots`, not following names in `skip`,
/// downloads missing .debs with `apt-get download NAME=VERSION` into `cache.root/debs/`
/// (verifying SHA256 against apt's metadata), and returns them sorted by name. `offline` never
/// runs apt: it resolves from the .debs already in the cache.
pub fn resolve(
    cache: &Cache,
    roots: &[String],
    skip: &[String],
    offline: bool,
    progress: &Progress,
) -> Result<Vec<Deb>, DebianError> {
    let debs_dir = cache.debs();
    let step = progress.step("resolve packages", None);
    let resolved = if offline {
        let mut src = cached_source(&debs_dir)?;
        closure(&mut src, roots, skip)?.map_err(|m| DebianError::NotCached {
            package: m.package,
            needed_by: m.needed_by,
            cache: debs_dir.clone(),
        })?
    } else {
        if !apt_has_lists() {
            return Err(DebianError::NoAptLists);
        }
        closure(&mut AptSource, roots, skip)?.map_err(|m| DebianError::Unknown {
            package: m.package,
            needed_by: m.needed_by,
        })?
    };
    step.done(&format!("{} packages", resolved.len()));

    std::fs::create_dir_all(&debs_dir).map_err(io_err(&debs_dir))?;
    let step = progress.step("download packages", Some(resolved.len() as u64));
    let mut missing = Vec::new();
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for r in resolved {
        let c = &r.candidate;
        let path = match &c.path {
            Some(p) => p.clone(),
            None => debs_dir.join(deb_file_name(&c.name, &c.version, &c.arch)),
        };
        let sha256 = if offline {
            sha256_file(&path)?
        } else {
            let expected = c.sha256.clone().ok_or_else(|| DebianError::NoChecksum {
                package: c.name.clone(),
                version: c.version.clone(),
            })?;
            if path.is_file() && sha256_file(&path)? == expected {
                step.inc(1);
            } else {
                missing.push((c.clone(), path.clone()));
            }
            expected
        };
        bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        out.push(Deb {
            name: c.name.clone(),
            version: c.version.clone(),
            arch: c.arch.clone(),
            path,
            sha256,
            depends: r.depends,
        });
    }
    if !missing.is_empty() {
        bytes += download(&debs_dir, &missing, &step)?;
    }
    step.done(&format!(
        "{} .debs, {} downloaded, {:.1} MiB",
        out.len(),
        missing.len(),
        bytes as f64 / 1048576.0
    ));
    Ok(out)
}

/// Downloads into a private directory, verifies, then renames into the cache, so the cache never
/// holds a partial or unverified .deb.
fn download(
    debs_dir: &Path,
    missing: &[(Candidate, PathBuf)],
    step: &crate::progress::Step,
) -> Result<u64, DebianError> {
    let tmp = debs_dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = (|| {
        let specs: Vec<String> = missing
            .iter()
            .map(|(c, _)| format!("{}={}", c.name, c.version))
            .collect();
        run(Command::new("apt-get")
            .args(["download", "-q", "--"])
            .args(&specs)
            .current_dir(&tmp)
            .env("LC_ALL", "C"))?;
        let mut bytes = 0;
        for (c, dest) in missing {
            let got = tmp.join(deb_file_name(&c.name, &c.version, &c.arch));
            if !got.is_file() {
                return Err(DebianError::NotDownloaded {
                    package: c.name.clone(),
                    version: c.version.clone(),
                    dir: tmp.clone(),
                });
            }
            let actual = sha256_file(&got)?;
            let expected = c.sha256.clone().unwrap_or_default();
            if actual != expected {
                return Err(DebianError::Checksum {
                    path: got,
                    expected,
                    actual,
                });
            }
            bytes += std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0);
            std::fs::rename(&got, dest).map_err(io_err(dest))?;
            step.inc(1);
        }
        Ok(bytes)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Extracts a .deb's data archive into `cache.root/unpacked/<name>_<version>_<sha256 prefix>/`
/// once, preserving modes and symlinks, and returns that directory. Extraction goes to a temporary
/// directory renamed into place, so an interrupted build never leaves a half-unpacked package.
pub fn unpack(cache: &Cache, deb: &Deb) -> Result<PathBuf, DebianError> {
    let base = cache.unpacked();
    let prefix = deb.sha256.get(..16).unwrap_or(&deb.sha256);
    let dir = base.join(format!(
        "{}_{}_{prefix}",
        deb.name,
        deb.version.replace(':', "%3a")
    ));
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&base).map_err(io_err(&base))?;
    let tmp = base.join(format!(".tmp-{}-{}", deb.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = with_member(&deb.path, "data.tar", |r| {
        let mut tar = tar::Archive::new(r);
        tar.set_preserve_permissions(true);
        tar.set_preserve_mtime(true);
        tar.set_unpack_xattrs(false);
        tar.unpack(&tmp).map_err(|e| DebianError::BadDeb {
            path: deb.path.clone(),
            why: format!("data.tar: {e}"),
        })
    })
    .and_then(|()| match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(()),
        // Another build unpacked the same package meanwhile; its copy is as good as ours.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(io_err(&dir)(e)),
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pkg(text: &str) -> Candidate {
        let p = parse_paragraphs(text, "test").unwrap();
        Candidate::from_paragraph(&p[0]).unwrap()
    }

    fn names(r: &[Resolved]) -> Vec<&str> {
        r.iter().map(|r| r.candidate.name.as_str()).collect()
    }

    #[test]
    fn paragraphs_with_continuations_and_blank_lines() {
        let text = "Package: a\nVersion: 1\nDescription: short\n more\n .\n end\n\n\n\
                    Package: b\ndepends: x\n";
        let ps = parse_paragraphs(text, "t").unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("package"), Some("a"));
        assert_eq!(ps[0].get("Description"), Some("short\nmore\n\nend"));
        assert_eq!(ps[1].get("Depends"), Some("x"));
        assert_eq!(ps[1].get("Version"), None);
    }

    #[test]
    fn paragraph_errors_name_the_line() {
        let e = parse_paragraphs(" orphan\n", "ctl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ctl: line 1"), "{e}");
        let e = parse_paragraphs("Package: a\nnocolon\n", "ctl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn relations_with_versions_arch_and_alternatives() {
        let r = parse_relations(
            "libc6 (>= 2.34), libgcc-s1:any, debconf (>= 0.5) | debconf-2.0,\n python3:any (<< 3.12) [amd64] <!nocheck>, x (=1.0)",
        )
        .unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r[0][0].name, "libc6");
        assert_eq!(r[0][0].version, Some((">=".into(), "2.34".into())));
        assert_eq!(r[1][0].arch.as_deref(), Some("any"));
        assert_eq!(r[1][0].name, "libgcc-s1");
        assert_eq!(r[2].len(), 2);
        assert_eq!(r[2][1].name, "debconf-2.0");
        assert_eq!(r[3][0].name, "python3");
        assert_eq!(r[3][0].version, Some(("<<".into(), "3.12".into())));
        assert_eq!(r[4][0].version, Some(("=".into(), "1.0".into())));
        assert!(parse_relations("").unwrap().is_empty());
        assert!(parse_relations("Bad Name").is_err());
        assert!(parse_relations("a (>= 1").is_err());
        assert!(parse_relations("a (~ 1)").is_err());
    }

    #[test]
    fn versions_compare_like_dpkg() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.10", "1.9", Greater),
            ("1:0.1", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("2.36-9+deb12u10", "2.36-9+deb12u9", Greater),
            ("1.0-1", "1.0-1~bpo1", Greater),
            ("1.0a", "1.0+", Less),
            ("01", "1", Equal),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} vs {b}");
        }
    }

    fn source() -> MemorySource {
        MemorySource::new([
            pkg("Package: meta\nVersion: 1\nArchitecture: amd64\nDepends: real-6 (= 1)\n"),
            pkg("Package: real-6\nVersion: 1\nArchitecture: amd64\nDepends: initramfs-tools | linux-initramfs-tool, kmod, libc6\n"),
            pkg("Package: libc6\nVersion: 2.36\nArchitecture: amd64\nDepends: libgcc-s1\n"),
            pkg("Package: libc6\nVersion: 2.35\nArchitecture: amd64\nDepends: old-thing\n"),
            pkg("Package: libgcc-s1\nVersion: 12\nArchitecture: amd64\nPre-Depends: libc6 (>= 2.34)\nDepends: gcc-12-base\n"),
            pkg("Package: gcc-12-base\nVersion: 12\nArchitecture: amd64\n"),
            pkg("Package: tool\nVersion: 1\nArchitecture: amd64\nDepends: nothere | libc6, awk, mail-transport-agent | sendmail\n"),
            pkg("Package: mawk\nVersion: 1\nArchitecture: amd64\nPriority: required\nProvides: awk\n"),
            pkg("Package: gawk\nVersion: 1\nArchitecture: amd64\nPriority: optional\nProvides: awk\n"),
            pkg("Package: exim\nVersion: 1\nArchitecture: amd64\nProvides: mail-transport-agent\n"),
            pkg("Package: broken\nVersion: 1\nArchitecture: amd64\nDepends: libc6, ghost (>= 2)\n"),
        ])
    }

    #[test]
    fn closure_follows_depends_and_pre_depends_and_skips() {
        let skip = vec!["initramfs-tools".into(), "kmod".into()];
        let r = closure(&mut source(), &["meta".into()], &skip)
            .unwrap()
            .unwrap();
        assert_eq!(
            names(&r),
            ["gcc-12-base", "libc6", "libgcc-s1", "meta", "real-6"]
        );
        // the newest version wins; the old one's dependency is not followed
        assert_eq!(r[1].candidate.version, "2.36");
        assert_eq!(r[1].depends, ["libgcc-s1"]);
        assert_eq!(r[2].depends, ["gcc-12-base", "libc6"]);
        assert_eq!(r[4].depends, ["libc6"]);
    }

    #[test]
    fn closure_alternatives_and_virtual_packages() {
        let r = closure(&mut source(), &["tool".into()], &[])
            .unwrap()
            .unwrap();
        assert_eq!(
            names(&r),
            ["exim", "gcc-12-base", "libc6", "libgcc-s1", "mawk", "tool"]
        );
        // a provider already chosen wins over priority
        let r = closure(&mut source(), &["gawk".into(), "tool".into()], &[])
            .unwrap()
            .unwrap();
        assert!(names(&r).contains(&"gawk") && !names(&r).contains(&"mawk"));
    }

    #[test]
    fn closure_names_the_missing_package_and_who_needs_it() {
        let m = closure(&mut source(), &["broken".into()], &[])
            .unwrap()
            .unwrap_err();
        assert_eq!(m.package, "ghost");
        assert_eq!(m.needed_by, "broken");
        let m = closure(&mut source(), &["nope".into()], &[])
            .unwrap()
            .unwrap_err();
        assert_eq!(m.needed_by, "the manifest");
        // without the skip, the initramfs alternatives are all missing
        let m = closure(&mut source(), &["real-6".into()], &["kmod".into()])
            .unwrap()
            .unwrap_err();
        assert_eq!(m.package, "initramfs-tools | linux-initramfs-tool");
    }

    #[test]
    fn showpkg_reverse_provides() {
        let text = "Package: awk\nVersions: \n\nReverse Depends: \n  base-files,awk\nDependencies: \nProvides: \nReverse Provides: \nmawk 1.3.4 (= )\ngawk 1:5.2.1-2 (= )\nPackage: ghost\nVersions: \nReverse Provides: \n";
        let p = parse_showpkg_providers(text);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p["awk"].iter().map(String::as_str).collect::<Vec<_>>(),
            ["gawk", "mawk"]
        );
    }

    /// A .deb as dpkg-deb lays it out: debian-binary, control.tar.gz, data.tar.xz.
    fn make_deb(dir: &Path, control: &str) -> PathBuf {
        use std::io::Write;
        let tarball = |files: &[(&str, &[u8], u32)], link: Option<(&str, &str)>| {
            let mut b = tar::Builder::new(Vec::new());
            for (path, data, mode) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                h.set_mtime(1_700_000_000);
                b.append_data(&mut h, path, *data).unwrap();
            }
            if let Some((path, target)) = link {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            b.into_inner().unwrap()
        };
        let control_tar = tarball(&[("./control", control.as_bytes(), 0o644)], None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&control_tar).unwrap();
        let data_tar = tarball(
            &[
                ("./usr/bin/tool", b"#!/bin/sh\n", 0o755),
                ("./usr/share/doc/x", b"doc", 0o644),
            ],
            Some(("./usr/bin/alias", "/usr/bin/tool")),
        );
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data_tar).unwrap();
        let p = parse_paragraphs(control, "t").unwrap();
        let c = Candidate::from_paragraph(&p[0]).unwrap();
        let path = dir.join(deb_file_name(&c.name, &c.version, &c.arch));
        let mut ar = ar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, data) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", gz.finish().unwrap()),
            ("data.tar.xz", xz.finish().unwrap()),
        ] {
            let h = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
            ar.append(&h, data.as_slice()).unwrap();
        }
        path
    }

    #[test]
    fn offline_resolve_and_unpack_from_cached_debs() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: t.path().to_path_buf(),
        };
        std::fs::create_dir_all(cache.debs()).unwrap();
        make_deb(
            &cache.debs(),
            "Package: tool\nVersion: 1:2.0-1\nArchitecture: amd64\nDepends: libx (>= 1), debconf | debconf-2.0\n",
        );
        make_deb(
            &cache.debs(),
            "Package: libx\nVersion: 1.0\nArchitecture: amd64\n",
        );
        make_deb(
            &cache.debs(),
            "Package: libx\nVersion: 1.1\nArchitecture: amd64\n",
        );
        let skip = vec!["debconf".to_string()];
        let debs = resolve(&cache, &["tool".into()], &skip, true, &Progress::silent()).unwrap();
        assert_eq!(debs.len(), 2);
        assert_eq!(
            (debs[0].name.as_str(), debs[0].version.as_str()),
            ("libx", "1.1")
        );
        assert_eq!(debs[1].depends, ["libx"]);
        assert_eq!(debs[1].sha256, sha256_file(&debs[1].path).unwrap());

        let dir = unpack(&cache, &debs[1]).unwrap();
        assert!(dir.starts_with(cache.unpacked()));
        let mode = std::fs::metadata(dir.join("usr/bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(dir.join("usr/bin/alias")).unwrap(),
            PathBuf::from("/usr/bin/tool")
        );
        // a second unpack reuses the directory; no temporary directory is left behind
        assert_eq!(unpack(&cache, &debs[1]).unwrap(), dir);
        let left: Vec<_> = std::fs::read_dir(cache.unpacked())
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(left.len(), 1);

        let e = resolve(&cache, &["ghost".into()], &[], true, &Progress::silent())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ghost") && e.contains("apt-get download ghost"),
            "{e}"
        );
    }

    #[test]
    fn cache_paths_and_apt_file_names() {
        let c = Cache {
            root: PathBuf::from("/x"),
        };
        assert_eq!(c.debs(), PathBuf::from("/x/debs"));
        assert_eq!(
            deb_file_name("a", "1:2.0-1", "amd64"),
            "a_1%3a2.0-1_amd64.deb"
        );
    }
}
