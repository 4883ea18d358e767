//! Unit-file model (systemd syntax), the minimal subset init needs for the spine: sections,
//! `Key=Value`, comments, line continuations, and the service keys listed on [`Unit`].
//!
//! Parsing has two layers: [`parse`] turns text into sections of key/value entries with their line
//! numbers (no meaning attached), and [`Unit::from_text`] validates those into a runtime type.
//! Keys the model does not know yet are returned as [`Warning`]s with their line numbers instead
//! of being dropped silently: real-world units carry many keys this subset does not act on.

use std::fmt;
use thiserror::Error;

/// Default `RestartSec=` (systemd's default is 100 ms).
pub const DEFAULT_RESTART_MS: u64 = 100;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("{unit}:{line}: {why}")]
    Syntax {
        unit: String,
        line: usize,
        why: String,
    },
    #[error("{unit}: {why}")]
    Invalid { unit: String, why: String },
}

/// A key this model does not act on (yet), with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub section: String,
    pub key: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: [{}] {}= is not supported yet and is ignored",
            self.line, self.section, self.key
        )
    }
}

/// One `Key=Value` line (after joining continuations), with the number of its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub line: usize,
    pub name: String,
    pub entries: Vec<Entry>,
}

/// Splits unit-file text into sections. `unit` names the file in error messages.
pub fn parse(unit: &str, text: &str) -> Result<Vec<Section>, UnitError> {
    let syntax = |line: usize, why: String| UnitError::Syntax {
        unit: unit.to_string(),
        line,
        why,
    };
    let mut sections: Vec<Section> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let raw = lines[i];
        i += 1;
        let trimmed = raw.trim();
        if pending.is_none() && (trimmed.is_empty() || trimmed.starts_with(['#', ';'])) {
            continue;
        }
        // A continuation may be interrupted by comment lines, as systemd allows.
        if pending.is_some() && trimmed.starts_with(['#', ';']) {
            continue;
        }
        let (start, mut logical) = match pending.take() {
            Some((start, mut acc)) => {
                acc.push(' ');
                acc.push_str(trimmed);
                (start, acc)
            }
            None => (number, trimmed.to_string()),
        };
        if logical.ends_with('\\') {
            logical.pop();
            let logical = logical.trim_end().to_string();
            if i < lines.len() {
                pending = Some((start, logical));
                continue;
            }
            // Backslash on the last line: keep what we have.
            pending = None;
            push_line(&mut sections, start, &logical, &syntax)?;
            continue;
        }
        push_line(&mut sections, start, &logical, &syntax)?;
    }
    Ok(sections)
}

fn push_line(
    sections: &mut Vec<Section>,
    line: usize,
    text: &str,
    syntax: &dyn Fn(usize, String) -> UnitError,
) -> Result<(), UnitError> {
    if let Some(rest) = text.strip_prefix('[') {
        let name = rest
            .strip_suffix(']')
            .ok_or_else(|| syntax(line, format!("section header {text:?} has no closing ]")))?;
        if name.is_empty() || name.contains(['[', ']']) {
            return Err(syntax(line, format!("invalid section header {text:?}")));
        }
        sections.push(Section {
            line,
            name: name.to_string(),
            entries: Vec::new(),
        });
        return Ok(());
    }
    let (key, value) = text.split_once('=').ok_or_else(|| {
        syntax(
            line,
            format!("expected Key=Value or [Section], found {text:?}"),
        )
    })?;
    let key = key.trim();
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(syntax(line, format!("invalid key {key:?}")));
    }
    let section = sections
        .last_mut()
        .ok_or_else(|| syntax(line, format!("{key}= appears before any [Section]")))?;
    section.entries.push(Entry {
        line,
        key: key.to_string(),
        value: value.trim().to_string(),
    });
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// Active as soon as the process is spawned.
    #[default]
    Simple,
    /// Active once the process exits with status 0.
    Oneshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    #[default]
    No,
    Always,
    OnFailure,
}

impl Restart {
    /// Whether a process that exited (`success` = status 0) is started again.
    pub fn applies(self, success: bool) -> bool {
        match self {
            Restart::No => false,
            Restart::Always => true,
            Restart::OnFailure => !success,
        }
    }
}

/// `ExecStart=` split into argv, with systemd's `-` prefix (failure is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    pub argv: Vec<String>,
    pub ignore_failure: bool,
}

/// A validated service unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unit {
    /// File name, e.g. `console-shell.service`.
    pub name: String,
    pub description: Option<String>,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub kind: ServiceType,
    pub exec_start: Command,
    pub restart: Restart,
    pub restart_ms: u64,
    /// `Environment=` assignments in order; later ones win when applied.
    pub environment: Vec<(String, String)>,
    pub wanted_by: Vec<String>,
}

impl Unit {
    /// Parses and validates a `.service` file. Unsupported keys come back as warnings.
    pub fn from_text(name: &str, text: &str) -> Result<(Unit, Vec<Warning>), UnitError> {
        let syntax = |line: usize, why: String| UnitError::Syntax {
            unit: name.to_string(),
            line,
            why,
        };
        if !name.ends_with(".service") {
            return Err(UnitError::Invalid {
                unit: name.to_string(),
                why: "only .service units are supported; rename the file to NAME.service".into(),
            });
        }
        let mut unit = Unit {
            name: name.to_string(),
            restart_ms: DEFAULT_RESTART_MS,
            ..Unit::default()
        };
        let mut warnings = Vec::new();
        let mut exec: Option<(usize, Command)> = None;
        for section in parse(name, text)? {
            for e in &section.entries {
                let v = e.value.as_str();
                match (section.name.as_str(), e.key.as_str()) {
                    ("Unit", "Description") => unit.description = Some(v.to_string()),
                    ("Unit", "After") => list(&mut unit.after, v),
                    ("Unit", "Requires") => list(&mut unit.requires, v),
                    ("Unit", "Wants") => list(&mut unit.wants, v),
                    ("Service", "Type") => {
                        unit.kind = match v {
                            "simple" | "exec" => ServiceType::Simple,
                            "oneshot" => ServiceType::Oneshot,
                            other => {
                                return Err(syntax(
                                    e.line,
                                    format!("Type={other} is not supported; use simple or oneshot"),
                                ))
                            }
                        }
                    }
                    ("Service", "ExecStart") => {
                        if v.is_empty() {
                            exec = None;
                            continue;
                        }
                        if let Some((first, _)) = exec {
                            return Err(syntax(
                                e.line,
                                format!("a second ExecStart= (first on line {first}); only one command is supported"),
                            ));
                        }
                        let (ignore_failure, cmd) = match v.strip_prefix('-') {
                            Some(rest) => (true, rest),
                            None => (false, v),
                        };
                        let argv = split_command(cmd).map_err(|why| syntax(e.line, why))?;
                        if argv.is_empty() {
                            return Err(syntax(e.line, "ExecStart= names no program".into()));
                        }
                        if !argv[0].starts_with('/') {
                            return Err(syntax(
                                e.line,
                                format!("ExecStart= program {:?} must be an absolute path", argv[0]),
                            ));
                        }
                        exec = Some((
                            e.line,
                            Command {
                                argv,
                                ignore_failure,
                            },
                        ));
                    }
                    ("Service", "Restart") => {
                        unit.restart = match v {
                            "no" => Restart::No,
                            "always" => Restart::Always,
                            "on-failure" => Restart::OnFailure,
                            other => {
                                return Err(syntax(
                                    e.line,
                                    format!("Restart={other} is not supported; use no, always or on-failure"),
                                ))
                            }
                        }
                    }
                    ("Service", "RestartSec") => {
                        unit.restart_ms = parse_duration_ms(v).ok_or_else(|| {
                            syntax(
                                e.line,
                                format!("RestartSec={v} is not a duration (examples: 5, 500ms, 2s, 1min)"),
                            )
                        })?
                    }
                    ("Service", "Environment") => {
                        if v.is_empty() {
                            unit.environment.clear();
                            continue;
                        }
                        for word in split_command(v).map_err(|why| syntax(e.line, why))? {
                            let (k, val) = word.split_once('=').ok_or_else(|| {
                                syntax(e.line, format!("Environment= word {word:?} is not NAME=VALUE"))
                            })?;
                            unit.environment.push((k.to_string(), val.to_string()));
                        }
                    }
                    ("Install", "WantedBy") => list(&mut unit.wanted_by, v),
                    (s, k) => warnings.push(Warning {
                        line: e.line,
                        section: s.to_string(),
                        key: k.to_string(),
                    }),
                }
            }
        }
        match exec {
            Some((_, cmd)) => unit.exec_start = cmd,
            None => {
                return Err(UnitError::Invalid {
                    unit: name.to_string(),
                    why: "[Service] has no ExecStart=; add the command to run".into(),
                })
            }
        }
        Ok((unit, warnings))
    }
}

/// Space-separated list values accumulate; an empty assignment resets the list (systemd rule).
fn list(into: &mut Vec<String>, value: &str) {
    if value.is_empty() {
        into.clear();
    }
    into.extend(value.split_whitespace().map(String::from));
}

/// `5`, `5s`, `500ms`, `1min`, `1min 30s`: systemd time spans (plain numbers are seconds).
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut any = false;
    for word in s.split_whitespace() {
        let digits = word.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = word[..digits].parse().ok()?;
        let scale = match &word[digits..] {
            "" | "s" | "sec" => 1000,
            "ms" | "msec" => 1,
            "m" | "min" => 60_000,
            "h" | "hr" => 3_600_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(scale)?)?;
        any = true;
    }
    any.then_some(total)
}

/// Splits a command line the way systemd does for `ExecStart=`: words separated by whitespace,
/// double or single quotes group words, backslash escapes the next character (and `\n`, `\t`).
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some(other) => word.push(other),
                    None => return Err("command ends with a lone backslash".into()),
                },
                (q @ ('"' | '\''), None) => quote = Some(q),
                (q, Some(open)) if q == open => {
                    quote = None;
                    // systemd requires whitespace after a closing quote
                    if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                        return Err(format!("closing quote {q} must be followed by a space"));
                    }
                }
                (c, None) if c.is_whitespace() => break,
                (c, _) => word.push(c),
            }
        }
        if let Some(q) = quote {
            return Err(format!("unterminated {q} quote in command"));
        }
        out.push(word);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SHELL: &str = "\
# a comment
; another
[Unit]
Description=Console shell
After=a.service \\
  b.service
Wants=c.service

[Service]
Type=simple
ExecStart=/bin/sh -c \"echo 'hi there'; exec sh\"
Restart=always
RestartSec=1s
Environment=A=1 \"B=two words\"
Environment=C=3
StandardInput=tty

[Install]
WantedBy=multi-user.target
";

    #[test]
    fn parses_a_service() {
        let (u, w) = Unit::from_text("console-shell.service", SHELL).unwrap();
        assert_eq!(u.description.as_deref(), Some("Console shell"));
        assert_eq!(u.after, ["a.service", "b.service"]);
        assert_eq!(u.wants, ["c.service"]);
        assert_eq!(u.kind, ServiceType::Simple);
        assert_eq!(
            u.exec_start.argv,
            ["/bin/sh", "-c", "echo 'hi there'; exec sh"]
        );
        assert_eq!(u.restart, Restart::Always);
        assert_eq!(u.restart_ms, 1000);
        assert_eq!(
            u.environment,
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "3".into())
            ]
        );
        assert_eq!(u.wanted_by, ["multi-user.target"]);
        assert_eq!(
            w,
            [Warning {
                line: 16,
                section: "Service".into(),
                key: "StandardInput".into()
            }]
        );
    }

    #[test]
    fn continuation_keeps_the_first_line_number() {
        let s = parse(
            "x.service",
            "[Unit]\nAfter=a \\\n# interrupting comment\n b\nBad line\n",
        );
        let e = s.unwrap_err();
        assert_eq!(
            e,
            UnitError::Syntax {
                unit: "x.service".into(),
                line: 5,
                why: "expected Key=Value or [Section], found \"Bad line\"".into()
            }
        );
        let s = parse("x.service", "[Unit]\nAfter=a \\\n# c\n b\n").unwrap();
        assert_eq!(s[0].entries[0].line, 2);
        assert_eq!(s[0].entries[0].value, "a b");
    }

    #[test]
    fn errors_name_unit_and_line() {
        for (text, line, needle) in [
            ("Key=1\n", 1, "before any [Section]"),
            ("[Unit\n", 1, "closing ]"),
            ("[Service]\nType=forking\n", 2, "Type=forking"),
            (
                "[Service]\nExecStart=/a\nExecStart=/b\n",
                3,
                "second ExecStart",
            ),
            ("[Service]\nExecStart=sh\n", 2, "absolute path"),
            ("[Service]\nExecStart=/bin/sh \"open\n", 2, "unterminated"),
            (
                "[Service]\nExecStart=/a\nRestartSec=soon\n",
                3,
                "RestartSec",
            ),
            (
                "[Service]\nExecStart=/a\nEnvironment=NOEQ\n",
                3,
                "NAME=VALUE",
            ),
        ] {
            match Unit::from_text("t.service", text) {
                Err(UnitError::Syntax { line: l, why, .. }) => {
                    assert_eq!(l, line, "{text}");
                    assert!(why.contains(needle), "{why} lacks {needle}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(matches!(
            Unit::from_text("t.service", "[Unit]\nDescription=x\n"),
            Err(UnitError::Invalid { .. })
        ));
        assert!(Unit::from_text("t.timer", "[Service]\nExecStart=/a\n").is_err());
    }

    #[test]
    fn empty_assignments_reset() {
        let (u, _) = Unit::from_text(
            "t.service",
            "[Unit]\nAfter=a\nAfter=\nAfter=b\n[Service]\nExecStart=/a\nExecStart=\nExecStart=-/b x\n",
        )
        .unwrap();
        assert_eq!(u.after, ["b"]);
        assert_eq!(u.exec_start.argv, ["/b", "x"]);
        assert!(u.exec_start.ignore_failure);
    }

    #[test]
    fn splits_commands_like_systemd() {
        assert_eq!(
            split_command("  /a  b\\ c 'd e' \"f\\\"g\"").unwrap(),
            ["/a", "b c", "d e", "f\"g"]
        );
        assert_eq!(split_command("").unwrap(), Vec::<String>::new());
        assert!(split_command("/a 'x'y").is_err());
        assert!(split_command("/a \\").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5"), Some(5000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("1min 30s"), Some(90_000));
        assert_eq!(parse_duration_ms(""), None);
        assert_eq!(parse_duration_ms("5 parsecs"), None);
    }

    #[test]
    fn restart_policy() {
        assert!(Restart::Always.applies(true));
        assert!(!Restart::OnFailure.applies(true));
        assert!(Restart::OnFailure.applies(false));
        assert!(!Restart::No.applies(false));
    }
}
