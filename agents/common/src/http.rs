//! The one small HTTP/1.1 client of the agents: one request per connection, `Content-Length`
//! or chunked bodies, an optional `Range` start and form bodies. It serves update-engine
//! (channel servers), the kv client (etcd v2 API, watch streams) and cloud-config's metadata
//! sources. Plain `http://` only: the image's binary has a size budget, channel data is signed,
//! and etcd and metadata services are reached on local networks.
//!
//! [`Conn`] is the same client on a keep-alive connection, for load and fault tests (`crust
//! bench kv`, the kv fault harness): a connection per request would measure connection set-up
//! rather than the server, and its errors say whether a request may have reached the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("{0:?} is not an http://HOST[:PORT]/PATH URL")]
    Url(String),
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: malformed response: {why}")]
    Protocol { url: String, why: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, HttpError> {
        let err = || HttpError::Url(s.to_string());
        let rest = s.strip_prefix("http://").ok_or_else(err)?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| err())?),
            None => (hostport, 80),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(err());
        }
        Ok(Url {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// This URL with `rel` appended to its path (exactly one `/` between).
    pub fn join(&self, rel: &str) -> Url {
        let mut u = self.clone();
        u.path = format!(
            "{}/{}",
            self.path.trim_end_matches('/'),
            rel.trim_start_matches('/')
        );
        u
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

pub struct Response {
    pub status: u16,
    /// `Content-Length`, when given.
    pub length: Option<u64>,
    /// Start offset of a 206 response's `Content-Range`.
    pub range_start: Option<u64>,
    /// Total size from `Content-Range: bytes a-b/TOTAL`.
    pub total: Option<u64>,
    pub body: Box<dyn Read + Send>,
    /// Every header, names in lower case, in order.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Reads the whole body as text.
    pub fn text(mut self) -> std::io::Result<String> {
        let mut s = String::new();
        self.body.read_to_string(&mut s)?;
        Ok(s)
    }
}

/// The first of `headers` called `name` (lower case).
fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// GETs `url`, from byte `from` on when given.
pub fn get(url: &Url, from: Option<u64>) -> Result<Response, HttpError> {
    request("GET", url, from, None)
}

/// Sends `method` with an optional form body (`application/x-www-form-urlencoded`, as the etcd
/// v2 API takes it).
pub fn request(
    method: &str,
    url: &Url,
    from: Option<u64>,
    form: Option<&str>,
) -> Result<Response, HttpError> {
    request_with(method, url, from, form, &[], Some(TIMEOUT))
}

/// [`request`] with extra headers and a read timeout (`None` waits for ever: watches). A
/// `Content-Type` among `headers` is sent for the body instead of the form type.
pub fn request_with(
    method: &str,
    url: &Url,
    from: Option<u64>,
    form: Option<&str>,
    headers: &[(&str, &str)],
    read_timeout: Option<Duration>,
) -> Result<Response, HttpError> {
    let addr = format!("{}:{}", url.host, url.port);
    let conn = |source| HttpError::Connect {
        addr: addr.clone(),
        source,
    };
    let sa = addr
        .to_socket_addrs()
        .map_err(conn)?
        .next()
        .ok_or_else(|| {
            conn(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ))
        })?;
    let stream = TcpStream::connect_timeout(&sa, Duration::from_secs(10)).map_err(conn)?;
    let io = |source| HttpError::Io {
        url: url.to_string(),
        source,
    };
    stream.set_read_timeout(read_timeout).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: crust\r\nConnection: close\r\n",
        url.path, url.host
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(f) = from {
        req.push_str(&format!("Range: bytes={f}-\r\n"));
    }
    match form {
        Some(body) => {
            // A Content-Type among `headers` (a JSON body) replaces the form's.
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            }
            req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        }
        None => req.push_str("\r\n"),
    }
    std::io::Write::write_all(&mut &stream, req.as_bytes()).map_err(io)?;
    let mut r = BufReader::new(stream);
    let head = read_head(&mut r).map_err(|e| match e {
        HeadError::Io(source) => io(source),
        HeadError::Protocol(why) => HttpError::Protocol {
            url: url.to_string(),
            why,
        },
    })?;
    let body = head.body(method, r);
    Ok(Response {
        status: head.status,
        length: head.length,
        range_start: head.range_start,
        total: head.total,
        body,
        headers: head.headers,
    })
}

/// A response's status line and headers.
struct Head {
    status: u16,
    length: Option<u64>,
    chunked: bool,
    range_start: Option<u64>,
    total: Option<u64>,
    /// `Connection: close`: the server takes no further request on this connection.
    close: bool,
    headers: Vec<(String, String)>,
}

/// Where an answer's body ends.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    None,
    Chunked,
    Length(u64),
    /// When the server closes the connection.
    UntilClose,
}

impl Head {
    /// How the answer to `method` is framed. Some answers have no body whatever their headers
    /// say (RFC 9112 section 6.3).
    fn framing(&self, method: &str) -> Framing {
        match (self.chunked, self.length) {
            _ if method.eq_ignore_ascii_case("HEAD") => Framing::None,
            _ if matches!(self.status, 100..=199 | 204 | 304) => Framing::None,
            (true, _) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::UntilClose,
        }
    }

    /// The answer's body, read from `r` (what follows the head) as the head describes it.
    fn body<'r>(&self, method: &str, r: impl BufRead + Send + 'r) -> Box<dyn Read + Send + 'r> {
        match self.framing(method) {
            Framing::None => Box::new(std::io::empty()),
            Framing::Chunked => Box::new(Chunked::new(r)),
            Framing::Length(n) => Box::new(r.take(n)),
            Framing::UntilClose => Box::new(r),
        }
    }
}

enum HeadError {
    Io(std::io::Error),
    Protocol(String),
}

impl From<std::io::Error> for HeadError {
    fn from(e: std::io::Error) -> Self {
        HeadError::Io(e)
    }
}

fn read_head(r: &mut impl BufRead) -> Result<Head, HeadError> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(HeadError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before an answer",
        )));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| HeadError::Protocol(format!("status line {:?}", line.trim())))?;
    let mut head = Head {
        status,
        length: None,
        chunked: false,
        range_start: None,
        total: None,
        close: false,
        headers: Vec::new(),
    };
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(HeadError::Protocol("headers end early".into()));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => {
                head.length = Some(
                    v.parse()
                        .map_err(|_| HeadError::Protocol(format!("Content-Length {v:?}")))?,
                )
            }
            "transfer-encoding" if v.eq_ignore_ascii_case("chunked") => head.chunked = true,
            "transfer-encoding" if !v.eq_ignore_ascii_case("identity") => {
                return Err(HeadError::Protocol(format!(
                    "Transfer-Encoding {v} is not supported; serve files with a Content-Length"
                )))
            }
            "connection" => head.close = v.eq_ignore_ascii_case("close"),
            "content-range" => {
                // bytes START-END/TOTAL
                let spec = v.strip_prefix("bytes ").unwrap_or(v);
                if let Some((range, tot)) = spec.split_once('/') {
                    head.total = tot.parse().ok();
                    head.range_start = range.split_once('-').and_then(|(a, _)| a.parse().ok());
                }
            }
            _ => {}
        }
        head.headers.push((k, v.to_string()));
    }
    Ok(head)
}

/// Decodes a chunked body as it arrives (etcd streams watch events this way).
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                self.done = true;
                return Ok(0);
            }
            if line.trim().is_empty() {
                // The CRLF that ends the previous chunk.
                line.clear();
                if self.inner.read_line(&mut line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad chunk size {size:?}"),
                )
            })?;
            if self.left == 0 {
                // Trailers, if any, end with an empty line: read up to it so that a kept-alive
                // connection is ready for the next answer.
                loop {
                    line.clear();
                    if self.inner.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.done = true;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Why a [`Conn`] request failed: whether it may have reached the server decides whether a
/// write's outcome is unknown or it surely did not happen.
#[derive(Debug, Error)]
pub enum ConnError {
    /// The request was never sent: the server did not accept a connection.
    #[error("cannot connect to {addr}: {source}")]
    NotSent {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The request may have reached the server, but no complete answer came back.
    #[error("{addr}: no answer: {source}")]
    NoAnswer {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A whole answer on a [`Conn`].
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Every header, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// A keep-alive connection to one server, opened on first use and reopened after an error.
pub struct Conn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    /// `timeout` bounds connecting and each read and write.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        Conn {
            addr,
            timeout,
            stream: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `method path` with an optional form body and reads the whole answer.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&str>,
    ) -> Result<Reply, ConnError> {
        let addr = self.addr;
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&addr, self.timeout)
                .map_err(|source| ConnError::NotSent { addr, source })?;
            let setup = s
                .set_nodelay(true)
                .and_then(|()| s.set_read_timeout(Some(self.timeout)))
                .and_then(|()| s.set_write_timeout(Some(self.timeout)));
            setup.map_err(|source| ConnError::NotSent { addr, source })?;
            self.stream = Some(BufReader::new(s));
        }
        match self.exchange(method, path, form) {
            Ok((reply, close)) => {
                if close {
                    self.stream = None;
                }
                Ok(reply)
            }
            Err(source) => {
                self.stream = None;
                Err(ConnError::NoAnswer { addr, source })
            }
        }
    }

    /// One request and its whole answer; also whether the connection must be dropped.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&str>,
    ) -> std::io::Result<(Reply, bool)> {
        let Some(r) = self.stream.as_mut() else {
            return Err(std::io::Error::other("not connected"));
        };
        let body = form.unwrap_or("");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if form.is_some() {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        r.get_mut().write_all(req.as_bytes())?;
        let head = read_head(r).map_err(|e| match e {
            HeadError::Io(e) => e,
            HeadError::Protocol(why) => std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        })?;
        let mut bytes = Vec::new();
        head.body(method, &mut *r).read_to_end(&mut bytes)?;
        let framing = head.framing(method);
        if matches!(framing, Framing::Length(n) if (bytes.len() as u64) < n) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in the body",
            ));
        }
        let close = head.close || framing == Framing::UntilClose;
        let reply = Reply {
            status: head.status,
            headers: head.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        };
        Ok((reply, close))
    }
}

/// Percent-encodes a form value or query parameter (everything but unreserved characters).
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n".to_vec();
        let mut c = Chunked::new(std::io::Cursor::new(raw));
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello, world");
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://10.0.2.100:8080/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.2.100", 8080, "/")
        );
        assert_eq!(
            u.join("beta/metadata/timestamp.json").path,
            "/beta/metadata/timestamp.json"
        );
        let u = Url::parse("http://h").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(Url::parse("http://h/a/").unwrap().join("/b").path, "/a/b");
        assert_eq!(urlencode("{\"a\": [1]}"), "%7B%22a%22%3A%20%5B1%5D%7D");
        for bad in ["https://h/", "http://:80/", "http://h:x/", "ftp://h"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    /// Serves one canned answer per connection on 127.0.0.1 and hands back what it was sent.
    fn serve_once(answer: &'static str) -> (Url, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/v2/members", l.local_addr().unwrap())).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = vec![0u8; 4096];
            let n = s.read(&mut got).unwrap();
            std::io::Write::write_all(&mut s, answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&got[..n]).into_owned()
        });
        (url, t)
    }

    #[test]
    fn a_head_answer_has_no_body_whatever_its_length_says() {
        let (url, t) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n");
        let r = request_with("HEAD", &url, None, None, &[], Some(Duration::from_secs(5))).unwrap();
        assert_eq!(r.length, Some(50));
        assert_eq!(r.text().unwrap(), "");
        t.join().unwrap();
    }

    #[test]
    fn a_content_type_header_replaces_the_form_type() {
        let (url, t) = serve_once("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}");
        let body = r#"{"peerURLs":["http://127.0.0.1:2380"]}"#;
        let ct = [("Content-Type", "application/json")];
        let r = request_with(
            "POST",
            &url,
            None,
            Some(body),
            &ct,
            Some(Duration::from_secs(5)),
        );
        assert_eq!(r.unwrap().text().unwrap(), "{}");
        let sent = t.join().unwrap();
        assert!(
            sent.contains("Content-Type: application/json\r\n"),
            "{sent}"
        );
        assert!(!sent.contains("x-www-form-urlencoded"), "{sent}");
        assert!(sent.ends_with(body), "{sent}");
    }

    /// Answers each request on one kept-alive connection with the next of `answers`, reading
    /// a request as its head plus its `Content-Length` body.
    fn serve_kept_alive(
        answers: Vec<&'static str>,
    ) -> (SocketAddr, std::thread::JoinHandle<usize>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s);
            let mut served = 0;
            for answer in answers {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; length];
                r.read_exact(&mut body).unwrap();
                r.get_mut().write_all(answer.as_bytes()).unwrap();
                served += 1;
            }
            served
        });
        (addr, t)
    }

    #[test]
    fn a_kept_alive_connection_reads_each_answer_whole() {
        let (addr, t) = serve_kept_alive(vec![
            "HTTP/1.1 201 Created\r\nX-Etcd-Index: 7\r\nContent-Length: 5\r\n\r\nfirst",
            // Trailers after the last chunk are read too, or the next answer would not parse.
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\nX-T: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlast",
        ]);
        let mut c = Conn::new(addr, Duration::from_secs(5));
        let r = c.request("PUT", "/v2/keys/a", Some("value=1")).unwrap();
        assert_eq!((r.status, r.body.as_str()), (201, "first"));
        assert_eq!(r.header("x-etcd-index"), Some("7"));
        let r = c.request("GET", "/v2/keys/a", None).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "second"));
        let r = c.request("HEAD", "/v2/keys/a", None).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, ""));
        let r = c.request("GET", "/v2/keys/b", None).unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "last"));
        assert_eq!(t.join().unwrap(), 4);
    }

    #[test]
    fn a_connection_error_says_whether_the_request_may_have_arrived() {
        // Nobody listens: the request was surely not sent.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let e = Conn::new(addr, Duration::from_secs(5))
            .request("PUT", "/v2/keys/a", Some("value=1"))
            .unwrap_err();
        assert!(matches!(e, ConnError::NotSent { .. }), "{e}");
        // The server reads the request and closes without answering: it may have arrived.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).unwrap();
        });
        let e = Conn::new(addr, Duration::from_secs(5))
            .request("PUT", "/v2/keys/a", Some("value=1"))
            .unwrap_err();
        assert!(matches!(e, ConnError::NoAnswer { .. }), "{e}");
        t.join().unwrap();
    }
}
