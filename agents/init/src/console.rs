//! Messages for the person at the console. PID 1 has no journal yet: progress goes to
//! /dev/console, failures also to /dev/kmsg so they land in the kernel log.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends every message to stderr instead of the console and the kernel log (a manager run as an
/// ordinary process must not write to the host's console).
pub fn use_stderr() {
    TO_STDERR.store(true, Ordering::SeqCst);
}

fn write_console(line: &str) {
    if TO_STDERR.load(Ordering::SeqCst) {
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    match std::fs::OpenOptions::new().write(true).open("/dev/console") {
        Ok(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        Err(_) => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// A progress line: `crust: <msg>`.
pub fn info(msg: &str) {
    write_console(&format!("crust: {msg}\n"));
}

/// A failure: console and kernel log (level 3, err).
pub fn error(msg: &str) {
    write_console(&format!("crust: {msg}\n"));
    if TO_STDERR.load(Ordering::SeqCst) {
        return;
    }
    if let Ok(mut k) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = k.write_all(format!("<3>crust: {msg}\n").as_bytes());
    }
}

/// A line printed exactly as given (the ready line is parsed by the host).
pub fn raw(line: &str) {
    write_console(&format!("{line}\n"));
}
