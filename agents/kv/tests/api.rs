#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing
//! The client API over a real listener on 127.0.0.1 with a single-member store: status codes,
//! headers and exact JSON, checked with a plain HTTP/1.1 client.

use crust_common::http;
use std::net::SocketAddr;
use std::time::Duration;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &str, ctype: &str) -> Reply {
    let url = http::Url::parse(&format!("http://{addr}{path}")).unwrap();
    let timeout = Some(Duration::from_secs(20));
    let ct = [("Content-Type", ctype)];
    let r = http::request_with(method, &url, None, Some(body), &ct, timeout).unwrap();
    let (status, headers) = (r.status, r.headers.clone());
    Reply {
        status,
        headers,
        body: r.text().unwrap(),
    }
}

fn form(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    request(
        addr,
        method,
        path,
        body,
        "application/x-www-form-urlencoded",
    )
}

fn server() -> crust_kv::local::Server {
    crust_kv::local::spawn_thread("127.0.0.1:0", "test").unwrap()
}

#[test]
fn keys_api_matches_etcd() {
    let srv = server();
    let a = srv.addr;
    let r = form(a, "PUT", "/v2/keys/foo", "value=bar");
    assert_eq!(r.status, 201);
    assert_eq!(
        r.body,
        concat!(
            r#"{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}"#,
            "\n"
        )
    );
    assert_eq!(r.header("x-etcd-index"), Some("1"));
    assert!(r.header("x-raft-index").is_some() && r.header("x-raft-term").is_some());
    assert!(r.header("x-etcd-cluster-id").is_some());
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Replacing is 200 with the previous node.
    let r = form(a, "PUT", "/v2/keys/foo?value=baz", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["prevNode"]["value"], "bar");
    let r = form(a, "GET", "/v2/keys/", "");
    assert_eq!(
        r.body,
        concat!(
            r#"{"action":"get","node":{"dir":true,"nodes":[{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2}]}}"#,
            "\n"
        )
    );
    // Errors: status, code, cause, and X-Etcd-Index.
    let r = form(a, "GET", "/v2/keys/nope", "");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        concat!(
            r#"{"errorCode":100,"message":"Key not found","cause":"/nope","index":2}"#,
            "\n"
        )
    );
    let r = form(a, "PUT", "/v2/keys/foo?ttl=abc", "value=x");
    assert_eq!((r.status, r.json()["errorCode"].as_u64()), (400, Some(202)));
    let r = form(a, "GET", "/v2/keys/foo?recursive=maybe", "");
    assert_eq!((r.status, r.json()["errorCode"].as_u64()), (400, Some(209)));
    let r = form(a, "PUT", "/v2/keys/foo?prevExist=false", "value=x");
    assert_eq!((r.status, r.json()["errorCode"].as_u64()), (412, Some(105)));
    let r = form(a, "PUT", "/v2/keys/foo?prevValue=nope", "value=x");
    assert_eq!(r.status, 412);
    assert_eq!(r.json()["cause"], "[nope != baz]");
    // mkdir, in-order keys, directory deletes.
    let r = form(a, "PUT", "/v2/keys/d?dir=true", "");
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["node"]["dir"], true);
    let r = form(a, "POST", "/v2/keys/d", "value=job");
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["node"]["key"], "/d/00000000000000000004");
    let r = form(a, "DELETE", "/v2/keys/d?dir=true", "");
    assert_eq!((r.status, r.json()["errorCode"].as_u64()), (403, Some(108)));
    let r = form(a, "DELETE", "/v2/keys/d?recursive=true", "");
    assert_eq!(
        (r.status, r.json()["action"].as_str()),
        (200, Some("delete"))
    );
    // HEAD: headers, no body.
    let r = form(a, "HEAD", "/v2/keys/foo", "");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // Oversized values are refused with the limit named.
    let big = format!("value={}", "x".repeat(crust_kv::store::MAX_VALUE_BYTES + 1));
    let r = form(a, "PUT", "/v2/keys/big", &big);
    assert_eq!(r.status, 400);
    assert!(r.json()["cause"].as_str().unwrap().contains("at most"));
}

#[test]
fn ttl_expires_through_the_log() {
    let srv = server();
    let a = srv.addr;
    let r = form(a, "PUT", "/v2/keys/t?ttl=1", "value=v");
    assert_eq!(r.json()["node"]["ttl"], 1);
    assert!(r.json()["node"]["expiration"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let w = std::thread::spawn(move || form(a, "GET", "/v2/keys/t?wait=true&waitIndex=2", ""));
    let r = w.join().unwrap();
    assert_eq!(r.json()["action"], "expire");
    assert_eq!(r.json()["prevNode"]["value"], "v");
    assert_eq!(form(a, "GET", "/v2/keys/t", "").status, 404);
}

#[test]
fn watches_wait_stream_and_clear() {
    let srv = server();
    let a = srv.addr;
    form(a, "PUT", "/v2/keys/w/a", "value=1");
    // A past event is answered at once.
    let r = form(a, "GET", "/v2/keys/w/a?wait=true&waitIndex=1", "");
    assert_eq!(r.json()["node"]["value"], "1");
    // A recursive long poll gets the next write below it; hidden keys are skipped.
    let w = std::thread::spawn(move || form(a, "GET", "/v2/keys/w?wait=true&recursive=true", ""));
    std::thread::sleep(Duration::from_millis(300));
    form(a, "PUT", "/v2/keys/w/_hidden", "value=h");
    form(a, "PUT", "/v2/keys/w/b", "value=2");
    let r = w.join().unwrap();
    assert_eq!(r.json()["node"]["key"], "/w/b");
    assert_eq!(r.header("x-etcd-index"), Some("1"));
    for i in 0..1001 {
        form(a, "PUT", "/v2/keys/x", &format!("value={i}"));
    }
    let r = form(a, "GET", "/v2/keys/x?wait=true&waitIndex=1", "");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], 401);
}

#[test]
fn members_stats_version_health() {
    let srv = server();
    let a = srv.addr;
    let r = form(a, "GET", "/v2/members", "");
    let m = &r.json()["members"][0];
    assert_eq!(m["name"], "test");
    assert_eq!(m["clientURLs"][0], format!("http://{a}"));
    assert!(u64::from_str_radix(m["id"].as_str().unwrap(), 16).is_ok());
    assert_eq!(
        form(a, "GET", "/v2/members/leader", "").json()["name"],
        "test"
    );
    assert_eq!(form(a, "GET", "/version", "").json()["etcdserver"], "2.3.8");
    assert_eq!(form(a, "GET", "/health", "").json()["health"], "true");
    assert_eq!(
        form(a, "GET", "/v2/stats/self", "").json()["state"],
        "StateLeader"
    );
    form(a, "PUT", "/v2/keys/s", "value=1");
    assert_eq!(
        form(a, "GET", "/v2/stats/store", "").json()["setsSuccess"],
        1
    );
    assert_eq!(
        form(a, "GET", "/v2/machines", "").body,
        format!("http://{a}")
    );
    let r = request(
        a,
        "POST",
        "/v2/members",
        r#"{"peerURLs":["http://127.0.0.1:1"]}"#,
        "text/plain",
    );
    assert_eq!(r.status, 415);
}

#[test]
fn rust_client_speaks_the_api() {
    use crust_kv::client::Client;
    let srv = server();
    let c = Client::new(&format!("http://127.0.0.1:1,http://{}", srv.addr)).unwrap();
    assert_eq!(
        c.set("/c/a", "x y&z", None).unwrap().node.value.as_deref(),
        Some("x y&z")
    );
    assert_eq!(
        c.get("/c/a", false).unwrap().node.value.as_deref(),
        Some("x y&z")
    );
    // Keys joined from parts are cleaned before sending (the server redirects unclean paths).
    assert_eq!(
        c.get("c//a/", false).unwrap().node.value.as_deref(),
        Some("x y&z")
    );
    // The server's redirect, as etcd gives it.
    let r = ureq_like(&srv.addr.to_string(), "GET", "/v2/keys/c//a");
    assert!(r.starts_with("HTTP/1.1 301"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("location: /v2/keys/c/a\r\n"),
        "{r}"
    );
    assert_eq!(
        c.create("/c/a", "again", None).unwrap_err().code(),
        Some(105)
    );
    let ev = c
        .compare_and_swap("/c/a", "new", Some("x y&z"), None, Some(60))
        .unwrap();
    assert_eq!(ev.action, "compareAndSwap");
    assert_eq!(ev.node.ttl, 60);
    assert_eq!(
        c.compare_and_delete("/c/a", Some("old"), None)
            .unwrap_err()
            .code(),
        Some(101)
    );
    let after = c.mkdir("/c/d", None).unwrap().node.modified_index;
    let listing = c.get("/c", true).unwrap();
    assert_eq!(listing.node.nodes.unwrap().len(), 2);
    let w = std::thread::spawn({
        let c = c.clone();
        move || c.watch("/c", true, Some(after)).next().unwrap().unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    c.set("/c/d/e", "1", None).unwrap();
    assert_eq!(w.join().unwrap().node.key, "/c/d/e");
    assert_eq!(c.delete("/c", true, true).unwrap().action, "delete");
    assert_eq!(c.get("/c", false).unwrap_err().code(), Some(100));
    assert_eq!(c.members().unwrap()[0].name, "test");
    assert_eq!(c.leader().unwrap().name, "test");
    assert!(Client::healthy(&format!("http://{}", srv.addr)).unwrap());
    // crustctl kv: etcdctl's exit codes.
    let e = format!("http://{}", srv.addr);
    let run = |args: &[&str]| {
        let mut v = vec!["--endpoints".to_string(), e.clone()];
        v.extend(args.iter().map(|s| s.to_string()));
        crust_kv::ctl::run(&v)
    };
    assert_eq!(run(&["set", "/k", "v"]), 0);
    assert_eq!(run(&["mk", "/k", "v"]), 4);
    assert_eq!(run(&["get", "/nope"]), 4);
    assert_eq!(run(&["ls", "/", "-r"]), 0);
    assert_eq!(run(&["frobnicate"]), 1);
    assert_eq!(run(&["get"]), 1);
    assert_eq!(run(&["cluster-health"]), 0);
    // Nothing listens on port 1: etcdctl says 2 for a connection failure.
    let down = |args: &[&str]| {
        let mut v = vec!["--endpoints".to_string(), "http://127.0.0.1:1".to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        crust_kv::ctl::run(&v)
    };
    assert_eq!(down(&["get", "/k"]), 2);
    assert_eq!(down(&["member", "list"]), 2);
    assert_eq!(down(&["cluster-health"]), 4);
}

/// The raw answer to one request without a body (head and body as text).
fn ureq_like(addr: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw
}
