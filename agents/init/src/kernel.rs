//! The seam between init's decisions and the kernel: every mount, ioctl, module load, reboot and
//! helper program goes through [`Kernel`], so stage 1 and stage 2 logic runs on the host against
//! [`fake::RecordingKernel`].

use crate::dm::DmCmd;
use nix::mount::{MntFlags, MsFlags};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// How the machine goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    PowerOff,
    Reboot,
}

pub trait Kernel {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&self, target: &Path, detach: bool) -> io::Result<()>;
    /// Loads a kernel module from a file; `EEXIST` means it is already loaded.
    fn finit_module(&self, path: &Path) -> io::Result<()>;
    /// One device-mapper ioctl on /dev/mapper/control; the kernel writes its answer into `buf`.
    fn dm_ioctl(&self, cmd: DmCmd, buf: &mut [u8]) -> io::Result<()>;
    /// Tells the kernel partition `partno` of `disk` now spans `start..start+len` (bytes).
    fn blkpg_resize(&self, disk: &Path, partno: u32, start: u64, len: u64) -> io::Result<()>;
    /// Runs a helper program to completion with the console as its output; returns its exit code.
    fn run(&self, argv: &[&str]) -> io::Result<i32>;
    fn halt(&self, how: Halt) -> io::Result<()>;
}

/// The real thing.
pub struct Linux;

impl Kernel for Linux {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(Some(source), target, fstype, flags, data).map_err(io::Error::from)
    }

    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        let flags = if detach {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        nix::mount::umount2(target, flags).map_err(io::Error::from)
    }

    fn finit_module(&self, path: &Path) -> io::Result<()> {
        let f = File::open(path)?;
        let params = CString::default();
        nix::kmod::finit_module(&f, &params, nix::kmod::ModuleInitFlags::empty())
            .map_err(io::Error::from)
    }

    fn dm_ioctl(&self, cmd: DmCmd, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() < crate::dm::DM_IOCTL_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "dm ioctl buffer too small",
            ));
        }
        let control = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/mapper/control")?;
        // SAFETY: buf is a valid, writable dm_ioctl buffer whose data_size field equals its length,
        // so the kernel reads and writes only inside it.
        let rc = unsafe {
            libc::ioctl(
                control.as_raw_fd(),
                cmd.request() as libc::c_ulong,
                buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn blkpg_resize(&self, disk: &Path, partno: u32, start: u64, len: u64) -> io::Result<()> {
        #[repr(C)]
        struct BlkpgPartition {
            start: libc::c_longlong,
            length: libc::c_longlong,
            pno: libc::c_int,
            devname: [libc::c_char; 64],
            volname: [libc::c_char; 64],
        }
        #[repr(C)]
        struct BlkpgIoctlArg {
            op: libc::c_int,
            flags: libc::c_int,
            datalen: libc::c_int,
            data: *mut libc::c_void,
        }
        const BLKPG: libc::c_ulong = 0x1269;
        const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
        let f = File::open(disk)?;
        let mut part = BlkpgPartition {
            start: start as libc::c_longlong,
            length: len as libc::c_longlong,
            pno: partno as libc::c_int,
            devname: [0; 64],
            volname: [0; 64],
        };
        let mut arg = BlkpgIoctlArg {
            op: BLKPG_RESIZE_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
            data: (&mut part as *mut BlkpgPartition).cast(),
        };
        // SAFETY: arg and the partition it points to live until the call returns.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKPG, &mut arg) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn run(&self, argv: &[&str]) -> io::Result<i32> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let status = std::process::Command::new(prog)
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/bin")
            .stdin(std::process::Stdio::null())
            .status()?;
        Ok(status.code().unwrap_or(128))
    }

    fn halt(&self, how: Halt) -> io::Result<()> {
        use nix::sys::reboot::{reboot, RebootMode};
        let mode = match how {
            Halt::PowerOff => RebootMode::RB_POWER_OFF,
            Halt::Reboot => RebootMode::RB_AUTOBOOT,
        };
        reboot(mode).map(|_| ()).map_err(io::Error::from)
    }
}

#[cfg(test)]
pub mod fake {
    //! Records every call as one line of text and fails the calls a test asks it to.

    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    pub struct RecordingKernel {
        calls: RefCell<Vec<String>>,
        failures: RefCell<Vec<(String, i32)>>,
        exit_codes: RefCell<Vec<(String, i32)>>,
    }

    impl RecordingKernel {
        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
        /// Calls whose record starts with `prefix` fail with `errno`.
        pub fn fail(&self, prefix: &str, errno: i32) {
            self.failures.borrow_mut().push((prefix.to_string(), errno));
        }
        /// `run` of a command whose record starts with `prefix` returns `code`.
        pub fn exit_code(&self, prefix: &str, code: i32) {
            self.exit_codes
                .borrow_mut()
                .push((prefix.to_string(), code));
        }
        fn record(&self, call: String) -> io::Result<()> {
            let failure = self
                .failures
                .borrow()
                .iter()
                .find(|(p, _)| call.starts_with(p.as_str()))
                .map(|(_, e)| *e);
            self.calls.borrow_mut().push(call);
            match failure {
                Some(errno) => Err(io::Error::from_raw_os_error(errno)),
                None => Ok(()),
            }
        }
    }

    fn cstr(b: &[u8]) -> String {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }

    impl Kernel for RecordingKernel {
        fn mount(
            &self,
            source: &str,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> io::Result<()> {
            let mut s = format!(
                "mount {source} {} {}",
                target.display(),
                fstype.unwrap_or("-")
            );
            for (f, name) in [
                (MsFlags::MS_RDONLY, "ro"),
                (MsFlags::MS_MOVE, "move"),
                (MsFlags::MS_REMOUNT, "remount"),
                (MsFlags::MS_NOSUID, "nosuid"),
                (MsFlags::MS_NODEV, "nodev"),
                (MsFlags::MS_NOEXEC, "noexec"),
            ] {
                if flags.contains(f) {
                    s.push(' ');
                    s.push_str(name);
                }
            }
            if let Some(d) = data {
                s.push_str(&format!(" [{d}]"));
            }
            self.record(s)
        }
        fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
            let lazy = if detach { " lazy" } else { "" };
            self.record(format!("umount {}{lazy}", target.display()))
        }
        fn finit_module(&self, path: &Path) -> io::Result<()> {
            self.record(format!("insmod {}", path.display()))
        }
        fn dm_ioctl(&self, cmd: DmCmd, buf: &mut [u8]) -> io::Result<()> {
            let mut s = format!("dm {cmd:?} {}", cstr(&buf[48..176]));
            if buf.len() > crate::dm::DM_IOCTL_SIZE {
                let spec = &buf[crate::dm::DM_IOCTL_SIZE..];
                s.push_str(&format!(" {} {}", cstr(&spec[24..40]), cstr(&spec[40..])));
            }
            self.record(s)?;
            // Report device 253:0 like a first dm device.
            buf[40..48].copy_from_slice(&(253u64 << 8).to_le_bytes());
            Ok(())
        }
        fn blkpg_resize(&self, disk: &Path, partno: u32, start: u64, len: u64) -> io::Result<()> {
            self.record(format!("blkpg {} {partno} {start} {len}", disk.display()))
        }
        fn run(&self, argv: &[&str]) -> io::Result<i32> {
            let s = format!("run {}", argv.join(" "));
            let code = self
                .exit_codes
                .borrow()
                .iter()
                .find(|(p, _)| s.starts_with(p.as_str()))
                .map(|(_, c)| *c)
                .unwrap_or(0);
            self.record(s)?;
            Ok(code)
        }
        fn halt(&self, how: Halt) -> io::Result<()> {
            self.record(format!("halt {how:?}"))
        }
    }
}
