//! The validator: walks the positioned YAML tree, builds the typed model and collects
//! diagnostics, in the spirit of coreos-cloudinit's `validate` package (structure: unknown
//! keys and wrong types; validity: values each key accepts) with crust's own rules on top
//! (nothing under the read-only `/usr`).
//!
//! Keys are normalised (`-` becomes `_`) before they are looked up, as coreos-cloudinit did.
//! Unknown keys are warnings, as they were there; anything that would make a key mean
//! something other than what the user wrote is an error.

use super::convert::{self, check_value, EnvSchema, ValueKind};
use super::encoding;
use super::model::*;
use super::yaml::{Kind, Node};
use super::{Diagnostic, Severity};
use std::collections::BTreeMap;

pub(crate) struct Checker {
    pub diags: Vec<Diagnostic>,
}

/// A mapping entry with its normalised key.
struct Entry<'a> {
    key: String,
    key_node: &'a Node,
    value: &'a Node,
}

impl Checker {
    fn push(&mut self, node: &Node, severity: Severity, message: String) {
        self.diags.push(Diagnostic {
            line: node.line,
            column: node.column,
            severity,
            message,
        });
    }

    fn error(&mut self, node: &Node, message: impl Into<String>) {
        self.push(node, Severity::Error, message.into());
    }

    fn warning(&mut self, node: &Node, message: impl Into<String>) {
        self.push(node, Severity::Warning, message.into());
    }

    fn wrong_type(&mut self, node: &Node, path: &str, want: &str) {
        self.error(
            node,
            format!(
                "incorrect type for \"{path}\": want {want}, found {}",
                node.describe()
            ),
        );
    }

    /// A mapping's entries; `null` reads as an empty mapping. Duplicate keys (also ones that
    /// differ only in `-`/`_`) are warned about; the later one wins, as in go-yaml.
    fn entries<'a>(&mut self, node: &'a Node, path: &str) -> Vec<Entry<'a>> {
        let pairs = match &node.kind {
            Kind::Map(pairs) => pairs,
            _ if node.is_null() => return Vec::new(),
            _ => {
                self.wrong_type(node, path, "a mapping");
                return Vec::new();
            }
        };
        let mut out: Vec<Entry<'a>> = Vec::new();
        for (k, v) in pairs {
            let raw = k.as_scalar().unwrap_or_default();
            let key = raw.replace('-', "_");
            if let Some(i) = out.iter().position(|e| e.key == key) {
                let first = out[i].key_node.line;
                self.warning(
                    k,
                    format!(
                        "key \"{}\" is given twice (also on line {first}); this later one is used",
                        join(path, &key)
                    ),
                );
                out.remove(i);
            }
            out.push(Entry {
                key,
                key_node: k,
                value: v,
            });
        }
        out
    }

    fn unknown(&mut self, e: &Entry, path: &str, known: &[&str]) {
        let mut msg = format!("unrecognized key \"{}\"", join(path, &e.key));
        if let Some(s) = suggest(&e.key, known) {
            msg.push_str(&format!("; did you mean \"{s}\"?"));
        } else {
            msg.push_str("; it is ignored");
        }
        self.warning(e.key_node, msg);
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            _ if node.is_null() => None,
            Kind::Scalar { value, .. } => Some(value.clone()),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> bool {
        if node.is_null() {
            return false;
        }
        match node.as_bool() {
            Some(b) => b,
            None => {
                self.wrong_type(node, path, "true or false");
                false
            }
        }
    }

    fn items<'a>(&mut self, node: &'a Node, path: &str, want: &str) -> &'a [Node] {
        match &node.kind {
            Kind::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.wrong_type(node, path, want);
                &[]
            }
        }
    }

    fn strings(&mut self, node: &Node, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, item) in self
            .items(node, path, "a list of strings")
            .iter()
            .enumerate()
        {
            if let Some(s) = self.string(item, &format!("{path}[{i}]")) {
                out.push(s);
            }
        }
        out
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The closest known key within two edits, for "did you mean".
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

const TOP: &[&str] = &[
    "hostname",
    "ssh_authorized_keys",
    "users",
    "write_files",
    "manage_etc_hosts",
    "coreos",
];

/// Builds the model from the document's root (`None`: no document) and returns the diagnostics
/// found on the way, unsorted.
pub(crate) fn check(root: Option<&Node>) -> (CloudConfig, Vec<Diagnostic>) {
    let mut c = Checker { diags: Vec::new() };
    let mut cfg = CloudConfig::default();
    let Some(root) = root else {
        return (cfg, c.diags);
    };
    if !root.is_null() && !matches!(root.kind, Kind::Map(_)) {
        c.error(
            root,
            format!(
                "a cloud-config is a mapping of keys ({}), found {}",
                TOP.join(", "),
                root.describe()
            ),
        );
        return (cfg, c.diags);
    }
    for e in c.entries(root, "") {
        let v = e.value;
        match e.key.as_str() {
            "hostname" => cfg.hostname = hostname(&mut c, v),
            "ssh_authorized_keys" => cfg.ssh_authorized_keys = c.strings(v, "ssh_authorized_keys"),
            "users" => {
                let items = c.items(v, "users", "a list of users");
                cfg.users = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, u)| user(&mut c, u, &format!("users[{i}]")))
                    .collect();
            }
            "write_files" => {
                let items = c.items(v, "write_files", "a list of files");
                cfg.write_files = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, f)| write_file(&mut c, f, &format!("write_files[{i}]")))
                    .collect();
            }
            "manage_etc_hosts" => {
                if let Some(s) = c.string(v, "manage_etc_hosts") {
                    if s == "localhost" {
                        cfg.manage_etc_hosts = Some(EtcHosts::Localhost);
                    } else {
                        c.error(
                            v,
                            format!(
                                "invalid value \"{s}\" for \"manage_etc_hosts\": the only \
                                 supported value is \"localhost\""
                            ),
                        );
                    }
                }
            }
            "coreos" => cfg.coreos = coreos(&mut c, v),
            _ => c.unknown(&e, "", TOP),
        }
    }
    (cfg, c.diags)
}

fn hostname(c: &mut Checker, v: &Node) -> Option<String> {
    let h = c.string(v, "hostname")?;
    if h.len() > 64 {
        c.error(
            v,
            format!(
                "hostname is {} bytes long; the kernel accepts at most 64",
                h.len()
            ),
        );
        return None;
    }
    let ok =
        |ch: char| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' || ch == '$' || ch == '_';
    if h.is_empty() || !h.chars().all(ok) {
        c.warning(
            v,
            format!("hostname \"{h}\" has characters other than letters, digits, '-' and '.'"),
        );
    }
    Some(h)
}

const USER: &[&str] = &[
    "name",
    "passwd",
    "gecos",
    "homedir",
    "no_create_home",
    "primary_group",
    "groups",
    "no_user_group",
    "ssh_authorized_keys",
    "system",
    "no_log_init",
    "shell",
];

fn user(c: &mut Checker, node: &Node, path: &str) -> Option<User> {
    if !matches!(node.kind, Kind::Map(_)) {
        c.wrong_type(node, path, "a mapping (a user)");
        return None;
    }
    let mut u = User::default();
    let mut name = None;
    for e in c.entries(node, path) {
        let p = join(path, &e.key);
        let v = e.value;
        match e.key.as_str() {
            "name" => name = c.string(v, &p),
            "passwd" => u.passwd = c.string(v, &p),
            "gecos" => u.gecos = c.string(v, &p),
            "homedir" => u.homedir = c.string(v, &p),
            "no_create_home" => u.no_create_home = c.boolean(v, &p),
            "primary_group" => u.primary_group = c.string(v, &p),
            "groups" => u.groups = c.strings(v, &p),
            "no_user_group" => u.no_user_group = c.boolean(v, &p),
            "ssh_authorized_keys" => u.ssh_authorized_keys = c.strings(v, &p),
            "system" => u.system = c.boolean(v, &p),
            "no_log_init" => u.no_log_init = c.boolean(v, &p),
            "shell" => u.shell = c.string(v, &p),
            "coreos_ssh_import_github"
            | "coreos_ssh_import_github_users"
            | "coreos_ssh_import_url" => c.warning(
                e.key_node,
                format!(
                    "\"{p}\" is deprecated (fetching keys from the network at boot is unreliable) \
                     and ignored; list the keys in ssh_authorized_keys"
                ),
            ),
            _ => c.unknown(&e, path, USER),
        }
    }
    match name {
        Some(n) if !n.is_empty() => u.name = n,
        _ => {
            c.error(node, format!("{path}: a user needs a name"));
            return None;
        }
    }
    Some(u)
}

const FILE: &[&str] = &["path", "content", "encoding", "permissions", "owner"];

fn write_file(c: &mut Checker, node: &Node, path: &str) -> Option<WriteFile> {
    if !matches!(node.kind, Kind::Map(_)) {
        c.wrong_type(node, path, "a mapping (a file)");
        return None;
    }
    let mut f = WriteFile::default();
    let mut file_path: Option<(String, &Node)> = None;
    let mut content_node: Option<&Node> = None;
    let mut encoding_node: Option<&Node> = None;
    let mut ok = true;
    for e in c.entries(node, path) {
        let p = join(path, &e.key);
        let v = e.value;
        match e.key.as_str() {
            "path" => file_path = c.string(v, &p).map(|s| (s, v)),
            "content" => {
                f.content = c.string(v, &p).unwrap_or_default();
                content_node = Some(v);
            }
            "encoding" => {
                encoding_node = Some(v);
                if let Some(s) = c.string(v, &p) {
                    match Encoding::parse(&s) {
                        Some(enc) => f.encoding = Some(enc),
                        None => {
                            ok = false;
                            c.error(
                                v,
                                format!(
                                    "unknown encoding \"{s}\" for \"{p}\": want one of {}",
                                    Encoding::SPELLINGS.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
            "permissions" => {
                if let Some(s) = c.string(v, &p) {
                    match permissions(&s) {
                        Some(mode) => f.permissions = Some(mode),
                        None => {
                            ok = false;
                            c.error(
                                v,
                                format!(
                                    "invalid permissions \"{s}\" for \"{p}\": want an octal mode \
                                     like \"0644\" or \"0755\""
                                ),
                            );
                        }
                    }
                }
            }
            "owner" => {
                if let Some(s) = c.string(v, &p) {
                    if owner_ok(&s) {
                        f.owner = Some(s);
                    } else {
                        ok = false;
                        c.error(
                            v,
                            format!("invalid owner \"{s}\" for \"{p}\": want \"user\" or \"user:group\""),
                        );
                    }
                }
            }
            _ => c.unknown(&e, path, FILE),
        }
    }

    // `!!binary` content was already base64-decoded by go-yaml; keep it encoded and decode it
    // here instead, so the model stays text.
    if let Some(Kind::Scalar { binary: true, .. }) = content_node.map(|n| &n.kind) {
        f.encoding = match f.encoding {
            None => Some(Encoding::Base64),
            Some(Encoding::Gzip) => Some(Encoding::GzipBase64),
            Some(other) => {
                let at = encoding_node.or(content_node).unwrap_or(node);
                c.error(
                    at,
                    format!("{path}: !!binary content cannot also be {other:?}-encoded; drop one"),
                );
                ok = false;
                Some(other)
            }
        };
    }

    match file_path {
        None => {
            c.error(node, format!("{path}: a file needs a path"));
            ok = false;
        }
        Some((p, at)) => match check_path(&p) {
            Ok(()) => f.path = p,
            Err(why) => {
                c.error(
                    at,
                    format!("invalid path \"{p}\" for \"{path}.path\": {why}"),
                );
                ok = false;
            }
        },
    }
    if ok {
        if let Err(e) = encoding::decode(&f.content, f.encoding) {
            c.error(content_node.unwrap_or(node), format!("{path}.content: {e}"));
            ok = false;
        }
    }
    ok.then_some(f)
}

/// coreos-cloudinit's `^0?[0-7]{3,4}$`, read as octal whatever YAML thought it was.
pub(crate) fn permissions(s: &str) -> Option<u32> {
    let digits = s.strip_prefix('0').filter(|d| d.len() >= 3).unwrap_or(s);
    if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

fn owner_ok(s: &str) -> bool {
    let part = |p: &str| !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c == ':');
    match s.split_once(':') {
        Some((u, g)) => part(u) && part(g),
        None => part(s),
    }
}

/// Why a `write_files` path cannot be used, if it cannot.
pub(crate) fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("paths must be absolute (start with /)".into());
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.contains(&"..") {
        return Err("paths must not contain \"..\"".into());
    }
    if parts.is_empty() {
        return Err("the path names a directory (/), not a file".into());
    }
    if parts[0] == "usr" {
        return Err(
            "/usr is read-only on crust (dm-verity); write under /etc, /opt or /var instead".into(),
        );
    }
    if p.ends_with('/') {
        return Err("the path ends in /, so it names a directory, not a file".into());
    }
    Ok(())
}

const COREOS: &[&str] = &[
    "units",
    "etcd2",
    "fleet",
    "flannel",
    "locksmith",
    "update",
    "oem",
];

fn coreos(c: &mut Checker, node: &Node) -> CoreOs {
    let mut out = CoreOs::default();
    for e in c.entries(node, "coreos") {
        let p = join("coreos", &e.key);
        let v = e.value;
        match e.key.as_str() {
            "units" => {
                let items = c.items(v, &p, "a list of units");
                out.units = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, u)| unit(c, u, &format!("{p}[{i}]")))
                    .collect();
            }
            "etcd2" => out.etcd2 = env_section(c, v, &convert::ETCD2),
            "fleet" => out.fleet = env_section(c, v, &convert::FLEET),
            "flannel" => out.flannel = env_section(c, v, &convert::FLANNEL),
            "locksmith" => out.locksmith = env_section(c, v, &convert::LOCKSMITH),
            "update" => out.update = update(c, v, &p),
            "oem" => out.oem = Some(oem(c, v, &p)),
            "etcd" => c.warning(
                e.key_node,
                "\"coreos.etcd\" configures etcd 0.4, which crust does not ship; it is ignored \
                 (use coreos.etcd2)",
            ),
            _ => c.unknown(&e, "coreos", COREOS),
        }
    }
    out
}

const UNIT: &[&str] = &[
    "name", "content", "enable", "command", "runtime", "mask", "drop_ins",
];

const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "slice",
    "scope",
    "device",
    "network",
    "netdev",
    "link",
];

fn unit(c: &mut Checker, node: &Node, path: &str) -> Option<Unit> {
    if !matches!(node.kind, Kind::Map(_)) {
        c.wrong_type(node, path, "a mapping (a unit)");
        return None;
    }
    let mut u = Unit::default();
    let mut name: Option<(String, &Node)> = None;
    let mut ok = true;
    for e in c.entries(node, path) {
        let p = join(path, &e.key);
        let v = e.value;
        match e.key.as_str() {
            "name" => name = c.string(v, &p).map(|s| (s, v)),
            "content" => u.content = c.string(v, &p),
            "enable" => u.enable = c.boolean(v, &p),
            "runtime" => u.runtime = c.boolean(v, &p),
            "mask" => u.mask = c.boolean(v, &p),
            "command" => {
                if let Some(s) = c.string(v, &p) {
                    match UnitCommand::parse(&s) {
                        Some(cmd) => u.command = Some(cmd),
                        None => {
                            ok = false;
                            let all: Vec<&str> = UnitCommand::ALL.iter().map(|(n, _)| *n).collect();
                            c.error(
                                v,
                                format!(
                                    "invalid command \"{s}\" for \"{p}\": want one of {}",
                                    all.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
            "drop_ins" => {
                let items = c.items(v, &p, "a list of drop-ins");
                for (i, d) in items.iter().enumerate() {
                    match dropin(c, d, &format!("{p}[{i}]")) {
                        Some(d) => u.drop_ins.push(d),
                        None => ok = false,
                    }
                }
            }
            _ => c.unknown(&e, path, UNIT),
        }
    }
    match name {
        None => {
            c.error(
                node,
                format!("{path}: a unit needs a name (e.g. name: app.service)"),
            );
            return None;
        }
        Some((n, at)) => {
            if n.is_empty() || n.contains('/') {
                c.error(at, format!("invalid unit name \"{n}\" for \"{path}.name\": want a file name like app.service"));
                return None;
            }
            let known_type = n
                .rsplit_once('.')
                .is_some_and(|(base, ty)| !base.is_empty() && UNIT_TYPES.contains(&ty));
            if !known_type {
                c.warning(
                    at,
                    format!(
                        "unit name \"{n}\" does not end in a unit type ({}); it will not be loaded",
                        UNIT_TYPES
                            .iter()
                            .map(|t| format!(".{t}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            u.name = n;
        }
    }
    ok.then_some(u)
}

fn dropin(c: &mut Checker, node: &Node, path: &str) -> Option<DropIn> {
    if !matches!(node.kind, Kind::Map(_)) {
        c.wrong_type(node, path, "a mapping (a drop-in)");
        return None;
    }
    let mut d = DropIn::default();
    let mut name = None;
    for e in c.entries(node, path) {
        let p = join(path, &e.key);
        match e.key.as_str() {
            "name" => name = c.string(e.value, &p).map(|s| (s, e.value)),
            "content" => d.content = c.string(e.value, &p).unwrap_or_default(),
            _ => c.unknown(&e, path, &["name", "content"]),
        }
    }
    let Some((n, at)) = name else {
        c.error(
            node,
            format!("{path}: a drop-in needs a name (e.g. name: 10-limits.conf)"),
        );
        return None;
    };
    if n.is_empty() || n.contains('/') {
        c.error(at, format!("invalid drop-in name \"{n}\" for \"{path}.name\": want a file name like 10-limits.conf"));
        return None;
    }
    if !n.ends_with(".conf") {
        c.warning(
            at,
            format!("drop-in \"{n}\" does not end in .conf; systemd-style managers ignore it"),
        );
    }
    d.name = n;
    Some(d)
}

fn env_section(c: &mut Checker, node: &Node, schema: &EnvSchema) -> BTreeMap<String, String> {
    let path = format!("coreos.{}", schema.section);
    let known: Vec<&str> = schema.keys.iter().map(|k| k.key).collect();
    let mut out = BTreeMap::new();
    for e in c.entries(node, &path) {
        let p = join(&path, &e.key);
        let v = e.value;
        let spec = schema.known(&e.key);
        match spec {
            None => {
                let mut msg = format!("unrecognized key \"{p}\"");
                if let Some(s) = suggest(&e.key, &known) {
                    msg.push_str(&format!(" (did you mean \"{s}\"?)"));
                }
                msg.push_str(&format!("; passed through as {}", schema.env_name(&e.key)));
                c.warning(e.key_node, msg);
            }
            Some(k) => {
                if let Some(why) = k.deprecated {
                    c.warning(e.key_node, format!("\"{p}\" is deprecated: {why}"));
                }
            }
        }
        let kind = spec.map(|k| k.kind).unwrap_or(ValueKind::Str);
        let value = if kind == ValueKind::Bool {
            if v.is_null() {
                continue;
            }
            match v.as_bool() {
                Some(b) => b.to_string(),
                None => {
                    c.wrong_type(v, &p, "true or false");
                    continue;
                }
            }
        } else {
            let Some(s) = c.string(v, &p) else { continue };
            if let Err(want) = check_value(kind, &s) {
                c.error(v, format!("invalid value \"{s}\" for \"{p}\": want {want}"));
                continue;
            }
            if s.contains('\n') {
                c.error(
                    v,
                    format!("\"{p}\" spans several lines; environment values are one line"),
                );
                continue;
            }
            s
        };
        out.insert(e.key, value);
    }
    out
}

fn update(c: &mut Checker, node: &Node, path: &str) -> Update {
    let mut u = Update::default();
    for e in c.entries(node, path) {
        let p = join(path, &e.key);
        let v = e.value;
        match e.key.as_str() {
            "reboot_strategy" => {
                if let Some(s) = c.string(v, &p) {
                    match RebootStrategy::parse(&s) {
                        Some(r) => u.reboot_strategy = Some(r),
                        None => {
                            let all: Vec<&str> =
                                RebootStrategy::ALL.iter().map(|(n, _)| *n).collect();
                            c.error(
                                v,
                                format!(
                                    "invalid reboot strategy \"{s}\" for \"{p}\": want one of {}",
                                    all.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
            "group" => u.group = c.string(v, &p),
            "server" => u.server = c.string(v, &p),
            _ => c.unknown(&e, path, &["reboot_strategy", "group", "server"]),
        }
    }
    u
}

fn oem(c: &mut Checker, node: &Node, path: &str) -> Oem {
    let mut o = Oem::default();
    for e in c.entries(node, path) {
        let p = join(path, &e.key);
        let v = e.value;
        match e.key.as_str() {
            "id" => o.id = c.string(v, &p),
            "name" => o.name = c.string(v, &p),
            "version_id" => o.version_id = c.string(v, &p),
            "home_url" => o.home_url = c.string(v, &p),
            "bug_report_url" => o.bug_report_url = c.string(v, &p),
            _ => c.unknown(
                &e,
                path,
                &["id", "name", "version_id", "home_url", "bug_report_url"],
            ),
        }
    }
    o
}
