//! `crust cluster ...`: argument parsing and printing around [`crate::Cluster`].

use crate::cluster::{Cluster, ClusterSpec};
use crate::config::Delivery;
use crate::state::DEFAULT_CLUSTER;
use crate::switch::fabric::SwitchStatus;
use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
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
        /// User data for every node: a `#cloud-config` (checked first, like `crust
        /// validate-config`) or a `#!` script.
        #[arg(long, value_name = "FILE")]
        cloud_config: Option<PathBuf>,
        /// How the user data reaches the nodes: config-drive (a `config-2` FAT drive),
        /// config-drive-iso (the same as ISO9660, made with genisoimage) or fw-cfg.
        #[arg(long, default_value = "config-drive", value_name = "HOW")]
        config_via: String,
        /// Boot even when the cloud-config has errors (to see how nodes handle bad input).
        #[arg(long)]
        force_config: bool,
        /// Make a host service on 127.0.0.1:HOSTPORT reachable from guests at
        /// 10.0.2.100:GUESTPORT (a channel server, a registry, ...). Repeatable.
        #[arg(long, value_name = "GUESTPORT=HOSTPORT")]
        guestfwd: Vec<String>,
        /// Serve a fresh etcd discovery URL for this cluster from the host (a single-member
        /// crust kv); `$discovery` in the cloud-config is replaced with it, e.g.
        /// `coreos: {etcd2: {discovery: $discovery}}`.
        #[arg(long)]
        discovery: bool,
    },
    /// Open an SSH session (or run a command) as `core` on a node, through its forwarded port.
    Ssh {
        node: String,
        #[command(flatten)]
        name: NameArg,
        /// The command to run instead of a login shell.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Reboot a node and wait for it to be ready again: `crustctl reboot` in the guest, or a
    /// hard reset with --hard.
    Reboot {
        node: String,
        #[command(flatten)]
        name: NameArg,
        /// Press the reset button (QMP system_reset) instead of asking the guest.
        #[arg(long)]
        hard: bool,
        /// Seconds to wait for the node to be ready.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
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
    /// Shut a node down gracefully (`crustctl poweroff` in the guest; QEMU is stopped if the
    /// guest has not powered off within the timeout).
    Stop {
        node: String,
        #[command(flatten)]
        name: NameArg,
        /// Seconds to wait for the guest to power off.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
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
    /// Split the cluster network: frames pass only between nodes of the same set; a node in
    /// no set reaches nobody. Example: `crust cluster partition node0 node1,node2`.
    Partition {
        /// Comma-separated node names, one argument per set.
        #[arg(required = true, num_args = 1..)]
        sets: Vec<String>,
        #[command(flatten)]
        name: NameArg,
    },
    /// Cut one node off the cluster network (it keeps its DHCP lease).
    Isolate {
        node: String,
        #[command(flatten)]
        name: NameArg,
    },
    /// Drop a percentage of the frames between nodes (repeatable per cluster name).
    Loss {
        percent: u8,
        #[command(flatten)]
        name: NameArg,
    },
    /// Delay frames on the cluster network: every frame, or those to and from one node.
    Delay {
        ms: u32,
        /// Only frames sent or received by this node.
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        name: NameArg,
    },
    /// Undo partition, isolation, loss and delay: a perfect network again.
    Heal {
        #[command(flatten)]
        name: NameArg,
    },
    /// Run the cluster switch (started by `up`; not for direct use).
    #[command(hide = true)]
    SwitchDaemon {
        /// The cluster's switch directory (holds switch.json).
        #[arg(long)]
        dir: PathBuf,
        /// Fork into the background once the sockets are bound.
        #[arg(long)]
        daemonize: bool,
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
            cloud_config,
            config_via,
            force_config,
            guestfwd,
            discovery,
        } => {
            let mut spec = ClusterSpec::new(image, nodes);
            spec.name = name.name;
            spec.memory_mib = memory;
            spec.cpus = cpus;
            spec.disk_size = disk_gib << 30;
            spec.delivery = Delivery::parse(&config_via)?;
            spec.discovery = discovery;
            spec.guestfwd = guestfwd
                .iter()
                .map(|f| parse_guestfwd(f))
                .collect::<Result<_>>()?;
            if let Some(path) = cloud_config {
                spec.cloud_config = Some(read_user_data(&path, force_config)?);
            }
            up(spec, Duration::from_secs(timeout))
        }
        ClusterCommand::Ssh { node, name, cmd } => ssh(&name.name, &node, &cmd),
        ClusterCommand::Reboot {
            node,
            name,
            hard,
            timeout,
        } => {
            let cluster = Cluster::open(None, &name.name)?;
            let n = cluster.node_named(&node)?;
            let t = std::time::Instant::now();
            let timeout = Duration::from_secs(timeout);
            let ready = if hard {
                n.reset_and_wait(timeout)?
            } else {
                n.reboot_and_wait(timeout)?
            };
            println!(
                "{node} ready again in {:.1} s (version {}, slot {})",
                t.elapsed().as_secs_f64(),
                ready.version,
                ready.slot
            );
            Ok(())
        }
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
        ClusterCommand::Stop {
            node,
            name,
            timeout,
        } => {
            let cluster = Cluster::open(None, &name.name)?;
            let t = std::time::Instant::now();
            let how = cluster
                .node_named(&node)?
                .shutdown(Duration::from_secs(timeout))?;
            println!("{node}: {how:?} in {:.1} s", t.elapsed().as_secs_f64());
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
        ClusterCommand::Partition { sets, name } => {
            let cluster = Cluster::open(None, &name.name)?;
            let sets = sets
                .iter()
                .map(|set| {
                    set.split(',')
                        .filter(|n| !n.is_empty())
                        .map(|n| cluster.node_index(n))
                        .collect::<crate::Result<Vec<usize>>>()
                })
                .collect::<crate::Result<Vec<_>>>()?;
            let refs: Vec<&[usize]> = sets.iter().map(Vec::as_slice).collect();
            print_rules(&cluster, &cluster.partition(&refs)?);
            Ok(())
        }
        ClusterCommand::Isolate { node, name } => {
            let cluster = Cluster::open(None, &name.name)?;
            let status = cluster.isolate(cluster.node_index(&node)?)?;
            print_rules(&cluster, &status);
            Ok(())
        }
        ClusterCommand::Loss { percent, name } => {
            let cluster = Cluster::open(None, &name.name)?;
            print_rules(&cluster, &cluster.set_loss(percent)?);
            Ok(())
        }
        ClusterCommand::Delay { ms, node, name } => {
            let cluster = Cluster::open(None, &name.name)?;
            let node = node.map(|n| cluster.node_index(&n)).transpose()?;
            print_rules(&cluster, &cluster.set_delay(node, ms)?);
            Ok(())
        }
        ClusterCommand::Heal { name } => {
            let cluster = Cluster::open(None, &name.name)?;
            print_rules(&cluster, &cluster.heal()?);
            Ok(())
        }
        ClusterCommand::SwitchDaemon { dir, daemonize } => {
            Ok(crate::switch::daemon::main(&dir, daemonize)?)
        }
    }
}

/// One line describing the network faults in force.
pub fn rules_line(cluster: &Cluster, s: &SwitchStatus) -> String {
    let names = |set: &[usize]| {
        set.iter()
            .map(|&i| {
                cluster
                    .nodes()
                    .get(i)
                    .map(|n| n.name().to_string())
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let r = &s.rules;
    let mut parts = Vec::new();
    if let Some(sets) = &r.partition {
        let sets: Vec<String> = sets.iter().map(|s| names(s)).collect();
        parts.push(format!("partition {}", sets.join(" | ")));
    }
    if !r.isolated.is_empty() {
        parts.push(format!("isolated {}", names(&r.isolated)));
    }
    if r.loss_percent > 0 {
        parts.push(format!("loss {}%", r.loss_percent));
    }
    if r.delay_ms > 0 {
        parts.push(format!("delay {} ms", r.delay_ms));
    }
    for (n, ms) in &r.node_delay_ms {
        parts.push(format!("delay {} ms at {}", ms, names(&[*n])));
    }
    if parts.is_empty() {
        "healthy".into()
    } else {
        parts.join("; ")
    }
}

fn print_rules(cluster: &Cluster, s: &SwitchStatus) {
    println!("network: {}", rules_line(cluster, s));
}

fn up(spec: ClusterSpec, timeout: Duration) -> Result<()> {
    let name = spec.name.clone();
    // Interrupted while nodes boot: remove the half-made cluster rather than leave it running.
    let root = spec.state_root.clone();
    let interrupted = name.clone();
    crate::process::on_interrupt(move || {
        if let Ok(c) = Cluster::open(root.as_deref(), &interrupted) {
            let _ = c.down();
        }
    })
    .context("installing the Ctrl-C handler")?;
    let cluster = Cluster::create(&spec, &|msg| eprintln!("crust: {msg}"))?;
    eprintln!(
        "crust: started {} node(s) of cluster {name:?} from {}; waiting for ready",
        cluster.nodes().len(),
        cluster.config().image.display()
    );
    let ready = cluster.wait_ready(timeout);
    if ready.is_err() {
        crate::process::wait_if_interrupted();
    }
    let ready = ready.with_context(|| {
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

/// `GUESTPORT=HOSTPORT` of `--guestfwd`.
fn parse_guestfwd(s: &str) -> Result<(u16, u16)> {
    let parsed = s
        .split_once('=')
        .and_then(|(g, h)| Some((g.parse::<u16>().ok()?, h.parse::<u16>().ok()?)))
        .filter(|(g, h)| *g > 0 && *h > 0);
    parsed.with_context(|| {
        format!("--guestfwd {s:?}: expected GUESTPORT=HOSTPORT with ports 1-65535, e.g. 8080=38080")
    })
}

/// Reads a user-data file; a cloud-config with errors is refused (with every diagnostic) unless
/// `force` is set. Warnings are printed and do not stop anything.
pub fn read_user_data(path: &Path, force: bool) -> Result<Vec<u8>> {
    use crust_common::cloudconfig;
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the cloud-config {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let v = cloudconfig::validate(&text);
    if !v.diagnostics.is_empty() {
        eprint!("{}", v.render(&path.display().to_string()));
    }
    if !v.is_ok() && !force {
        bail!(
            "{} has {} error(s); fix them (`crust validate-config {}`) or pass --force-config",
            path.display(),
            v.errors(),
            path.display()
        );
    }
    Ok(bytes)
}

/// `ssh core@127.0.0.1 -p PORT` with the cluster's key; replaces this process so the session is
/// interactive and the exit status is the remote command's.
fn ssh(name: &str, node: &str, cmd: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let cluster = Cluster::open(None, name)?;
    let n = cluster.node_named(node)?;
    if !n.is_running() {
        bail!("{node} is not running; start it with `crust cluster start {node} --name {name}`");
    }
    let a = n
        .ssh_access()
        .with_context(|| format!("cluster {name:?} has no SSH forwarding; recreate it"))?;
    let mut c = std::process::Command::new(&a.ssh);
    c.args(crate::ssh::args(&a.key, a.port));
    if cmd.is_empty() {
        c.arg("-t");
    } else {
        c.arg("--").arg(cmd.join(" "));
    }
    let err = c.exec();
    bail!("running {}: {err}", a.ssh.display())
}

fn status(name: &str) -> Result<()> {
    let cluster = Cluster::open(None, name)?;
    print_status(&cluster);
    Ok(())
}

/// Prints the status table of a cluster (also used by `crust demo`).
pub fn print_status(cluster: &Cluster) {
    let net = cluster.switch_status().ok();
    println!(
        "{:<8} {:<8} {:>8} {:>8} {:>8} {:<5} {:<16} {:<16} {:<12} SLOT",
        "NODE", "STATE", "PID", "UPTIME", "RSS-MiB", "READY", "CLUSTER-IP", "SSH", "VERSION"
    );
    for (i, s) in cluster.status().into_iter().enumerate() {
        let dash = || "-".to_string();
        // The address is the node's static lease; `*` marks one the guest has not taken yet.
        let ip = net
            .as_ref()
            .and_then(|n| n.ports.get(i))
            .map(|p| format!("{}{}", p.ip, if p.leased { "" } else { "*" }))
            .unwrap_or_else(dash);
        let ssh = cluster
            .nodes()
            .get(i)
            .and_then(|n| n.ssh_access())
            .map(|a| format!("127.0.0.1:{}", a.port))
            .unwrap_or_else(dash);
        println!(
            "{:<8} {:<8} {:>8} {:>8} {:>8} {:<5} {:<16} {:<16} {:<12} {}",
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
            ip,
            ssh,
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
    if let Some(d) = &cluster.config().discovery {
        println!(
            "discovery: {} (served on 127.0.0.1:{}, key {})",
            d.url, d.port, d.key
        );
    }
    match &net {
        Some(n) => println!(
            "switch: {} ({}), network {}",
            match cluster.switch().pid() {
                Some(pid) => format!("pid {pid}"),
                None => "in-process".into(),
            },
            n.ip,
            rules_line(cluster, n)
        ),
        None => println!("switch: not running"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_forwards_parse_or_say_how() {
        assert_eq!(parse_guestfwd("8080=38080").unwrap(), (8080, 38080));
        for bad in ["8080", "x=1", "0=1", "1=70000", ""] {
            let e = parse_guestfwd(bad).unwrap_err().to_string();
            assert!(e.contains("GUESTPORT=HOSTPORT"), "{e}");
        }
    }
}
