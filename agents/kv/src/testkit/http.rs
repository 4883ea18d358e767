//! A keep-alive HTTP/1.1 connection for load and fault tests. The agents' client
//! (`crust_common::http`) opens one connection per request, which would measure connection
//! set-up rather than the server, and has one fixed 30 s timeout, too long for a fault test.
//! Errors say whether the request may have reached the server: that decides whether a write's
//! outcome is unknown or it surely did not happen.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
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

/// One answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `X-Etcd-Index`, when present.
    pub etcd_index: Option<u64>,
    pub body: String,
}

/// A connection to one server, opened on first use and reopened after an error.
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
    ) -> Result<Reply, CallError> {
        let addr = self.addr;
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&addr, self.timeout)
                .map_err(|source| CallError::NotSent { addr, source })?;
            let setup = s
                .set_nodelay(true)
                .and_then(|()| s.set_read_timeout(Some(self.timeout)))
                .and_then(|()| s.set_write_timeout(Some(self.timeout)));
            setup.map_err(|source| CallError::NotSent { addr, source })?;
            self.stream = Some(BufReader::new(s));
        }
        match self.exchange(method, path, form) {
            Ok((reply, close)) => {
                if close {
                    // The server takes no further request on this connection.
                    self.stream = None;
                }
                Ok(reply)
            }
            Err(source) => {
                self.stream = None;
                Err(CallError::NoAnswer { addr, source })
            }
        }
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&str>,
    ) -> std::io::Result<(Reply, bool)> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(std::io::Error::other("not connected"));
        };
        let body = form.unwrap_or("");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if form.is_some() {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.get_mut().write_all(req.as_bytes())?;
        read_reply(stream, method == "HEAD")
    }
}

fn bad(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

fn read_reply(r: &mut BufReader<TcpStream>, head_only: bool) -> std::io::Result<(Reply, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before an answer",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    let mut etcd_index = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "x-etcd-index" => etcd_index = value.parse().ok(),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if head_only || status == 204 || status == 304 {
    } else if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("malformed chunk size"))?;
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
        close = true;
    }
    let reply = Reply {
        status,
        etcd_index,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    Ok((reply, close))
}
