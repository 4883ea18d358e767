//! Progress reporting: indicatif bars on a terminal, plain log lines with `--quiet` or when
//! stderr is not a terminal (CI logs stay readable).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    quiet: bool,
    bars: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            bars: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// A silent reporter, for tests and library callers.
    pub fn silent() -> Progress {
        Progress {
            quiet: true,
            bars: false,
        }
    }

    /// Starts a step; `total` is the amount of work in `unit`s when known.
    pub fn step(&self, name: &str, total: Option<u64>) -> Step {
        let bar = if self.bars {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let style = match total {
                Some(_) => ProgressStyle::with_template(
                    "{spinner} {msg:<28} [{bar:30}] {pos}/{len} ({elapsed})",
                ),
                None => ProgressStyle::with_template("{spinner} {msg:<28} ({elapsed})"),
            };
            if let Ok(style) = style {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name.to_string());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Some(bar)
        } else {
            None
        };
        Step {
            name: name.to_string(),
            bar,
            quiet: self.quiet,
            started: Instant::now(),
        }
    }

    /// A log line (suppressed by nothing: `--quiet` means "no bars", not "no output").
    pub fn log(&self, msg: &str) {
        if !self.quiet || !self.bars {
            eprintln!("{msg}");
        }
    }
}

pub struct Step {
    name: String,
    bar: Option<ProgressBar>,
    quiet: bool,
    started: Instant,
}

impl Step {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn set_message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{}: {msg}", self.name));
        }
    }

    /// Ends the step with a one-line summary.
    pub fn done(self, summary: &str) {
        let line = format!(
            "{:<28} {summary} ({:.1}s)",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if !self.quiet || self.bar.is_none() {
            eprintln!("{line}");
        }
    }
}
