//! QEMU processes by pid: recognising our own, and stopping them.
//!
//! A pid from a pidfile may have been reused by an unrelated process after a host reboot, so a
//! pid only counts as a node's QEMU while its command line names that node's directory.

use crate::error::{Error, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// The pid written by QEMU's `-pidfile`, if the file is there and sane.
pub fn read_pidfile(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse::<i32>().ok().filter(|&p| p > 1)
}

/// Whether a raw `/proc/<pid>/cmdline` mentions `dir` as a directory (so `node1` does not match
/// `node10`).
pub fn cmdline_mentions(cmdline: &[u8], dir: &Path) -> bool {
    let needle = format!("{}/", dir.display());
    cmdline
        .split(|&b| b == 0)
        .any(|arg| String::from_utf8_lossy(arg).contains(&needle))
}

/// Whether `pid` is alive and is the QEMU of the node in `dir`. Zombies have an empty command
/// line, so they count as gone.
pub fn is_ours(pid: i32, dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| cmdline_mentions(&c, dir))
        .unwrap_or(false)
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running (or the pid belongs to someone else now).
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It needed SIGKILL.
    Killed,
}

/// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
pub fn stop(node: &str, pid: i32, dir: &Path, grace: Duration) -> Result<Stopped> {
    if !is_ours(pid, dir) {
        return Ok(Stopped::NotRunning);
    }
    signal(node, pid, Signal::SIGTERM)?;
    if wait_gone(pid, dir, grace) {
        return Ok(Stopped::Terminated);
    }
    power_cut(node, pid, dir)?;
    Ok(Stopped::Killed)
}

/// SIGKILL (the power cut); returns once the process is gone.
pub fn power_cut(node: &str, pid: i32, dir: &Path) -> Result<Stopped> {
    if !is_ours(pid, dir) {
        return Ok(Stopped::NotRunning);
    }
    signal(node, pid, Signal::SIGKILL)?;
    if wait_gone(pid, dir, Duration::from_secs(10)) {
        Ok(Stopped::Killed)
    } else {
        Err(Error::Stop {
            node: node.into(),
            pid,
            detail: "still running 10 s after SIGKILL".into(),
        })
    }
}

fn signal(node: &str, pid: i32, sig: Signal) -> Result<()> {
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::Stop {
            node: node.into(),
            pid,
            detail: format!("{sig}: {e}"),
        }),
    }
}

/// The state letter of `/proc/<pid>/stat` ('R', 'S', 'Z', ...), if the process exists.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_state(&stat)
}

/// The field after the parenthesised command name (which may itself contain spaces or ')').
fn parse_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Whether `pid` has finished exiting: absent or a zombie. A process that is still tearing
/// down already shows an empty command line, so that alone is not enough.
pub fn has_exited(pid: i32) -> bool {
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

fn wait_gone(pid: i32, dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_ours(pid, dir) && has_exited(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes `cmd`'s child die with this process (PR_SET_PDEATHSIG), so no QEMU or switch outlives a
/// test that started it, even when the test process is killed outright.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// Gives `cmd`'s child an empty signal mask. Children inherit the mask across exec, and the
/// process that starts them may block SIGINT/SIGTERM (see [`on_interrupt`]): a QEMU or switch
/// with SIGTERM blocked would ignore `cluster down` and need SIGKILL.
pub fn unblock_signals(cmd: &mut std::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls sigprocmask,
    // which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// When an interrupt's cleanup (see [`on_interrupt`]) is under way, waits for it to end the
/// process instead of returning: work it stopped (QEMUs exiting) makes the main thread fail,
/// and exiting then would cut the cleanup short.
pub fn wait_if_interrupted() {
    while INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Makes Ctrl-C (SIGINT), SIGTERM and SIGHUP run `cleanup` and then exit with 130, instead of
/// killing the process and leaving daemonized QEMUs and the switch behind. Call it from the main
/// thread before starting other threads: they inherit the blocked signal mask, so only the
/// waiting thread receives these signals.
pub fn on_interrupt(cleanup: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
                eprintln!("crust: {sig:?} received; stopping the cluster");
                cleanup();
                std::process::exit(130);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_matching() {
        let dir = Path::new("/s/default/node1");
        let ours = b"qemu-system-x86_64\0-pidfile\0/s/default/node1/qemu.pid\0";
        let other = b"qemu-system-x86_64\0-pidfile\0/s/default/node10/qemu.pid\0";
        assert!(cmdline_mentions(ours, dir));
        assert!(!cmdline_mentions(other, dir));
        assert!(!cmdline_mentions(b"", dir));
    }

    #[test]
    fn stat_state() {
        assert_eq!(parse_state("42 (qemu) S 1 2 3"), Some('S'));
        assert_eq!(parse_state("42 (a) b) Z 1"), Some('Z'));
        assert_eq!(parse_state("garbage"), None);
        assert!(!has_exited(std::process::id() as i32));
    }

    #[test]
    fn pidfile_parsing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("qemu.pid");
        assert_eq!(read_pidfile(&p), None);
        std::fs::write(&p, "1234\n").expect("write");
        assert_eq!(read_pidfile(&p), Some(1234));
        std::fs::write(&p, "1\n").expect("write");
        assert_eq!(read_pidfile(&p), None, "never signal init");
        std::fs::write(&p, "junk").expect("write");
        assert_eq!(read_pidfile(&p), None);
    }

    #[test]
    fn stops_only_its_own_processes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node_dir = dir.path().join("node0");
        std::fs::create_dir(&node_dir).expect("mkdir");
        let marker = node_dir.join("marker");
        std::fs::write(&marker, "").expect("write");
        // Any long-running process whose command line names the node directory will do.
        let mut child = std::process::Command::new("tail")
            .arg("-f")
            .arg(&marker)
            .spawn()
            .expect("spawn tail");
        let pid = child.id() as i32;
        // Until exec, /proc shows the test binary's command line.
        let ours = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            is_ours(pid, &node_dir)
        });
        if !ours {
            let _ = child.kill();
        }
        assert!(ours);
        assert!(!is_ours(pid, &dir.path().join("node")));
        let other = dir.path().join("other");
        assert_eq!(
            stop("x", pid, &other, Duration::from_secs(1)).ok(),
            Some(Stopped::NotRunning)
        );
        // tail exits on SIGTERM; the zombie it leaves counts as gone.
        assert_eq!(
            stop("x", pid, &node_dir, Duration::from_secs(5)).ok(),
            Some(Stopped::Terminated)
        );
        let _ = child.wait();
    }
}
