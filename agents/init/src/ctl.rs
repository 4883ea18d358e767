//! `crustctl`: the client side of the control socket.

use crate::proto::{Request, Response, SOCKET};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const USAGE: &str = "usage: crustctl [--socket PATH] status [UNIT] | list-units | start UNIT | stop UNIT | restart UNIT | reload UNIT | is-active UNIT | daemon-reload | enable|disable|mask|unmask [--runtime] UNIT... | cat UNIT | list-unit-files | logs [-u UNIT] [-n N] [-f] | poweroff | reboot";

/// Runs crustctl with its arguments (without argv[0]); returns the exit code.
pub fn run(args: &[String]) -> i32 {
    if args.first().map(String::as_str) == Some("logs") {
        return logs(&args[1..]);
    }
    if let Some(code) = files_verb(args) {
        return code;
    }
    let mut socket = SOCKET.to_string();
    let mut verb = None;
    let mut unit: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket" => match it.next() {
                Some(p) => socket = p.clone(),
                None => return usage("--socket needs a path"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            v if verb.is_none() => verb = Some(v.to_string()),
            u if unit.is_none() => unit = Some(u.to_string()),
            other => return usage(&format!("unexpected argument {other:?}")),
        }
    }
    let named = |u: Option<String>| -> Result<String, i32> {
        match u {
            Some(u) if u.contains('.') => Ok(u),
            Some(u) => Ok(format!("{u}.service")),
            None => Err(usage("which unit?")),
        }
    };
    let request = match verb.as_deref() {
        Some("status") if unit.is_some() => {
            let unit = match named(unit) {
                Ok(u) => u,
                Err(code) => return code,
            };
            return unit_status(&socket, &unit);
        }
        Some("reload") => {
            let unit = match named(unit) {
                Ok(u) => u,
                Err(code) => return code,
            };
            Request::Reload { unit }
        }
        Some(v @ ("start" | "stop" | "restart" | "is-active")) => {
            let unit = match named(unit) {
                Ok(u) => u,
                Err(code) => return code,
            };
            return unit_verb(&socket, v, &unit);
        }
        Some("daemon-reload") => Request::DaemonReload,
        Some("status") => Request::Status,
        Some("list-units") => Request::ListUnits,
        Some("poweroff") => Request::Poweroff,
        Some("reboot") => Request::Reboot,
        Some(other) => return usage(&format!("unknown command {other:?}")),
        None => return usage("no command given"),
    };
    match call(&socket, &request) {
        Ok(resp) if resp.ok => {
            print!("{}", render(&request, &resp));
            0
        }
        Ok(resp) => {
            eprintln!("crustctl: init refused: {}", resp.error.unwrap_or_default());
            1
        }
        Err(e) => {
            eprintln!("crustctl: {e}");
            1
        }
    }
}

/// `crustctl status UNIT`: systemctl-like details; exit 0 when active, 3 when not, 4 when no
/// such unit is loaded.
fn unit_status(socket: &str, unit: &str) -> i32 {
    let r = match call(socket, &Request::ListUnits) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crustctl: {e}");
            return 1;
        }
    };
    let Some(u) = r
        .units
        .unwrap_or_default()
        .into_iter()
        .find(|u| u.name == unit)
    else {
        eprintln!("Unit {unit} could not be found.");
        return 4;
    };
    print!("{}", render_unit(&u));
    // As systemctl status: the unit's most recent log lines follow.
    let recent = crate::logs::tail(std::path::Path::new(crate::logs::DIR), Some(unit), 10)
        .unwrap_or_default();
    if !recent.is_empty() {
        println!();
        for l in recent {
            println!("{l}");
        }
    }
    if u.state == "active" {
        0
    } else {
        3
    }
}

/// One unit in `status` form.
pub fn render_unit(u: &crate::manager::UnitStatus) -> String {
    let mut out = format!("{}\n     State: {} ({})", u.name, u.state, u.sub);
    if let Some(r) = &u.reason {
        out.push_str(&format!(" ({r})"));
    }
    out.push('\n');
    if let Some(p) = u.pid {
        out.push_str(&format!("  Main PID: {p}\n"));
    }
    if let Some(t) = &u.status_text {
        out.push_str(&format!("    Status: \"{t}\"\n"));
    }
    if u.restarts > 0 {
        out.push_str(&format!("  Restarts: {}\n", u.restarts));
    }
    if let Some(m) = u.memory_bytes {
        out.push_str(&format!("    Memory: {:.1}M\n", m as f64 / 1048576.0));
    }
    if let Some(c) = u.cpu_usec {
        out.push_str(&format!(
            "       CPU: {}.{:03}s\n",
            c / 1_000_000,
            (c / 1000) % 1000
        ));
    }
    if let Some(g) = &u.cgroup {
        out.push_str(&format!("    CGroup: {g}\n"));
    }
    out
}

/// start/stop/restart wait until the job is over, as systemctl does; is-active prints the state
/// and exits 0 only for `active` (3 otherwise).
fn unit_verb(socket: &str, verb: &str, unit: &str) -> i32 {
    let is_active = |u: &str| -> Result<String, CtlError> {
        let r = call(socket, &Request::IsActive { unit: u.into() })?;
        Ok(r.active_state.unwrap_or_else(|| "unknown".into()))
    };
    if verb == "is-active" {
        return match is_active(unit) {
            Ok(s) => {
                println!("{s}");
                if s == "active" {
                    0
                } else {
                    3
                }
            }
            Err(e) => {
                eprintln!("crustctl: {e}");
                1
            }
        };
    }
    let req = match verb {
        "start" => Request::Start { unit: unit.into() },
        "stop" => Request::Stop { unit: unit.into() },
        _ => Request::Restart { unit: unit.into() },
    };
    match call(socket, &req) {
        Ok(r) if r.ok => {}
        Ok(r) => {
            eprintln!("crustctl: {verb} {unit}: {}", r.error.unwrap_or_default());
            return if verb == "start" { 5 } else { 1 };
        }
        Err(e) => {
            eprintln!("crustctl: {e}");
            return 1;
        }
    }
    let want_up = verb != "stop";
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        match is_active(unit) {
            Ok(s) if want_up && s == "active" => return 0,
            Ok(s) if !want_up && (s == "inactive" || s == "failed") => return 0,
            Ok(s) if want_up && s == "failed" => {
                eprintln!("crustctl: job for {unit} failed; see `crustctl list-units`");
                return 1;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("crustctl: {e}");
                return 1;
            }
        }
        if std::time::Instant::now() > deadline {
            eprintln!("crustctl: {unit} did not finish its {verb} job within 90 s");
            return 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `crustctl logs [-u UNIT] [-n N] [-f]`: the last N records (default 50) of one unit or of all,
/// oldest first; `-f` keeps printing new ones.
fn logs(args: &[String]) -> i32 {
    let mut unit: Option<String> = None;
    let mut n = 50usize;
    let mut follow = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-u" | "--unit" => match it.next() {
                Some(u) if u.contains('.') => unit = Some(u.clone()),
                Some(u) => unit = Some(format!("{u}.service")),
                None => return usage("-u needs a unit name"),
            },
            "-n" | "--lines" => match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => n = v,
                None => return usage("-n needs a number of lines"),
            },
            "-f" | "--follow" => follow = true,
            other => return usage(&format!("unexpected argument {other:?} to logs")),
        }
    }
    let dir = std::path::Path::new(crate::logs::DIR);
    let mut seen: Vec<String> = match crate::logs::tail(dir, unit.as_deref(), n) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("crustctl: reading {}: {e}", dir.display());
            return 1;
        }
    };
    for l in &seen {
        println!("{l}");
    }
    if !follow {
        return 0;
    }
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let Ok(now) = crate::logs::tail(dir, unit.as_deref(), 1000) else {
            continue;
        };
        let last = seen.last().cloned();
        let start = match &last {
            Some(l) => now.iter().rposition(|x| x == l).map_or(0, |i| i + 1),
            None => 0,
        };
        for l in &now[start..] {
            println!("{l}");
        }
        if start < now.len() {
            seen = now;
        }
    }
}

/// The unit-file verbs work on files, as systemctl's do, then ask init to reload them.
fn files_verb(args: &[String]) -> Option<i32> {
    let root = std::path::Path::new("/");
    let verb = args.first()?.as_str();
    let runtime = args.iter().any(|a| a == "--runtime");
    let units: Vec<String> = args[1..]
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|u| {
            if u.contains('.') {
                u.clone()
            } else {
                format!("{u}.service")
            }
        })
        .collect();
    let each = |f: &dyn Fn(&str) -> Result<(), String>| -> i32 {
        if units.is_empty() {
            return usage("which unit?");
        }
        let mut code = 0;
        for u in &units {
            if let Err(e) = f(u) {
                eprintln!("crustctl: {e}");
                code = 1;
            }
        }
        let _ = call(SOCKET, &Request::DaemonReload);
        code
    };
    Some(match verb {
        "enable" => each(&|u| {
            for l in crate::install::enable(root, u, runtime)? {
                println!("Created symlink {l}");
            }
            Ok(())
        }),
        "disable" => each(&|u| {
            for l in crate::install::disable(root, u)? {
                println!("Removed {l}");
            }
            Ok(())
        }),
        "mask" => each(&|u| crate::install::mask(root, u, runtime)),
        "unmask" => each(&|u| crate::install::unmask(root, u)),
        "cat" => each(&|u| {
            print!("{}", crate::install::cat(root, u)?);
            Ok(())
        }),
        "list-unit-files" => {
            println!("{:<40} STATE", "UNIT FILE");
            for (n, st) in crate::install::list(root) {
                println!("{n:<40} {st}");
            }
            0
        }
        _ => return None,
    })
}

fn usage(why: &str) -> i32 {
    eprintln!("crustctl: {why}\n{USAGE}");
    2
}

/// One request, one response.
/// Why a control-socket call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(
        "cannot reach init at {socket}: {source} (is this a crust machine, and are you root?)"
    )]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error("talking to init at {socket}: {source}")]
    Io {
        socket: String,
        source: std::io::Error,
    },
    #[error("init sent an unreadable answer ({why}): {answer:?}")]
    BadAnswer { why: String, answer: String },
}

/// Sends one request and reads the one-line answer (see README.md for the protocol).
pub fn call(socket: &str, request: &Request) -> Result<Response, CtlError> {
    let io = |source| CtlError::Io {
        socket: socket.to_string(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(|source| CtlError::Connect {
        socket: socket.to_string(),
        source,
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    // A Request always serializes (plain strings and tags).
    let line = serde_json::to_string(request).unwrap_or_default();
    s.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(answer.trim()).map_err(|e| CtlError::BadAnswer {
        why: e.to_string(),
        answer,
    })
}

/// Human-readable output for each verb.
pub fn render(request: &Request, resp: &Response) -> String {
    let mut out = String::new();
    if let Some(s) = &resp.status {
        out.push_str(&format!(
            "version:  {}\nslot:     {}\nhostname: {}\nstate:    {}\nready:    {}\nuptime:   {}.{:03}s\n",
            s.version,
            s.slot,
            s.hostname,
            s.state,
            if s.ready { "yes" } else { "no" },
            s.uptime_ms / 1000,
            s.uptime_ms % 1000
        ));
    }
    if let Some(units) = &resp.units {
        if *request == Request::Status {
            out.push('\n');
        }
        out.push_str(&format!(
            "{:<32} {:<12} {:<13} {:>7}\n",
            "UNIT", "ACTIVE", "SUB", "PID"
        ));
        for u in units {
            let pid = u.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<32} {:<12} {:<13} {:>7}",
                u.name, u.state, u.sub, pid
            ));
            if u.restarts > 0 {
                out.push_str(&format!("  restarts={}", u.restarts));
            }
            if let Some(r) = &u.reason {
                out.push_str(&format!("  ({r})"));
            }
            out.push('\n');
        }
    }
    if matches!(request, Request::Poweroff | Request::Reboot) {
        out.push_str("shutting down\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::UnitStatus;

    #[test]
    fn renders_unit_table() {
        let resp = Response {
            ok: true,
            units: Some(vec![UnitStatus {
                name: "console-shell.service".into(),
                state: "active".into(),
                sub: "running".into(),
                pid: Some(42),
                reason: None,
                restarts: 2,
                status_text: Some("serving".into()),
                cgroup: Some("/sys/fs/cgroup/system.slice/console-shell.service".into()),
                memory_bytes: Some(3 << 20),
                cpu_usec: Some(1_250_000),
            }]),
            ..Response::default()
        };
        let s = render(&Request::ListUnits, &resp);
        let one = render_unit(&resp.units.as_ref().unwrap()[0]);
        assert!(
            one.contains("Memory: 3.0M") && one.contains("CPU: 1.250s"),
            "{one}"
        );
        assert!(
            one.contains("Restarts: 2") && one.contains("Main PID: 42"),
            "{one}"
        );
        assert!(s.starts_with("UNIT"));
        assert!(s.contains("console-shell.service"));
        assert!(s.contains("42"));
    }

    #[test]
    fn talks_one_line_each_way() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("s.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&c).read_line(&mut line).unwrap();
            assert_eq!(line, "{\"cmd\":\"list-units\"}\n");
            (&c).write_all(b"{\"ok\":true,\"units\":[]}\n").unwrap();
        });
        let r = call(&path.to_string_lossy(), &Request::ListUnits).unwrap();
        assert!(r.ok);
        server.join().unwrap();
        assert_eq!(run(&["frobnicate".into()]), 2);
        assert_eq!(
            run(&["--socket".into(), "/nonexistent".into(), "status".into()]),
            1
        );
    }
}
