//! The typed cloud-config: what a valid document means, with values already checked.
//!
//! Built from the positioned YAML tree by `schema`; serde derives exist so the model can be
//! shown as JSON (`crustctl cloud-config show`) and handed between processes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CloudConfig {
    pub hostname: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub users: Vec<User>,
    pub write_files: Vec<WriteFile>,
    pub manage_etc_hosts: Option<EtcHosts>,
    pub coreos: CoreOs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    pub name: String,
    /// A crypt(3) hash, as for `useradd -p`.
    pub passwd: Option<String>,
    pub gecos: Option<String>,
    pub homedir: Option<String>,
    pub no_create_home: bool,
    pub primary_group: Option<String>,
    pub groups: Vec<String>,
    pub no_user_group: bool,
    pub ssh_authorized_keys: Vec<String>,
    pub system: bool,
    pub no_log_init: bool,
    pub shell: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteFile {
    /// Absolute, outside `/usr`.
    pub path: String,
    /// As written in the document; [`WriteFile::decoded`] applies `encoding`.
    pub content: String,
    pub encoding: Option<Encoding>,
    /// Mode bits; `None` means coreos-cloudinit's default, 0644.
    pub permissions: Option<u32>,
    /// `user`, `user:group` (names or numbers).
    pub owner: Option<String>,
}

/// How `write_files[].content` is encoded. Every spelling coreos-cloudinit accepted maps here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Base64,
    Gzip,
    GzipBase64,
}

impl Encoding {
    pub const SPELLINGS: &'static [&'static str] = &[
        "b64",
        "base64",
        "gz",
        "gzip",
        "gz+base64",
        "gzip+base64",
        "gz+b64",
        "gzip+b64",
    ];

    pub fn parse(s: &str) -> Option<Encoding> {
        match s {
            "b64" | "base64" => Some(Encoding::Base64),
            "gz" | "gzip" => Some(Encoding::Gzip),
            "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => Some(Encoding::GzipBase64),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcHosts {
    /// Write `/etc/hosts` mapping the hostname to 127.0.0.1 (the only mode coreos-cloudinit had).
    Localhost,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoreOs {
    pub units: Vec<Unit>,
    /// Normalised keys (`_`, lowercase as written) to values; see `convert` for the env names.
    pub etcd2: BTreeMap<String, String>,
    pub fleet: BTreeMap<String, String>,
    pub flannel: BTreeMap<String, String>,
    pub locksmith: BTreeMap<String, String>,
    pub update: Update,
    pub oem: Option<Oem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Unit {
    pub name: String,
    pub content: Option<String>,
    pub enable: bool,
    pub command: Option<UnitCommand>,
    /// Write under /run (lost at reboot) instead of /etc.
    pub runtime: bool,
    pub mask: bool,
    pub drop_ins: Vec<DropIn>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DropIn {
    pub name: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitCommand {
    Start,
    Stop,
    Restart,
    Reload,
    TryRestart,
    ReloadOrRestart,
    ReloadOrTryRestart,
}

impl UnitCommand {
    pub const ALL: &'static [(&'static str, UnitCommand)] = &[
        ("start", UnitCommand::Start),
        ("stop", UnitCommand::Stop),
        ("restart", UnitCommand::Restart),
        ("reload", UnitCommand::Reload),
        ("try-restart", UnitCommand::TryRestart),
        ("reload-or-restart", UnitCommand::ReloadOrRestart),
        ("reload-or-try-restart", UnitCommand::ReloadOrTryRestart),
    ];

    pub fn parse(s: &str) -> Option<UnitCommand> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, c)| *c)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(n, _)| *n)
            .unwrap_or("start")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Update {
    pub reboot_strategy: Option<RebootStrategy>,
    pub group: Option<String>,
    pub server: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootStrategy {
    Reboot,
    EtcdLock,
    BestEffort,
    Off,
}

impl RebootStrategy {
    pub const ALL: &'static [(&'static str, RebootStrategy)] = &[
        ("reboot", RebootStrategy::Reboot),
        ("etcd-lock", RebootStrategy::EtcdLock),
        ("best-effort", RebootStrategy::BestEffort),
        ("off", RebootStrategy::Off),
    ];

    pub fn parse(s: &str) -> Option<RebootStrategy> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, r)| *r)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, r)| *r == self)
            .map(|(n, _)| *n)
            .unwrap_or("off")
    }
}

/// os-release style fields describing the OEM partition's platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Oem {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version_id: Option<String>,
    pub home_url: Option<String>,
    pub bug_report_url: Option<String>,
}
