//! The update state machine, with no I/O: events in, commands out.
//!
//! States and their names are update_engine's (`UPDATE_STATUS_*`), which CoreOS tooling and
//! people's scripts know:
//!
//! ```text
//! IDLE --timer/check--> CHECKING_FOR_UPDATE --newer, eligible--> UPDATE_AVAILABLE
//!   UPDATE_AVAILABLE --first bytes--> DOWNLOADING --done--> VERIFYING --ok--> FINALIZING
//!   FINALIZING --slot written--> UPDATED_NEED_REBOOT (stays until the reboot)
//! any failure --> REPORTING_ERROR_EVENT (keeps the error for `crustctl update status`)
//!   --next timer--> CHECKING_FOR_UPDATE, after an exponential backoff
//! ```
//!
//! Timing decisions live here too: the first check a little after boot with per-machine jitter,
//! then every `interval`; after a failure `backoff_base * 2^(failures-1)` capped at `interval`
//! (never a busy loop). Versions that failed to boot on this machine are never offered again.
//! Times are seconds on a monotonic clock, passed in with each event.

use crust_channels::Version;
use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Idle,
    CheckingForUpdate,
    UpdateAvailable,
    Downloading,
    Verifying,
    Finalizing,
    UpdatedNeedReboot,
    ReportingErrorEvent,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Idle => "UPDATE_STATUS_IDLE",
            Status::CheckingForUpdate => "UPDATE_STATUS_CHECKING_FOR_UPDATE",
            Status::UpdateAvailable => "UPDATE_STATUS_UPDATE_AVAILABLE",
            Status::Downloading => "UPDATE_STATUS_DOWNLOADING",
            Status::Verifying => "UPDATE_STATUS_VERIFYING",
            Status::Finalizing => "UPDATE_STATUS_FINALIZING",
            Status::UpdatedNeedReboot => "UPDATE_STATUS_UPDATED_NEED_REBOOT",
            Status::ReportingErrorEvent => "UPDATE_STATUS_REPORTING_ERROR_EVENT",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First check this long after start...
    pub first_delay: u64,
    /// ...plus up to this much per-machine jitter (also added to every periodic check).
    pub jitter: u64,
    pub interval: u64,
    pub backoff_base: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            first_delay: 60,
            jitter: 60,
            interval: 3600,
            backoff_base: 30,
        }
    }
}

/// What a metadata check found: the newest release of the channel, as far as this machine is
/// concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub version: Version,
    pub length: u64,
    pub min_version: Option<Version>,
    /// Rollout: `None` eligible now, `Some(at)` not before Unix time `at` (converted by the
    /// caller to the engine's clock), `Some(u64::MAX)` never.
    pub wait_until: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The scheduled time came.
    Timer,
    /// `crustctl update check`: check now, whatever the schedule.
    CheckNow,
    /// Verified metadata; `None` when the channel has no release at all.
    MetadataFetched(Option<Candidate>),
    MetadataFailed(String),
    Progress {
        done: u64,
        total: u64,
    },
    Downloaded,
    DownloadFailed(String),
    VerifyOk,
    VerifyFailed(String),
    Finalized,
    FinalizeFailed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    FetchMetadata,
    /// Download the release's payload into the inactive slot; `restart` drops any partial
    /// download (after a verification failure the bytes on disk are not trusted).
    Download {
        version: Version,
        restart: bool,
    },
    Verify(Version),
    /// Write kernel, initrd, loader entry with one try, gptprio.
    Finalize(Version),
    /// The new slot is ready: hand over to the reboot strategy.
    RebootNeeded(Version),
    /// Persist a status line / error for `crustctl update status`.
    Report(String),
}

/// A refused event: the state machine does not move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Illegal {
    pub status: Status,
    pub event: Event,
}

impl fmt::Display for Illegal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {:?} is not valid in {}", self.event, self.status)
    }
}

#[derive(Debug, Clone)]
pub struct Engine {
    pub status: Status,
    pub current: Version,
    /// The release being applied (or applied, awaiting reboot).
    pub target: Option<Version>,
    pub progress: (u64, u64),
    pub last_error: Option<String>,
    /// Versions that failed to boot here: never offered again.
    pub failed: BTreeSet<Version>,
    /// Consecutive failures since the last success (drives the backoff).
    pub failures: u32,
    /// Engine-clock time of the next check (None while busy or awaiting reboot).
    pub next_check: Option<u64>,
    /// Whether the next download must start over.
    restart: bool,
    timing: Timing,
    /// Per-machine jitter seed (from the machine id), so a fleet does not check in lockstep.
    seed: u64,
    checks: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: a fixed, well-spread function of the seed; pure, no RNG state.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Engine {
    /// A fresh engine at `now`: the first check is `first_delay` + jitter away.
    pub fn new(
        current: Version,
        failed: BTreeSet<Version>,
        timing: Timing,
        seed: u64,
        now: u64,
    ) -> Engine {
        let mut e = Engine {
            status: Status::Idle,
            current,
            target: None,
            progress: (0, 0),
            last_error: None,
            failed,
            failures: 0,
            next_check: None,
            restart: false,
            timing,
            seed,
            checks: 0,
        };
        e.next_check = Some(now + timing.first_delay + e.jitter());
        e
    }

    fn jitter(&self) -> u64 {
        if self.timing.jitter == 0 {
            0
        } else {
            mix(self.seed ^ mix(self.checks)) % (self.timing.jitter + 1)
        }
    }

    /// Delay before the next attempt after `failures` consecutive failures.
    pub fn backoff(&self) -> u64 {
        let exp = self.failures.saturating_sub(1).min(30);
        self.timing
            .backoff_base
            .saturating_mul(1u64 << exp)
            .min(self.timing.interval)
            .max(1)
    }

    fn fail(&mut self, now: u64, why: String) -> Vec<Command> {
        self.failures += 1;
        self.status = Status::ReportingErrorEvent;
        self.last_error = Some(why.clone());
        self.next_check = Some(now + self.backoff() + self.jitter() / 4);
        vec![Command::Report(format!(
            "{}: {why}",
            Status::ReportingErrorEvent
        ))]
    }

    fn idle(&mut self, until: u64, note: String) -> Vec<Command> {
        self.status = Status::Idle;
        self.failures = 0;
        self.last_error = None;
        self.next_check = Some(until);
        vec![Command::Report(note)]
    }

    /// After a restart between activation and reboot: the new slot is already installed.
    pub fn resume_need_reboot(&mut self, version: Version) {
        self.status = Status::UpdatedNeedReboot;
        self.target = Some(version);
        self.next_check = None;
    }

    /// Records that `version` booted and fell back: it is never offered again.
    pub fn boot_failed(&mut self, version: Version) {
        self.failed.insert(version);
    }

    pub fn handle(&mut self, ev: Event, now: u64) -> Result<Vec<Command>, Illegal> {
        use Status::*;
        let illegal = |s: &Engine, ev: Event| {
            Err(Illegal {
                status: s.status,
                event: ev,
            })
        };
        let periodic = now + self.timing.interval + self.jitter();
        Ok(match (self.status, ev) {
            // Checking: only from rest; a due timer or an explicit request.
            (Idle | ReportingErrorEvent, Event::Timer)
                if self.next_check.is_some_and(|t| t <= now) =>
            {
                self.check()
            }
            (Idle | ReportingErrorEvent, Event::Timer) => Vec::new(),
            (Idle | ReportingErrorEvent, Event::CheckNow) => self.check(),
            // Busy or waiting for the reboot: timers and requests change nothing.
            (_, Event::Timer | Event::CheckNow) => Vec::new(),

            (CheckingForUpdate, Event::MetadataFailed(why)) => {
                self.fail(now, format!("checking for an update failed: {why}"))
            }
            (CheckingForUpdate, Event::MetadataFetched(None)) => {
                self.idle(periodic, "the channel has no release yet".into())
            }
            (CheckingForUpdate, Event::MetadataFetched(Some(c))) => {
                if !c.version.is_newer_than(&self.current) {
                    self.idle(
                        periodic,
                        format!(
                            "up to date: {} (channel latest {})",
                            self.current, c.version
                        ),
                    )
                } else if self.failed.contains(&c.version) {
                    self.idle(
                        periodic,
                        format!(
                            "{} failed to boot on this machine before; not retrying it",
                            c.version
                        ),
                    )
                } else if c.min_version.is_some_and(|m| self.current < m) {
                    let m = c.min_version.map(|m| m.to_string()).unwrap_or_default();
                    self.fail(
                        now,
                        format!(
                            "{} requires at least {m} to update from; this machine runs {}",
                            c.version, self.current
                        ),
                    )
                } else if let Some(at) = c.wait_until {
                    let next = if at == u64::MAX {
                        periodic
                    } else {
                        at.min(periodic).max(now + 1)
                    };
                    self.idle(
                        next,
                        format!(
                            "{} is being rolled out in waves; this machine's turn has not come",
                            c.version
                        ),
                    )
                } else {
                    self.status = UpdateAvailable;
                    self.target = Some(c.version);
                    self.progress = (0, c.length);
                    self.next_check = None;
                    let restart = std::mem::take(&mut self.restart);
                    vec![
                        Command::Report(format!(
                            "update available: {} -> {}",
                            self.current, c.version
                        )),
                        Command::Download {
                            version: c.version,
                            restart,
                        },
                    ]
                }
            }

            (UpdateAvailable | Downloading, Event::Progress { done, total }) => {
                self.status = Downloading;
                self.progress = (done, total);
                Vec::new()
            }
            (UpdateAvailable | Downloading, Event::Downloaded) => {
                self.status = Verifying;
                self.progress.0 = self.progress.1;
                self.target.map(Command::Verify).into_iter().collect()
            }
            (UpdateAvailable | Downloading, Event::DownloadFailed(why)) => self.fail(
                now,
                format!("download failed (it resumes on the next attempt): {why}"),
            ),
            (Verifying, Event::VerifyOk) => {
                self.status = Finalizing;
                self.target.map(Command::Finalize).into_iter().collect()
            }
            (Verifying, Event::VerifyFailed(why)) => {
                self.restart = true;
                self.fail(
                    now,
                    format!("the downloaded update does not verify, it is discarded: {why}"),
                )
            }
            (Finalizing, Event::Finalized) => {
                self.status = UpdatedNeedReboot;
                self.failures = 0;
                self.last_error = None;
                self.next_check = None;
                let v = self.target;
                let mut out = vec![Command::Report(format!(
                    "{} installed in the inactive slot; reboot to use it",
                    v.map(|v| v.to_string()).unwrap_or_default()
                ))];
                out.extend(v.map(Command::RebootNeeded));
                out
            }
            (Finalizing, Event::FinalizeFailed(why)) => {
                self.fail(now, format!("activating the new slot failed: {why}"))
            }
            (_, ev) => return illegal(self, ev),
        })
    }

    fn check(&mut self) -> Vec<Command> {
        self.status = Status::CheckingForUpdate;
        self.checks += 1;
        self.next_check = None;
        vec![Command::FetchMetadata]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn cand(ver: &str) -> Candidate {
        Candidate {
            version: v(ver),
            length: 100,
            min_version: None,
            wait_until: None,
        }
    }

    fn timing() -> Timing {
        Timing {
            first_delay: 60,
            jitter: 30,
            interval: 3600,
            backoff_base: 10,
        }
    }

    fn engine() -> Engine {
        Engine::new(v("1.0.0"), BTreeSet::new(), timing(), 42, 0)
    }

    #[test]
    fn happy_path_through_every_state() {
        let mut e = engine();
        let first = e.next_check.unwrap();
        assert!((60..=90).contains(&first), "{first}");
        assert_eq!(e.handle(Event::Timer, first - 1).unwrap(), vec![]);
        assert_eq!(e.status, Status::Idle);
        assert_eq!(
            e.handle(Event::Timer, first).unwrap(),
            vec![Command::FetchMetadata]
        );
        assert_eq!(e.status, Status::CheckingForUpdate);
        let c = e
            .handle(Event::MetadataFetched(Some(cand("1.0.1"))), first)
            .unwrap();
        assert_eq!(
            c[1],
            Command::Download {
                version: v("1.0.1"),
                restart: false
            }
        );
        assert_eq!(e.status, Status::UpdateAvailable);
        e.handle(
            Event::Progress {
                done: 50,
                total: 100,
            },
            first,
        )
        .unwrap();
        assert_eq!((e.status, e.progress), (Status::Downloading, (50, 100)));
        assert_eq!(
            e.handle(Event::Downloaded, first).unwrap(),
            vec![Command::Verify(v("1.0.1"))]
        );
        assert_eq!(e.status, Status::Verifying);
        assert_eq!(
            e.handle(Event::VerifyOk, first).unwrap(),
            vec![Command::Finalize(v("1.0.1"))]
        );
        assert_eq!(e.status, Status::Finalizing);
        let c = e.handle(Event::Finalized, first).unwrap();
        assert_eq!(c.last(), Some(&Command::RebootNeeded(v("1.0.1"))));
        assert_eq!(e.status, Status::UpdatedNeedReboot);
        // Nothing more happens until the reboot.
        assert_eq!(e.handle(Event::CheckNow, first + 99999).unwrap(), vec![]);
        assert_eq!(e.handle(Event::Timer, first + 99999).unwrap(), vec![]);
        assert_eq!(e.status.to_string(), "UPDATE_STATUS_UPDATED_NEED_REBOOT");
    }

    #[test]
    fn illegal_events_are_refused_without_moving() {
        let mut e = engine();
        for ev in [
            Event::Downloaded,
            Event::VerifyOk,
            Event::Finalized,
            Event::MetadataFetched(None),
            Event::Progress { done: 1, total: 2 },
        ] {
            let err = e.handle(ev.clone(), 0).unwrap_err();
            assert_eq!(err.status, Status::Idle);
            assert_eq!(err.event, ev);
            assert_eq!(e.status, Status::Idle);
        }
        e.handle(Event::CheckNow, 0).unwrap();
        assert!(e.handle(Event::VerifyOk, 0).is_err());
        assert_eq!(e.status, Status::CheckingForUpdate);
    }

    #[test]
    fn unreachable_server_backs_off_exponentially_up_to_the_interval() {
        let mut e = engine();
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..12 {
            e.handle(Event::CheckNow, now).unwrap();
            let c = e
                .handle(Event::MetadataFailed("connection refused".into()), now)
                .unwrap();
            assert!(matches!(&c[0], Command::Report(r) if r.contains("connection refused")));
            assert_eq!(e.status, Status::ReportingErrorEvent);
            let at = e.next_check.unwrap();
            delays.push(at - now);
            // A timer before the backoff expires does nothing: no busy loop.
            assert_eq!(e.handle(Event::Timer, at - 1).unwrap(), vec![]);
            now = at;
        }
        let base: Vec<u64> = delays.iter().map(|d| d - d % 10).collect();
        assert!(delays[0] >= 10 && delays[0] < 20, "{delays:?}");
        assert!(delays.windows(2).all(|w| w[1] + 10 >= w[0]), "{delays:?}");
        assert!(delays.iter().all(|&d| d <= 3600 + 8), "{delays:?}");
        assert!(base[6] >= 640, "{delays:?}");
        assert_eq!(
            e.last_error.as_deref(),
            Some("checking for an update failed: connection refused")
        );
        // Success resets the backoff.
        e.handle(Event::Timer, now).unwrap();
        e.handle(Event::MetadataFetched(Some(cand("1.0.0"))), now)
            .unwrap();
        assert_eq!(
            (e.status, e.failures, e.last_error.clone()),
            (Status::Idle, 0, None)
        );
        assert!(e.next_check.unwrap() >= now + 3600);
    }

    #[test]
    fn failed_versions_are_never_retried_but_newer_ones_are() {
        let mut e = Engine::new(v("1.0.0"), BTreeSet::from([v("1.0.1")]), timing(), 1, 0);
        e.handle(Event::CheckNow, 0).unwrap();
        let c = e
            .handle(Event::MetadataFetched(Some(cand("1.0.1"))), 0)
            .unwrap();
        assert!(
            matches!(&c[0], Command::Report(r) if r.contains("not retrying")),
            "{c:?}"
        );
        assert_eq!(e.status, Status::Idle);
        e.handle(Event::CheckNow, 0).unwrap();
        let c = e
            .handle(Event::MetadataFetched(Some(cand("1.0.2"))), 0)
            .unwrap();
        assert!(c.contains(&Command::Download {
            version: v("1.0.2"),
            restart: false
        }));
        // Recorded at runtime, too.
        let mut e = engine();
        e.boot_failed(v("2.0.0"));
        e.handle(Event::CheckNow, 0).unwrap();
        e.handle(Event::MetadataFetched(Some(cand("2.0.0"))), 0)
            .unwrap();
        assert_eq!(e.status, Status::Idle);
    }

    #[test]
    fn verify_failure_restarts_the_download_and_download_failure_resumes_it() {
        let mut e = engine();
        e.handle(Event::CheckNow, 0).unwrap();
        e.handle(Event::MetadataFetched(Some(cand("1.0.1"))), 0)
            .unwrap();
        e.handle(Event::DownloadFailed("connection reset".into()), 0)
            .unwrap();
        assert_eq!(e.status, Status::ReportingErrorEvent);
        e.handle(Event::CheckNow, 1).unwrap();
        let c = e
            .handle(Event::MetadataFetched(Some(cand("1.0.1"))), 1)
            .unwrap();
        assert!(c.contains(&Command::Download {
            version: v("1.0.1"),
            restart: false
        }));
        e.handle(Event::Downloaded, 1).unwrap();
        e.handle(Event::VerifyFailed("sha256 mismatch".into()), 1)
            .unwrap();
        assert!(e.last_error.as_deref().unwrap().contains("sha256 mismatch"));
        e.handle(Event::CheckNow, 2).unwrap();
        let c = e
            .handle(Event::MetadataFetched(Some(cand("1.0.1"))), 2)
            .unwrap();
        assert!(c.contains(&Command::Download {
            version: v("1.0.1"),
            restart: true
        }));
    }

    #[test]
    fn older_min_version_and_rollout_waits() {
        let mut e = engine();
        e.handle(Event::CheckNow, 0).unwrap();
        e.handle(Event::MetadataFetched(Some(cand("0.9.0"))), 0)
            .unwrap();
        assert_eq!(e.status, Status::Idle);
        e.handle(Event::CheckNow, 0).unwrap();
        let mut c = cand("3.0.0");
        c.min_version = Some(v("2.0.0"));
        e.handle(Event::MetadataFetched(Some(c)), 0).unwrap();
        assert_eq!(e.status, Status::ReportingErrorEvent);
        assert!(e
            .last_error
            .as_deref()
            .unwrap()
            .contains("requires at least 2.0.0"));
        e.handle(Event::CheckNow, 10).unwrap();
        let mut c = cand("1.1.0");
        c.wait_until = Some(500);
        e.handle(Event::MetadataFetched(Some(c.clone())), 10)
            .unwrap();
        assert_eq!((e.status, e.next_check), (Status::Idle, Some(500)));
        e.handle(Event::CheckNow, 20).unwrap();
        c.wait_until = Some(u64::MAX);
        e.handle(Event::MetadataFetched(Some(c)), 20).unwrap();
        assert!(e.next_check.unwrap() >= 20 + 3600);
    }

    #[test]
    fn jitter_differs_between_machines_and_stays_in_bounds() {
        let firsts: BTreeSet<u64> = (0..50)
            .map(|seed| {
                Engine::new(v("1.0.0"), BTreeSet::new(), timing(), seed, 0)
                    .next_check
                    .unwrap()
            })
            .collect();
        assert!(firsts.len() > 10, "{firsts:?}");
        assert!(firsts.iter().all(|t| (60..=90).contains(t)));
    }
}
