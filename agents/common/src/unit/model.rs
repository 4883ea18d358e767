//! The validated unit: what each setting means, defaults, and the checks that span settings.

use super::command::{parse_command_line_with, Command};
use super::specifier::{expand, Host, UnitName};
use super::syntax::{parse, Entry, Section};
use super::value::{parse_bool, parse_environment_with, parse_rlimit, parse_timespan_ms, RLimit};
use super::{UnitError, Warning};

/// Default `RestartSec=` (systemd's default is 100 ms).
pub const DEFAULT_RESTART_MS: u64 = 100;
/// Default `TimeoutStartSec=`/`TimeoutStopSec=` (systemd's `DefaultTimeoutStartSec=`).
pub const DEFAULT_TIMEOUT_MS: u64 = 90_000;

/// The unit types this model loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnitType {
    #[default]
    Service,
    /// A synchronisation point: no process, only dependencies.
    Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// Active as soon as the process is forked.
    #[default]
    Simple,
    /// Active once the program was executed (exec succeeded).
    Exec,
    /// Active once the process exits with success; ExecStart= may hold several commands.
    Oneshot,
    /// Active once the process sends `READY=1` on `$NOTIFY_SOCKET`.
    Notify,
    /// Active once the started process exits; its forked child is the main process.
    Forking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    #[default]
    No,
    Always,
    OnSuccess,
    OnFailure,
    OnAbnormal,
    OnAbort,
    OnWatchdog,
}

/// How a service's main process ended, as far as `Restart=` cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Exited with this status.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
    /// A start or stop timeout hit.
    Timeout,
    /// The watchdog was not fed.
    Watchdog,
}

impl Termination {
    /// Exit status 0, or one of the signals systemd counts as a clean stop (HUP, INT, TERM,
    /// PIPE).
    pub fn is_clean(self) -> bool {
        match self {
            Termination::Exited(code) => code == 0,
            Termination::Signaled(sig) => {
                [libc_sig::HUP, libc_sig::INT, libc_sig::TERM, libc_sig::PIPE].contains(&sig)
            }
            Termination::Timeout | Termination::Watchdog => false,
        }
    }
}

/// Signal numbers on Linux (kept here so this crate needs no libc).
mod libc_sig {
    pub const HUP: i32 = 1;
    pub const INT: i32 = 2;
    pub const TERM: i32 = 15;
    pub const PIPE: i32 = 13;
}

impl Restart {
    /// Whether a service whose main process ended this way is started again (the table in
    /// systemd.service(5) under `Restart=`).
    pub fn should_restart(self, how: Termination) -> bool {
        use Termination::*;
        let clean = how.is_clean();
        match self {
            Restart::No => false,
            Restart::Always => true,
            Restart::OnSuccess => clean,
            Restart::OnFailure => !clean,
            Restart::OnAbnormal => matches!(how, Signaled(_) | Timeout | Watchdog) && !clean,
            Restart::OnAbort => matches!(how, Signaled(_)) && !clean,
            Restart::OnWatchdog => how == Watchdog,
        }
    }

    /// The coarse form: `success` = exit status 0, otherwise a non-zero exit status.
    pub fn applies(self, success: bool) -> bool {
        self.should_restart(Termination::Exited(if success { 0 } else { 1 }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KillMode {
    /// Every process in the unit's cgroup.
    #[default]
    ControlGroup,
    /// Only the main process.
    Process,
    /// SIGTERM to the main process, SIGKILL to the whole cgroup.
    Mixed,
    /// Nothing is killed.
    None,
}

/// What a condition checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    PathExists(String),
    PathIsDirectory(String),
    PathIsSymbolicLink(String),
    DirectoryNotEmpty(String),
    FileNotEmpty(String),
    FileIsExecutable(String),
}

impl Check {
    pub fn path(&self) -> &str {
        match self {
            Check::PathExists(p)
            | Check::PathIsDirectory(p)
            | Check::PathIsSymbolicLink(p)
            | Check::DirectoryNotEmpty(p)
            | Check::FileNotEmpty(p)
            | Check::FileIsExecutable(p) => p,
        }
    }
}

/// A `Condition…=` setting: `!` negates it, `|` makes it a trigger (at least one trigger must
/// hold, and every non-trigger must).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub check: Check,
    pub negate: bool,
    pub trigger: bool,
}

/// Whether a unit's conditions allow it to start, given how each check came out (`probe` does
/// the I/O; this stays pure). No conditions: true.
pub fn conditions_met(conditions: &[Condition], probe: &mut dyn FnMut(&Check) -> bool) -> bool {
    let mut any_trigger = false;
    let mut trigger_held = false;
    for c in conditions {
        let held = probe(&c.check) != c.negate;
        if c.trigger {
            any_trigger = true;
            trigger_held |= held;
        } else if !held {
            return false;
        }
    }
    !any_trigger || trigger_held
}

/// A path setting whose `-` prefix makes a missing path fine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionalPath {
    pub path: String,
    pub optional: bool,
}

/// A validated unit (service or target). Settings that do not apply to the unit's type keep
/// their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unit {
    /// Full name, e.g. `getty@tty1.service`.
    pub name: String,
    pub unit_type: UnitType,

    // [Unit]
    pub description: Option<String>,
    pub documentation: Vec<String>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub after: Vec<String>,
    pub before: Vec<String>,
    pub conflicts: Vec<String>,
    pub binds_to: Vec<String>,
    pub part_of: Vec<String>,
    pub conditions: Vec<Condition>,

    // [Service]
    pub kind: ServiceType,
    pub exec_start_pre: Vec<Command>,
    /// Exactly one command, except for `Type=oneshot` (one or more).
    pub exec_start: Vec<Command>,
    pub exec_start_post: Vec<Command>,
    pub exec_stop: Vec<Command>,
    pub exec_reload: Vec<Command>,
    /// `Environment=` assignments in order; later ones win when applied.
    pub environment: Vec<(String, String)>,
    /// Read at start, in order, after `environment` (their values win).
    pub environment_files: Vec<OptionalPath>,
    pub working_directory: Option<OptionalPath>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub restart: Restart,
    pub restart_ms: u64,
    /// `None`: no timeout (`infinity` or `0`).
    pub timeout_start_ms: Option<u64>,
    pub timeout_stop_ms: Option<u64>,
    pub kill_mode: KillMode,
    pub limit_nofile: Option<RLimit>,
    pub remain_after_exit: bool,
    /// `SendSIGHUP=`: a SIGHUP follows the stop signal (for shells, which ignore SIGTERM).
    pub send_sighup: bool,

    // [Install]
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,

    /// `[X-Fleet]` entries exactly as written (no specifier expansion): fleet interprets them.
    pub x_fleet: Vec<Entry>,
}

/// One file that contributes to a unit: the unit file itself or a drop-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Shown in diagnostics, e.g. `/etc/systemd/system/a.service.d/10-env.conf`.
    pub path: String,
    pub text: String,
}

impl Unit {
    /// Parses one unit file with no drop-ins and no host facts (`%m %H %b` are errors).
    pub fn from_text(name: &str, text: &str) -> Result<(Unit, Vec<Warning>), UnitError> {
        Unit::from_sources(
            name,
            &[Source {
                path: name.to_string(),
                text: text.to_string(),
            }],
            &Host::default(),
        )
    }

    /// Builds the unit `name` from its file followed by its drop-ins, in the order they apply.
    /// For an instance (`a@x.service`) the text is the template's; specifiers see the instance.
    pub fn from_sources(
        name: &str,
        sources: &[Source],
        host: &Host,
    ) -> Result<(Unit, Vec<Warning>), UnitError> {
        let invalid = |why: String| UnitError::Invalid {
            unit: name.to_string(),
            why,
        };
        let parsed = UnitName::parse(name).map_err(invalid)?;
        let unit_type = match parsed.kind.as_str() {
            "service" => UnitType::Service,
            "target" => UnitType::Target,
            other => {
                return Err(invalid(format!(
                    ".{other} units are not supported; only .service and .target are"
                )))
            }
        };
        if parsed.is_template() {
            return Err(invalid(
                "is a template; load an instance of it, e.g. NAME@INSTANCE.service".into(),
            ));
        }
        let mut b = Builder {
            unit: Unit {
                name: name.to_string(),
                unit_type,
                restart_ms: DEFAULT_RESTART_MS,
                ..Unit::default()
            },
            name: parsed,
            host,
            warnings: Vec::new(),
            exec_start_at: Vec::new(),
            timeout_start: None,
            timeout_stop: None,
        };
        for src in sources {
            let sections = parse(&src.text).map_err(|e| UnitError::Syntax {
                unit: src.path.clone(),
                line: e.line,
                why: e.why,
            })?;
            b.apply(&src.path, &sections)?;
        }
        b.finish()
    }
}

struct Builder<'a> {
    unit: Unit,
    name: UnitName,
    host: &'a Host,
    warnings: Vec<Warning>,
    /// Where each ExecStart= command came from, for the "more than one" error.
    exec_start_at: Vec<(String, usize)>,
    /// `Some(x)` once set; the default depends on Type=.
    timeout_start: Option<Option<u64>>,
    timeout_stop: Option<Option<u64>>,
}

impl Builder<'_> {
    fn apply(&mut self, file: &str, sections: &[Section]) -> Result<(), UnitError> {
        for section in sections {
            let name = section.name.as_str();
            let known = match (name, self.unit.unit_type) {
                ("Unit" | "Install", _) | ("Service", UnitType::Service) => true,
                ("X-Fleet", _) => {
                    self.unit.x_fleet.extend(section.entries.iter().cloned());
                    continue;
                }
                // systemd ignores X- sections silently: they belong to other tools.
                (n, _) if n.starts_with("X-") => continue,
                _ => false,
            };
            if !known {
                let why = if name == "Service" {
                    "[Service] does not belong in a .target and is ignored".to_string()
                } else {
                    format!("unknown section [{name}] is ignored")
                };
                self.warn(file, section.line, why);
                continue;
            }
            for e in &section.entries {
                self.entry(file, name, e)?;
            }
        }
        Ok(())
    }

    fn warn(&mut self, file: &str, line: usize, why: String) {
        self.warnings.push(Warning {
            file: file.to_string(),
            line,
            why,
        });
    }

    fn entry(&mut self, file: &str, section: &str, e: &Entry) -> Result<(), UnitError> {
        let err = |why: String| UnitError::Syntax {
            unit: file.to_string(),
            line: e.line,
            why: format!("{}={}: {why}", e.key, e.value),
        };
        let key = e.key.as_str();
        // systemd ignores X- keys silently: they are extensions for other tools.
        if key.starts_with("X-") {
            return Ok(());
        }
        if !is_known(section, key) {
            let why = if key.starts_with("Condition") {
                format!("{key}= is not supported and is ignored; the unit starts as if it held")
            } else {
                format!("[{section}] {key}= is not supported and is ignored")
            };
            self.warn(file, e.line, why);
            return Ok(());
        }
        // Command lines and environment assignments expand specifiers word by word after
        // unquoting, as systemd does; everything else expands the whole value.
        let per_word = matches!(
            key,
            "ExecStartPre"
                | "ExecStart"
                | "ExecStartPost"
                | "ExecStop"
                | "ExecReload"
                | "Environment"
        );
        let (name, host) = (&self.name, self.host);
        let mut resolve = |w: String| expand(&w, name, host);
        let v = if per_word {
            e.value.clone()
        } else {
            expand(&e.value, name, host).map_err(&err)?
        };
        let v = v.as_str();
        let u = &mut self.unit;
        match (section, e.key.as_str()) {
            ("Unit", "Description") => u.description = non_empty(v),
            ("Unit", "Documentation") => list(&mut u.documentation, v),
            ("Unit", "Requires") => list(&mut u.requires, v),
            ("Unit", "Wants") => list(&mut u.wants, v),
            ("Unit", "After") => list(&mut u.after, v),
            ("Unit", "Before") => list(&mut u.before, v),
            ("Unit", "Conflicts") => list(&mut u.conflicts, v),
            ("Unit", "BindsTo") => list(&mut u.binds_to, v),
            ("Unit", "PartOf") => list(&mut u.part_of, v),
            ("Unit", k) if k.starts_with("Condition") => {
                if v.is_empty() {
                    // systemd: an empty Condition…= resets every condition
                    u.conditions.clear();
                    return Ok(());
                }
                let make: fn(String) -> Check = match &k["Condition".len()..] {
                    "PathExists" => Check::PathExists,
                    "PathIsDirectory" => Check::PathIsDirectory,
                    "PathIsSymbolicLink" => Check::PathIsSymbolicLink,
                    "DirectoryNotEmpty" => Check::DirectoryNotEmpty,
                    "FileNotEmpty" => Check::FileNotEmpty,
                    "FileIsExecutable" => Check::FileIsExecutable,
                    _ => return Ok(()),
                };
                let mut rest = v;
                let mut trigger = false;
                let mut negate = false;
                loop {
                    if let Some(r) = rest.strip_prefix('|').filter(|_| !trigger) {
                        trigger = true;
                        rest = r.trim_start();
                    } else if let Some(r) = rest.strip_prefix('!').filter(|_| !negate) {
                        negate = true;
                        rest = r.trim_start();
                    } else {
                        break;
                    }
                }
                if !rest.starts_with('/') {
                    return Err(err(format!(
                        "{rest:?} is not an absolute path (prefixes: | trigger, ! negate)"
                    )));
                }
                u.conditions.push(Condition {
                    check: make(rest.to_string()),
                    negate,
                    trigger,
                });
            }
            ("Service", "Type") => {
                u.kind = match v {
                    "" | "simple" => ServiceType::Simple,
                    "exec" => ServiceType::Exec,
                    "oneshot" => ServiceType::Oneshot,
                    "notify" => ServiceType::Notify,
                    "forking" => ServiceType::Forking,
                    _ => {
                        return Err(err(
                            "not supported; use simple, exec, oneshot, notify or forking".into(),
                        ))
                    }
                }
            }
            ("Service", k @ ("ExecStartPre" | "ExecStart" | "ExecStartPost" | "ExecStop" | "ExecReload")) => {
                let cmds = if v.is_empty() {
                    Vec::new()
                } else {
                    parse_command_line_with(v, &mut resolve).map_err(&err)?
                };
                let target = match k {
                    "ExecStartPre" => &mut u.exec_start_pre,
                    "ExecStart" => &mut u.exec_start,
                    "ExecStartPost" => &mut u.exec_start_post,
                    "ExecStop" => &mut u.exec_stop,
                    _ => &mut u.exec_reload,
                };
                if v.is_empty() {
                    target.clear();
                    if k == "ExecStart" {
                        self.exec_start_at.clear();
                    }
                    return Ok(());
                }
                if k == "ExecStart" {
                    self.exec_start_at
                        .extend(cmds.iter().map(|_| (file.to_string(), e.line)));
                }
                target.extend(cmds);
            }
            ("Service", "Environment") => {
                if v.is_empty() {
                    u.environment.clear();
                } else {
                    u.environment.extend(parse_environment_with(v, &mut resolve).map_err(&err)?);
                }
            }
            ("Service", "EnvironmentFile") => {
                if v.is_empty() {
                    u.environment_files.clear();
                } else {
                    u.environment_files.push(optional_path(v).map_err(&err)?);
                }
            }
            ("Service", "WorkingDirectory") => {
                u.working_directory = if v.is_empty() {
                    None
                } else if v == "~" || v == "-~" {
                    Some(OptionalPath {
                        path: "~".into(),
                        optional: v.starts_with('-'),
                    })
                } else {
                    Some(optional_path(v).map_err(&err)?)
                }
            }
            ("Service", "User") => u.user = non_empty(v),
            ("Service", "Group") => u.group = non_empty(v),
            ("Service", "Restart") => {
                u.restart = match v {
                    "" | "no" => Restart::No,
                    "always" => Restart::Always,
                    "on-success" => Restart::OnSuccess,
                    "on-failure" => Restart::OnFailure,
                    "on-abnormal" => Restart::OnAbnormal,
                    "on-abort" => Restart::OnAbort,
                    "on-watchdog" => Restart::OnWatchdog,
                    _ => return Err(err(
                        "not supported; use no, always, on-success, on-failure, on-abnormal, on-abort or on-watchdog".into(),
                    )),
                }
            }
            ("Service", "RestartSec") => {
                u.restart_ms = if v.is_empty() {
                    DEFAULT_RESTART_MS
                } else {
                    parse_timespan_ms(v)
                        .map_err(&err)?
                        .ok_or_else(|| err("infinity is not a restart delay".into()))?
                }
            }
            ("Service", k @ ("TimeoutStartSec" | "TimeoutStopSec" | "TimeoutSec")) => {
                let t = if v.is_empty() {
                    None
                } else {
                    // 0 disables the timeout, like infinity
                    Some(parse_timespan_ms(v).map_err(&err)?.filter(|&ms| ms > 0))
                };
                if k != "TimeoutStopSec" {
                    self.timeout_start = t;
                }
                if k != "TimeoutStartSec" {
                    self.timeout_stop = t;
                }
            }
            ("Service", "KillMode") => {
                u.kill_mode = match v {
                    "" | "control-group" => KillMode::ControlGroup,
                    "process" => KillMode::Process,
                    "mixed" => KillMode::Mixed,
                    "none" => KillMode::None,
                    _ => {
                        return Err(err(
                            "not supported; use control-group, process, mixed or none".into(),
                        ))
                    }
                }
            }
            ("Service", "LimitNOFILE") => {
                u.limit_nofile = if v.is_empty() {
                    None
                } else {
                    Some(parse_rlimit(v).map_err(&err)?)
                }
            }
            ("Service", "RemainAfterExit") => {
                u.remain_after_exit = match v {
                    "" => false,
                    v => parse_bool(v).ok_or_else(|| err("not a boolean; use yes or no".into()))?,
                };
            }
            ("Service", "SendSIGHUP") => {
                u.send_sighup = match v {
                    "" => false,
                    v => parse_bool(v).ok_or_else(|| err("not a boolean; use yes or no".into()))?,
                };
            }
            ("Install", "WantedBy") => list(&mut u.wanted_by, v),
            ("Install", "RequiredBy") => list(&mut u.required_by, v),
            ("Install", "Alias") => list(&mut u.alias, v),
            ("Install", "Also") => list(&mut u.also, v),
            // is_known() and this match list the same keys
            _ => {}
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(Unit, Vec<Warning>), UnitError> {
        let u = &mut self.unit;
        let invalid = |why: &str| UnitError::Invalid {
            unit: u.name.clone(),
            why: why.to_string(),
        };
        if u.unit_type == UnitType::Service {
            if u.exec_start.is_empty() {
                return Err(invalid(
                    "[Service] has no ExecStart=; add the command to run",
                ));
            }
            if u.kind != ServiceType::Oneshot && u.exec_start.len() > 1 {
                let (file, line) = self.exec_start_at[1].clone();
                return Err(UnitError::Syntax {
                    unit: file,
                    line,
                    why: format!(
                        "a second ExecStart= command (first at {}:{}); only Type=oneshot may have several — reset with an empty ExecStart= first in a drop-in",
                        self.exec_start_at[0].0, self.exec_start_at[0].1
                    ),
                });
            }
            let default_start = if u.kind == ServiceType::Oneshot {
                None
            } else {
                Some(DEFAULT_TIMEOUT_MS)
            };
            u.timeout_start_ms = self.timeout_start.unwrap_or(default_start);
            u.timeout_stop_ms = self.timeout_stop.unwrap_or(Some(DEFAULT_TIMEOUT_MS));
        }
        Ok((self.unit, self.warnings))
    }
}

/// The settings this model interprets; anything else warns.
fn is_known(section: &str, key: &str) -> bool {
    let keys: &[&str] = match section {
        "Unit" => &[
            "Description",
            "Documentation",
            "Requires",
            "Wants",
            "After",
            "Before",
            "Conflicts",
            "BindsTo",
            "PartOf",
            "ConditionPathExists",
            "ConditionPathIsDirectory",
            "ConditionPathIsSymbolicLink",
            "ConditionDirectoryNotEmpty",
            "ConditionFileNotEmpty",
            "ConditionFileIsExecutable",
        ],
        "Service" => &[
            "Type",
            "ExecStartPre",
            "ExecStart",
            "ExecStartPost",
            "ExecStop",
            "ExecReload",
            "Environment",
            "EnvironmentFile",
            "WorkingDirectory",
            "User",
            "Group",
            "Restart",
            "RestartSec",
            "TimeoutStartSec",
            "TimeoutStopSec",
            "TimeoutSec",
            "KillMode",
            "LimitNOFILE",
            "RemainAfterExit",
            "SendSIGHUP",
        ],
        "Install" => &["WantedBy", "RequiredBy", "Alias", "Also"],
        _ => &[],
    };
    keys.contains(&key)
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

/// Space-separated list values accumulate; an empty assignment resets the list (systemd rule).
fn list(into: &mut Vec<String>, value: &str) {
    if value.is_empty() {
        into.clear();
    }
    for word in value.split_whitespace() {
        if !into.iter().any(|w| w == word) {
            into.push(word.to_string());
        }
    }
}

/// `/abs/path` or `-/abs/path`.
fn optional_path(v: &str) -> Result<OptionalPath, String> {
    let (optional, path) = match v.strip_prefix('-') {
        Some(p) => (true, p),
        None => (false, v),
    };
    if !path.starts_with('/') {
        return Err(format!(
            "{path:?} is not an absolute path; a leading - makes a missing file fine"
        ));
    }
    Ok(OptionalPath {
        path: path.to_string(),
        optional,
    })
}
