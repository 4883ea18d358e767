//! `crust channel list|show`: the channels of a repository and their releases, read through the
//! same TUF client machines use (so a repository that lists fine here also verifies there).

use crust_channels::release;
use crust_channels::tuf::{self, parse_time, Seen, Source, TufError};
use crust_channels::Channel;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct ChannelArgs {
    #[command(subcommand)]
    pub command: ChannelCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ChannelCommand {
    /// One line per channel: latest release, number of releases, timestamp expiry.
    List {
        #[arg(long, default_value = "repo")]
        repo: PathBuf,
    },
    /// A channel's releases and metadata versions.
    Show {
        channel: Channel,
        #[arg(long, default_value = "repo")]
        repo: PathBuf,
    },
}

/// A channel repository's metadata directory as a TUF source.
pub struct DirSource(pub PathBuf);

impl Source for DirSource {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Option<Vec<u8>>, TufError> {
        let p = self.0.join(file);
        match std::fs::metadata(&p) {
            Ok(m) if m.len() > max => Err(TufError::TooLarge {
                file: file.into(),
                max,
            }),
            Ok(_) => std::fs::read(&p).map(Some).map_err(|e| TufError::Fetch {
                file: file.into(),
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TufError::Fetch {
                file: file.into(),
                why: e.to_string(),
            }),
        }
    }
}

/// Verifies a channel repository as a new machine would and returns its releases.
pub fn verified(
    repo: &Path,
    channel: Channel,
    now: u64,
) -> Result<(tuf::Trusted, Vec<release::Release>, tuf::Targets), anyhow::Error> {
    let meta = repo.join(channel.name()).join("metadata");
    let root = std::fs::read(meta.join("1.root.json"))
        .or_else(|_| std::fs::read(meta.join("root.json")))?;
    let mut t = tuf::Trusted::new(&root, Seen::default())?;
    let targets = t.refresh(&mut DirSource(meta), now)?;
    let rels = release::releases(&targets)?;
    Ok((t, rels, targets))
}

pub fn run(args: &ChannelArgs) -> anyhow::Result<String> {
    let now = crate::keys::now();
    let mut out = String::new();
    match &args.command {
        ChannelCommand::List { repo } => {
            for ch in Channel::ALL {
                if !repo.join(ch.name()).join("metadata").is_dir() {
                    let _ = writeln!(out, "{ch:<7} (not published)");
                    continue;
                }
                match verified(repo, ch, now) {
                    Ok((_, rels, _)) => {
                        let latest = rels
                            .last()
                            .map_or("-".to_string(), |r| r.info.version.to_string());
                        let _ =
                            writeln!(out, "{ch:<7} latest {latest:<12} {} release(s)", rels.len());
                    }
                    Err(e) => {
                        let _ = writeln!(out, "{ch:<7} INVALID: {e:#}");
                    }
                }
            }
        }
        ChannelCommand::Show { channel, repo } => {
            let (t, rels, targets) = verified(repo, *channel, now)?;
            let meta = repo.join(channel.name()).join("metadata");
            let ts: tuf::Timestamp = tuf::parse_unverified(
                "timestamp.json",
                &std::fs::read(meta.join("timestamp.json"))?,
            )?;
            let left = parse_time(&ts.expires)?.saturating_sub(now);
            let _ = writeln!(
                out,
                "channel {channel}: root v{}, targets v{}, snapshot v{}, timestamp v{} (expires {}, in {}s)",
                t.root.version, targets.version, t.seen.snapshot, ts.version, ts.expires, left
            );
            for r in rels.iter().rev() {
                let waves: Vec<String> = r
                    .info
                    .rollout
                    .iter()
                    .map(|w| format!("{}%@+{}s", w.percent, w.after))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {:<12} published {}  usr {} bytes  usrhash {}  rollout [{}]{}",
                    r.info.version.to_string(),
                    tuf::format_time(r.info.published),
                    r.usr.length,
                    &r.info.usrhash[..16.min(r.info.usrhash.len())],
                    waves.join(" "),
                    r.info
                        .min_version
                        .map_or(String::new(), |m| format!("  min {m}"))
                );
            }
        }
    }
    Ok(out)
}
