//! `/etc/coreos/update.conf` (as cloud-config `coreos.update` writes it) over the image's
//! defaults in `/usr/share/coreos/update.conf`, and the running release from
//! `/usr/share/crust/release`.
//!
//! `GROUP` is the channel name, `SERVER` the base URL of the channel repositories (`crust
//! serve`): metadata is fetched from `SERVER/GROUP/metadata/`, payloads from
//! `SERVER/GROUP/targets/`. `REBOOT_STRATEGY` is read by locksmithd.

use crust_channels::{Channel, Version};
use std::path::Path;
use thiserror::Error;

pub const ETC_UPDATE_CONF: &str = "/etc/coreos/update.conf";
pub const USR_UPDATE_CONF: &str = "/usr/share/coreos/update.conf";
pub const RELEASE: &str = "/usr/share/crust/release";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfError {
    #[error("{file}: {key}={value:?} is invalid: {why}")]
    Invalid {
        file: String,
        key: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("no update server configured: set SERVER= in /etc/coreos/update.conf (cloud-config coreos.update.server)")]
    NoServer,
    #[error("{0}: no CRUST_RELEASE_VERSION: cannot tell which release runs")]
    NoVersion(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootStrategy {
    Reboot,
    EtcdLock,
    BestEffort,
    Off,
}

impl RebootStrategy {
    pub fn parse(s: &str) -> Option<RebootStrategy> {
        Some(match s {
            "reboot" => RebootStrategy::Reboot,
            "etcd-lock" => RebootStrategy::EtcdLock,
            "best-effort" => RebootStrategy::BestEffort,
            "off" => RebootStrategy::Off,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            RebootStrategy::Reboot => "reboot",
            RebootStrategy::EtcdLock => "etcd-lock",
            RebootStrategy::BestEffort => "best-effort",
            RebootStrategy::Off => "off",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConf {
    pub group: Channel,
    pub server: String,
    pub reboot_strategy: RebootStrategy,
}

fn vars(text: &str) -> Vec<(String, String)> {
    crust_common::unit::parse_env_file(text).0
}

/// Merges the files in order (later wins); `default_group` is the running release's channel.
pub fn parse(files: &[(&str, &str)], default_group: Channel) -> Result<UpdateConf, ConfError> {
    let (mut group, mut server, mut strategy) = (None, None, None);
    for (name, text) in files {
        for (k, v) in vars(text) {
            let invalid = |key, why| ConfError::Invalid {
                file: name.to_string(),
                key,
                value: v.clone(),
                why,
            };
            match k.as_str() {
                "GROUP" => {
                    group = Some(
                        v.parse::<Channel>()
                            .map_err(|_| invalid("GROUP", "use stable, beta or alpha"))?,
                    );
                }
                "SERVER" => {
                    if !v.starts_with("http://") {
                        return Err(invalid("SERVER", "crust fetches signed metadata over http:// (TLS is not needed for integrity, and this client has none)"));
                    }
                    server = Some(v.clone());
                }
                "REBOOT_STRATEGY" => {
                    strategy = Some(RebootStrategy::parse(&v).ok_or_else(|| {
                        invalid(
                            "REBOOT_STRATEGY",
                            "use reboot, etcd-lock, best-effort or off",
                        )
                    })?);
                }
                _ => {}
            }
        }
    }
    Ok(UpdateConf {
        group: group.unwrap_or(default_group),
        server: server.ok_or(ConfError::NoServer)?,
        reboot_strategy: strategy.unwrap_or(RebootStrategy::BestEffort),
    })
}

/// Reads the defaults and the machine's file (a missing file is fine).
pub fn load(usr: &Path, etc: &Path, default_group: Channel) -> Result<UpdateConf, ConfError> {
    let a = std::fs::read_to_string(usr).unwrap_or_default();
    let b = std::fs::read_to_string(etc).unwrap_or_default();
    parse(
        &[
            (&usr.display().to_string(), &a),
            (&etc.display().to_string(), &b),
        ],
        default_group,
    )
}

/// The running release's version and channel from `/usr/share/crust/release`.
pub fn release(text: &str, file: &str) -> Result<(Version, Channel), ConfError> {
    let v = vars(text);
    let get = |k: &str| v.iter().rev().find(|(n, _)| n == k).map(|(_, x)| x.clone());
    let version_s =
        get("CRUST_RELEASE_VERSION").ok_or_else(|| ConfError::NoVersion(file.to_string()))?;
    let version: Version = version_s.parse().map_err(|_| ConfError::Invalid {
        file: file.to_string(),
        key: "CRUST_RELEASE_VERSION",
        value: version_s.clone(),
        why: "not MAJOR.MINOR.PATCH",
    })?;
    let channel = get("CRUST_RELEASE_CHANNEL")
        .and_then(|c| c.parse().ok())
        .or(version.channel())
        .unwrap_or(Channel::Stable);
    Ok((version, channel))
}

/// Sets `GROUP=` in the machine's update.conf text, keeping every other line.
pub fn set_group(existing: &str, group: Channel) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in existing.lines() {
        if line.trim_start().starts_with("GROUP=") {
            if !done {
                out.push_str(&format!("GROUP={group}\n"));
                done = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !done {
        out.push_str(&format!("GROUP={group}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_overrides_usr_defaults() {
        let usr = "GROUP=stable\nSERVER=http://10.0.2.100:8080/\nREBOOT_STRATEGY=best-effort\n";
        let etc = "GROUP=beta\nREBOOT_STRATEGY=etcd-lock\n# comment\n";
        let c = parse(&[("usr", usr), ("etc", etc)], Channel::Alpha).unwrap();
        assert_eq!(c.group, Channel::Beta);
        assert_eq!(c.server, "http://10.0.2.100:8080/");
        assert_eq!(c.reboot_strategy, RebootStrategy::EtcdLock);
        let c = parse(&[("usr", "SERVER=http://h/")], Channel::Alpha).unwrap();
        assert_eq!(
            (c.group, c.reboot_strategy),
            (Channel::Alpha, RebootStrategy::BestEffort)
        );
    }

    #[test]
    fn bad_values_name_file_and_key() {
        let e = parse(
            &[("etc", "SERVER=http://h/\nGROUP=nightly\n")],
            Channel::Alpha,
        )
        .unwrap_err();
        assert!(e.to_string().contains("etc: GROUP=\"nightly\""), "{e}");
        let e = parse(
            &[(
                "etc",
                "SERVER=https://public.update.core-os.net/v1/update/\n",
            )],
            Channel::Alpha,
        )
        .unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        assert_eq!(
            parse(&[("etc", "GROUP=beta\n")], Channel::Alpha).unwrap_err(),
            ConfError::NoServer
        );
        let e = parse(
            &[("etc", "SERVER=http://h/\nREBOOT_STRATEGY=sometimes\n")],
            Channel::Alpha,
        )
        .unwrap_err();
        assert!(e.to_string().contains("REBOOT_STRATEGY"), "{e}");
    }

    #[test]
    fn release_file_and_group_edit() {
        let (v, c) = release(
            "CRUST_RELEASE_VERSION=1.1.0\nCRUST_RELEASE_CHANNEL=beta\n",
            "r",
        )
        .unwrap();
        assert_eq!((v.to_string(), c), ("1.1.0".into(), Channel::Beta));
        assert!(release("X=1\n", "r").is_err());
        assert_eq!(
            set_group("SERVER=http://h/\nGROUP=stable\n", Channel::Beta),
            "SERVER=http://h/\nGROUP=beta\n"
        );
        assert_eq!(set_group("", Channel::Alpha), "GROUP=alpha\n");
    }
}
