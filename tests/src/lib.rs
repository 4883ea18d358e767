//! Helpers that let end-to-end tests read like the user story:
//!
//! ```no_run
//! let c = crust_tests::Cluster::of(3).cloud_config("fixtures/cluster.yaml").start()?;
//! let out = c.node(0).exec("uname -r")?; // root, over the virtio console
//! assert_eq!(out.status, 0);
//! c.node(1).ssh("hostname")?; // core, over SSH through the forwarded port
//! c.partition(&[&[0], &[1, 2]])?;
//! c.heal()?;
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
use crust_qemu::{ClusterSpec, Delivery, ExecOutput, LaunchMode};
use std::path::{Path, PathBuf};
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

/// What to boot, said step by step: `Cluster::of(3).cloud_config(path).start()?`.
pub struct ClusterBuilder {
    nodes: usize,
    image: Option<PathBuf>,
    cloud_config: Option<Vec<u8>>,
    delivery: Delivery,
    discovery: bool,
    guestfwd: Vec<(u16, u16)>,
    wait: bool,
}

impl ClusterBuilder {
    /// Every node gets this user data (read now; errors name the file).
    pub fn cloud_config(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        self.cloud_config = Some(
            std::fs::read(path)
                .unwrap_or_else(|e| panic!("reading cloud-config {}: {e}", path.display())),
        );
        self
    }

    /// Every node gets this user data, given inline.
    pub fn user_data(mut self, text: &str) -> Self {
        self.cloud_config = Some(text.as_bytes().to_vec());
        self
    }

    /// Deliver the user data on a config-2 ISO9660 drive instead of the FAT one.
    pub fn via_config_iso(mut self) -> Self {
        self.delivery = Delivery::ConfigDriveIso;
        self
    }

    /// Deliver the user data through QEMU fw_cfg instead of a config-2 drive.
    pub fn via_fw_cfg(mut self) -> Self {
        self.delivery = Delivery::FwCfg;
        self
    }

    /// Serve an etcd discovery URL from the host; `$discovery` in the user data becomes it.
    pub fn discovery(mut self) -> Self {
        self.discovery = true;
        self
    }

    /// Guests reach the host's 127.0.0.1:`host_port` at `10.0.2.100:guest_port`.
    pub fn guestfwd(mut self, guest_port: u16, host_port: u16) -> Self {
        self.guestfwd.push((guest_port, host_port));
        self
    }

    /// Boot this image instead of the one [`image`] builds.
    pub fn image(mut self, image: PathBuf) -> Self {
        self.image = Some(image);
        self
    }

    /// Return as soon as QEMU runs, for boots that are meant to fail.
    pub fn no_wait(mut self) -> Self {
        self.wait = false;
        self
    }

    /// Starts every node and (unless [`ClusterBuilder::no_wait`]) waits for each ready line.
    pub fn start(self) -> Result<Cluster> {
        let image = match self.image {
            Some(i) => i,
            None => image()?,
        };
        let state = tempfile::Builder::new()
            .prefix("crust-e2e-")
            .tempdir()
            .context("creating a state directory")?;
        let mut spec = ClusterSpec::new(image, self.nodes);
        spec.mode = LaunchMode::Child;
        spec.name = "e2e".into();
        spec.state_root = Some(state.path().to_path_buf());
        spec.cloud_config = self.cloud_config;
        spec.delivery = self.delivery;
        spec.discovery = self.discovery;
        spec.guestfwd = self.guestfwd;
        let inner = crust_qemu::Cluster::create(&spec, &|m| eprintln!("cluster: {m}"))?;
        let c = Cluster {
            inner,
            _state: state,
        };
        if self.wait {
            for r in c.inner.wait_ready(BOOT_TIMEOUT)? {
                eprintln!(
                    "{} ready after {:.1} s (guest uptime {} ms)",
                    r.node,
                    r.elapsed.unwrap_or_default().as_secs_f64(),
                    r.ready.uptime_ms
                );
            }
        }
        Ok(c)
    }
}

impl Cluster {
    /// A cluster of `n` nodes to be described further, then started.
    pub fn of(n: usize) -> ClusterBuilder {
        ClusterBuilder {
            nodes: n,
            image: None,
            cloud_config: None,
            delivery: Delivery::ConfigDrive,
            discovery: false,
            guestfwd: Vec::new(),
            wait: true,
        }
    }

    /// Boots `n` nodes from [`image`] and waits until each printed its ready line.
    pub fn up(n: usize) -> Result<Cluster> {
        Cluster::of(n).start()
    }

    /// Starts `n` nodes from `image` without waiting for them: for boots that are meant to fail.
    pub fn start(image: PathBuf, n: usize) -> Result<Cluster> {
        Cluster::of(n).image(image).no_wait().start()
    }

    /// Cuts the cluster network into sets of node indices (frames pass only within a set).
    pub fn partition(&self, sets: &[&[usize]]) -> Result<()> {
        self.inner.partition(sets)?;
        Ok(())
    }

    /// Cuts one node off from all others.
    pub fn isolate(&self, node: usize) -> Result<()> {
        self.inner.isolate(node)?;
        Ok(())
    }

    /// A perfect network again.
    pub fn heal(&self) -> Result<()> {
        self.inner.heal()?;
        Ok(())
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

    /// Runs `cmd` as `core` over SSH (the management network's forwarded port) and returns
    /// what it printed; a non-zero exit is an error.
    pub fn ssh(&self, cmd: &str) -> Result<String> {
        let out = self.ssh_exec(cmd)?;
        if out.status != 0 {
            bail!(
                "ssh {}: `{cmd}` exited {}: {}",
                self.0.name(),
                out.status,
                out.stdout
            );
        }
        Ok(out.stdout)
    }

    /// Runs `cmd` as `core` over SSH; the status is in the result.
    pub fn ssh_exec(&self, cmd: &str) -> Result<ExecOutput> {
        Ok(self.0.ssh(cmd)?)
    }

    /// Power cut: QEMU is killed, the guest gets no chance to flush anything.
    pub fn kill(&self) -> Result<()> {
        self.0.kill()?;
        Ok(())
    }

    /// Powers a stopped node on again and waits for its ready line.
    pub fn start_and_wait(&self) -> Result<Ready> {
        self.0.start()?;
        Ok(self.0.wait_ready(1, BOOT_TIMEOUT)?)
    }

    /// Hard reset (the reset button), then the next ready line.
    pub fn reset_and_wait(&self) -> Result<Ready> {
        Ok(self.0.reset_and_wait(BOOT_TIMEOUT)?)
    }

    pub fn name(&self) -> &str {
        self.0.name()
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
