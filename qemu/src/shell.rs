//! Running commands in the guest through its console shell.
//!
//! The image runs a root shell on `/dev/hvc0`, a virtconsole port that QEMU connects to the unix
//! socket `shell.sock`. The host writes one framed command and reads until an end marker:
//!
//! ```text
//! printf 'CRUST-%s-B\n' ID; { CMD
//! } </dev/null 2>&1; printf 'CRUST-%s-E:%d\n' ID "$?"
//! ```
//!
//! The markers are assembled by `printf`, so the terminal echo of the command line (the literal
//! text `CRUST-%s-B ... ID`) never matches them; prompts, echo and output of earlier commands
//! all come before the begin marker and are dropped. Standard input is `/dev/null` so a command
//! cannot swallow the rest of the frame, and standard error is merged into the output because a
//! terminal has only one stream.

use crate::error::{Error, Result};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The canonical-mode terminal line limit is 4095 bytes; stay clear of it.
const MAX_LINE: usize = 3500;

/// What a command printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// `$?` of the command.
    pub status: i32,
    /// Standard output and standard error, interleaved as on a terminal, `\r` removed.
    pub stdout: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// The bytes to write for `cmd`, or why it cannot be sent through a terminal.
pub fn frame(cmd: &str, id: &str) -> std::result::Result<String, String> {
    if cmd.trim().is_empty() {
        return Err("empty command".into());
    }
    if let Some(c) = cmd
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
    {
        // The terminal would act on these (^C, ^D, ^U...) instead of passing them on.
        return Err(format!("control character {:?} in command", c));
    }
    if cmd.lines().any(|l| l.len() > MAX_LINE) {
        return Err(format!("a line is longer than {MAX_LINE} bytes"));
    }
    Ok(format!(
        "printf 'CRUST-%s-B\\n' {id}; {{ {cmd}\n}} </dev/null 2>&1; printf 'CRUST-%s-E:%d\\n' {id} \"$?\"\n"
    ))
}

/// A no-op that only prints a marker; safe to send again and again until the shell answers.
pub fn probe_frame(id: &str) -> String {
    format!("printf 'CRUST-%s-P\\n' {id}\n")
}

/// How long to wait for one probe answer before sending another.
const PROBE_WAIT: Duration = Duration::from_millis(1500);

/// Progress of reading a framed command's output.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The begin marker has not arrived yet.
    NotStarted,
    /// Running: output so far, not yet ended.
    Running,
    Done(ExecOutput),
}

/// Looks for the framed output of command `id` in everything read so far.
pub fn parse(buf: &[u8], id: &str) -> Parsed {
    let text = String::from_utf8_lossy(buf).replace('\r', "");
    let begin = format!("CRUST-{id}-B\n");
    let Some(b) = text.find(&begin) else {
        return Parsed::NotStarted;
    };
    let body = &text[b + begin.len()..];
    let end = format!("CRUST-{id}-E:");
    let Some(e) = body.find(&end) else {
        return Parsed::Running;
    };
    let rest = &body[e + end.len()..];
    let Some(nl) = rest.find('\n') else {
        return Parsed::Running;
    };
    match rest[..nl].trim().parse::<i32>() {
        Ok(status) => Parsed::Done(ExecOutput {
            status,
            stdout: body[..e].to_string(),
        }),
        Err(_) => Parsed::Running,
    }
}

/// A connection to one node's shell socket, made on first use and remade when QEMU restarted.
#[derive(Debug)]
pub struct Shell {
    node: String,
    path: PathBuf,
    conn: Option<UnixStream>,
    counter: u64,
}

impl Shell {
    pub fn new(node: String, path: PathBuf) -> Self {
        Shell {
            node,
            path,
            conn: None,
            counter: 0,
        }
    }

    /// Forgets the connection (after QEMU was restarted).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    fn next_id(&mut self) -> String {
        self.counter += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{:x}x{:x}x{:x}", std::process::id(), nanos, self.counter)
    }

    fn connect(&mut self) -> Result<&mut UnixStream> {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.path).map_err(crate::error::io(format!(
                "connecting to the shell of {} at {} (is the node running?)",
                self.node,
                self.path.display()
            )))?;
            self.conn = Some(s);
        }
        match self.conn.as_mut() {
            Some(s) => Ok(s),
            None => unreachable!("connection was just set"),
        }
    }

    /// Writes `bytes`, reconnecting once if the old connection is dead (QEMU restarted).
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        for attempt in 0..2 {
            let s = self.connect()?;
            match s.write_all(bytes).and_then(|_| s.flush()) {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 0 && is_disconnect(&e) => self.conn = None,
                Err(e) => {
                    self.conn = None;
                    return Err(crate::error::io(format!(
                        "writing to the shell of {}",
                        self.node
                    ))(e));
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Types `cmd` into the shell without waiting for it (for commands that do not return,
    /// such as a reboot).
    pub fn send(&mut self, cmd: &str) -> Result<()> {
        self.handshake(cmd, Instant::now() + Duration::from_secs(30))?;
        let line = frame(cmd, &self.next_id()).map_err(|reason| Error::Invalid {
            what: "command",
            value: cmd.into(),
            reason,
        })?;
        self.write_all(line.as_bytes())
    }

    /// Waits until a shell reads and answers on the port. Input written while no guest process
    /// has the console open (early boot, between a reboot and the shell's start) is discarded
    /// by the guest kernel, so a command is only sent after a harmless probe came back.
    fn handshake(&mut self, cmd: &str, deadline: Instant) -> Result<()> {
        loop {
            let id = self.next_id();
            self.write_all(probe_frame(&id).as_bytes())?;
            let want = format!("CRUST-{id}-P\n");
            let probe_deadline = (Instant::now() + PROBE_WAIT).min(deadline);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::ExecTimeout {
                        node: self.node.clone(),
                        secs: 0,
                        cmd: format!("(no shell answered on the console port) {cmd}"),
                    });
                }
                if now >= probe_deadline {
                    break;
                }
                let s = self.connect()?;
                s.set_read_timeout(Some((probe_deadline - now).max(Duration::from_millis(1))))
                    .map_err(crate::error::io("setting a socket timeout"))?;
                match s.read(&mut chunk) {
                    Ok(0) => {
                        self.conn = None;
                        break;
                    }
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if String::from_utf8_lossy(&buf)
                            .replace('\r', "")
                            .contains(&want)
                        {
                            return Ok(());
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        self.conn = None;
                        return Err(crate::error::io(format!(
                            "reading from the shell of {}",
                            self.node
                        ))(e));
                    }
                }
            }
        }
    }

    /// Runs `cmd` and waits up to `timeout` for it to finish.
    pub fn exec(&mut self, cmd: &str, timeout: Duration) -> Result<ExecOutput> {
        let deadline = Instant::now() + timeout;
        self.handshake(cmd, deadline)?;
        let mut resent = false;
        'send: loop {
            let id = self.next_id();
            let line = frame(cmd, &id).map_err(|reason| Error::Invalid {
                what: "command",
                value: cmd.into(),
                reason,
            })?;
            self.write_all(line.as_bytes())?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::ExecTimeout {
                        node: self.node.clone(),
                        secs: timeout.as_secs(),
                        cmd: cmd.into(),
                    });
                }
                let s = self.connect()?;
                s.set_read_timeout(Some((deadline - now).min(Duration::from_millis(500))))
                    .map_err(crate::error::io("setting a socket timeout"))?;
                match s.read(&mut chunk) {
                    Ok(0) => {
                        self.conn = None;
                        // QEMU went away before our command started: it never ran, so one
                        // resend on a fresh connection is safe.
                        if !resent && parse(&buf, &id) == Parsed::NotStarted {
                            resent = true;
                            continue 'send;
                        }
                        return Err(Error::ShellClosed {
                            node: self.node.clone(),
                            cmd: cmd.into(),
                        });
                    }
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if let Parsed::Done(out) = parse(&buf, &id) {
                            return Ok(out);
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.conn = None;
                        return Err(crate::error::io(format!(
                            "reading from the shell of {}",
                            self.node
                        ))(e));
                    }
                }
            }
        }
    }
}

fn is_disconnect(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_hides_markers_from_echo() {
        let f = frame("uname -r", "abc").expect("valid");
        assert!(!f.contains("CRUST-abc-B"));
        assert!(!f.contains("CRUST-abc-E"));
        assert!(f.ends_with('\n'));
        assert!(f.contains("{ uname -r\n}"), "{f}");
        assert!(frame("  ", "x").is_err());
        assert!(frame("a\x03b", "x").is_err());
        assert!(frame(&"x".repeat(4000), "x").is_err());
        assert!(frame("a\n\tb", "x").is_ok());
    }

    #[test]
    fn parse_through_echo_prompt_and_crlf() {
        let id = "1x2x3";
        let echo = frame("ls /", id).expect("valid").replace('\n', "\r\n");
        let mut buf = format!("old output\r\n# {echo}").into_bytes();
        assert_eq!(parse(&buf, id), Parsed::NotStarted);
        buf.extend_from_slice(b"CRUST-1x2x3-B\r\nbin\r\nusr\r\n");
        assert_eq!(parse(&buf, id), Parsed::Running);
        buf.extend_from_slice(b"CRUST-1x2x3-E:1");
        assert_eq!(parse(&buf, id), Parsed::Running, "status not complete yet");
        buf.extend_from_slice(b"27\r\n# ");
        assert_eq!(
            parse(&buf, id),
            Parsed::Done(ExecOutput {
                status: 127,
                stdout: "bin\nusr\n".into()
            })
        );
    }

    #[test]
    fn parse_output_without_trailing_newline_and_other_ids() {
        let buf = b"CRUST-old-B\nx\nCRUST-old-E:0\nCRUST-new-B\nno newlineCRUST-new-E:0\n";
        assert_eq!(
            parse(buf, "new"),
            Parsed::Done(ExecOutput {
                status: 0,
                stdout: "no newline".into()
            })
        );
    }

    #[test]
    fn exec_against_a_fake_shell() {
        use std::io::BufRead;
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("shell.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        // A stand-in for the guest: runs each frame with the host's sh, echoing like a tty.
        let guest = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            let mut reader = std::io::BufReader::new(conn.try_clone().expect("clone"));
            let mut w = conn;
            let mut commands = 0;
            while commands < 2 {
                let mut frame = String::new();
                reader.read_line(&mut frame).expect("read");
                if !frame.starts_with("printf 'CRUST-%s-P") {
                    reader.read_line(&mut frame).expect("read");
                    commands += 1;
                }
                w.write_all(format!("# {}", frame.replace('\n', "\r\n")).as_bytes())
                    .expect("echo");
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&frame)
                    .output()
                    .expect("sh");
                w.write_all(&out.stdout).expect("write");
            }
        });
        let mut shell = Shell::new("node0".into(), sock);
        let out = shell
            .exec("echo hi; echo err >&2; false", Duration::from_secs(10))
            .expect("exec");
        assert_eq!(out.status, 1);
        assert_eq!(out.stdout, "hi\nerr\n");
        let out = shell
            .exec("printf %s x", Duration::from_secs(10))
            .expect("exec");
        assert_eq!(
            out,
            ExecOutput {
                status: 0,
                stdout: "x".into()
            }
        );
        guest.join().expect("guest");
        // The fake guest hung up: the command cannot run.
        assert!(shell.exec("true", Duration::from_secs(2)).is_err());
    }
}
