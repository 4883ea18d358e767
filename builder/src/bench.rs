//! `crust bench kv`: crust kv and etcd 3.4 (`--enable-v2`) side by side on loopback, started
//! with the kv test harness (`crust_kv::testkit`), driven in the same run by the same load:
//! N concurrent clients on keep-alive HTTP/1.1 connections doing PUTs, then GETs of the keys
//! written. Prints ops/s, p50 and p99 latency for both and the ratio crust/etcd.
//!
//! Each phase runs in rounds that alternate between the two servers (etcd then crust, then
//! crust then etcd, ...), each round with an equal share of the work, so that drift in the
//! machine (a shared VM's disk can slow by half within a minute) weighs on both sides alike;
//! the figures pool every round, and the per-round ratios show the spread. Each server's
//! first round starts with a short warm-up that is not measured. Members talk to each other directly (no test proxies). Clients go
//! round the members leader first on both sides, so both clusters get the same load shape
//! (a write sent to a follower costs a forward to the leader, on etcd as on crust).

use crust_common::http::Conn;
use crust_kv::testkit::{Cluster, Flavor, Spec, TestkitError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// crust kv and etcd 3.4 side by side under the same client load.
    Kv(KvBenchArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct KvBenchArgs {
    /// Concurrent clients, each with its own keep-alive connection (spread over the members).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Operations per phase and server (ignored with --duration).
    #[arg(long, default_value_t = 10_000)]
    pub ops: u64,
    /// Run each phase for this many seconds instead of a number of operations.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Rounds per phase: the servers take turns this many times, each round with an equal
    /// share of --ops or --duration.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Members per cluster.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// GETs with quorum=true (through the log) instead of local reads (etcdctl's default).
    #[arg(long)]
    pub quorum: bool,
    /// The crust-agent binary (default: CRUST_AGENT_BIN, then `crust-agent` next to this
    /// `crust`, then a fresh build).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// The etcd 3.4 binary.
    #[arg(long, default_value = "etcd")]
    pub etcd: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("--clients, --members and --rounds must be at least 1, --ops or --duration above 0")]
    Usage,
    #[error("etcd cannot run: {0}")]
    NoEtcd(String),
    #[error(transparent)]
    Cluster(#[from] TestkitError),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error("{agent} cannot run a kv member: {why}; build it with `cargo build --release -p crust-agent` or pass --agent")]
    NoKv { agent: String, why: String },
    #[error("the {server} {phase} phase failed every operation: {first}")]
    AllFailed {
        server: &'static str,
        phase: &'static str,
        first: String,
    },
}

/// Latency and throughput of one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Figures {
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The `q`-quantile (0..=1) of sorted latencies, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Figures from every successful operation's latency (µs), the error count and the wall time.
pub fn figures(mut latencies: Vec<u64>, errors: u64, seconds: f64) -> Figures {
    latencies.sort_unstable();
    Figures {
        ops: latencies.len() as u64,
        errors,
        seconds,
        p50_us: quantile(&latencies, 0.50),
        p99_us: quantile(&latencies, 0.99),
    }
}

/// One row of the table.
pub fn row(phase: &str, server: &str, f: &Figures) -> String {
    format!(
        "{phase:<5} {server:<6} {:>10.0} {:>9.2} {:>9.2} {:>8} {:>8}",
        f.ops_per_sec(),
        f.p50_us as f64 / 1000.0,
        f.p99_us as f64 / 1000.0,
        f.ops,
        f.errors
    )
}

/// The ratio line of a phase: crust over etcd for throughput and latencies.
pub fn ratio(phase: &str, crust: &Figures, etcd: &Figures) -> String {
    let r = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    format!(
        "{phase}: ops/s {}  p50 {}  p99 {}",
        r(crust.ops_per_sec(), etcd.ops_per_sec()),
        r(crust.p50_us as f64, etcd.p50_us as f64),
        r(crust.p99_us as f64, etcd.p99_us as f64)
    )
}

/// Where the load goes: the members' client addresses.
struct Target {
    label: &'static str,
    addrs: Vec<SocketAddr>,
}

impl Target {
    /// The members of `cluster` once it is healthy, its leader first.
    fn leader_first(label: &'static str, cluster: &mut Cluster) -> Result<Target, BenchError> {
        let leader = cluster.wait_healthy(Duration::from_secs(30))?;
        let n = cluster.len();
        Ok(Target {
            label,
            addrs: (0..n)
                .map(|i| cluster.client_addr((leader + i) % n))
                .collect(),
        })
    }
}

/// How much work a phase does.
#[derive(Clone, Copy)]
enum Amount {
    Ops(u64),
    For(Duration),
}

impl Amount {
    /// One round's share of the work (at least one operation).
    fn share(self, rounds: u32) -> Amount {
        match self {
            Amount::Ops(n) => Amount::Ops(n.div_ceil(u64::from(rounds)).max(1)),
            Amount::For(d) => Amount::For(d / rounds),
        }
    }
}

/// What one round of a phase measured: every successful operation's latency (µs), the errors
/// and the wall time.
#[derive(Default)]
struct Sample {
    latencies: Vec<u64>,
    errors: u64,
    seconds: f64,
}

impl Sample {
    fn add(&mut self, other: &Sample) {
        self.latencies.extend_from_slice(&other.latencies);
        self.errors += other.errors;
        self.seconds += other.seconds;
    }

    fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.latencies.len() as f64 / self.seconds
        } else {
            0.0
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Put,
    Get,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Put => "PUT",
            Phase::Get => "GET",
        }
    }
}

/// crust's ops/s over etcd's, round by round.
fn round_ratios(crust: &[f64], etcd: &[f64]) -> String {
    crust
        .iter()
        .zip(etcd)
        .map(|(c, e)| {
            if *e > 0.0 {
                format!("{:.2}", c / e)
            } else {
                "-".into()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs one round of a phase with `clients` threads: PUTs write keys from `first` on, GETs
/// read keys below `written`.
#[allow(clippy::too_many_arguments)]
fn drive(
    target: &Target,
    phase: Phase,
    clients: usize,
    amount: Amount,
    value: &Arc<String>,
    first: u64,
    written: u64,
    quorum: bool,
) -> Result<Sample, BenchError> {
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let addr = target.addrs[c % target.addrs.len()];
            let next = next.clone();
            let stop = stop.clone();
            let value = value.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr, Duration::from_secs(10));
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                let form = format!("value={value}");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let done = match amount {
                        Amount::Ops(n) => i >= n,
                        Amount::For(_) => stop.load(Ordering::Relaxed),
                    };
                    if done {
                        break;
                    }
                    let t = Instant::now();
                    let r = match phase {
                        Phase::Put => conn.request(
                            "PUT",
                            &format!("/v2/keys/bench/k{}", first + i),
                            Some(&form),
                        ),
                        Phase::Get => {
                            let k = if written > 0 { i % written } else { i };
                            let q = if quorum { "?quorum=true" } else { "" };
                            conn.request("GET", &format!("/v2/keys/bench/k{k}{q}"), None)
                        }
                    };
                    let us = t.elapsed().as_micros() as u64;
                    match r {
                        Ok(r) if (200..300).contains(&r.status) => lat.push(us),
                        Ok(r) => {
                            errors += 1;
                            first_error.get_or_insert(format!(
                                "HTTP {}: {}",
                                r.status,
                                r.body.trim()
                            ));
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                (lat, errors, first_error)
            })
        })
        .collect();
    if let Amount::For(d) = amount {
        std::thread::sleep(d);
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first = None;
    for t in threads {
        let (lat, e, f) = t.join().unwrap_or_default();
        all.extend(lat);
        errors += e;
        first = first.or(f);
    }
    let seconds = start.elapsed().as_secs_f64();
    if all.is_empty() {
        return Err(BenchError::AllFailed {
            server: target.label,
            phase: phase.name(),
            first: first.unwrap_or_else(|| "no operation ran".into()),
        });
    }
    Ok(Sample {
        latencies: all,
        errors,
        seconds,
    })
}

/// The crust-agent to run: `--agent`, CRUST_AGENT_BIN, next to this program, or a build.
fn find_agent(args: &KvBenchArgs) -> Result<PathBuf, BenchError> {
    if let Some(a) = &args.agent {
        return Ok(a.clone());
    }
    if std::env::var_os("CRUST_AGENT_BIN").is_none() {
        if let Some(beside) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("crust-agent")))
            .filter(|p| p.is_file())
        {
            return Ok(beside);
        }
    }
    Ok(crate::agent::build(false)?)
}

fn first_line(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Runs the benchmark and returns the report.
pub fn run_kv(args: &KvBenchArgs) -> Result<String, BenchError> {
    let amount = match args.duration {
        Some(s) if s > 0.0 => Amount::For(Duration::from_secs_f64(s)),
        Some(_) => return Err(BenchError::Usage),
        None if args.ops > 0 => Amount::Ops(args.ops),
        None => return Err(BenchError::Usage),
    };
    if args.clients == 0 || args.members == 0 || args.rounds == 0 {
        return Err(BenchError::Usage);
    }
    let etcd_flavor = Flavor::Etcd {
        program: args.etcd.clone(),
    };
    etcd_flavor.available().map_err(BenchError::NoEtcd)?;
    let agent = find_agent(args)?;
    let crust_flavor = Flavor::Crust {
        agent: agent.clone(),
    };
    let spec = |flavor| Spec {
        proxied: false,
        ..Spec::new(flavor, args.members)
    };
    let mut out = String::new();
    crust_flavor.available().map_err(|why| BenchError::NoKv {
        agent: agent.display().to_string(),
        why,
    })?;
    let mut etcd = Cluster::start(spec(etcd_flavor))?;
    let mut crust = Cluster::start(spec(crust_flavor))?;
    let crust_desc = format!("{} members of {} kv", args.members, agent.display());
    // Both clusters get the same load shape: clients go round the members leader first, so
    // client 0 (the only one with --clients 1) talks to the leader on both sides.
    let etcd_t = Target::leader_first("etcd", &mut etcd)?;
    let crust_t = Target::leader_first("crust", &mut crust)?;
    let amount_desc = match amount {
        Amount::Ops(n) => format!("{n} operations per phase and server"),
        Amount::For(d) => format!("{:.1} s per phase and server", d.as_secs_f64()),
    };
    out.push_str(&format!(
        "crust bench kv: {} clients, {amount_desc} in {} alternating rounds, {}-byte values, keep-alive HTTP/1.1 on 127.0.0.1, clients round the members leader first, GETs {}\n",
        args.clients,
        args.rounds,
        args.value_size,
        if args.quorum { "with quorum=true" } else { "local" }
    ));
    let version = first_line(&args.etcd, "--version");
    out.push_str(&format!(
        "  etcd:  {} members of {} {} --enable-v2\n",
        args.members,
        args.etcd.display(),
        version.trim_start_matches("etcd Version: ")
    ));
    out.push_str(&format!("  crust: {crust_desc}\n\n"));
    let value = Arc::new("x".repeat(args.value_size));
    let warm = Amount::Ops(200);
    let round_amount = amount.share(args.rounds);
    let targets = [&etcd_t, &crust_t];
    // Per phase and server: everything measured, and each round's ops/s.
    let mut pooled: Vec<(Phase, &'static str, Sample, Vec<f64>)> = Vec::new();
    // Keys written per server: PUTs write new keys, GETs read those.
    let mut written = [0u64; 2];
    for phase in [Phase::Put, Phase::Get] {
        let mut samples: [(Sample, Vec<f64>); 2] = Default::default();
        for round in 0..args.rounds {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for n in order {
                let t = targets[n];
                if round == 0 {
                    // Warm-up PUTs write keys of their own; warm-up GETs read measured ones.
                    let (first, keys) = (1 << 40, written[n].clamp(1, 200));
                    drive(
                        t,
                        phase,
                        args.clients,
                        warm,
                        &value,
                        first,
                        keys,
                        args.quorum,
                    )?;
                }
                let s = drive(
                    t,
                    phase,
                    args.clients,
                    round_amount,
                    &value,
                    written[n],
                    written[n],
                    args.quorum,
                )?;
                if phase == Phase::Put {
                    // Keys k0.. were written (nearly all of them successfully): the GETs read
                    // those, and the next round writes new keys after them.
                    written[n] += s.latencies.len() as u64 + s.errors;
                }
                samples[n].1.push(s.ops_per_sec());
                samples[n].0.add(&s);
            }
        }
        for (n, (sample, per_round)) in samples.into_iter().enumerate() {
            pooled.push((phase, targets[n].label, sample, per_round));
        }
    }
    let results: Vec<(Phase, &'static str, Figures)> = pooled
        .iter()
        .map(|(phase, label, s, _)| {
            (
                *phase,
                *label,
                figures(s.latencies.clone(), s.errors, s.seconds),
            )
        })
        .collect();
    out.push_str("phase server      ops/s   p50 ms    p99 ms      ops   errors\n");
    for (phase, label, f) in &results {
        out.push_str(&row(phase.name(), label, f));
        out.push('\n');
    }
    out.push_str("\ncrust/etcd ratio\n");
    for phase in [Phase::Put, Phase::Get] {
        let get = |label| {
            pooled
                .iter()
                .zip(&results)
                .find(|((p, l, _, _), _)| *p == phase && *l == label)
                .map(|((_, _, _, rounds), (_, _, f))| (f.clone(), rounds.clone()))
        };
        if let (Some((c, c_rounds)), Some((e, e_rounds))) = (get("crust"), get("etcd")) {
            out.push_str(&format!(
                "  {}  (ops/s per round: {})\n",
                ratio(phase.name(), &c, &e),
                round_ratios(&c_rounds, &e_rounds)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[1, 2], 0.0), 1);
    }

    #[test]
    fn rounds_share_the_work_and_report_each_ratio() {
        assert!(matches!(Amount::Ops(10).share(3), Amount::Ops(4)));
        assert!(matches!(Amount::Ops(1).share(3), Amount::Ops(1)));
        assert!(matches!(
            Amount::For(Duration::from_secs(3)).share(3),
            Amount::For(d) if d == Duration::from_secs(1)
        ));
        assert_eq!(round_ratios(&[50.0, 90.0], &[100.0, 0.0]), "0.50 -");
        let mut pooled = Sample::default();
        pooled.add(&Sample {
            latencies: vec![1, 2],
            errors: 1,
            seconds: 1.0,
        });
        pooled.add(&Sample {
            latencies: vec![3, 4, 5, 6],
            errors: 0,
            seconds: 2.0,
        });
        assert_eq!(pooled.latencies.len(), 6);
        assert_eq!(pooled.errors, 1);
        assert_eq!(pooled.ops_per_sec(), 2.0);
    }

    #[test]
    fn figures_and_ratios() {
        let f = figures(vec![300, 100, 200, 400], 1, 2.0);
        assert_eq!(f.ops, 4);
        assert_eq!(f.errors, 1);
        assert_eq!(f.p50_us, 200);
        assert_eq!(f.p99_us, 400);
        assert_eq!(f.ops_per_sec(), 2.0);
        let e = figures(vec![100; 8], 0, 2.0);
        assert_eq!(ratio("PUT", &f, &e), "PUT: ops/s 0.50  p50 2.00  p99 4.00");
        let none = figures(vec![], 0, 0.0);
        assert_eq!(ratio("GET", &f, &none), "GET: ops/s -  p50 -  p99 -");
        assert!(row("PUT", "etcd", &f).starts_with("PUT   etcd"));
    }
}
