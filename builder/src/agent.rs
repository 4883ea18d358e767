//! Builds the multi-call `crust-agent` binary that goes into every image.
//!
//! It is built statically (glibc with `+crt-static`) because the same file is `/init` in the
//! initramfs, where no shared libraries exist. `--target` is passed explicitly so the static
//! flag applies only to the target artifacts, not to proc-macros and build scripts (which cannot
//! be static). A target directory of its own keeps a nested build (from `cargo test`) from
//! waiting on the outer cargo's lock.

use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";
pub const PROFILE: &str = "image";

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("cannot run cargo to build crust-agent: {0}; install Rust (rustup) or set CRUST_AGENT_BIN to a prebuilt static crust-agent")]
    Spawn(std::io::Error),
    #[error(
        "building crust-agent failed (cargo exited with {status}); the output above shows why"
    )]
    Failed { status: std::process::ExitStatus },
    #[error("CRUST_AGENT_BIN={0:?} does not exist")]
    Missing(PathBuf),
    #[error(
        "crust source tree not found at {0:?}: run crust from its checkout or set CRUST_SOURCE_DIR"
    )]
    NoSource(PathBuf),
}

/// The workspace the running `crust` was built from (`CRUST_SOURCE_DIR` overrides).
pub fn source_dir() -> PathBuf {
    match std::env::var_os("CRUST_SOURCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    }
}

/// Returns the path of a freshly built (or `CRUST_AGENT_BIN`-given) static crust-agent.
pub fn build(offline: bool) -> Result<PathBuf, AgentError> {
    if let Some(bin) = std::env::var_os("CRUST_AGENT_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(AgentError::Missing(bin))
        };
    }
    let src = source_dir();
    if !src.join("agents/crust-agent/Cargo.toml").is_file() {
        return Err(AgentError::NoSource(src));
    }
    let target_dir = src.join("target/image-agent");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // A nested cargo (under `cargo test` or `cargo run`) must not inherit the outer build's
    // settings: they would redirect or rebuild the wrong thing.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&k);
        }
    }
    cmd.current_dir(&src)
        .args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "crust-agent",
            "--profile",
            PROFILE,
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
    if offline {
        cmd.arg("--offline");
    }
    let status = cmd.status().map_err(AgentError::Spawn)?;
    if !status.success() {
        return Err(AgentError::Failed { status });
    }
    Ok(target_dir.join(TARGET).join(PROFILE).join("crust-agent"))
}
