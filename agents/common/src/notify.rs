//! The sender side of systemd's notify protocol (`sd_notify(3)`): services started as
//! `Type=notify` tell the manager they are ready by sending `READY=1` to `$NOTIFY_SOCKET`, a
//! datagram socket given as a path or, with a leading `@`, an abstract name. init's receiver
//! (`crust-init`) and systemd accept the same messages.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;

#[derive(Debug, thiserror::Error)]
#[error("cannot notify the service manager at {socket}: {source}")]
pub struct NotifyError {
    pub socket: String,
    #[source]
    pub source: std::io::Error,
}

/// Sends `state` (newline-separated `VAR=VALUE` lines, such as `READY=1`) to `$NOTIFY_SOCKET`.
/// Returns `Ok(false)` when the variable is not set (the process was not started by a
/// service manager that wants to hear from it).
pub fn sd_notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => send_to(&socket, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the notify socket `socket` (a path, or `@name` for an abstract socket).
pub fn send_to(socket: &OsStr, state: &str) -> Result<(), NotifyError> {
    let err = |source| NotifyError {
        socket: socket.to_string_lossy().into_owned(),
        source,
    };
    let sock = UnixDatagram::unbound().map_err(err)?;
    let bytes = socket.as_encoded_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(err)?;
            sock.send_to_addr(state.as_bytes(), &addr).map_err(err)?;
        }
        None => {
            sock.send_to(state.as_bytes(), socket).map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        send_to(path.as_os_str(), "READY=1\nSTATUS=serving").expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("crust-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract name");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send_to(OsStr::new(&format!("@{name}")), "READY=1").expect("send");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_that_names_it() {
        let e = send_to(OsStr::new("/nonexistent/notify"), "READY=1").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/notify"), "{e}");
    }
}
