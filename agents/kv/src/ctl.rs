//! `crustctl kv ...`: etcdctl's v2 verbs on the [`Client`], with etcdctl's output and exit codes
//! (0 ok, 1 for bad arguments, 2 when no endpoint answers, 4 for an etcd error such as key not
//! found, 5 when cluster-health finds the cluster unhealthy), as measured with Debian's etcdctl 3.4 (ETCDCTL_API=2).
//!
//! ```text
//! crustctl kv [--endpoints URLS] get KEY | set KEY VALUE [--ttl N] | mk KEY VALUE [--ttl N]
//!             | update KEY VALUE | rm KEY [--recursive|--dir] | mkdir KEY | ls [KEY] [-r]
//!             | watch KEY [-r] [--forever] | member list | cluster-health
//! ```

use crate::client::{Client, ClientError, WriteOpts};
use crate::store::{Event, NodeView};

const USAGE: &str = "usage: crustctl kv [--endpoints URLS] get KEY | set KEY VALUE [--ttl N] | mk KEY VALUE [--ttl N] | update KEY VALUE | rm KEY [--recursive|--dir] | mkdir KEY | ls [KEY] [-r] | watch KEY [-r] [--forever] | member list | cluster-health";

/// Default endpoint, as etcdctl's; `ETCDCTL_ENDPOINTS`/`ETCDCTL_ENDPOINT` override it.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

struct Args {
    endpoints: String,
    ttl: Option<u64>,
    recursive: bool,
    dir: bool,
    forever: bool,
    words: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        endpoints: std::env::var("ETCDCTL_ENDPOINTS")
            .or_else(|_| std::env::var("ETCDCTL_ENDPOINT"))
            .unwrap_or_else(|_| DEFAULT_ENDPOINT.into()),
        ttl: None,
        recursive: false,
        dir: false,
        forever: false,
        words: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "--endpoints" | "--endpoint" | "--peers" => {
                a.endpoints = it.next().ok_or("--endpoints needs a value")?.clone()
            }
            "--ttl" => {
                let v = it.next().ok_or("--ttl needs a number of seconds")?;
                a.ttl = Some(
                    v.parse()
                        .map_err(|_| format!("--ttl {v:?} is not a number of seconds"))?,
                );
            }
            "-r" | "--recursive" => a.recursive = true,
            "--dir" => a.dir = true,
            "--forever" | "-f" => a.forever = true,
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => a.words.push(w.clone()),
        }
    }
    Ok(a)
}

fn fail(e: &ClientError) -> i32 {
    match e {
        ClientError::Etcd(err) => {
            eprintln!(
                "Error:  {}: {} ({}) [{}]",
                err.error_code, err.message, err.cause, err.index
            );
            4
        }
        ClientError::Unexpected { .. } => {
            eprintln!("Error:  {e}");
            4
        }
        other => {
            eprintln!("Error:  {other}");
            2
        }
    }
}

fn value(ev: &Event) {
    println!("{}", ev.node.value.clone().unwrap_or_default());
}

fn list(n: &NodeView, recursive: bool, out: &mut Vec<String>) {
    for c in n.nodes.iter().flatten() {
        out.push(
            if c.dir {
                format!("{}/", c.key)
            } else {
                c.key.clone()
            }
            .trim_end_matches('/')
            .to_string(),
        );
        if recursive {
            list(c, true, out);
        }
    }
}

/// Runs `crustctl kv ARGS` (the words after `kv`); returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crustctl kv: {e}\n{USAGE}");
            return 1;
        }
    };
    let c = match Client::new(&a.endpoints) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crustctl kv: {e}; pass --endpoints http://HOST:2379");
            return 1;
        }
    };
    let w: Vec<&str> = a.words.iter().map(String::as_str).collect();
    let r = match w.as_slice() {
        ["get", key] => c.get(key, false).map(|ev| {
            if ev.node.dir {
                eprintln!("{key}: is a directory");
            } else {
                value(&ev)
            }
        }),
        ["set", key, v] => c.set(key, v, a.ttl).map(|ev| value(&ev)),
        ["mk", key, v] => c.create(key, v, a.ttl).map(|ev| value(&ev)),
        ["update", key, v] => c
            .put(
                key,
                Some(v),
                &WriteOpts {
                    ttl: a.ttl,
                    prev_exist: Some(true),
                    ..WriteOpts::default()
                },
            )
            .map(|ev| value(&ev)),
        ["rm", key] => c.delete(key, a.dir, a.recursive).map(|_| ()),
        ["mkdir", key] => c.mkdir(key, a.ttl).map(|_| ()),
        ["ls"] | ["ls", _] => {
            let key = w.get(1).copied().unwrap_or("/");
            c.get(key, a.recursive).map(|ev| {
                let mut out = Vec::new();
                if ev.node.dir {
                    list(&ev.node, a.recursive, &mut out);
                } else {
                    out.push(ev.node.key.clone());
                }
                for l in out {
                    println!("{l}");
                }
            })
        }
        ["watch", key] => {
            let mut r = Ok(());
            for ev in c.watch(key, a.recursive, None) {
                match ev {
                    Ok(ev) => {
                        if a.forever {
                            println!("[{}] {}", ev.action, ev.node.key);
                        }
                        value(&ev);
                        if !a.forever {
                            break;
                        }
                    }
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
            r
        }
        ["member", "list"] => c.members().map(|ms| {
            let leader = c.leader().ok().map(|l| l.id);
            for m in ms {
                println!(
                    "{}: name={} peerURLs={} clientURLs={} isLeader={}",
                    m.id,
                    m.name,
                    m.peer_urls.join(","),
                    m.client_urls.join(","),
                    leader.as_deref() == Some(m.id.as_str())
                );
            }
        }),
        ["cluster-health"] => {
            let ms = match c.members() {
                Ok(ms) => ms,
                Err(e) => {
                    // etcdctl's words and code (ExitServerError) when the list fails.
                    println!("cluster may be unhealthy: failed to list members");
                    fail(&e);
                    return 4;
                }
            };
            let mut healthy = 0;
            for m in &ms {
                let ok = m
                    .client_urls
                    .iter()
                    .any(|u| Client::healthy(u).unwrap_or(false));
                if ok {
                    healthy += 1;
                    println!(
                        "member {} is healthy: got healthy result from {}",
                        m.id,
                        m.client_urls.join(",")
                    );
                } else {
                    println!(
                        "member {} is unhealthy: got no healthy result from {}",
                        m.id,
                        m.client_urls.join(",")
                    );
                }
            }
            if healthy * 2 > ms.len() {
                println!("cluster is healthy");
                Ok(())
            } else {
                println!("cluster is unhealthy");
                // etcdctl's ExitClusterNotHealthy.
                return 5;
            }
        }
        _ => {
            eprintln!("{USAGE}");
            return 1;
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}
