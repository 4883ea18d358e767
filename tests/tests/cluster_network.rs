//! Three machines on the cluster switch: each takes its static lease on eth0 during boot, they
//! reach each other, a partition really separates them and heal restores it.

use anyhow::{bail, Result};
use crust_tests::Cluster;
use std::time::{Duration, Instant};

/// Whether `from` gets an answer from `ip` (two pings, two seconds each at most).
fn reaches(c: &Cluster, from: usize, ip: &str) -> Result<bool> {
    Ok(c.node(from).exec(&format!("ping -c 2 -W 2 {ip}"))?.status == 0)
}

/// The IPv4 address on the guest's eth0, once udhcpc has set it.
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

#[test]
fn leases_reachability_partition_and_heal() -> Result<()> {
    let c = Cluster::up(3)?;
    for i in 0..3 {
        assert_eq!(eth0_address(&c, i)?, format!("10.0.0.{}/24", i + 1));
    }
    let net = c.inner().switch_status()?;
    assert!(net.ports.iter().all(|p| p.leased), "{net:?}");

    assert!(reaches(&c, 0, "10.0.0.2")?);
    assert!(reaches(&c, 0, "10.0.0.3")?);
    assert!(reaches(&c, 2, "10.0.0.2")?);

    c.inner().partition(&[&[0], &[1, 2]])?;
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

    c.inner().heal()?;
    assert!(reaches(&c, 0, "10.0.0.2")?);
    assert!(reaches(&c, 2, "10.0.0.1")?);
    Ok(())
}
