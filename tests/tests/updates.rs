//! Updates end to end (issue 6): images built with one set of channel keys, releases published
//! with `crust publish`'s code and served with `crust serve`'s code on 127.0.0.1, reached by the
//! guests at 10.0.2.100:8080 through guestfwd.
//!
//! - A node on 1.0.0 updates itself to 1.0.1 and reboots into it (REBOOT_STRATEGY=reboot); a
//!   1.0.2 whose boot never becomes healthy (an enabled unit fails) is installed, booted once,
//!   and the node falls back to 1.0.1 by itself, reports 1.0.2 as failed and never retries it.
//! - A tampered payload, an expired timestamp and replayed older metadata are each refused with
//!   a clear status while the running system stays as it was.
//! - A power cut while the inactive slot is being written: the node boots its old slot and later
//!   completes the update.
//! - Three nodes with etcd2 and REBOOT_STRATEGY=etcd-lock update one at a time while kv keeps
//!   answering.

use anyhow::{anyhow, bail, Context, Result};
use crust::build::BuildArgs;
use crust::publish::PublishArgs;
use crust_channels::Channel;
use crust_tests::{Cluster, Node};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where guests reach the update server.
const GUEST_PORT: u16 = 8080;

/// Keys, three builds and a channel definition that rolls out to everyone at once.
struct Releases {
    dir: PathBuf,
    keys: PathBuf,
    channels: PathBuf,
    v1: PathBuf,
    v2: PathBuf,
    v3_broken: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Builds the releases once per test process.
fn releases() -> Result<&'static Releases> {
    static R: OnceLock<Result<Releases, String>> = OnceLock::new();
    R.get_or_init(|| build_releases().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("building the update test releases: {e}"))
}

fn build_releases() -> Result<Releases> {
    let dir = workspace().join("target/crust-e2e-updates");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let keys = dir.join("keys");
    crust::keys::init(&keys, crust::keys::now())?;
    let channels = dir.join("channels");
    std::fs::create_dir_all(&channels)?;
    std::fs::write(
        channels.join("alpha.yaml"),
        "channel: alpha\nserver: http://10.0.2.100:8080/\ncheck-interval: 15m\ntimestamp-expires: 1d\nrollout:\n  - { after: 0s, percent: 100 }\n",
    )?;
    // A unit that always fails, enabled: a release whose boot never becomes healthy.
    let broken = dir.join("broken-overlay/usr/lib/systemd/system");
    std::fs::create_dir_all(broken.join("multi-user.target.wants"))?;
    std::fs::write(
        broken.join("broken.service"),
        "[Unit]\nDescription=Fails on purpose: this release must not be blessed\n[Service]\nType=oneshot\nExecStart=/bin/false\n",
    )?;
    std::os::unix::fs::symlink(
        "../broken.service",
        broken.join("multi-user.target.wants/broken.service"),
    )?;
    let default = std::fs::read_to_string(workspace().join("builder/manifests/default.yaml"))?;
    let overlays = workspace().join("overlays");
    let build = |version: &str, extra_overlay: Option<&Path>| -> Result<PathBuf> {
        let mut text = default
            .replace("version: 1.0.0", &format!("version: {version}"))
            .replace("../../overlays", &overlays.display().to_string());
        if let Some(o) = extra_overlay {
            let qemu = format!("  - {}/platform/qemu\n", overlays.display());
            text = text.replace(&qemu, &format!("{qemu}  - {}\n", o.display()));
        }
        let manifest = dir.join(format!("{version}.yaml"));
        std::fs::write(&manifest, text)?;
        let out = dir.join(version);
        let t = Instant::now();
        crust::build::run(&BuildArgs {
            manifest: Some(manifest),
            out: out.clone(),
            quiet: true,
            keys: Some(keys.clone()),
            ..BuildArgs::default()
        })
        .with_context(|| format!("building {version}"))?;
        eprintln!("built {version} in {:.1} s", t.elapsed().as_secs_f64());
        Ok(out)
    };
    Ok(Releases {
        v1: build("1.0.0", None)?,
        v2: build("1.0.1", None)?,
        v3_broken: build("1.0.2", Some(&dir.join("broken-overlay")))?,
        dir,
        keys,
        channels,
    })
}

impl Releases {
    /// Publishes `build` to the alpha channel of `repo`.
    fn publish(&self, repo: &Path, build: &Path, timestamp_expires: Option<u64>) -> Result<()> {
        let msg = crust::publish::run(&PublishArgs {
            channel: Channel::Alpha,
            build_dir: Some(build.to_path_buf()),
            repo: repo.to_path_buf(),
            keys: self.keys.clone(),
            channels_dir: Some(self.channels.clone()),
            min_version: None,
            timestamp_expires,
            refresh: false,
        })?;
        eprintln!("{msg}");
        Ok(())
    }

    /// Re-signs the timestamp only (its version goes up).
    fn refresh(&self, repo: &Path) -> Result<()> {
        crust::publish::run(&PublishArgs {
            channel: Channel::Alpha,
            build_dir: None,
            repo: repo.to_path_buf(),
            keys: self.keys.clone(),
            channels_dir: Some(self.channels.clone()),
            min_version: None,
            timestamp_expires: None,
            refresh: true,
        })?;
        Ok(())
    }

    /// A fresh, empty repository directory for one test.
    fn repo(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.join("repos").join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }
}

/// A TCP relay from a loopback port to the update server whose server-to-client direction can
/// be slowed down (bytes per second; 0 = full speed), so a test can catch a download midway.
struct Throttle {
    port: u16,
    rate: Arc<AtomicU64>,
}

impl Throttle {
    fn start(to: SocketAddr) -> Result<Throttle> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let rate = Arc::new(AtomicU64::new(0));
        let r = rate.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let r = r.clone();
                let (mut c_in, mut s_out) = match (conn.try_clone(), server.try_clone()) {
                    (Ok(a), Ok(b)) => (a, b),
                    _ => continue,
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                });
                let (mut s_in, mut c_out) = (server, conn);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        if let Some(us) =
                            (n as u64 * 1_000_000).checked_div(r.load(Ordering::SeqCst))
                        {
                            std::thread::sleep(Duration::from_micros(us));
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Ok(Throttle { port, rate })
    }
}

/// The cloud-config of an updating node: update.conf pointing at the host's server, checks soon
/// after boot and a short health window. update-engine and locksmithd are not mentioned: images
/// built with keys run them by default.
fn node_config(strategy: &str) -> Result<String> {
    let config = r#"#cloud-config
write_files:
  - path: /etc/coreos/update.conf
    content: |
      GROUP=alpha
      SERVER=http://10.0.2.100:GUEST_PORT
      REBOOT_STRATEGY=STRATEGY
      CRUST_UPDATE_FIRST_CHECK_SECS=2
      CRUST_UPDATE_JITTER_SECS=0
      CRUST_UPDATE_INTERVAL_SECS=60
      CRUST_UPDATE_BACKOFF_SECS=5
      CRUST_BOOT_HEALTHY_SECS=5
      CRUST_BOOT_DEADLINE_SECS=45
"#;
    checked(
        config
            .replace("GUEST_PORT", &GUEST_PORT.to_string())
            .replace("STRATEGY", strategy),
    )
}

/// The document, once it parses: a typo here would only show on the guest's console.
fn checked(text: String) -> Result<String> {
    crust_common::cloudconfig::parse(&text)
        .map_err(|e| anyhow!("the test's own cloud-config is invalid: {e}"))?;
    Ok(text)
}

/// `crustctl update status` as KEY=VALUE pairs.
fn update_status(n: &Node) -> Result<Vec<(String, String)>> {
    let out = n.exec("crustctl update status")?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

fn field(status: &[(String, String)], key: &str) -> String {
    status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Polls the update status until `want` holds.
fn wait_status(
    n: &Node,
    what: &str,
    timeout: Duration,
    want: impl Fn(&[(String, String)]) -> bool,
) -> Result<Vec<(String, String)>> {
    let t = Instant::now();
    loop {
        let s = update_status(n).unwrap_or_default();
        if want(&s) {
            return Ok(s);
        }
        if t.elapsed() > timeout {
            bail!(
                "{}: timed out waiting for {what}; last status {s:?}",
                n.name()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The running release and slot.
fn running(n: &Node) -> Result<(String, String)> {
    let version = n
        .sh(". /usr/share/crust/release; echo $CRUST_RELEASE_VERSION")?
        .trim()
        .to_string();
    let status = n.sh("crustctl status")?;
    let slot = status
        .lines()
        .find_map(|l| l.strip_prefix("slot:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Ok((version, slot))
}

fn entries(n: &Node) -> Result<String> {
    n.sh("ls /boot/loader/entries | sort")
}

#[test]
fn updates_then_falls_back_from_a_release_that_never_gets_healthy() -> Result<()> {
    let r = releases()?;
    let repo = r.repo("fallback")?;
    r.publish(&repo, &r.v2, None)?;
    let server = crust::serve::start(&repo, "127.0.0.1:0".parse()?)?;
    let img = r.v1.join("crust.img");
    let c = Cluster::of(1)
        .image(img)
        .user_data(&node_config("reboot")?)
        .guestfwd(GUEST_PORT, server.addr.port())
        .start()?;
    let n = c.node(0);
    assert_eq!(running(&n)?, ("1.0.0".into(), "a".into()));
    for unit in ["update-engine.service", "locksmithd.service"] {
        assert_eq!(
            n.sh(&format!("crustctl is-active {unit}"))?.trim(),
            "active",
            "{unit} runs by default in an image built with keys"
        );
    }

    // 1.0.0 -> 1.0.1: found, written to slot b, rebooted into, judged healthy and blessed.
    n.inner().wait_ready(2, crust_tests::BOOT_TIMEOUT)?;
    assert_eq!(running(&n)?, ("1.0.1".into(), "b".into()));
    wait_status(
        &n,
        "the 1.0.1 boot to be blessed",
        Duration::from_secs(120),
        |s| field(s, "BOOT").contains("healthy") || field(s, "BOOT").contains("blessed"),
    )?;
    let t = Instant::now();
    while entries(&n)?.contains('+') {
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the 1.0.1 entry kept its boot counter: {}", entries(&n)?);
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // 1.0.2 never becomes healthy: the node boots it once, falls back to 1.0.1 by itself.
    r.publish(&repo, &r.v3_broken, None)?;
    n.exec("crustctl update check")?;
    // No ready line from 1.0.2 (its unit fails); the next one is 1.0.1's after the fallback.
    n.inner().wait_ready(3, Duration::from_secs(600))?;
    assert_eq!(running(&n)?, ("1.0.1".into(), "b".into()));
    let console = std::fs::read_to_string(n.inner().console_log())?;
    assert!(
        console.contains("broken.service failed"),
        "1.0.2 was booted and its unit failed"
    );
    let s = wait_status(&n, "1.0.2 reported failed", Duration::from_secs(60), |s| {
        field(s, "FAILED_VERSIONS").contains("1.0.2")
    })?;
    eprintln!("after the fallback: {s:?}");
    // And it is not retried.
    n.exec("crustctl update check")?;
    std::thread::sleep(Duration::from_secs(10));
    let s = update_status(&n)?;
    assert_ne!(field(&s, "NEW_VERSION"), "1.0.2", "{s:?}");
    assert!(
        !field(&s, "CURRENT_OP").contains("DOWNLOADING")
            && !field(&s, "CURRENT_OP").contains("NEED_REBOOT"),
        "{s:?}"
    );
    assert_eq!(n.boots()?, 3);
    Ok(())
}

/// Copies a directory tree (regular files and directories).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

/// Makes `served` hold exactly `repo`'s contents.
fn serve_copy(repo: &Path, served: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(served);
    copy_dir(repo, served)
}

/// The largest file under `dir` (the USR payload of a release).
fn largest_file(dir: &Path) -> Result<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                let len = e.metadata()?.len();
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, e.path()));
                }
            }
        }
    }
    best.map(|(_, p)| p)
        .ok_or_else(|| anyhow!("no files under {}", dir.display()))
}

#[test]
fn tampered_expired_and_replayed_releases_are_refused_and_nothing_changes() -> Result<()> {
    let r = releases()?;
    let served = r.repo("served")?;
    let server = crust::serve::start(&served, "127.0.0.1:0".parse()?)?;
    let c = Cluster::of(1)
        .image(r.v1.join("crust.img"))
        .user_data(&node_config("off")?)
        .guestfwd(GUEST_PORT, server.addr.port())
        .start()?;
    let n = c.node(0);
    let before = entries(&n)?;
    let untouched = |n: &Node| -> Result<()> {
        assert_eq!(running(n)?, ("1.0.0".into(), "a".into()));
        assert_eq!(entries(n)?, before, "the boot entries changed");
        Ok(())
    };
    let error_of = |s: &[(String, String)]| field(s, "LAST_ERROR");
    // Serves `repo`, asks for a check now and waits for LAST_ERROR to say `needle`.
    let refused = |repo: &Path, what: &str, needle: &str| -> Result<Vec<(String, String)>> {
        serve_copy(repo, &served)?;
        n.exec("crustctl update check")?;
        wait_status(&n, what, Duration::from_secs(240), |s| {
            error_of(s).contains(needle)
        })
    };

    // An expired timestamp: refused before anything is downloaded.
    let expired = r.repo("expired")?;
    let published = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    r.publish(&expired, &r.v2, Some(1))?;
    // Expired by the guest's clock too: under TCG on a loaded host the guest's clock can lag
    // the host's by more than the second the timestamp is valid for, and the node would then
    // take the update (in the CI run of fdb0c45 the node ran 1.0.1 after this check; a
    // lagging guest clock is the likely cause).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let guest: u64 = n.sh("date +%s")?.trim().parse()?;
        if guest > published.as_secs() + 2 {
            eprintln!(
                "guest clock {guest}, host published at {}",
                published.as_secs()
            );
            break;
        }
        if Instant::now() > deadline {
            bail!("the guest's clock did not pass the expiry in 120 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = refused(&expired, "the expired timestamp refused", "expired")?;
    assert!(error_of(&s).contains("timestamp"), "{s:?}");
    assert_eq!(field(&s, "PROGRESS"), "0/0", "{s:?}");
    untouched(&n)?;

    // A tampered payload: the metadata verifies, the written slot does not.
    let good = r.repo("good")?;
    r.publish(&good, &r.v2, None)?;
    let older = r.repo("older")?;
    copy_dir(&good, &older)?;
    r.refresh(&good)?;
    let tampered = r.repo("tampered")?;
    copy_dir(&good, &tampered)?;
    let payload = largest_file(&tampered.join("alpha/targets"))?;
    let mut bytes = std::fs::read(&payload)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&payload, bytes)?;
    let s = refused(&tampered, "the tampered payload refused", "does not verify")?;
    assert!(error_of(&s).contains("sha256"), "{s:?}");
    assert!(
        field(&s, "CURRENT_OP").contains("REPORTING_ERROR_EVENT")
            || field(&s, "CURRENT_OP").contains("IDLE"),
        "{s:?}"
    );
    untouched(&n)?;

    // Older (validly signed) metadata served again after the node saw newer: a rollback.
    refused(&older, "the replayed metadata refused", "rollback")?;
    untouched(&n)?;
    Ok(())
}

#[test]
fn a_power_cut_while_writing_the_slot_boots_the_old_one_and_the_update_completes_later(
) -> Result<()> {
    let r = releases()?;
    let repo = r.repo("powercut")?;
    r.publish(&repo, &r.v2, None)?;
    let server = crust::serve::start(&repo, "127.0.0.1:0".parse()?)?;
    let throttle = Throttle::start(server.addr)?;
    // Slow enough to catch the write midway (the payload is tens of MiB).
    throttle.rate.store(1024 * 1024, Ordering::SeqCst);
    let c = Cluster::of(1)
        .image(r.v1.join("crust.img"))
        .user_data(&node_config("off")?)
        .guestfwd(GUEST_PORT, throttle.port)
        .start()?;
    let n = c.node(0);
    wait_status(
        &n,
        "the download under way",
        Duration::from_secs(180),
        |s| {
            field(s, "CURRENT_OP").contains("DOWNLOADING")
                && field(s, "PROGRESS")
                    .split_once('/')
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                    .is_some_and(|(a, b)| b > 0 && a > b / 10 && a < b / 2)
        },
    )?;
    n.kill()?;
    throttle.rate.store(0, Ordering::SeqCst);
    n.start_and_wait()?;
    assert_eq!(running(&n)?, ("1.0.0".into(), "a".into()));
    let s = wait_status(&n, "the update completed", Duration::from_secs(300), |s| {
        field(s, "CURRENT_OP").contains("UPDATED_NEED_REBOOT")
    })?;
    assert_eq!(field(&s, "NEW_VERSION"), "1.0.1", "{s:?}");
    n.reboot_and_wait()?;
    assert_eq!(running(&n)?, ("1.0.1".into(), "b".into()));
    Ok(())
}

/// The cloud-config of a 3-node cluster: etcd2 (crust kv) bootstrapped through the host's
/// discovery URL, update.conf with the etcd-lock strategy (locksmith's semaphore, one holder).
fn cluster_config() -> Result<String> {
    let text = r#"#cloud-config
write_files:
  - path: /etc/coreos/update.conf
    content: |
      GROUP=alpha
      SERVER=http://10.0.2.100:GUEST_PORT
      REBOOT_STRATEGY=etcd-lock
      CRUST_UPDATE_FIRST_CHECK_SECS=2
      CRUST_UPDATE_JITTER_SECS=0
      CRUST_UPDATE_INTERVAL_SECS=60
      CRUST_UPDATE_BACKOFF_SECS=5
      CRUST_BOOT_HEALTHY_SECS=5
      CRUST_BOOT_DEADLINE_SECS=120
coreos:
  etcd2:
    discovery: $discovery
    advertise-client-urls: http://$private_ipv4:2379
    initial-advertise-peer-urls: http://$private_ipv4:2380
    listen-client-urls: http://0.0.0.0:2379
    listen-peer-urls: http://$private_ipv4:2380
  units:
    - name: etcd2.service
      command: start
"#
    .replace("GUEST_PORT", &GUEST_PORT.to_string());
    checked(text)
}

/// `(reboots started, ready lines)` on a node's console so far.
fn boot_marks(console: &Path) -> (usize, usize) {
    let log = std::fs::read(console)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    (
        log.matches("reboot: Restarting system").count(),
        log.matches("CRUST-READY").count(),
    )
}

/// PUT `key=value` through the first node (from `start`) whose forwarded kv port takes it.
fn kv_put(ports: &[u16], start: usize, key: &str, value: &str) -> bool {
    (0..ports.len()).any(|k| {
        let port = ports[(start + k) % ports.len()];
        let Ok(url) =
            crust_common::http::Url::parse(&format!("http://127.0.0.1:{port}/v2/keys/{key}"))
        else {
            return false;
        };
        crust_common::http::request("PUT", &url, None, Some(&format!("value={value}")))
            .is_ok_and(|r| r.status == 200 || r.status == 201)
    })
}

#[test]
fn a_cluster_updates_one_node_at_a_time_under_etcd_lock_with_kv_up() -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Mutex;
    let r = releases()?;
    let repo = r.repo("rollout")?;
    let served = r.repo("rollout-served")?;
    let server = crust::serve::start(&served, "127.0.0.1:0".parse()?)?;
    let c = Cluster::of(3)
        .image(r.v1.join("crust.img"))
        .user_data(&cluster_config()?)
        .discovery()
        .guestfwd(GUEST_PORT, server.addr.port())
        .start()?;
    let ports: Vec<u16> = c.inner().config().ports.iter().map(|p| p.kv).collect();
    // kv is up on all three before the release appears.
    let t = Instant::now();
    loop {
        let health = c.node(0).exec("crustctl kv cluster-health")?;
        if health.status == 0 && health.stdout.matches("is healthy").count() >= 3 {
            break;
        }
        if t.elapsed() > Duration::from_secs(180) {
            bail!("the kv cluster did not become healthy: {health:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    // Writes through the forwarded kv ports all along, and a watch on who is rebooting.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let lost = Arc::new(Mutex::new(Vec::<usize>::new()));
    let writer = {
        let (stop, acked, lost, ports) = (stop.clone(), acked.clone(), lost.clone(), ports.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let mut ok = false;
                while !ok && t.elapsed() < Duration::from_secs(20) {
                    ok = kv_put(&ports, i, &format!("rollout/{i}"), &i.to_string());
                    if !ok {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                }
                if ok {
                    acked.lock().map(|mut a| a.push(i)).ok()
                } else {
                    lost.lock().map(|mut l| l.push(i)).ok()
                };
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let consoles: Vec<PathBuf> = (0..3).map(|i| c.node(i).inner().console_log()).collect();
    let most_down = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, most_down, consoles) = (stop.clone(), most_down.clone(), consoles.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let down = consoles
                    .iter()
                    .map(|p| boot_marks(p))
                    .filter(|(reboots, readies)| reboots >= readies)
                    .count();
                most_down.fetch_max(down, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    r.publish(&repo, &r.v2, None)?;
    serve_copy(&repo, &served)?;
    let t = Instant::now();
    for i in 0..3 {
        let left = Duration::from_secs(1200).saturating_sub(t.elapsed());
        let ready = c.node(i).inner().wait_ready(2, left)?;
        assert_eq!(ready.version, "1.0.1", "node{i}");
    }
    // The last node releases the lock once its boot is judged healthy.
    let lock_free = || -> Result<bool> {
        let out = c
            .node(0)
            .exec("crustctl kv get /coreos.com/updateengine/rebootlock/semaphore")?;
        Ok(out.stdout.contains("\"holders\":[]") || out.stdout.contains("\"holders\":null"))
    };
    let t = Instant::now();
    while !lock_free()? {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the reboot lock was never released");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    let _ = watcher.join();

    assert_eq!(
        most_down.load(Ordering::SeqCst),
        1,
        "never more than one node rebooting at once"
    );
    for (i, p) in consoles.iter().enumerate() {
        assert_eq!(boot_marks(p), (1, 2), "node{i} rebooted exactly once");
    }
    let lost = lost.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        lost.is_empty(),
        "writes no node accepted for 20 s: {lost:?}"
    );
    // Every acknowledged write is there, read linearizably.
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        acked.len() > 20,
        "the writer ran all along: {} writes",
        acked.len()
    );
    for i in acked {
        let out = c.node(1).sh(&format!("crustctl kv get /rollout/{i}"))?;
        assert_eq!(out.trim(), i.to_string(), "acknowledged write {i} lost");
    }
    Ok(())
}
