//! crust init: PID 1.
//!
//! One binary, two stages. In the initramfs (marked by `/etc/initrd-release`) it is stage 1
//! ([`stage1`]): load early modules, find the USR partition named on the kernel command line,
//! mount it through dm-verity, prepare ROOT and switch into it. On the real root it is stage 2
//! ([`stage2`]): a minimal service manager with a control socket ([`proto`]) that `crustctl`
//! ([`ctl`]) talks to. Every kernel interaction goes through [`kernel::Kernel`] so the decisions
//! are tested on the host. See README.md.

// Tests may unwrap: a panic there is a test failure with a location.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bless;
pub mod cloudinit;
pub mod console;
pub mod ctl;
pub mod disks;
pub mod dm;
pub mod gptgrow;
pub mod install;
pub mod kernel;
pub mod logs;
pub mod manager;
pub mod network;
pub mod proto;
pub mod service;
pub mod stage1;
pub mod stage2;

use std::path::Path;

/// Entry point for `init`: picks the stage. Returns an exit code only when not PID 1.
pub fn run(argv: &[String]) -> i32 {
    if argv.iter().any(|a| a == "--user-mode") {
        return stage2::user_main(argv);
    }
    if std::process::id() != 1 {
        eprintln!("init: this is crust's PID 1 and only runs as process 1; use `crustctl` to talk to the running init");
        return 1;
    }
    if Path::new(stage1::INITRD_RELEASE).exists() {
        stage1::main(argv)
    } else {
        stage2::main(argv)
    }
}
