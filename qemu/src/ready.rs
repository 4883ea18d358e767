//! Reading the serial console log: ready lines and the tail shown in errors.

use crust_common::ready::Ready;

/// Every ready line in `log`, in order. A reboot without restarting QEMU appends another.
pub fn ready_lines(log: &str) -> Vec<Ready> {
    log.lines().filter_map(Ready::from_line).collect()
}

/// The last `n` lines of `log`, with carriage returns and other control characters removed so
/// terminal escape sequences from the firmware do not garble an error message.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| clean(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Drops ANSI escape sequences and control characters.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.peek() == Some(&'[') {
                chars.next();
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(slot: &str, uptime_ms: u64) -> Ready {
        Ready {
            version: "0.1.0".into(),
            slot: slot.into(),
            hostname: "node0".into(),
            units: vec![],
            uptime_ms,
        }
    }

    #[test]
    fn finds_every_ready_line_among_noise() {
        let log = format!(
            "\x1b[2JBdsDxe: loading\r\n[    1.0] kernel\r\n{}\r\nlogin\r\n[ 9.9] {}\r\npartial CRUST-READY {{\"ver",
            ready("a", 4000).to_line(),
            ready("b", 3000).to_line()
        );
        let found = ready_lines(&log);
        assert_eq!(found, vec![ready("a", 4000), ready("b", 3000)]);
        assert!(ready_lines("").is_empty());
    }

    #[test]
    fn tail_is_clean() {
        let log = "one\r\ntwo\r\n\x1b[1m\x1b[33mthree\x1b[0m\r\n";
        assert_eq!(tail(log, 2), "two\nthree");
        assert_eq!(tail(log, 30), "one\ntwo\nthree");
        assert_eq!(tail("", 30), "");
    }
}
