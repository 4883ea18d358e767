//! Service logs: every service's stdout and stderr go through a pipe to PID 1, which stamps each
//! line and appends it to `/var/log/crust/UNIT.log` (on ROOT, so logs persist across boots).
//!
//! Format, one record per line: `REALTIME MONOTONIC UNIT: TEXT`, e.g.
//! `2026-11-24T23:22:03.123456Z 3.456 hello.service: hello` (RFC 3339 UTC; seconds since boot).
//! Size bound: a unit's file is rotated to `UNIT.log.1` when it passes [`MAX_BYTES`], so each
//! unit keeps at most twice that. Lines are also echoed to the console so the boot stays
//! readable in the serial log. `crustctl logs [-u UNIT] [-n N] [-f]` reads the files.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub const DIR: &str = "/var/log/crust";
/// Per file; one rotated copy is kept.
pub const MAX_BYTES: u64 = 1 << 20;
/// A line longer than this is cut (and the rest starts a new record).
const MAX_LINE: usize = 16 * 1024;

/// One record as written.
pub fn format_record(realtime_ns: i64, uptime_ms: u64, unit: &str, text: &str) -> String {
    format!(
        "{} {}.{:03} {unit}: {text}\n",
        crust_common::time::rfc3339_nano(realtime_ns),
        uptime_ms / 1000,
        uptime_ms % 1000
    )
}

struct Pipe {
    unit: String,
    fd: OwnedFd,
    partial: Vec<u8>,
}

/// The read ends of every service's output pipe.
pub struct Journal {
    dir: PathBuf,
    pipes: Vec<Pipe>,
    console: Option<fs::File>,
}

impl Journal {
    pub fn new(dir: &Path, console: Option<fs::File>) -> Journal {
        let _ = fs::create_dir_all(dir);
        Journal {
            dir: dir.to_path_buf(),
            pipes: Vec::new(),
            console,
        }
    }

    /// A new pipe for `unit`; the returned end becomes the process's stdout and stderr.
    pub fn pipe_for(&mut self, unit: &str) -> io::Result<fs::File> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(io::Error::from)?;
        // The writer is blocking for the service: only our end is non-blocking.
        let flags = nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(io::Error::from)?;
        let mut f = nix::fcntl::OFlag::from_bits_truncate(flags);
        f.remove(nix::fcntl::OFlag::O_NONBLOCK);
        nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(f))
            .map_err(io::Error::from)?;
        self.pipes.push(Pipe {
            unit: unit.to_string(),
            fd: r,
            partial: Vec::new(),
        });
        Ok(fs::File::from(w))
    }

    pub fn fds(&self) -> Vec<RawFd> {
        self.pipes.iter().map(|p| p.fd.as_raw_fd()).collect()
    }

    /// Reads what `fd` has, writes whole lines; drops the pipe at end of file.
    pub fn drain(&mut self, fd: RawFd) {
        let Some(i) = self.pipes.iter().position(|p| p.fd.as_raw_fd() == fd) else {
            return;
        };
        let mut buf = [0u8; 8192];
        let mut closed = false;
        loop {
            let mut file = match self.pipes[i].fd.try_clone() {
                Ok(f) => fs::File::from(f),
                Err(_) => break,
            };
            match file.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.pipes[i].partial.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let unit = self.pipes[i].unit.clone();
        let mut lines = Vec::new();
        {
            let p = &mut self.pipes[i].partial;
            while let Some(pos) = p.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = p.drain(..=pos).collect();
                lines.push(line[..line.len() - 1].to_vec());
            }
            while p.len() > MAX_LINE {
                lines.push(p.drain(..MAX_LINE).collect());
            }
            if closed && !p.is_empty() {
                lines.push(std::mem::take(p));
            }
        }
        for l in lines {
            self.append(&unit, &String::from_utf8_lossy(&l));
        }
        if closed {
            self.pipes.remove(i);
        }
    }

    fn append(&mut self, unit: &str, text: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let rec = format_record(now, crate::stage2::uptime_ms(), unit, text);
        let path = self.dir.join(format!("{unit}.log"));
        if fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_BYTES) {
            let _ = fs::rename(&path, self.dir.join(format!("{unit}.log.1")));
        }
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(&path) {
            let _ = f.write_all(rec.as_bytes());
        }
        if let Some(c) = &mut self.console {
            let _ = writeln!(c, "{unit}: {text}");
        }
    }
}

/// The last `n` records of `unit` (or of every unit, merged by time), oldest first.
pub fn tail(dir: &Path, unit: Option<&str>, n: usize) -> io::Result<Vec<String>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for e in fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let base = name.strip_suffix(".1").unwrap_or(&name);
        let Some(u) = base.strip_suffix(".log") else {
            continue;
        };
        if unit.is_none_or(|want| want == u) {
            files.push(e.path());
        }
    }
    let mut lines: Vec<String> = Vec::new();
    for f in files {
        if let Ok(text) = fs::read_to_string(&f) {
            lines.extend(text.lines().map(str::to_string));
        }
    }
    // Records start with an RFC 3339 UTC time, so text order is time order.
    lines.sort();
    let skip = lines.len().saturating_sub(n);
    Ok(lines.split_off(skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_pipes_rotation_and_tail() {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal::new(d.path(), None);
        let mut w = j.pipe_for("a.service").unwrap();
        w.write_all(b"one\ntwo\npart").unwrap();
        for fd in j.fds() {
            j.drain(fd);
        }
        w.write_all(b"ial\n").unwrap();
        drop(w);
        for fd in j.fds() {
            j.drain(fd);
        }
        assert!(j.fds().is_empty(), "closed pipes are dropped");
        let text = fs::read_to_string(d.path().join("a.service.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with(" a.service: one"), "{}", lines[0]);
        assert!(lines[2].ends_with(" a.service: partial"));
        let mut w = j.pipe_for("b.service").unwrap();
        w.write_all(b"bee\n").unwrap();
        drop(w);
        for fd in j.fds() {
            j.drain(fd);
        }
        assert_eq!(tail(d.path(), Some("a.service"), 2).unwrap().len(), 2);
        let all = tail(d.path(), None, 10).unwrap();
        assert_eq!(all.len(), 4);
        assert!(all[3].ends_with("b.service: bee"));
        // Rotation keeps the file bounded.
        fs::write(
            d.path().join("a.service.log"),
            vec![b'x'; MAX_BYTES as usize],
        )
        .unwrap();
        j.append("a.service", "after rotation");
        assert!(d.path().join("a.service.log.1").exists());
        assert!(fs::metadata(d.path().join("a.service.log")).unwrap().len() < 200);
        assert_eq!(
            format_record(0, 3456, "x.service", "hi"),
            "1970-01-01T00:00:00Z 3.456 x.service: hi\n"
        );
    }
}
