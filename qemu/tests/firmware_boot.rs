//! Boots a stand-in "crust image" for real: a GPT disk with the crust labels whose ESP holds no
//! boot loader, only a `startup.nsh` that OVMF's built-in shell runs. The script prints a ready
//! line and resets the machine, so every boot appends another ready line, which exercises the
//! whole lifecycle (image check, overlay, QEMU start, ready scanning, reboot in place, status,
//! down) without needing the real image. Skips when QEMU or OVMF is missing.

use crust_qemu::{Cluster, ClusterSpec, LaunchMode};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(180);

fn tools_present() -> bool {
    match crust_qemu::tools::find() {
        Ok(_) => true,
        Err(missing) => {
            eprintln!("skipping: {missing} is not installed");
            false
        }
    }
}

/// A 64 MiB GPT disk: EFI-SYSTEM (FAT with startup.nsh) and an empty USR-A.
fn fake_image(path: &Path) {
    let file = std::fs::File::create(path).expect("create image");
    file.set_len(64 * MIB).expect("size image");
    drop(file);
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(((64 * MIB) / 512 - 1) as u32);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open image");
    mbr.overwrite_lba0(&mut f).expect("write protective mbr");
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .create_from_device(f, None)
        .expect("new gpt");
    disk.update_partitions(Default::default())
        .expect("empty table");
    let esp = disk
        .add_partition("EFI-SYSTEM", 40 * MIB, gpt::partition_types::EFI, 0, None)
        .expect("esp");
    disk.add_partition("USR-A", 8 * MIB, gpt::partition_types::LINUX_FS, 0, None)
        .expect("usr-a");
    let esp_start = disk.partitions()[&esp]
        .bytes_start(gpt::disk::LogicalBlockSize::Lb512)
        .expect("esp start");
    let mut f = disk.write().expect("write gpt");

    // `^` escapes the next character in the UEFI shell, so the JSON keeps its quotes.
    let json = r#"{"version":"fw-0","slot":"a","hostname":"fake","units":[],"uptime_ms":1}"#
        .replace('"', "^\"");
    let script = format!("echo CRUST-READY {json}\r\nreset\r\n");
    let mut fat = std::io::Cursor::new(vec![0u8; (40 * MIB) as usize]);
    crust_fat::format(
        &mut fat,
        40 * MIB,
        "EFI-SYSTEM",
        &[crust_fat::Entry::File(
            "startup.nsh".into(),
            script.into_bytes(),
        )],
    )
    .expect("format esp");
    f.seek(SeekFrom::Start(esp_start)).expect("seek");
    f.write_all(fat.get_ref()).expect("write esp");
}

#[test]
fn fake_image_boots_reboots_and_goes_away() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("fake.img");
    fake_image(&image);
    let mut spec = ClusterSpec::new(&image, 1);
    spec.mode = LaunchMode::Child;
    spec.name = "fw".into();
    spec.state_root = Some(tmp.path().join("state"));

    let t0 = Instant::now();
    let cluster = Cluster::create(&spec, &|m| eprintln!("note: {m}")).expect("create");
    eprintln!("create (overlay, vars, spawn): {:?}", t0.elapsed());
    let node = &cluster.nodes()[0];
    let dir = node.dir().to_path_buf();
    let first_output = wait_for(|| {
        node.console_log()
            .metadata()
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    });
    eprintln!("qemu start to first firmware output: {first_output:?}");

    let r1 = node.wait_ready(1, TIMEOUT).expect("first ready line");
    assert_eq!(r1.version, "fw-0");
    eprintln!("qemu start to ready #1: {:?}", t0.elapsed());
    let status = node.status();
    assert!(status.running());
    eprintln!("rss: {:?} KiB", status.rss_kib);

    // The script resets the machine: QEMU stays, the log grows a second ready line.
    let pid = node.pid();
    node.wait_ready(2, TIMEOUT).expect("ready line after reset");
    assert_eq!(node.pid(), pid, "a guest reboot restarts in place");
    eprintln!("qemu start to ready #2: {:?}", t0.elapsed());

    // Same name again while up: refused before anything starts.
    let again = Cluster::create(&spec, &|_| {});
    assert!(
        matches!(again, Err(crust_qemu::Error::ClusterUp { .. })),
        "{again:?}"
    );

    let pid = pid.expect("pid");
    let t = Instant::now();
    cluster.down().expect("down");
    eprintln!("down: {:?}", t.elapsed());
    assert!(
        crust_qemu::process::has_exited(pid),
        "qemu {pid} survived down"
    );
    assert!(!dir.exists(), "state dir survived down");
}

#[test]
fn daemonized_cluster_is_found_again_and_torn_down() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("fake.img");
    fake_image(&image);
    let root = tmp.path().join("state");
    let mut spec = ClusterSpec::new(&image, 2);
    spec.name = "fwd".into();
    spec.state_root = Some(root.clone());
    let created = Cluster::create(&spec, &|_| {}).expect("create");
    // The CLI's `up` returns here; a later command reopens the cluster by name.
    drop(created);
    let guard = DownOnDrop(Some(Cluster::open(Some(&root), "fwd").expect("open")));
    let cluster = guard.0.as_ref().expect("cluster");
    let pids: Vec<i32> = cluster.nodes().iter().filter_map(|n| n.pid()).collect();
    assert_eq!(
        pids.len(),
        2,
        "both nodes run after their starter's handle is gone"
    );
    let ready = cluster.wait_ready(TIMEOUT).expect("ready");
    assert_eq!(ready.len(), 2);

    // Power cut and restart of one node.
    let node1 = cluster.node_named("node1").expect("node1");
    node1.kill().expect("kill");
    assert!(!node1.is_running());
    assert!(node1.start().expect("start"));
    node1.wait_ready(1, TIMEOUT).expect("ready after restart");
    assert!(cluster.node_named("node7").is_err());

    let pids: Vec<i32> = cluster.nodes().iter().filter_map(|n| n.pid()).collect();
    let t = Instant::now();
    let mut guard = guard;
    guard.0.take().expect("cluster").down().expect("down");
    eprintln!("down of 2 daemonized nodes: {:?}", t.elapsed());
    for pid in pids {
        assert!(
            crust_qemu::process::has_exited(pid),
            "qemu {pid} survived down"
        );
    }
    assert!(!root.join("fwd").exists());
    assert!(matches!(
        Cluster::open(Some(&root), "fwd"),
        Err(crust_qemu::Error::ClusterNotFound { .. })
    ));
}

/// Daemonized QEMUs are not our children: tear them down even when an assertion fails.
struct DownOnDrop(Option<Cluster>);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.down();
        }
    }
}

fn wait_for(cond: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < TIMEOUT, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}
