//! The `crust` command: argument parsing only; the work is in the `crust` and `crust_qemu`
//! libraries.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "crust",
    version,
    about = "Build, inspect and boot crust OS images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a bootable A/B disk image from a manifest (default: the bundled one).
    Build(crust::build::BuildArgs),
    /// Show an image's partitions, slot state, version and verity root hash.
    Inspect {
        /// A raw image built by `crust build`.
        image: PathBuf,
    },
    /// Run local clusters of crust machines under QEMU.
    Cluster(crust_qemu::cli::ClusterArgs),
    /// Build the default image, boot it under QEMU, show what runs, shut it down.
    Demo(crust::demo::DemoArgs),
    /// Check a #cloud-config file: FILE:LINE:COL diagnostics; exit 1 on errors.
    ValidateConfig {
        /// A coreos-cloudinit cloud-config (user data).
        file: PathBuf,
    },
    /// Host-side kv: `crust kv serve` runs a single-member store speaking the etcd v2 API
    /// (e.g. as a private etcd discovery service).
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Make the ed25519 keys of the channel repositories' TUF roles.
    Keys(crust::keys::KeysArgs),
    /// Add a build to a channel's signed repository (or re-sign its timestamp with --refresh).
    Publish(crust::publish::PublishArgs),
    /// List channels or show a channel's releases (verified like a machine would).
    Channel(crust::channel::ChannelArgs),
    /// Serve a directory over HTTP (GET, HEAD, Range) on 127.0.0.1 for local updates.
    Serve(crust::serve::ServeArgs),
    /// Benchmarks side by side with the real peer (`crust bench kv`: crust kv vs etcd 3.4).
    Bench(crust::bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("crust: error: {}", chain(&e));
        std::process::exit(1);
    }
}

#[derive(Subcommand)]
enum KvCommand {
    /// Serve a single-member store on a loopback address until interrupted.
    Serve {
        /// Address to listen on (127.0.0.1 unless you mean otherwise).
        #[arg(long, default_value = "127.0.0.1:2379")]
        listen: String,
        /// Member name shown by /v2/members.
        #[arg(long, default_value = "discovery")]
        name: String,
    },
}

/// The whole error chain on one line, without repeating a cause that a message already quotes.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(args) => {
            crust::build::run(&args)?;
        }
        Command::Inspect { image } => {
            let report = crust::inspect::inspect(&image)?;
            print!("{report}");
        }
        Command::Cluster(args) => crust_qemu::cli::run(args)?,
        Command::Demo(args) => crust::demo::run(&args)?,
        Command::ValidateConfig { file } => {
            let report = crust::validate::run(&file)?;
            print!("{}", report.text);
            if !report.ok {
                std::process::exit(1);
            }
        }
        Command::Kv {
            command: KvCommand::Serve { listen, name },
        } => {
            let server = crust_kv::local::spawn_thread(&listen, &name).map_err(|e| {
                anyhow::anyhow!("listening on {listen}: {e}; pick another --listen")
            })?;
            eprintln!(
                "crust kv: serving the etcd v2 API on http://{} (Ctrl-C stops it)",
                server.addr
            );
            loop {
                std::thread::park();
            }
        }
        Command::Keys(args) => crust::keys::run(&args)?,
        Command::Publish(args) => println!("{}", crust::publish::run(&args)?),
        Command::Channel(args) => print!("{}", crust::channel::run(&args)?),
        Command::Serve(args) => crust::serve::run(&args)?,
        Command::Bench(args) => match args.command {
            crust::bench::BenchCommand::Kv(kv) => print!("{}", crust::bench::run_kv(&kv)?),
        },
    }
    Ok(())
}
