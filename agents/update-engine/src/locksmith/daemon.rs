//! `crust-agent locksmithd`: reboots the machine once update-engine has installed an update,
//! following `REBOOT_STRATEGY`: `reboot` at once (inside the window, if one is set), `etcd-lock`
//! after taking a slot of the cluster-wide semaphore, `off` never; `best-effort` is etcd-lock
//! when etcd is configured. After the reboot, the lock is released once update-engine reports
//! the boot healthy, so a bad release cannot take the next machine down.

use super::etcd::{connect, DEFAULT_ENDPOINT};
use super::semaphore::{LockError, LockStore, Locker, SemError};
use super::strategy::{decide, resolve, Action, Effective};
use super::window::Window;
use crate::conf;
use crate::daemon::{request, wall_now, ConfPaths};
use crate::engine::Status;
use crate::proto::{Request, SOCKET};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Config {
    pub strategy: Effective,
    pub window: Option<Window>,
    pub group: Option<String>,
    pub machine_id: String,
    pub endpoints: String,
    pub reboot: Vec<String>,
    pub engine_socket: PathBuf,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// Reads the configuration the way locksmith did: update.conf for the strategy (and the older
/// `REBOOT_WINDOW_*` keys), the unit's environment (`LOCKSMITHD_*`, from cloud-config
/// `coreos.locksmith`) for endpoint, group and window.
pub fn load(conf_paths: &ConfPaths, machine_id: &Path) -> Result<Config, String> {
    let text = format!(
        "{}\n{}",
        std::fs::read_to_string(&conf_paths.usr).unwrap_or_default(),
        std::fs::read_to_string(&conf_paths.etc).unwrap_or_default()
    );
    let vars = crust_common::unit::parse_env_file(&text).0;
    let get = |k: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let strategy = match get("REBOOT_STRATEGY") {
        Some(s) => conf::RebootStrategy::parse(&s).ok_or_else(|| {
            format!("REBOOT_STRATEGY={s:?}: use reboot, etcd-lock, best-effort or off")
        })?,
        None => conf::RebootStrategy::BestEffort,
    };
    let endpoint = env("LOCKSMITHD_ENDPOINT");
    let etcd_configured = endpoint.is_some()
        || [
            "/run/systemd/system/etcd2.service.d",
            "/etc/systemd/system/etcd2.service.d",
            "/etc/systemd/system/multi-user.target.wants/etcd2.service",
        ]
        .iter()
        .any(|p| Path::new(p).exists());
    let start = env("LOCKSMITHD_REBOOT_WINDOW_START").or_else(|| get("REBOOT_WINDOW_START"));
    let length = env("LOCKSMITHD_REBOOT_WINDOW_LENGTH").or_else(|| get("REBOOT_WINDOW_LENGTH"));
    let window = Window::parse(start.as_deref(), length.as_deref()).map_err(|e| e.to_string())?;
    Ok(Config {
        strategy: resolve(strategy, etcd_configured),
        window,
        group: env("LOCKSMITHD_GROUP"),
        machine_id: std::fs::read_to_string(machine_id)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        endpoints: endpoint.unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
        reboot: vec!["/usr/bin/crustctl".into(), "reboot".into()],
        engine_socket: SOCKET.into(),
    })
}

/// One look at the world; returns how long to sleep before the next.
pub fn tick<S: LockStore>(
    cfg: &Config,
    store: &mut S,
    released: &mut bool,
    now: u64,
) -> Result<u64, String> {
    let status = request(&cfg.engine_socket, &Request::Status)?
        .status
        .ok_or("update-engine sent no status")?;
    if cfg.strategy == Effective::EtcdLock && !*released && status.boot == "healthy" {
        // Back from our own reboot and judged healthy: give the slot to the next machine.
        match Locker::new(&mut *store, cfg.group.as_deref()).unlock(&cfg.machine_id) {
            Ok(_) => eprintln!("locksmithd: boot healthy; reboot lock released"),
            Err(LockError::Sem(SemError::NotHeld { .. })) => {}
            Err(e) => return Err(format!("releasing the reboot lock: {e}")),
        }
        *released = true;
    }
    let need = status.current_operation == Status::UpdatedNeedReboot.name();
    let holding = need
        && cfg.strategy == Effective::EtcdLock
        && Locker::new(&mut *store, cfg.group.as_deref())
            .get()
            .map_err(|e| e.to_string())?
            .holds(&cfg.machine_id);
    match decide(cfg.strategy, need, cfg.window.as_ref(), now, holding) {
        Action::Idle => Ok(60),
        Action::WaitWindow(s) => {
            eprintln!("locksmithd: reboot needed; outside the reboot window, {s}s to go");
            Ok(s.clamp(1, 300))
        }
        Action::Lock => {
            match Locker::new(&mut *store, cfg.group.as_deref()).lock(&cfg.machine_id) {
                Ok(_) => {
                    eprintln!("locksmithd: reboot lock taken");
                    reboot(cfg).map(|_| 60)
                }
                Err(LockError::Sem(e @ SemError::Full { .. })) => {
                    eprintln!("locksmithd: {e}");
                    Ok(30)
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Action::Reboot => reboot(cfg).map(|_| 60),
    }
}

fn reboot(cfg: &Config) -> Result<(), String> {
    eprintln!("locksmithd: rebooting into the new release");
    let (prog, args) = cfg.reboot.split_first().ok_or("no reboot command")?;
    let st = std::process::Command::new(prog)
        .args(args)
        .status()
        .map_err(|e| format!("{prog}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{prog} {}: {st}", args.join(" ")))
    }
}

/// `crust-agent locksmithd`.
pub fn run(_argv: &[String]) -> i32 {
    let cfg = match load(&ConfPaths::default(), Path::new("/etc/machine-id")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("locksmithd: {e}");
            return 1;
        }
    };
    eprintln!(
        "locksmithd: strategy {:?}, window {:?}, group {:?}",
        cfg.strategy, cfg.window, cfg.group
    );
    let mut store = match connect(&cfg.endpoints) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("locksmithd: LOCKSMITHD_ENDPOINT: {e}");
            return 1;
        }
    };
    let mut released = false;
    let mut failures = 0u32;
    loop {
        let sleep = match tick(&cfg, &mut store, &mut released, wall_now()) {
            Ok(s) => {
                failures = 0;
                s
            }
            Err(e) => {
                failures += 1;
                eprintln!("locksmithd: {e}");
                (10u64 << failures.min(5)).min(300)
            }
        };
        std::thread::sleep(Duration::from_secs(sleep));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locksmith::semaphore::MemStore;
    use crate::proto::{Response, StatusView};
    use std::io::{BufRead, BufReader, Write};
    use std::sync::{Arc, Mutex};

    /// A stand-in update-engine socket answering `status` with whatever `view` holds.
    fn fake_engine(path: &Path, view: Arc<Mutex<StatusView>>) {
        let l = std::os::unix::net::UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let mut line = String::new();
                let _ = BufReader::new(&c).read_line(&mut line);
                let r = Response {
                    ok: true,
                    error: None,
                    status: Some(view.lock().unwrap().clone()),
                    message: None,
                };
                let _ =
                    (&c).write_all(format!("{}\n", serde_json::to_string(&r).unwrap()).as_bytes());
            }
        });
    }

    #[test]
    fn takes_the_lock_reboots_and_releases_it_once_healthy() {
        let t = tempfile::tempdir().unwrap();
        let view = Arc::new(Mutex::new(StatusView {
            current_operation: Status::Idle.name().into(),
            boot: "healthy".into(),
            ..StatusView::default()
        }));
        let sock = t.path().join("ue.sock");
        fake_engine(&sock, view.clone());
        let marker = t.path().join("rebooted");
        let cfg = |id: &str| Config {
            strategy: Effective::EtcdLock,
            window: None,
            group: None,
            machine_id: id.into(),
            endpoints: String::new(),
            reboot: vec![
                "sh".into(),
                "-c".into(),
                format!("echo {id} >> {}", marker.display()),
            ],
            engine_socket: sock.clone(),
        };
        let mut store = MemStore::default();
        // Nothing to do while no update waits.
        let mut released = true;
        assert_eq!(tick(&cfg("m1"), &mut store, &mut released, 0), Ok(60));
        assert!(!marker.exists());
        // m2 holds the only slot: m1 waits.
        Locker::new(&mut store, None).lock("m2").unwrap();
        view.lock().unwrap().current_operation = Status::UpdatedNeedReboot.name().into();
        assert_eq!(tick(&cfg("m1"), &mut store, &mut released, 0), Ok(30));
        assert!(!marker.exists());
        // m2 comes back healthy and releases; m1 takes the slot and reboots.
        let mut released2 = false;
        view.lock().unwrap().current_operation = Status::Idle.name().into();
        tick(&cfg("m2"), &mut store, &mut released2, 0).unwrap();
        assert!(released2);
        assert!(Locker::new(&mut store, None)
            .get()
            .unwrap()
            .holders
            .is_empty());
        view.lock().unwrap().current_operation = Status::UpdatedNeedReboot.name().into();
        tick(&cfg("m1"), &mut store, &mut released, 0).unwrap();
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "m1\n");
        assert!(Locker::new(&mut store, None).get().unwrap().holds("m1"));
        // After its reboot, m1 keeps the lock while its boot is on trial...
        let mut fresh = false;
        view.lock().unwrap().current_operation = Status::Idle.name().into();
        view.lock().unwrap().boot = "assessing".into();
        tick(&cfg("m1"), &mut store, &mut fresh, 0).unwrap();
        assert!(Locker::new(&mut store, None).get().unwrap().holds("m1"));
        // ...and releases it once the boot is healthy.
        view.lock().unwrap().boot = "healthy".into();
        tick(&cfg("m1"), &mut store, &mut fresh, 0).unwrap();
        assert!(Locker::new(&mut store, None)
            .get()
            .unwrap()
            .holders
            .is_empty());
    }

    #[test]
    fn reboot_strategy_respects_the_window() {
        let t = tempfile::tempdir().unwrap();
        let view = Arc::new(Mutex::new(StatusView {
            current_operation: Status::UpdatedNeedReboot.name().into(),
            boot: "healthy".into(),
            ..StatusView::default()
        }));
        let sock = t.path().join("ue.sock");
        fake_engine(&sock, view);
        let marker = t.path().join("rebooted");
        let cfg = Config {
            strategy: Effective::Reboot,
            window: Window::parse(Some("04:00"), Some("1h")).unwrap(),
            group: None,
            machine_id: "m".into(),
            endpoints: String::new(),
            reboot: vec!["touch".into(), marker.display().to_string()],
            engine_socket: sock,
        };
        let mut released = false;
        assert_eq!(
            tick(&cfg, &mut MemStore::default(), &mut released, 3 * 3600),
            Ok(300)
        );
        assert!(!marker.exists());
        tick(&cfg, &mut MemStore::default(), &mut released, 4 * 3600 + 1).unwrap();
        assert!(marker.exists());
    }
}
