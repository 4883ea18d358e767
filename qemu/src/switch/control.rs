//! The control protocol: one JSON request per line on `<cluster>/switch/control.sock`, one JSON
//! response line back. Several requests may share a connection.
//!
//! ```text
//! {"op":"status"}
//! {"op":"partition","sets":[[0],[1,2]]}
//! {"op":"isolate","node":1}
//! {"op":"loss","percent":20}
//! {"op":"delay","node":null,"ms":50}      node null: every frame
//! {"op":"heal"}
//! {"op":"shutdown"}
//! -> {"ok":true,"status":{...}} | {"ok":false,"error":"..."}
//! ```

use super::fabric::{Fabric, SwitchStatus};
use super::SwitchError;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Partition { sets: Vec<Vec<usize>> },
    Isolate { node: usize },
    Loss { percent: u8 },
    Delay { node: Option<usize>, ms: u32 },
    Heal,
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SwitchStatus>,
}

/// Applies one request line to the fabric; returns the response and whether the switch should
/// stop. Pure apart from the fabric it changes.
pub fn apply(fabric: &mut Fabric, line: &str) -> (Response, bool) {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            return (
                Response {
                    ok: false,
                    error: Some(format!("bad request {:?}: {e}", line.trim())),
                    status: None,
                },
                false,
            )
        }
    };
    let f = fabric.faults();
    let done = match &req {
        Request::Status | Request::Shutdown => Ok(()),
        Request::Partition { sets } => f.partition(sets),
        Request::Isolate { node } => f.isolate(*node),
        Request::Loss { percent } => f.set_loss(*percent),
        Request::Delay { node, ms } => f.set_delay(*node, *ms),
        Request::Heal => {
            f.heal();
            Ok(())
        }
    };
    let resp = match done {
        Ok(()) => Response {
            ok: true,
            error: None,
            status: Some(fabric.status()),
        },
        Err(e) => Response {
            ok: false,
            error: Some(e.to_string()),
            status: None,
        },
    };
    (resp, req == Request::Shutdown)
}

/// Sends one request to the switch whose control socket is `sock` and returns its status.
pub fn request(sock: &Path, req: &Request, timeout: Duration) -> Result<SwitchStatus, SwitchError> {
    let fail = |what: &str, e: std::io::Error| SwitchError::Control {
        sock: sock.to_path_buf(),
        detail: format!("{what}: {e}"),
    };
    let stream = UnixStream::connect(sock).map_err(|e| fail("connecting", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| fail("setting timeouts", e))?;
    let mut line = serde_json::to_string(req).map_err(|e| SwitchError::Control {
        sock: sock.to_path_buf(),
        detail: format!("encoding the request: {e}"),
    })?;
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .map_err(|e| fail("sending", e))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| fail("reading the answer", e))?;
    let resp: Response = serde_json::from_str(&answer).map_err(|e| SwitchError::Control {
        sock: sock.to_path_buf(),
        detail: format!("bad answer {:?}: {e}", answer.trim()),
    })?;
    match (resp.ok, resp.status) {
        (true, Some(s)) => Ok(s),
        _ => Err(SwitchError::Refused(
            resp.error.unwrap_or_else(|| "no reason given".into()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::{fabric::Port, node_ip, node_mac, subnet};

    #[test]
    fn request_lines() {
        let cases = [
            (r#"{"op":"status"}"#, Request::Status),
            (
                r#"{"op":"partition","sets":[[0],[1,2]]}"#,
                Request::Partition {
                    sets: vec![vec![0], vec![1, 2]],
                },
            ),
            (r#"{"op":"isolate","node":1}"#, Request::Isolate { node: 1 }),
            (
                r#"{"op":"loss","percent":20}"#,
                Request::Loss { percent: 20 },
            ),
            (
                r#"{"op":"delay","node":null,"ms":50}"#,
                Request::Delay { node: None, ms: 50 },
            ),
            (r#"{"op":"heal"}"#, Request::Heal),
            (r#"{"op":"shutdown"}"#, Request::Shutdown),
        ];
        for (line, want) in cases {
            assert_eq!(
                serde_json::from_str::<Request>(line).ok(),
                Some(want.clone()),
                "{line}"
            );
            assert_eq!(serde_json::to_string(&want).ok().as_deref(), Some(line));
        }
        for bad in [
            r#"{"op":"explode"}"#,
            r#"{"op":"isolate","node":1,"x":2}"#,
            "{",
            "",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn apply_changes_rules_and_reports_errors() {
        let ports: Vec<Port> = (0..3)
            .map(|i| Port {
                name: format!("node{i}"),
                mac: node_mac(i),
                ip: node_ip(i),
            })
            .collect();
        let mut f = Fabric::new(subnet(), &ports, 1);
        let (r, stop) = apply(&mut f, r#"{"op":"partition","sets":[[0],[1,2]]}"#);
        assert!(r.ok && !stop, "{r:?}");
        let rules = r.status.expect("status").rules;
        assert_eq!(rules.partition, Some(vec![vec![0], vec![1, 2]]));
        let (r, _) = apply(&mut f, r#"{"op":"isolate","node":3}"#);
        assert!(!r.ok);
        assert!(r.error.expect("error").contains("out of range"));
        let (r, _) = apply(&mut f, "nonsense");
        assert!(!r.ok);
        let (r, _) = apply(&mut f, r#"{"op":"heal"}"#);
        assert_eq!(r.status.expect("status").rules.partition, None);
        let (r, stop) = apply(&mut f, r#"{"op":"shutdown"}"#);
        assert!(r.ok && stop);
        let text = serde_json::to_string(&apply(&mut f, r#"{"op":"status"}"#).0).expect("json");
        assert!(
            text.starts_with(r#"{"ok":true,"status":{"mac":"02:00:00:00:00:fe","ip":"10.0.0.254""#),
            "{text}"
        );
    }
}
