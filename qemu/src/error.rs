//! The one error type of this crate. Each message names the thing and, where there is one, what
//! to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host tool is missing and could not be installed here.
    #[error("{what} not found; install it with `{command}`")]
    ToolMissing { what: String, command: String },

    /// Installing the host tools with apt failed.
    #[error("`{command}` failed ({status}); run it by hand and retry")]
    InstallFailed { command: String, status: String },

    #[error("image {0} not found; build one with `crust build` or pass --image")]
    ImageMissing(PathBuf),

    #[error("{path} is not a crust image: {reason}")]
    NotCrustImage { path: PathBuf, reason: String },

    #[error("cluster {name:?} is already up; run `crust cluster down --name {name}` first")]
    ClusterUp { name: String },

    #[error("no cluster named {name:?} (looked in {dir}); start one with `crust cluster up`")]
    ClusterNotFound { name: String, dir: PathBuf },

    #[error("cluster {cluster:?} has no node {node:?}; nodes are {known}")]
    NodeNotFound {
        cluster: String,
        node: String,
        known: String,
    },

    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("qemu for {node} did not start: {detail}")]
    QemuStart { node: String, detail: String },

    #[error("qemu for {node} is not running; start it with `crust cluster start {node}`")]
    NotRunning { node: String },

    #[error("qemu for {node} exited before it was ready; console log {log}, last lines:\n{tail}")]
    QemuExited {
        node: String,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "{node} printed no ready line #{nth} within {secs} s; console log {log}, last lines:\n{tail}"
    )]
    ReadyTimeout {
        node: String,
        nth: usize,
        secs: u64,
        log: PathBuf,
        tail: String,
    },

    #[error("command on {node} did not finish within {secs} s: {cmd}")]
    ExecTimeout {
        node: String,
        secs: u64,
        cmd: String,
    },

    #[error("shell socket of {node} closed while running: {cmd}")]
    ShellClosed { node: String, cmd: String },

    #[error("could not stop qemu pid {pid} of {node}: {detail}")]
    Stop {
        node: String,
        pid: i32,
        detail: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for wrapping an `io::Error` with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
