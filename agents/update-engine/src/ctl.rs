//! `crustctl update status|check|channel [NAME]`: the client side of the update-engine socket.
//! crust-agent dispatches `crustctl update ...` here before init's crustctl sees it.

use crate::daemon::request;
use crate::proto::{Request, SOCKET};
use std::path::Path;

pub const USAGE: &str = "usage: crustctl update status | check | channel [stable|beta|alpha]";

/// `args` are the words after `update`. Returns the exit code.
pub fn run(args: &[String]) -> i32 {
    run_at(Path::new(SOCKET), args, &mut std::io::stdout())
}

pub fn run_at(socket: &Path, args: &[String], out: &mut dyn std::io::Write) -> i32 {
    let req = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["status"] | [] => Request::Status,
        ["check"] => Request::Check,
        ["channel"] => Request::Channel { set: None },
        ["channel", name] => Request::Channel {
            set: Some(name.to_string()),
        },
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    match request(socket, &req) {
        Ok(r) if r.ok => {
            if let Some(s) = r.status {
                let _ = write!(out, "{}", s.render());
            }
            if let Some(m) = r.message {
                let _ = writeln!(out, "{m}");
            }
            0
        }
        Ok(r) => {
            eprintln!("crustctl update: {}", r.error.unwrap_or_default());
            1
        }
        Err(e) => {
            eprintln!("crustctl update: {e}");
            1
        }
    }
}
