//! What the first boot makes and what must survive later boots: a `#!` user-data script runs
//! once (a reboot with the same user data does not run it again), the SSH host keys made on
//! first boot are kept on ROOT, the SSH server offers public-key logins only (no passwords, no
//! root), `crustctl cloud-config validate` in the guest reports errors with line numbers, the
//! machine id comes from the system UUID and is kept, and
//! the boot target and network-online.target are units that are reached.

use anyhow::{Context, Result};
use crust_tests::Cluster;
use std::process::Command;

const SCRIPT: &str = "#!/bin/sh\n\
# user data as a script: coreos-cloudinit ran it once\n\
echo \"run by $(id -un)\" >> /var/lib/script-runs\n\
mkdir -p /etc/from-script && hostname > /etc/from-script/host\n";

/// The host keys the SSH server presents, as `ssh-keyscan` prints them (type and key).
fn host_keys(port: u16) -> Result<Vec<String>> {
    let out = Command::new("ssh-keyscan")
        .args(["-p", &port.to_string(), "-t", "ed25519,ecdsa", "127.0.0.1"])
        .output()
        .context("running ssh-keyscan (openssh-client)")?;
    let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').map(|(_, k)| k.to_string()))
        .collect();
    keys.sort();
    Ok(keys)
}

/// An SSH login attempt as `user` with only the given methods; returns (success, stderr).
fn try_login(port: u16, user: &str, extra: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=20",
            "-p",
            &port.to_string(),
        ])
        .args(extra)
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .output()
        .context("running ssh")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn script_runs_once_host_keys_persist_and_only_keys_log_in() -> Result<()> {
    let c = Cluster::of(1).via_fw_cfg().user_data(SCRIPT).start()?;
    let n = c.node(0);
    let access = n
        .inner()
        .ssh_access()
        .context("the test cluster has SSH forwarding")?;
    let port = access.port;
    let key = access.key.display().to_string();

    assert_eq!(n.sh("cat /var/lib/script-runs")?, "run by root\n");
    assert_eq!(n.sh("cat /etc/from-script/host")?.trim(), n.name());
    assert_eq!(
        n.sh("crustctl is-active cloudinit.service")?.trim(),
        "active"
    );

    // The boot target and network-online.target are units, reached.
    for t in [
        "multi-user.target",
        "network.target",
        "network-online.target",
    ] {
        assert_eq!(
            n.sh(&format!("crustctl is-active {t}"))?.trim(),
            "active",
            "{t}"
        );
    }

    // The machine id was made on first boot from the system UUID QEMU was given (the metadata
    // uuid), as systemd does in VMs.
    let machine_id = n.sh("cat /etc/machine-id")?.trim().to_string();
    assert_eq!(
        machine_id,
        crust_qemu::config::node_uuid("e2e", n.name()).replace('-', "")
    );

    let keys = host_keys(port)?;
    assert_eq!(keys.len(), 2, "an ed25519 and an ecdsa host key: {keys:?}");
    // Public keys log in as core; passwords are not offered at all; root cannot log in.
    assert!(try_login(port, "core", &["-i", &key])?.0);
    let (ok, err) = try_login(
        port,
        "core",
        &[
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ],
    )?;
    assert!(!ok, "a password login went through");
    assert!(
        err.contains("Permission denied (publickey)"),
        "the server must offer publickey only: {err}"
    );
    let (ok, err) = try_login(port, "root", &["-i", &key])?;
    assert!(!ok, "root logged in over SSH: {err}");

    // In the guest, validation names the line of each problem and fails on errors.
    n.sh("printf '#cloud-config\\nhostname: ok\\nwrite_files:\\n  - path: /usr/lib/x\\n    permissions: \"999\"\\nbogus_key: 1\\n' > /tmp/bad.yaml")?;
    let v = n.exec("crustctl cloud-config validate /tmp/bad.yaml")?;
    assert_ne!(v.status, 0, "{v:?}");
    assert!(
        v.stdout.contains(":4:") && v.stdout.contains("/usr is read-only"),
        "{v:?}"
    );
    assert!(
        v.stdout.contains(":5:") && v.stdout.contains("permissions"),
        "{v:?}"
    );
    assert!(
        v.stdout.contains(":6:") && v.stdout.contains("bogus_key"),
        "{v:?}"
    );
    n.sh("printf '#cloud-config\\nhostname: fine\\n' > /tmp/good.yaml")?;
    assert_eq!(
        n.exec("crustctl cloud-config validate /tmp/good.yaml")?
            .status,
        0
    );

    // A clean reboot: same user data, the script does not run again; the host keys are kept.
    n.reboot_and_wait()?;
    assert_eq!(n.sh("cat /var/lib/script-runs")?, "run by root\n");
    // The ready line means dropbear was started, not that it listens yet: wait for it to answer.
    let t = std::time::Instant::now();
    let mut after = host_keys(port)?;
    while after.is_empty() && t.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(500));
        after = host_keys(port)?;
    }
    assert_eq!(after, keys, "host keys changed across a reboot");
    assert_eq!(n.sh("cat /etc/machine-id")?.trim(), machine_id);
    assert!(try_login(port, "core", &["-i", &key])?.0);
    Ok(())
}
