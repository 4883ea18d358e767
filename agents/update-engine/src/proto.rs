//! The control protocol of `/run/crust/update-engine.sock`: one JSON request line, one JSON
//! response line (as init's socket). `crustctl update status|check|channel` is the client.

use serde::{Deserialize, Serialize};

pub const SOCKET: &str = "/run/crust/update-engine.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    Check,
    /// Show the channel, or switch to `set` (written to /etc/coreos/update.conf).
    Channel {
        set: Option<String>,
    },
}

/// What `crustctl update status` prints, field by field like `update_engine_client -status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// `UPDATE_STATUS_*`.
    pub current_operation: String,
    pub current_version: String,
    pub new_version: Option<String>,
    pub group: String,
    pub server: String,
    pub downloaded: u64,
    pub total: u64,
    pub last_error: Option<String>,
    /// The last status note (why nothing happened, what happened).
    pub note: String,
    /// Seconds until the next scheduled check, if one is scheduled.
    pub next_check_in: Option<u64>,
    /// Versions that failed to boot here and are never retried.
    pub failed_versions: Vec<String>,
    /// Boot assessment of this boot: `healthy`, `assessing` (a new slot on trial) or `failed`.
    /// locksmithd releases its reboot lock only once this says `healthy`.
    #[serde(default)]
    pub boot: String,
}

impl StatusView {
    pub fn render(&self) -> String {
        let mut s = format!(
            "CURRENT_OP={}\nCURRENT_VERSION={}\nNEW_VERSION={}\nGROUP={}\nSERVER={}\nPROGRESS={}/{}\n",
            self.current_operation,
            self.current_version,
            self.new_version.clone().unwrap_or_default(),
            self.group,
            self.server,
            self.downloaded,
            self.total
        );
        if let Some(e) = &self.last_error {
            s.push_str(&format!("LAST_ERROR={e}\n"));
        }
        if !self.note.is_empty() {
            s.push_str(&format!("NOTE={}\n", self.note));
        }
        if let Some(n) = self.next_check_in {
            s.push_str(&format!("NEXT_CHECK_IN={n}s\n"));
        }
        if !self.boot.is_empty() {
            s.push_str(&format!("BOOT={}\n", self.boot));
        }
        if !self.failed_versions.is_empty() {
            s.push_str(&format!(
                "FAILED_VERSIONS={}\n",
                self.failed_versions.join(",")
            ));
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Response {
    pub fn message(m: impl Into<String>) -> Response {
        Response {
            ok: true,
            error: None,
            status: None,
            message: Some(m.into()),
        }
    }
    pub fn error(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(e.into()),
            status: None,
            message: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_fields_fail() {
        for r in [
            Request::Status,
            Request::Check,
            Request::Channel {
                set: Some("beta".into()),
            },
            Request::Channel { set: None },
        ] {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
        assert_eq!(
            serde_json::to_string(&Request::Check).unwrap(),
            r#"{"verb":"check"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"verb":"reboot"}"#).is_err());
    }
}
