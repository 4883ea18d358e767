//! The one machine-readable line init prints on the console once every enabled unit is active.
//!
//! The host (`crust cluster up`) scans the serial log for it, so its format is a contract between
//! the image and the host tool: a fixed prefix followed by one JSON object on the same line.

use serde::{Deserialize, Serialize};

/// Prefix of the ready line; everything after it up to the end of the line is JSON.
pub const PREFIX: &str = "CRUST-READY ";

/// What a booted machine reports when it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// OS version from os-release (`VERSION_ID`).
    pub version: String,
    /// Slot the machine booted from: "a" or "b".
    pub slot: String,
    pub hostname: String,
    /// Units that were started and reached active.
    pub units: Vec<String>,
    /// Milliseconds since the kernel started (from /proc/uptime) when ready was reached.
    pub uptime_ms: u64,
}

impl Ready {
    /// The full console line, without a trailing newline.
    pub fn to_line(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string());
        format!("{PREFIX}{json}")
    }

    /// Finds a ready line in one line of console output. Console lines may carry carriage
    /// returns or kernel messages before the prefix, so the prefix is searched anywhere.
    pub fn from_line(line: &str) -> Option<Ready> {
        let at = line.find(PREFIX)?;
        let json = line[at + PREFIX.len()..].trim_end_matches(['\r', '\n']);
        serde_json::from_str(json).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_noisy_console_line() {
        let r = Ready {
            version: "1.0.0".into(),
            slot: "a".into(),
            hostname: "node0".into(),
            units: vec!["console-shell.service".into()],
            uptime_ms: 4200,
        };
        let line = format!("[    4.2] junk {}\r\n", r.to_line());
        assert_eq!(Ready::from_line(&line), Some(r));
        assert_eq!(Ready::from_line("CRUST-READY {not json"), None);
        assert_eq!(Ready::from_line("nothing here"), None);
    }
}
