//! `crust cluster ...`: argument parsing and printing around [`crate::Cluster`].

use crate::cluster::{Cluster, ClusterSpec};
use crate::node::LaunchMode;
use crate::state::DEFAULT_CLUSTER;
use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(clap::Args)]
struct NameArg {
    /// Cluster name (a directory under the state root: $CRUST_STATE, else
    /// $XDG_STATE_HOME/crust/clusters, else ~/.local/state/crust/clusters).
    #[arg(long, default_value = DEFAULT_CLUSTER)]
    name: String,
}

#[derive(clap::Subcommand)]
enum ClusterCommand {
    /// Start N machines from an image; returns once every node printed its ready line.
    Up {
        /// Number of nodes (node0, node1, ...).
        #[arg(short = 'n', long = "nodes", default_value_t = 1)]
        nodes: usize,
        /// A raw image built by `crust build`.
        #[arg(long, default_value = "out/crust.img")]
        image: PathBuf,
        #[command(flatten)]
        name: NameArg,
        /// Seconds to wait for every node to be ready.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Memory per node in MiB.
        #[arg(long, default_value_t = 512)]
        memory: u32,
        /// Virtual CPUs per node.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Virtual disk size per node in GiB (ROOT grows to fill it on first boot).
        #[arg(long, default_value_t = 8)]
        disk_gib: u64,
    },
    /// Show each node: running or stopped, pid, uptime, memory, ready line.
    Status {
        #[command(flatten)]
        name: NameArg,
    },
    /// Stop every node and remove the cluster's state.
    Down {
        #[command(flatten)]
        name: NameArg,
    },
    /// Run a shell command as root on a node, through its console shell.
    Exec {
        node: String,
        #[command(flatten)]
        name: NameArg,
        /// Seconds to wait for the command.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// The command; its words are joined with spaces and run by the guest's shell.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Print a node's serial console log.
    Logs {
        node: String,
        #[command(flatten)]
        name: NameArg,
        /// Keep printing as the log grows (Ctrl-C to stop).
        #[arg(short, long)]
        follow: bool,
    },
    /// Cut a node's power (SIGKILL to its QEMU).
    Kill {
        node: String,
        #[command(flatten)]
        name: NameArg,
    },
    /// Start a stopped node and wait for it to be ready.
    Start {
        node: String,
        #[command(flatten)]
        name: NameArg,
        /// Seconds to wait for the node to be ready.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

pub fn run(args: ClusterArgs) -> Result<()> {
    match args.command {
        ClusterCommand::Up {
            nodes,
            image,
            name,
            timeout,
            memory,
            cpus,
            disk_gib,
        } => up(
            ClusterSpec {
                name: name.name,
                image,
                nodes,
                memory_mib: memory,
                cpus,
                disk_size: disk_gib << 30,
                mode: LaunchMode::Daemon,
                state_root: None,
            },
            Duration::from_secs(timeout),
        ),
        ClusterCommand::Status { name } => status(&name.name),
        ClusterCommand::Down { name } => down(&name.name),
        ClusterCommand::Exec {
            node,
            name,
            timeout,
            cmd,
        } => exec(
            &name.name,
            &node,
            &cmd.join(" "),
            Duration::from_secs(timeout),
        ),
        ClusterCommand::Logs { node, name, follow } => logs(&name.name, &node, follow),
        ClusterCommand::Kill { node, name } => {
            let cluster = Cluster::open(None, &name.name)?;
            let stopped = cluster.node_named(&node)?.kill()?;
            println!("{node}: {stopped:?}");
            Ok(())
        }
        ClusterCommand::Start {
            node,
            name,
            timeout,
        } => {
            let cluster = Cluster::open(None, &name.name)?;
            let n = cluster.node_named(&node)?;
            if !n.start()? {
                println!("{node} is already running");
                return Ok(());
            }
            let ready = n.wait_ready(1, Duration::from_secs(timeout))?;
            let secs = n
                .started_at()
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or(0.0);
            println!(
                "{node} ready in {secs:.1} s (version {}, slot {})",
                ready.version, ready.slot
            );
            Ok(())
        }
    }
}

fn up(spec: ClusterSpec, timeout: Duration) -> Result<()> {
    let name = spec.name.clone();
    let cluster = Cluster::create(&spec, &|msg| eprintln!("crust: {msg}"))?;
    eprintln!(
        "crust: started {} node(s) of cluster {name:?} from {}; waiting for ready",
        cluster.nodes().len(),
        cluster.config().image.display()
    );
    let ready = cluster.wait_ready(timeout).with_context(|| {
        format!(
            "cluster {name:?} is left running for inspection: `crust cluster logs NODE --name {name}`, \
             then `crust cluster down --name {name}`"
        )
    })?;
    for r in ready {
        let host = r
            .elapsed
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_default();
        println!(
            "{} ready in {host} (guest uptime {:.1} s, version {}, slot {})",
            r.node,
            r.ready.uptime_ms as f64 / 1000.0,
            r.ready.version,
            r.ready.slot
        );
    }
    Ok(())
}

fn status(name: &str) -> Result<()> {
    let cluster = Cluster::open(None, name)?;
    print_status(&cluster);
    Ok(())
}

/// Prints the status table of a cluster (also used by `crust demo`).
pub fn print_status(cluster: &Cluster) {
    println!(
        "{:<8} {:<8} {:>8} {:>8} {:>8} {:<5} {:<12} SLOT",
        "NODE", "STATE", "PID", "UPTIME", "RSS-MiB", "READY", "VERSION"
    );
    for s in cluster.status() {
        let dash = || "-".to_string();
        println!(
            "{:<8} {:<8} {:>8} {:>8} {:>8} {:<5} {:<12} {}",
            s.name,
            if s.running() { "running" } else { "stopped" },
            s.pid.map(|p| p.to_string()).unwrap_or_else(dash),
            s.uptime
                .map(|u| format!("{}s", u.as_secs()))
                .unwrap_or_else(dash),
            s.rss_kib
                .map(|k| (k / 1024).to_string())
                .unwrap_or_else(dash),
            if s.ready.is_some() { "yes" } else { "no" },
            s.ready
                .as_ref()
                .map(|r| r.version.clone())
                .unwrap_or_else(dash),
            s.ready
                .as_ref()
                .map(|r| r.slot.clone())
                .unwrap_or_else(dash),
        );
    }
}

fn down(name: &str) -> Result<()> {
    let cluster = Cluster::open(None, name)?;
    let dir = cluster.dir().to_path_buf();
    for (node, how) in cluster.down()? {
        println!("{node}: {how:?}");
    }
    println!("removed {}", dir.display());
    Ok(())
}

fn exec(name: &str, node: &str, cmd: &str, timeout: Duration) -> Result<()> {
    let cluster = Cluster::open(None, name)?;
    let out = cluster.node_named(node)?.exec_timeout(cmd, timeout)?;
    print!("{}", out.stdout);
    std::io::stdout().flush().ok();
    if out.status != 0 {
        std::process::exit(out.status.clamp(1, 255));
    }
    Ok(())
}

fn logs(name: &str, node: &str, follow: bool) -> Result<()> {
    let cluster = Cluster::open(None, name)?;
    let path = cluster.node_named(node)?.console_log();
    let mut out = std::io::stdout().lock();
    let mut pos = 0u64;
    loop {
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len < pos {
                    pos = 0; // restarted: QEMU began a new log
                }
                f.seek(SeekFrom::Start(pos))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                pos += buf.len() as u64;
                out.write_all(&buf)?;
                out.flush()?;
            }
            Err(e) if follow && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("reading {}: {e}", path.display()),
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
