//! Stage 2: PID 1 on the real root. Prepares /etc, mounts the ESP, starts the enabled units in
//! order, blesses the boot once they are all active, prints the ready line, answers the control
//! socket, and takes the machine down on request.
//!
//! The decisions live in `manager`, `bless` and `proto`; this module is the event loop around them.

use crate::bless::{self, Bless};
use crate::console;
use crate::kernel::{Halt, Kernel, Linux};
use crate::manager::Manager;
use crate::proto::{self, Request, Response, Status};
use crate::service;
use crate::stage1::{self, BootInfo};
use crust_common::cmdline::BootParams;
use crust_common::ready::Ready;
use crust_common::slot::{Slot, ENTRIES_DIR};
use crust_common::unit::Unit;
use nix::mount::MsFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where update-engine keeps its state (the update on trial, versions that fell back).
pub const UPDATE_ENGINE_STATE: &str = "/var/lib/crust/update-engine";

/// Loader entry file names in `dir`.
fn entry_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// How long a stopped unit gets between SIGTERM and SIGKILL (systemd's TimeoutStopSec is 90 s;
/// shorter here, as crust's services are small).
pub const STOP_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_ETC: &str = "/usr/share/crust/etc";
pub const OS_RELEASE: &str = "/usr/lib/os-release";
const WANTS: &str = "multi-user.target.wants";
/// The longest the ordered stop of all units may take before what is left is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
const KILL_ALL_TIMEOUT: Duration = Duration::from_secs(3);

pub fn main(_argv: &[String]) -> ! {
    let k = Linux;
    let mut init = match Init::setup(&k) {
        Ok(i) => i,
        Err(e) => stage1::emergency(
            &format!("stage 2 failed: {e}"),
            "init could not set itself up on the real root; the shell below runs from it",
        ),
    };
    let how = init.serve();
    init.shutdown(how)
}

struct Init<'k> {
    k: &'k dyn Kernel,
    mgr: Manager,
    listener: Option<UnixListener>,
    signals: SignalFd,
    console: Option<fs::File>,
    version: String,
    slot: Option<Slot>,
    hostname: String,
    ready: bool,
    stuck_reported: bool,
    stopping: bool,
    /// Where this manager keeps its sockets, logs and cgroups.
    places: service::Places,
    /// Run as an ordinary process (host tests): no mounts, no blessing, exit instead of reboot.
    user_mode: bool,
    /// Process groups sent SIGTERM by `stop`, and when they get SIGKILL if still there.
    kill_at: Vec<(i32, String, u64)>,
    /// ExecStop= chains running: `(their pid, unit, main pid)`; SIGTERM follows when they end.
    term_after: Vec<(i32, String, i32)>,
    /// Services' output, stamped and stored under /var/log/crust.
    journal: crate::logs::Journal,
    /// sd_notify datagrams from services (`$NOTIFY_SOCKET`).
    notify: Option<std::os::unix::net::UnixDatagram>,
}

impl<'k> Init<'k> {
    fn setup(k: &'k dyn Kernel) -> io::Result<Init<'k>> {
        let signals = signal_fd()?;
        // Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reboot.
        let _ = nix::sys::reboot::set_cad_enabled(false);

        if !Path::new("/proc/self").exists() {
            stage1::mount_api(k).map_err(|e| io::Error::other(e.to_string()))?;
        }
        for (src, dir, fstype, data) in [
            (
                "devpts",
                "/dev/pts",
                "devpts",
                "gid=5,mode=620,ptmxmode=666",
            ),
            ("tmpfs", "/dev/shm", "tmpfs", "mode=1777"),
            ("cgroup2", "/sys/fs/cgroup", "cgroup2", "nsdelegate"),
        ] {
            let _ = fs::create_dir_all(dir);
            if let Err(e) = k.mount(
                src,
                Path::new(dir),
                Some(fstype),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some(data),
            ) {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    console::error(&format!("mounting {dir} failed: {e}"));
                }
            }
        }

        match populate_etc(Path::new(DEFAULT_ETC), Path::new("/etc")) {
            Ok(n) if n > 0 => console::info(&format!("copied {n} default files into /etc")),
            Ok(_) => {}
            Err(e) => console::error(&format!("populating /etc from {DEFAULT_ETC} failed: {e}")),
        }
        if let Err(e) = link_os_release(Path::new("/etc")) {
            console::error(&format!("linking /etc/os-release failed: {e}"));
        }
        match ensure_machine_id(
            Path::new("/etc/machine-id"),
            &fs::read_to_string("/sys/class/dmi/id/product_uuid").unwrap_or_default(),
        ) {
            Ok(Some(id)) => console::info(&format!("machine id {id} (first boot)")),
            Ok(None) => {}
            Err(e) => console::error(&format!("writing /etc/machine-id failed: {e}")),
        }
        let hostname = read_hostname(Path::new("/etc/hostname"));
        if let Err(e) = nix::unistd::sethostname(&hostname) {
            console::error(&format!("setting the hostname to {hostname} failed: {e}"));
        }

        let info: Option<BootInfo> = fs::read_to_string(stage1::BOOT_INFO)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok());
        mount_boot(k, info.as_ref());

        let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let slot = BootParams::parse(&cmdline)
            .ok()
            .and_then(|p| Slot::from_partuuid(&p.usr_partuuid));
        let version = fs::read_to_string(OS_RELEASE)
            .ok()
            .and_then(|s| os_release_value(&s, "VERSION_ID"))
            .unwrap_or_else(|| "unknown".into());

        let console = open_console();
        Init::assemble(
            k,
            signals,
            service::Places::system(),
            console,
            version,
            slot,
            hostname,
            false,
        )
    }

    /// What both kinds of manager share once the machine-level setup is done: units loaded
    /// from `places.dirs`, the control and notify sockets, the log store.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        k: &'k dyn Kernel,
        signals: SignalFd,
        places: service::Places,
        console: Option<fs::File>,
        version: String,
        slot: Option<Slot>,
        hostname: String,
        user_mode: bool,
    ) -> io::Result<Init<'k>> {
        for d in [places.socket.parent(), places.notify.parent()]
            .into_iter()
            .flatten()
        {
            fs::create_dir_all(d)?;
        }
        let (units, notes) = load_units(&places.dirs);
        let (mgr, more) = Manager::new(units);
        for n in notes.into_iter().chain(more) {
            console::error(&n);
        }
        let listener = match bind_socket(&places.socket) {
            Ok(l) => Some(l),
            Err(e) => {
                console::error(&format!(
                    "control socket {} unavailable: {e}",
                    places.socket.display()
                ));
                None
            }
        };
        let notify = match service::bind_notify(&places.notify) {
            Ok(s) => Some(s),
            Err(e) => {
                console::error(&format!(
                    "sd_notify socket {} unavailable: {e}; Type=notify services will time out",
                    places.notify.display()
                ));
                None
            }
        };
        // Units' output is echoed to the console (PID 1) or not at all (user mode).
        let echo = console.as_ref().and_then(|c| c.try_clone().ok());
        Ok(Init {
            k,
            mgr,
            listener,
            signals,
            console,
            version,
            slot,
            hostname,
            ready: false,
            stuck_reported: false,
            stopping: false,
            kill_at: Vec::new(),
            term_after: Vec::new(),
            journal: crate::logs::Journal::new(&places.logs, echo),
            notify,
            places,
            user_mode,
        })
    }

    /// Stops a unit's processes: its ExecStop= commands first (if any; the signals follow when
    /// they are done), then SIGTERM as KillMode= says (control-group: every process of the
    /// service; process/mixed: the main one; none: nothing), and SIGKILL after
    /// TimeoutStopSec= (10 s here by default) to what is left.
    fn terminate(&mut self, unit: &str, pid: Option<i32>) {
        let Some(pid) = pid else {
            return;
        };
        let def = self.mgr.unit_named(unit).cloned();
        let timeout = def
            .as_ref()
            .and_then(|u| u.timeout_stop_ms)
            .unwrap_or(STOP_TIMEOUT_MS);
        self.kill_at
            .push((pid, unit.to_string(), uptime_ms() + timeout));
        if let Some(u) = def.as_ref().filter(|u| !u.exec_stop.is_empty()) {
            if let Ok(mut launch) = service::prepare(u, &self.places) {
                launch.env.push(("MAINPID".into(), pid.to_string()));
                launch.argv = service::chain_argv(
                    &self.places.agent,
                    &service::Chain::of(&u.exec_stop, None),
                );
                let out = self.journal.pipe_for(unit).ok();
                if let Ok(stopper) = service::spawn(&launch, out.as_ref().or(self.console.as_ref()))
                {
                    self.term_after.push((stopper, unit.to_string(), pid));
                    return;
                }
            }
        }
        self.send_term(unit, pid);
    }

    /// `reload`: runs ExecReload= (with $MAINPID) beside the running service.
    fn reload(&mut self, unit: &str) -> Result<(), String> {
        let u = self
            .mgr
            .unit_named(unit)
            .cloned()
            .ok_or_else(|| format!("Unit {unit} not loaded."))?;
        if u.exec_reload.is_empty() {
            return Err(format!(
                "Job type reload is not applicable for unit {unit} (no ExecReload=)."
            ));
        }
        let pid = self
            .mgr
            .list()
            .into_iter()
            .find(|s| s.name == unit)
            .and_then(|s| s.pid)
            .ok_or_else(|| format!("{unit} is not running"))?;
        let mut launch = service::prepare(&u, &self.places)?;
        launch.env.push(("MAINPID".into(), pid.to_string()));
        launch.argv = service::chain_argv(
            &self.places.agent,
            &service::Chain::of(&u.exec_reload, None),
        );
        let out = self.journal.pipe_for(unit).ok();
        service::spawn(&launch, out.as_ref().or(self.console.as_ref()))
            .map(|_| ())
            .map_err(|e| format!("running ExecReload= of {unit}: {e}"))
    }

    fn send_term(&self, unit: &str, pid: i32) {
        use crust_common::unit::KillMode;
        let mode = self
            .mgr
            .unit_named(unit)
            .map(|u| u.kill_mode)
            .unwrap_or_default();
        if mode == KillMode::None {
            return;
        }
        let hup = self.mgr.unit_named(unit).is_some_and(|u| u.send_sighup);
        // As systemd: SIGTERM, SIGHUP with SendSIGHUP=yes (shells ignore SIGTERM), and SIGCONT
        // so stopped processes see them.
        let signals: &[Signal] = if hup {
            &[Signal::SIGTERM, Signal::SIGHUP, Signal::SIGCONT]
        } else {
            &[Signal::SIGTERM, Signal::SIGCONT]
        };
        let targets: Vec<i32> = if mode == KillMode::ControlGroup {
            let mut t = vec![pid, -pid];
            t.extend(service::cgroup_pids(&service::cgroup_of(
                &self.places.slice,
                unit,
            )));
            t
        } else {
            vec![pid]
        };
        for &sig in signals {
            for &p in &targets {
                let _ = kill(Pid::from_raw(p), sig);
            }
        }
    }

    fn kill_overdue(&mut self) {
        let now = uptime_ms();
        let stopping = self.mgr.stopping_pids();
        self.kill_at.retain(|(pid, unit, at)| {
            if !stopping.contains(pid) {
                return false;
            }
            if *at <= now {
                let _ = kill(Pid::from_raw(-*pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                service::kill_cgroup(&service::cgroup_of(&self.places.slice, unit));
                return false;
            }
            true
        });
    }

    /// Runs until a poweroff or reboot is asked for.
    fn serve(&mut self) -> Halt {
        loop {
            let now = uptime_ms();
            for i in self.mgr.due(now) {
                let unit = self.mgr.unit(i).clone();
                let root = self.places.root.clone();
                if !crust_common::unit::conditions_met(&unit.conditions, &mut |c| {
                    service::probe(&root, c)
                }) {
                    let why = format!(
                        "condition failed ({})",
                        unit.conditions
                            .iter()
                            .map(|c| c.check.path())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    console::info(&format!("{}: skipped: {why}", unit.name));
                    self.mgr.skipped(i, why);
                    continue;
                }
                // Output goes through the journal; without a pipe, straight to the console.
                let out = self.journal.pipe_for(&unit.name).ok();
                match start_process(&unit, &self.places, out.as_ref().or(self.console.as_ref())) {
                    Ok(pid) => self.mgr.spawned(i, pid, now),
                    Err(e) => {
                        let prog = unit.exec_start.first().map_or("", |c| c.program());
                        let why = format!("cannot start {prog}: {e}");
                        console::error(&format!("{}: {why}", unit.name));
                        self.mgr.spawn_failed(i, why, now);
                    }
                }
            }
            self.reap();
            self.kill_overdue();
            for (name, why) in self.mgr.take_failures() {
                console::error(&format!("{name} failed: {why}"));
            }
            if !self.ready && self.mgr.all_active() {
                self.ready = true;
                self.bless_and_announce();
            } else if !self.ready && !self.stuck_reported && self.mgr.stuck() {
                self.stuck_reported = true;
                console::error("not all enabled units are active: the boot is not blessed; `crustctl list-units` shows why");
            }
            let timeout = match self.mgr.next_timer() {
                Some(at) => at.saturating_sub(uptime_ms()).min(1000),
                None => 1000,
            };
            let (sig_ready, sock_ready, logs_ready) = self.poll(timeout as i32);
            self.read_notifications();
            for (name, pid) in self.mgr.expire_starts(uptime_ms()) {
                console::error(&format!("{name}: start timed out; killing it"));
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                service::kill_cgroup(&service::cgroup_of(&self.places.slice, &name));
            }
            for fd in logs_ready {
                self.journal.drain(fd);
            }
            if sig_ready {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => return Halt::Reboot,
                        Ok(Signal::SIGUSR1) | Ok(Signal::SIGUSR2) => return Halt::PowerOff,
                        _ => {}
                    }
                }
                self.reap();
            }
            if sock_ready {
                if let Some(how) = self.accept() {
                    return how;
                }
            }
        }
    }

    /// Waits for signals, control connections and service output; returns which are ready
    /// (the output pipes by fd, hung up ones included so they are drained and dropped).
    fn poll(&self, timeout_ms: i32) -> (bool, bool, Vec<std::os::fd::RawFd>) {
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = vec![pollfd(self.signals.as_raw_fd())];
        let listener = self.listener.as_ref().map(|l| l.as_raw_fd()).unwrap_or(-1);
        fds.push(pollfd(listener));
        fds.push(pollfd(
            self.notify.as_ref().map(|n| n.as_raw_fd()).unwrap_or(-1),
        ));
        let logs = self.journal.fds();
        fds.extend(logs.iter().map(|&fd| pollfd(fd)));
        // SAFETY: fds is a valid array of pollfd for the duration of the call (a negative fd is
        // ignored by poll).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n <= 0 {
            return (false, false, Vec::new());
        }
        let ready =
            |f: &libc::pollfd| f.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        (
            fds[0].revents & libc::POLLIN != 0,
            fds[1].revents & libc::POLLIN != 0,
            fds[3..].iter().filter(|f| ready(f)).map(|f| f.fd).collect(),
        )
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.child_exited(
                    pid.as_raw(),
                    code == 0,
                    &format!("exited with status {code}"),
                ),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.child_exited(pid.as_raw(), false, &format!("killed by {sig}"))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn child_exited(&mut self, pid: i32, success: bool, status: &str) {
        let now = uptime_ms();
        if let Some(k) = self.term_after.iter().position(|(p, _, _)| *p == pid) {
            let (_, unit, main) = self.term_after.remove(k);
            if !success {
                console::error(&format!("{unit}: ExecStop= {status}"));
            }
            self.send_term(&unit, main);
            return;
        }
        if let Some(i) = self.mgr.exited(pid, success, status, now) {
            // A service that is no longer running leaves nothing behind: what its main
            // process forked is killed with the cgroup (a finished oneshot stays active and
            // keeps its background processes, like RemainAfterExit=yes).
            let name = self.mgr.unit(i).name.clone();
            if self.mgr.active_state(&name) != "active" {
                service::kill_cgroup(&service::cgroup_of(&self.places.slice, &name));
                // BindsTo=: units bound to it stop with it.
                for other in self.mgr.bound_to(&name) {
                    if let Ok(pid) = self.mgr.stop(&other) {
                        self.terminate(&other, pid);
                    }
                }
            }
        }
    }

    /// Takes every waiting sd_notify datagram; the sender's unit comes from its cgroup.
    fn read_notifications(&mut self) {
        let Some(sock) = &self.notify else {
            return;
        };
        while let Some((pid, msg)) = service::recv_notify(sock) {
            if let Some(unit) = service::unit_of_pid(pid) {
                let (ready, status) = service::parse_notify(&msg);
                self.mgr.notify(&unit, ready, status);
            }
        }
    }

    /// list-units with each running service's cgroup, memory and CPU use.
    fn units_with_usage(&self) -> Vec<crate::manager::UnitStatus> {
        let mut units = self.mgr.list();
        for u in &mut units {
            let dir = service::cgroup_of(&self.places.slice, &u.name);
            if dir.is_dir() {
                let (mem, cpu) = service::usage(&dir);
                u.memory_bytes = mem;
                u.cpu_usec = cpu;
                u.cgroup = Some(dir.display().to_string());
            }
        }
        units
    }

    fn accept(&mut self) -> Option<Halt> {
        let listener = self.listener.as_ref()?;
        let (stream, _) = listener.accept().ok()?;
        let (resp, halt) = match read_request(&stream) {
            Ok(req) => self.answer(&req),
            Err(why) => (Response::error(why), None),
        };
        let mut line = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        line.push('\n');
        let _ = (&stream).write_all(line.as_bytes());
        halt
    }

    fn answer(&mut self, req: &Request) -> (Response, Option<Halt>) {
        match req {
            Request::Start { unit } | Request::Restart { unit }
                if crate::install::masked(&self.places.root, unit) =>
            {
                (Response::error(format!("Unit {unit} is masked.")), None)
            }
            Request::Start { unit } => {
                if !self.mgr.knows(unit) {
                    let (units, notes) = load_named(&self.places.dirs, vec![unit.clone()]);
                    for n in notes {
                        console::error(&n);
                    }
                    for n in self.mgr.load(units) {
                        console::error(&n);
                    }
                }
                // Conflicts=: starting one stops the other.
                for other in self.mgr.conflicts_of(unit) {
                    if let Ok(pid) = self.mgr.stop(&other) {
                        self.terminate(&other, pid);
                    }
                }
                (answer_of(self.mgr.start(unit)), None)
            }
            Request::Stop { unit } => {
                let r = self.mgr.stop(unit).map(|pid| self.terminate(unit, pid));
                // PartOf= and BindsTo= units go with it.
                let mut others = self.mgr.part_of(unit);
                others.extend(self.mgr.bound_to(unit));
                for other in others {
                    if let Ok(pid) = self.mgr.stop(&other) {
                        self.terminate(&other, pid);
                    }
                }
                (answer_of(r), None)
            }
            Request::Restart { unit } => {
                if !self.mgr.knows(unit) {
                    let (units, _) = load_named(&self.places.dirs, vec![unit.clone()]);
                    self.mgr.load(units);
                }
                let r = self.mgr.restart(unit).map(|pid| self.terminate(unit, pid));
                for other in self.mgr.part_of(unit) {
                    if let Ok(pid) = self.mgr.restart(&other) {
                        self.terminate(&other, pid);
                    }
                }
                (answer_of(r), None)
            }
            Request::Reload { unit } => (answer_of(self.reload(unit)), None),
            Request::DaemonReload => {
                let names: Vec<String> = self.mgr.list().into_iter().map(|u| u.name).collect();
                let (units, notes) = load_named(&self.places.dirs, names);
                for n in notes.into_iter().chain(self.mgr.load(units)) {
                    console::error(&n);
                }
                (ok(), None)
            }
            Request::IsActive { unit } => (
                Response {
                    ok: true,
                    active_state: Some(self.mgr.active_state(unit).to_string()),
                    ..Response::default()
                },
                None,
            ),
            Request::Status => (
                Response {
                    ok: true,
                    status: Some(self.status()),
                    units: Some(self.units_with_usage()),
                    ..Response::default()
                },
                None,
            ),
            Request::ListUnits => (
                Response {
                    ok: true,
                    units: Some(self.units_with_usage()),
                    ..Response::default()
                },
                None,
            ),
            Request::Poweroff => (ok(), Some(Halt::PowerOff)),
            Request::Reboot => (ok(), Some(Halt::Reboot)),
        }
    }

    /// The booted slot as reported to the host ("a", "b", or "" when unknown).
    fn slot_letter(&self) -> String {
        self.slot
            .map(|s| s.letter().to_string())
            .unwrap_or_default()
    }

    fn status(&self) -> Status {
        Status {
            version: self.version.clone(),
            slot: self.slot_letter(),
            hostname: current_hostname().unwrap_or_else(|| self.hostname.clone()),
            ready: self.ready,
            uptime_ms: uptime_ms(),
            state: if self.stopping { "stopping" } else { "running" }.into(),
        }
    }

    fn bless_and_announce(&self) {
        if self.user_mode {
            let ready = Ready {
                version: self.version.clone(),
                slot: String::new(),
                hostname: current_hostname().unwrap_or_default(),
                units: self.mgr.active_names(),
                uptime_ms: uptime_ms(),
            };
            println!("{}", ready.to_line());
            return;
        }
        let selected =
            fs::read(Path::new("/sys/firmware/efi/efivars").join(bless::LOADER_ENTRY_SELECTED))
                .ok()
                .and_then(|raw| bless::decode_efi_string(&raw));
        let entries_dir = Path::new("/boot").join(ENTRIES_DIR);
        match bless::booted_slot(selected.as_deref(), self.slot) {
            // A new slot on trial after an update is judged by update-engine's boot assessment
            // (healthy for a while, else reboot into the fallback), not blessed at ready.
            Some(slot)
                if !crust_update_engine::assess::init_should_bless(
                    Path::new(UPDATE_ENGINE_STATE),
                    slot,
                    &entry_names(&entries_dir),
                ) =>
            {
                console::info("this boot is an update on trial: update-engine blesses it once it proves healthy")
            }
            Some(slot) => match bless_entry(&entries_dir, slot) {
                Ok(msg) => console::info(&msg),
                Err(e) => console::error(&format!("blessing the boot failed: {e}")),
            },
            None => console::error("blessing the boot failed: cannot tell which slot booted"),
        }
        let ready = Ready {
            version: self.version.clone(),
            slot: self.slot_letter(),
            hostname: current_hostname().unwrap_or_else(|| self.hostname.clone()),
            units: self.mgr.active_names(),
            uptime_ms: uptime_ms(),
        };
        console::raw(&ready.to_line());
    }

    fn shutdown(&mut self, how: Halt) -> ! {
        self.stopping = true;
        console::info(&format!(
            "{}: stopping units",
            if how == Halt::Reboot {
                "reboot"
            } else {
                "power off"
            }
        ));
        // Ordered: a unit is stopped (ExecStop=, then SIGTERM as KillMode= says, SIGKILL after
        // its TimeoutStopSec=) once nothing ordered after it still runs.
        self.mgr.begin_stop();
        let deadline = uptime_ms() + SHUTDOWN_TIMEOUT.as_millis() as u64;
        loop {
            for (unit, pid) in self.mgr.stop_wave() {
                self.terminate(&unit, Some(pid));
            }
            if self.mgr.all_stopped() || uptime_ms() >= deadline {
                break;
            }
            let (_, _, logs_ready) = self.poll(100);
            for fd in logs_ready {
                self.journal.drain(fd);
            }
            while let Ok(Some(_)) = self.signals.read_signal() {}
            self.reap();
            self.kill_overdue();
        }
        for pid in self.mgr.stopping_pids() {
            console::error(&format!(
                "pid {pid} did not stop within {}s: killing it",
                SHUTDOWN_TIMEOUT.as_secs()
            ));
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if self.user_mode {
            // Not PID 1: never signal "everything" (kill(-1) would hit the whole host). What the
            // services left goes with their cgroups; then this process ends.
            for u in self.mgr.list() {
                let dir = service::cgroup_of(&self.places.slice, &u.name);
                service::kill_cgroup(&dir);
                // A cgroup can be removed once its last process has gone.
                let t = std::time::Instant::now();
                while fs::remove_dir(&dir).is_err()
                    && dir.exists()
                    && t.elapsed() < Duration::from_secs(2)
                {
                    self.reap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = fs::remove_dir(&self.places.slice);
            std::process::exit(0);
        }
        // Everything else (PID 1 is exempt from kill(-1)).
        let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
        let deadline = uptime_ms() + KILL_ALL_TIMEOUT.as_millis() as u64;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    if uptime_ms() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(_) => {}
                Err(_) => break, // ECHILD: nobody left
            }
        }
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        while waitpid(None, None).is_ok() {}
        nix::unistd::sync();
        for dir in ["/boot", "/sys/firmware/efi/efivars"] {
            let _ = self.k.umount(Path::new(dir), false);
        }
        if let Err(e) = self.k.mount(
            "none",
            Path::new("/"),
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        ) {
            console::error(&format!("remounting / read-only failed: {e}"));
        }
        nix::unistd::sync();
        console::info(if how == Halt::Reboot {
            "rebooting"
        } else {
            "powering off"
        });
        if let Err(e) = self.k.halt(how) {
            console::error(&format!("reboot(2) failed: {e}"));
        }
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

fn answer_of(r: Result<(), String>) -> Response {
    match r {
        Ok(()) => ok(),
        Err(e) => Response::error(e),
    }
}

fn ok() -> Response {
    Response {
        ok: true,
        ..Response::default()
    }
}

fn read_request(stream: &UnixStream) -> Result<Request, String> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(stream.take(64 * 1024))
        .read_line(&mut line)
        .map_err(|e| format!("reading the request: {e}"))?;
    proto::parse_request(&line)
}

fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let _ = fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn open_console() -> Option<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console")
        .ok()
}

/// `crust-agent init --user-mode --root DIR`: the service manager as an ordinary process, for
/// host tests. Units come from `DIR/etc/systemd/system` and `DIR/usr/lib/systemd/system`
/// (enabled ones through `multi-user.target.wants`), the control socket is `DIR/run/init.sock`,
/// logs go to `DIR/var/log/crust`, services' cgroups under a cgroup of this process's own.
/// Nothing is mounted, blessed or rebooted; `crustctl --socket DIR/run/init.sock poweroff`
/// stops the units and ends the process.
pub fn user_main(args: &[String]) -> i32 {
    console::use_stderr();
    let root = match args
        .iter()
        .position(|a| a == "--root")
        .and_then(|i| args.get(i + 1))
    {
        Some(r) => PathBuf::from(r),
        None => {
            eprintln!("init --user-mode needs --root DIR (units under DIR/etc/systemd/system)");
            return 2;
        }
    };
    let k = Linux;
    let mut init = match Init::setup_user(&k, &root) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("init --user-mode: {e}");
            return 1;
        }
    };
    let how = init.serve();
    init.shutdown(how)
}

impl<'k> Init<'k> {
    fn setup_user(k: &'k dyn Kernel, root: &Path) -> io::Result<Init<'k>> {
        let hostname = current_hostname().unwrap_or_default();
        Init::assemble(
            k,
            signal_fd()?,
            service::Places::user(root),
            None,
            "user-mode".into(),
            None,
            hostname,
            true,
        )
    }
}

/// The signals the manager handles, blocked and delivered through a signalfd so they are
/// handled in the loop, never in a handler.
fn signal_fd() -> io::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        mask.add(s);
    }
    mask.thread_block().map_err(io::Error::from)?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(io::Error::from)
}

/// Starts a unit's main process in its own cgroup (see [`service`]).
fn start_process(unit: &Unit, places: &service::Places, out: Option<&fs::File>) -> io::Result<i32> {
    let mut launch = service::prepare(unit, places).map_err(io::Error::other)?;
    launch.cgroup = service::make_cgroup(&places.slice, &unit.name);
    let main = launch.argv.clone();
    if !unit.exec_start_pre.is_empty() {
        // Pre commands first, in the service's cgroup and identity; then the main command
        // replaces the chain, keeping its pid.
        launch.argv = service::chain_argv(
            &places.agent,
            &service::Chain::of(&unit.exec_start_pre, Some(main)),
        );
    }
    let pid = service::spawn(&launch, out)?;
    if !unit.exec_start_post.is_empty() {
        // ExecStartPost= runs beside the started service; its failures are logged.
        let mut post = launch.clone();
        post.argv = service::chain_argv(
            &places.agent,
            &service::Chain::of(&unit.exec_start_post, None),
        );
        if let Err(e) = service::spawn(&post, out) {
            console::error(&format!("{}: ExecStartPost= could not run: {e}", unit.name));
        }
    }
    Ok(pid)
}

/// Milliseconds since boot (CLOCK_BOOTTIME, the clock behind /proc/uptime).
pub fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn mount_boot(k: &dyn Kernel, info: Option<&BootInfo>) {
    if Path::new("/sys/firmware/efi").exists() {
        let vars = Path::new("/sys/firmware/efi/efivars");
        if let Err(e) = k.mount(
            "efivarfs",
            vars,
            Some("efivarfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ) {
            if e.raw_os_error() != Some(libc::EBUSY) {
                console::error(&format!("mounting efivarfs failed: {e}; the boot is blessed from the command line's slot"));
            }
        }
    }
    // Without stage 1's note (booted by something else), look the ESP up next to USR.
    let found = info.and_then(|i| i.esp_dev.clone()).or_else(|| {
        let cmdline = fs::read_to_string("/proc/cmdline").ok()?;
        let usr = BootParams::parse(&cmdline).ok()?.usr_partuuid;
        let r = crate::disks::Roots::default();
        let usr = crate::disks::find_partuuid(&r, &usr)?;
        let esp = crate::disks::sibling(&r, &usr, stage1::ESP_PARTITION).ok()??;
        Some(esp.dev.to_string_lossy().into_owned())
    });
    let Some(esp) = found.as_deref() else {
        console::error("no ESP (partition 1) found on the boot disk; /boot stays empty and the boot cannot be blessed");
        return;
    };
    let _ = fs::create_dir_all("/boot");
    if let Err(e) = k.mount(
        esp,
        Path::new("/boot"),
        Some("vfat"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("umask=0077"),
    ) {
        if e.raw_os_error() != Some(libc::EBUSY) {
            console::error(&format!("mounting the ESP {esp} on /boot failed: {e}"));
        }
    }
}

/// Renames the booted slot's counted entry to its blessed name and makes that durable.
pub fn bless_entry(entries_dir: &Path, slot: Slot) -> io::Result<String> {
    let files: Vec<String> = fs::read_dir(entries_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match bless::plan(slot, &files) {
        Bless::Rename { from, to } => {
            fs::rename(entries_dir.join(&from), entries_dir.join(&to))?;
            // fsync of a vfat directory does not write out the FAT and the old entry's deletion:
            // a power cut right after could leave no loader entry at all. syncfs flushes the
            // whole ESP.
            let dir = fs::File::open(entries_dir)?;
            // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
            if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(format!("boot blessed: {from} -> {to}"))
        }
        Bless::AlreadyBlessed(name) => Ok(format!("boot already blessed ({name})")),
        Bless::NoEntry(slot) => Err(io::Error::other(format!(
            "no loader entry for slot {slot} in {}",
            entries_dir.display()
        ))),
    }
}

/// Copies what is missing from `defaults` into `etc`, recursively; existing files, directories
/// and symlinks are never touched. Returns how many entries were created.
pub fn populate_etc(defaults: &Path, etc: &Path) -> io::Result<usize> {
    if !defaults.is_dir() {
        return Ok(0);
    }
    fs::create_dir_all(etc)?;
    let mut made = 0;
    let mut entries: Vec<_> = fs::read_dir(defaults)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let from = e.path();
        let to = etc.join(e.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let exists = fs::symlink_metadata(&to).is_ok();
        if meta.file_type().is_symlink() {
            if !exists {
                std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
                made += 1;
            }
        } else if meta.is_dir() {
            if !exists {
                fs::create_dir(&to)?;
                fs::set_permissions(&to, meta.permissions())?;
                made += 1;
            }
            if to.is_dir() {
                made += populate_etc(&from, &to)?;
            }
        } else if !exists {
            fs::copy(&from, &to)?;
            // Git does not keep modes beyond +x, so the password hashes' files are made
            // private here whatever mode the image carries.
            if matches!(e.file_name().to_str(), Some("shadow" | "gshadow")) {
                fs::set_permissions(&to, fs::Permissions::from_mode(0o600))?;
            }
            made += 1;
        }
    }
    Ok(made)
}

/// A machine id from the firmware's system UUID (what a VM's hypervisor sets, e.g. QEMU `-uuid`),
/// as systemd-machine-id-setup takes it in VMs; None when it is missing or a placeholder (all
/// zeros or all ones), and the caller picks a random one.
pub fn machine_id_from_uuid(product_uuid: &str) -> Option<String> {
    let hex: String = product_uuid
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    let valid = hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    let placeholder = hex.chars().all(|c| c == '0') || hex.chars().all(|c| c == 'f');
    (valid && !placeholder).then_some(hex)
}

/// Writes `/etc/machine-id` on first boot (missing, empty or `uninitialized`): from the system
/// UUID when there is a real one, else 128 random bits. Returns the id when it wrote one.
/// update-engine's rollout bucket, locksmith's lock holder and `%m` in units all read it.
pub fn ensure_machine_id(path: &Path, product_uuid: &str) -> io::Result<Option<String>> {
    let current = fs::read_to_string(path).unwrap_or_default();
    let current = current.trim();
    if current.len() == 32 && current.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let id = match machine_id_from_uuid(product_uuid) {
        Some(id) => id,
        None => {
            let mut b = [0u8; 16];
            fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
            // A version 4 UUID's bits, as systemd makes them.
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
    };
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{id}\n"))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444))?;
    fs::rename(&tmp, path)?;
    Ok(Some(id))
}

/// `/etc/os-release -> ../usr/lib/os-release`, unless the user put something there.
pub fn link_os_release(etc: &Path) -> io::Result<()> {
    let p = etc.join("os-release");
    if fs::symlink_metadata(&p).is_err() {
        std::os::unix::fs::symlink("../usr/lib/os-release", &p)?;
    }
    Ok(())
}

/// The kernel's hostname now (cloud-config or DHCP may have changed it since boot).
fn current_hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
}

pub fn read_hostname(path: &Path) -> String {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
        })
        .filter(|h| h.len() <= 64)
        .unwrap_or_else(|| "localhost".into())
}

pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// The target the boot starts (systemd's `default.target` on a server).
pub const BOOT_TARGET: &str = "multi-user.target";

/// Loads the boot target and what it pulls in (its `.wants/` and `.requires/` links, and what
/// those Require/Want in turn), looking each name up in `dirs` (highest precedence first).
/// Problems come back as notes; a unit that fails to parse is left out.
pub fn load_units(dirs: &[PathBuf]) -> (Vec<Unit>, Vec<String>) {
    load_named(dirs, vec![BOOT_TARGET.to_string()])
}

/// Loads the units called `names` and what they Require/Want, from `dirs` (one [`Lookup`] over a
/// snapshot of the directories, so precedence, drop-ins, templates and masks follow systemd's
/// rules in one place). Only services and targets are loaded; other unit types are noted.
pub fn load_named(dirs: &[PathBuf], names: Vec<String>) -> (Vec<Unit>, Vec<String>) {
    use crust_common::unit::{Loaded, Lookup, UnitTree};
    let mut notes = Vec::new();
    let lookup = Lookup::new(dirs.to_vec());
    let tree = UnitTree::read(dirs);
    // %H, %m and %b in unit files need the machine's facts.
    let host = crust_common::unit::host_from_system();
    let mut seen = BTreeSet::new();
    let mut units = Vec::new();
    let mut queue: std::collections::VecDeque<String> = names.into();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if !(name.ends_with(".service") || name.ends_with(".target")) {
            notes.push(format!(
                "{name}: only .service and .target units are supported; ignored"
            ));
            continue;
        }
        let loaded = match lookup.load(&tree, &name, &host) {
            Ok(Loaded::NotFound) => linked_outside(dirs, &name, &host)
                .or_else(|| implicit_target(&lookup, &tree, &name, &host)),
            Ok(Loaded::Masked { .. }) => continue,
            Ok(Loaded::Unit(l)) => Some(Ok((l.unit, l.warnings, l.fragment))),
            Err(e) => Some(Err(e)),
        };
        match loaded {
            None => notes.push(format!(
                "unit {name} is enabled or wanted but no file defines it in {}",
                dirs_list(dirs)
            )),
            Some(Err(e)) => notes.push(format!("{e}; the unit is not started")),
            Some(Ok((unit, warnings, fragment))) => {
                for w in warnings {
                    notes.push(format!("{}: {w}", fragment.display()));
                }
                queue.extend(unit.requires.iter().chain(&unit.wants).cloned());
                units.push(unit);
            }
        }
    }
    (units, notes)
}

type LoadResult =
    Result<(Unit, Vec<crust_common::unit::Warning>, PathBuf), crust_common::unit::UnitError>;

/// A unit enabled through a `.wants/` symlink that points outside the search path (what
/// `systemctl link` followed by `enable` leaves): loaded from the link's target.
fn linked_outside(
    dirs: &[PathBuf],
    name: &str,
    host: &crust_common::unit::Host,
) -> Option<LoadResult> {
    let path = dirs
        .iter()
        .map(|d| d.join(WANTS).join(name))
        .find(|p| p.exists())?;
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return Some(Err(crust_common::unit::UnitError::Invalid {
                unit: path.display().to_string(),
                why: format!("cannot be read: {e}"),
            }))
        }
    };
    let source = crust_common::unit::Source {
        path: path.display().to_string(),
        text,
    };
    Some(Unit::from_sources(name, &[source], host).map(|(u, w)| (u, w, path)))
}

/// A target with `.wants/` or `.requires/` links but no file of its own (an image or a test root
/// that only enables units): an empty target, as if its file said nothing.
fn implicit_target(
    lookup: &crust_common::unit::Lookup,
    tree: &crust_common::unit::UnitTree,
    name: &str,
    host: &crust_common::unit::Host,
) -> Option<LoadResult> {
    let parsed = crust_common::unit::UnitName::parse(name).ok()?;
    if !name.ends_with(".target") {
        return None;
    }
    let (wants, requires) = lookup.dependency_links(tree, &parsed);
    if wants.is_empty() && requires.is_empty() {
        return None;
    }
    let source = crust_common::unit::Source {
        path: "(no unit file)".into(),
        text: String::from("[Unit]\n"),
    };
    Some(Unit::from_sources(name, &[source], host).map(|(mut u, w)| {
        u.wants = wants;
        u.requires = requires;
        (u, w, PathBuf::from("(no unit file)"))
    }))
}

fn dirs_list(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "[Service]\nExecStart=/bin/true\n";

    #[test]
    fn loads_enabled_units_with_precedence_wants_and_masks() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        let usr = t.path().join("usr");
        for d in [&etc, &usr] {
            fs::create_dir_all(d.join(WANTS)).unwrap();
        }
        fs::write(
            usr.join("a.service"),
            "[Unit]\nWants=helper.service\n[Service]\nExecStart=/bin/usr-a\n",
        )
        .unwrap();
        fs::write(
            etc.join("a.service"),
            "[Unit]\nWants=helper.service\n[Service]\nExecStart=/bin/etc-a\n",
        )
        .unwrap();
        fs::write(usr.join("helper.service"), SVC).unwrap();
        fs::write(usr.join("masked.service"), SVC).unwrap();
        fs::write(
            usr.join("broken.service"),
            "[Service]\nType=dbus\nExecStart=/x\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/null", etc.join("masked.service")).unwrap();
        for n in ["a.service", "masked.service", "broken.service"] {
            std::os::unix::fs::symlink(format!("../{n}"), usr.join(WANTS).join(n)).unwrap();
        }
        std::os::unix::fs::symlink("../ghost.service", etc.join(WANTS).join("ghost.service"))
            .unwrap();
        let (units, notes) = load_units(&[etc, usr]);
        let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, [BOOT_TARGET, "a.service", "helper.service"]);
        assert_eq!(units[1].exec_start[0].argv, ["/bin/etc-a"]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes
            .iter()
            .any(|n| n.contains("broken.service:2") && n.contains("Type=dbus")));
        assert!(notes.iter().any(|n| n.contains("ghost.service")));
    }

    #[test]
    fn loads_dropins_templates_and_host_specifiers() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        let usr = t.path().join("usr");
        for d in [&etc, &usr] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(
            usr.join("web@.service"),
            "[Service]\nExecStart=/bin/web %i %H\n",
        )
        .unwrap();
        fs::create_dir_all(usr.join("web@a.service.d")).unwrap();
        fs::create_dir_all(etc.join("web@a.service.d")).unwrap();
        fs::write(
            usr.join("web@a.service.d/10-env.conf"),
            "[Service]\nEnvironment=A=usr\n",
        )
        .unwrap();
        // Same name in a higher-precedence directory hides the lower one.
        fs::write(
            etc.join("web@a.service.d/10-env.conf"),
            "[Service]\nEnvironment=A=etc\n",
        )
        .unwrap();
        fs::write(
            usr.join("web@a.service.d/20-more.conf"),
            "[Service]\nEnvironment=B=2\n",
        )
        .unwrap();
        let (units, notes) = load_named(&[etc, usr], vec!["web@a.service".into()]);
        assert!(notes.is_empty(), "{notes:?}");
        let u = &units[0];
        assert_eq!(
            u.exec_start[0].argv[..2],
            ["/bin/web".to_string(), "a".to_string()]
        );
        assert_eq!(u.exec_start[0].argv.len(), 3, "%H expanded to the hostname");
        let env: Vec<(String, String)> = u.environment.to_vec();
        assert!(env.contains(&("A".into(), "etc".into())), "{env:?}");
        assert!(env.contains(&("B".into(), "2".into())), "{env:?}");
    }

    #[test]
    fn machine_id_comes_from_the_system_uuid_or_chance_once() {
        assert_eq!(
            machine_id_from_uuid("5A0F3C2E-1B2D-4E5F-8A9B-0C1D2E3F4A5B\n").as_deref(),
            Some("5a0f3c2e1b2d4e5f8a9b0c1d2e3f4a5b")
        );
        assert_eq!(
            machine_id_from_uuid("00000000-0000-0000-0000-000000000000"),
            None
        );
        assert_eq!(
            machine_id_from_uuid("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"),
            None
        );
        assert_eq!(machine_id_from_uuid("not a uuid"), None);
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("machine-id");
        let from_uuid = ensure_machine_id(&p, "5a0f3c2e-1b2d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        assert_eq!(
            from_uuid.as_deref(),
            Some("5a0f3c2e1b2d4e5f8a9b0c1d2e3f4a5b")
        );
        assert_eq!(
            ensure_machine_id(&p, "11111111-2222-3333-4444-555555555555").unwrap(),
            None,
            "kept once written"
        );
        fs::write(&p, "uninitialized\n").unwrap();
        let random = ensure_machine_id(&p, "").unwrap().unwrap();
        assert_eq!(random.len(), 32);
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("{random}\n"));
    }

    #[test]
    fn populates_etc_without_overwriting() {
        let t = tempfile::tempdir().unwrap();
        let def = t.path().join("defaults");
        let etc = t.path().join("etc");
        fs::create_dir_all(def.join("ssh")).unwrap();
        fs::write(def.join("motd"), "default motd").unwrap();
        fs::write(def.join("ssh/config"), "x").unwrap();
        std::os::unix::fs::symlink("motd", def.join("issue")).unwrap();
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("motd"), "mine").unwrap();
        assert_eq!(populate_etc(&def, &etc).unwrap(), 3);
        assert_eq!(fs::read_to_string(etc.join("motd")).unwrap(), "mine");
        assert_eq!(fs::read_to_string(etc.join("ssh/config")).unwrap(), "x");
        assert_eq!(fs::read_link(etc.join("issue")).unwrap(), Path::new("motd"));
        assert_eq!(
            populate_etc(&def, &etc).unwrap(),
            0,
            "second boot copies nothing"
        );
        link_os_release(&etc).unwrap();
        link_os_release(&etc).unwrap();
        assert_eq!(
            fs::read_link(etc.join("os-release")).unwrap(),
            Path::new("../usr/lib/os-release")
        );
    }

    #[test]
    fn hostname_and_os_release() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("hostname");
        assert_eq!(read_hostname(&p), "localhost");
        fs::write(&p, "# comment\n node0 \n").unwrap();
        assert_eq!(read_hostname(&p), "node0");
        assert_eq!(
            os_release_value("ID=crust\nVERSION_ID=\"1.0.0\"\n", "VERSION_ID").as_deref(),
            Some("1.0.0")
        );
        assert_eq!(os_release_value("ID=crust\n", "VERSION_ID"), None);
    }

    #[test]
    fn blesses_entry_on_disk() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("crust-usr-a+2-1.conf"), "title crust").unwrap();
        fs::write(t.path().join("crust-usr-b+3.conf"), "title crust b").unwrap();
        let msg = bless_entry(t.path(), Slot::A).unwrap();
        assert!(
            msg.contains("crust-usr-a+2-1.conf -> crust-usr-a.conf"),
            "{msg}"
        );
        assert!(t.path().join("crust-usr-a.conf").exists());
        assert!(t.path().join("crust-usr-b+3.conf").exists());
        assert!(bless_entry(t.path(), Slot::A).unwrap().contains("already"));
        fs::remove_file(t.path().join("crust-usr-b+3.conf")).unwrap();
        assert!(bless_entry(t.path(), Slot::B).is_err());
    }
}
