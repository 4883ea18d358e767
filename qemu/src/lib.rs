//! QEMU machines and clusters for crust images.
//!
//! A cluster is a directory of nodes (see [`state`]); each node is one QEMU process booting a
//! copy-on-write overlay of a crust image through OVMF, with its serial console in a log file and
//! a root shell reachable through a unix socket ([`shell`]). A node is ready when its console
//! shows the `CRUST-READY` line ([`crust_common::ready`]).
//!
//! ```no_run
//! use crust_qemu::{Cluster, ClusterSpec, LaunchMode};
//! use std::time::Duration;
//! let mut spec = ClusterSpec::new("out/crust.img", 1);
//! spec.mode = LaunchMode::Child;
//! let cluster = Cluster::create(&spec, &|msg| eprintln!("{msg}"))?;
//! cluster.wait_ready(Duration::from_secs(120))?;
//! let out = cluster.nodes()[0].exec("uname -r")?;
//! println!("{}", out.stdout);
//! # Ok::<(), crust_qemu::Error>(())
//! ```

pub mod accel;
pub mod cli;
pub mod cluster;
pub mod command;
pub mod config;
pub mod error;
pub mod image;
pub mod node;
pub mod process;
pub mod qcow2;
pub mod qmp;
pub mod ready;
pub mod shell;
pub mod ssh;
pub mod state;
pub mod switch;
pub mod tools;

pub use accel::Accel;
pub use cluster::{Cluster, ClusterSpec, NodePorts, NodeReady};
pub use config::Delivery;
pub use error::{Error, Result};
pub use node::{LaunchMode, Node, NodeStatus, SshAccess};
pub use shell::ExecOutput;
