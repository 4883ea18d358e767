//! One machine: its QEMU process, console log and shell.

use crate::error::{io, Error, Result};
use crate::process::{self, Stopped};
use crate::ready;
use crate::shell::{ExecOutput, Shell};
use crate::state::NodePaths;
use crust_common::ready::Ready;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How long `exec` waits for a command unless told otherwise.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of console shown in boot errors.
const TAIL_LINES: usize = 30;

/// How QEMU processes relate to the process that starts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchMode {
    /// `-daemonize`: the cluster outlives the command that started it (`crust cluster up`).
    Daemon,
    /// QEMU stays our child and gets SIGKILL when the thread that started it exits, so a
    /// test that dies cannot leave machines behind. Start nodes from a thread that lives as
    /// long as the cluster (the test's own thread).
    Child,
}

/// A node's state as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub pid: Option<i32>,
    /// Time since QEMU started (from its pidfile).
    pub uptime: Option<Duration>,
    /// Resident memory of the QEMU process.
    pub rss_kib: Option<u64>,
    /// The last ready line since QEMU started, while it runs.
    pub ready: Option<Ready>,
}

impl NodeStatus {
    pub fn running(&self) -> bool {
        self.pid.is_some()
    }
}

/// How to reach a node's `core` user over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAccess {
    pub ssh: PathBuf,
    pub key: PathBuf,
    /// The 127.0.0.1 port forwarded to the guest's port 22.
    pub port: u16,
}

#[derive(Debug)]
pub struct Node {
    name: String,
    access: Option<SshAccess>,
    paths: NodePaths,
    program: PathBuf,
    args: Vec<String>,
    mode: LaunchMode,
    child: Mutex<Option<Child>>,
    shell: Mutex<Shell>,
    started: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    pub(crate) fn new(
        name: String,
        paths: NodePaths,
        program: PathBuf,
        args: Vec<String>,
        mode: LaunchMode,
        access: Option<SshAccess>,
    ) -> Self {
        let shell = Shell::new(name.clone(), paths.shell_sock());
        Node {
            name,
            access,
            paths,
            program,
            args,
            mode,
            child: Mutex::new(None),
            shell: Mutex::new(shell),
            started: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.paths.dir
    }

    pub fn console_log(&self) -> PathBuf {
        self.paths.console()
    }

    /// The QEMU program and arguments this node runs with.
    pub fn command_line(&self) -> (&Path, &[String]) {
        (&self.program, &self.args)
    }

    /// The pid of this node's QEMU, if it is running.
    pub fn pid(&self) -> Option<i32> {
        process::read_pidfile(&self.paths.pidfile()).filter(|&p| process::is_ours(p, self.dir()))
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// When this process started the node, if it did.
    pub fn started_at(&self) -> Option<Instant> {
        *lock(&self.started)
    }

    /// Starts QEMU. Returns false if it was already running. The previous console log is kept
    /// as `console.log.1`; ready lines are counted from this start.
    pub fn start(&self) -> Result<bool> {
        // Right after a power cut the kernel may still be closing the old QEMU's files, so its
        // image lock can outlive the pid we waited for by a moment: try again briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.start_once() {
                Err(Error::QemuStart { detail, .. })
                    if detail.contains("Failed to get \"write\" lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    fn start_once(&self) -> Result<bool> {
        if self.is_running() {
            return Ok(false);
        }
        self.reap();
        let console = self.paths.console();
        if console.exists() {
            let old = self.paths.dir.join("console.log.1");
            std::fs::rename(&console, &old)
                .map_err(io(format!("rotating {}", console.display())))?;
        }
        let _ = std::fs::remove_file(self.paths.pidfile());
        let log_path = self.paths.qemu_log();
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("creating {}", log_path.display())))?;
        let log2 = log.try_clone().map_err(io("duplicating a file handle"))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        crate::process::unblock_signals(&mut cmd);
        if self.mode == LaunchMode::Child {
            crate::process::die_with_parent(&mut cmd);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| Error::QemuStart {
            node: self.name.clone(),
            detail: format!("running {}: {e}", self.program.display()),
        })?;
        let failed = |what: String| Error::QemuStart {
            node: self.name.clone(),
            detail: format!(
                "{what}; {}",
                first_error(&std::fs::read_to_string(&log_path).unwrap_or_default())
            ),
        };
        match self.mode {
            LaunchMode::Daemon => {
                // The foreground QEMU exits once the daemon is set up (or failed to be).
                let status = child.wait().map_err(io("waiting for qemu to daemonize"))?;
                if !status.success() {
                    return Err(failed(format!("qemu exited with {status}")));
                }
            }
            LaunchMode::Child => {
                let deadline = started + Duration::from_secs(20);
                while !self.paths.shell_sock().exists() || self.pid().is_none() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(failed(format!("qemu exited with {status}")));
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(failed("no pidfile after 20 s".into()));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                *lock(&self.child) = Some(child);
            }
        }
        *lock(&self.started) = Some(started);
        lock(&self.shell).reset();
        Ok(true)
    }

    /// Graceful stop of the QEMU process (SIGTERM, then SIGKILL).
    pub fn stop(&self) -> Result<Stopped> {
        let out = match process::read_pidfile(&self.paths.pidfile()) {
            Some(pid) => process::stop(&self.name, pid, self.dir(), STOP_GRACE)?,
            None => Stopped::NotRunning,
        };
        self.after_exit();
        Ok(out)
    }

    /// Graceful shutdown: `crustctl poweroff` in the guest (units stop in order, file systems
    /// are synced), then waits up to `timeout` for QEMU to exit; SIGTERM to QEMU after that.
    pub fn shutdown(&self, timeout: Duration) -> Result<Stopped> {
        let Some(pid) = self.pid() else {
            self.after_exit();
            return Ok(Stopped::NotRunning);
        };
        if self.send("crustctl poweroff").is_ok() {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if !process::is_ours(pid, self.dir()) {
                    self.after_exit();
                    return Ok(Stopped::Terminated);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.stop()
    }

    /// Power cut: SIGKILL, no chance for the guest to flush anything.
    pub fn kill(&self) -> Result<Stopped> {
        let out = match process::read_pidfile(&self.paths.pidfile()) {
            Some(pid) => process::power_cut(&self.name, pid, self.dir())?,
            None => Stopped::NotRunning,
        };
        self.after_exit();
        Ok(out)
    }

    fn after_exit(&self) {
        self.reap();
        lock(&self.shell).reset();
    }

    /// Collects our exited child so it does not linger as a zombie.
    fn reap(&self) {
        let mut child = lock(&self.child);
        if let Some(c) = child.as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                *child = None;
            } else if !self.is_running() {
                let _ = c.kill();
                let _ = c.wait();
                *child = None;
            }
        }
    }

    /// Every ready line printed since QEMU started.
    pub fn ready_lines(&self) -> Result<Vec<Ready>> {
        Ok(ready::ready_lines(&self.read_console()?))
    }

    fn read_console(&self) -> Result<String> {
        match std::fs::read(self.paths.console()) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(io(format!("reading {}", self.paths.console().display()))(e)),
        }
    }

    /// Waits for the `nth` ready line since QEMU started (1 = first boot, 2 = after one
    /// reboot, ...). Fails early if QEMU exits.
    pub fn wait_ready(&self, nth: usize, timeout: Duration) -> Result<Ready> {
        let nth = nth.max(1);
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.read_console()?;
            if let Some(r) = ready::ready_lines(&log).into_iter().nth(nth - 1) {
                return Ok(r);
            }
            if !self.is_running() {
                // Re-read: the line may have landed just before QEMU exited.
                let log = self.read_console()?;
                if let Some(r) = ready::ready_lines(&log).into_iter().nth(nth - 1) {
                    return Ok(r);
                }
                let qemu_log = std::fs::read_to_string(self.paths.qemu_log()).unwrap_or_default();
                let mut tail = ready::tail(&log, TAIL_LINES);
                if !qemu_log.trim().is_empty() {
                    tail.push_str(&format!("\nqemu said: {}", ready::tail(&qemu_log, 5)));
                }
                self.reap();
                return Err(Error::QemuExited {
                    node: self.name.clone(),
                    log: self.paths.console(),
                    tail,
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::ReadyTimeout {
                    node: self.name.clone(),
                    nth,
                    secs: timeout.as_secs(),
                    log: self.paths.console(),
                    tail: ready::tail(&log, TAIL_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a shell command in the guest as root and waits up to a minute for it.
    pub fn exec(&self, cmd: &str) -> Result<ExecOutput> {
        self.exec_timeout(cmd, DEFAULT_EXEC_TIMEOUT)
    }

    pub fn exec_timeout(&self, cmd: &str, timeout: Duration) -> Result<ExecOutput> {
        if !self.is_running() {
            return Err(Error::NotRunning {
                node: self.name.clone(),
            });
        }
        lock(&self.shell).exec(cmd, timeout)
    }

    /// Types a command into the guest's shell without waiting for it.
    pub fn send(&self, cmd: &str) -> Result<()> {
        if !self.is_running() {
            return Err(Error::NotRunning {
                node: self.name.clone(),
            });
        }
        lock(&self.shell).send(cmd)
    }

    /// How to reach this node over SSH (None for clusters made before SSH forwarding).
    pub fn ssh_access(&self) -> Option<&SshAccess> {
        self.access.as_ref()
    }

    /// Runs `cmd` as `core` over SSH (through the forwarded port), like `crust cluster ssh`.
    pub fn ssh(&self, cmd: &str) -> Result<ExecOutput> {
        if !self.is_running() {
            return Err(Error::NotRunning {
                node: self.name.clone(),
            });
        }
        let a = self.access.as_ref().ok_or_else(|| Error::Invalid {
            what: "node",
            value: self.name.clone(),
            reason: "this cluster has no SSH forwarding; recreate it".into(),
        })?;
        crate::ssh::run(&a.ssh, &a.key, a.port, cmd)
    }

    /// Hard reset (QMP `system_reset`), like pressing the reset button: no shutdown in the guest.
    pub fn reset(&self) -> Result<()> {
        if !self.is_running() {
            return Err(Error::NotRunning {
                node: self.name.clone(),
            });
        }
        crate::qmp::execute(&self.paths.qmp_sock(), "system_reset").map(|_| ())
    }

    /// Hard reset, then waits for the next ready line.
    pub fn reset_and_wait(&self, timeout: Duration) -> Result<Ready> {
        let seen = self.ready_lines()?.len();
        self.reset()?;
        let ready = self.wait_ready(seen + 1, timeout)?;
        lock(&self.shell).reset();
        Ok(ready)
    }

    /// `crustctl reboot` in the guest, then waits for the next ready line.
    pub fn reboot_and_wait(&self, timeout: Duration) -> Result<Ready> {
        let seen = self.ready_lines()?.len();
        self.send("crustctl reboot")?;
        let ready = self.wait_ready(seen + 1, timeout)?;
        lock(&self.shell).reset();
        Ok(ready)
    }

    pub fn status(&self) -> NodeStatus {
        let pid = self.pid();
        let uptime = pid.and_then(|_| {
            let m = std::fs::metadata(self.paths.pidfile())
                .ok()?
                .modified()
                .ok()?;
            SystemTime::now().duration_since(m).ok()
        });
        let rss_kib = pid.and_then(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            parse_rss_kib(&s)
        });
        let ready = pid.and_then(|_| self.ready_lines().ok()?.pop());
        NodeStatus {
            name: self.name.clone(),
            pid,
            uptime,
            rss_kib,
            ready,
        }
    }
}

/// `VmRSS` from `/proc/<pid>/status`, in KiB.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The line of QEMU's output worth showing in a start error.
fn first_error(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| !l.contains("warning:") && !l.trim().is_empty())
        .unwrap_or("no output from qemu");
    line.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_errors() {
        let status = "Name:\tqemu-system-x86\nVmPeak:\t 900 kB\nVmRSS:\t  123456 kB\n";
        assert_eq!(parse_rss_kib(status), Some(123456));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
        let log =
            "qemu-system-x86_64: warning: x\nqemu-system-x86_64: -drive file=x: Could not open\n";
        assert_eq!(
            first_error(log),
            "qemu-system-x86_64: -drive file=x: Could not open"
        );
        assert_eq!(first_error(""), "no output from qemu");
    }

    #[test]
    fn wait_ready_reads_the_nth_line_and_reports_a_dead_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = NodePaths::new(dir.path().join("node0"));
        std::fs::create_dir(&paths.dir).expect("mkdir");
        let r = |slot: &str| Ready {
            version: "1".into(),
            slot: slot.into(),
            hostname: "node0".into(),
            units: vec![],
            uptime_ms: 1,
        };
        let log = format!(
            "boot\r\n{}\r\nreboot\r\n{}\r\n",
            r("a").to_line(),
            r("b").to_line()
        );
        std::fs::write(paths.console(), log).expect("write");
        let node = Node::new(
            "node0".into(),
            paths,
            "/bin/false".into(),
            vec![],
            LaunchMode::Child,
            None,
        );
        let t = Duration::from_millis(300);
        assert_eq!(node.wait_ready(1, t).ok(), Some(r("a")));
        assert_eq!(node.wait_ready(2, t).ok(), Some(r("b")));
        // No QEMU runs for this node, so waiting for a third boot fails at once.
        let e = node.wait_ready(3, t).unwrap_err();
        assert!(matches!(e, Error::QemuExited { .. }), "{e}");
        assert!(e.to_string().contains("console.log"), "{e}");
        assert!(matches!(node.exec("true"), Err(Error::NotRunning { .. })));
    }
}
