//! The service manager and cloud-config story of issue 4, end to end: a node boots from a
//! cloud-config that sets its hostname, writes files and adds a looping unit with
//! Restart=always RestartSec=2; the unit is active, killing its main process restarts it about
//! 2 s later (the restart is counted in list-units), and `crustctl stop` also kills the child
//! it forked. SSH (as core) sees what cloud-config wrote.

use anyhow::{bail, Result};
use crust_tests::Cluster;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The main pid of `unit` as list-units shows it.
fn main_pid(c: &Cluster, unit: &str) -> Result<Option<u32>> {
    let out = c.node(0).sh("crustctl list-units")?;
    Ok(out
        .lines()
        .find(|l| l.starts_with(unit))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|p| p.parse().ok()))
}

#[test]
fn cloud_config_unit_restarts_and_stop_kills_children() -> Result<()> {
    let c = Cluster::of(1).cloud_config(fixture("units.yaml")).start()?;
    let n = c.node(0);
    assert_eq!(n.ssh("hostname")?.trim(), "story");
    assert_eq!(
        n.ssh("cat /etc/story/plain.txt")?,
        "written by cloud-config\n"
    );
    assert_eq!(
        n.sh("stat -c '%a %U' /etc/story/plain.txt")?.trim(),
        "640 core"
    );
    assert_eq!(n.sh("cat /etc/story/encoded.txt")?, "encoded\n");
    // users: made like useradd, with groups, home and keys.
    let id = n.sh("id elroy")?;
    assert!(
        id.contains("uid=1000(elroy)") && id.contains("(wheel)") && id.contains("(docker)"),
        "{id}"
    );
    assert_eq!(
        n.sh("stat -c '%U %a' /home/elroy /home/elroy/.ssh/authorized_keys")?,
        "elroy 755\nelroy 600\n"
    );
    assert_eq!(n.sh("crustctl is-active loop.service")?.trim(), "active");
    // The .network unit from cloud-config was written and networkd restarted to apply it.
    let t = Instant::now();
    while !n.sh("ip -4 addr show dev eth0")?.contains("10.0.0.77/24") {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("eth0 never got the static address: {}", n.sh("ip -4 addr")?);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let resolv = n.sh("cat /etc/resolv.conf")?;
    assert!(
        resolv.contains("nameserver 10.0.0.53") && resolv.contains("search story.internal"),
        "{resolv}"
    );
    assert!(n.sh("cat /etc/hosts")?.contains("localhost"));
    // A unit whose condition fails is skipped, not failed, and did not hold readiness back.
    let cond = n.exec("crustctl status conditional.service")?;
    assert!(cond.stdout.contains("condition failed"), "{cond:?}");
    assert_eq!(
        n.exec("crustctl logs -u conditional.service")?
            .stdout
            .trim(),
        ""
    );
    // Ready waited for the notify service's READY=1, and its STATUS= shows.
    assert_eq!(
        n.sh("crustctl is-active notified.service")?.trim(),
        "active"
    );
    assert!(n
        .sh("crustctl status notified.service")?
        .contains("Status: \"serving\""));

    let first = main_pid(&c, "loop.service")?.expect("loop.service has a main pid");
    let killed = Instant::now();
    n.sh(&format!("kill -9 {first}"))?;
    let second = loop {
        if let Some(p) = main_pid(&c, "loop.service")?.filter(|&p| p != first) {
            break p;
        }
        if killed.elapsed() > Duration::from_secs(30) {
            bail!("loop.service was not restarted within 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = killed.elapsed();
    eprintln!(
        "restarted as pid {second} after {:.1} s",
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_millis(1800),
        "restarted too early: {took:?}"
    );
    let listing = n.sh("crustctl list-units")?;
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("loop.service") && l.contains("restarts=1")),
        "{listing}"
    );

    // Status shows the service's cgroup and what it uses; the forked child is in it too.
    let status = n.sh("crustctl status loop.service")?;
    assert!(status.contains("State: active (running)"), "{status}");
    assert!(status.contains("Restarts: 1"), "{status}");
    assert!(
        status.contains("loop.service: loop started"),
        "status shows recent log lines: {status}"
    );
    assert!(status.contains("Memory: "), "{status}");
    assert!(
        status.contains("CGroup: /sys/fs/cgroup/system.slice/loop.service"),
        "{status}"
    );
    let procs = n.sh("cat /sys/fs/cgroup/system.slice/loop.service/cgroup.procs")?;
    let child_now = n.sh("cat /run/loop-child.pid")?.trim().to_string();
    assert!(procs.lines().any(|l| l.trim() == child_now), "{procs}");
    // ExecStartPre= (a failing `-` one included) and ExecStartPost= ran for both starts.
    assert_eq!(n.sh("cat /run/loop-pre.log")?, "pre\npre\n");
    let t = Instant::now();
    while n.sh("cat /run/loop-post.log")? != "post\npost\n" {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("ExecStartPost= did not run for both starts");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both runs' output is in the unit's log, stamped, under /var/log/crust.
    let logs = n.sh("crustctl logs -u loop.service -n 10")?;
    assert_eq!(
        logs.matches("loop.service: loop started").count(),
        2,
        "{logs}"
    );
    assert!(n.sh("ls /var/log/crust")?.contains("loop.service.log"));
    assert_eq!(n.exec("crustctl status nope.service")?.status, 4);

    // reload runs ExecReload= with $MAINPID.
    n.sh("crustctl reload loop.service")?;
    let t = Instant::now();
    while n.exec("cat /run/loop-reload.log")?.stdout.trim() != format!("reload {second}") {
        if t.elapsed() > Duration::from_secs(10) {
            bail!(
                "ExecReload= did not run: {:?}",
                n.exec("cat /run/loop-reload.log")?
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // stop runs ExecStop= first and takes the forked child with it.
    let child = n.sh("cat /run/loop-child.pid")?.trim().to_string();
    assert_eq!(
        n.exec(&format!("kill -0 {child}"))?.status,
        0,
        "child not running"
    );
    n.sh("crustctl stop loop.service")?;
    assert_eq!(
        n.exec("crustctl is-active loop.service")?.stdout.trim(),
        "inactive"
    );
    let t = Instant::now();
    while n.exec(&format!("kill -0 {child}"))?.status == 0 {
        if t.elapsed() > Duration::from_secs(15) {
            bail!("the forked child {child} outlived crustctl stop");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        n.sh("cat /run/loop-stop.log")?.trim(),
        format!("stop {second}")
    );
    // And it stays stopped: no restart after a stop.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        n.exec("crustctl is-active loop.service")?.stdout.trim(),
        "inactive"
    );
    // Unit files: what is enabled, what a unit is made of, masking.
    let files = n.sh("crustctl list-unit-files")?;
    assert!(
        files
            .lines()
            .any(|l| l.starts_with("sshd.service") && l.ends_with("enabled")),
        "{files}"
    );
    assert!(
        files
            .lines()
            .any(|l| l.starts_with("loop.service") && l.ends_with("static")),
        "{files}"
    );
    assert!(n
        .sh("crustctl cat loop.service")?
        .starts_with("# /etc/systemd/system/loop.service\n[Unit]"));
    // A unit file of its own in /etc cannot be masked (as with systemctl); a vendor one can.
    let refused = n.exec("crustctl mask loop.service")?;
    assert!(
        refused.status != 0 && refused.stdout.contains("not a link"),
        "{refused:?}"
    );
    n.sh("crustctl mask sshd.service")?;
    let masked = n.exec("crustctl restart sshd.service")?;
    assert!(
        masked.status != 0 && masked.stdout.contains("masked"),
        "{masked:?}"
    );
    n.sh("crustctl unmask sshd.service")?;
    n.sh("crustctl start loop.service")?;
    assert_eq!(n.sh("crustctl is-active loop.service")?.trim(), "active");
    Ok(())
}

#[test]
fn malformed_cloud_config_applies_nothing_and_still_boots() -> Result<()> {
    // A valid write_files entry next to an error: neither may be applied.
    let c = Cluster::of(1)
        .via_fw_cfg()
        .user_data("#cloud-config\nwrite_files:\n  - path: /etc/half.txt\n    content: x\n  - path: /usr/lib/nope\n    content: y\nhostname: [not, a, string]\n")
        .start()?;
    let n = c.node(0);
    assert_ne!(n.exec("test -e /etc/half.txt")?.status, 0, "half-applied");
    assert_eq!(
        n.exec("crustctl is-active cloudinit.service")?
            .stdout
            .trim(),
        "failed"
    );
    let log = std::fs::read_to_string(n.inner().console_log())?;
    assert!(
        log.contains("nothing from the document was applied"),
        "{log}"
    );
    Ok(())
}
