//! Boot assessment: after booting a freshly installed slot (its loader entry still counts
//! tries), bless it only once the system is healthy — init ready and the required units active
//! for a configurable time — and otherwise reboot, so that systemd-boot, finding the entry at
//! `+0`, falls back to the previous slot. After such a fallback the failed version is recorded in
//! `/var/lib/crust/update-engine/failed-versions` and never offered again.
//!
//! The decisions ([`after_boot`], [`Assessor`]) are pure; [`on_start`] and [`tick`] are the I/O
//! the daemon runs. [`init_should_bless`] is for init: it tells whether init may bless the boot
//! itself at ready, or must leave it to update-engine.

use crate::apply::{Pending, PENDING};
use crate::daemon::{Daemon, FAILED_VERSIONS};
use crust_channels::Version;
use crust_common::slot::{self, BootCounter, EntryName, Slot, SlotState};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// What counts as healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Units that must be active (besides init being ready); empty: init's readiness alone.
    pub required: Vec<String>,
    /// How long the system must stay healthy before the boot is blessed.
    pub healthy_for: u64,
    /// Seconds after boot by which it must have been healthy that long; later, fall back.
    pub deadline: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            required: Vec::new(),
            healthy_for: 30,
            deadline: 300,
        }
    }
}

impl Policy {
    /// From update.conf: `CRUST_BOOT_REQUIRED_UNITS` (space separated),
    /// `CRUST_BOOT_HEALTHY_SECS`, `CRUST_BOOT_DEADLINE_SECS`.
    pub fn from_vars(vars: &[(String, String)]) -> Policy {
        let get = |k: &str| {
            vars.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let d = Policy::default();
        Policy {
            required: get("CRUST_BOOT_REQUIRED_UNITS").map_or(d.required, |v| {
                v.split_whitespace().map(String::from).collect()
            }),
            healthy_for: get("CRUST_BOOT_HEALTHY_SECS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.healthy_for),
            deadline: get("CRUST_BOOT_DEADLINE_SECS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.deadline),
        }
    }
}

/// One look at the system.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// Seconds since boot.
    pub uptime: u64,
    pub init_ready: bool,
    /// (unit, state) as init reports them.
    pub units: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Bless,
    Fallback(String),
}

/// Watches a boot on trial.
#[derive(Debug, Clone)]
pub struct Assessor {
    pub policy: Policy,
    healthy_since: Option<u64>,
}

impl Assessor {
    pub fn new(policy: Policy) -> Assessor {
        Assessor {
            policy,
            healthy_since: None,
        }
    }

    fn unhealthy(&self, o: &Observation) -> Vec<String> {
        let mut why = Vec::new();
        if !o.init_ready {
            why.push("init is not ready".to_string());
        }
        for r in &self.policy.required {
            match o.units.iter().find(|(n, _)| n == r) {
                Some((_, s)) if s == "active" => {}
                Some((_, s)) => why.push(format!("{r} is {s}")),
                None => why.push(format!("{r} is not loaded")),
            }
        }
        why
    }

    /// A verdict once one is due, else None (look again later).
    pub fn observe(&mut self, o: &Observation) -> Option<Verdict> {
        let why = self.unhealthy(o);
        if why.is_empty() {
            let since = *self.healthy_since.get_or_insert(o.uptime);
            if o.uptime.saturating_sub(since) >= self.policy.healthy_for {
                return Some(Verdict::Bless);
            }
            // Healthy, but not yet for long enough: the deadline still applies.
            if o.uptime >= self.policy.deadline + self.policy.healthy_for {
                return Some(Verdict::Bless);
            }
            None
        } else {
            self.healthy_since = None;
            (o.uptime >= self.policy.deadline).then(|| {
                Verdict::Fallback(format!(
                    "not healthy {}s after boot: {}",
                    self.policy.deadline,
                    why.join(", ")
                ))
            })
        }
    }
}

/// What the state left by the last update means for this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterBoot {
    /// No update pending.
    Nothing,
    /// The new slot is installed but was never booted: still waiting for the reboot.
    AwaitingReboot(Version),
    /// This boot runs the new slot and its entry still counts tries: judge it.
    OnTrial {
        slot: Slot,
        version: Version,
        entry: EntryName,
    },
    /// This boot runs the new slot, already blessed (by init or an earlier run): done.
    Done(Version),
    /// The new slot was tried and this boot is the old slot again: the version failed.
    FellBack {
        slot: Slot,
        version: Version,
        entry: Option<EntryName>,
    },
}

/// Decides from the pending record, the slot that booted and the entry file names.
pub fn after_boot(pending: Option<&Pending>, booted: Slot, entries: &[String]) -> AfterBoot {
    let Some(p) = pending else {
        return AfterBoot::Nothing;
    };
    let Some(new) = Slot::ALL.into_iter().find(|s| s.letter() == p.slot) else {
        return AfterBoot::Nothing;
    };
    let entry = slot::entries_of(entries, new).first().copied();
    if new == booted {
        return match entry {
            Some(
                e @ EntryName {
                    counter: Some(_), ..
                },
            ) => AfterBoot::OnTrial {
                slot: new,
                version: p.version,
                entry: e,
            },
            _ => AfterBoot::Done(p.version),
        };
    }
    match entry {
        Some(EntryName {
            counter: Some(BootCounter { left, done: 0 }),
            ..
        }) if left > 0 => AfterBoot::AwaitingReboot(p.version),
        // Blessed yet not booted: someone chose the old slot by hand; nothing failed.
        Some(EntryName { counter: None, .. }) => AfterBoot::Nothing,
        e => AfterBoot::FellBack {
            slot: new,
            version: p.version,
            entry: e,
        },
    }
}

/// For init (call it before blessing at ready): `false` when update-engine has a new slot on
/// trial in this boot and will judge it itself; `true` otherwise (init blesses as before).
pub fn init_should_bless(state_dir: &Path, booted: Slot, entries: &[String]) -> bool {
    let pending: Option<Pending> = std::fs::read(state_dir.join(PENDING))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    !matches!(
        after_boot(pending.as_ref(), booted, entries),
        AfterBoot::OnTrial { .. }
    )
}

// ---------------------------------------------------------------------------------------------
// I/O.

fn entry_files(esp: &Path) -> Vec<String> {
    std::fs::read_dir(esp.join(slot::ENTRIES_DIR))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn set_boot(d: &Daemon, what: &str, note: Option<String>) {
    if let Ok(mut v) = d.view.lock() {
        v.boot = what.into();
        if let Some(n) = note {
            v.note = n;
        }
    }
}

/// Runs at daemon start: records a fallback, resumes a pending reboot, or starts a trial.
pub fn on_start(d: &mut Daemon) {
    let state = d.updater.paths.state.clone();
    let pending: Option<Pending> = std::fs::read(state.join(PENDING))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let entries = entry_files(&d.updater.paths.esp);
    match after_boot(pending.as_ref(), d.updater.booted, &entries) {
        AfterBoot::Nothing => set_boot(d, "healthy", None),
        AfterBoot::Done(v) => {
            let _ = std::fs::remove_file(state.join(PENDING));
            set_boot(d, "healthy", Some(format!("{v} booted and was blessed")));
        }
        AfterBoot::AwaitingReboot(v) => {
            d.engine.resume_need_reboot(v);
            set_boot(
                d,
                "healthy",
                Some(format!("{v} is installed; waiting for the reboot")),
            );
        }
        AfterBoot::FellBack {
            slot,
            version,
            entry,
        } => {
            let mut failed =
                std::fs::read_to_string(state.join(FAILED_VERSIONS)).unwrap_or_default();
            if !failed.lines().any(|l| l.trim() == version.to_string()) {
                failed.push_str(&format!("{version}\n"));
                let _ = std::fs::create_dir_all(&state);
                let _ = std::fs::write(state.join(FAILED_VERSIONS), failed);
            }
            d.engine.boot_failed(version);
            // The failed slot is not bootable any more: priority 0 in gptprio too.
            if let Some(e) = entry {
                if let Ok(mut disk) = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&d.updater.paths.disk)
                {
                    let st = SlotState {
                        slot,
                        priority: 0,
                        entry: e,
                    };
                    if let Err(e) = slot::set_state(&d.updater.paths.esp, &mut disk, &st, &[], None)
                    {
                        eprintln!("update-engine: marking slot {slot} failed in the GPT: {e}");
                    }
                }
            }
            let _ = std::fs::remove_file(state.join(PENDING));
            let note = format!("{version} failed to boot and the machine fell back to {}; {version} will not be retried", d.engine.current);
            eprintln!("update-engine: {note}");
            set_boot(d, "healthy", Some(note));
        }
        AfterBoot::OnTrial { slot, version, .. } => {
            d.assessor = Some(Assessor::new(Policy::from_vars(&d.conf_vars())));
            set_boot(
                d,
                "assessing",
                Some(format!(
                    "{version} booted from slot {slot}; judging its health before blessing it"
                )),
            );
        }
    }
}

/// Seconds since boot from /proc/uptime.
pub fn uptime() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

#[derive(Deserialize)]
struct InitResponse {
    #[serde(default)]
    status: Option<InitStatus>,
    #[serde(default)]
    units: Option<Vec<InitUnit>>,
}
#[derive(Deserialize)]
struct InitStatus {
    ready: bool,
}
#[derive(Deserialize)]
struct InitUnit {
    name: String,
    state: String,
}

fn ask_init(socket: &Path, cmd: &str) -> Option<InitResponse> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())
        .ok()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// Looks at the system through init's control socket.
pub fn observe(init_socket: &Path, uptime: u64) -> Observation {
    let ready = ask_init(init_socket, "status")
        .and_then(|r| r.status)
        .is_some_and(|s| s.ready);
    let units = ask_init(init_socket, "list-units")
        .and_then(|r| r.units)
        .unwrap_or_default()
        .into_iter()
        .map(|u| (u.name, u.state))
        .collect();
    Observation {
        uptime,
        init_ready: ready,
        units,
    }
}

/// Acts on a verdict: bless through the one slot-state function, or reboot into the fallback.
pub fn act(d: &mut Daemon, verdict: Verdict) {
    let booted = d.updater.booted;
    let paths = d.updater.paths.clone();
    match verdict {
        Verdict::Bless => {
            let entries = entry_files(&paths.esp);
            let other = slot::entries_of(&entries, booted.other())
                .first()
                .map(|e| SlotState {
                    slot: booted.other(),
                    priority: 1,
                    entry: *e,
                });
            let r = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&paths.disk)
                .map_err(|e| e.to_string())
                .and_then(|mut disk| {
                    slot::set_state(
                        &paths.esp,
                        &mut disk,
                        &slot::blessing(booted),
                        other.as_slice(),
                        None,
                    )
                    .map_err(|e| e.to_string())
                });
            match r {
                Ok(name) => {
                    let _ = std::fs::remove_file(paths.state.join(PENDING));
                    d.assessor = None;
                    set_boot(
                        d,
                        "healthy",
                        Some(format!("boot healthy: blessed ({name})")),
                    );
                    eprintln!("update-engine: boot healthy: blessed ({name})");
                }
                Err(e) => eprintln!("update-engine: blessing the boot failed: {e}"),
            }
        }
        Verdict::Fallback(why) => {
            eprintln!("update-engine: {why}; rebooting so the previous slot boots");
            set_boot(
                d,
                "failed",
                Some(format!("{why}; rebooting into the previous slot")),
            );
            d.assessor = None;
            if let Some((prog, args)) = d.reboot.split_first() {
                if let Err(e) = std::process::Command::new(prog).args(args).status() {
                    eprintln!("update-engine: {prog}: {e}");
                }
            }
        }
    }
}

/// Called from the daemon loop.
pub fn tick(d: &mut Daemon, uptime: u64) {
    if d.assessor.is_none() {
        return;
    }
    let o = observe(&d.init_socket, uptime);
    if let Some(v) = d.assessor.as_mut().and_then(|a| a.observe(&o)) {
        act(d, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn obs(uptime: u64, ready: bool, units: &[(&str, &str)]) -> Observation {
        Observation {
            uptime,
            init_ready: ready,
            units: units
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn blesses_after_staying_healthy_long_enough() {
        let mut a = Assessor::new(Policy {
            required: vec!["etcd2.service".into()],
            healthy_for: 30,
            deadline: 300,
        });
        assert_eq!(a.observe(&obs(10, false, &[])), None);
        assert_eq!(
            a.observe(&obs(20, true, &[("etcd2.service", "activating")])),
            None
        );
        assert_eq!(
            a.observe(&obs(25, true, &[("etcd2.service", "active")])),
            None
        );
        assert_eq!(
            a.observe(&obs(54, true, &[("etcd2.service", "active")])),
            None
        );
        // A relapse restarts the clock.
        assert_eq!(
            a.observe(&obs(55, true, &[("etcd2.service", "failed")])),
            None
        );
        assert_eq!(
            a.observe(&obs(60, true, &[("etcd2.service", "active")])),
            None
        );
        assert_eq!(
            a.observe(&obs(89, true, &[("etcd2.service", "active")])),
            None
        );
        assert_eq!(
            a.observe(&obs(90, true, &[("etcd2.service", "active")])),
            Some(Verdict::Bless)
        );
    }

    #[test]
    fn falls_back_when_unhealthy_at_the_deadline() {
        let mut a = Assessor::new(Policy {
            required: vec!["etcd2.service".into()],
            healthy_for: 30,
            deadline: 120,
        });
        assert_eq!(a.observe(&obs(119, true, &[])), None);
        match a.observe(&obs(120, true, &[("etcd2.service", "failed")])) {
            Some(Verdict::Fallback(why)) => {
                assert!(why.contains("etcd2.service is failed"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let mut a = Assessor::new(Policy::default());
        match a.observe(&obs(400, false, &[])) {
            Some(Verdict::Fallback(why)) => assert!(why.contains("init is not ready"), "{why}"),
            other => panic!("{other:?}"),
        }
        let p = Policy::from_vars(&[
            (
                "CRUST_BOOT_REQUIRED_UNITS".into(),
                "a.service b.service".into(),
            ),
            ("CRUST_BOOT_HEALTHY_SECS".into(), "5".into()),
        ]);
        assert_eq!((p.required.len(), p.healthy_for, p.deadline), (2, 5, 300));
    }

    #[test]
    fn reads_what_happened_since_the_update() {
        let p = Pending {
            version: v("1.0.1"),
            slot: "b".into(),
            from: v("1.0.0"),
        };
        let files = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            after_boot(None, Slot::A, &files(&["crust-usr-a.conf"])),
            AfterBoot::Nothing
        );
        // Installed, not yet rebooted.
        assert_eq!(
            after_boot(
                Some(&p),
                Slot::A,
                &files(&["crust-usr-a.conf", "crust-usr-b+1.conf"])
            ),
            AfterBoot::AwaitingReboot(v("1.0.1"))
        );
        // Booted B: systemd-boot counted the try.
        assert!(matches!(
            after_boot(
                Some(&p),
                Slot::B,
                &files(&["crust-usr-a.conf", "crust-usr-b+0-1.conf"])
            ),
            AfterBoot::OnTrial { slot: Slot::B, .. }
        ));
        assert_eq!(
            after_boot(
                Some(&p),
                Slot::B,
                &files(&["crust-usr-a.conf", "crust-usr-b.conf"])
            ),
            AfterBoot::Done(v("1.0.1"))
        );
        // Back on A with B's tries used up: a fallback.
        assert!(matches!(
            after_boot(
                Some(&p),
                Slot::A,
                &files(&["crust-usr-a.conf", "crust-usr-b+0-1.conf"])
            ),
            AfterBoot::FellBack { slot: Slot::B, .. }
        ));
        assert!(matches!(
            after_boot(Some(&p), Slot::A, &files(&["crust-usr-a.conf"])),
            AfterBoot::FellBack { entry: None, .. }
        ));
        assert_eq!(
            after_boot(
                Some(&p),
                Slot::A,
                &files(&["crust-usr-a.conf", "crust-usr-b.conf"])
            ),
            AfterBoot::Nothing
        );
    }

    #[test]
    fn init_leaves_a_trial_boot_to_update_engine() {
        let t = tempfile::tempdir().unwrap();
        let files = vec![
            "crust-usr-a.conf".to_string(),
            "crust-usr-b+0-1.conf".to_string(),
        ];
        assert!(init_should_bless(t.path(), Slot::B, &files));
        let p = Pending {
            version: v("1.0.1"),
            slot: "b".into(),
            from: v("1.0.0"),
        };
        std::fs::write(t.path().join(PENDING), serde_json::to_vec(&p).unwrap()).unwrap();
        assert!(!init_should_bless(t.path(), Slot::B, &files));
        assert!(init_should_bless(t.path(), Slot::A, &files));
    }
}
