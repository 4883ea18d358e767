//! How a unit's main process is set up, and its cgroup.
//!
//! [`prepare`] resolves everything that can fail before a fork (environment files, user and
//! group names, the working directory) into a [`Launch`], so a bad unit fails with a reason
//! instead of a half-started process. Each service runs in its own cgroup v2,
//! `/sys/fs/cgroup/system.slice/UNIT`, joined before exec: stopping a service kills the whole
//! cgroup (forked children included), and status reads its memory and CPU use from there.

use crust_common::unit::Unit;
use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where service cgroups live.
pub const SLICE: &str = "/sys/fs/cgroup/system.slice";

/// Everything needed to start a unit's main process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
    pub cwd: Option<PathBuf>,
    pub nofile: Option<(u64, u64)>,
    pub cgroup: Option<PathBuf>,
}

/// `KEY=VALUE` lines of an environment file (comments and blank lines skipped, one level of
/// quotes removed), as systemd's EnvironmentFile= reads them.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

fn lookup(file: &str, name: &str, field: usize) -> Option<String> {
    fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(field).map(|s| s.to_string()))?
    })
}

/// Resolves a unit's process settings under the files of `places.root` ("/" in the machine),
/// with the manager's notify socket and the unit's cgroup (made by [`make_cgroup`] at start).
pub fn prepare(unit: &Unit, places: &Places) -> Result<Launch, String> {
    let root = places.root.as_path();
    let argv = unit
        .exec_start
        .first()
        .map(|c| c.argv.clone())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| "the unit has no ExecStart=".to_string())?;
    let mut env = vec![
        ("PATH".to_string(), "/usr/sbin:/usr/bin".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        (
            "NOTIFY_SOCKET".to_string(),
            places.notify.display().to_string(),
        ),
    ];
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(x, _)| *x != k);
        env.push((k, v));
    };
    for (k, v) in &unit.environment {
        set(&mut env, k.clone(), v.clone());
    }
    // Files come after Environment= and override it, as in systemd.
    for f in &unit.environment_files {
        let path = root.join(f.path.trim_start_matches('/'));
        match fs::read_to_string(&path) {
            Ok(text) => {
                for (k, v) in parse_env_file(&text) {
                    set(&mut env, k, v);
                }
            }
            Err(_) if f.optional => {}
            Err(e) => return Err(format!("EnvironmentFile={}: {e}", f.path)),
        }
    }
    let passwd = root.join("etc/passwd").display().to_string();
    let group = root.join("etc/group").display().to_string();
    let (mut uid, mut gid) = (None, None);
    let mut groups = Vec::new();
    if let Some(u) = &unit.user {
        let id: u32 = match u.parse() {
            Ok(n) => n,
            Err(_) => lookup(&passwd, u, 2)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("User={u}: no such user in /etc/passwd"))?,
        };
        uid = Some(id);
        gid = lookup(&passwd, u, 3).and_then(|s| s.parse().ok());
        if let Ok(text) = fs::read_to_string(&group) {
            for l in text.lines() {
                let f: Vec<&str> = l.split(':').collect();
                if f.get(3).is_some_and(|m| m.split(',').any(|x| x == u)) {
                    if let Some(g) = f.get(2).and_then(|s| s.parse().ok()) {
                        groups.push(g);
                    }
                }
            }
        }
        env.push(("USER".into(), u.clone()));
        if let Some(home) = lookup(&passwd, u, 5) {
            env.push(("HOME".into(), home));
        }
    }
    if let Some(g) = &unit.group {
        gid = Some(match g.parse() {
            Ok(n) => n,
            Err(_) => lookup(&group, g, 2)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("Group={g}: no such group in /etc/group"))?,
        });
    }
    if uid.is_some() && gid.is_none() {
        gid = uid;
    }
    let cwd = match &unit.working_directory {
        Some(w) if w.path == "~" => env
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, h)| PathBuf::from(h)),
        Some(w) => {
            let p = PathBuf::from(&w.path);
            if !root.join(w.path.trim_start_matches('/')).is_dir() {
                if w.optional {
                    None
                } else {
                    return Err(format!("WorkingDirectory={}: no such directory", w.path));
                }
            } else {
                Some(p)
            }
        }
        None => None,
    };
    let nofile = unit.limit_nofile.as_ref().map(|l| {
        let soft = l.soft.unwrap_or(u64::MAX);
        (soft, l.hard.unwrap_or(soft))
    });
    Ok(Launch {
        argv,
        env,
        uid,
        gid,
        groups,
        cwd,
        nofile,
        cgroup: Some(cgroup_of(&places.slice, &unit.name)),
    })
}

/// Where a manager keeps its things: PID 1 uses [`Places::system`]; a manager run as an
/// ordinary process (host tests) gets its own under a root directory and its own cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// The file system root unit files, /etc/passwd and conditions are read under.
    pub root: PathBuf,
    /// Unit directories, highest precedence first.
    pub dirs: Vec<PathBuf>,
    pub socket: PathBuf,
    pub notify: PathBuf,
    pub logs: PathBuf,
    /// The cgroup whose children are the services' cgroups.
    pub slice: PathBuf,
    /// The program that runs command chains (`PROGRAM exec-unit JSON`: ExecStartPre=/Post=,
    /// ExecStop=, ExecReload=): the image's agent, or this very binary in user mode.
    pub agent: PathBuf,
}

impl Places {
    pub fn system() -> Places {
        Places {
            root: PathBuf::from("/"),
            dirs: crust_common::unit::SYSTEM_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            socket: PathBuf::from(crate::proto::SOCKET),
            notify: PathBuf::from(NOTIFY_SOCKET),
            logs: PathBuf::from(crate::logs::DIR),
            slice: PathBuf::from(SLICE),
            agent: PathBuf::from(AGENT),
        }
    }

    /// Everything under `root`; services' cgroups under a cgroup of this process's own (on the
    /// host's cgroup v2 mount: `/sys/fs/cgroup` or the hybrid `/sys/fs/cgroup/unified`).
    pub fn user(root: &Path) -> Places {
        let v2 = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(Path::new)
            .find(|m| m.join("cgroup.controllers").exists())
            .unwrap_or(Path::new("/sys/fs/cgroup"));
        Places {
            root: root.to_path_buf(),
            dirs: vec![
                root.join("etc/systemd/system"),
                root.join("usr/lib/systemd/system"),
            ],
            socket: root.join("run/init.sock"),
            notify: root.join("run/notify"),
            logs: root.join("var/log/crust"),
            slice: v2.join(format!("crust-user-{}", std::process::id())),
            agent: std::env::current_exe().unwrap_or_else(|_| PathBuf::from(AGENT)),
        }
    }
}

/// The unit's cgroup directory.
pub fn cgroup_of(slice: &Path, unit: &str) -> PathBuf {
    slice.join(unit)
}

/// Makes the unit's cgroup (and the slice, with the memory/cpu/pids controllers enabled for
/// its children). Returns None when cgroup v2 is not available there.
pub fn make_cgroup(slice: &Path, unit: &str) -> Option<PathBuf> {
    let root = slice.parent()?;
    if !root.join("cgroup.procs").exists() {
        return None;
    }
    if !slice.exists() {
        fs::create_dir_all(slice).ok()?;
        let _ = fs::write(root.join("cgroup.subtree_control"), "+memory +cpu +pids");
        let _ = fs::write(slice.join("cgroup.subtree_control"), "+memory +cpu +pids");
    }
    let dir = cgroup_of(slice, unit);
    fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// Pids in a cgroup.
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILL to everything in the cgroup (`cgroup.kill`, or each pid on older kernels).
pub fn kill_cgroup(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for pid in cgroup_pids(dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Memory in use (bytes) and CPU time used (microseconds) by the cgroup.
pub fn usage(dir: &Path) -> (Option<u64>, Option<u64>) {
    let mem = fs::read_to_string(dir.join("memory.current"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let cpu = fs::read_to_string(dir.join("cpu.stat")).ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("usage_usec ")
                .and_then(|v| v.trim().parse().ok())
        })
    });
    (mem, cpu)
}

/// Starts the main process: new session, empty signal mask, the unit's cgroup joined, limits,
/// groups and ids set, then exec. `out` receives stdout and stderr.
pub fn spawn(launch: &Launch, out: Option<&fs::File>) -> io::Result<i32> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let (prog, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| io::Error::other("empty ExecStart"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    match out {
        Some(c) => {
            cmd.stdout(c.try_clone()?).stderr(c.try_clone()?);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    if let Some(d) = &launch.cwd {
        cmd.current_dir(d);
    }
    // Prepared before the fork: the child may only make async-signal-safe calls.
    let procs = launch
        .cgroup
        .as_ref()
        .and_then(|d| CString::new(d.join("cgroup.procs").display().to_string()).ok());
    let nofile = launch.nofile;
    let groups: Vec<libc::gid_t> = launch.groups.clone();
    let set_groups = launch.uid.is_some();
    // SAFETY: only async-signal-safe calls (setsid, sigprocmask, open/write/close, setrlimit,
    // setgroups) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if let Some(p) = &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            if let Some((soft, hard)) = nofile {
                let lim = libc::rlimit {
                    rlim_cur: soft as libc::rlim_t,
                    rlim_max: hard as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if set_groups && libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if let Some(g) = launch.gid {
        cmd.gid(g);
    }
    if let Some(u) = launch.uid {
        cmd.uid(u);
    }
    Ok(cmd.spawn()?.id() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Unit {
        Unit::from_text("x.service", text).unwrap().0
    }

    #[test]
    fn env_files_users_and_directories_resolve() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("etc/app")).unwrap();
        fs::create_dir_all(r.join("home/core")).unwrap();
        fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\ncore:x:500:500::/home/core:/bin/sh\n",
        )
        .unwrap();
        fs::write(r.join("etc/group"), "core:x:500:\nwheel:x:10:root,core\n").unwrap();
        fs::write(
            r.join("etc/app/env"),
            "# comment\nA=from-file\nexport B=\"two words\"\n",
        )
        .unwrap();
        let l = prepare(&unit("[Service]\nEnvironment=A=inline C=3\nEnvironmentFile=/etc/app/env\nEnvironmentFile=-/etc/app/missing\nUser=core\nWorkingDirectory=~\nLimitNOFILE=1024:2048\nExecStart=/bin/app --x\n"), &Places::user(r))
        .unwrap();
        let get = |k: &str| l.env.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("from-file"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("3"));
        assert_eq!(get("HOME"), Some("/home/core"));
        assert_eq!((l.uid, l.gid), (Some(500), Some(500)));
        assert_eq!(l.groups, [10]);
        assert_eq!(l.cwd.as_deref(), Some(Path::new("/home/core")));
        assert_eq!(l.nofile, Some((1024, 2048)));
        assert_eq!(l.argv, ["/bin/app", "--x"]);
        let e = prepare(
            &unit("[Service]\nEnvironmentFile=/nope\nExecStart=/bin/a\n"),
            &Places::user(r),
        )
        .unwrap_err();
        assert!(e.contains("EnvironmentFile=/nope"), "{e}");
        let e = prepare(
            &unit("[Service]\nUser=ghost\nExecStart=/bin/a\n"),
            &Places::user(r),
        )
        .unwrap_err();
        assert!(e.contains("User=ghost"), "{e}");
        let e = prepare(
            &unit("[Service]\nWorkingDirectory=/nowhere\nExecStart=/bin/a\n"),
            &Places::user(r),
        )
        .unwrap_err();
        assert!(e.contains("WorkingDirectory"), "{e}");
    }
}

/// Checks a condition against the file system under `root`.
pub fn probe(root: &Path, check: &crust_common::unit::Check) -> bool {
    use crust_common::unit::Check;
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(check.path().trim_start_matches('/'));
    match check {
        Check::PathExists(_) => fs::symlink_metadata(&p).is_ok(),
        Check::PathIsDirectory(_) => p.is_dir(),
        Check::PathIsSymbolicLink(_) => {
            fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink())
        }
        Check::DirectoryNotEmpty(_) => fs::read_dir(&p).is_ok_and(|mut d| d.next().is_some()),
        Check::FileNotEmpty(_) => fs::metadata(&p).is_ok_and(|m| m.is_file() && m.len() > 0),
        Check::FileIsExecutable(_) => {
            fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
    }
}

/// Where services send sd_notify messages (`$NOTIFY_SOCKET`).
pub const NOTIFY_SOCKET: &str = "/run/systemd/notify";

/// The unit a process belongs to, from its cgroup (`0::/system.slice/UNIT`).
pub fn unit_of_pid(pid: i32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    unit_of_cgroup_line(&text)
}

pub fn unit_of_cgroup_line(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let path = l.strip_prefix("0::")?;
        path.split('/')
            .find(|c| c.ends_with(".service"))
            .map(str::to_string)
    })
}

/// `READY=1` and `STATUS=...` out of one sd_notify datagram.
pub fn parse_notify(msg: &str) -> (bool, Option<String>) {
    let mut ready = false;
    let mut status = None;
    for l in msg.lines() {
        if l == "READY=1" {
            ready = true;
        } else if let Some(s) = l.strip_prefix("STATUS=") {
            status = Some(s.to_string());
        }
    }
    (ready, status)
}

/// The notify socket, with sender credentials turned on.
pub fn bind_notify(path: &Path) -> io::Result<std::os::unix::net::UnixDatagram> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let _ = fs::remove_file(path);
    let s = std::os::unix::net::UnixDatagram::bind(path)?;
    s.set_nonblocking(true)?;
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::PassCred, &true)
        .map_err(io::Error::from)?;
    Ok(s)
}

/// The next datagram and its sender's pid, if one is waiting.
pub fn recv_notify(s: &std::os::unix::net::UnixDatagram) -> Option<(i32, String)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(libc::ucred);
    let msg = recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let pid = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
        _ => None,
    })?;
    let n = msg.bytes;
    Some((pid, String::from_utf8_lossy(&buf[..n]).into_owned()))
}

#[cfg(test)]
mod notify_tests {
    use super::*;

    #[test]
    fn cgroups_name_units_and_messages_parse() {
        assert_eq!(
            unit_of_cgroup_line("0::/system.slice/etcd2.service\n").as_deref(),
            Some("etcd2.service")
        );
        assert_eq!(unit_of_cgroup_line("0::/init.scope\n"), None);
        assert_eq!(
            parse_notify("READY=1\nSTATUS=serving\n"),
            (true, Some("serving".into()))
        );
        assert_eq!(
            parse_notify("STATUS=starting"),
            (false, Some("starting".into()))
        );
    }
}

/// `crust-agent systemd-notify [--ready] [--status=TEXT] [VAR=VALUE...]`: sends one datagram
/// to `$NOTIFY_SOCKET`, like systemd-notify(1), for scripts run as Type=notify services.
pub fn notify_cli(args: &[String]) -> i32 {
    let mut lines = Vec::new();
    for a in args {
        if a == "--ready" {
            lines.push("READY=1".to_string());
        } else if let Some(s) = a.strip_prefix("--status=") {
            lines.push(format!("STATUS={s}"));
        } else if a.contains('=') && !a.starts_with("--") {
            lines.push(a.clone());
        } else {
            eprintln!("systemd-notify: unknown argument {a:?}; usage: systemd-notify [--ready] [--status=TEXT] [VAR=VALUE...]");
            return 2;
        }
    }
    match crust_common::notify::sd_notify(&lines.join("\n")) {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!(
                "systemd-notify: $NOTIFY_SOCKET is not set (not started by a service manager?)"
            );
            1
        }
        Err(e) => {
            eprintln!("systemd-notify: {e}");
            1
        }
    }
}

/// The agent binary in images; it runs command chains for units (`exec-unit`).
pub const AGENT: &str = "/usr/bin/crust-agent";

/// A list of commands run in order, then (optionally) the main command exec'd in place, so
/// ExecStartPre= runs in the service's cgroup, with its environment and identity, and the main
/// process keeps the pid the manager knows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chain {
    /// `(argv, ignore_failure)`, as ExecStartPre=/ExecStartPost= list them.
    pub steps: Vec<(Vec<String>, bool)>,
    pub then_exec: Option<Vec<String>>,
}

impl Chain {
    /// The unit's commands (with their `-` prefixes), then optionally `then_exec` in place.
    pub fn of(cmds: &[crust_common::unit::Command], then_exec: Option<Vec<String>>) -> Chain {
        Chain {
            steps: cmds
                .iter()
                .map(|c| (c.argv.clone(), c.ignore_failure))
                .collect(),
            then_exec,
        }
    }
}

/// The argv that runs `chain` through `agent` (see [`Places::agent`]).
pub fn chain_argv(agent: &Path, chain: &Chain) -> Vec<String> {
    vec![
        agent.display().to_string(),
        "exec-unit".to_string(),
        serde_json::to_string(chain).unwrap_or_default(),
    ]
}

/// `crust-agent exec-unit JSON`: runs the chain; a failing step (without `-`) stops it with
/// exit status 1 and a message naming the step.
pub fn exec_chain_main(args: &[String]) -> i32 {
    use std::os::unix::process::CommandExt;
    let Some(chain) = args
        .first()
        .and_then(|j| serde_json::from_str::<Chain>(j).ok())
    else {
        eprintln!("exec-unit: expects one JSON argument (it is run by init, not by hand)");
        return 2;
    };
    for (argv, ignore) in &chain.steps {
        let Some((prog, rest)) = argv.split_first() else {
            continue;
        };
        let status = std::process::Command::new(prog).args(rest).status();
        let ok = matches!(&status, Ok(s) if s.success());
        if !ok && !ignore {
            let why = match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            eprintln!("{} failed ({why}); the unit does not start", argv.join(" "));
            return 1;
        }
    }
    if let Some(main) = &chain.then_exec {
        if let Some((prog, rest)) = main.split_first() {
            let err = std::process::Command::new(prog).args(rest).exec();
            eprintln!("cannot start {prog}: {err}");
            return 127;
        }
    }
    0
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[test]
    fn chains_stop_at_the_first_real_failure() {
        let d = tempfile::tempdir().unwrap();
        let mark = d.path().join("ran");
        let touch = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            format!("echo x >> {}", mark.display()),
        ];
        let ok = Chain {
            steps: vec![(vec!["/bin/false".into()], true), (touch.clone(), false)],
            then_exec: None,
        };
        let arg = chain_argv(Path::new(AGENT), &ok);
        assert_eq!(arg[..2], [AGENT.to_string(), "exec-unit".to_string()]);
        assert_eq!(exec_chain_main(&arg[2..]), 0);
        let bad = Chain {
            steps: vec![(vec!["/bin/false".into()], false), (touch, false)],
            then_exec: None,
        };
        assert_eq!(exec_chain_main(&chain_argv(Path::new(AGENT), &bad)[2..]), 1);
        assert_eq!(
            std::fs::read_to_string(&mark).unwrap(),
            "x\n",
            "the step after a failure ran"
        );
        assert_eq!(exec_chain_main(&["nonsense".into()]), 2);
    }
}
