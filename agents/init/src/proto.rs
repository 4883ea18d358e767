//! The control socket protocol (`/run/crust/init.sock`): the client writes one JSON request line,
//! init answers with one JSON response line and closes the connection. See README.md.

use crate::manager::UnitStatus;
use serde::{Deserialize, Serialize};

pub const SOCKET: &str = "/run/crust/init.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    ListUnits,
    Poweroff,
    Reboot,
    /// Loads the unit (from the unit directories, if not loaded yet) and queues its start.
    Start {
        unit: String,
    },
    Stop {
        unit: String,
    },
    Restart {
        unit: String,
    },
    /// Runs the unit's ExecReload=.
    Reload {
        unit: String,
    },
    /// Re-reads the definitions of loaded units (new units load on demand at `start`).
    DaemonReload,
    /// Answers with `active_state`.
    IsActive {
        unit: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Vec<UnitStatus>>,
    /// systemd's active state of the unit an `is-active` asked about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub slot: String,
    pub hostname: String,
    /// Every enabled unit reached active and the boot was blessed.
    pub ready: bool,
    pub uptime_ms: u64,
    /// "running" or "stopping".
    pub state: String,
}

impl Response {
    pub fn error(why: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(why.into()),
            ..Response::default()
        }
    }
}

/// Parses one request line; the error text goes back to the client.
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line.trim()).map_err(|e| {
        format!("bad request ({e}); send one line like {{\"cmd\":\"list-units\"}} (status, list-units, poweroff, reboot, start, stop, restart, daemon-reload, is-active)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_ones_are_refused() {
        for (r, line) in [
            (Request::Status, r#"{"cmd":"status"}"#),
            (Request::ListUnits, r#"{"cmd":"list-units"}"#),
            (Request::Poweroff, r#"{"cmd":"poweroff"}"#),
            (Request::Reboot, r#"{"cmd":"reboot"}"#),
        ] {
            assert_eq!(serde_json::to_string(&r).unwrap(), line);
            assert_eq!(parse_request(&format!("{line}\n")), Ok(r));
        }
        assert!(parse_request(r#"{"cmd":"halt"}"#)
            .unwrap_err()
            .contains("list-units"));
        assert!(parse_request("garbage").is_err());
    }

    #[test]
    fn responses_omit_empty_parts() {
        let r = Response::error("nope");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ok":false,"error":"nope"}"#
        );
        let back: Response = serde_json::from_str(
            r#"{"ok":true,"units":[{"name":"a.service","state":"active","pid":3}]}"#,
        )
        .unwrap();
        assert_eq!(back.units.unwrap()[0].pid, Some(3));
    }
}
