//! Unit files (systemd syntax): the parser, the validated model, specifiers, templates and the
//! drop-in/precedence rules of the unit directories.
//!
//! Layers, each usable alone:
//! - [`parse`]: text -> sections of `Key=Value` entries with line numbers (no meaning attached);
//!   total on any input, so it can be fuzzed.
//! - [`Unit::from_sources`]: a unit file plus its drop-ins -> a validated [`Unit`]. Values that
//!   are wrong are errors with file and line; keys this model does not know are [`Warning`]s
//!   and the unit still loads, as systemd does.
//! - [`Lookup::load`] over a [`UnitTree`]: which file and drop-ins apply to a name (precedence
//!   `/etc` > `/run` > `/usr/lib`, masks, templates, `.wants/` links), with no I/O;
//!   [`UnitTree::read`] takes the snapshot from disk.

mod command;
mod load;
mod model;
mod specifier;
mod syntax;
mod value;

pub use command::{
    is_env_name, parse_command_line, parse_command_line_with, split_words, Command, Privileges,
    Word,
};
pub use load::{host_from_system, Loaded, LoadedUnit, Lookup, Node, UnitTree, SYSTEM_DIRS};
pub use model::{
    conditions_met, Check, Condition, KillMode, OptionalPath, Restart, ServiceType, Source,
    Termination, Unit, UnitType, DEFAULT_RESTART_MS, DEFAULT_TIMEOUT_MS,
};
pub use specifier::{escape, expand, unescape, Host, UnitName};
pub use syntax::{parse, Entry, Section, SyntaxError};
pub use value::{
    parse_bool, parse_env_file, parse_environment, parse_environment_with, parse_rlimit,
    parse_timespan_ms, RLimit,
};

use std::fmt;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    /// A line that cannot be parsed or a value that is wrong; `unit` is the file it is in.
    #[error("{unit}:{line}: {why}")]
    Syntax {
        unit: String,
        line: usize,
        why: String,
    },
    /// A problem with the unit as a whole (its name, a missing ExecStart=).
    #[error("{unit}: {why}")]
    Invalid { unit: String, why: String },
}

/// Something the unit loads despite: an unknown key or section, an unsupported condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file it is in (the unit file or a drop-in).
    pub file: String,
    pub line: usize,
    pub why: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.why)
    }
}

#[cfg(test)]
mod tests;
