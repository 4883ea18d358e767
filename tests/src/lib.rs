//! Helpers that let end-to-end tests read like the user story:
//!
//! ```no_run
//! let c = crust_tests::Cluster::up(1)?;
//! let out = c.node(0).exec("uname -r")?;
//! assert_eq!(out.status, 0);
//! c.node(0).reboot_and_wait()?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! The image is built once per test process (or taken from `CRUST_TEST_IMAGE`). Clusters live
//! in a temporary state directory and their QEMUs are children of the test: dropping the
//! [`Cluster`] (also while a failed assertion unwinds) stops them and removes the directory,
//! and if the test process dies outright the kernel kills them (`PR_SET_PDEATHSIG`).

use anyhow::{anyhow, bail, Context, Result};
use crust_common::ready::Ready;
use crust_qemu::{ClusterSpec, ExecOutput, LaunchMode};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Every wait for a boot; generous because TCG on a busy 2-core host is slow.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The image under test: `$CRUST_TEST_IMAGE`, else one built (once per process) into
/// `target/crust-e2e/`.
pub fn image() -> Result<PathBuf> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("CRUST_TEST_IMAGE").filter(|p| !p.is_empty()) {
                return Ok(PathBuf::from(p));
            }
            let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/crust-e2e");
            crust::build::build_default(&out)
                .map(|b| b.image)
                .map_err(|e| format!("building the test image into {}: {e}", out.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// A cluster that exists for as long as this value.
pub struct Cluster {
    // Declared before `_state` so the machines stop before their directory is removed.
    inner: crust_qemu::Cluster,
    _state: tempfile::TempDir,
}

impl Cluster {
    /// Boots `n` nodes from [`image`] and waits until each printed its ready line.
    pub fn up(n: usize) -> Result<Cluster> {
        let c = Cluster::start(image()?, n)?;
        for r in c.inner.wait_ready(BOOT_TIMEOUT)? {
            eprintln!(
                "{} ready after {:.1} s (guest uptime {} ms)",
                r.node,
                r.elapsed.unwrap_or_default().as_secs_f64(),
                r.ready.uptime_ms
            );
        }
        Ok(c)
    }

    /// Starts `n` nodes from `image` without waiting for them: for boots that are meant to fail.
    pub fn start(image: PathBuf, n: usize) -> Result<Cluster> {
        let state = tempfile::Builder::new()
            .prefix("crust-e2e-")
            .tempdir()
            .context("creating a state directory")?;
        let mut spec = ClusterSpec::new(image, n);
        spec.mode = LaunchMode::Child;
        spec.name = "e2e".into();
        spec.state_root = Some(state.path().to_path_buf());
        let inner = crust_qemu::Cluster::create(&spec, &|m| eprintln!("cluster: {m}"))?;
        Ok(Cluster {
            inner,
            _state: state,
        })
    }

    /// Node `i` (`node{i}`). Panics when out of range, like indexing.
    pub fn node(&self, i: usize) -> Node<'_> {
        Node(&self.inner.nodes()[i])
    }

    /// The underlying cluster, for lifecycle calls the helpers do not wrap.
    pub fn inner(&self) -> &crust_qemu::Cluster {
        &self.inner
    }
}

/// One machine of a test cluster.
#[derive(Clone, Copy)]
pub struct Node<'a>(&'a crust_qemu::Node);

impl Node<'_> {
    /// Runs a shell command as root in the guest; the status is in the result, not an error.
    pub fn exec(&self, cmd: &str) -> Result<ExecOutput> {
        Ok(self.0.exec(cmd)?)
    }

    /// Runs a command that must succeed and returns what it printed.
    pub fn sh(&self, cmd: &str) -> Result<String> {
        let out = self.exec(cmd)?;
        if out.status != 0 {
            bail!(
                "`{cmd}` on {} exited {}: {}",
                self.0.name(),
                out.status,
                out.stdout
            );
        }
        Ok(out.stdout)
    }

    /// `crustctl reboot` in the guest; returns the ready line of the next boot.
    pub fn reboot_and_wait(&self) -> Result<Ready> {
        Ok(self.0.reboot_and_wait(BOOT_TIMEOUT)?)
    }

    /// Ready lines printed since QEMU started (1 after the first boot).
    pub fn boots(&self) -> Result<usize> {
        Ok(self.0.ready_lines()?.len())
    }

    pub fn inner(&self) -> &crust_qemu::Node {
        self.0
    }

    /// Waits until the serial console shows `needle`; returns the whole console log.
    pub fn wait_console(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        let path = self.0.console_log();
        loop {
            let log = std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if log.contains(needle) {
                return Ok(log);
            }
            if std::time::Instant::now() > deadline {
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{} did not print {needle:?} within {timeout:?}; last lines of {}:\n{}",
                    self.0.name(),
                    path.display(),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
