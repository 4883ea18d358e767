//! `crust validate-config FILE`: checks a coreos-cloudinit `#cloud-config` on the host with the
//! same validator the guest uses (`crust_common::cloudconfig`), and prints compiler-style
//! `FILE:LINE:COL: severity: message` lines and a summary.

use crust_common::cloudconfig::{self, Validation};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ValidateError {
    #[error("cannot read {}: {source}; check the path", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not UTF-8 text; a cloud-config is a YAML text file", path.display())]
    NotText { path: PathBuf },
}

/// What to print, and whether the file is usable (no errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub text: String,
    pub ok: bool,
}

/// The report for `contents`, naming the file `name`. Pure: no I/O.
pub fn report(name: &str, contents: &str) -> Report {
    let v: Validation = cloudconfig::validate(contents);
    Report {
        text: v.render(name),
        ok: v.is_ok(),
    }
}

/// Reads `path` and reports on it.
pub fn run(path: &Path) -> Result<Report, ValidateError> {
    let bytes = std::fs::read(path).map_err(|source| ValidateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let contents = String::from_utf8(bytes).map_err(|_| ValidateError::NotText {
        path: path.to_path_buf(),
    })?;
    Ok(report(&path.display().to_string(), &contents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_warnings_are_listed_with_the_file_name() {
        let r = report(
            "node.yaml",
            "#cloud-config\nhostnam: a\nwrite_files:\n  - path: /usr/lib/x\n",
        );
        assert!(!r.ok);
        let lines: Vec<&str> = r.text.lines().collect();
        assert_eq!(lines.len(), 3, "{}", r.text);
        assert!(
            lines[0].starts_with("node.yaml:2:1: warning: unrecognized key \"hostnam\""),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("node.yaml:4:11: error: invalid path \"/usr/lib/x\""),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "node.yaml: invalid cloud-config: 1 error, 1 warning"
        );
    }

    #[test]
    fn summaries() {
        let cases: &[(&str, bool, &str)] = &[
            (
                "#cloud-config\nhostname: a\n",
                true,
                "f: valid cloud-config\n",
            ),
            (
                "#cloud-config\nhostname: a\nx: 1\ny: 2\n",
                true,
                "valid cloud-config (2 warnings)",
            ),
            ("#!/bin/sh\necho hi\n", true, "a user-data script"),
            ("", true, "f: empty; it configures nothing"),
            ("hostname: a\n", false, "f: not a cloud-config"),
            (
                "#cloud-config\nwrite_files: x\nusers: y\n",
                false,
                "invalid cloud-config: 2 errors\n",
            ),
        ];
        for (text, ok, fragment) in cases {
            let r = report("f", text);
            assert_eq!(r.ok, *ok, "{text:?}: {}", r.text);
            assert!(r.text.contains(fragment), "{text:?}: {}", r.text);
        }
    }

    #[test]
    fn run_reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "#cloud-config\nhostname: a\n").expect("write");
        assert!(run(&good).expect("readable").ok);
        let missing = dir.path().join("missing.yaml");
        let e = run(&missing).expect_err("missing");
        assert!(e.to_string().contains("missing.yaml"), "{e}");
        let binary = dir.path().join("bin");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
        assert!(matches!(run(&binary), Err(ValidateError::NotText { .. })));
    }

    #[test]
    fn bundled_fixtures_are_clean() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../agents/common/fixtures/cloud-config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fixtures dir") {
            let path = entry.expect("entry").path();
            let r = run(&path).expect("readable");
            assert!(r.ok, "{}", r.text);
            assert_eq!(r.text.lines().count(), 1, "{}", r.text);
            seen += 1;
        }
        assert!(seen >= 4);
    }
}
