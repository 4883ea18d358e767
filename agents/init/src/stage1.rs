//! Stage 1: PID 1 inside the initramfs. Mounts USR through dm-verity, makes and grows ROOT, and
//! switches into it. Any failure stops here with a message and an emergency shell: a machine
//! must never continue on an unverified or half-prepared root.

use crate::console;
use crate::disks::{self, Partition, Roots};
use crate::dm::{self, Target};
use crate::gptgrow;
use crate::kernel::{Kernel, Linux};
use crust_common::cmdline::{BootParams, Verify};
use crust_common::verity::{self, Superblock};
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The file whose presence tells init it runs in the initramfs.
pub const INITRD_RELEASE: &str = "/etc/initrd-release";
pub const EARLY_MODULES: &str = "/etc/crust/early-modules";
/// What stage 1 found, handed to stage 2 through /run (which survives switch_root).
pub const BOOT_INFO: &str = "/run/crust/boot.json";
pub const ROOT_PARTITION: u32 = 9;
pub const ROOT_LABEL: &str = "ROOT";
pub const ESP_PARTITION: u32 = 1;
const DISK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum Stage1Error {
    #[error("mounting {what} failed: {err}")]
    Mount { what: String, err: io::Error },
    #[error(transparent)]
    Cmdline(#[from] crust_common::cmdline::CmdlineError),
    #[error("no disk shows a partition with PARTUUID {partuuid} after {secs}s")]
    NoUsrDisk { partuuid: String, secs: u64 },
    #[error("USR partition {dev}: {why}")]
    Usr { dev: String, why: String },
    #[error("mounting USR (squashfs through dm-verity) on /usr failed: {0}")]
    UsrMount(io::Error),
    #[error("USR failed dm-verity verification near byte {offset}: {err}")]
    Corrupt { offset: u64, err: io::Error },
    #[error("ROOT partition: {0}")]
    Root(String),
    #[error("switching to the real root failed: {0}")]
    Switch(io::Error),
}

impl Stage1Error {
    /// What the person at the console can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Stage1Error::Mount { .. } => "the kernel lacks a filesystem or device it needs; check the kernel and /etc/crust/early-modules",
            Stage1Error::Cmdline(_) => "boot a crust loader entry, or fix mount.usr= and usrhash= on the kernel command line",
            Stage1Error::NoUsrDisk { .. } => "is the disk attached (virtio/scsi/nvme) and its driver listed in /etc/crust/early-modules? `ls /sys/class/block` shows what the kernel sees",
            Stage1Error::Usr { .. } => "the USR partition or its verity metadata is unreadable; reinstall the image or boot the other slot",
            Stage1Error::UsrMount(_) => "an I/O error means USR does not match usrhash= (corrupted image or wrong loader entry): boot the other slot or reinstall; `no such device` means squashfs is missing from /etc/crust/early-modules",
            Stage1Error::Corrupt { .. } => "the USR image is corrupted on disk; boot the other slot (reboot, or pick it in the boot menu) or reinstall",
            Stage1Error::Root(_) => "ROOT could not be prepared; inspect it with `ls /sys/class/block` and the e2fsprogs tools under /usr/sbin",
            Stage1Error::Switch(_) => "the ROOT filesystem lacks /usr/sbin/init or cannot be entered",
        }
    }
}

/// Recorded for stage 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    pub disk: String,
    pub usr_partuuid: String,
    pub usr_dev: String,
    pub root_dev: String,
    pub esp_dev: Option<String>,
}

pub fn main(argv: &[String]) -> ! {
    let k = Linux;
    let err = match boot(&k) {
        Ok(()) => Stage1Error::Switch(switch_root_and_exec(argv)),
        Err(e) => e,
    };
    emergency(&format!("stage 1 failed: {err}"), err.hint())
}

fn boot(k: &dyn Kernel) -> Result<(), Stage1Error> {
    mount_api(k)?;
    let list = fs::read_to_string(EARLY_MODULES).unwrap_or_default();
    for failure in load_modules(k, &list) {
        console::error(&failure);
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = BootParams::parse(&cmdline)?;
    let r = Roots::default();
    let usr = wait_for(&r, &params.usr_partuuid, DISK_TIMEOUT)?;
    console::info(&format!(
        "USR is {} (partition {} of {})",
        usr.dev.display(),
        usr.number,
        usr.disk
    ));
    let mapper = setup_verity(k, &usr, &params.usrhash)?;
    if params.verify == Verify::Full {
        let t = Instant::now();
        let bytes = verify_full(&mapper)?;
        console::info(&format!(
            "USR verified: {} MiB in {} ms",
            bytes >> 20,
            t.elapsed().as_millis()
        ));
    }
    k.mount(
        &mapper.to_string_lossy(),
        Path::new("/usr"),
        Some("squashfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None,
    )
    .map_err(Stage1Error::UsrMount)?;

    let root = disks::sibling(&r, &usr, ROOT_PARTITION)
        .map_err(|e| Stage1Error::Root(e.to_string()))?
        .ok_or_else(|| {
            Stage1Error::Root(format!("{} has no partition {ROOT_PARTITION}", usr.disk))
        })?;
    if root.label != ROOT_LABEL {
        return Err(Stage1Error::Root(format!(
            "partition {ROOT_PARTITION} of {} is labelled {:?}, not {ROOT_LABEL}; refusing to touch it",
            usr.disk, root.label
        )));
    }
    grow_root(k, &root)
        .map_err(|e| Stage1Error::Root(format!("growing {}: {e}", root.dev.display())))?;
    let dev = root.dev.to_string_lossy().into_owned();
    if !has_ext4(&root.dev).map_err(|e| Stage1Error::Root(format!("reading {dev}: {e}")))? {
        console::info(&format!("first boot: making ext4 on {dev}"));
        run_ok(
            k,
            &[
                "/usr/sbin/mke2fs",
                "-q",
                "-t",
                "ext4",
                "-L",
                ROOT_LABEL,
                "-F",
                &dev,
            ],
        )?;
    }
    k.mount(
        &dev,
        Path::new("/sysroot"),
        Some("ext4"),
        MsFlags::empty(),
        None,
    )
    .map_err(|err| Stage1Error::Mount {
        what: format!("ROOT ({dev}) on /sysroot"),
        err,
    })?;
    let part_bytes = disks::size_bytes(&r, &root.name).unwrap_or(0);
    let fs_bytes = read_ext4_size(&root.dev).unwrap_or(u64::MAX);
    if needs_resize(fs_bytes, part_bytes) {
        console::info(&format!(
            "growing the ROOT filesystem to {} MiB",
            part_bytes >> 20
        ));
        run_ok(k, &["/usr/sbin/resize2fs", &dev])?;
    }
    prepare_root(Path::new("/sysroot"))
        .map_err(|e| Stage1Error::Root(format!("preparing /sysroot: {e}")))?;

    let esp = disks::sibling(&r, &usr, ESP_PARTITION).ok().flatten();
    let info = BootInfo {
        disk: usr.disk.clone(),
        usr_partuuid: usr.partuuid.clone(),
        usr_dev: usr.dev.to_string_lossy().into_owned(),
        root_dev: dev,
        esp_dev: esp.map(|p| p.dev.to_string_lossy().into_owned()),
    };
    let _ = fs::create_dir_all("/run/crust");
    if let Ok(json) = serde_json::to_string(&info) {
        let _ = fs::write(BOOT_INFO, json);
    }
    switch_mounts(k, Path::new("/sysroot"))
}

/// The API filesystems stage 1 and everything after it need.
pub fn mount_api(k: &dyn Kernel) -> Result<(), Stage1Error> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (src, dir, fstype, flags, data) in [
        ("proc", "/proc", "proc", nosuid, None),
        ("sysfs", "/sys", "sysfs", nosuid, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
    ] {
        let _ = fs::create_dir_all(dir);
        match k.mount(src, Path::new(dir), Some(fstype), flags, data) {
            // Already there (a second run, or a kernel with devtmpfs.mount=1).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(err) => {
                return Err(Stage1Error::Mount {
                    what: dir.to_string(),
                    err,
                })
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

/// Loads each module listed (one absolute path a line, dependencies first). Returns messages for
/// the ones that failed; a failing module does not stop the boot by itself, the missing device
/// it would have provided does, with a clearer message.
pub fn load_modules(k: &dyn Kernel, list: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for line in list.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match k.finit_module(Path::new(line)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            // The module's hardware or firmware is absent (efivarfs on a BIOS boot): not an error.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => failures.push(format!("loading kernel module {line} failed: {e}")),
        }
    }
    failures
}

fn wait_for(r: &Roots, partuuid: &str, timeout: Duration) -> Result<Partition, Stage1Error> {
    let start = Instant::now();
    loop {
        if let Some(p) = disks::find_partuuid(r, partuuid) {
            return Ok(p);
        }
        if start.elapsed() >= timeout {
            return Err(Stage1Error::NoUsrDisk {
                partuuid: partuuid.to_string(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dm table for USR: data and hash tree on the same partition, the hash area after the
/// squashfs (see `crust_common::verity`).
pub fn verity_target(
    first_block: &[u8],
    superblock_block: &[u8],
    usr: &str,
    root_hash: &str,
) -> Result<Target, String> {
    let offset = verity::usr_hash_offset(first_block).map_err(|e| e.to_string())?;
    let sb = Superblock::parse(superblock_block).map_err(|e| e.to_string())?;
    Ok(Target {
        start: 0,
        sectors: sb.data_sectors(),
        kind: "verity".into(),
        params: sb.dm_params(usr, usr, offset, root_hash),
    })
}

fn setup_verity(k: &dyn Kernel, usr: &Partition, root_hash: &str) -> Result<PathBuf, Stage1Error> {
    let dev = usr.dev.to_string_lossy().into_owned();
    let usr_err = |why: String| Stage1Error::Usr {
        dev: dev.clone(),
        why,
    };
    let f = fs::File::open(&usr.dev).map_err(|e| usr_err(format!("cannot open: {e}")))?;
    let mut first = vec![0u8; verity::BLOCK_SIZE as usize];
    f.read_exact_at(&mut first, 0)
        .map_err(|e| usr_err(format!("cannot read: {e}")))?;
    let offset = verity::usr_hash_offset(&first).map_err(|e| usr_err(e.to_string()))?;
    let mut sb = vec![0u8; verity::BLOCK_SIZE as usize];
    f.read_exact_at(&mut sb, offset).map_err(|e| {
        usr_err(format!(
            "cannot read the verity superblock at byte {offset}: {e}"
        ))
    })?;
    let target = verity_target(&first, &sb, &usr.majmin, root_hash).map_err(usr_err)?;
    let (major, minor) = dm::create_device(k, "usr", &target)
        .map_err(|e| usr_err(format!("creating the dm-verity device: {e}")))?;
    let node = PathBuf::from("/dev/mapper/usr");
    if !node.exists() {
        disks::mknod_block(&node, major, minor)
            .map_err(|e| usr_err(format!("creating {}: {e}", node.display())))?;
    }
    Ok(node)
}

/// Reads the whole verity device once: dm-verity checks every block on read, so any corruption
/// shows up here as EIO instead of later as a random crash.
pub fn verify_full(dev: &Path) -> Result<u64, Stage1Error> {
    let mut f = fs::File::open(dev).map_err(|err| Stage1Error::Corrupt { offset: 0, err })?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Stage1Error::Corrupt { offset: total, err }),
        }
    }
}

/// Grows ROOT (the last partition) to the end of the disk and tells the kernel.
fn grow_root(k: &dyn Kernel, root: &Partition) -> io::Result<()> {
    let mut disk = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&root.disk_dev)?;
    let sectors = disk.seek(SeekFrom::End(0))? / gptgrow::SECTOR;
    let mut head = vec![0u8; 1024];
    disk.read_exact_at(&mut head, 0)?;
    let (at, num, size) = gptgrow::entries_location(&head[512..]).map_err(io::Error::other)?;
    let mut entries = vec![0u8; num as usize * size as usize];
    disk.read_exact_at(&mut entries, at * gptgrow::SECTOR)?;
    let Some(plan) = gptgrow::plan(&head[..512], &head[512..], &entries, sectors, root.number)
        .map_err(io::Error::other)?
    else {
        return Ok(());
    };
    for (offset, bytes) in &plan.writes {
        disk.write_all_at(bytes, *offset)?;
    }
    disk.flush()?;
    disk.sync_all()?;
    if plan.grows_partition() {
        console::info(&format!(
            "ROOT grown to the end of the disk: sectors {}..={}",
            plan.first_lba, plan.new_last_lba
        ));
        k.blkpg_resize(
            &root.disk_dev,
            root.number,
            plan.first_lba * gptgrow::SECTOR,
            (plan.new_last_lba - plan.first_lba + 1) * gptgrow::SECTOR,
        )?;
    }
    Ok(())
}

/// Whether the ext4 superblock magic (0xEF53 at byte 1080) is present.
pub fn has_ext4(dev: &Path) -> io::Result<bool> {
    let f = fs::File::open(dev)?;
    let mut magic = [0u8; 2];
    f.read_exact_at(&mut magic, 1080)?;
    Ok(magic == [0x53, 0xef])
}

/// Filesystem size in bytes from an ext4 superblock (the 1024 bytes at offset 1024).
pub fn ext4_size(sb: &[u8]) -> Option<u64> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(sb.get(at..at + 4)?.try_into().ok()?))
    };
    if sb.get(56..58)? != [0x53, 0xef] {
        return None;
    }
    let lo = u64::from(u32_at(4)?);
    let incompat_64bit = u32_at(0x60)? & 0x80 != 0;
    let hi = if incompat_64bit {
        u64::from(u32_at(0x150)?)
    } else {
        0
    };
    let log = u32_at(24)?;
    if log > 6 {
        return None;
    }
    Some((hi << 32 | lo) * (1024u64 << log))
}

fn read_ext4_size(dev: &Path) -> Option<u64> {
    let f = fs::File::open(dev).ok()?;
    let mut sb = vec![0u8; 1024];
    f.read_exact_at(&mut sb, 1024).ok()?;
    ext4_size(&sb)
}

/// Online growth is worth running once at least 1 MiB is unused behind the filesystem.
pub fn needs_resize(fs_bytes: u64, part_bytes: u64) -> bool {
    part_bytes > fs_bytes && part_bytes - fs_bytes >= 1 << 20
}

fn run_ok(k: &dyn Kernel, argv: &[&str]) -> Result<(), Stage1Error> {
    match k.run(argv) {
        Ok(0) => Ok(()),
        Ok(code) => Err(Stage1Error::Root(format!(
            "{} exited with {code}",
            argv.join(" ")
        ))),
        Err(e) => Err(Stage1Error::Root(format!("cannot run {}: {e}", argv[0]))),
    }
}

/// The skeleton every ROOT has, made idempotently on each boot; `/bin` and friends point into
/// the merged `/usr`.
pub fn prepare_root(root: &Path) -> io::Result<()> {
    for (dir, mode) in [
        ("etc", 0o755),
        ("var", 0o755),
        ("home", 0o755),
        ("root", 0o700),
        ("tmp", 0o1777),
        ("run", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("usr", 0o755),
        ("boot", 0o755),
    ] {
        let p = root.join(dir);
        if !p.exists() {
            fs::create_dir_all(&p)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        }
        if dir == "tmp" {
            // A sticky, world-writable /tmp even if someone changed it.
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        }
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        let p = root.join(link);
        match fs::read_link(&p) {
            Ok(t) if t == Path::new(target) => {}
            Ok(_) => {
                fs::remove_file(&p)?;
                std::os::unix::fs::symlink(target, &p)?;
            }
            Err(_) if p.symlink_metadata().is_ok() => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a symlink to {target}; move it away",
                    p.display()
                )))
            }
            Err(_) => std::os::unix::fs::symlink(target, &p)?,
        }
    }
    Ok(())
}

/// Moves USR and the API filesystems into the new root, then the new root onto /.
pub fn switch_mounts(k: &dyn Kernel, sysroot: &Path) -> Result<(), Stage1Error> {
    for dir in ["usr", "dev", "proc", "sys", "run"] {
        let from = Path::new("/").join(dir);
        k.mount(
            &from.to_string_lossy(),
            &sysroot.join(dir),
            None,
            MsFlags::MS_MOVE,
            None,
        )
        .map_err(|err| Stage1Error::Mount {
            what: format!("move {} to {}", from.display(), sysroot.join(dir).display()),
            err,
        })?;
    }
    std::env::set_current_dir(sysroot).map_err(Stage1Error::Switch)?;
    k.mount(".", Path::new("/"), None, MsFlags::MS_MOVE, None)
        .map_err(|err| Stage1Error::Mount {
            what: format!("move {} to /", sysroot.display()),
            err,
        })
}

/// chroot into the moved root and exec init there with the same arguments. Returns only on error.
fn switch_root_and_exec(argv: &[String]) -> io::Error {
    use std::os::unix::process::CommandExt;
    if let Err(e) = nix::unistd::chroot(".") {
        return io::Error::from(e);
    }
    if let Err(e) = std::env::set_current_dir("/") {
        return e;
    }
    let mut cmd = std::process::Command::new("/usr/sbin/init");
    if let Some((first, rest)) = argv.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.exec()
}

/// Prints the failure and runs a shell on the console, forever: PID 1 must not exit, and the
/// person at the console needs a way in.
pub fn emergency(msg: &str, hint: &str) -> ! {
    loop {
        console::error(msg);
        console::error(&format!("hint: {hint}"));
        console::error(
            "starting an emergency shell on the console; exit it to see this message again",
        );
        match spawn_console_shell() {
            Ok(pid) => wait_for_pid(pid),
            Err(e) => console::error(&format!("cannot start /bin/sh: {e}")),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn spawn_console_shell() -> io::Result<i32> {
    use std::os::unix::process::CommandExt;
    let shell = ["/bin/sh", "/usr/bin/sh"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no /bin/sh"))?;
    let console = || {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
    };
    let mut cmd = std::process::Command::new(shell);
    cmd.env("PATH", "/bin:/usr/bin:/usr/sbin")
        .env("PS1", "(crust emergency) # ")
        .stdin(console()?)
        .stdout(console()?)
        .stderr(console()?);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 1);
            Ok(())
        });
    }
    Ok(cmd.spawn()?.id() as i32)
}

/// Waits for one child while reaping any others (orphans are re-parented to PID 1).
pub fn wait_for_pid(pid: i32) {
    loop {
        // SAFETY: plain waitpid on any child.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
        if r == pid || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::RecordingKernel;

    #[test]
    fn modules_load_in_order_and_eexist_is_fine() {
        let k = RecordingKernel::default();
        k.fail("insmod /m/b.ko", libc::EEXIST);
        k.fail("insmod /m/c.ko", libc::ENOENT);
        k.fail("insmod /m/d.ko", libc::ENODEV);
        let failures = load_modules(&k, "/m/a.ko\n\n# comment\n/m/b.ko\n/m/c.ko\n/m/d.ko\n");
        assert_eq!(
            k.calls(),
            [
                "insmod /m/a.ko",
                "insmod /m/b.ko",
                "insmod /m/c.ko",
                "insmod /m/d.ko"
            ]
        );
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("/m/c.ko"), "{failures:?}");
    }

    #[test]
    fn api_mounts_tolerate_ebusy_but_not_other_errors() {
        let k = RecordingKernel::default();
        k.fail("mount devtmpfs", libc::EBUSY);
        mount_api(&k).unwrap();
        assert_eq!(
            k.calls(),
            [
                "mount proc /proc proc nosuid nodev noexec",
                "mount sysfs /sys sysfs nosuid nodev noexec",
                "mount devtmpfs /dev devtmpfs nosuid [mode=0755]",
                "mount tmpfs /run tmpfs nosuid nodev [mode=0755]",
            ]
        );
        let k = RecordingKernel::default();
        k.fail("mount sysfs", libc::ENODEV);
        let e = mount_api(&k).unwrap_err();
        assert!(e.to_string().contains("/sys"), "{e}");
        assert!(!e.hint().is_empty());
    }

    #[test]
    fn switch_moves_usr_and_api_filesystems_then_the_root() {
        let t = tempfile::tempdir().unwrap();
        let here = std::env::current_dir().unwrap();
        let k = RecordingKernel::default();
        switch_mounts(&k, t.path()).unwrap();
        std::env::set_current_dir(here).unwrap();
        let s = t.path().display();
        assert_eq!(
            k.calls(),
            [
                format!("mount /usr {s}/usr - move"),
                format!("mount /dev {s}/dev - move"),
                format!("mount /proc {s}/proc - move"),
                format!("mount /sys {s}/sys - move"),
                format!("mount /run {s}/run - move"),
                "mount . / - move".to_string(),
            ]
        );
    }

    #[test]
    fn prepares_root_idempotently() {
        let t = tempfile::tempdir().unwrap();
        prepare_root(t.path()).unwrap();
        prepare_root(t.path()).unwrap();
        assert_eq!(
            fs::read_link(t.path().join("lib64")).unwrap(),
            Path::new("usr/lib64")
        );
        let mode = fs::metadata(t.path().join("tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777);
        // A wrong symlink is fixed, a real directory in the way is refused.
        fs::remove_file(t.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("elsewhere", t.path().join("bin")).unwrap();
        prepare_root(t.path()).unwrap();
        assert_eq!(
            fs::read_link(t.path().join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        fs::remove_file(t.path().join("sbin")).unwrap();
        fs::create_dir(t.path().join("sbin")).unwrap();
        assert!(prepare_root(t.path()).is_err());
    }

    #[test]
    fn ext4_size_and_resize_decision() {
        let mut sb = vec![0u8; 1024];
        sb[56..58].copy_from_slice(&[0x53, 0xef]);
        sb[4..8].copy_from_slice(&1000u32.to_le_bytes());
        sb[24..28].copy_from_slice(&2u32.to_le_bytes()); // 4096-byte blocks
        assert_eq!(ext4_size(&sb), Some(4_096_000));
        sb[0x60] = 0x80;
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_size(&sb), Some(((1u64 << 32) + 1000) * 4096));
        sb[56] = 0;
        assert_eq!(ext4_size(&sb), None);
        assert!(!needs_resize(100 << 20, (100 << 20) + 4096));
        assert!(needs_resize(100 << 20, 200 << 20));
        assert!(!needs_resize(u64::MAX, 200 << 20));
    }

    #[test]
    fn ext4_magic_detection() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("img");
        let mut b = vec![0u8; 4096];
        fs::write(&p, &b).unwrap();
        assert!(!has_ext4(&p).unwrap());
        b[1080] = 0x53;
        b[1081] = 0xef;
        fs::write(&p, &b).unwrap();
        assert!(has_ext4(&p).unwrap());
    }

    #[test]
    fn grow_root_on_an_image_file_and_tells_the_kernel() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk");
        let mut d = gptgrow::tests::disk(16384, 14335);
        d.resize(32768 * 512, 0);
        fs::write(&img, &d).unwrap();
        let root = Partition {
            disk: "vda".into(),
            disk_dev: img.clone(),
            number: 9,
            name: "vda9".into(),
            dev: PathBuf::from("/dev/vda9"),
            majmin: "254:9".into(),
            partuuid: String::new(),
            label: "ROOT".into(),
        };
        let k = RecordingKernel::default();
        grow_root(&k, &root).unwrap();
        assert_eq!(
            k.calls(),
            [format!(
                "blkpg {} 9 {} {}",
                img.display(),
                4096 * 512,
                (30719 - 4096 + 1) * 512
            )]
        );
        // Second boot: nothing to do.
        let k = RecordingKernel::default();
        grow_root(&k, &root).unwrap();
        assert!(k.calls().is_empty());
    }
}
