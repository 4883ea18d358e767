//! etcd's flags and `ETCD_*` variables (the etcd 2.3 / 3.4 names crust kv accepts), validated
//! into a [`Config`].
//!
//! Flags are `--flag value` or `--flag=value` (one or two dashes); every setting can also come
//! from `ETCD_<FLAG>` with dashes as underscores (`ETCD_INITIAL_CLUSTER`), which is how
//! `coreos.etcd2` in cloud-config reaches `etcd2.service`. Flags win over variables. Unknown
//! flags are errors; unknown `ETCD_*` variables are reported as warnings, as etcd does.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name -> peer URLs`, from `--initial-cluster` (or this member alone by default).
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    /// Whether the token was given (a data dir made with another token is refused then).
    pub token_given: bool,
    pub discovery: Option<String>,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Committed entries between snapshots (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// Things worth telling the operator (ignored flags, unknown variables).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown flag --{0}; run with --help for the flags crust kv takes")]
    UnknownFlag(String),
    #[error("flag --{0} needs a value (--{0}=VALUE or --{0} VALUE)")]
    MissingValue(String),
    #[error("unexpected argument {0:?}: crust kv takes only --flags")]
    Positional(String),
    #[error("--{flag} ({source_name}): {why}")]
    Invalid {
        flag: &'static str,
        source_name: String,
        why: String,
    },
    #[error("--{0} is not supported by crust kv: {1}")]
    Unsupported(String, &'static str),
    /// `--help` / `--version`: not an error, the text to print.
    #[error("{0}")]
    Info(String),
}

/// The settings crust kv uses, with etcd's defaults (`None`: derived from other settings).
const FLAGS: &[(&str, Option<&str>)] = &[
    ("name", Some("default")),
    ("data-dir", None),
    ("listen-client-urls", Some("http://localhost:2379")),
    ("advertise-client-urls", Some("http://localhost:2379")),
    ("listen-peer-urls", Some("http://localhost:2380")),
    ("initial-advertise-peer-urls", Some("http://localhost:2380")),
    ("initial-cluster", None),
    ("initial-cluster-state", Some("new")),
    ("initial-cluster-token", Some("etcd-cluster")),
    ("discovery", None),
    ("heartbeat-interval", Some("100")),
    ("election-timeout", Some("1000")),
    ("snapshot-count", Some("10000")),
];

/// etcd flags accepted and ignored (with a warning): they tune things crust kv does its own way.
const IGNORED: &[&str] = &[
    "debug",
    "cors",
    "max-snapshots",
    "max-wals",
    "log-package-levels",
    "enable-v2",
    "strict-reconfig-check",
    "logger",
    "log-outputs",
    "quota-backend-bytes",
    "auto-compaction-retention",
    "discovery-fallback",
    "proxy-dial-timeout",
    "proxy-failure-wait",
    "proxy-read-timeout",
    "proxy-refresh-interval",
    "proxy-write-timeout",
];

/// Flags that may stand alone (`--debug`).
const BOOLEAN: &[&str] = &[
    "debug",
    "enable-v2",
    "strict-reconfig-check",
    "force-new-cluster",
];

/// etcd flags crust kv refuses, with the reason.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "proxy",
        "there is no proxy mode; run a full member or point clients at the members",
    ),
    (
        "discovery-srv",
        "DNS SRV discovery is not built; use --discovery or --initial-cluster",
    ),
    (
        "discovery-proxy",
        "discovery goes directly to the discovery URL",
    ),
    (
        "force-new-cluster",
        "recreate the member from a fresh --data-dir and member add instead",
    ),
    ("wal-dir", "the log lives in --data-dir"),
    (
        "cert-file",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
    (
        "key-file",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
    (
        "client-cert-auth",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
    (
        "trusted-ca-file",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
    (
        "ca-file",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
    (
        "peer-cert-file",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
    (
        "peer-key-file",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
    (
        "peer-client-cert-auth",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
    (
        "peer-trusted-ca-file",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
    (
        "peer-ca-file",
        "TLS is not supported; use http:// URLs on a trusted network",
    ),
];

pub const USAGE: &str = "usage: crust-agent kv [flags]   (also reachable as etcd2 / etcd)

  --name NAME                        member name (default \"default\")
  --data-dir DIR                     data directory (default \"${name}.etcd\")
  --listen-client-urls URLS          client API listeners (default http://localhost:2379)
  --advertise-client-urls URLS       client URLs told to the cluster (default http://localhost:2379)
  --listen-peer-urls URLS            peer listeners (default http://localhost:2380)
  --initial-advertise-peer-urls URLS this member's peer URLs (default http://localhost:2380)
  --initial-cluster NAME=URL,...     initial members (default \"${name}=${initial-advertise-peer-urls}\")
  --initial-cluster-state new|existing
  --initial-cluster-token TOKEN      (default \"etcd-cluster\")
  --discovery URL                    etcd v2 discovery URL (instead of --initial-cluster)
  --heartbeat-interval MS            (default 100)
  --election-timeout MS              (default 1000)
  --snapshot-count N                 committed entries between snapshots (default 10000)

Every flag can also be set as ETCD_<FLAG> (ETCD_INITIAL_CLUSTER=...); flags win.";

/// Where a raw value came from, for error messages.
fn source_name(flag: &str, from_flag: bool) -> String {
    if from_flag {
        "flag".into()
    } else {
        env_name(flag)
    }
}

fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_uppercase().replace('-', "_"))
}

/// Parses `args` (without the program name) and the environment (`env` lists `ETCD_*` pairs).
pub fn parse(args: &[String], env: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut raw: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut warnings = Vec::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("ETCD_") else {
            continue;
        };
        let flag = rest.to_lowercase().replace('_', "-");
        if FLAGS.iter().any(|(f, _)| *f == flag) {
            raw.insert(flag, (v.clone(), false));
        } else if let Some((_, why)) = UNSUPPORTED.iter().find(|(f, _)| *f == flag) {
            // etcd's own defaults written out by cloud-config (ETCD_PROXY=off) are harmless.
            if !(v.is_empty() || v == "off" || v == "false") {
                return Err(ConfigError::Unsupported(format!("{flag} ({k})"), why));
            }
        } else if IGNORED.contains(&flag.as_str()) {
            warnings.push(format!("{k} is ignored by crust kv"));
        } else {
            warnings.push(format!("unrecognized environment variable {k}"));
        }
    }
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let Some(body) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            return Err(ConfigError::Positional(a.clone()));
        };
        let (flag, inline) = match body.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        match flag.as_str() {
            "h" | "help" => return Err(ConfigError::Info(USAGE.into())),
            "version" => {
                return Err(ConfigError::Info(format!(
                    "crust kv, etcd Version: {}\nAPI: v2",
                    crate::api::SERVER_VERSION
                )))
            }
            _ => {}
        }
        let known = FLAGS.iter().any(|(f, _)| *f == flag)
            || IGNORED.contains(&flag.as_str())
            || UNSUPPORTED.iter().any(|(f, _)| *f == flag);
        if !known {
            return Err(ConfigError::UnknownFlag(flag));
        }
        let value = match inline {
            Some(v) => v,
            None if BOOLEAN.contains(&flag.as_str()) => "true".into(),
            None => match args.get(i) {
                Some(v) if !v.starts_with("--") => {
                    i += 1;
                    v.clone()
                }
                _ => return Err(ConfigError::MissingValue(flag)),
            },
        };
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(f, _)| *f == flag) {
            if !(value == "off" || value == "false" || value.is_empty()) {
                return Err(ConfigError::Unsupported(flag, why));
            }
            continue;
        }
        if IGNORED.contains(&flag.as_str()) {
            warnings.push(format!("--{flag} is ignored by crust kv"));
            continue;
        }
        raw.insert(flag, (value, true));
    }
    build(raw, warnings)
}

fn urls(flag: &'static str, v: &str, from_flag: bool) -> Result<Vec<String>, ConfigError> {
    let invalid = |why: String| ConfigError::Invalid {
        flag,
        source_name: source_name(flag, from_flag),
        why,
    };
    let list: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/').to_string())
        .collect();
    if list.is_empty() {
        return Err(invalid("needs at least one URL (http://HOST:PORT)".into()));
    }
    for u in &list {
        check_url(u).map_err(&invalid)?;
    }
    Ok(list)
}

/// `http://HOST:PORT` with nothing after the port.
pub fn check_url(u: &str) -> Result<(), String> {
    if u.starts_with("https://") || u.starts_with("unix") {
        return Err(format!(
            "{u}: TLS and unix sockets are not supported; use http://HOST:PORT"
        ));
    }
    let Some(rest) = u.strip_prefix("http://") else {
        return Err(format!("{u}: not a URL; use http://HOST:PORT"));
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!("{u}: no port; use http://HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() || rest.contains('/') {
        return Err(format!("{u}: use http://HOST:PORT"));
    }
    Ok(())
}

fn build(
    raw: BTreeMap<String, (String, bool)>,
    warnings: Vec<String>,
) -> Result<Config, ConfigError> {
    let get = |flag: &str| -> Option<(String, bool)> {
        raw.get(flag).cloned().or_else(|| {
            FLAGS
                .iter()
                .find(|(f, _)| *f == flag)
                .and_then(|(_, d)| d.map(|d| (d.to_string(), false)))
        })
    };
    let given = |flag: &str| raw.contains_key(flag);
    let (name, _) = get("name").unwrap_or_default();
    if name.is_empty() {
        return Err(ConfigError::Invalid {
            flag: "name",
            source_name: source_name("name", given("name")),
            why: "must not be empty".into(),
        });
    }
    let data_dir = get("data-dir")
        .map(|(d, _)| PathBuf::from(d))
        .unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));
    let u = |flag: &'static str| -> Result<Vec<String>, ConfigError> {
        let (v, f) = get(flag).unwrap_or_default();
        urls(flag, &v, f)
    };
    let listen_client_urls = u("listen-client-urls")?;
    let advertise_client_urls = u("advertise-client-urls")?;
    let listen_peer_urls = u("listen-peer-urls")?;
    let initial_advertise_peer_urls = u("initial-advertise-peer-urls")?;
    let number = |flag: &'static str| -> Result<u64, ConfigError> {
        let (v, f) = get(flag).unwrap_or_default();
        v.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ConfigError::Invalid {
                flag,
                source_name: source_name(flag, f),
                why: format!("{v:?} is not a positive whole number"),
            })
    };
    let heartbeat_ms = number("heartbeat-interval")?;
    let election_ms = number("election-timeout")?;
    let snapshot_count = number("snapshot-count")?;
    if election_ms < 5 * heartbeat_ms {
        return Err(ConfigError::Invalid {
            flag: "election-timeout",
            source_name: source_name("election-timeout", given("election-timeout")),
            why: format!(
                "{election_ms} ms must be at least 5 times --heartbeat-interval ({heartbeat_ms} ms)"
            ),
        });
    }
    let (state, sf) = get("initial-cluster-state").unwrap_or_default();
    let initial_cluster_state = match state.as_str() {
        "new" => ClusterState::New,
        "existing" => ClusterState::Existing,
        other => {
            return Err(ConfigError::Invalid {
                flag: "initial-cluster-state",
                source_name: source_name("initial-cluster-state", sf),
                why: format!("{other:?}: use new or existing"),
            })
        }
    };
    let discovery = get("discovery").map(|(d, _)| d).filter(|d| !d.is_empty());
    if let Some(d) = &discovery {
        if given("initial-cluster") {
            return Err(ConfigError::Invalid {
                flag: "discovery",
                source_name: source_name("discovery", true),
                why: "both --discovery and --initial-cluster are set; use one of them".into(),
            });
        }
        if !d.starts_with("http://") {
            return Err(ConfigError::Invalid {
                flag: "discovery",
                source_name: source_name("discovery", given("discovery")),
                why: format!("{d}: use an http:// discovery URL (TLS is not supported)"),
            });
        }
    }
    let mut initial_cluster: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match get("initial-cluster") {
        Some((v, f)) => {
            for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let Some((n, url)) = entry.split_once('=') else {
                    return Err(ConfigError::Invalid {
                        flag: "initial-cluster",
                        source_name: source_name("initial-cluster", f),
                        why: format!("{entry:?} is not NAME=http://HOST:PORT"),
                    });
                };
                let url = url.trim_end_matches('/');
                check_url(url).map_err(|why| ConfigError::Invalid {
                    flag: "initial-cluster",
                    source_name: source_name("initial-cluster", f),
                    why,
                })?;
                initial_cluster
                    .entry(n.to_string())
                    .or_default()
                    .push(url.to_string());
            }
        }
        None => {
            initial_cluster.insert(name.clone(), initial_advertise_peer_urls.clone());
        }
    }
    if discovery.is_none() {
        let source = source_name("initial-cluster", given("initial-cluster"));
        let mine =
            initial_cluster
                .get(&name)
                .ok_or_else(|| ConfigError::Invalid {
                    flag: "initial-cluster",
                    source_name: source.clone(),
                    why: format!(
                "has no entry for this member (--name {name}); add {name}=<peer URL> or set \
                 --name to one of: {}",
                initial_cluster.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
                })?;
        let mut a = mine.clone();
        let mut b = initial_advertise_peer_urls.clone();
        a.sort();
        b.sort();
        if a != b {
            return Err(ConfigError::Invalid {
                flag: "initial-cluster",
                source_name: source,
                why: format!(
                    "gives {name}={} but --initial-advertise-peer-urls is {}; make them the same",
                    mine.join(","),
                    initial_advertise_peer_urls.join(",")
                ),
            });
        }
        let mut seen = BTreeMap::new();
        for (n, us) in &initial_cluster {
            for url in us {
                if let Some(other) = seen.insert(url.clone(), n.clone()) {
                    return Err(ConfigError::Invalid {
                        flag: "initial-cluster",
                        source_name: source_name("initial-cluster", given("initial-cluster")),
                        why: format!("peer URL {url} is given to both {other} and {n}"),
                    });
                }
            }
        }
    }
    let (token, _) = get("initial-cluster-token").unwrap_or_default();
    Ok(Config {
        name,
        data_dir,
        listen_client_urls,
        advertise_client_urls,
        listen_peer_urls,
        initial_advertise_peer_urls,
        initial_cluster,
        initial_cluster_state,
        token_given: given("initial-cluster-token"),
        initial_cluster_token: token,
        discovery,
        heartbeat_ms,
        election_ms,
        snapshot_count,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn env(a: &[(&str, &str)]) -> Vec<(String, String)> {
        a.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_etcds() {
        let c = parse(&[], &[]).expect("defaults");
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(c.listen_client_urls, ["http://localhost:2379"]);
        assert_eq!(c.advertise_client_urls, ["http://localhost:2379"]);
        assert_eq!(c.listen_peer_urls, ["http://localhost:2380"]);
        assert_eq!(
            c.initial_cluster,
            BTreeMap::from([("default".into(), vec!["http://localhost:2380".into()])])
        );
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert!(!c.token_given);
        assert_eq!((c.heartbeat_ms, c.election_ms), (100, 1000));
    }

    #[test]
    fn flag_forms_and_env_with_flags_winning() {
        let c = parse(
            &args(&[
                "--name=n1",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:7001",
                "-initial-cluster",
                "n1=http://127.0.0.1:7001,n2=http://127.0.0.1:7002",
            ]),
            &env(&[
                ("ETCD_NAME", "ignored"),
                ("ETCD_DATA_DIR", "/var/lib/etcd2"),
                ("ETCD_INITIAL_CLUSTER_TOKEN", "tok"),
                ("ETCD_HEARTBEAT_INTERVAL", "50"),
                ("ETCD_FROBNICATE", "1"),
                ("ETCD_PROXY", "off"),
                ("ETCDCTL_API", "2"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.name, "n1");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/etcd2"));
        assert_eq!(c.initial_cluster_token, "tok");
        assert!(c.token_given);
        assert_eq!(c.heartbeat_ms, 50);
        assert_eq!(c.initial_cluster.len(), 2);
        assert_eq!(
            c.warnings,
            ["unrecognized environment variable ETCD_FROBNICATE"]
        );
    }

    #[test]
    fn name_change_moves_default_data_dir_and_cluster() {
        let c = parse(&args(&["--name", "m"]), &[]).expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("m.etcd"));
        assert!(c.initial_cluster.contains_key("m"));
    }

    #[test]
    fn errors_name_the_flag_and_the_fix() {
        let e = |a: &[&str]| parse(&args(a), &[]).expect_err("must fail").to_string();
        assert!(e(&["--frob"]).contains("unknown flag --frob"));
        assert!(e(&["--name"]).contains("--name needs a value"));
        assert!(e(&["positional"]).contains("only --flags"));
        let m = e(&["--name", "x", "--initial-cluster", "a=http://h:1"]);
        assert!(
            m.contains("--initial-cluster") && m.contains("add x=<peer URL>"),
            "{m}"
        );
        let m = e(&["--initial-cluster", "default=http://h:1"]);
        assert!(m.contains("--initial-advertise-peer-urls"), "{m}");
        assert!(e(&["--initial-cluster-state", "old"]).contains("use new or existing"));
        assert!(e(&["--listen-client-urls", "https://h:1"]).contains("TLS"));
        assert!(e(&["--listen-peer-urls", "h:1"]).contains("http://HOST:PORT"));
        assert!(e(&["--election-timeout", "100"]).contains("5 times"));
        assert!(e(&["--heartbeat-interval", "x"]).contains("--heartbeat-interval"));
        assert!(e(&["--proxy", "on"]).contains("not supported"));
        let m = e(&[
            "--discovery",
            "http://h:1/x",
            "--initial-cluster",
            "default=http://localhost:2380",
        ]);
        assert!(m.contains("use one of them"), "{m}");
        let m = parse(&[], &env(&[("ETCD_INITIAL_CLUSTER_STATE", "bad")]))
            .expect_err("bad env")
            .to_string();
        assert!(m.contains("ETCD_INITIAL_CLUSTER_STATE"), "{m}");
    }

    #[test]
    fn ignored_flags_warn_and_help_is_info() {
        let c = parse(&args(&["--debug", "--enable-v2=true", "--cors", "*"]), &[]).expect("ok");
        assert_eq!(c.warnings.len(), 3);
        assert!(matches!(
            parse(&args(&["--help"]), &[]),
            Err(ConfigError::Info(_))
        ));
    }
}
