//! Choosing between KVM and TCG.
//!
//! `/dev/kvm` existing says little: on some hosts `-cpu host` aborts ("failed to set MSR 0x10a")
//! and plain KVM crashes the guest in the firmware. So KVM is only chosen after a short probe
//! boots OVMF under it and sees the firmware print to the serial port. `CRUST_ACCEL=tcg|kvm`
//! skips the probe.

use crate::error::{Error, Result};
use crate::tools::Tools;
use serde::{Deserialize, Serialize};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the probe may take; working KVM reaches the firmware's first output in well under
/// a second.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    /// QEMU arguments selecting this accelerator.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Tcg => &["-accel", "tcg"],
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// The accelerator and why it was chosen (for the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub accel: Accel,
    pub reason: String,
}

/// Parses `CRUST_ACCEL`; unset or empty means "probe".
pub fn parse_override(value: Option<&str>) -> Result<Option<Accel>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some("tcg") => Ok(Some(Accel::Tcg)),
        Some("kvm") => Ok(Some(Accel::Kvm)),
        Some(other) => Err(Error::Invalid {
            what: "CRUST_ACCEL",
            value: other.into(),
            reason: "use tcg or kvm, or unset it to probe".into(),
        }),
    }
}

/// The accelerator for this process: the override, else a probe done once and remembered.
pub fn detect(tools: &Tools) -> Result<Choice> {
    let env = std::env::var("CRUST_ACCEL").ok();
    if let Some(accel) = parse_override(env.as_deref())? {
        return Ok(Choice {
            accel,
            reason: "set by CRUST_ACCEL".into(),
        });
    }
    static PROBED: OnceLock<Choice> = OnceLock::new();
    Ok(PROBED.get_or_init(|| probe(tools)).clone())
}

fn probe(tools: &Tools) -> Choice {
    let tcg = |reason: String| Choice {
        accel: Accel::Tcg,
        reason,
    };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return tcg(format!("/dev/kvm is not usable ({e})"));
    }
    match probe_kvm(tools) {
        Ok(()) => Choice {
            accel: Accel::Kvm,
            reason: "a probe guest booted under KVM".into(),
        },
        Err(why) => tcg(format!("KVM probe failed: {why}")),
    }
}

/// Boots OVMF (no disk) under KVM until it prints anything on the serial port.
fn probe_kvm(tools: &Tools) -> std::result::Result<(), String> {
    let dir = std::env::temp_dir().join(format!("crust-kvm-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let result = (|| {
        let vars = dir.join("vars.fd");
        std::fs::copy(&tools.ovmf_vars, &vars).map_err(|e| format!("copying OVMF vars: {e}"))?;
        let serial = dir.join("serial.log");
        let errlog = dir.join("qemu.log");
        let err = std::fs::File::create(&errlog).map_err(|e| e.to_string())?;
        let mut child = Command::new(&tools.qemu)
            .args(Accel::Kvm.args())
            .args(["-machine", "q35", "-m", "128", "-display", "none"])
            .args(["-nodefaults", "-no-reboot"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,readonly=on,file={}",
                qemu_opt(&tools.ovmf_code.display().to_string())
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,file={}",
                qemu_opt(&vars.display().to_string())
            ))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", tools.qemu.display()))?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let outcome = loop {
            let stderr = std::fs::read_to_string(&errlog).unwrap_or_default();
            if stderr.contains("KVM internal error") || stderr.contains("emulation failure") {
                break Err("the guest crashed (KVM internal error)".to_string());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let first = stderr
                    .lines()
                    .find(|l| !l.contains("warning"))
                    .unwrap_or("");
                break Err(format!("qemu exited ({status}) {first}").trim().to_string());
            }
            if std::fs::metadata(&serial)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
            {
                break Ok(());
            }
            if Instant::now() >= deadline {
                break Err(format!("no firmware output within {PROBE_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = child.kill();
        let _ = child.wait();
        outcome
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Escapes a value for a QEMU `key=value,...` option (a comma is written twice).
pub fn qemu_opt(value: &str) -> String {
    value.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides() {
        assert_eq!(parse_override(None).ok(), Some(None));
        assert_eq!(parse_override(Some("")).ok(), Some(None));
        assert_eq!(parse_override(Some("tcg")).ok(), Some(Some(Accel::Tcg)));
        assert_eq!(parse_override(Some(" kvm ")).ok(), Some(Some(Accel::Kvm)));
        assert!(parse_override(Some("hvf")).is_err());
    }

    #[test]
    fn args_and_escaping() {
        assert_eq!(Accel::Tcg.args(), ["-accel", "tcg"]);
        assert!(Accel::Kvm.args().contains(&"host"));
        assert_eq!(qemu_opt("/a,b/c"), "/a,,b/c");
    }
}
