//! Channel definitions: `channels/{stable,beta,alpha}.yaml`.
//!
//! ```yaml
//! channel: beta
//! server: http://10.0.2.100:8080/
//! check-interval: 1h
//! timestamp-expires: 1d
//! rollout:
//!   - { after: 0s, percent: 10 }
//!   - { after: 1d, percent: 100 }
//! ```
//!
//! Unknown keys are errors with their line; values are checked into a [`ChannelDef`] that cannot
//! be inconsistent (waves strictly later and never shrinking, ending at 100 %).

use crate::Channel;
use serde::{Deserialize, Serialize};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DefError {
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {field}: {why}")]
    Invalid {
        origin: String,
        field: &'static str,
        why: String,
    },
    #[error("cannot read {path}: {why}")]
    Read { path: String, why: String },
}

/// One rollout wave: `percent` of machines may update once `after` seconds have passed since
/// the release was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    pub after: u64,
    pub percent: u8,
}

/// The share of machines (0-100) a release is offered to `elapsed` seconds after publication.
/// No waves means everyone at once.
pub fn percent_at(waves: &[Wave], elapsed: u64) -> u8 {
    if waves.is_empty() {
        return 100;
    }
    waves
        .iter()
        .filter(|w| w.after <= elapsed)
        .map(|w| w.percent)
        .max()
        .unwrap_or(0)
}

/// When the next wave opens after `elapsed`, if any: update-engine checks again then.
pub fn next_wave(waves: &[Wave], elapsed: u64) -> Option<u64> {
    waves.iter().map(|w| w.after).filter(|&a| a > elapsed).min()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDef {
    channel: Channel,
    server: String,
    check_interval: String,
    #[serde(default)]
    timestamp_expires: Option<String>,
    #[serde(default)]
    rollout: Vec<RawWave>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWave {
    after: String,
    percent: u8,
}

/// A validated channel definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDef {
    pub channel: Channel,
    /// Base URL of the update server (`http://` only; the metadata is signed, not the transport).
    pub server: String,
    pub check_interval: u64,
    /// How long a freshly signed timestamp stays valid (freeze protection window).
    pub timestamp_expires: u64,
    pub rollout: Vec<Wave>,
}

/// Default lifetime of timestamp metadata: one day.
pub const DEFAULT_TIMESTAMP_EXPIRES: u64 = 86400;

/// Parses `90s`, `15m`, `2h`, `7d` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86400),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

impl ChannelDef {
    pub fn parse(text: &str, origin: &str) -> Result<ChannelDef, DefError> {
        let raw: RawDef = serde_saphyr::from_str(text).map_err(|e| DefError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let invalid = |field, why: String| DefError::Invalid {
            origin: origin.to_string(),
            field,
            why,
        };
        if !raw.server.starts_with("http://") {
            return Err(invalid(
                "server",
                format!("{:?} must be an http:// URL (the metadata is signed, so TLS is not needed for integrity)", raw.server),
            ));
        }
        let dur = |field, s: &str| {
            parse_duration(s).ok_or_else(|| {
                invalid(
                    field,
                    format!("{s:?} is not a duration like 90s, 15m, 2h or 7d"),
                )
            })
        };
        let check_interval = dur("check-interval", &raw.check_interval)?;
        if check_interval < 60 {
            return Err(invalid(
                "check-interval",
                "must be at least 1m: machines must not hammer the server".into(),
            ));
        }
        let timestamp_expires = match &raw.timestamp_expires {
            Some(s) => dur("timestamp-expires", s)?,
            None => DEFAULT_TIMESTAMP_EXPIRES,
        };
        if timestamp_expires == 0 {
            return Err(invalid("timestamp-expires", "must be more than 0s".into()));
        }
        let mut rollout = Vec::new();
        for w in &raw.rollout {
            let after = dur("rollout.after", &w.after)?;
            if w.percent > 100 {
                return Err(invalid(
                    "rollout.percent",
                    format!("{} is above 100", w.percent),
                ));
            }
            if let Some(prev) = rollout.last() {
                let prev: &Wave = prev;
                if after <= prev.after || w.percent < prev.percent {
                    return Err(invalid(
                        "rollout",
                        format!("wave at {} must come later and reach at least as many machines as the one before", w.after),
                    ));
                }
            }
            rollout.push(Wave {
                after,
                percent: w.percent,
            });
        }
        if rollout.last().is_some_and(|w| w.percent != 100) {
            return Err(invalid(
                "rollout",
                "the last wave must reach 100 percent".into(),
            ));
        }
        Ok(ChannelDef {
            channel: raw.channel,
            server: raw.server,
            check_interval,
            timestamp_expires,
            rollout,
        })
    }

    pub fn load(path: &Path) -> Result<ChannelDef, DefError> {
        let text = std::fs::read_to_string(path).map_err(|e| DefError::Read {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        ChannelDef::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "channel: beta\nserver: http://10.0.2.100:8080/\ncheck-interval: 1h\nrollout:\n  - { after: 0s, percent: 10 }\n  - { after: 2h, percent: 50 }\n  - { after: 1d, percent: 100 }\n";

    #[test]
    fn parses_a_channel_and_its_waves() {
        let d = ChannelDef::parse(GOOD, "beta.yaml").unwrap();
        assert_eq!(d.channel, Channel::Beta);
        assert_eq!(d.check_interval, 3600);
        assert_eq!(d.timestamp_expires, DEFAULT_TIMESTAMP_EXPIRES);
        assert_eq!(percent_at(&d.rollout, 0), 10);
        assert_eq!(percent_at(&d.rollout, 7199), 10);
        assert_eq!(percent_at(&d.rollout, 7200), 50);
        assert_eq!(percent_at(&d.rollout, 86400), 100);
        assert_eq!(next_wave(&d.rollout, 0), Some(7200));
        assert_eq!(next_wave(&d.rollout, 86400), None);
        assert_eq!(percent_at(&[], 0), 100);
        assert_eq!(
            percent_at(
                &[Wave {
                    after: 60,
                    percent: 100
                }],
                59
            ),
            0
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let bad = GOOD.replace("check-interval", "check-intervall");
        let e = ChannelDef::parse(&bad, "beta.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("check-intervall"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn refuses_inconsistent_values() {
        for (from, to, what) in [
            ("percent: 100", "percent: 90", "100 percent"),
            ("after: 2h", "after: 0s", "later"),
            ("1h", "10s", "at least 1m"),
            ("http://", "ftp://", "http://"),
            ("after: 1d", "after: soon", "duration"),
        ] {
            let e = ChannelDef::parse(&GOOD.replace(from, to), "x")
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{from}->{to}: {e}");
        }
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("2d"), Some(172800));
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn the_shipped_channel_files_parse() {
        for (text, ch) in [
            (include_str!("../alpha.yaml"), Channel::Alpha),
            (include_str!("../beta.yaml"), Channel::Beta),
            (include_str!("../stable.yaml"), Channel::Stable),
        ] {
            let d = ChannelDef::parse(text, ch.name()).unwrap();
            assert_eq!(d.channel, ch);
            assert_eq!(percent_at(&d.rollout, 3 * 86400), 100);
        }
    }
}
