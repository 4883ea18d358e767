#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing
//! The real clients against crust kv: Debian's etcdctl (3.4, ETCDCTL_API=2), and Debian's etcd
//! (3.4 with --enable-v2) answering the same requests side by side. Both packages are installed
//! with apt when missing (as root on Debian/Ubuntu, like other host tools); elsewhere the tests
//! say what to install and stop there.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ensure(program: &str, package: &str) -> bool {
    let found = |p: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if found(program) {
        return true;
    }
    let root = nix_is_root();
    if root && std::path::Path::new("/usr/bin/apt-get").exists() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
    }
    if found(program) {
        return true;
    }
    eprintln!("skipping: {program} is missing; install it with `apt-get install {package}`");
    false
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .output()
        .unwrap()
}

fn ok(endpoint: &str, args: &[&str]) -> String {
    let o = etcdctl(endpoint, args);
    assert!(
        o.status.success(),
        "etcdctl {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn server() -> crust_kv::local::Server {
    crust_kv::local::spawn_thread("127.0.0.1:0", "ctl").unwrap()
}

#[test]
fn etcdctl_v2_verbs_work() {
    if !ensure("etcdctl", "etcd-client") {
        return;
    }
    let srv = server();
    let e = format!("http://{}", srv.addr);
    let e = e.as_str();
    assert_eq!(ok(e, &["set", "/a", "1"]), "1\n");
    assert_eq!(ok(e, &["get", "/a"]), "1\n");
    assert_eq!(ok(e, &["mk", "/b", "2"]), "2\n");
    let o = etcdctl(e, &["mk", "/b", "3"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("105: Key already exists (/b)"));
    ok(e, &["mkdir", "/d"]);
    ok(e, &["set", "/d/x", "y"]);
    assert_eq!(ok(e, &["ls", "-r", "/"]), "/a\n/b\n/d\n/d/x\n");
    assert_eq!(ok(e, &["update", "/a", "5"]), "5\n");
    let o = etcdctl(e, &["rmdir", "/d"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("108: Directory not empty"));
    ok(e, &["rm", "/d/x"]);
    ok(e, &["rmdir", "/d"]);
    ok(e, &["rm", "/a"]);
    assert_eq!(etcdctl(e, &["get", "/a"]).status.code(), Some(4));
    // watch returns the next change; exec-watch runs a command per change.
    let ep = e.to_string();
    let w = std::thread::spawn(move || ok(&ep, &["watch", "/w"]));
    std::thread::sleep(Duration::from_millis(500));
    ok(e, &["set", "/w", "changed"]);
    assert_eq!(w.join().unwrap(), "changed\n");
    let mut ew = Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        // etcdctl 3.4 drops `--` while parsing, then takes the last argument as the key.
        .args([
            "--endpoints",
            e,
            "exec-watch",
            "sh",
            "-c",
            "echo \"$ETCD_WATCH_ACTION $ETCD_WATCH_VALUE\"",
            "/ew",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ok(e, &["set", "/ew", "v1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut stdout = ew.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let n = stdout.read(&mut buf).unwrap_or(0);
        buf[..n].to_vec()
    });
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ew.kill();
    let _ = ew.wait();
    if reader.is_finished() {
        out = reader.join().unwrap();
    }
    assert_eq!(String::from_utf8_lossy(&out), "set v1\n");
    let members = ok(e, &["member", "list"]);
    assert!(
        members.contains("name=ctl") && members.contains("isLeader=true"),
        "{members}"
    );
    assert!(ok(e, &["cluster-health"]).contains("cluster is healthy"));
}

/// A small HTTP/1.1 exchange; returns status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, body);
    (status, body)
}

/// The etcd headers of interest that a response carries, lowercased and sorted.
fn etcd_headers(head: &str) -> Vec<String> {
    let mut names: Vec<String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim().to_ascii_lowercase())
        .filter(|n| n.starts_with("x-etcd") || n.starts_with("x-raft") || n == "content-type")
        .collect();
    names.sort();
    names
}

/// A small HTTP/1.1 exchange with a form body; returns status, the response head and the body.
fn http_full(addr: &str, method: &str, path: &str, body: &str) -> (u16, String, String) {
    http_typed(
        addr,
        method,
        path,
        "application/x-www-form-urlencoded",
        body,
    )
}

/// A small HTTP/1.1 exchange with a body of type `ctype`.
fn http_typed(
    addr: &str,
    method: &str,
    path: &str,
    ctype: &str,
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    // Go may reset the connection when it answers before reading the body; what arrived counts.
    if let Err(e) = s.read_to_string(&mut raw) {
        let reset = e.kind() == std::io::ErrorKind::ConnectionReset;
        assert!(
            reset && raw.contains("\r\n\r\n"),
            "{method} {addr}{path}: {e} after reading {raw:?}"
        );
    }
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

/// The payload a streaming GET delivers within `dur` (the response never ends by itself).
fn http_stream(addr: &str, path: &str, dur: Duration) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let deadline = Instant::now() + dur;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or(("", ""));
    assert!(head.contains(" 200 "), "{path}: {head}");
    dechunk(rest)
}

/// `s` with every run of digits replaced by `#`.
fn mask_digits(s: &str) -> String {
    let mut out = String::new();
    let mut last_digit = false;
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
        } else {
            out.push(ch);
            last_digit = false;
        }
    }
    out
}

/// The `X-Etcd-Index` of a response head (0 when absent).
fn etcd_index(head: &str) -> u64 {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("x-etcd-index"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The payload of a chunked body (watch answers are chunked: the head is flushed first).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The JSON with timestamps blanked and indexes made relative to `base` (the server's index
/// before a script started; 0 stays 0; `None` blanks them), for comparing two servers.
fn shape_from(body: &str, base: Option<u64>) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value, base: Option<u64>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if ["modifiedIndex", "createdIndex", "index"].contains(&k.as_str()) {
                        *x = match (base, x.as_u64()) {
                            (Some(_), Some(0)) => 0.into(),
                            (Some(b), Some(i)) => i.saturating_sub(b).into(),
                            _ => serde_json::Value::Null,
                        };
                    } else if k == "expiration" {
                        *x = serde_json::Value::Null;
                    } else if k == "key" {
                        // In-order keys are named after indexes.
                        if let Some(s) = x.as_str() {
                            *x = s.trim_end_matches(|c: char| c.is_ascii_digit()).into();
                        }
                    } else if k == "cause" {
                        if let Some(s) = x.as_str() {
                            *x = s.replace(|c: char| c.is_ascii_digit(), "#").into();
                        }
                    } else {
                        walk(x, base);
                    }
                }
            }
            serde_json::Value::Array(a) => {
                a.iter_mut().for_each(|x| walk(x, base));
                // etcd lists children in Go map order (random) unless sorted=true; crust kv
                // always sorts, so compare listings as sets.
                a.sort_by_key(|n| n.get("key").and_then(|k| k.as_str()).map(str::to_string));
            }
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    walk(&mut v, base);
    v
}

#[test]
fn same_answers_as_etcd_3_4() {
    if !ensure("etcd", "etcd-server") {
        return;
    }
    let etcd = start_etcd("answers");
    let theirs = etcd.addr.clone();
    let srv = server();
    let ours = srv.addr.to_string();
    let base1 = etcd_index(&http_full(&ours, "GET", "/v2/keys/", "").1);
    let base2 = etcd_index(&http_full(&theirs, "GET", "/v2/keys/", "").1);
    let script: &[(&str, &str, &str)] = &[
        ("PUT", "/v2/keys/cmp/a", "value=1"),
        ("PUT", "/v2/keys/cmp/a", "value=2"),
        ("GET", "/v2/keys/cmp/a", ""),
        ("GET", "/v2/keys/cmp?recursive=true", ""),
        ("PUT", "/v2/keys/cmp/a?prevExist=false", "value=3"),
        ("PUT", "/v2/keys/cmp/a?prevValue=9", "value=3"),
        ("PUT", "/v2/keys/cmp/a?prevValue=2", "value=3"),
        ("PUT", "/v2/keys/cmp/a?prevIndex=1", "value=3"),
        ("PUT", "/v2/keys/cmp/n?prevExist=true", "value=3"),
        ("PUT", "/v2/keys/cmp/a/b", "value=3"),
        ("PUT", "/v2/keys/cmp/d?dir=true", ""),
        ("PUT", "/v2/keys/cmp/d?dir=true", ""),
        ("PUT", "/v2/keys/cmp/d", "value=x"),
        ("POST", "/v2/keys/cmp/q", "value=job"),
        ("PUT", "/v2/keys/cmp/t?ttl=100", "value=v"),
        ("PUT", "/v2/keys/cmp/t?ttl=abc", "value=v"),
        ("PUT", "/v2/keys/cmp/t?refresh=true&ttl=50", ""),
        ("PUT", "/v2/keys/cmp/t?refresh=true", ""),
        ("PUT", "/v2/keys/cmp/t?refresh=true&ttl=5", "value=z"),
        ("GET", "/v2/keys/cmp/a?recursive=maybe", ""),
        ("PUT", "/v2/keys/cmp/_h", "value=h"),
        ("GET", "/v2/keys/cmp/_h", ""),
        ("DELETE", "/v2/keys/cmp/d", ""),
        ("DELETE", "/v2/keys/cmp/q?dir=true", ""),
        ("DELETE", "/v2/keys/cmp/a?prevValue=1", ""),
        ("DELETE", "/v2/keys/cmp/a?prevValue=3", ""),
        ("DELETE", "/v2/keys/cmp/nope", ""),
        ("DELETE", "/v2/keys/cmp?recursive=true", ""),
        ("PUT", "/v2/keys/", "value=1"),
        ("GET", "/v2/keys/cmp/a?wait=true&waitIndex=1", ""),
        // Directories: listings, hidden children, non-empty removal, files vs dirs.
        ("PUT", "/v2/keys/dd/x", "value=1"),
        ("PUT", "/v2/keys/dd/_hidden", "value=1"),
        ("PUT", "/v2/keys/dd/sub/y", "value=2"),
        ("GET", "/v2/keys/dd", ""),
        ("GET", "/v2/keys/dd?recursive=true&sorted=true", ""),
        ("GET", "/v2/keys/dd/", ""),
        ("DELETE", "/v2/keys/dd?dir=true", ""),
        ("DELETE", "/v2/keys/dd/x?dir=true", ""),
        ("DELETE", "/v2/keys/dd", ""),
        ("PUT", "/v2/keys/dd", "value=v"),
        ("PUT", "/v2/keys/dd?prevValue=a", "value=v"),
        ("PUT", "/v2/keys/dd?prevIndex=1", "value=v"),
        ("PUT", "/v2/keys/dd/x?dir=true", ""),
        ("PUT", "/v2/keys/dd/x", "value=1&dir=true"),
        ("PUT", "/v2/keys/dd/sub?dir=true&prevExist=true&ttl=100", ""),
        ("GET", "/v2/keys/dd/x/deeper", ""),
        ("PUT", "/v2/keys/dd/x/deeper", "value=1"),
        ("POST", "/v2/keys/dd/x", "value=1"),
        ("DELETE", "/v2/keys/dd/sub?prevValue=x", ""),
        ("DELETE", "/v2/keys/dd/x?prevIndex=abc", ""),
        ("DELETE", "/v2/keys/dd/x?prevIndex=1", ""),
        ("DELETE", "/v2/keys/dd?dir=true&recursive=true", ""),
        // Parameters etcd refuses.
        ("PUT", "/v2/keys/pp?prevExist=maybe", "value=1"),
        ("PUT", "/v2/keys/pp?ttl=-1", "value=1"),
        ("PUT", "/v2/keys/pp?refresh=maybe&ttl=3", ""),
        ("PUT", "/v2/keys/pp?dir=maybe", ""),
        ("PUT", "/v2/keys/pp?prevIndex=x", "value=1"),
        ("PUT", "/v2/keys/pp?prevValue=", "value=1"),
        ("GET", "/v2/keys/pp?wait=true&waitIndex=abc", ""),
        ("GET", "/v2/keys/pp?sorted=yes", ""),
        ("PUT", "/v2/keys/pp", ""),
        ("GET", "/v2/keys/pp", ""),
        ("PUT", "/v2/keys/pp?ttl=", "value=2"),
        ("PUT", "/v2/keys/pp?ttl=0", "value=2"),
        ("PUT", "/v2/keys/pp", "value=3&ttl=20"),
        ("PUT", "/v2/keys/pp?refresh=true&prevExist=false&ttl=3", ""),
        ("PUT", "/v2/keys/pq?refresh=true&ttl=3", ""),
        ("PUT", "/v2/keys/pp?prevExist=true&prevValue=3", "value=4"),
        ("GET", "/v2/keys/", ""),
        ("DELETE", "/v2/keys/", ""),
        ("DELETE", "/v2/keys/?recursive=true", ""),
        ("POST", "/v2/keys/", "value=1"),
        ("GET", "/v2/keys/?recursive=true", ""),
        ("GET", "/v2/keys/pp?quorum=true", ""),
        ("HEAD", "/v2/keys/pp", ""),
        ("HEAD", "/v2/keys/nokey", ""),
        ("PATCH", "/v2/keys/pp", "value=1"),
        // Form bodies and query strings as Go merges them: body first, first value wins.
        ("PUT", "/v2/keys/fp?value=q", "value=b"),
        ("PUT", "/v2/keys/fp?ttl=abc", "ttl=5&value=1"),
        ("PUT", "/v2/keys/fp", "value=a&value=b"),
        ("PUT", "/v2/keys/fp", "value=a+b%21%zz"),
        ("PUT", "/v2/keys/fp", "value=a+b%21"),
        (
            "PUT",
            "/v2/keys/esc",
            "value=%3Ca%3E%26%22b%22%C3%A9%E2%80%A8%01",
        ),
        ("GET", "/v2/keys/fp", ""),
        ("GET", "/v2/keys/fp?recursive=true;sorted=true", ""),
        ("GET", "/v2/keys/fp?recursive=%zz", ""),
        ("DELETE", "/v2/keys/fp", "prevValue=zzz"),
        ("PUT", "/v2/keys/a%20b/%C3%A9", "value=x"),
        ("GET", "/v2/keys/a%20b?recursive=true", ""),
        ("PUT", "/v2/keys//x//y/", "value=1"),
        ("GET", "/v2/keys/x/./y", ""),
        ("DELETE", "/v2/keys/x/y/../y", ""),
    ];
    let mut mismatches = Vec::new();
    for (method, path, body) in script {
        let (s1, h1, b1) = http_full(&ours, method, path, body);
        let (s2, h2, b2) = http_full(&theirs, method, path, body);
        // etcd 3.4 answers a waitIndex older than its history with 401; both must agree on
        // the status either way.
        if s1 != s2 {
            mismatches.push(format!(
                "{method} {path}: status crust {s1} etcd {s2}\n  crust {b1}\n  etcd  {b2}"
            ));
            continue;
        }
        // Index bookkeeping: which requests advance the index, and by how much.
        let (d1, d2) = (
            etcd_index(&h1).saturating_sub(base1),
            etcd_index(&h2).saturating_sub(base2),
        );
        if d1 != d2 {
            mismatches.push(format!(
                "{method} {path}: X-Etcd-Index +{d1} in crust, +{d2} in etcd"
            ));
        }
        if etcd_headers(&h1) != etcd_headers(&h2) {
            mismatches.push(format!(
                "{method} {path}: headers crust {:?} etcd {:?}",
                etcd_headers(&h1),
                etcd_headers(&h2)
            ));
        }
        // Byte for byte (numbers masked: indexes, TTLs, times), except listings, whose order
        // is random in etcd.
        if !b2.contains("\"nodes\"") && mask_digits(&b1) != mask_digits(&b2) {
            mismatches.push(format!(
                "{method} {path}: bytes\n  crust {b1:?}\n  etcd  {b2:?}"
            ));
        }
        if !path.contains("wait=true")
            && shape_from(&b1, Some(base1)) != shape_from(&b2, Some(base2))
        {
            mismatches.push(format!("{method} {path}:\n  crust {b1}\n  etcd  {b2}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // Membership requests that must fail the same way (a 1-member cluster cannot take a
    // real add without losing its quorum).
    const JSON: &str = "application/json";
    let members: &[(&str, &str, &str, &str)] = &[
        ("POST", "/v2/members", JSON, "{"),
        (
            "POST",
            "/v2/members",
            "text/plain",
            r#"{"peerURLs":["http://127.0.0.1:1"]}"#,
        ),
        ("POST", "/v2/members", JSON, r#"{"peerURLs":["not a url"]}"#),
        ("POST", "/v2/members", JSON, r#"{"peerURLs":[]}"#),
        ("DELETE", "/v2/members/zz", JSON, ""),
        ("DELETE", "/v2/members/1234", JSON, ""),
        (
            "PUT",
            "/v2/members/1234",
            JSON,
            r#"{"peerURLs":["http://127.0.0.1:1"]}"#,
        ),
        (
            "PUT",
            "/v2/members/zz",
            JSON,
            r#"{"peerURLs":["http://127.0.0.1:1"]}"#,
        ),
        ("GET", "/v2/members/1234", JSON, ""),
    ];
    for (method, path, ctype, body) in members {
        let (s1, h1, b1) = http_typed(&ours, method, path, ctype, body);
        let (s2, h2, b2) = http_typed(&theirs, method, path, ctype, body);
        // Statuses, headers and fields; the message wording may differ.
        if (s1, etcd_headers(&h1), fields(&b1)) != (s2, etcd_headers(&h2), fields(&b2)) {
            mismatches.push(format!(
                "{method} {path} {body}: crust {s1} {:?} {b1}\n  etcd {s2} {:?} {b2}",
                etcd_headers(&h1),
                etcd_headers(&h2)
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // The one chosen difference: values over crust kv's limit (1 MiB) are refused with a
    // clear error, where etcd takes anything under its 1.5 MiB request limit.
    let big = format!("value={}", "v".repeat(crust_kv::store::MAX_VALUE_BYTES + 1));
    let (s1, _, b1) = http_full(&ours, "PUT", "/v2/keys/big", &big);
    assert_eq!(s1, 400, "{b1}");
    assert!(
        b1.contains("\"errorCode\":209") && b1.contains("at most 1048576 bytes"),
        "{b1}"
    );
    assert_eq!(http_full(&theirs, "PUT", "/v2/keys/big", &big).0, 201);
    // The comparison above saw real indexes (the script made dozens of writes).
    let end = etcd_index(&http_full(&theirs, "GET", "/v2/keys/", "").1);
    assert!(base2 > 0 && end > base2 + 20, "etcd index {base2} -> {end}");
}

/// A single-member etcd 3.4 with the v2 API on free loopback ports; killed when dropped.
struct Etcd {
    child: std::process::Child,
    addr: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd(tag: &str) -> Etcd {
    let dir = tempfile_dir(tag);
    let client = free_port();
    let peer = free_port();
    let child = Command::new("etcd")
        .args([
            "--name",
            "ref",
            "--enable-v2",
            "--data-dir",
            &format!("{dir}/data"),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("ref=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let etcd = Etcd {
        child,
        addr: format!("127.0.0.1:{client}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&etcd.addr).is_err()
        || http(&etcd.addr, "GET", "/health", "").0 != 200
    {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // etcd writes the cluster version into its store a few seconds after start; wait for it
    // so that no write of etcd's own lands in the middle of a script.
    while http(&etcd.addr, "GET", "/version", "")
        .1
        .contains("not_decided")
    {
        assert!(
            Instant::now() < deadline,
            "etcd did not decide its cluster version"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tempfile_dir(tag: &str) -> String {
    let d = std::env::temp_dir().join(format!("crust-kv-etcd-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.display().to_string()
}

/// The `modifiedIndex` of the event in `body`.
fn event_index(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["node"]["modifiedIndex"].as_u64().unwrap()
}

/// The keys of a JSON object, sorted (for answers whose values are per-server).
fn fields(body: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let mut k: Vec<String> = v
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// Watches (history, recursive, waiting for the next change), TTL expiry as an event and the
/// cluster endpoints, sent to crust kv and etcd 3.4 alike. Indexes differ between the two, so
/// each side's requests use the indexes that side returned.
#[test]
fn watches_and_expiry_like_etcd_3_4() {
    if !ensure("etcd", "etcd-server") {
        return;
    }
    let etcd = start_etcd("watch");
    let srv = server();
    let ours = srv.addr.to_string();
    let run = |addr: &str| -> Vec<(String, u16, Vec<String>, serde_json::Value)> {
        let base = etcd_index(&http_full(addr, "GET", "/v2/keys/", "").1);
        let seen = std::cell::RefCell::new(Vec::new());
        let record = |what: &str, (status, head, body): (u16, String, String)| {
            // X-Etcd-Index too: on a watch it is the index when the watch started.
            let index = match etcd_index(&head) {
                0 => 0,
                i => i.saturating_sub(base),
            };
            seen.borrow_mut().push((
                what.to_string(),
                status,
                etcd_headers(&head),
                serde_json::json!([
                    index,
                    shape_from(&body, Some(base)),
                    // Byte for byte too, numbers masked (listings aside: etcd's order is random).
                    if body.contains("\"nodes\"") {
                        String::new()
                    } else {
                        mask_digits(&body)
                    },
                ]),
            ));
            body
        };
        let i1 = event_index(&record(
            "set a",
            http_full(addr, "PUT", "/v2/keys/w/a", "value=1"),
        ));
        record(
            "set b/c",
            http_full(addr, "PUT", "/v2/keys/w/b/c", "value=2"),
        );
        record("delete a", http_full(addr, "DELETE", "/v2/keys/w/a", ""));
        let q = |path: &str| http_full(addr, "GET", path, "");
        record(
            "recursive from i1",
            q(&format!(
                "/v2/keys/w?wait=true&recursive=true&waitIndex={i1}"
            )),
        );
        record(
            "recursive from i1+1",
            q(&format!(
                "/v2/keys/w?wait=true&recursive=true&waitIndex={}",
                i1 + 1
            )),
        );
        record(
            "a from i1+1",
            q(&format!("/v2/keys/w/a?wait=true&waitIndex={}", i1 + 1)),
        );
        // A watch on the directory alone does not see changes below it.
        let t = record(
            "ttl",
            http_full(addr, "PUT", "/v2/keys/w/t?ttl=1", "value=x"),
        );
        let it = event_index(&t);
        // Waits for the expiry, decided by the server's own clock.
        let exp = record(
            "expire",
            q(&format!("/v2/keys/w/t?wait=true&waitIndex={}", it + 1)),
        );
        let ie = event_index(&exp);
        let (_, head, _) = q("/v2/keys/w");
        let after_expiry = etcd_index(&head);
        assert!(after_expiry > 0);
        seen.borrow_mut().push((
            "index after expiry".into(),
            0,
            vec![],
            serde_json::json!(after_expiry - ie),
        ));
        record("gone", q("/v2/keys/w/t"));
        // A watch waiting for the next change.
        let a2 = addr.to_string();
        let waiter = std::thread::spawn(move || {
            http_full(&a2, "GET", "/v2/keys/w?wait=true&recursive=true", "")
        });
        std::thread::sleep(Duration::from_millis(500));
        record(
            "cas",
            http_full(addr, "PUT", "/v2/keys/w/b/c?prevValue=2", "value=3"),
        );
        record("woken", waiter.join().unwrap());
        // A streaming watch sees every change in order on one response.
        let a2 = addr.to_string();
        let streamer = std::thread::spawn(move || {
            http_stream(
                &a2,
                "/v2/keys/w/s?wait=true&stream=true",
                Duration::from_secs(2),
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        record("s1", http_full(addr, "PUT", "/v2/keys/w/s", "value=1"));
        record("s2", http_full(addr, "PUT", "/v2/keys/w/s", "value=2"));
        let streamed: Vec<serde_json::Value> =
            serde_json::Deserializer::from_str(&streamer.join().unwrap())
                .into_iter::<serde_json::Value>()
                .map(|v| shape_from(&v.unwrap().to_string(), Some(base)))
                .collect();
        assert_eq!(streamed.len(), 2, "{addr}: {streamed:?}");
        seen.borrow_mut()
            .push(("stream".into(), 0, vec![], serde_json::json!(streamed)));
        record(
            "cad",
            http_full(addr, "DELETE", "/v2/keys/w/b/c?prevValue=3", ""),
        );
        record(
            "in-order",
            http_full(addr, "POST", "/v2/keys/w/q", "value=j1"),
        );
        record(
            "in-order 2",
            http_full(addr, "POST", "/v2/keys/w/q", "value=j2"),
        );
        record("queue", q("/v2/keys/w/q?recursive=true&sorted=true"));
        record(
            "mkdir ttl",
            http_full(addr, "PUT", "/v2/keys/w/d?dir=true&ttl=100", ""),
        );
        record(
            "refresh dir",
            http_full(
                addr,
                "PUT",
                "/v2/keys/w/d?dir=true&prevExist=true&refresh=true&ttl=200",
                "",
            ),
        );
        // Hidden keys: a waiting recursive watch skips them; a history scan does not.
        let a2 = addr.to_string();
        let waiter = std::thread::spawn(move || {
            http_full(&a2, "GET", "/v2/keys/h?wait=true&recursive=true", "")
        });
        std::thread::sleep(Duration::from_millis(500));
        let hid = record("hidden", http_full(addr, "PUT", "/v2/keys/h/_x", "value=1"));
        record("visible", http_full(addr, "PUT", "/v2/keys/h/y", "value=2"));
        record("woken by visible", waiter.join().unwrap());
        record(
            "history has hidden",
            q(&format!(
                "/v2/keys/h?wait=true&recursive=true&waitIndex={}",
                event_index(&hid)
            )),
        );
        // The 1000-event history: the oldest kept index still answers, the one before is 401.
        for i in 0..1000 {
            http_full(addr, "PUT", "/v2/keys/many", &format!("value={i}"));
        }
        let now = etcd_index(&q("/v2/keys/many").1);
        record(
            "oldest kept",
            q(&format!("/v2/keys/many?wait=true&waitIndex={}", now - 999)),
        );
        record(
            "cleared",
            q(&format!("/v2/keys/many?wait=true&waitIndex={}", now - 1000)),
        );
        for path in [
            "/version",
            "/health",
            "/v2/members",
            "/v2/members/leader",
            "/v2/machines",
            "/v2/stats/self",
            "/v2/stats/store",
            "/v2/keys/w/a?wait=true&waitIndex=abc",
        ] {
            let (status, head, body) = q(path);
            seen.borrow_mut().push((
                path.to_string(),
                status,
                etcd_headers(&head),
                serde_json::json!(fields(&body)),
            ));
        }
        seen.into_inner()
    };
    let mine = run(&ours);
    let theirs = run(&etcd.addr);
    let mut mismatches = Vec::new();
    for (m, t) in mine.iter().zip(&theirs) {
        if m != t {
            mismatches.push(format!("{}:\n  crust {:?}\n  etcd  {:?}", m.0, m, t));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The same etcdctl commands against crust kv and etcd 3.4: same exit codes, same output
/// (numbers masked: indexes and TTLs differ between the two servers).
#[test]
fn etcdctl_prints_the_same_for_both() {
    if !ensure("etcdctl", "etcd-client") || !ensure("etcd", "etcd-server") {
        return;
    }
    let etcd = start_etcd("etcdctl");
    let srv = server();
    let script: &[&[&str]] = &[
        &["set", "/c/a", "1"],
        &["get", "/c/a"],
        &["mk", "/c/a", "2"],
        &["mk", "/c/b", "2"],
        &["mkdir", "/c/d"],
        &["mkdir", "/c/d"],
        &["set", "/c/d/x", "y"],
        &["ls", "--sort", "/c"],
        &["ls", "--sort", "-r", "/c"],
        &["ls", "--sort", "-p", "/c"],
        &["ls", "/nothing"],
        &["get", "/c/d"],
        &["update", "/c/a", "3"],
        &["update", "/c/zz", "3"],
        &["set", "--swap-with-value", "3", "/c/a", "4"],
        &["set", "--swap-with-value", "9", "/c/a", "5"],
        &["set", "--ttl", "100", "/c/t", "v"],
        &["mk", "--in-order", "/c/q", "job"],
        &["-o", "json", "get", "/c/a"],
        &["-o", "extended", "get", "/c/a"],
        &["updatedir", "--ttl", "50", "/c/d"],
        &["setdir", "/c/e"],
        &["rmdir", "/c/d"],
        &["rm", "/c/d"],
        &["rm", "--dir", "/c/e"],
        &["rm", "--with-value", "9", "/c/a"],
        &["rm", "--with-value", "4", "/c/a"],
        &["get", "/c/a"],
        &["rm", "-r", "/c"],
        &["ls"],
        &["get"],
        &["set", "/only-key"],
    ];
    let mask = |s: &[u8]| -> String {
        let s = String::from_utf8_lossy(s);
        let mut out = String::new();
        let mut last_digit = false;
        for ch in s.chars() {
            if ch.is_ascii_digit() {
                if !last_digit {
                    out.push('#');
                }
                last_digit = true;
            } else {
                out.push(ch);
                last_digit = false;
            }
        }
        out
    };
    let ours = format!("http://{}", srv.addr);
    let theirs = format!("http://{}", etcd.addr);
    let mut mismatches = Vec::new();
    for args in script {
        let a = etcdctl(&ours, args);
        let b = etcdctl(&theirs, args);
        let (ca, cb) = (a.status.code(), b.status.code());
        let (oa, ob) = (mask(&a.stdout), mask(&b.stdout));
        let (ea, eb) = (mask(&a.stderr), mask(&b.stderr));
        if ca != cb || oa != ob || ea != eb {
            mismatches.push(format!(
                "etcdctl {args:?}:\n  crust {ca:?} {oa:?} {ea:?}\n  etcd  {cb:?} {ob:?} {eb:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
