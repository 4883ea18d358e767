//! Three machines booted from one cloud-config (on config-2 ISO drives) on the cluster switch,
//! with a discovery URL served
//! from the host: each takes its static lease on eth0 and fills `$private_ipv4` with it, they reach each other, SSH works through the
//! forwarded ports, a killed node stops answering while the others stay up and comes back with
//! start, a partition really separates them and heal restores it.

use anyhow::{bail, Result};
use crust_tests::Cluster;
use std::time::{Duration, Instant};

/// Whether `from` gets an answer from `ip` (two pings, two seconds each at most).
fn reaches(c: &Cluster, from: usize, ip: &str) -> Result<bool> {
    Ok(c.node(from).exec(&format!("ping -c 2 -W 2 {ip}"))?.status == 0)
}

/// The IPv4 address on the guest's eth0, once DHCP has set it.
fn eth0_address(c: &Cluster, i: usize) -> Result<String> {
    let t = Instant::now();
    loop {
        let out = c.node(i).sh("ip -4 -o addr show dev eth0")?;
        if let Some(a) = out.split_whitespace().skip_while(|w| *w != "inet").nth(1) {
            return Ok(a.to_string());
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("node{i} has no address on eth0 after 60 s: {out}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

#[test]
fn one_cloud_config_leases_ssh_kill_start_partition_and_heal() -> Result<()> {
    // The user data comes on a config-2 ISO9660 drive here (the FAT one in units.rs).
    let c = Cluster::of(3)
        .cloud_config(fixture("cluster.yaml"))
        .via_config_iso()
        .discovery()
        .start()?;
    // Every node got the same fresh discovery URL, and it answers from inside the cluster with
    // the size etcd's discovery protocol reads.
    let url = c
        .node(0)
        .sh("cat /etc/crust-e2e/discovery")?
        .trim()
        .to_string();
    assert!(
        url.starts_with("http://10.0.2.100:2379/v2/keys/discovery/"),
        "{url}"
    );
    assert_eq!(c.node(2).sh("cat /etc/crust-e2e/discovery")?.trim(), url);
    let size = c.node(1).sh(&format!("wget -q -O - {url}/_config/size"))?;
    assert!(size.contains(r#""value":"3""#), "{size}");
    for i in 0..3 {
        let ip = format!("10.0.0.{}", i + 1);
        assert_eq!(eth0_address(&c, i)?, format!("{ip}/24"));
        // The one document was applied on every node with the node's own address.
        assert_eq!(
            c.node(i).sh("cat /etc/crust-e2e/address")?.trim(),
            ip,
            "node{i}"
        );
        assert_eq!(
            c.node(i).sh("crustctl is-active e2e-loop.service")?.trim(),
            "active"
        );
        // The cluster's key reached user core through the node's metadata.
        assert_eq!(
            c.node(i).ssh("id -un; hostname")?,
            format!("core\nnode{i}\n")
        );
    }
    let net = c.inner().switch_status()?;
    assert!(net.ports.iter().all(|p| p.leased), "{net:?}");

    assert!(reaches(&c, 0, "10.0.0.2")?);
    assert!(reaches(&c, 0, "10.0.0.3")?);
    assert!(reaches(&c, 2, "10.0.0.2")?);

    // A power cut on node2: it stops answering, the others carry on.
    c.node(2).kill()?;
    assert!(!c.node(2).inner().is_running());
    assert!(
        !reaches(&c, 0, "10.0.0.3")?,
        "node0 still reaches killed node2"
    );
    assert!(
        reaches(&c, 0, "10.0.0.2")?,
        "node0 lost node1 when node2 died"
    );
    assert!(reaches(&c, 1, "10.0.0.1")?);
    c.node(2).start_and_wait()?;
    assert!(reaches(&c, 0, "10.0.0.3")?, "node2 did not come back");
    assert_eq!(
        c.node(2).sh("cat /etc/crust-e2e/address")?.trim(),
        "10.0.0.3"
    );

    c.partition(&[&[0], &[1, 2]])?;
    assert!(
        !reaches(&c, 0, "10.0.0.2")?,
        "node0 reached node1 across the partition"
    );
    assert!(
        !reaches(&c, 2, "10.0.0.1")?,
        "node2 reached node0 across the partition"
    );
    assert!(
        reaches(&c, 1, "10.0.0.3")?,
        "node1 lost node2 inside its own set"
    );

    c.heal()?;
    assert!(reaches(&c, 0, "10.0.0.2")?);
    assert!(reaches(&c, 2, "10.0.0.1")?);
    Ok(())
}
