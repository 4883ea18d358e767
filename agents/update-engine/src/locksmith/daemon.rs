//! `crust-agent locksmithd`: reboots the machine once update-engine has installed an update,
//! following `REBOOT_STRATEGY`: `reboot` at once (inside the window, if one is set), `etcd-lock`
//! after taking a slot of the cluster-wide semaphore, `off` never; `best-effort` is etcd-lock
//! when etcd is configured. After the reboot, the lock is released once update-engine reports
//! the boot healthy, so a bad release cannot take the next machine down.

use super::etcd::{EtcdV2, DEFAULT_ENDPOINT};
use super::semaphore::{LockError, Locker, SemError};
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
pub fn tick(cfg: &Config, released: &mut bool, now: u64) -> Result<u64, String> {
    let status = request(&cfg.engine_socket, &Request::Status)?
        .status
        .ok_or("update-engine sent no status")?;
    let locker = || EtcdV2::parse(&cfg.endpoints).map(|s| Locker::new(s, cfg.group.as_deref()));
    if cfg.strategy == Effective::EtcdLock && !*released && status.boot == "healthy" {
        // Back from our own reboot and judged healthy: give the slot to the next machine.
        match locker()?.unlock(&cfg.machine_id) {
            Ok(_) => eprintln!("locksmithd: boot healthy; reboot lock released"),
            Err(LockError::Sem(SemError::NotHeld { .. })) => {}
            Err(e) => return Err(format!("releasing the reboot lock: {e}")),
        }
        *released = true;
    }
    let need = status.current_operation == Status::UpdatedNeedReboot.name();
    let holding = need
        && cfg.strategy == Effective::EtcdLock
        && locker()?
            .get()
            .map_err(|e| e.to_string())?
            .holds(&cfg.machine_id);
    match decide(cfg.strategy, need, cfg.window.as_ref(), now, holding) {
        Action::Idle => Ok(60),
        Action::WaitWindow(s) => {
            eprintln!("locksmithd: reboot needed; outside the reboot window, {s}s to go");
            Ok(s.clamp(1, 300))
        }
        Action::Lock => match locker()?.lock(&cfg.machine_id) {
            Ok(_) => {
                eprintln!("locksmithd: reboot lock taken");
                reboot(cfg).map(|_| 60)
            }
            Err(LockError::Sem(e @ SemError::Full { .. })) => {
                eprintln!("locksmithd: {e}");
                Ok(30)
            }
            Err(e) => Err(e.to_string()),
        },
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
    let mut released = false;
    let mut failures = 0u32;
    loop {
        let sleep = match tick(&cfg, &mut released, wall_now()) {
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
