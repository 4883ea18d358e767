#![allow(clippy::unwrap_used)]
//! Host integration: a channel repository made by `crust publish`'s code, served by `crust
//! serve`'s code on 127.0.0.1, and update-engine's I/O writing into a temporary file that stands
//! in for the disk (a real GPT with USR-A/USR-B).

use crust::publish::{fixture, publish_with, PublishArgs};
use crust_channels::Channel;
use crust_common::slot::gpt::{self, test_disk};
use crust_common::slot::{GptPrio, Slot};
use crust_update_engine::apply::{Paths, Updater};
use crust_update_engine::assess;
use crust_update_engine::conf::{RebootStrategy, UpdateConf};
use crust_update_engine::daemon::{ConfPaths, Daemon};
use crust_update_engine::engine::{Engine, Event, Status, Timing};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const NOW: u64 = 1_800_000_000;
const USR_SECTORS: u64 = 2048;

struct World {
    t: tempfile::TempDir,
    keys: crust_channels::publish::KeySet,
    root: Vec<u8>,
    server: crust::serve::Server,
    paths: Paths,
}

impl World {
    fn new() -> World {
        let t = tempfile::tempdir().unwrap();
        let keys = crust::keys::init(&t.path().join("keys"), NOW).unwrap();
        let root = crust::keys::root_json(&t.path().join("keys")).unwrap();
        let channels = t.path().join("channels");
        std::fs::create_dir_all(&channels).unwrap();
        // No rollout waves: every machine is eligible at once.
        std::fs::write(
            channels.join("alpha.yaml"),
            "channel: alpha\nserver: http://127.0.0.1/\ncheck-interval: 1h\n",
        )
        .unwrap();
        std::fs::create_dir_all(t.path().join("repo")).unwrap();
        let server =
            crust::serve::start(&t.path().join("repo"), "127.0.0.1:0".parse().unwrap()).unwrap();
        let disk = t.path().join("disk.img");
        let mut raw = test_disk(USR_SECTORS);
        // The running slot A holds recognisable bytes; they must never change.
        let [a, _] = gpt::read_usr(&mut std::io::Cursor::new(&raw)).unwrap();
        for (i, b) in raw[a.offset() as usize..(a.offset() + a.size()) as usize]
            .iter_mut()
            .enumerate()
        {
            *b = (i % 251) as u8;
        }
        std::fs::write(&disk, raw).unwrap();
        let esp = t.path().join("esp");
        std::fs::create_dir_all(esp.join("loader/entries")).unwrap();
        std::fs::write(esp.join("loader/entries/crust-usr-a.conf"), "running a\n").unwrap();
        std::fs::write(t.path().join("root.json"), &root).unwrap();
        std::fs::write(
            t.path().join("machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        let paths = Paths {
            disk,
            esp,
            state: t.path().join("state"),
            root_of_trust: t.path().join("root.json"),
            machine_id: t.path().join("machine-id"),
        };
        World {
            t,
            keys,
            root,
            server,
            paths,
        }
    }

    fn publish(&self, version: &str, timestamp_expires: Option<u64>, now: u64) -> PathBuf {
        let b = self.t.path().join(format!("build-{version}"));
        fixture::fake_build(&b, version, 160).unwrap();
        let args = PublishArgs {
            channel: Channel::Alpha,
            build_dir: Some(b.clone()),
            repo: self.t.path().join("repo"),
            keys: PathBuf::new(),
            channels_dir: Some(self.t.path().join("channels")),
            min_version: None,
            timestamp_expires,
            refresh: false,
        };
        publish_with(&args, &self.keys, &self.root, now).unwrap();
        b
    }

    fn conf(&self) -> UpdateConf {
        UpdateConf {
            group: Channel::Alpha,
            server: format!("http://{}/", self.server.addr),
            reboot_strategy: RebootStrategy::Off,
        }
    }

    fn updater(&self, cut_after: Option<u64>) -> Updater {
        Updater {
            paths: self.paths.clone(),
            booted: Slot::A,
            current: "1.0.0".parse().unwrap(),
            cut_after,
        }
    }

    fn slot_bytes(&self, slot: Slot, len: u64) -> Vec<u8> {
        let raw = std::fs::read(&self.paths.disk).unwrap();
        let [a, b] = gpt::read_usr(&mut std::io::Cursor::new(&raw)).unwrap();
        let p = if slot == Slot::A { a } else { b };
        let len = if len == 0 { p.size() } else { len };
        raw[p.offset() as usize..(p.offset() + len) as usize].to_vec()
    }

    fn active_hash(&self) -> Vec<u8> {
        Sha256::digest(self.slot_bytes(Slot::A, 0)).to_vec()
    }

    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.paths.esp.join("loader/entries"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn daemon(&self, wall: u64) -> Daemon {
        let usr = self.t.path().join("usr-update.conf");
        std::fs::write(
            &usr,
            format!("SERVER=http://{}/\nREBOOT_STRATEGY=off\n", self.server.addr),
        )
        .unwrap();
        let mut d = Daemon::new(
            Engine::new(
                "1.0.0".parse().unwrap(),
                BTreeSet::new(),
                Timing::default(),
                7,
                0,
            ),
            self.updater(None),
            ConfPaths {
                usr,
                etc: self.t.path().join("etc-update.conf"),
            },
            Channel::Alpha,
        );
        d.wall = Some(wall);
        d
    }
}

fn gptprio(disk: &Path, slot: Slot) -> GptPrio {
    let mut f = std::fs::File::open(disk).unwrap();
    let [a, b] = gpt::read_usr(&mut f).unwrap();
    if slot == Slot::A {
        a.prio
    } else {
        b.prio
    }
}

#[test]
fn a_cut_download_resumes_and_the_inactive_slot_gets_exactly_the_payload() {
    let w = World::new();
    let build = w.publish("1.0.1", None, NOW);
    let before = w.active_hash();
    let conf = w.conf();
    let u = w.updater(Some(200_000));
    let rel = u.fetch(&conf, NOW + 5).unwrap().expect("a release");
    assert_eq!(rel.info.version.to_string(), "1.0.1");
    let mut seen = Vec::new();
    let e = u
        .download(&conf, &rel, false, &mut |d, _| seen.push(d))
        .unwrap_err();
    assert!(e.to_string().contains("resumes"), "{e}");
    let cut_at = *seen.last().unwrap();
    assert!(cut_at >= 200_000 && cut_at < rel.usr.length, "{cut_at}");
    // The next run starts where the last one stopped (a Range request), not at 0.
    let u = w.updater(None);
    let mut seen2 = Vec::new();
    u.download(&conf, &rel, false, &mut |d, _| seen2.push(d))
        .unwrap();
    assert!(
        seen2[0] > cut_at,
        "resumed at {} after a cut at {cut_at}",
        seen2[0]
    );
    u.verify(&rel).unwrap();
    let entry = u.finalize(&rel).unwrap();
    assert_eq!(entry, "crust-usr-b+1.conf");

    let payload = std::fs::read(build.join("usr.img")).unwrap();
    assert_eq!(w.slot_bytes(Slot::B, payload.len() as u64), payload);
    assert_eq!(w.active_hash(), before, "the active slot is untouched");
    assert_eq!(w.entries(), ["crust-usr-a.conf", "crust-usr-b+1.conf"]);
    let text =
        std::fs::read_to_string(w.paths.esp.join("loader/entries/crust-usr-b+1.conf")).unwrap();
    assert!(text.contains("version 1.0.1\n"), "{text}");
    assert!(
        text.contains(&format!(
            "mount.usr=PARTUUID={} usrhash={}",
            Slot::B.partuuid(),
            rel.info.usrhash
        )),
        "{text}"
    );
    assert_eq!(
        std::fs::read(w.paths.esp.join("crust/usr-b/vmlinuz")).unwrap(),
        std::fs::read(build.join("vmlinuz")).unwrap()
    );
    assert_eq!(
        std::fs::read(w.paths.esp.join("crust/usr-b/initrd")).unwrap(),
        std::fs::read(build.join("initrd")).unwrap()
    );
    assert_eq!(gptprio(&w.paths.disk, Slot::B), GptPrio::new(2, 1, false));
    assert_eq!(gptprio(&w.paths.disk, Slot::A), GptPrio::new(1, 0, true));
}

#[test]
fn the_engine_runs_from_check_to_need_reboot_over_http() {
    let w = World::new();
    w.publish("1.0.1", None, NOW);
    let mut d = w.daemon(NOW + 1);
    d.step(Event::CheckNow, 0);
    assert_eq!(
        d.engine.status,
        Status::UpdatedNeedReboot,
        "{:?}",
        d.engine.last_error
    );
    let v = d.view.lock().unwrap().clone();
    assert_eq!(v.current_operation, "UPDATE_STATUS_UPDATED_NEED_REBOOT");
    assert_eq!(v.new_version.as_deref(), Some("1.0.1"));
    assert_eq!(v.downloaded, v.total);
    assert!(w.entries().contains(&"crust-usr-b+1.conf".to_string()));
}

#[test]
fn a_tampered_payload_is_refused_and_nothing_is_activated() {
    let w = World::new();
    w.publish("1.0.1", None, NOW);
    let served = w.t.path().join("repo/alpha/targets/releases/1.0.1/usr.img");
    let mut bytes = std::fs::read(&served).unwrap();
    bytes[5000] ^= 0xff;
    std::fs::write(&served, bytes).unwrap();
    let before = w.active_hash();
    let mut d = w.daemon(NOW + 1);
    d.step(Event::CheckNow, 0);
    assert_eq!(d.engine.status, Status::ReportingErrorEvent);
    let err = d.engine.last_error.clone().unwrap();
    assert!(
        err.contains("does not verify") && err.contains("sha256"),
        "{err}"
    );
    assert_eq!(
        d.view.lock().unwrap().current_operation,
        "UPDATE_STATUS_REPORTING_ERROR_EVENT"
    );
    assert_eq!(w.active_hash(), before);
    assert_eq!(w.entries(), ["crust-usr-a.conf"]);
    assert_eq!(gptprio(&w.paths.disk, Slot::B), GptPrio::new(0, 0, false));
}

#[test]
fn an_expired_timestamp_is_refused_before_anything_is_downloaded() {
    let w = World::new();
    w.publish("1.0.1", Some(60), NOW);
    let before = w.active_hash();
    let mut d = w.daemon(NOW + 61);
    d.step(Event::CheckNow, 0);
    assert_eq!(d.engine.status, Status::ReportingErrorEvent);
    let err = d.engine.last_error.clone().unwrap();
    assert!(err.contains("timestamp metadata expired"), "{err}");
    assert_eq!(w.active_hash(), before);
    assert_eq!(
        w.slot_bytes(Slot::B, 4096),
        vec![0u8; 4096],
        "nothing written to the inactive slot either"
    );
    assert_eq!(w.entries(), ["crust-usr-a.conf"]);
}

#[test]
fn a_replayed_older_release_is_a_rollback() {
    let w = World::new();
    w.publish("1.0.1", None, NOW);
    let meta = w.t.path().join("repo/alpha/metadata");
    let old: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&meta)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    w.publish("1.0.2", None, NOW);
    let conf = w.conf();
    let u = w.updater(None);
    assert_eq!(
        u.fetch(&conf, NOW)
            .unwrap()
            .unwrap()
            .info
            .version
            .to_string(),
        "1.0.2"
    );
    // A mirror (or attacker) serves the older, validly signed metadata again.
    for (p, b) in &old {
        std::fs::write(p, b).unwrap();
    }
    let e = u.fetch(&conf, NOW).unwrap_err();
    assert!(e.to_string().contains("rollback"), "{e}");
    assert_eq!(w.entries(), ["crust-usr-a.conf"]);
}

#[test]
fn an_unreachable_server_is_a_clear_status_with_backoff() {
    let w = World::new();
    let mut d = w.daemon(NOW);
    std::fs::write(&d.conf_paths.usr, "SERVER=http://127.0.0.1:9/\n").unwrap();
    d.step(Event::CheckNow, 100);
    assert_eq!(d.engine.status, Status::ReportingErrorEvent);
    assert!(
        d.engine
            .last_error
            .clone()
            .unwrap()
            .contains("cannot reach 127.0.0.1:9"),
        "{:?}",
        d.engine.last_error
    );
    let next = d.engine.next_check.unwrap();
    assert!(next > 100 + 20, "backs off: next check at {next}");
}

/// A stand-in for init's control socket: answers `status` with the given readiness.
fn fake_init(path: &Path, ready: bool) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&c).read_line(&mut line);
            let resp = if line.contains("list-units") {
                r#"{"ok":true,"units":[{"name":"etcd2.service","state":"active"}]}"#.to_string()
            } else {
                format!(
                    r#"{{"ok":true,"status":{{"version":"x","slot":"b","hostname":"h","ready":{ready},"uptime_ms":1,"state":"running"}}}}"#
                )
            };
            let _ = (&c).write_all(format!("{resp}\n").as_bytes());
        }
    });
}

fn boot_into_b(w: &World) {
    // What systemd-boot does before starting the entry: one try used.
    let e = w.paths.esp.join("loader/entries");
    std::fs::rename(e.join("crust-usr-b+1.conf"), e.join("crust-usr-b+0-1.conf")).unwrap();
}

fn daemon_on(w: &World, slot: Slot, version: &str, init_ready: bool, name: &str) -> Daemon {
    let mut d = w.daemon(NOW + 2);
    d.updater.booted = slot;
    d.updater.current = version.parse().unwrap();
    d.engine = Engine::new(
        version.parse().unwrap(),
        crust_update_engine::daemon::read_failed(&w.paths.state),
        Timing::default(),
        7,
        0,
    );
    d.init_socket = w.t.path().join(format!("{name}.sock"));
    fake_init(&d.init_socket, init_ready);
    d.reboot = vec![
        "sh".into(),
        "-c".into(),
        format!("touch {}", w.t.path().join("rebooted").display()),
    ];
    assess::on_start(&mut d);
    d
}

#[test]
fn a_healthy_trial_boot_is_blessed() {
    let w = World::new();
    w.publish("1.0.1", None, NOW);
    let mut d = w.daemon(NOW + 1);
    d.step(Event::CheckNow, 0);
    assert_eq!(d.engine.status, Status::UpdatedNeedReboot);
    // update-engine restarts before the reboot: it still knows an update waits.
    let again = daemon_on(&w, Slot::A, "1.0.0", true, "init0");
    assert_eq!(again.engine.status, Status::UpdatedNeedReboot);
    assert!(assess::init_should_bless(
        &w.paths.state,
        Slot::A,
        &w.entries()
    ));

    boot_into_b(&w);
    assert!(
        !assess::init_should_bless(&w.paths.state, Slot::B, &w.entries()),
        "init leaves the trial to update-engine"
    );
    let mut d = daemon_on(&w, Slot::B, "1.0.1", true, "init1");
    assert_eq!(d.view.lock().unwrap().boot, "assessing");
    // Updates wait while the fallback slot must stay intact.
    d.step(Event::CheckNow, 0);
    assert_eq!(d.engine.status, Status::Idle);
    assess::tick(&mut d, 10);
    assert_eq!(
        w.entries(),
        ["crust-usr-a.conf", "crust-usr-b+0-1.conf"],
        "not yet: healthy for 0 s"
    );
    assess::tick(&mut d, 40);
    assert_eq!(w.entries(), ["crust-usr-a.conf", "crust-usr-b.conf"]);
    assert_eq!(gptprio(&w.paths.disk, Slot::B), GptPrio::new(2, 0, true));
    assert_eq!(gptprio(&w.paths.disk, Slot::A), GptPrio::new(1, 0, true));
    assert_eq!(d.view.lock().unwrap().boot, "healthy");
    assert!(!w.paths.state.join("pending.json").exists());
    assert!(!w.t.path().join("rebooted").exists());
}

#[test]
fn an_unhealthy_trial_boot_falls_back_and_the_version_is_never_retried() {
    let w = World::new();
    w.publish("1.0.1", None, NOW);
    let mut d = w.daemon(NOW + 1);
    d.step(Event::CheckNow, 0);
    boot_into_b(&w);
    let mut d = daemon_on(&w, Slot::B, "1.0.1", false, "init1");
    assess::tick(&mut d, 299);
    assert!(!w.t.path().join("rebooted").exists());
    assess::tick(&mut d, 300);
    assert!(
        w.t.path().join("rebooted").exists(),
        "rebooted so systemd-boot skips the +0 entry"
    );
    assert_eq!(d.view.lock().unwrap().boot, "failed");
    assert_eq!(
        w.entries(),
        ["crust-usr-a.conf", "crust-usr-b+0-1.conf"],
        "the trial entry is not blessed"
    );

    // systemd-boot skipped B; A runs again.
    let mut d = daemon_on(&w, Slot::A, "1.0.0", true, "init2");
    assert_eq!(
        std::fs::read_to_string(w.paths.state.join("failed-versions")).unwrap(),
        "1.0.1\n"
    );
    assert_eq!(gptprio(&w.paths.disk, Slot::B).priority(), 0);
    assert!(d.view.lock().unwrap().note.contains("1.0.1 failed to boot"));
    d.step(Event::CheckNow, 0);
    assert_eq!(d.engine.status, Status::Idle);
    assert!(
        d.view.lock().unwrap().note.contains("not retrying"),
        "{}",
        d.view.lock().unwrap().note
    );
    // A newer release is taken again.
    w.publish("1.0.2", None, NOW);
    d.step(Event::CheckNow, 1);
    assert_eq!(
        d.engine.status,
        Status::UpdatedNeedReboot,
        "{:?}",
        d.engine.last_error
    );
    assert!(w.entries().contains(&"crust-usr-b+1.conf".to_string()));
}
