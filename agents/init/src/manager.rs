//! The service state machine, free of I/O: the driver in `stage2` tells it what happened (a unit
//! was spawned, a pid exited, time passed) and asks it what to start. Time is passed in as
//! milliseconds since boot; nothing here reads a clock.

use crust_common::unit::{ServiceType, Unit, UnitType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// TimeoutStartSec= when a notify service does not set it (systemd's default).
pub const DEFAULT_START_TIMEOUT_MS: u64 = 90_000;

/// Units whose failure does not hold readiness back (see [`Manager::all_active`]).
pub const NOT_BOOT_CRITICAL: &[&str] = &["cloudinit.service"];

/// More starts than this within [`START_LIMIT_WINDOW_MS`] fail the unit (systemd's default).
pub const START_LIMIT: usize = 5;
pub const START_LIMIT_WINDOW_MS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum State {
    /// Not started yet: waiting for the units it is ordered after.
    Waiting,
    /// A oneshot whose process runs.
    Activating {
        pid: i32,
    },
    /// A simple service whose process runs, or a oneshot that exited 0 (`pid` 0).
    Active {
        pid: i32,
    },
    /// A simple service that exited with success and is not restarted.
    Exited,
    /// Will be started again at `at_ms`.
    AutoRestart {
        at_ms: u64,
    },
    Failed {
        reason: String,
    },
    /// Being stopped by shutdown.
    Stopping {
        pid: i32,
    },
    Stopped,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Activating { .. } => "activating",
            State::Active { .. } => "active",
            State::Exited => "exited",
            State::AutoRestart { .. } => "auto-restart",
            State::Failed { .. } => "failed",
            State::Stopping { .. } => "stopping",
            State::Stopped => "stopped",
        }
    }

    /// systemd's (active state, sub-state) for this state.
    pub fn systemd(&self) -> (&'static str, &'static str) {
        match self {
            State::Waiting => ("inactive", "dead"),
            State::Activating { .. } => ("activating", "start"),
            State::Active { pid } if *pid > 0 => ("active", "running"),
            State::Active { .. } => ("active", "exited"),
            State::Exited | State::Stopped => ("inactive", "dead"),
            State::AutoRestart { .. } => ("activating", "auto-restart"),
            State::Failed { .. } => ("failed", "failed"),
            State::Stopping { .. } => ("deactivating", "stop-sigterm"),
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match self {
            State::Activating { pid } | State::Active { pid } | State::Stopping { pid }
                if *pid > 0 =>
            {
                Some(*pid)
            }
            _ => None,
        }
    }

    /// Whether units ordered after this one may start: no start job of it is pending (it is
    /// not waiting or activating). Units that are not being started do not hold anyone up,
    /// as After= only orders jobs of the same transaction.
    fn settled(&self) -> bool {
        !matches!(self, State::Waiting | State::Activating { .. })
    }
}

/// What `list-units` reports for one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub name: String,
    /// systemd's active state: active, activating, deactivating, failed or inactive.
    pub state: String,
    /// systemd's sub-state: running, exited, dead, start, auto-restart, stop-sigterm, failed.
    #[serde(default)]
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Automatic restarts since boot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// The last STATUS= sent over sd_notify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    /// The service's cgroup and what it uses (filled in by init, not by this state machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usec: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

struct Managed {
    unit: Unit,
    state: State,
    /// Reached active at least once (what readiness counts).
    was_active: bool,
    starts: VecDeque<u64>,
    /// Part of what should be running (the boot set, or started since); readiness counts
    /// only these. Units loaded by `daemon-reload` or on demand start out not wanted.
    wanted: bool,
    /// Start again once the stop under way ends (`restart`).
    start_after_stop: bool,
    /// Why the process being stopped had to be killed (its start timed out): the unit ends
    /// failed with this once it exits.
    timed_out: Option<String>,
    /// Automatic restarts so far (Restart=).
    restarts: u32,
    /// When an activating unit fails for taking too long (TimeoutStartSec=).
    start_deadline_ms: Option<u64>,
    /// The last `STATUS=` the service sent over sd_notify.
    status_text: Option<String>,
    /// After= edges kept after cycle breaking, as indexes.
    after: Vec<usize>,
    requires: Vec<usize>,
}

impl Managed {
    fn new(unit: Unit, state: State, wanted: bool) -> Managed {
        Managed {
            unit,
            state,
            was_active: false,
            starts: VecDeque::new(),
            wanted,
            timed_out: None,
            start_after_stop: false,
            restarts: 0,
            start_deadline_ms: None,
            status_text: None,
            after: Vec::new(),
            requires: Vec::new(),
        }
    }
}

pub struct Manager {
    units: Vec<Managed>,
    stopping: bool,
    /// Units that entered `Failed` since the last [`Manager::take_failures`], for the console.
    new_failures: Vec<(String, String)>,
}

impl Manager {
    /// Takes the units to run (enabled ones plus what they pull in). Returns the manager and
    /// notes about ordering that was ignored (unknown units, cycles).
    pub fn new(units: Vec<Unit>) -> (Manager, Vec<String>) {
        let names: BTreeSet<String> = units.iter().map(|u| u.name.clone()).collect();
        let mut notes = Vec::new();
        let mut managed: Vec<Managed> = units
            .into_iter()
            .map(|unit| Managed::new(unit, State::Waiting, true))
            .collect();
        for m in &mut managed {
            for r in &m.unit.requires {
                if !names.contains(r) {
                    let reason = format!("required unit {r} does not exist");
                    notes.push(format!("{}: {reason}", m.unit.name));
                    m.state = State::Failed { reason };
                }
            }
        }
        let mut mgr = Manager {
            units: managed,
            stopping: false,
            new_failures: Vec::new(),
        };
        notes.extend(mgr.link());
        (mgr, notes)
    }

    /// Recomputes the ordering and requirement edges between loaded units (`A Before=B` is
    /// `B After=A`) and breaks ordering cycles as systemd does: the units still start, one edge
    /// is dropped with a note.
    fn link(&mut self) -> Vec<String> {
        let index: BTreeMap<String, usize> = self
            .units
            .iter()
            .enumerate()
            .map(|(i, m)| (m.unit.name.clone(), i))
            .collect();
        let resolve = |names: &[String]| -> Vec<usize> {
            names.iter().filter_map(|n| index.get(n).copied()).collect()
        };
        let edges: Vec<(Vec<usize>, Vec<usize>)> = self
            .units
            .iter()
            .map(|m| (resolve(&m.unit.after), resolve(&m.unit.requires)))
            .collect();
        for (m, (after, requires)) in self.units.iter_mut().zip(edges) {
            m.after = after;
            m.requires = requires;
        }
        for i in 0..self.units.len() {
            for j in resolve(&self.units[i].unit.before) {
                if !self.units[j].after.contains(&i) {
                    self.units[j].after.push(i);
                }
            }
        }
        let mut notes = Vec::new();
        while let Some(cycle) = find_cycle(&self.units) {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&i| self.units[i].unit.name.as_str())
                .collect();
            notes.push(format!(
                "ordering cycle {} ignored; starting them unordered",
                names.join(" -> ")
            ));
            let (from, to) = (cycle[0], cycle[1]);
            self.units[from].after.retain(|&a| a != to);
        }
        notes
    }

    /// Units to spawn now, by index. The driver must answer each with [`Manager::spawned`] or
    /// [`Manager::spawn_failed`].
    /// Targets have no process: one whose ordering is satisfied becomes active here, and the
    /// pass repeats so units ordered after it are due in the same call.
    pub fn due(&mut self, now_ms: u64) -> Vec<usize> {
        let mut out = Vec::new();
        loop {
            let before = out.len();
            let reached = self.due_pass(now_ms, &mut out);
            if !reached && out.len() == before {
                return out;
            }
        }
    }

    /// One pass of [`Manager::due`]; says whether a target was reached.
    fn due_pass(&mut self, now_ms: u64, out: &mut Vec<usize>) -> bool {
        let mut reached = false;
        if self.stopping {
            return false;
        }
        for i in 0..self.units.len() {
            if out.contains(&i) {
                continue; // due already; the driver has not answered yet
            }
            let ready = match &self.units[i].state {
                State::Waiting => {
                    let failed_req = self.units[i]
                        .requires
                        .iter()
                        .find(|&&r| matches!(self.units[r].state, State::Failed { .. }))
                        .map(|&r| self.units[r].unit.name.clone());
                    if let Some(dep) = failed_req {
                        self.fail(i, format!("dependency {dep} failed"));
                        continue;
                    }
                    self.units[i]
                        .after
                        .iter()
                        .all(|&a| self.units[a].state.settled())
                }
                State::AutoRestart { at_ms } => {
                    let due = *at_ms <= now_ms;
                    if due {
                        self.units[i].restarts += 1;
                    }
                    due
                }
                _ => false,
            };
            if ready && self.units[i].unit.unit_type == UnitType::Target {
                let m = &mut self.units[i];
                m.state = State::Active { pid: 0 };
                m.was_active = true;
                reached = true;
                continue;
            }
            if ready {
                let m = &mut self.units[i];
                while m
                    .starts
                    .front()
                    .is_some_and(|&t| t + START_LIMIT_WINDOW_MS <= now_ms)
                {
                    m.starts.pop_front();
                }
                if m.starts.len() >= START_LIMIT {
                    self.fail(
                        i,
                        format!(
                            "started {START_LIMIT} times within {}s; not restarting",
                            START_LIMIT_WINDOW_MS / 1000
                        ),
                    );
                    continue;
                }
                m.starts.push_back(now_ms);
                out.push(i);
            }
        }
        reached
    }

    pub fn unit(&self, i: usize) -> &Unit {
        &self.units[i].unit
    }

    pub fn spawned(&mut self, i: usize, pid: i32, now_ms: u64) {
        let m = &mut self.units[i];
        m.start_deadline_ms = None;
        m.state = match m.unit.kind {
            // Exec and Forking are treated like Simple until the manager knows them.
            ServiceType::Simple | ServiceType::Exec | ServiceType::Forking => {
                m.was_active = true;
                State::Active { pid }
            }
            // Active once it sends READY=1 over sd_notify, failed if that takes too long.
            ServiceType::Notify => {
                m.start_deadline_ms =
                    Some(now_ms + m.unit.timeout_start_ms.unwrap_or(DEFAULT_START_TIMEOUT_MS));
                State::Activating { pid }
            }
            // Oneshots have no start timeout unless TimeoutStartSec= sets one (systemd's rule).
            ServiceType::Oneshot => {
                m.start_deadline_ms = m.unit.timeout_start_ms.map(|t| now_ms + t);
                State::Activating { pid }
            }
        };
    }

    /// An sd_notify message from the unit's processes: `READY=1` makes an activating notify
    /// service active; `STATUS=` is kept for status.
    pub fn notify(&mut self, name: &str, ready: bool, status: Option<String>) {
        let Some(i) = self.position(name) else {
            return;
        };
        let m = &mut self.units[i];
        if status.is_some() {
            m.status_text = status;
        }
        if ready && m.unit.kind == ServiceType::Notify {
            if let State::Activating { pid } = m.state {
                m.state = State::Active { pid };
                m.was_active = true;
                m.start_deadline_ms = None;
            }
        }
    }

    /// Fails units whose start took longer than their timeout; returns their pids to kill.
    pub fn expire_starts(&mut self, now_ms: u64) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for i in 0..self.units.len() {
            let m = &self.units[i];
            if let (State::Activating { pid }, Some(at)) = (&m.state, m.start_deadline_ms) {
                if at <= now_ms {
                    let pid = *pid;
                    let name = m.unit.name.clone();
                    let secs = m.unit.timeout_start_ms.unwrap_or(DEFAULT_START_TIMEOUT_MS) / 1000;
                    self.units[i].start_deadline_ms = None;
                    // The process is killed; its exit must not restart or re-fail the unit.
                    self.units[i].state = State::Stopping { pid };
                    self.fail_later(
                        i,
                        format!("start timed out after {secs}s (TimeoutStartSec=)"),
                    );
                    out.push((name, pid));
                }
            }
        }
        out
    }

    fn fail_later(&mut self, i: usize, reason: String) {
        self.new_failures
            .push((self.units[i].unit.name.clone(), reason.clone()));
        self.units[i].timed_out = Some(reason);
    }

    /// The unit's conditions do not hold: it is skipped, which counts as done (systemd shows
    /// it inactive with the condition that failed; units after it go on).
    pub fn skipped(&mut self, i: usize, why: String) {
        let m = &mut self.units[i];
        m.was_active = true;
        m.state = State::Exited;
        m.status_text = Some(why);
    }

    /// Units with `PartOf=name` (stopped and restarted with it).
    pub fn part_of(&self, name: &str) -> Vec<String> {
        self.units
            .iter()
            .filter(|m| m.unit.part_of.iter().any(|p| p == name))
            .map(|m| m.unit.name.clone())
            .collect()
    }

    /// Running units with `BindsTo=name` (stopped when it stops or fails).
    pub fn bound_to(&self, name: &str) -> Vec<String> {
        self.units
            .iter()
            .filter(|m| m.unit.binds_to.iter().any(|p| p == name) && m.state.pid().is_some())
            .map(|m| m.unit.name.clone())
            .collect()
    }

    /// Units that `name` conflicts with (either side's Conflicts=), to stop when it starts.
    pub fn conflicts_of(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .position(name)
            .map(|i| self.units[i].unit.conflicts.clone())
            .unwrap_or_default();
        for m in &self.units {
            if m.unit.conflicts.iter().any(|c| c == name) {
                out.push(m.unit.name.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    pub fn spawn_failed(&mut self, i: usize, why: String, now_ms: u64) {
        self.finish(i, false, why, now_ms);
    }

    /// A child exited. Returns the unit it belonged to, if any.
    pub fn exited(&mut self, pid: i32, success: bool, status: &str, now_ms: u64) -> Option<usize> {
        let i = self.units.iter().position(|m| m.state.pid() == Some(pid))?;
        if let State::Stopping { .. } = self.units[i].state {
            let m = &mut self.units[i];
            if let Some(reason) = m.timed_out.take() {
                m.state = State::Failed { reason };
                return Some(i);
            }
            if std::mem::take(&mut m.start_after_stop) && !self.stopping {
                m.state = State::Waiting;
                m.wanted = true;
            } else {
                m.state = State::Stopped;
            }
            return Some(i);
        }
        let ok = success
            || self.units[i]
                .unit
                .exec_start
                .first()
                .is_some_and(|c| c.ignore_failure);
        self.finish(i, ok, format!("main process {status}"), now_ms);
        Some(i)
    }

    fn finish(&mut self, i: usize, ok: bool, why: String, now_ms: u64) {
        let m = &mut self.units[i];
        let oneshot_done = m.unit.kind == ServiceType::Oneshot && ok;
        if oneshot_done {
            m.was_active = true;
            // systemd: a finished oneshot is active (exited) only with RemainAfterExit=yes,
            // else inactive (dead); either way what is ordered after it may start.
            m.state = if m.unit.remain_after_exit {
                State::Active { pid: 0 }
            } else {
                State::Exited
            };
            return;
        }
        if !self.stopping && m.unit.restart.applies(ok) {
            m.state = State::AutoRestart {
                at_ms: now_ms + m.unit.restart_ms,
            };
        } else if ok {
            m.state = State::Exited;
        } else if self.stopping {
            m.state = State::Failed { reason: why };
        } else {
            self.fail(i, why);
        }
    }

    fn fail(&mut self, i: usize, reason: String) {
        self.new_failures
            .push((self.units[i].unit.name.clone(), reason.clone()));
        self.units[i].state = State::Failed { reason };
    }

    /// Units that failed since the last call, with why.
    pub fn take_failures(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.new_failures)
    }

    /// Every wanted unit reached active at least once and none is waiting to. A failed unit
    /// of [`NOT_BOOT_CRITICAL`] does not count: bad user data is the user's error, reported on
    /// the console and by `crustctl`, and must not keep the OS from being blessed (an unblessed
    /// boot would roll the machine back to the other slot).
    pub fn all_active(&self) -> bool {
        self.units.iter().filter(|m| m.wanted).all(|m| {
            m.was_active
                || (NOT_BOOT_CRITICAL.contains(&m.unit.name.as_str())
                    && matches!(m.state, State::Failed { .. }))
        })
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.units.iter().position(|m| m.unit.name == name)
    }

    /// The definition of a loaded unit.
    pub fn unit_named(&self, name: &str) -> Option<&Unit> {
        self.position(name).map(|i| &self.units[i].unit)
    }

    /// Whether a unit called `name` is loaded.
    pub fn knows(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Loads unit definitions (after `daemon-reload`, or on demand for `start`): known units
    /// get the new definition (a running process keeps running), new ones are added inactive.
    /// Ordering and requirement edges are recomputed. Returns notes about ignored ordering.
    pub fn load(&mut self, units: Vec<Unit>) -> Vec<String> {
        for unit in units {
            match self.position(&unit.name) {
                Some(i) => self.units[i].unit = unit,
                None => self.units.push(Managed::new(unit, State::Stopped, false)),
            }
        }
        self.link()
    }

    /// Queues a start of `name` and of the units it Requires/Wants that are not running
    /// (`systemctl start`). Already running units are left alone.
    pub fn start(&mut self, name: &str) -> Result<(), String> {
        let i = self
            .position(name)
            .ok_or_else(|| format!("Unit {name} not found."))?;
        if self.stopping {
            return Err("the system is shutting down".into());
        }
        let mut queue = vec![i];
        let mut seen = BTreeSet::new();
        while let Some(j) = queue.pop() {
            if !seen.insert(j) {
                continue;
            }
            let m = &mut self.units[j];
            m.wanted = true;
            if matches!(
                m.state,
                State::Stopped | State::Exited | State::Failed { .. }
            ) {
                m.state = State::Waiting;
                // A start by hand gets a fresh start-limit window, as `systemctl start` after
                // `reset-failed` would.
                m.starts.clear();
            }
            let deps: Vec<String> = m
                .unit
                .requires
                .iter()
                .chain(&m.unit.wants)
                .cloned()
                .collect();
            for d in deps {
                if let Some(k) = self.position(&d) {
                    queue.push(k);
                }
            }
        }
        Ok(())
    }

    /// Stops `name` (`systemctl stop`): returns the pid to send SIGTERM to, if it runs. No
    /// restart follows; the unit is no longer wanted.
    pub fn stop(&mut self, name: &str) -> Result<Option<i32>, String> {
        let i = self
            .position(name)
            .ok_or_else(|| format!("Unit {name} not loaded."))?;
        let m = &mut self.units[i];
        m.wanted = false;
        Ok(match m.state {
            State::Activating { pid } | State::Active { pid } if pid > 0 => {
                m.state = State::Stopping { pid };
                Some(pid)
            }
            State::Stopping { pid } => Some(pid),
            State::Failed { .. } => None,
            _ => {
                m.state = State::Stopped;
                None
            }
        })
    }

    /// Stops `name` if it runs and starts it again (`systemctl restart`); returns the pid to
    /// send SIGTERM to, if any.
    pub fn restart(&mut self, name: &str) -> Result<Option<i32>, String> {
        let pid = self.stop(name)?;
        match pid {
            Some(_) => {
                if let Some(i) = self.position(name) {
                    self.units[i].start_after_stop = true;
                    self.units[i].wanted = true;
                }
            }
            None => self.start(name)?,
        }
        Ok(pid)
    }

    /// systemd's active state of `name`: active, activating, deactivating, failed or inactive.
    pub fn active_state(&self, name: &str) -> &'static str {
        match self.position(name) {
            Some(i) => self.units[i].state.systemd().0,
            None => "inactive",
        }
    }

    /// Whether nothing can change any more without outside help (so readiness will never come).
    pub fn stuck(&self) -> bool {
        !self.all_active()
            && self
                .units
                .iter()
                .filter(|m| m.wanted)
                .all(|m| m.was_active || matches!(m.state, State::Failed { .. } | State::Exited))
    }

    pub fn failed(&self) -> Vec<(String, String)> {
        self.units
            .iter()
            .filter_map(|m| match &m.state {
                State::Failed { reason } => Some((m.unit.name.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// The earliest pending restart or start timeout.
    pub fn next_timer(&self) -> Option<u64> {
        self.units
            .iter()
            .filter_map(|m| match m.state {
                State::AutoRestart { at_ms } => Some(at_ms),
                State::Activating { .. } => m.start_deadline_ms,
                _ => None,
            })
            .min()
    }

    /// Enters shutdown: no more starts or restarts. Units not running are marked stopped; the
    /// running ones are stopped by [`Manager::stop_wave`], in reverse start order.
    pub fn begin_stop(&mut self) {
        self.stopping = true;
        for m in &mut self.units {
            if m.state.pid().is_none() && !matches!(m.state, State::Failed { .. }) {
                m.state = State::Stopped;
            }
        }
    }

    /// The units to stop now during shutdown, as `(name, main pid)`, marked stopping: those that
    /// no unit still running or stopping is ordered after (systemd stops in the reverse of the
    /// start order, so `B After=A` stops B first and A only once B is gone).
    pub fn stop_wave(&mut self) -> Vec<(String, i32)> {
        if !self.stopping {
            return Vec::new();
        }
        let alive = |m: &Managed| m.state.pid().is_some();
        let waves: Vec<usize> = (0..self.units.len())
            .filter(|&i| {
                matches!(
                    self.units[i].state,
                    State::Active { .. } | State::Activating { .. }
                ) && alive(&self.units[i])
                    && !self.units.iter().any(|m| m.after.contains(&i) && alive(m))
            })
            .collect();
        let mut out = Vec::new();
        for i in waves {
            if let Some(pid) = self.units[i].state.pid() {
                self.units[i].state = State::Stopping { pid };
                out.push((self.units[i].unit.name.clone(), pid));
            }
        }
        out
    }

    /// Whether shutdown has stopped every unit (nothing runs or is being stopped).
    pub fn all_stopped(&self) -> bool {
        self.units.iter().all(|m| m.state.pid().is_none())
    }

    /// Pids still being stopped.
    pub fn stopping_pids(&self) -> Vec<i32> {
        self.units
            .iter()
            .filter_map(|m| match m.state {
                State::Stopping { pid } => Some(pid),
                _ => None,
            })
            .collect()
    }

    /// Names of units that reached active (for the ready line).
    pub fn active_names(&self) -> Vec<String> {
        self.units
            .iter()
            .filter(|m| m.was_active)
            .map(|m| m.unit.name.clone())
            .collect()
    }

    pub fn list(&self) -> Vec<UnitStatus> {
        self.units
            .iter()
            .map(|m| UnitStatus {
                name: m.unit.name.clone(),
                state: m.state.systemd().0.to_string(),
                // A reached target's sub-state is "active" in systemd, not "exited".
                sub: match (m.unit.unit_type, m.state.systemd()) {
                    (UnitType::Target, ("active", _)) => "active".to_string(),
                    (_, (_, sub)) => sub.to_string(),
                },
                pid: m.state.pid(),
                reason: match &m.state {
                    State::Failed { reason } => Some(reason.clone()),
                    _ => None,
                },
                restarts: m.restarts,
                status_text: m.status_text.clone(),
                cgroup: None,
                memory_bytes: None,
                cpu_usec: None,
            })
            .collect()
    }
}

/// One cycle in the After= graph as a list of indexes where each is ordered after the next.
fn find_cycle(units: &[Managed]) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on the current path, 2 = done
    let mut mark = vec![0u8; units.len()];
    let mut path = Vec::new();
    fn visit(
        i: usize,
        units: &[Managed],
        mark: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        mark[i] = 1;
        path.push(i);
        for &a in &units[i].after {
            if mark[a] == 1 {
                let start = path.iter().position(|&p| p == a).unwrap_or(0);
                return Some(path[start..].to_vec());
            }
            if mark[a] == 0 {
                if let Some(c) = visit(a, units, mark, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        mark[i] = 2;
        None
    }
    for i in 0..units.len() {
        if mark[i] == 0 {
            if let Some(mut c) = visit(i, units, &mut mark, &mut path) {
                if c.len() == 1 {
                    c.push(c[0]);
                }
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_common::unit::Restart;

    fn unit(name: &str, kind: ServiceType, after: &[&str]) -> Unit {
        let text = format!(
            "[Unit]\nAfter={}\n[Service]\nType={}\nExecStart=/bin/{name}\n",
            after.join(" "),
            if kind == ServiceType::Oneshot {
                "oneshot"
            } else {
                "simple"
            }
        );
        Unit::from_text(&format!("{name}.service"), &text)
            .unwrap()
            .0
    }

    fn names(m: &Manager, idx: &[usize]) -> Vec<String> {
        idx.iter().map(|&i| m.unit(i).name.clone()).collect()
    }

    #[test]
    fn starts_in_after_order_and_becomes_ready() {
        use ServiceType::*;
        let (mut m, notes) = Manager::new(vec![
            unit("app", Simple, &["setup.service", "missing.service"]),
            unit("setup", Oneshot, &[]),
            unit("shell", Simple, &[]),
        ]);
        assert!(notes.is_empty());
        let due = m.due(0);
        assert_eq!(names(&m, &due), ["setup.service", "shell.service"]);
        m.spawned(1, 10, 0);
        m.spawned(2, 11, 0);
        assert!(m.due(1).is_empty(), "app waits for the oneshot to finish");
        assert!(!m.all_active());
        assert_eq!(m.exited(10, true, "exited 0", 5), Some(1));
        let due = m.due(5);
        assert_eq!(names(&m, &due), ["app.service"]);
        m.spawned(0, 12, 0);
        assert!(m.all_active());
        assert_eq!(
            m.active_names(),
            ["app.service", "setup.service", "shell.service"]
        );
        assert_eq!(m.exited(999, true, "exited 0", 6), None);
    }

    #[test]
    fn restart_always_comes_back_after_restart_sec() {
        let mut u = unit("shell", ServiceType::Simple, &[]);
        u.restart = Restart::Always;
        u.restart_ms = 100;
        let (mut m, _) = Manager::new(vec![u]);
        assert_eq!(m.due(0), [0]);
        m.spawned(0, 5, 0);
        m.exited(5, true, "exited 0", 1000);
        assert_eq!(m.list()[0].sub, "auto-restart");
        assert_eq!(m.next_timer(), Some(1100));
        assert!(m.due(1099).is_empty());
        assert_eq!(m.due(1100), [0]);
        m.spawned(0, 6, 0);
        assert_eq!(m.list()[0].pid, Some(6));
    }

    #[test]
    fn crash_loops_hit_the_start_limit() {
        let mut u = unit("bad", ServiceType::Simple, &[]);
        u.restart = Restart::OnFailure;
        u.restart_ms = 0;
        let (mut m, _) = Manager::new(vec![u]);
        let mut now = 0;
        for pid in 1..=START_LIMIT as i32 {
            assert_eq!(m.due(now), [0], "start {pid}");
            m.spawned(0, pid, 0);
            m.exited(pid, false, "exited 1", now);
            now += 10;
        }
        assert!(m.due(now).is_empty());
        assert_eq!(m.list()[0].state, "failed");
        let f = m.take_failures();
        assert_eq!(f.len(), 1);
        assert!(m.take_failures().is_empty());
        assert!(m.failed()[0].1.contains("started 5 times"));
    }

    #[test]
    fn failures_propagate_through_requires_and_make_boot_stuck() {
        let mut app = unit("app", ServiceType::Simple, &["setup.service"]);
        app.requires = vec!["setup.service".into()];
        let (mut m, _) = Manager::new(vec![unit("setup", ServiceType::Oneshot, &[]), app]);
        assert_eq!(m.due(0), [0]);
        m.spawned(0, 3, 0);
        m.exited(3, false, "exited 1", 1);
        assert!(m.due(1).is_empty());
        assert_eq!(m.failed().len(), 2);
        assert!(m.stuck());
        assert!(!m.all_active());
    }

    #[test]
    fn missing_requires_and_cycles_are_reported() {
        let mut a = unit("a", ServiceType::Simple, &["b.service"]);
        a.requires = vec!["nope.service".into()];
        let (mut m, notes) = Manager::new(vec![
            a,
            unit("b", ServiceType::Simple, &["c.service"]),
            unit("c", ServiceType::Simple, &["b.service"]),
        ]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[1].contains("ordering cycle"));
        let due = m.due(0);
        assert_eq!(due.len(), 1, "one edge of the b<->c cycle is dropped");
    }

    #[test]
    fn stop_signals_running_units_and_suppresses_restarts() {
        let mut shell = unit("shell", ServiceType::Simple, &[]);
        shell.restart = Restart::Always;
        let (mut m, _) = Manager::new(vec![shell, unit("one", ServiceType::Oneshot, &[])]);
        m.due(0);
        m.spawned(0, 7, 0);
        m.spawned(1, 8, 0);
        m.exited(8, true, "exited 0", 1);
        m.begin_stop();
        assert_eq!(m.stop_wave(), [("shell.service".to_string(), 7)]);
        assert_eq!(m.stopping_pids(), [7]);
        assert!(!m.all_stopped());
        m.exited(7, false, "killed by SIGTERM", 2);
        assert!(m.stopping_pids().is_empty());
        assert!(m.all_stopped());
        assert!(m.due(1_000_000).is_empty());
        assert_eq!(m.list()[0].state, "inactive");
    }

    #[test]
    fn shutdown_stops_in_reverse_start_order() {
        // db <- app <- proxy (each After= the one before); log is unordered.
        let (mut m, _) = Manager::new(vec![
            unit("proxy", ServiceType::Simple, &["app.service"]),
            unit("app", ServiceType::Simple, &["db.service"]),
            unit("db", ServiceType::Simple, &[]),
            unit("log", ServiceType::Simple, &[]),
        ]);
        for (n, pid) in [("db", 1), ("log", 4), ("app", 2), ("proxy", 3)] {
            let i = m
                .units
                .iter()
                .position(|u| u.unit.name == format!("{n}.service"))
                .unwrap();
            m.spawned(i, pid, 0);
        }
        m.begin_stop();
        let wave = |m: &mut Manager| -> Vec<String> {
            m.stop_wave().into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(wave(&mut m), ["proxy.service", "log.service"]);
        assert!(wave(&mut m).is_empty(), "app waits for proxy to be gone");
        m.exited(4, true, "exited", 1);
        assert!(wave(&mut m).is_empty());
        m.exited(3, true, "exited", 1);
        assert_eq!(wave(&mut m), ["app.service"]);
        m.exited(2, false, "killed by SIGTERM", 2);
        assert_eq!(wave(&mut m), ["db.service"]);
        m.exited(1, true, "exited", 3);
        assert!(m.all_stopped());
    }

    #[test]
    fn targets_are_reached_without_a_process_and_order_what_follows() {
        let target = Unit::from_text("network-online.target", "[Unit]\nAfter=net.service\n")
            .unwrap()
            .0;
        let (mut m, _) = Manager::new(vec![
            unit("net", ServiceType::Oneshot, &[]),
            target,
            unit("web", ServiceType::Simple, &["network-online.target"]),
        ]);
        let d = m.due(0);
        assert_eq!(names(&m, &d), ["net.service"]);
        m.spawned(0, 5, 0);
        assert!(m.due(1).is_empty(), "the target waits for net.service");
        m.exited(5, true, "exited 0", 2);
        // The target is reached and web is due in the same call.
        let d = m.due(3);
        assert_eq!(names(&m, &d), ["web.service"]);
        assert_eq!(m.active_state("network-online.target"), "active");
        m.spawned(2, 6, 3);
        assert!(m.all_active());
    }

    #[test]
    fn units_load_start_stop_and_restart_on_demand() {
        let (mut m, _) = Manager::new(vec![unit("boot", ServiceType::Simple, &[])]);
        assert_eq!(m.due(0), vec![0]);
        m.spawned(0, 10, 0);
        assert!(m.all_active());
        // A unit loaded later is inactive and does not hold readiness back.
        m.load(vec![unit("late", ServiceType::Simple, &["boot"])]);
        assert_eq!(m.active_state("late.service"), "inactive");
        assert!(m.all_active());
        assert!(m.due(1).is_empty());
        // Starting it makes it wanted; it runs once what it is ordered after is settled.
        m.start("late.service").unwrap();
        assert!(!m.all_active());
        assert_eq!(m.due(2), vec![1]);
        m.spawned(1, 11, 0);
        assert_eq!(m.active_state("late.service"), "active");
        assert!(m.all_active());
        // Stop: SIGTERM goes to its pid, and its exit does not restart it.
        assert_eq!(m.stop("late.service").unwrap(), Some(11));
        assert_eq!(m.active_state("late.service"), "deactivating");
        m.exited(11, false, "killed by SIGTERM", 3);
        assert_eq!(m.active_state("late.service"), "inactive");
        assert!(m.due(4).is_empty());
        // Restart of a running unit: stop, then start again once it exited.
        assert_eq!(m.restart("boot.service").unwrap(), Some(10));
        m.exited(10, false, "killed by SIGTERM", 5);
        assert_eq!(m.due(6), vec![0]);
        assert!(m.start("nope.service").unwrap_err().contains("not found"));
        assert_eq!(m.active_state("nope.service"), "inactive");
    }

    #[test]
    fn notify_services_wait_for_ready_and_time_out() {
        let text = "[Service]\nType=notify\nTimeoutStartSec=5\nExecStart=/bin/n\n";
        let n = Unit::from_text("n.service", text).unwrap().0;
        let (mut m, _) = Manager::new(vec![n]);
        assert_eq!(m.due(0), vec![0]);
        m.spawned(0, 7, 1000);
        assert_eq!(m.active_state("n.service"), "activating");
        assert!(!m.all_active());
        assert_eq!(m.next_timer(), Some(6000));
        m.notify("n.service", false, Some("loading".into()));
        assert_eq!(m.active_state("n.service"), "activating");
        m.notify("n.service", true, None);
        assert_eq!(m.active_state("n.service"), "active");
        assert!(m.all_active());
        assert_eq!(m.list()[0].status_text.as_deref(), Some("loading"));
        // A second one never says READY=1: it is killed and ends failed, without restarting.
        let text = "[Service]\nType=notify\nTimeoutStartSec=5\nRestart=always\nExecStart=/bin/n\n";
        let (mut m, _) = Manager::new(vec![Unit::from_text("slow.service", text).unwrap().0]);
        m.due(0);
        m.spawned(0, 8, 0);
        assert!(m.expire_starts(4999).is_empty());
        assert_eq!(m.expire_starts(5000), vec![("slow.service".to_string(), 8)]);
        m.exited(8, false, "killed by SIGKILL", 5001);
        assert_eq!(m.active_state("slow.service"), "failed");
        assert!(m.list()[0].reason.as_deref().unwrap().contains("timed out"));
        assert!(m.due(10_000).is_empty());
    }

    #[test]
    fn before_orders_skipped_counts_as_done_and_conflicts_are_mutual() {
        let first = Unit::from_text(
            "first.service",
            "[Unit]\nBefore=second.service\n[Service]\nExecStart=/bin/a\n",
        )
        .unwrap()
        .0;
        let second = Unit::from_text(
            "second.service",
            "[Unit]\nConflicts=other.service\n[Service]\nType=oneshot\nExecStart=/bin/b\n",
        )
        .unwrap()
        .0;
        let other = Unit::from_text("other.service", "[Service]\nExecStart=/bin/c\n")
            .unwrap()
            .0;
        let (mut m, _) = Manager::new(vec![second, first, other]);
        // second waits for first (Before= on first), other is free.
        let due = m.due(0);
        assert_eq!(names(&m, &due), ["first.service", "other.service"]);
        m.skipped(1, "condition failed (/nope)".into());
        m.spawned(2, 9, 0);
        let due = m.due(1);
        assert_eq!(names(&m, &due), ["second.service"]);
        assert_eq!(m.conflicts_of("second.service"), ["other.service"]);
        assert_eq!(m.conflicts_of("other.service"), ["second.service"]);
        assert_eq!(
            m.list()[1].status_text.as_deref(),
            Some("condition failed (/nope)")
        );
    }
}
