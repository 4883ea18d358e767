//! The real service manager run as a child process (not PID 1) on a unit directory of the
//! test's own, driven over its control socket: a Restart=always service comes back after its
//! main process is killed and the restart is counted, `stop` takes a forked child with it, a
//! missing binary ends failed with the reason, and a crash loop hits the start limit.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use crust_init::proto::{Request, Response};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Manager {
    child: Child,
    socket: PathBuf,
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = crust_init::ctl::call(&self.socket.display().to_string(), &Request::Poweroff);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(m: &Manager, r: Request) -> Response {
    crust_init::ctl::call(&m.socket.display().to_string(), &r).expect("talking to the manager")
}

fn unit_line(m: &Manager, name: &str) -> Option<crust_init::manager::UnitStatus> {
    call(m, Request::ListUnits)
        .units
        .unwrap_or_default()
        .into_iter()
        .find(|u| u.name == name)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
        .unwrap_or(false)
}

#[test]
fn manager_as_a_child_process() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let usr = "usr/lib/systemd/system";
    write(
        root,
        &format!("{usr}/loop.service"),
        &format!(
            "[Service]\nExecStart=/bin/sh -c 'echo started; sleep 1000 & echo $! > {}/child.pid; while true; do sleep 0.2; done'\nRestart=always\nRestartSec=1\n[Install]\nWantedBy=multi-user.target\n",
            root.display()
        ),
    );
    write(
        root,
        &format!("{usr}/missing.service"),
        "[Service]\nExecStart=/nonexistent/bin/app\n",
    );
    write(
        root,
        &format!("{usr}/crash.service"),
        "[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=0\n",
    );
    write(
        root,
        &format!("{usr}/bound.service"),
        "[Unit]\nBindsTo=loop.service\n[Service]\nExecStart=/bin/sleep 1000\n",
    );
    write(
        root,
        &format!("{usr}/part.service"),
        "[Unit]\nPartOf=loop.service\n[Service]\nExecStart=/bin/sleep 1000\n",
    );
    let wants = root.join(format!("{usr}/multi-user.target.wants"));
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink("../loop.service", wants.join("loop.service")).unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_init-user"))
        .arg("--root")
        .arg(root)
        .spawn()
        .unwrap();
    let m = Manager {
        child,
        socket: root.join("run/init.sock"),
    };
    wait_for("the control socket", || m.socket.exists());
    wait_for("loop.service active", || {
        unit_line(&m, "loop.service").is_some_and(|u| u.state == "active")
    });

    // Kill the main process: it is restarted about RestartSec later, and counted.
    let first = unit_line(&m, "loop.service").unwrap().pid.unwrap();
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("a restart", || {
        unit_line(&m, "loop.service").is_some_and(|u| u.pid.is_some_and(|p| p != first))
    });
    assert!(
        killed.elapsed() >= Duration::from_millis(900),
        "{:?}",
        killed.elapsed()
    );
    let u = unit_line(&m, "loop.service").unwrap();
    assert_eq!((u.state.as_str(), u.restarts), ("active", 1));
    if u.cgroup.is_none() {
        eprintln!("note: no cgroup v2 mount usable here; cgroup checks skipped");
    }

    for u in ["bound.service", "part.service"] {
        assert!(call(&m, Request::Start { unit: u.into() }).ok);
        wait_for(u, || unit_line(&m, u).is_some_and(|s| s.state == "active"));
    }

    // stop takes the forked child with it, and there is no restart.
    let child_of_run = || -> i32 {
        std::fs::read_to_string(root.join("child.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    // The restarted run writes its own child's pid (the first run's child went with it).
    wait_for("the second run's child", || alive(child_of_run()));
    let child_pid = child_of_run();
    assert!(
        call(
            &m,
            Request::Stop {
                unit: "loop.service".into()
            }
        )
        .ok
    );
    wait_for("the forked child to go", || !alive(child_pid));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        call(
            &m,
            Request::IsActive {
                unit: "loop.service".into()
            }
        )
        .active_state
        .as_deref(),
        Some("inactive")
    );
    // BindsTo= and PartOf= units stopped with it.
    for u in ["bound.service", "part.service"] {
        wait_for(u, || {
            unit_line(&m, u).is_some_and(|s| s.state == "inactive")
        });
    }
    // Its output went to the store under the root.
    let log = std::fs::read_to_string(root.join("var/log/crust/loop.service.log")).unwrap();
    assert_eq!(log.matches("loop.service: started").count(), 2, "{log}");

    // A missing binary: failed, with the reason.
    assert!(
        call(
            &m,
            Request::Start {
                unit: "missing.service".into()
            }
        )
        .ok
    );
    wait_for("missing.service to fail", || {
        unit_line(&m, "missing.service").is_some_and(|u| u.state == "failed")
    });
    let u = unit_line(&m, "missing.service").unwrap();
    assert!(
        u.reason
            .as_deref()
            .unwrap_or("")
            .contains("/nonexistent/bin/app"),
        "{u:?}"
    );

    // A crash loop: the start limit ends it failed.
    assert!(
        call(
            &m,
            Request::Start {
                unit: "crash.service".into()
            }
        )
        .ok
    );
    wait_for("crash.service to hit its start limit", || {
        unit_line(&m, "crash.service").is_some_and(|u| u.state == "failed")
    });
    let u = unit_line(&m, "crash.service").unwrap();
    assert!(
        u.reason
            .as_deref()
            .unwrap_or("")
            .contains("started 5 times"),
        "{u:?}"
    );
    assert!(
        !call(
            &m,
            Request::Start {
                unit: "nope.service".into()
            }
        )
        .ok
    );
}

/// Targets order what comes after them, and shutdown stops units in the reverse of that order,
/// each through its ExecStop= (with $MAINPID) before the signals.
#[test]
fn targets_order_starts_and_shutdown_runs_exec_stop_in_reverse() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let usr = "usr/lib/systemd/system";
    let log = root.join("order.log");
    let log = log.display();
    write(
        root,
        &format!("{usr}/net.service"),
        &format!(
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'sleep 0.5; echo net-up >> {log}'\n"
        ),
    );
    write(
        root,
        &format!("{usr}/online.target"),
        "[Unit]\nWants=net.service\nAfter=net.service\n",
    );
    write(
        root,
        &format!("{usr}/db.service"),
        &format!(
            "[Unit]\nWants=online.target\nAfter=online.target\n[Service]\nExecStart=/bin/sh -c 'echo db-up >> {log}; exec sleep 1000'\nExecStop=/bin/sh -c 'echo db-stop $MAINPID >> {log}'\n"
        ),
    );
    write(
        root,
        &format!("{usr}/app.service"),
        &format!(
            "[Unit]\nWants=db.service\nAfter=db.service\n[Service]\nExecStart=/bin/sh -c 'echo app-up >> {log}; exec sleep 1000'\nExecStop=/bin/sh -c 'sleep 0.5; echo app-stop >> {log}'\n"
        ),
    );
    let wants = root.join(format!("{usr}/multi-user.target.wants"));
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink("../app.service", wants.join("app.service")).unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_init-user"))
        .arg("--root")
        .arg(root)
        .spawn()
        .unwrap();
    let mut m = Manager {
        child,
        socket: root.join("run/init.sock"),
    };
    wait_for("the control socket", || m.socket.exists());
    wait_for("app.service active", || {
        unit_line(&m, "app.service").is_some_and(|u| u.state == "active")
    });
    let target = unit_line(&m, "online.target").unwrap();
    assert_eq!(
        (target.state.as_str(), target.sub.as_str()),
        ("active", "active")
    );
    let db_pid = unit_line(&m, "db.service").unwrap().pid.unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("order.log")).unwrap(),
        "net-up\ndb-up\napp-up\n"
    );
    assert!(call(&m, Request::Poweroff).ok);
    wait_for("the manager to exit", || {
        matches!(m.child.try_wait(), Ok(Some(_)))
    });
    assert_eq!(
        std::fs::read_to_string(root.join("order.log")).unwrap(),
        format!("net-up\ndb-up\napp-up\napp-stop\ndb-stop {db_pid}\n"),
        "app (ordered after db) stops first, and db's ExecStop ran while db still ran"
    );
    assert!(!alive(db_pid));
}
