//! Versions and channel names.
//!
//! Versions follow Flatcar's scheme: `MAJOR.MINOR.PATCH`, where MINOR names the channel a release
//! was cut for (alpha 0, beta 1, stable 2). Ordering compares the numbers, never strings: first
//! MAJOR, then MINOR, then PATCH. A release promoted from alpha to beta keeps its MAJOR and
//! gets a higher MINOR, so `100.1.0 > 100.0.3`: a machine that switches from alpha to beta moves
//! forward to the promoted build of the same MAJOR, never back.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Alpha,
    Beta,
    Stable,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Alpha, Channel::Beta, Channel::Stable];

    /// The MINOR number releases of this channel carry.
    pub fn minor(self) -> u32 {
        match self {
            Channel::Alpha => 0,
            Channel::Beta => 1,
            Channel::Stable => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Channel::Alpha => "alpha",
            Channel::Beta => "beta",
            Channel::Stable => "stable",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("version {0:?} is not MAJOR.MINOR.PATCH with numbers (for example 1.2.0)")]
    Syntax(String),
    #[error("channel {0:?} is unknown: use stable, beta or alpha")]
    Channel(String),
    #[error("version {version} does not belong to channel {channel}: its MINOR must be {} ({channel}); alpha is 0, beta 1, stable 2", channel.minor())]
    WrongChannel { version: Version, channel: Channel },
}

impl FromStr for Channel {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Channel, VersionError> {
        Channel::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| VersionError::Channel(s.to_string()))
    }
}

/// A release version. Field order gives the derived ordering: major, then minor, then patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// True when `self` is a strictly newer release than `other`: what an update needs.
    pub fn is_newer_than(&self, other: &Version) -> bool {
        self > other
    }

    /// The next PATCH of the same MAJOR.MINOR (what `crust publish` suggests after a refusal).
    pub fn next_patch(&self) -> Option<Version> {
        Some(Version::new(
            self.major,
            self.minor,
            self.patch.checked_add(1)?,
        ))
    }

    /// The channel this version's MINOR names, if any.
    pub fn channel(&self) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.minor() == self.minor)
    }

    /// Refuses a version cut for another channel than the one it is published to.
    pub fn check_channel(&self, channel: Channel) -> Result<(), VersionError> {
        if self.minor == channel.minor() {
            Ok(())
        } else {
            Err(VersionError::WrongChannel {
                version: *self,
                channel,
            })
        }
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Version, VersionError> {
        let err = || VersionError::Syntax(s.to_string());
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, VersionError> {
            let p = parts.next().ok_or_else(err)?;
            // Leading zeros and signs would give two spellings of one version.
            if p.is_empty()
                || (p.len() > 1 && p.starts_with('0'))
                || !p.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(err());
            }
            p.parse().map_err(|_| err())
        };
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn orders_numerically() {
        assert!(v("1.2.10") > v("1.2.9"));
        assert!(v("10.0.0") > v("9.2.99"));
        assert!(v("3815.2.0") < v("3815.2.1"));
        assert_eq!(v("1.2.3").to_string(), "1.2.3");
    }

    #[test]
    fn refuses_malformed_versions() {
        for bad in [
            "", "1", "1.2", "1.2.3.4", "1.02.3", "a.b.c", "1.2.-3", "1..3", "+1.2.3",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn compares_field_by_field() {
        let sorted = [
            "0.0.0",
            "0.0.1",
            "0.1.0",
            "0.2.0",
            "1.0.0",
            "1.0.9",
            "1.0.10",
            "1.2.0",
            "2.0.0",
            "100.0.0",
            "100.1.0",
            "100.2.0",
            "4294967295.0.0",
        ];
        for (i, a) in sorted.iter().enumerate() {
            for (j, b) in sorted.iter().enumerate() {
                assert_eq!(v(a).cmp(&v(b)), i.cmp(&j), "{a} vs {b}");
                assert_eq!(v(a).is_newer_than(&v(b)), i > j, "{a} vs {b}");
            }
        }
        assert_eq!(v("1.2.3"), Version::new(1, 2, 3));
        assert_eq!(v("1.2.3").next_patch(), Some(v("1.2.4")));
        assert_eq!(v("1.2.4294967295").next_patch(), None);
        // Beyond u32: refused, not wrapped.
        assert!("4294967296.0.0".parse::<Version>().is_err());
    }

    #[test]
    fn serde_uses_the_dotted_form() {
        let j = serde_json::to_string(&v("3.1.4")).unwrap();
        assert_eq!(j, "\"3.1.4\"");
        assert_eq!(serde_json::from_str::<Version>(&j).unwrap(), v("3.1.4"));
        assert!(serde_json::from_str::<Version>("\"3.1\"").is_err());
        assert!(serde_json::from_str::<Version>("3").is_err());
        assert_eq!(
            serde_json::from_str::<Channel>("\"stable\"").unwrap(),
            Channel::Stable
        );
    }

    #[test]
    fn minor_names_the_channel() {
        assert_eq!(v("100.2.0").channel(), Some(Channel::Stable));
        assert_eq!(v("100.0.5").channel(), Some(Channel::Alpha));
        assert_eq!(v("100.7.5").channel(), None);
        assert!(v("1.1.0").check_channel(Channel::Beta).is_ok());
        let e = v("1.1.0").check_channel(Channel::Stable).unwrap_err();
        assert!(e.to_string().contains("MINOR must be 2"));
        assert_eq!("beta".parse::<Channel>(), Ok(Channel::Beta));
        assert!("nightly".parse::<Channel>().is_err());
    }
}
