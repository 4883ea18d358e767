//! A minimal QMP client (QEMU Machine Protocol over the node's `qmp.sock`): enough for hard
//! resets and ACPI power-button presses.

use crate::error::{io, Error, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Connects, negotiates capabilities and runs one command; returns its `return` value.
pub fn execute(sock: &Path, command: &str) -> Result<Value> {
    let stream = UnixStream::connect(sock).map_err(io(format!(
        "connecting to QMP at {} (is the node running?)",
        sock.display()
    )))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io("setting a QMP timeout"))?;
    let mut w = stream.try_clone().map_err(io("cloning the QMP socket"))?;
    let mut r = BufReader::new(stream);
    read_reply(&mut r, true)?; // greeting
    let mut send = |cmd: &str| {
        writeln!(w, "{}", serde_json::json!({ "execute": cmd }))
            .map_err(io(format!("sending {cmd} to QMP")))
    };
    send("qmp_capabilities")?;
    read_reply(&mut r, false)?;
    send(command)?;
    read_reply(&mut r, false)
}

/// Reads lines until the greeting (`QMP`) or a `return`/`error`, skipping asynchronous events.
fn read_reply(r: &mut impl BufRead, greeting: bool) -> Result<Value> {
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).map_err(io("reading from QMP"))?;
        if n == 0 {
            return Err(Error::Invalid {
                what: "QMP",
                value: String::new(),
                reason: "QEMU closed the connection".into(),
            });
        }
        let v: Value = serde_json::from_str(&line).map_err(|source| Error::Json {
            what: "parsing a QMP message".into(),
            source,
        })?;
        if greeting && v.get("QMP").is_some() {
            return Ok(v);
        }
        if let Some(ret) = v.get("return") {
            return Ok(ret.clone());
        }
        if let Some(err) = v.get("error") {
            return Err(Error::Invalid {
                what: "QMP command",
                value: err.to_string(),
                reason: "QEMU refused it".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn replies_skip_events_and_report_errors() {
        let mut r = Cursor::new(
            b"{\"event\":\"RESET\"}\n{\"return\":{}}\n{\"error\":{\"class\":\"GenericError\",\"desc\":\"no\"}}\n".to_vec(),
        );
        assert_eq!(read_reply(&mut r, false).unwrap(), serde_json::json!({}));
        assert!(read_reply(&mut r, false)
            .unwrap_err()
            .to_string()
            .contains("GenericError"));
        assert!(read_reply(&mut r, false).is_err());
        let mut g = Cursor::new(b"{\"QMP\":{\"version\":{}}}\n".to_vec());
        assert!(read_reply(&mut g, true).unwrap().get("QMP").is_some());
    }
}
