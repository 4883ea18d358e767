//! `crust demo`, the README's main command: build the default image, boot a cluster under QEMU
//! from the bundled cloud-config (`builder/demo/cloud-config.yaml`), show what runs, and shut
//! everything down (or leave it up with `--keep`).

use crate::build::{self, BuildArgs, BuildError};
use crust_qemu::{Cluster, ClusterSpec, LaunchMode, Node};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Name of the demo's cluster, so it never touches the user's default cluster.
pub const CLUSTER: &str = "demo";

/// The user data every demo node boots with.
pub const CLOUD_CONFIG: &str = include_str!("../demo/cloud-config.yaml");

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Leave the cluster running afterwards (stop it with `crust cluster down --name demo`).
    #[arg(long)]
    pub keep: bool,
    /// Number of nodes.
    #[arg(short = 'n', long = "nodes", default_value_t = 3)]
    pub nodes: usize,
    /// Where the image is built.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Seconds to wait for the nodes to be ready.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Error)]
pub enum DemoError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Cluster(#[from] crust_qemu::Error),
    #[error("{0}")]
    Tour(String),
}

/// What the tour runs on node0, with a caption each.
const TOUR: &[(&str, &str)] = &[
    ("the OS", "cat /etc/os-release"),
    ("/usr: squashfs on the dm-verity device, read-only", "grep ' /usr ' /proc/mounts; echo \"dm device: $(cat /sys/block/dm-0/dm/name) over $(ls /sys/block/dm-0/slaves)\""),
    ("/: ext4 on ROOT, grown to the disk's end", "grep ' / ' /proc/mounts; df -h / | tail -n 1"),
    ("units, including hello.service from the cloud-config", "crustctl list-units"),
    ("what the cloud-config wrote", "cat /etc/motd.d/demo"),
    ("the boot entry, blessed after this good boot", "ls /boot/loader/entries"),
];

pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    eprintln!(
        "crust demo: building the default image into {}",
        args.out.display()
    );
    let built = build::run(&BuildArgs {
        out: args.out.clone(),
        ..BuildArgs::default()
    })?;
    let mut spec = ClusterSpec::new(&built.image, args.nodes);
    spec.name = CLUSTER.to_string();
    spec.mode = LaunchMode::Daemon;
    spec.cloud_config = Some(CLOUD_CONFIG.as_bytes().to_vec());
    eprintln!(
        "crust demo: booting {} node(s) under QEMU from builder/demo/cloud-config.yaml",
        args.nodes
    );
    if !args.keep {
        // Ctrl-C during the demo stops and removes its cluster like the normal end does.
        crust_qemu::process::on_interrupt(|| {
            if let Ok(c) = Cluster::open(None, CLUSTER) {
                let _ = c.down();
            }
        })
        .map_err(|e| DemoError::Tour(format!("installing the Ctrl-C handler: {e}")))?;
    }
    let cluster = Cluster::create(&spec, &|msg| eprintln!("crust: {msg}"))?;
    let result = tour(&cluster, Duration::from_secs(args.timeout));
    if result.is_err() {
        crust_qemu::process::wait_if_interrupted();
    }
    if args.keep && result.is_ok() {
        println!(
            "\nThe cluster keeps running. Try:\n  crust cluster status --name {CLUSTER}\n  \
             crust cluster ssh node0 --name {CLUSTER}\n  \
             crust cluster exec node0 --name {CLUSTER} -- crustctl list-units\n  \
             crust cluster partition node0 node1,node2 --name {CLUSTER}\n  \
             crust cluster down --name {CLUSTER}"
        );
    } else {
        let dir = cluster.dir().to_path_buf();
        cluster.down()?;
        eprintln!("crust demo: cluster stopped, {} removed", dir.display());
    }
    result
}

fn tour(cluster: &Cluster, timeout: Duration) -> Result<(), DemoError> {
    for r in cluster.wait_ready(timeout)? {
        println!(
            "{} ready: {:.1} s after QEMU started ({:.1} s of guest uptime), version {}, slot {}",
            r.node,
            r.elapsed.map(|d| d.as_secs_f64()).unwrap_or_default(),
            r.ready.uptime_ms as f64 / 1000.0,
            r.ready.version,
            r.ready.slot
        );
    }
    let node = cluster
        .nodes()
        .first()
        .ok_or_else(|| DemoError::Tour("the cluster has no nodes".into()))?;
    for (caption, cmd) in TOUR {
        println!("\n== {caption}\n$ {cmd}");
        let out = node.exec(cmd)?;
        print!("{}", out.stdout);
        if !out.success() {
            return Err(DemoError::Tour(format!(
                "`{cmd}` failed on {} with status {}",
                node.name(),
                out.status
            )));
        }
    }
    if cluster.nodes().len() > 1 {
        println!("\n== the cluster network: every node reaches every other");
        let ips = cluster_ips(cluster)?;
        for n in cluster.nodes() {
            let mut line = format!("{}:", n.name());
            for (other, ip) in &ips {
                if other == n.name() {
                    continue;
                }
                let out = n.exec(&format!("ping -c 1 -W 5 {ip} >/dev/null && echo ok"))?;
                let ok = out.success() && out.stdout.contains("ok");
                line.push_str(&format!(
                    " {other} ({ip}) {}",
                    if ok { "reachable" } else { "UNREACHABLE" }
                ));
                if !ok {
                    println!("{line}");
                    return Err(DemoError::Tour(format!(
                        "{} cannot reach {other} at {ip}",
                        n.name()
                    )));
                }
            }
            println!("{line}");
        }
    }
    if let Some(n) = cluster.nodes().last() {
        println!(
            "\n== SSH as core through the forwarded port: crust cluster ssh {} -- hostname",
            n.name()
        );
        let out = n.ssh("hostname")?;
        print!("{}", out.stdout);
        if !out.success() {
            return Err(DemoError::Tour(format!(
                "ssh to {} failed with status {}",
                n.name(),
                out.status
            )));
        }
    }
    println!();
    crust_qemu::cli::print_status(cluster);
    Ok(())
}

/// Each node's cluster address, as the switch leased it.
fn cluster_ips(cluster: &Cluster) -> Result<Vec<(String, String)>, DemoError> {
    let net = cluster.switch_status()?;
    Ok(cluster
        .nodes()
        .iter()
        .zip(&net.ports)
        .map(|(n, p): (&Node, _)| (n.name().to_string(), p.ip.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_cloud_config_is_clean() {
        let v = crust_common::cloudconfig::validate(CLOUD_CONFIG);
        assert!(
            v.diagnostics.is_empty(),
            "{}",
            v.render("demo/cloud-config.yaml")
        );
    }
}
