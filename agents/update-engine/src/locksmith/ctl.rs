//! `crustctl locksmith status|lock|unlock [ID]|set-max N [--endpoint URLS] [--group G]`, like
//! locksmithctl: reads and changes the reboot semaphore in etcd directly.

use super::etcd::{connect, DEFAULT_ENDPOINT};
use super::semaphore::{LockStore, Locker};
use std::io::Write;

pub const USAGE: &str = "usage: crustctl locksmith status | lock | unlock [MACHINE_ID] | set-max N  [--endpoint URL[,URL]] [--group GROUP]";

pub fn run(args: &[String]) -> i32 {
    let id = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut endpoint = std::env::var("LOCKSMITHD_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let mut group = std::env::var("LOCKSMITHD_GROUP")
        .ok()
        .filter(|s| !s.is_empty());
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--endpoint" => endpoint = it.next().cloned().unwrap_or_default(),
            "--group" => group = it.next().cloned(),
            _ => words.push(a.as_str()),
        }
    }
    let store = match connect(&endpoint) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crustctl locksmith: {e}");
            return 2;
        }
    };
    run_with(store, group.as_deref(), &id, &words, &mut std::io::stdout())
}

pub fn run_with<S: LockStore>(
    store: S,
    group: Option<&str>,
    id: &str,
    words: &[&str],
    out: &mut dyn Write,
) -> i32 {
    let mut l = Locker::new(store, group);
    let r = match words {
        ["status"] | [] => l.get(),
        ["lock"] => l.lock(id),
        ["unlock"] => l.unlock(id),
        ["unlock", other] => l.unlock(other),
        ["set-max", n] => match n.parse() {
            Ok(n) => l.set_max(n),
            Err(_) => {
                eprintln!("crustctl locksmith: set-max needs a number, got {n:?}");
                return 2;
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    match r {
        Ok(s) => {
            let _ = writeln!(out, "Available: {}\nMax: {}", s.semaphore, s.max);
            if !s.holders.is_empty() {
                let _ = writeln!(out, "\nMACHINE ID");
                for h in &s.holders {
                    let _ = writeln!(out, "{h}");
                }
            }
            0
        }
        Err(e) => {
            eprintln!("crustctl locksmith: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locksmith::semaphore::MemStore;

    #[test]
    fn verbs_print_like_locksmithctl() {
        let mut store = MemStore::default();
        let mut out = Vec::new();
        assert_eq!(run_with(&mut store, None, "m1", &["lock"], &mut out), 0);
        assert_eq!(run_with(&mut store, None, "m2", &["lock"], &mut out), 1);
        assert_eq!(
            run_with(&mut store, None, "m2", &["set-max", "2"], &mut out),
            0
        );
        out.clear();
        assert_eq!(run_with(&mut store, None, "m2", &["status"], &mut out), 0);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "Available: 1\nMax: 2\n\nMACHINE ID\nm1\n"
        );
        assert_eq!(
            run_with(&mut store, None, "m2", &["unlock", "m1"], &mut out),
            0
        );
        assert_eq!(
            run_with(&mut store, None, "m2", &["set-max", "x"], &mut out),
            2
        );
        assert_eq!(run_with(&mut store, None, "m2", &["frob"], &mut out), 2);
    }
}
