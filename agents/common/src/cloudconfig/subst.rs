//! `$private_ipv4`-style substitution over the whole user-data text, before YAML parsing, as
//! coreos-cloudinit did.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The addresses the data source reported. A missing one is substituted with the empty string,
/// as coreos-cloudinit did; [`Substitutions::unresolved`] says which were used but missing so
/// the caller can warn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Substitutions {
    pub public_ipv4: Option<Ipv4Addr>,
    pub private_ipv4: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    pub private_ipv6: Option<Ipv6Addr>,
}

/// The variable names, with their leading `$`.
pub const VARIABLES: [&str; 4] = [
    "$public_ipv4",
    "$private_ipv4",
    "$public_ipv6",
    "$private_ipv6",
];

impl Substitutions {
    fn value(&self, var: &str) -> Option<String> {
        match var {
            "$public_ipv4" => self.public_ipv4.map(|a| a.to_string()),
            "$private_ipv4" => self.private_ipv4.map(|a| a.to_string()),
            "$public_ipv6" => self.public_ipv6.map(|a| a.to_string()),
            "$private_ipv6" => self.private_ipv6.map(|a| a.to_string()),
            _ => None,
        }
    }

    /// Variables `text` uses (unescaped) for which no address is known.
    pub fn unresolved(&self, text: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        scan(text, |piece| {
            if let Piece::Var(v) = piece {
                if self.value(v).is_none() && !out.contains(&v) {
                    out.push(v);
                }
            }
        });
        out
    }

    /// `/etc/environment` lines (`COREOS_PUBLIC_IPV4=...`) coreos-cloudinit wrote for the known
    /// addresses; `None` when none is known.
    pub fn environment_file(&self) -> Option<String> {
        let mut out = String::new();
        for var in VARIABLES {
            if let Some(v) = self.value(var) {
                out.push_str(&format!("COREOS_{}={v}\n", var[1..].to_uppercase()));
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'static str),
    /// `\$name`: the variable name, written literally.
    Escaped(&'static str),
}

fn scan<'a>(text: &'a str, mut emit: impl FnMut(Piece<'a>)) {
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        let after = &rest[i..];
        let Some(var) = VARIABLES.iter().find(|v| after.starts_with(**v)) else {
            emit(Piece::Text(&rest[..=i]));
            rest = &rest[i + 1..];
            continue;
        };
        if rest[..i].ends_with('\\') {
            emit(Piece::Text(&rest[..i - 1]));
            emit(Piece::Escaped(var));
        } else {
            emit(Piece::Text(&rest[..i]));
            emit(Piece::Var(var));
        }
        rest = &rest[i + var.len()..];
    }
    emit(Piece::Text(rest));
}

/// Replaces every `$public_ipv4`, `$private_ipv4`, `$public_ipv6` and `$private_ipv6` in
/// `text`; `\$private_ipv4` stays as the literal `$private_ipv4`.
pub fn substitute(text: &str, subs: &Substitutions) -> String {
    let mut out = String::with_capacity(text.len());
    scan(text, |piece| match piece {
        Piece::Text(t) => out.push_str(t),
        Piece::Var(v) => out.push_str(&subs.value(v).unwrap_or_default()),
        Piece::Escaped(v) => out.push_str(v),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs() -> Substitutions {
        Substitutions {
            public_ipv4: Some(Ipv4Addr::new(203, 0, 113, 29)),
            private_ipv4: Some(Ipv4Addr::new(10, 0, 0, 5)),
            public_ipv6: Some("2001:db8::1".parse().expect("literal")),
            private_ipv6: Some("fd00::5".parse().expect("literal")),
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str)] = &[
            ("addr: $private_ipv4:4001", "addr: 10.0.0.5:4001"),
            ("$public_ipv4", "203.0.113.29"),
            ("[$public_ipv6]:2379", "[2001:db8::1]:2379"),
            ("$private_ipv6", "fd00::5"),
            ("$private_ipv4$private_ipv4", "10.0.0.510.0.0.5"),
            (
                "http://$private_ipv4:2379,http://$public_ipv4:2379",
                "http://10.0.0.5:2379,http://203.0.113.29:2379",
            ),
            (r"echo \$private_ipv4", "echo $private_ipv4"),
            ("$HOME and $ and $private", "$HOME and $ and $private"),
            ("no variables", "no variables"),
            ("", ""),
            ("ünïcode $private_ipv4 ✓", "ünïcode 10.0.0.5 ✓"),
        ];
        for (input, want) in cases {
            assert_eq!(substitute(input, &subs()), *want, "{input}");
        }
    }

    #[test]
    fn missing_values_become_empty_and_are_reported() {
        let only_private = Substitutions {
            private_ipv4: Some(Ipv4Addr::new(10, 0, 0, 5)),
            ..Substitutions::default()
        };
        let text = "a: $public_ipv4\nb: $private_ipv4\nc: \\$public_ipv6\n";
        assert_eq!(
            substitute(text, &only_private),
            "a: \nb: 10.0.0.5\nc: $public_ipv6\n"
        );
        assert_eq!(only_private.unresolved(text), vec!["$public_ipv4"]);
        assert!(subs().unresolved(text).is_empty());
    }

    #[test]
    fn environment_file_lists_known_addresses() {
        assert_eq!(Substitutions::default().environment_file(), None);
        let env = subs().environment_file().expect("some");
        assert_eq!(
            env,
            "COREOS_PUBLIC_IPV4=203.0.113.29\nCOREOS_PRIVATE_IPV4=10.0.0.5\n\
             COREOS_PUBLIC_IPV6=2001:db8::1\nCOREOS_PRIVATE_IPV6=fd00::5\n"
        );
    }
}
