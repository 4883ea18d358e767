//! Typed values of unit settings: booleans, time spans, resource limits, environment assignments.

use super::command::{is_env_name, split_words};

/// systemd booleans: `1 yes y true t on` / `0 no n false f off`, any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

const US_PER_MS: u128 = 1_000;
const US_PER_S: u128 = 1_000_000;

/// Unit suffixes of time spans, in microseconds (systemd.time(7)).
fn time_unit(suffix: &str) -> Option<u128> {
    Some(match suffix {
        "us" | "usec" | "µs" | "μs" => 1,
        "ms" | "msec" => US_PER_MS,
        "" | "s" | "sec" | "second" | "seconds" => US_PER_S,
        "m" | "min" | "minute" | "minutes" => 60 * US_PER_S,
        "h" | "hr" | "hour" | "hours" => 3_600 * US_PER_S,
        "d" | "day" | "days" => 86_400 * US_PER_S,
        "w" | "week" | "weeks" => 7 * 86_400 * US_PER_S,
        // systemd's month and year are 30.44 and 365.25 days
        "M" | "month" | "months" => 2_629_800 * US_PER_S,
        "y" | "year" | "years" => 31_557_600 * US_PER_S,
        _ => return None,
    })
}

/// A time span in milliseconds, or `None` for `infinity`: `5` (seconds), `5s`, `500ms`,
/// `1min 30s`, `1min30s`, `1.5h`, `2 weeks`. Sub-millisecond parts are rounded down.
pub fn parse_timespan_ms(s: &str) -> Result<Option<u64>, String> {
    let bad =
        || format!("{s:?} is not a time span; examples: 5, 500ms, 2s, 1min 30s, 1.5h, infinity");
    let s = s.trim();
    if s == "infinity" {
        return Ok(None);
    }
    let mut rest = s;
    let mut total_us: u128 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return Err(bad());
                }
                f.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let after = after.trim_start();
        let unit_len = after
            .char_indices()
            .find(|(_, c)| !c.is_alphabetic())
            .map_or(after.len(), |(i, _)| i);
        let (suffix, after) = after.split_at(unit_len);
        let scale = time_unit(suffix).ok_or_else(bad)?;
        // Bounded lengths keep the arithmetic in u128 without overflow checks on each digit.
        if int.len() > 20 || frac.len() > 20 {
            return Err(bad());
        }
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut part = whole.checked_mul(scale).ok_or_else(bad)?;
        if !frac.is_empty() {
            let digits: u128 = frac.parse().map_err(|_| bad())?;
            part += digits * scale / 10u128.pow(frac.len() as u32);
        }
        total_us = total_us.checked_add(part).ok_or_else(bad)?;
        rest = after.trim_start();
    }
    u64::try_from(total_us / US_PER_MS)
        .map(Some)
        .map_err(|_| bad())
}

/// A resource limit pair; `None` is `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RLimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// `LimitNOFILE=` and friends: `N`, `infinity`, or `SOFT:HARD`.
pub fn parse_rlimit(s: &str) -> Result<RLimit, String> {
    let one = |v: &str| -> Result<Option<u64>, String> {
        match v.trim() {
            "infinity" => Ok(None),
            n => n
                .parse()
                .map(Some)
                .map_err(|_| format!("{n:?} is not a limit; use a number, infinity, or SOFT:HARD")),
        }
    };
    let (soft, hard) = match s.split_once(':') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let v = one(s)?;
            (v, v)
        }
    };
    match (soft, hard) {
        (Some(s), Some(h)) if s > h => Err(format!(
            "soft limit {s} is above the hard limit {h}; write SOFT:HARD with SOFT <= HARD"
        )),
        (None, Some(h)) => Err(format!(
            "soft limit infinity is above the hard limit {h}; write SOFT:HARD with SOFT <= HARD"
        )),
        _ => Ok(RLimit { soft, hard }),
    }
}

/// `Environment=` words: each a `NAME=VALUE` assignment, quoted as a whole when the value has
/// spaces (`"A=1 2" B=3` sets A to `1 2`).
pub fn parse_environment(value: &str) -> Result<Vec<(String, String)>, String> {
    parse_environment_with(value, &mut |w| Ok(w))
}

/// [`parse_environment`] with `resolve` applied to each word after splitting and unquoting.
pub fn parse_environment_with(
    value: &str,
    resolve: &mut dyn FnMut(String) -> Result<String, String>,
) -> Result<Vec<(String, String)>, String> {
    split_words(value)?
        .into_iter()
        .map(|w| {
            let text = resolve(w.text)?;
            let (k, v) = text.split_once('=').ok_or_else(|| {
                format!("{text:?} is not NAME=VALUE; quote assignments with spaces")
            })?;
            if !is_env_name(k) {
                return Err(format!(
                    "{k:?} is not a variable name (letters, digits and _, not starting with a digit)"
                ));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Parses the contents of an `EnvironmentFile=`: `NAME=VALUE` lines, `#`/`;` comments, an
/// optional `export ` prefix, values optionally in single quotes (literal) or double quotes
/// (backslash escapes `\" \\ \$ \``), a trailing backslash continuing the line. Lines that are
/// not assignments are skipped, as systemd does; their numbers come back for a warning.
pub fn parse_env_file(text: &str) -> (Vec<(String, String)>, Vec<usize>) {
    let mut vars = Vec::new();
    let mut bad = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let mut line = line.trim().to_string();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, next)) => line.push_str(next.trim()),
                None => break,
            }
        }
        let line = line.strip_prefix("export ").unwrap_or(&line);
        let Some((k, v)) = line.split_once('=') else {
            bad.push(i + 1);
            continue;
        };
        let k = k.trim();
        if !is_env_name(k) {
            bad.push(i + 1);
            continue;
        }
        let v = v.trim();
        let value = if let Some(inner) = v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
            inner.to_string()
        } else if let Some(inner) = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match (c, chars.clone().next()) {
                    ('\\', Some(n @ ('"' | '\\' | '$' | '`'))) => {
                        out.push(n);
                        chars.next();
                    }
                    (c, _) => out.push(c),
                }
            }
            out
        } else {
            v.to_string()
        };
        vars.push((k.to_string(), value));
    }
    (vars, bad)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for t in ["1", "yes", "y", "true", "t", "on", "YES", "True", "ON"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "no", "n", "false", "f", "off", "No", "OFF"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for x in ["", "2", "yess", "enable"] {
            assert_eq!(parse_bool(x), None, "{x}");
        }
    }

    #[test]
    fn time_spans() {
        for (s, ms) in [
            ("5", Some(5_000)),
            ("0", Some(0)),
            ("5s", Some(5_000)),
            ("5 s", Some(5_000)),
            ("500ms", Some(500)),
            ("1min 30s", Some(90_000)),
            ("1min30s", Some(90_000)),
            ("2m", Some(120_000)),
            ("1h 2min 3s 4ms", Some(3_723_004)),
            ("1.5s", Some(1_500)),
            ("1.5h", Some(5_400_000)),
            (".5s", Some(500)),
            ("1500us", Some(1)),
            ("2 weeks", Some(1_209_600_000)),
            ("1d", Some(86_400_000)),
            ("1y", Some(31_557_600_000)),
            ("1M", Some(2_629_800_000)),
            ("infinity", None),
            ("  10sec  ", Some(10_000)),
        ] {
            assert_eq!(parse_timespan_ms(s), Ok(ms), "{s:?}");
        }
        for s in [
            "",
            "s",
            "soon",
            "5 parsecs",
            "-5s",
            "5s.",
            "1..5s",
            "99999999999999999999999999y",
            "infinity 5",
        ] {
            assert!(parse_timespan_ms(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn rlimits() {
        let l = |soft, hard| RLimit { soft, hard };
        assert_eq!(parse_rlimit("1024"), Ok(l(Some(1024), Some(1024))));
        assert_eq!(parse_rlimit("infinity"), Ok(l(None, None)));
        assert_eq!(parse_rlimit("1024:4096"), Ok(l(Some(1024), Some(4096))));
        assert_eq!(parse_rlimit("1024:infinity"), Ok(l(Some(1024), None)));
        for bad in ["", "lots", "4096:1024", "infinity:10", "1:2:3", "-1"] {
            assert!(parse_rlimit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn environment_words() {
        let kv = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        for (input, want) in [
            ("A=1", kv(&[("A", "1")])),
            ("A=1 B=2", kv(&[("A", "1"), ("B", "2")])),
            // systemd quotes whole assignments: this is one variable whose value has a space
            ("\"A=1 B=2\"", kv(&[("A", "1 B=2")])),
            (
                "\"A=x y\" B='z w' C=",
                kv(&[("A", "x y"), ("B", "z w"), ("C", "")]),
            ),
            ("A=a=b", kv(&[("A", "a=b")])),
            ("PATH=/x:$PATH", kv(&[("PATH", "/x:$PATH")])),
        ] {
            assert_eq!(parse_environment(input), Ok(want), "{input:?}");
        }
        for (input, needle) in [
            ("NOEQ", "NAME=VALUE"),
            ("1A=x", "variable name"),
            ("=x", "variable name"),
            ("\"A=1", "unterminated"),
        ] {
            let e = parse_environment(input).unwrap_err();
            assert!(e.contains(needle), "{input:?}: {e}");
        }
    }

    #[test]
    fn env_files() {
        let (vars, bad) = parse_env_file(
            "# comment\n; other\n\nA=1\nexport B = two words \nC='single $x'\nD=\"dq \\\"q\\\" \\$y\"\nE=long\\\nvalue\nnot an assignment\n1X=bad\nF=\n",
        );
        let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "single $x"),
                ("D", "dq \"q\" $y"),
                ("E", "longvalue"),
                ("F", "")
            ]
        );
        assert_eq!(bad, [10, 11]);
    }
}
