//! `crust-agent update-engine`: the state machine driven by a timer and by requests on
//! `/run/crust/update-engine.sock`, executing its commands through [`crate::apply`].
//!
//! One thread runs the engine (checks and downloads block it, which is fine: nothing else must
//! happen meanwhile); another answers the socket from a shared status snapshot, so `crustctl
//! update status` shows download progress while it runs.

use crate::apply::{Paths, Updater};
use crate::conf::{self, UpdateConf};
use crate::engine::{Command, Engine, Event, Timing};
use crate::proto::{Request, Response, StatusView, SOCKET};
use crust_channels::release::Release;
use crust_channels::Version;
use crust_common::slot::Slot;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const FAILED_VERSIONS: &str = "failed-versions";

pub fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where the configuration lives (injectable for tests).
#[derive(Debug, Clone)]
pub struct ConfPaths {
    pub usr: PathBuf,
    pub etc: PathBuf,
}

impl Default for ConfPaths {
    fn default() -> ConfPaths {
        ConfPaths {
            usr: conf::USR_UPDATE_CONF.into(),
            etc: conf::ETC_UPDATE_CONF.into(),
        }
    }
}

pub struct Daemon {
    pub engine: Engine,
    pub updater: Updater,
    pub conf_paths: ConfPaths,
    pub default_group: crust_channels::Channel,
    pub release: Option<Release>,
    pub view: Arc<Mutex<StatusView>>,
    /// Test hook: a fixed wall clock instead of the system's.
    pub wall: Option<u64>,
    /// A new slot on trial in this boot (see [`crate::assess`]); updates wait meanwhile, since
    /// the inactive slot is the fallback.
    pub assessor: Option<crate::assess::Assessor>,
    pub init_socket: PathBuf,
    /// How to reboot when a boot on trial fails.
    pub reboot: Vec<String>,
}

/// Versions recorded as failed to boot, one per line.
pub fn read_failed(state: &Path) -> BTreeSet<Version> {
    std::fs::read_to_string(state.join(FAILED_VERSIONS))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

impl Daemon {
    pub fn new(
        engine: Engine,
        updater: Updater,
        conf_paths: ConfPaths,
        default_group: crust_channels::Channel,
    ) -> Daemon {
        Daemon {
            engine,
            updater,
            conf_paths,
            default_group,
            release: None,
            view: Arc::new(Mutex::new(StatusView::default())),
            wall: None,
            assessor: None,
            init_socket: "/run/crust/init.sock".into(),
            reboot: vec!["/usr/bin/crustctl".into(), "reboot".into()],
        }
    }

    /// The raw variables of both update.conf files (later wins).
    pub fn conf_vars(&self) -> Vec<(String, String)> {
        conf_vars_at(&self.conf_paths)
    }

    fn wall(&self) -> u64 {
        self.wall.unwrap_or_else(wall_now)
    }

    pub fn conf(&self) -> Result<UpdateConf, conf::ConfError> {
        conf::load(
            &self.conf_paths.usr,
            &self.conf_paths.etc,
            self.default_group,
        )
    }

    /// Feeds one event and runs every command it leads to, until the engine rests.
    pub fn step(&mut self, ev: Event, now: u64) {
        if self.assessor.is_some() {
            if ev == Event::CheckNow {
                if let Ok(mut v) = self.view.lock() {
                    v.note = "this boot is on trial; updates wait until it is blessed".into();
                }
            }
            return;
        }
        let mut queue = std::collections::VecDeque::from([ev]);
        while let Some(ev) = queue.pop_front() {
            let cmds = match self.engine.handle(ev, now) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("update-engine: {e}");
                    Vec::new()
                }
            };
            for c in cmds {
                if let Some(next) = self.execute(c, now) {
                    queue.push_back(next);
                }
            }
            self.publish(now);
        }
    }

    fn execute(&mut self, cmd: Command, now: u64) -> Option<Event> {
        let conf = self.conf();
        match cmd {
            Command::Report(note) => {
                eprintln!("update-engine: {note}");
                if let Ok(mut v) = self.view.lock() {
                    v.note = note;
                }
                None
            }
            Command::FetchMetadata => {
                let conf = match conf {
                    Ok(c) => c,
                    Err(e) => return Some(Event::MetadataFailed(e.to_string())),
                };
                let wall = self.wall();
                Some(match self.updater.fetch(&conf, wall) {
                    Ok(rel) => {
                        let cand = rel.as_ref().map(|r| self.updater.candidate(r, wall, now));
                        self.release = rel;
                        Event::MetadataFetched(cand)
                    }
                    Err(e) => Event::MetadataFailed(e.to_string()),
                })
            }
            Command::Download { version, restart } => {
                let (Ok(conf), Some(rel)) = (
                    conf,
                    self.release.clone().filter(|r| r.info.version == version),
                ) else {
                    return Some(Event::DownloadFailed(
                        "the configuration or the release changed; checking again".into(),
                    ));
                };
                let view = self.view.clone();
                let mut progress = |done, total| {
                    if let Ok(mut v) = view.lock() {
                        v.current_operation = crate::engine::Status::Downloading.name().into();
                        v.downloaded = done;
                        v.total = total;
                    }
                };
                Some(
                    match self.updater.download(&conf, &rel, restart, &mut progress) {
                        Ok(()) => Event::Downloaded,
                        Err(e) => Event::DownloadFailed(e.to_string()),
                    },
                )
            }
            Command::Verify(v) => {
                Some(match self.release.clone().filter(|r| r.info.version == v) {
                    Some(rel) => match self.updater.verify(&rel) {
                        Ok(()) => Event::VerifyOk,
                        Err(e) => Event::VerifyFailed(e.to_string()),
                    },
                    None => Event::VerifyFailed("the release to verify is unknown".into()),
                })
            }
            Command::Finalize(v) => {
                Some(match self.release.clone().filter(|r| r.info.version == v) {
                    Some(rel) => match self.updater.finalize(&rel) {
                        Ok(entry) => {
                            eprintln!("update-engine: {v} activated: loader entry {entry}");
                            Event::Finalized
                        }
                        Err(e) => Event::FinalizeFailed(e.to_string()),
                    },
                    None => Event::FinalizeFailed("the release to activate is unknown".into()),
                })
            }
            Command::RebootNeeded(v) => {
                eprintln!(
                    "update-engine: {v} is ready; locksmithd reboots according to REBOOT_STRATEGY"
                );
                None
            }
        }
    }

    /// Copies the engine's state into the snapshot the socket answers from.
    pub fn publish(&self, now: u64) {
        let conf = self.conf().ok();
        if let Ok(mut v) = self.view.lock() {
            let e = &self.engine;
            v.current_operation = e.status.name().into();
            v.current_version = e.current.to_string();
            v.new_version = e.target.map(|t| t.to_string());
            v.group = conf
                .as_ref()
                .map_or_else(|| self.default_group.to_string(), |c| c.group.to_string());
            v.server = conf.map(|c| c.server).unwrap_or_default();
            v.last_error = e.last_error.clone();
            v.next_check_in = e.next_check.map(|t| t.saturating_sub(now));
            v.failed_versions = e.failed.iter().map(|v| v.to_string()).collect();
            if e.status != crate::engine::Status::Downloading {
                v.downloaded = e.progress.0;
                v.total = e.progress.1;
            }
        }
    }
}

fn conf_vars_at(p: &ConfPaths) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for f in [&p.usr, &p.etc] {
        v.extend(
            crust_common::unit::parse_env_file(&std::fs::read_to_string(f).unwrap_or_default()).0,
        );
    }
    v
}

/// Check timing from update.conf: `CRUST_UPDATE_FIRST_CHECK_SECS`, `CRUST_UPDATE_JITTER_SECS`,
/// `CRUST_UPDATE_INTERVAL_SECS`, `CRUST_UPDATE_BACKOFF_SECS` (tests shorten them; the defaults
/// are one minute plus up to one of jitter, then hourly). Unparsable values keep the default.
pub fn timing_from(vars: &[(String, String)]) -> Timing {
    let get = |k: &str, d: u64| {
        vars.iter()
            .rev()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(d)
    };
    let d = Timing::default();
    Timing {
        first_delay: get("CRUST_UPDATE_FIRST_CHECK_SECS", d.first_delay),
        jitter: get("CRUST_UPDATE_JITTER_SECS", d.jitter),
        interval: get("CRUST_UPDATE_INTERVAL_SECS", d.interval).max(60),
        backoff_base: get("CRUST_UPDATE_BACKOFF_SECS", d.backoff_base).max(1),
    }
}

/// Serves the control socket; `Check` requests go to the engine thread.
pub fn serve_socket(
    listener: UnixListener,
    view: Arc<Mutex<StatusView>>,
    conf_paths: ConfPaths,
    tx: mpsc::Sender<()>,
) {
    for conn in listener.incoming().flatten() {
        let resp = match read_request(&conn) {
            Err(e) => Response::error(e),
            Ok(Request::Status) => Response {
                ok: true,
                error: None,
                status: view.lock().ok().map(|v| v.clone()),
                message: None,
            },
            Ok(Request::Check) => match tx.send(()) {
                Ok(()) => Response::message("check requested"),
                Err(_) => Response::error("the engine is not running"),
            },
            Ok(Request::Channel { set: None }) => {
                Response::message(view.lock().map(|v| v.group.clone()).unwrap_or_default())
            }
            Ok(Request::Channel { set: Some(ch) }) => match ch.parse::<crust_channels::Channel>() {
                Err(e) => Response::error(e.to_string()),
                Ok(c) => {
                    let old = std::fs::read_to_string(&conf_paths.etc).unwrap_or_default();
                    let write = conf_paths
                        .etc
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|_| std::fs::write(&conf_paths.etc, conf::set_group(&old, c)));
                    match write {
                        Ok(()) => {
                            let _ = tx.send(());
                            Response::message(format!(
                                "channel set to {c} in {}; checking now",
                                conf_paths.etc.display()
                            ))
                        }
                        Err(e) => {
                            Response::error(format!("writing {}: {e}", conf_paths.etc.display()))
                        }
                    }
                }
            },
        };
        let mut line = serde_json::to_string(&resp).unwrap_or_default();
        line.push('\n');
        let _ = (&conn).write_all(line.as_bytes());
    }
}

fn read_request(conn: &UnixStream) -> Result<Request, String> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(conn)
        .take_line(&mut line)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("bad request {:?}: {e}", line.trim()))
}

trait TakeLine {
    fn take_line(self, out: &mut String) -> std::io::Result<usize>;
}
impl<R: BufRead> TakeLine for R {
    fn take_line(mut self, out: &mut String) -> std::io::Result<usize> {
        std::io::Read::take(&mut self, 64 * 1024).read_line(out)
    }
}

/// Sends one request to the daemon and returns its response.
pub fn request(socket: &Path, req: &Request) -> Result<Response, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach update-engine at {}: {e} (is update-engine.service running?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    BufReader::new(&s)
        .read_line(&mut out)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&out).map_err(|e| format!("bad response {:?}: {e}", out.trim()))
}

/// The disk holding USR-A/USR-B, from sysfs partition names (the kernel exports the GPT label
/// as PARTNAME in each partition's uevent).
pub fn find_disk(sys_block: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(sys_block).ok()?.flatten() {
        let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
        if uevent.lines().any(|l| l == "PARTNAME=USR-A") {
            let real = std::fs::canonicalize(e.path()).ok()?;
            let disk = real.parent()?.file_name()?.to_string_lossy().into_owned();
            return Some(PathBuf::from("/dev").join(disk));
        }
    }
    None
}

/// The booted slot from the kernel command line's `mount.usr=PARTUUID=`.
pub fn booted_slot(cmdline: &str) -> Option<Slot> {
    let p = crust_common::cmdline::BootParams::parse(cmdline).ok()?;
    Slot::from_partuuid(&p.usr_partuuid)
}

/// `crust-agent update-engine`.
pub fn run(_argv: &[String]) -> i32 {
    match main_loop() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("update-engine: {e}");
            1
        }
    }
}

fn main_loop() -> Result<(), String> {
    let cmdline =
        std::fs::read_to_string("/proc/cmdline").map_err(|e| format!("/proc/cmdline: {e}"))?;
    let booted = booted_slot(&cmdline).ok_or("the kernel command line names no crust USR slot (mount.usr=PARTUUID=...); not updating a system booted another way")?;
    let disk = find_disk(Path::new("/sys/class/block"))
        .ok_or("no partition labelled USR-A found in /sys/class/block")?;
    let release_text =
        std::fs::read_to_string(conf::RELEASE).map_err(|e| format!("{}: {e}", conf::RELEASE))?;
    let (current, channel) =
        conf::release(&release_text, conf::RELEASE).map_err(|e| e.to_string())?;
    let paths = Paths::machine(disk);
    let seed = {
        let id = std::fs::read_to_string(&paths.machine_id).unwrap_or_default();
        let d = <sha2::Sha256 as sha2::Digest>::digest(id.trim().as_bytes());
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    };
    let start = Instant::now();
    let now = || start.elapsed().as_secs();
    let conf_paths = ConfPaths::default();
    let failed = read_failed(&paths.state);
    let timing = timing_from(&conf_vars_at(&conf_paths));
    let mut d = Daemon::new(
        Engine::new(current, failed, timing, seed, now()),
        Updater {
            paths,
            booted,
            current,
            cut_after: None,
        },
        conf_paths.clone(),
        channel,
    );
    crate::assess::on_start(&mut d);
    d.publish(now());
    let sock = Path::new(SOCKET);
    if let Some(dir) = sock.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock).map_err(|e| format!("binding {SOCKET}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let view = d.view.clone();
    std::thread::spawn(move || serve_socket(listener, view, conf_paths, tx));
    eprintln!(
        "update-engine: running {current} from slot {booted}, first check in {}s",
        d.engine.next_check.unwrap_or(0).saturating_sub(now())
    );
    loop {
        crate::assess::tick(&mut d, crate::assess::uptime());
        let wait = d
            .engine
            .next_check
            .map_or(timing.interval, |t| t.saturating_sub(now()))
            .clamp(1, 60);
        match rx.recv_timeout(Duration::from_secs(wait)) {
            Ok(()) => d.step(Event::CheckNow, now()),
            Err(mpsc::RecvTimeoutError::Timeout) => d.step(Event::Timer, now()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the control socket thread stopped".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_comes_from_update_conf() {
        let v = |k: &str, x: &str| (k.to_string(), x.to_string());
        let t = timing_from(&[
            v("CRUST_UPDATE_FIRST_CHECK_SECS", "2"),
            v("CRUST_UPDATE_JITTER_SECS", "0"),
            v("CRUST_UPDATE_INTERVAL_SECS", "5"),
            v("CRUST_UPDATE_BACKOFF_SECS", "x"),
        ]);
        assert_eq!(
            t,
            Timing {
                first_delay: 2,
                jitter: 0,
                interval: 60,
                backoff_base: Timing::default().backoff_base
            }
        );
        assert_eq!(timing_from(&[]), Timing::default());
        assert_eq!(booted_slot("console=ttyS0 mount.usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c usrhash=0000000000000000000000000000000000000000000000000000000000000000"), Some(Slot::B));
        assert_eq!(booted_slot("console=ttyS0"), None);
    }
}
