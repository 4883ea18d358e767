//! `crust serve DIR`: a static HTTP/1.1 file server for channel repositories, with `HEAD` and
//! single-range `Range` requests (update-engine resumes downloads with them). Listens on
//! 127.0.0.1 unless told otherwise; guests reach it through QEMU's `guestfwd`.
//!
//! Deliberately small: one thread per connection, one request per connection, GET and HEAD only,
//! paths confined to DIR.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Directory to serve (a `crust publish --repo` directory).
    pub dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
}

/// A running server; dropping it stops accepting connections.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts serving `dir` on `addr` (port 0 picks a free port) in a background thread.
pub fn start(dir: &Path, addr: SocketAddr) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let dir = dir.to_path_buf();
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if s.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(c) = conn {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let _ = handle(&dir, c);
                });
            }
        }
    });
    Ok(Server {
        addr,
        stop,
        thread: Some(thread),
    })
}

pub fn run(args: &ServeArgs) -> std::io::Result<()> {
    let server = start(&args.dir, args.addr)?;
    eprintln!(
        "serving {} on http://{}/ (Ctrl-C stops)",
        args.dir.display(),
        server.addr
    );
    if let Some(t) = &server.thread {
        while !t.is_finished() {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    Ok(())
}

/// The file a request path names, or None when it would leave `dir`.
pub fn resolve(dir: &Path, url_path: &str) -> Option<PathBuf> {
    let path = url_path.split(['?', '#']).next().unwrap_or("");
    let mut out = dir.to_path_buf();
    for part in Path::new(path.trim_start_matches('/')).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// A parsed `Range: bytes=...` header against a file of `len` bytes: `Ok(None)` for no range,
/// `Err(())` when unsatisfiable.
#[allow(clippy::result_unit_err)]
pub fn parse_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    // Several ranges: serve the whole file, which RFC 9110 allows.
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| ());
    let (start, end) = if a.trim().is_empty() {
        let n = num(b)?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
    } else {
        let s = num(a)?;
        let e = if b.trim().is_empty() {
            len.saturating_sub(1)
        } else {
            num(b)?.min(len.saturating_sub(1))
        };
        (s, e)
    };
    if start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn handle(dir: &Path, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let mut out = stream;
    let head = method == "HEAD";
    if method != "GET" && !head {
        return respond(
            &mut out,
            "405 Method Not Allowed",
            &[("Allow", "GET, HEAD".into())],
            b"only GET and HEAD\n",
            false,
        );
    }
    let file = resolve(dir, target).filter(|p| p.is_file());
    let Some(path) = file else {
        return respond(&mut out, "404 Not Found", &[], b"not found\n", head);
    };
    let mut f = std::fs::File::open(&path)?;
    let len = f.metadata()?.len();
    match parse_range(range.as_deref(), len) {
        Err(()) => respond(
            &mut out,
            "416 Range Not Satisfiable",
            &[("Content-Range", format!("bytes */{len}"))],
            b"",
            head,
        ),
        Ok(None) => {
            write_head(
                &mut out,
                "200 OK",
                &[
                    ("Content-Length", len.to_string()),
                    ("Accept-Ranges", "bytes".into()),
                ],
            )?;
            if !head {
                std::io::copy(&mut f, &mut out)?;
            }
            out.flush()
        }
        Ok(Some((start, end))) => {
            let n = end - start + 1;
            write_head(
                &mut out,
                "206 Partial Content",
                &[
                    ("Content-Length", n.to_string()),
                    ("Content-Range", format!("bytes {start}-{end}/{len}")),
                    ("Accept-Ranges", "bytes".into()),
                ],
            )?;
            if !head {
                f.seek(SeekFrom::Start(start))?;
                std::io::copy(&mut f.take(n), &mut out)?;
            }
            out.flush()
        }
    }
}

fn write_head(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut h = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n"
    );
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    out.write_all(h.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    let mut hs = headers.to_vec();
    hs.push(("Content-Length", body.len().to_string()));
    write_head(out, status, &hs)?;
    if !head {
        out.write_all(body)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=2-4"), 10), Ok(Some((2, 4))));
        assert_eq!(parse_range(Some("bytes=7-"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=x-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(resolve(Path::new("/r"), "/a/../../etc/passwd"), None);
        assert_eq!(
            resolve(Path::new("/r"), "/a/b.json?x=1"),
            Some(PathBuf::from("/r/a/b.json"))
        );
    }

    #[test]
    fn serves_get_head_and_ranges_on_loopback() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("m")).unwrap();
        std::fs::write(t.path().join("m/f.bin"), b"0123456789").unwrap();
        let s = start(t.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let r = get(s.addr, "GET /m/f.bin HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\n0123456789"),
            "{r}"
        );
        let r = get(s.addr, "GET /m/f.bin HTTP/1.1\r\nRange: bytes=3-5\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 206")
                && r.contains("Content-Range: bytes 3-5/10")
                && r.ends_with("\r\n\r\n345"),
            "{r}"
        );
        let r = get(s.addr, "HEAD /m/f.bin HTTP/1.1\r\n\r\n");
        assert!(
            r.contains("Content-Length: 10") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = get(s.addr, "GET /m/f.bin HTTP/1.1\r\nRange: bytes=20-\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 416"), "{r}");
        let r = get(s.addr, "GET /../x HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get(s.addr, "POST /m/f.bin HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    }
}
