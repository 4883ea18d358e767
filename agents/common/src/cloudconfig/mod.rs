//! coreos-cloudinit's `#cloud-config`: the typed model, a validator with line-numbered
//! diagnostics, and the pure conversions coreos-cloudinit performed (drop-ins for etcd2, fleet,
//! flannel and locksmith, `/etc/coreos/update.conf`, `$private_ipv4` substitution,
//! `write_files` decoding).
//!
//! Reading a document:
//! 1. [`classify`] the user data by its first line: `#cloud-config`, a `#!` script, or empty.
//! 2. [`substitute`] the `$public_ipv4`-style variables over the whole text (in the guest).
//! 3. [`parse`] it: `Ok` only when there are no errors (warnings come along), so a caller that
//!    applies the `Ok` value never half-applies a broken document. [`validate`] gives every
//!    diagnostic for tools (`crust validate-config`, `crustctl cloud-config validate`).
//!
//! Positions come from a tree built over the YAML parser's events (see `yaml`), not from
//! serde: serde stops at the first error and cannot say where a key it ignored was, while a
//! validator must report every unknown key and every bad value with its line.

mod convert;
mod encoding;
mod model;
mod schema;
mod subst;
mod yaml;

pub use convert::{
    check_value, env_dropin, etcd2_dropin, flannel_dropin, flannel_options_env, fleet_dropin,
    generate, locksmith_dropin, systemd_quote, update_actions, update_conf, EnvKey, EnvSchema,
    Generated, GeneratedFile, ServiceDropIn, UnitAction, ValueKind, DROPIN_NAME, ETCD2, FLANNEL,
    FLANNEL_OPTIONS, FLEET, LOCKSMITH, UPDATE_CONF,
};
pub use encoding::{decode, user_data_bytes, DecodeError, MAX_DECODED};
pub use model::{
    CloudConfig, CoreOs, DropIn, Encoding, EtcHosts, Oem, RebootStrategy, Unit, UnitCommand,
    Update, User, WriteFile,
};
pub use subst::{substitute, Substitutions, VARIABLES};

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// The first line that marks a cloud-config.
pub const HEADER: &str = "#cloud-config";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding, at a 1-based line and column of the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `LINE:COL: severity: message`; prefix the file name for the compiler-style form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, self.severity, self.message
        )
    }
}

/// What kind of user data a text is, by its first line (as coreos-cloudinit decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserDataKind {
    CloudConfig,
    /// `#!`: run once as a program.
    Script,
    /// Nothing but whitespace: nothing to do.
    Empty,
    /// Anything else: refused.
    Unknown,
}

/// The first line without a UTF-8 byte-order mark and a DOS line ending.
fn first_line(text: &str) -> &str {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let line = text.split('\n').next().unwrap_or("");
    line.strip_suffix('\r').unwrap_or(line)
}

pub fn classify(text: &str) -> UserDataKind {
    let first = first_line(text);
    if first.trim_end() == HEADER {
        UserDataKind::CloudConfig
    } else if first.starts_with("#!") {
        UserDataKind::Script
    } else if text.trim_start_matches('\u{feff}').trim().is_empty() {
        UserDataKind::Empty
    } else {
        UserDataKind::Unknown
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ParseError {
    /// The data is a `#!` script; run it instead of parsing it.
    #[error("user data is a script (first line starts with #!), not a cloud-config")]
    Script,
    #[error("user data is empty; there is no cloud-config to apply")]
    Empty,
    #[error(
        "user data is neither a cloud-config nor a script: the first line is {first_line:?}; \
         start the file with #cloud-config (or #! for a script)"
    )]
    NotCloudConfig { first_line: String },
    /// The document has errors; all diagnostics (warnings too) are included, sorted by line.
    #[error("{}", summarize(.diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

fn summarize(diagnostics: &[Diagnostic]) -> String {
    let errors: Vec<&Diagnostic> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    match errors.as_slice() {
        [] => "cloud-config is invalid".to_string(),
        [one] => format!("cloud-config is invalid: {one}"),
        [first, rest @ ..] => format!(
            "cloud-config is invalid: {first} (and {} more error{})",
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ),
    }
}

impl ParseError {
    /// The diagnostics behind the error, for printing each on its own line.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ParseError::Invalid { diagnostics } => diagnostics,
            _ => &[],
        }
    }
}

/// The outcome of [`validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    pub kind: UserDataKind,
    /// Sorted by line, then column.
    pub diagnostics: Vec<Diagnostic>,
}

impl Validation {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, s: Severity) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == s).count()
    }

    pub fn is_ok(&self) -> bool {
        self.errors() == 0
    }

    /// The report both `crust validate-config` and `crustctl cloud-config validate` print: one
    /// `NAME:LINE:COL: severity: message` line per diagnostic, then `NAME: summary`.
    pub fn render(&self, name: &str) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let mut text = String::new();
        for d in &self.diagnostics {
            text.push_str(&format!("{name}:{d}\n"));
        }
        let summary = match self.kind {
            UserDataKind::Script => {
                "a user-data script (#!); it is run once as-is, not validated".to_string()
            }
            UserDataKind::Empty => "empty; it configures nothing".to_string(),
            UserDataKind::Unknown => "not a cloud-config".to_string(),
            UserDataKind::CloudConfig => match (self.errors(), self.warnings()) {
                (0, 0) => "valid cloud-config".to_string(),
                (0, w) => format!("valid cloud-config ({})", plural(w, "warning")),
                (e, 0) => format!("invalid cloud-config: {}", plural(e, "error")),
                (e, w) => format!(
                    "invalid cloud-config: {}, {}",
                    plural(e, "error"),
                    plural(w, "warning")
                ),
            },
        };
        text.push_str(&format!("{name}: {summary}\n"));
        text
    }
}

/// Parses and checks a cloud-config document. Never panics, whatever the input.
fn check(text: &str) -> (CloudConfig, Vec<Diagnostic>) {
    let (cfg, mut diags) = match yaml::parse(text) {
        Ok(root) => schema::check(root.as_ref()),
        Err(e) => (
            CloudConfig::default(),
            vec![Diagnostic {
                line: e.line,
                column: e.column,
                severity: Severity::Error,
                message: format!("YAML syntax: {}", e.message),
            }],
        ),
    };
    diags.sort_by_key(|d| (d.line, d.column));
    (cfg, diags)
}

/// Every diagnostic for `text`, whatever kind of user data it is. Scripts are not looked into
/// (their content is the user's program); empty and unknown data get one diagnostic at line 1.
pub fn validate(text: &str) -> Validation {
    let kind = classify(text);
    let diagnostics = match kind {
        UserDataKind::CloudConfig => check(text).1,
        UserDataKind::Script => Vec::new(),
        UserDataKind::Empty => vec![Diagnostic {
            line: 1,
            column: 1,
            severity: Severity::Warning,
            message: "the file is empty; it configures nothing".into(),
        }],
        UserDataKind::Unknown => vec![Diagnostic {
            line: 1,
            column: 1,
            severity: Severity::Error,
            message: format!(
                "the first line must be \"{HEADER}\" (a cloud-config) or start with \"#!\" \
                 (a script), found {:?}",
                first_line(text)
            ),
        }],
    };
    Validation { kind, diagnostics }
}

/// The fuzz-friendly entry point: a cloud-config's model and its warnings, or why it cannot be
/// used. `Ok` means no errors. Never panics.
pub fn parse(text: &str) -> Result<(CloudConfig, Vec<Diagnostic>), ParseError> {
    match classify(text) {
        UserDataKind::CloudConfig => {}
        UserDataKind::Script => return Err(ParseError::Script),
        UserDataKind::Empty => return Err(ParseError::Empty),
        UserDataKind::Unknown => {
            return Err(ParseError::NotCloudConfig {
                first_line: first_line(text).chars().take(80).collect(),
            })
        }
    }
    let (cfg, diags) = check(text);
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(ParseError::Invalid { diagnostics: diags });
    }
    Ok((cfg, diags))
}

impl WriteFile {
    /// The bytes to write (content decoded per `encoding`).
    pub fn decoded(&self) -> Result<Vec<u8>, DecodeError> {
        decode(&self.content, self.encoding)
    }

    /// The mode to create the file with: coreos-cloudinit's default is 0644.
    pub fn mode(&self) -> u32 {
        self.permissions.unwrap_or(0o644)
    }
}

#[cfg(test)]
mod tests;
