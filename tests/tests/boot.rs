//! A single machine boots the image through OVMF, systemd-boot and init, and survives a reboot.

use anyhow::{Context, Result};
use crust_tests::Cluster;

/// `(device, fstype, options)` of the mount at `mountpoint` in `/proc/mounts` text.
fn mount_of<'a>(mounts: &'a str, mountpoint: &str) -> Option<(&'a str, &'a str, &'a str)> {
    mounts.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[1] == mountpoint).then(|| (f[0], f[2], f[3]))
    })
}

fn number(s: &str) -> Result<u64> {
    s.trim()
        .parse()
        .with_context(|| format!("not a number: {s:?}"))
}

#[test]
fn boots_with_verity_usr_and_root_filling_the_disk() -> Result<()> {
    let c = Cluster::up(1)?;
    let node = c.node(0);

    let mounts = node.sh("cat /proc/mounts")?;
    let (dev, fstype, opts) = mount_of(&mounts, "/usr").context("/usr is not mounted")?;
    assert_eq!((dev, fstype), ("/dev/mapper/usr", "squashfs"), "{mounts}");
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "/usr is not read-only: {opts}"
    );

    // The device-mapper device called `usr` sits on the USR-A partition.
    let dms =
        node.sh("for d in /sys/block/dm-*; do echo \"$(cat $d/dm/name) $(ls $d/slaves)\"; done")?;
    assert!(
        dms.lines().any(|l| l.trim() == "usr vda3"),
        "dm devices: {dms}"
    );
    let target = node.sh("dmsetup table usr 2>/dev/null || true")?;
    if !target.trim().is_empty() {
        assert!(
            target.contains("verity"),
            "usr is not a verity target: {target}"
        );
    }

    let (dev, fstype, _) = mount_of(&mounts, "/").context("/ is not mounted")?;
    assert_eq!((dev, fstype), ("/dev/vda9", "ext4"), "{mounts}");

    // ROOT was grown to the end of the (bigger than the image) disk: at most the 1 MiB
    // alignment plus the 33-sector backup GPT is left after it.
    let disk = number(&node.sh("cat /sys/block/vda/size")?)?;
    let start = number(&node.sh("cat /sys/block/vda/vda9/start")?)?;
    let size = number(&node.sh("cat /sys/block/vda/vda9/size")?)?;
    let left = disk - (start + size);
    assert!(
        left <= 2048 + 34,
        "{left} sectors after ROOT on a {disk}-sector disk"
    );
    assert!(
        disk >= 8 << 21,
        "the overlay should be 8 GiB, vda has {disk} sectors"
    );

    let fs = node.sh("stat -f -c '%b %S' /")?;
    let (blocks, bsize) = fs.trim().split_once(' ').context("stat -f output")?;
    let fs_bytes = number(blocks)? * number(bsize)?;
    let part_bytes = size * 512;
    assert!(
        fs_bytes * 10 >= part_bytes * 9,
        "filesystem {fs_bytes} bytes on a {part_bytes}-byte partition: not grown"
    );
    Ok(())
}

#[test]
fn reboot_keeps_var_and_blesses_the_slot() -> Result<()> {
    let c = Cluster::up(1)?;
    let node = c.node(0);
    node.sh("echo kept-across-reboot > /var/crust-e2e-marker && sync")?;
    assert_eq!(node.boots()?, 1);

    let ready = node.reboot_and_wait()?;
    assert_eq!(node.boots()?, 2, "no second ready line");
    assert_eq!(ready.slot, "a");

    assert_eq!(
        node.sh("cat /var/crust-e2e-marker")?.trim(),
        "kept-across-reboot"
    );
    let entries = node.sh("ls /boot/loader/entries")?;
    assert!(
        entries.lines().any(|e| e.trim() == "crust-usr-a.conf"),
        "slot A not blessed (boot counter still in the name): {entries}"
    );
    // systemd-boot itself counted the first boot (it renames +3 to +2-1 on the ESP before
    // booting), so boot counting, and with it rollback, works on the ESP the build writes.
    let console = std::fs::read_to_string(node.inner().console_log())?;
    assert!(
        console.contains("crust-usr-a+2-1.conf -> crust-usr-a.conf"),
        "the first boot should bless the entry systemd-boot counted down"
    );

    // A clean power-off: QEMU exits by itself once the guest turns the machine off.
    node.inner().send("crustctl poweroff")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while node.inner().is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the machine did not power off within 120 s of `crustctl poweroff`"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    Ok(())
}

/// Blessing renames the loader entry on the ESP; a power cut right after must not leave the
/// machine without a bootable entry.
#[test]
fn a_power_cut_right_after_ready_keeps_the_machine_bootable() -> Result<()> {
    let c = Cluster::up(1)?;
    let n = c.node(0);
    let node = n.inner();
    node.kill()?;
    assert!(
        node.start()?,
        "the node should start again after the power cut"
    );
    let ready = node.wait_ready(1, crust_tests::BOOT_TIMEOUT)?;
    assert_eq!(ready.slot, "a");
    let entries = c.node(0).sh("ls /boot/loader/entries")?;
    assert_eq!(entries.trim(), "crust-usr-a.conf");
    Ok(())
}

#[test]
fn mount_parsing() {
    let m = "/dev/mapper/usr /usr squashfs ro,nodev 0 0\n/dev/vda9 / ext4 rw 0 0\n";
    assert_eq!(
        mount_of(m, "/usr"),
        Some(("/dev/mapper/usr", "squashfs", "ro,nodev"))
    );
    assert_eq!(mount_of(m, "/"), Some(("/dev/vda9", "ext4", "rw")));
    assert_eq!(mount_of(m, "/var"), None);
}
