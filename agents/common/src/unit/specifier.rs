//! Unit names (prefix, instance, type) and `%` specifier expansion (systemd.unit(5),
//! "Specifiers"). Nothing here does I/O: host facts come in through [`Host`].

/// Facts about the machine that specifiers refer to, read by the caller (from
/// `/etc/machine-id`, the hostname, `/proc/sys/kernel/random/boot_id`). A fact left `None`
/// makes its specifier an error, so a unit never silently gets an empty machine id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// `%m`: 32 lowercase hex digits.
    pub machine_id: Option<String>,
    /// `%H`.
    pub hostname: Option<String>,
    /// `%b`: 32 lowercase hex digits.
    pub boot_id: Option<String>,
}

/// The parts of a unit name: `prefix@instance.type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitName {
    /// The whole name, e.g. `getty@tty1.service`.
    pub full: String,
    /// Before the `@` (or the whole name without its type), e.g. `getty`.
    pub prefix: String,
    /// Between `@` and the type: `Some("tty1")`, `Some("")` for a template, `None` if no `@`.
    pub instance: Option<String>,
    /// The type without the dot, e.g. `service`.
    pub kind: String,
}

impl UnitName {
    /// Splits and checks a unit name: `[A-Za-z0-9:_.\-]` plus one `@`, a type suffix, at most
    /// 255 bytes (systemd's rules).
    pub fn parse(name: &str) -> Result<UnitName, String> {
        let bad = |why: &str| format!("{name:?} is not a valid unit name: {why}");
        if name.len() > 255 {
            return Err(bad("longer than 255 bytes"));
        }
        let (stem, kind) = name
            .rsplit_once('.')
            .ok_or_else(|| bad("it has no type suffix such as .service"))?;
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(bad(
                "the type suffix must be lowercase letters, e.g. .service",
            ));
        }
        if !stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.-\\@".contains(&b))
        {
            return Err(bad(
                "only letters, digits, : _ . - \\ and one @ are allowed; escape others with systemd-escape",
            ));
        }
        let (prefix, instance) = match stem.split_once('@') {
            Some((p, i)) => {
                if i.contains('@') {
                    return Err(bad("it has more than one @"));
                }
                (p, Some(i.to_string()))
            }
            None => (stem, None),
        };
        if prefix.is_empty() {
            return Err(bad("the part before @ and the type is empty"));
        }
        Ok(UnitName {
            full: name.to_string(),
            prefix: prefix.to_string(),
            instance,
            kind: kind.to_string(),
        })
    }

    /// `name@.type`, a template that needs an instance.
    pub fn is_template(&self) -> bool {
        self.instance.as_deref() == Some("")
    }

    /// `name@inst.type`.
    pub fn is_instance(&self) -> bool {
        self.instance.as_deref().is_some_and(|i| !i.is_empty())
    }

    /// The template an instance comes from: `getty@tty1.service` -> `getty@.service`.
    pub fn template(&self) -> Option<String> {
        self.is_instance()
            .then(|| format!("{}@.{}", self.prefix, self.kind))
    }

    /// Instantiates a template: `getty@.service` + `tty1` -> `getty@tty1.service`.
    pub fn with_instance(&self, instance: &str) -> Result<UnitName, String> {
        UnitName::parse(&format!("{}@{instance}.{}", self.prefix, self.kind))
    }

    /// `%N`: the name without its type suffix.
    fn without_type(&self) -> String {
        match &self.instance {
            Some(i) => format!("{}@{i}", self.prefix),
            None => self.prefix.clone(),
        }
    }
}

/// Undoes unit-name escaping: `-` is `/`, `\xHH` is that byte (`%I`, `%P`, `%f`).
pub fn unescape(s: &str) -> String {
    let mut bytes = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' => bytes.push(b'/'),
            b'\\' if b.get(i + 1) == Some(&b'x') => {
                let hex = b
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        bytes.push(v);
                        i += 3;
                    }
                    None => bytes.push(b'\\'),
                }
            }
            c => bytes.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Escapes a string for use in a unit name (the inverse of [`unescape`]), as
/// `systemd-escape` does: `/` -> `-`, bytes outside `[A-Za-z0-9:_.]` -> `\xHH`, a leading `.`
/// escaped too.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, &b) in s.as_bytes().iter().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b":_.".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Expands `%` specifiers in `value` for the unit `name`.
///
/// Supported: `%n %N %p %P %i %I %f %j %J %m %H %l %b %%`, and the fixed system-manager paths
/// `%t`(/run) `%S`(/var/lib) `%C`(/var/cache) `%L`(/var/log) `%E`(/etc) `%T`(/tmp)
/// `%V`(/var/tmp) `%h`(/root) `%u`(root) `%U`(0) `%g`(root) `%G`(0) `%s`(/bin/sh).
/// Anything else is an error naming the specifier.
pub fn expand(value: &str, name: &UnitName, host: &Host) -> Result<String, String> {
    if !value.contains('%') {
        return Ok(value.to_string());
    }
    let need = |v: &Option<String>, spec: char, what: &str| {
        v.clone()
            .ok_or_else(|| format!("%{spec} needs the {what}, which the loader was not given"))
    };
    let instance = name.instance.clone().unwrap_or_default();
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            return Err("value ends with a lone %; write %% for a percent sign".into());
        };
        let expansion = match spec {
            '%' => "%".to_string(),
            'n' => name.full.clone(),
            'N' => name.without_type(),
            'p' => name.prefix.clone(),
            'P' => unescape(&name.prefix),
            'i' => instance.clone(),
            'I' => unescape(&instance),
            'f' => {
                let base = if name.is_instance() {
                    unescape(&instance)
                } else {
                    unescape(&name.prefix)
                };
                if base.starts_with('/') {
                    base
                } else {
                    format!("/{base}")
                }
            }
            'j' => last_dash_part(&name.prefix).to_string(),
            'J' => unescape(last_dash_part(&name.prefix)),
            'm' => need(&host.machine_id, 'm', "machine id")?,
            'H' => need(&host.hostname, 'H', "hostname")?,
            'l' => need(&host.hostname, 'l', "hostname")?
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string(),
            'b' => need(&host.boot_id, 'b', "boot id")?,
            't' => "/run".into(),
            'S' => "/var/lib".into(),
            'C' => "/var/cache".into(),
            'L' => "/var/log".into(),
            'E' => "/etc".into(),
            'T' => "/tmp".into(),
            'V' => "/var/tmp".into(),
            'h' => "/root".into(),
            'u' | 'g' => "root".into(),
            'U' | 'G' => "0".into(),
            's' => "/bin/sh".into(),
            other => {
                return Err(format!(
                    "unknown specifier %{other}; write %% for a literal percent sign"
                ))
            }
        };
        out.push_str(&expansion);
    }
    Ok(out)
}

/// `%j`: the prefix after its last `-`.
fn last_dash_part(prefix: &str) -> &str {
    prefix.rsplit('-').next().unwrap_or(prefix)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            hostname: Some("node0.example.com".into()),
            boot_id: Some("fedcba9876543210fedcba9876543210".into()),
        }
    }

    #[test]
    fn names() {
        let n = UnitName::parse("getty@tty1.service").unwrap();
        assert_eq!(
            (n.prefix.as_str(), n.instance.as_deref(), n.kind.as_str()),
            ("getty", Some("tty1"), "service")
        );
        assert!(n.is_instance() && !n.is_template());
        assert_eq!(n.template().as_deref(), Some("getty@.service"));
        let t = UnitName::parse("getty@.service").unwrap();
        assert!(t.is_template() && t.template().is_none());
        assert_eq!(
            t.with_instance("ttyS0").unwrap().full,
            "getty@ttyS0.service"
        );
        assert!(t.with_instance("a b").is_err());
        let p = UnitName::parse("multi-user.target").unwrap();
        assert_eq!((p.prefix.as_str(), p.instance), ("multi-user", None));
        for bad in [
            "noext",
            "a.Service",
            "a b.service",
            "@x.service",
            "a@b@c.service",
            ".service",
            "é.service",
        ] {
            assert!(UnitName::parse(bad).is_err(), "{bad}");
        }
        assert!(UnitName::parse(&format!("{}.service", "a".repeat(250))).is_err());
    }

    #[test]
    fn each_specifier() {
        let n = UnitName::parse("foo-bar@var-lib-x\\x2dy.service").unwrap();
        let h = host();
        for (spec, want) in [
            ("%n", "foo-bar@var-lib-x\\x2dy.service"),
            ("%N", "foo-bar@var-lib-x\\x2dy"),
            ("%p", "foo-bar"),
            ("%P", "foo/bar"),
            ("%i", "var-lib-x\\x2dy"),
            ("%I", "var/lib/x-y"),
            ("%f", "/var/lib/x-y"),
            ("%j", "bar"),
            ("%J", "bar"),
            ("%m", "0123456789abcdef0123456789abcdef"),
            ("%H", "node0.example.com"),
            ("%l", "node0"),
            ("%b", "fedcba9876543210fedcba9876543210"),
            ("%%", "%"),
            (
                "%t %S %C %L %E %T %V",
                "/run /var/lib /var/cache /var/log /etc /tmp /var/tmp",
            ),
            ("%h %u %U %g %G %s", "/root root 0 root 0 /bin/sh"),
            ("a%%i b%ic", "a%i bvar-lib-x\\x2dyc"),
            ("no specifiers", "no specifiers"),
        ] {
            assert_eq!(expand(spec, &n, &h).unwrap(), want, "{spec}");
        }
        let plain = UnitName::parse("etcd2.service").unwrap();
        assert_eq!(
            expand("[%i]%N %p %f", &plain, &h).unwrap(),
            "[]etcd2 etcd2 /etcd2"
        );
    }

    #[test]
    fn specifier_errors() {
        let n = UnitName::parse("a.service").unwrap();
        for (value, needle) in [
            ("%z", "unknown specifier %z"),
            ("100%", "lone %"),
            ("%m", "machine id"),
            ("%H", "hostname"),
            ("%b", "boot id"),
        ] {
            let e = expand(value, &n, &Host::default()).unwrap_err();
            assert!(e.contains(needle), "{value}: {e}");
        }
    }

    #[test]
    fn escaping_round_trips() {
        for (raw, escaped) in [
            ("/var/lib/x-y", "-var-lib-x\\x2dy"),
            ("dev/sda1", "dev-sda1"),
            (".hidden", "\\x2ehidden"),
            ("a b", "a\\x20b"),
        ] {
            assert_eq!(escape(raw), escaped);
            assert_eq!(unescape(escaped), raw);
        }
        assert_eq!(unescape("bad\\xz"), "bad\\xz");
        assert_eq!(unescape("end\\"), "end\\");
    }
}
