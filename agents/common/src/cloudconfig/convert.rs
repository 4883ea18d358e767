//! What coreos-cloudinit wrote for `coreos.etcd2`, `fleet`, `flannel`, `locksmith` and
//! `update`: pure functions from the model to drop-ins, files and unit actions. Nothing here
//! touches the disk; the applier in init writes the results.
//!
//! Each env-style section has a table of the keys coreos-cloudinit knew, with the variable it
//! wrote and the value type it accepted. Keys outside the table are warned about by the
//! validator and still passed through as `PREFIX_KEY`, so flags newer than coreos-cloudinit
//! keep working.

use super::model::{CoreOs, RebootStrategy, UnitCommand, Update};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The type a known key's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Str,
    Int,
    Float,
    Bool,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// locksmith's `[Day ]HH:MM`.
    WindowStart,
    /// A Go duration such as `1h30m`.
    Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct EnvKey {
    /// Normalised key (`_`).
    pub key: &'static str,
    /// The variable written, when it is not `PREFIX` + the upper-cased key.
    pub env: Option<&'static str>,
    pub kind: ValueKind,
    /// Why the key should no longer be used (a warning), if so.
    pub deprecated: Option<&'static str>,
}

const fn k(key: &'static str, kind: ValueKind) -> EnvKey {
    EnvKey {
        key,
        env: None,
        kind,
        deprecated: None,
    }
}

const fn renamed(key: &'static str, env: &'static str, kind: ValueKind) -> EnvKey {
    EnvKey {
        key,
        env: Some(env),
        kind,
        deprecated: None,
    }
}

const fn deprecated(key: &'static str, why: &'static str) -> EnvKey {
    EnvKey {
        key,
        env: None,
        kind: ValueKind::Str,
        deprecated: Some(why),
    }
}

/// One env-style section of `coreos:`.
#[derive(Debug)]
pub struct EnvSchema {
    /// Its key under `coreos`.
    pub section: &'static str,
    pub prefix: &'static str,
    /// The service whose drop-in carries the variables.
    pub unit: &'static str,
    pub keys: &'static [EnvKey],
}

use ValueKind::{Bool, Duration, Float, Int, OneOf, Str, WindowStart};

pub static ETCD2: EnvSchema = EnvSchema {
    section: "etcd2",
    prefix: "ETCD_",
    unit: "etcd2.service",
    keys: &[
        k("name", Str),
        k("data_dir", Str),
        k("wal_dir", Str),
        k("discovery", Str),
        k("discovery_fallback", Str),
        k("discovery_proxy", Str),
        k("discovery_srv", Str),
        k("advertise_client_urls", Str),
        k("listen_client_urls", Str),
        k("listen_peer_urls", Str),
        k("initial_advertise_peer_urls", Str),
        k("initial_cluster", Str),
        k("initial_cluster_state", OneOf(&["new", "existing"])),
        k("initial_cluster_token", Str),
        k("cors", Str),
        k("election_timeout", Int),
        k("heartbeat_interval", Int),
        k("snapshot_count", Int),
        k("max_snapshots", Int),
        k("max_wals", Int),
        k("force_new_cluster", Bool),
        k("debug", Bool),
        k("log_package_levels", Str),
        k("proxy", OneOf(&["on", "off", "readonly"])),
        k("proxy_dial_timeout", Int),
        k("proxy_failure_wait", Int),
        k("proxy_read_timeout", Int),
        k("proxy_refresh_interval", Int),
        k("proxy_write_timeout", Int),
        k("cert_file", Str),
        k("key_file", Str),
        k("client_cert_auth", Bool),
        k("trusted_ca_file", Str),
        k("peer_cert_file", Str),
        k("peer_key_file", Str),
        k("peer_client_cert_auth", Bool),
        k("peer_trusted_ca_file", Str),
        deprecated(
            "ca_file",
            "ca_file is obsoleted by trusted_ca_file and client_cert_auth",
        ),
        deprecated(
            "peer_ca_file",
            "peer_ca_file is obsoleted by peer_trusted_ca_file and peer_client_cert_auth",
        ),
    ],
};

pub static FLEET: EnvSchema = EnvSchema {
    section: "fleet",
    prefix: "FLEET_",
    unit: "fleet.service",
    keys: &[
        k("agent_ttl", Str),
        k("authorized_keys_file", Str),
        k("disable_engine", Bool),
        k("engine_reconcile_interval", Float),
        k("etcd_cafile", Str),
        k("etcd_certfile", Str),
        k("etcd_keyfile", Str),
        k("etcd_key_prefix", Str),
        k("etcd_request_timeout", Float),
        k("etcd_servers", Str),
        k("metadata", Str),
        k("public_ip", Str),
        k("token_limit", Int),
        k("verbosity", Int),
        k("verify_units", Bool),
    ],
};

pub static FLANNEL: EnvSchema = EnvSchema {
    section: "flannel",
    prefix: "FLANNELD_",
    unit: "flanneld.service",
    keys: &[
        k("etcd_endpoints", Str),
        k("etcd_cafile", Str),
        k("etcd_certfile", Str),
        k("etcd_keyfile", Str),
        k("etcd_prefix", Str),
        k("etcd_username", Str),
        k("etcd_password", Str),
        k("ip_masq", Str),
        k("subnet_file", Str),
        renamed("interface", "FLANNELD_IFACE", Str),
        k("public_ip", Str),
        // flannel 0.7 read this one without the D.
        renamed("kube_subnet_mgr", "FLANNEL_KUBE_SUBNET_MGR", Bool),
    ],
};

pub static LOCKSMITH: EnvSchema = EnvSchema {
    section: "locksmith",
    prefix: "LOCKSMITHD_",
    unit: "locksmithd.service",
    keys: &[
        k("endpoint", Str),
        k("etcd_cafile", Str),
        k("etcd_certfile", Str),
        k("etcd_keyfile", Str),
        k("etcd_username", Str),
        k("etcd_password", Str),
        k("group", Str),
        renamed(
            "window_start",
            "LOCKSMITHD_REBOOT_WINDOW_START",
            WindowStart,
        ),
        renamed("window_length", "LOCKSMITHD_REBOOT_WINDOW_LENGTH", Duration),
    ],
};

impl EnvSchema {
    pub fn known(&self, key: &str) -> Option<&EnvKey> {
        self.keys.iter().find(|k| k.key == key)
    }

    /// The variable a key is written as.
    pub fn env_name(&self, key: &str) -> String {
        match self.known(key).and_then(|k| k.env) {
            Some(env) => env.to_string(),
            None => format!("{}{}", self.prefix, key.replace('-', "_").to_uppercase()),
        }
    }

    /// `(VARIABLE, value)` pairs: known keys in table order (as coreos-cloudinit wrote them, in
    /// struct order), then the others alphabetically.
    pub fn vars(&self, values: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for key in self.keys {
            if let Some(v) = values.get(key.key) {
                out.push((self.env_name(key.key), v.clone()));
            }
        }
        for (key, v) in values {
            if self.known(key).is_none() {
                out.push((self.env_name(key), v.clone()));
            }
        }
        out
    }
}

/// Checks a scalar against a [`ValueKind`]; `Err` says what was wanted.
pub fn check_value(kind: ValueKind, value: &str) -> Result<(), String> {
    let ok = match kind {
        Str => true,
        Int => value
            .strip_prefix('+')
            .unwrap_or(value)
            .parse::<i64>()
            .is_ok(),
        Float => value.parse::<f64>().is_ok_and(f64::is_finite),
        // Booleans are checked on the YAML node (plain yes/no/true/false), not here.
        Bool => matches!(value, "true" | "false"),
        OneOf(words) => words.contains(&value),
        WindowStart => window_start_ok(value),
        Duration => duration_ok(value),
    };
    if ok {
        return Ok(());
    }
    Err(match kind {
        Str => "a string".into(),
        Int => "an integer".into(),
        Float => "a number".into(),
        Bool => "true or false".into(),
        OneOf(words) => format!("one of {}", words.join(", ")),
        WindowStart => "a start time like \"04:00\" or \"Thu 04:00\"".into(),
        Duration => "a duration like \"1h\" or \"30m\"".into(),
    })
}

fn window_start_ok(value: &str) -> bool {
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let time = match value.split_once(' ') {
        Some((day, time)) => {
            if !DAYS.contains(&day.to_ascii_lowercase().as_str()) {
                return false;
            }
            time
        }
        None => value,
    };
    let Some((h, m)) = time.split_once(':') else {
        return false;
    };
    let num = |s: &str, max: u32| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && {
            let t = s.trim_start_matches('0');
            t.is_empty() || (t.len() <= 2 && t.parse::<u32>().is_ok_and(|n| n <= max))
        }
    };
    num(h, 23) && num(m, 59)
}

/// Go's `time.ParseDuration` shape: optional sign, then number+unit groups.
fn duration_ok(value: &str) -> bool {
    let s = value.strip_prefix(['+', '-']).unwrap_or(value);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return false;
        }
        let unit_len = tail
            .find(|c: char| !c.is_ascii_lowercase() && c != 'µ')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        if !matches!(unit, "ns" | "us" | "µs" | "ms" | "s" | "m" | "h") {
            return false;
        }
        rest = tail;
    }
    true
}

/// A drop-in for a service: `NAME.d/FILE` with systemd syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDropIn {
    pub unit: String,
    pub name: String,
    pub content: String,
    /// coreos-cloudinit wrote these under /run: they are regenerated every boot.
    pub runtime: bool,
}

impl ServiceDropIn {
    /// Where it goes under a unit directory (`/run/systemd/system` for runtime ones).
    pub fn relative_path(&self) -> String {
        format!("{}.d/{}", self.unit, self.name)
    }
}

/// A plain file to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedFile {
    pub path: String,
    pub content: String,
    pub mode: u32,
}

/// A unit to act on after the files are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitAction {
    pub unit: String,
    pub command: UnitCommand,
    pub mask: bool,
    pub runtime: bool,
}

/// The drop-in file name coreos-cloudinit used.
pub const DROPIN_NAME: &str = "20-cloudinit.conf";

/// Escapes a value for a double-quoted systemd `Environment=` assignment: backslash and quote
/// are C-escaped and `%` doubled, or systemd would read them as escapes and specifiers.
pub fn systemd_quote(assignment: &str) -> String {
    let mut out = String::with_capacity(assignment.len() + 2);
    out.push('"');
    for c in assignment.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `[Service]` with one `Environment="VAR=value"` per set key; `None` when nothing is set.
pub fn env_dropin(schema: &EnvSchema, values: &BTreeMap<String, String>) -> Option<ServiceDropIn> {
    let vars = schema.vars(values);
    if vars.is_empty() {
        return None;
    }
    let mut content = String::from("[Service]\n");
    for (name, value) in vars {
        content.push_str("Environment=");
        content.push_str(&systemd_quote(&format!("{name}={value}")));
        content.push('\n');
    }
    Some(ServiceDropIn {
        unit: schema.unit.to_string(),
        name: DROPIN_NAME.to_string(),
        content,
        runtime: true,
    })
}

pub fn etcd2_dropin(values: &BTreeMap<String, String>) -> Option<ServiceDropIn> {
    env_dropin(&ETCD2, values)
}

pub fn fleet_dropin(values: &BTreeMap<String, String>) -> Option<ServiceDropIn> {
    env_dropin(&FLEET, values)
}

pub fn flannel_dropin(values: &BTreeMap<String, String>) -> Option<ServiceDropIn> {
    env_dropin(&FLANNEL, values)
}

pub fn locksmith_dropin(values: &BTreeMap<String, String>) -> Option<ServiceDropIn> {
    env_dropin(&LOCKSMITH, values)
}

/// Path of flannel's options file (read by flanneld.service as an EnvironmentFile).
pub const FLANNEL_OPTIONS: &str = "/run/flannel/options.env";

/// `/run/flannel/options.env`: `FLANNELD_*=value` lines, unquoted as coreos-cloudinit wrote them.
pub fn flannel_options_env(values: &BTreeMap<String, String>) -> Option<GeneratedFile> {
    let vars = FLANNEL.vars(values);
    if vars.is_empty() {
        return None;
    }
    let content: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    Some(GeneratedFile {
        path: FLANNEL_OPTIONS.to_string(),
        content,
        mode: 0o644,
    })
}

pub const UPDATE_CONF: &str = "/etc/coreos/update.conf";

/// `/etc/coreos/update.conf` with `GROUP=`, `SERVER=` and `REBOOT_STRATEGY=` set from
/// `update`, keeping every other line of `existing` (the current file, or the image default
/// when there is none). Set keys replace their line in place; new ones are appended in
/// alphabetical order. `None` when `update` sets nothing.
pub fn update_conf(update: &Update, existing: &str) -> Option<GeneratedFile> {
    let mut pending: BTreeMap<&str, String> = BTreeMap::new();
    if let Some(g) = &update.group {
        pending.insert("GROUP", g.clone());
    }
    if let Some(r) = update.reboot_strategy {
        pending.insert("REBOOT_STRATEGY", r.as_str().to_string());
    }
    if let Some(s) = &update.server {
        pending.insert("SERVER", s.clone());
    }
    if pending.is_empty() {
        return None;
    }
    let mut out = String::new();
    for line in existing.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        match key.and_then(|k| pending.remove_entry(k)) {
            Some((k, v)) => out.push_str(&format!("{k}={v}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (k, v) in pending {
        out.push_str(&format!("{k}={v}\n"));
    }
    Some(GeneratedFile {
        path: UPDATE_CONF.to_string(),
        content: out,
        mode: 0o644,
    })
}

/// What coreos-cloudinit did to services after `update:`: a reboot strategy restarts
/// locksmithd (or stops and masks it for `off`); a group or server restarts update-engine.
pub fn update_actions(update: &Update) -> Vec<UnitAction> {
    let mut out = Vec::new();
    if let Some(strategy) = update.reboot_strategy {
        let off = strategy == RebootStrategy::Off;
        out.push(UnitAction {
            unit: "locksmithd.service".into(),
            command: if off {
                UnitCommand::Stop
            } else {
                UnitCommand::Restart
            },
            mask: off,
            runtime: true,
        });
    }
    if update.group.is_some() || update.server.is_some() {
        out.push(UnitAction {
            unit: "update-engine.service".into(),
            command: UnitCommand::Restart,
            mask: false,
            runtime: false,
        });
    }
    out
}

/// Everything `coreos:` (other than `units`) turns into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generated {
    pub dropins: Vec<ServiceDropIn>,
    pub files: Vec<GeneratedFile>,
    pub actions: Vec<UnitAction>,
}

/// All conversions at once. `update_conf_base` is the current `/etc/coreos/update.conf` (or the
/// image's default) that `update:` edits.
pub fn generate(coreos: &CoreOs, update_conf_base: &str) -> Generated {
    let mut g = Generated::default();
    g.dropins.extend(etcd2_dropin(&coreos.etcd2));
    g.dropins.extend(fleet_dropin(&coreos.fleet));
    g.dropins.extend(flannel_dropin(&coreos.flannel));
    g.dropins.extend(locksmith_dropin(&coreos.locksmith));
    g.files.extend(flannel_options_env(&coreos.flannel));
    g.files
        .extend(update_conf(&coreos.update, update_conf_base));
    g.actions = update_actions(&coreos.update);
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn etcd2_dropin_matches_coreos_cloudinit() {
        let d = etcd2_dropin(&map(&[
            ("name", "node001"),
            ("discovery", "https://discovery.etcd.io/abc"),
            ("advertise_client_urls", "http://10.0.0.5:2379"),
            ("listen_client_urls", "http://0.0.0.0:2379"),
        ]))
        .expect("some");
        assert_eq!(d.unit, "etcd2.service");
        assert_eq!(d.name, "20-cloudinit.conf");
        assert_eq!(d.relative_path(), "etcd2.service.d/20-cloudinit.conf");
        assert!(d.runtime);
        assert_eq!(
            d.content,
            "[Service]\n\
             Environment=\"ETCD_NAME=node001\"\n\
             Environment=\"ETCD_DISCOVERY=https://discovery.etcd.io/abc\"\n\
             Environment=\"ETCD_ADVERTISE_CLIENT_URLS=http://10.0.0.5:2379\"\n\
             Environment=\"ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379\"\n"
        );
        assert_eq!(etcd2_dropin(&BTreeMap::new()), None);
    }

    #[test]
    fn env_names_per_section() {
        let cases: &[(&EnvSchema, &str, &str)] = &[
            (
                &ETCD2,
                "initial_cluster_token",
                "ETCD_INITIAL_CLUSTER_TOKEN",
            ),
            (&ETCD2, "some_new_flag", "ETCD_SOME_NEW_FLAG"),
            (&FLEET, "public_ip", "FLEET_PUBLIC_IP"),
            (&FLEET, "etcd_servers", "FLEET_ETCD_SERVERS"),
            (&FLANNEL, "etcd_endpoints", "FLANNELD_ETCD_ENDPOINTS"),
            (&FLANNEL, "interface", "FLANNELD_IFACE"),
            (&FLANNEL, "kube_subnet_mgr", "FLANNEL_KUBE_SUBNET_MGR"),
            (&LOCKSMITH, "endpoint", "LOCKSMITHD_ENDPOINT"),
            (&LOCKSMITH, "window_start", "LOCKSMITHD_REBOOT_WINDOW_START"),
            (
                &LOCKSMITH,
                "window_length",
                "LOCKSMITHD_REBOOT_WINDOW_LENGTH",
            ),
            (&LOCKSMITH, "etcd_cafile", "LOCKSMITHD_ETCD_CAFILE"),
        ];
        for (schema, key, env) in cases {
            assert_eq!(schema.env_name(key), *env, "{}.{key}", schema.section);
        }
    }

    #[test]
    fn each_section_dropin_names_its_service() {
        let v = map(&[("public_ip", "10.0.0.5")]);
        assert_eq!(fleet_dropin(&v).expect("fleet").unit, "fleet.service");
        assert_eq!(
            fleet_dropin(&v).expect("fleet").content,
            "[Service]\nEnvironment=\"FLEET_PUBLIC_IP=10.0.0.5\"\n"
        );
        assert_eq!(
            flannel_dropin(&v).expect("flannel").unit,
            "flanneld.service"
        );
        let l = locksmith_dropin(&map(&[("group", "west"), ("window_start", "Thu 04:00")]))
            .expect("locksmith");
        assert_eq!(l.unit, "locksmithd.service");
        assert_eq!(
            l.content,
            "[Service]\nEnvironment=\"LOCKSMITHD_GROUP=west\"\n\
             Environment=\"LOCKSMITHD_REBOOT_WINDOW_START=Thu 04:00\"\n"
        );
    }

    #[test]
    fn unknown_keys_follow_known_ones() {
        let v = map(&[("zzz", "1"), ("aaa_new", "2"), ("name", "n")]);
        let names: Vec<String> = ETCD2.vars(&v).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["ETCD_NAME", "ETCD_AAA_NEW", "ETCD_ZZZ"]);
    }

    #[test]
    fn flannel_writes_options_env_too() {
        let v = map(&[
            ("etcd_endpoints", "http://10.0.0.5:2379"),
            ("interface", "eth1"),
            ("etcd_prefix", "/coreos.com/network"),
        ]);
        let f = flannel_options_env(&v).expect("some");
        assert_eq!(f.path, "/run/flannel/options.env");
        assert_eq!(f.mode, 0o644);
        assert_eq!(
            f.content,
            "FLANNELD_ETCD_ENDPOINTS=http://10.0.0.5:2379\n\
             FLANNELD_ETCD_PREFIX=/coreos.com/network\nFLANNELD_IFACE=eth1\n"
        );
        assert_eq!(flannel_options_env(&BTreeMap::new()), None);
    }

    #[test]
    fn quoting_for_systemd() {
        assert_eq!(systemd_quote("A=b c"), "\"A=b c\"");
        assert_eq!(systemd_quote("A=50%"), "\"A=50%%\"");
        assert_eq!(systemd_quote(r#"A="x"\y"#), r#""A=\"x\"\\y""#);
    }

    #[test]
    fn update_conf_edits_in_place_and_appends() {
        let u = Update {
            reboot_strategy: Some(RebootStrategy::EtcdLock),
            group: Some("beta".into()),
            server: None,
        };
        let base = "# from the image\nGROUP=stable\nSERVER=https://example.invalid/v1/update/\n";
        let f = update_conf(&u, base).expect("some");
        assert_eq!(f.path, "/etc/coreos/update.conf");
        assert_eq!(
            f.content,
            "# from the image\nGROUP=beta\nSERVER=https://example.invalid/v1/update/\n\
             REBOOT_STRATEGY=etcd-lock\n"
        );
        let f = update_conf(
            &Update {
                server: Some("http://10.0.0.1:8000/v1/update/".into()),
                ..Update::default()
            },
            "",
        )
        .expect("some");
        assert_eq!(f.content, "SERVER=http://10.0.0.1:8000/v1/update/\n");
        assert_eq!(update_conf(&Update::default(), base), None);
        // A key that merely starts with GROUP is not GROUP.
        let f = update_conf(
            &Update {
                group: Some("alpha".into()),
                ..Update::default()
            },
            "GROUPS=x\n",
        )
        .expect("some");
        assert_eq!(f.content, "GROUPS=x\nGROUP=alpha\n");
    }

    #[test]
    fn update_actions_table() {
        type Want = &'static [(&'static str, UnitCommand, bool)];
        let cases: &[(Update, Want)] = &[
            (Update::default(), &[]),
            (
                Update {
                    reboot_strategy: Some(RebootStrategy::Off),
                    ..Update::default()
                },
                &[("locksmithd.service", UnitCommand::Stop, true)],
            ),
            (
                Update {
                    reboot_strategy: Some(RebootStrategy::BestEffort),
                    server: Some("http://x".into()),
                    ..Update::default()
                },
                &[
                    ("locksmithd.service", UnitCommand::Restart, false),
                    ("update-engine.service", UnitCommand::Restart, false),
                ],
            ),
        ];
        for (u, want) in cases {
            let actions = update_actions(u);
            let got: Vec<(&str, UnitCommand, bool)> = actions
                .iter()
                .map(|a| (a.unit.as_str(), a.command, a.mask))
                .collect();
            assert_eq!(got.as_slice(), *want, "{u:?}");
        }
    }

    #[test]
    fn value_kinds() {
        let cases: &[(ValueKind, &str, bool)] = &[
            (Int, "100", true),
            (Int, "+5", true),
            (Int, "1.5", false),
            (Int, "ten", false),
            (Float, "0.5", true),
            (Float, "nan", false),
            (OneOf(&["on", "off"]), "on", true),
            (OneOf(&["on", "off"]), "maybe", false),
            (WindowStart, "04:00", true),
            (WindowStart, "Thu 04:00", true),
            (WindowStart, "sun 23:59", true),
            (WindowStart, "4:5", true),
            (WindowStart, "24:00", false),
            (WindowStart, "Fun 04:00", false),
            (WindowStart, "04", false),
            (WindowStart, "04:60", false),
            (Duration, "1h", true),
            (Duration, "1h30m", true),
            (Duration, "1.5h", true),
            (Duration, "-10s", true),
            (Duration, "0", true),
            (Duration, "10", false),
            (Duration, "h", false),
            (Duration, "1 hour", false),
            (Duration, "", false),
        ];
        for (kind, value, ok) in cases {
            assert_eq!(check_value(*kind, value).is_ok(), *ok, "{kind:?} {value:?}");
        }
    }

    #[test]
    fn generate_collects_everything() {
        let coreos = CoreOs {
            etcd2: map(&[("name", "a")]),
            flannel: map(&[("interface", "eth0")]),
            update: Update {
                reboot_strategy: Some(RebootStrategy::Reboot),
                ..Update::default()
            },
            ..CoreOs::default()
        };
        let g = generate(&coreos, "GROUP=stable\n");
        let units: Vec<&str> = g.dropins.iter().map(|d| d.unit.as_str()).collect();
        assert_eq!(units, vec!["etcd2.service", "flanneld.service"]);
        let paths: Vec<&str> = g.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec![FLANNEL_OPTIONS, UPDATE_CONF]);
        assert_eq!(g.files[1].content, "GROUP=stable\nREBOOT_STRATEGY=reboot\n");
        assert_eq!(g.actions.len(), 1);
    }
}
