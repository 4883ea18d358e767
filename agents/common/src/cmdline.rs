//! The kernel command line contract between `crust build` (which writes it into loader entries)
//! and init stage 1 (which reads /proc/cmdline).

use thiserror::Error;

/// Key naming the USR partition, as `PARTUUID=<uuid>`.
pub const MOUNT_USR: &str = "mount.usr";
/// Key carrying the dm-verity root hash of the USR partition (hex sha256).
pub const USRHASH: &str = "usrhash";
/// `crust.verify=full` (default) reads all of USR through dm-verity before mounting it, so a
/// corrupted image is refused at boot; `lazy` leaves checking to each read.
pub const VERIFY: &str = "crust.verify";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("kernel command line has no {0}=: the loader entry is not a crust entry; rebuild the image with `crust build`")]
    Missing(&'static str),
    #[error("kernel command line {key}={value} is invalid: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// How thoroughly stage 1 checks USR before mounting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Full,
    Lazy,
}

/// What stage 1 needs from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// PARTUUID of the USR partition to mount, lowercase.
    pub usr_partuuid: String,
    /// dm-verity root hash, 64 lowercase hex digits.
    pub usrhash: String,
    pub verify: Verify,
}

/// Splits a command line into `key[=value]` words, honouring double quotes like the kernel does.
pub fn words(cmdline: &str) -> Vec<(&str, Option<&str>)> {
    let mut out = Vec::new();
    let bytes = cmdline.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        let mut quoted = false;
        while i < bytes.len() && (quoted || !bytes[i].is_ascii_whitespace()) {
            if bytes[i] == b'"' {
                quoted = !quoted;
            }
            i += 1;
        }
        if start < i {
            let word = &cmdline[start..i];
            match word.split_once('=') {
                Some((k, v)) => out.push((k, Some(v.trim_matches('"')))),
                None => out.push((word, None)),
            }
        }
    }
    out
}

/// The last value given for `key` (the kernel's rule: later words win).
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    words(cmdline)
        .into_iter()
        .filter(|(k, _)| *k == key)
        .filter_map(|(_, v)| v)
        .next_back()
}

impl BootParams {
    pub fn parse(cmdline: &str) -> Result<BootParams, CmdlineError> {
        let usr = value(cmdline, MOUNT_USR).ok_or(CmdlineError::Missing(MOUNT_USR))?;
        let uuid = usr.strip_prefix("PARTUUID=").ok_or(CmdlineError::Invalid {
            key: MOUNT_USR,
            value: usr.to_string(),
            why: "expected PARTUUID=<uuid>",
        })?;
        if !is_uuid(uuid) {
            return Err(CmdlineError::Invalid {
                key: MOUNT_USR,
                value: usr.to_string(),
                why: "not a UUID",
            });
        }
        let hash = value(cmdline, USRHASH).ok_or(CmdlineError::Missing(USRHASH))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CmdlineError::Invalid {
                key: USRHASH,
                value: hash.to_string(),
                why: "expected 64 hex digits (sha256)",
            });
        }
        let verify = match value(cmdline, VERIFY) {
            None | Some("full") => Verify::Full,
            Some("lazy") => Verify::Lazy,
            Some(other) => {
                return Err(CmdlineError::Invalid {
                    key: VERIFY,
                    value: other.to_string(),
                    why: "expected full or lazy",
                })
            }
        };
        Ok(BootParams {
            usr_partuuid: uuid.to_ascii_lowercase(),
            usrhash: hash.to_ascii_lowercase(),
            verify,
        })
    }

    /// The words `crust build` puts on the command line for a slot.
    pub fn to_cmdline(&self) -> String {
        let mut s = format!(
            "{MOUNT_USR}=PARTUUID={} {USRHASH}={}",
            self.usr_partuuid, self.usrhash
        );
        if self.verify == Verify::Lazy {
            s.push_str(&format!(" {VERIFY}=lazy"));
        }
        s
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_what_it_writes() {
        let p = BootParams {
            usr_partuuid: "7130c94a-213a-4e5a-8e26-6cce9662f132".into(),
            usrhash: HASH.into(),
            verify: Verify::Full,
        };
        let line = format!("console=ttyS0 {} quiet", p.to_cmdline());
        assert_eq!(BootParams::parse(&line), Ok(p));
    }

    #[test]
    fn later_words_win_and_quotes_are_honoured() {
        let line = r#"a="x y" usrhash=1 usrhash=2 flag"#;
        assert_eq!(value(line, "a"), Some("x y"));
        assert_eq!(value(line, "usrhash"), Some("2"));
        assert_eq!(value(line, "flag"), None);
    }

    #[test]
    fn refuses_bad_input_naming_the_key() {
        assert_eq!(
            BootParams::parse("console=ttyS0"),
            Err(CmdlineError::Missing(MOUNT_USR))
        );
        let e = BootParams::parse("mount.usr=/dev/vda3 usrhash=00").unwrap_err();
        assert!(e.to_string().contains("mount.usr"));
        let e =
            BootParams::parse("mount.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 usrhash=zz")
                .unwrap_err();
        assert!(e.to_string().contains("usrhash"));
    }
}
