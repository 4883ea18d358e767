//! The I/O around the state machine: fetching and verifying channel metadata over HTTP,
//! streaming the payload into the inactive USR partition with resume, verifying it, and
//! activating the slot (kernel + initrd on the ESP, a loader entry with one try, gptprio).
//!
//! Every path is injectable ([`Paths`]), so host tests run this against a temporary file that
//! stands in for the disk. The slot written is always the one that did *not* boot, checked
//! against the GPT before the first byte is written.

use crate::conf::UpdateConf;
use crate::engine::Candidate;
use crate::http::{self, HttpError, Url};
use crate::rollout::{self, Rollout};
use crust_channels::release::{self, Release};
use crust_channels::tuf::{Seen, Source, Trusted, TufError};
use crust_channels::Version;
use crust_common::slot::gpt::{self, GptError, UsrPartition};
use crust_common::slot::{self, EntryName, Slot};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where things are on a machine; tests point these into a temporary directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The whole disk holding the GPT and both USR partitions (a block device, or a file).
    pub disk: PathBuf,
    /// The mounted ESP (`/boot`).
    pub esp: PathBuf,
    /// update-engine's state (`/var/lib/crust/update-engine`).
    pub state: PathBuf,
    /// The image's root of trust (`/usr/share/crust/update/root.json`).
    pub root_of_trust: PathBuf,
    pub machine_id: PathBuf,
}

impl Paths {
    pub fn machine(disk: PathBuf) -> Paths {
        Paths {
            disk,
            esp: "/boot".into(),
            state: "/var/lib/crust/update-engine".into(),
            root_of_trust: "/usr/share/crust/update/root.json".into(),
            machine_id: "/etc/machine-id".into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error(transparent)]
    Tuf(#[from] TufError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error(transparent)]
    Verity(#[from] crate::verity::VerityCheckError),
    #[error("{what} {path:?}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("the root of trust {0:?} is missing: the image was built without `crust build --keys`, so it cannot verify updates")]
    NoRoot(PathBuf),
    #[error("the payload is {len} bytes but USR-{slot} holds only {size}: this release does not fit this disk")]
    TooBig { len: u64, size: u64, slot: String },
    #[error("refusing to write slot {0}: it is the slot that booted")]
    ActiveSlot(Slot),
    #[error("USR-A and USR-B overlap in the GPT: refusing to write")]
    Overlap,
    #[error("{what} has sha256 {got}, the signed metadata says {want}: refused")]
    Hash {
        what: String,
        got: String,
        want: String,
    },
    #[error("the download of {0} is not complete")]
    Incomplete(Version),
    #[error("download stopped after {0} bytes (it resumes from there)")]
    Interrupted(u64),
    #[error("{url}: the server sent {got} bytes, {want} expected")]
    Short { url: String, got: u64, want: u64 },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ApplyError + 'a {
    move |source| ApplyError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// TUF metadata over HTTP from `SERVER/GROUP/metadata/`.
pub struct HttpSource {
    pub base: Url,
}

impl Source for HttpSource {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Option<Vec<u8>>, TufError> {
        let url = self.base.join(file);
        let fail = |why: String| TufError::Fetch {
            file: file.to_string(),
            why,
        };
        let resp = http::get(&url, None).map_err(|e| fail(e.to_string()))?;
        match resp.status {
            200 => {}
            404 => return Ok(None),
            s => return Err(fail(format!("HTTP status {s} from {url}"))),
        }
        if resp.length.is_some_and(|l| l > max) {
            return Err(TufError::TooLarge {
                file: file.to_string(),
                max,
            });
        }
        let mut out = Vec::new();
        resp.body
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| fail(e.to_string()))?;
        if out.len() as u64 > max {
            return Err(TufError::TooLarge {
                file: file.to_string(),
                max,
            });
        }
        Ok(Some(out))
    }
}

/// Progress of the payload download, persisted so a reboot or a cut connection resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DownloadState {
    version: Option<Version>,
    sha256: String,
    /// Bytes written to the slot and synced.
    written: u64,
    /// sha256 of the whole payload once complete.
    done_sha256: Option<String>,
}

/// Written after activation: which version the new slot holds (boot assessment reads it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub version: Version,
    pub slot: String,
    pub from: Version,
}

pub const PENDING: &str = "pending.json";
const DOWNLOAD: &str = "download.json";
const SYNC_EVERY: u64 = 4 << 20;

pub struct Updater {
    pub paths: Paths,
    pub booted: Slot,
    pub current: Version,
    /// Stop a download after this many bytes in one run (tests simulate a cut connection).
    pub cut_after: Option<u64>,
}

impl Updater {
    fn state(&self, name: &str) -> PathBuf {
        self.paths.state.join(name)
    }

    fn write_state(&self, name: &str, bytes: &[u8]) -> Result<(), ApplyError> {
        let p = self.state(name);
        std::fs::create_dir_all(&self.paths.state).map_err(io("creating", &self.paths.state))?;
        let tmp = p.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(io("writing", &tmp))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io("renaming", &p))
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Option<T> {
        serde_json::from_slice(&std::fs::read(self.state(name)).ok()?).ok()
    }

    fn target_slot(&self) -> Slot {
        self.booted.other()
    }

    /// Refreshes the channel's TUF metadata and returns its newest release.
    pub fn fetch(&self, conf: &UpdateConf, now_wall: u64) -> Result<Option<Release>, ApplyError> {
        let stored = self.state("root.json");
        let root = match std::fs::read(&stored) {
            Ok(r) => r,
            Err(_) => std::fs::read(&self.paths.root_of_trust)
                .map_err(|_| ApplyError::NoRoot(self.paths.root_of_trust.clone()))?,
        };
        let seen_file = format!("seen-{}.json", conf.group);
        let seen: Seen = self.read_json(&seen_file).unwrap_or_default();
        let mut trusted = Trusted::new(&root, seen)?;
        let base = Url::parse(&conf.server)?.join(&format!("{}/metadata/", conf.group));
        let result = trusted.refresh(&mut HttpSource { base }, now_wall);
        // A verified root rotation is kept even when a later step fails.
        if trusted.root_raw != root {
            self.write_state("root.json", &trusted.root_raw)?;
        }
        let targets = result?;
        self.write_state(
            &seen_file,
            &serde_json::to_vec(&trusted.seen).unwrap_or_default(),
        )?;
        Ok(release::latest(&targets)?)
    }

    /// The engine's view of a release for this machine (rollout wave included).
    pub fn candidate(&self, rel: &Release, now_wall: u64, now_mono: u64) -> Candidate {
        let id = std::fs::read_to_string(&self.paths.machine_id).unwrap_or_default();
        let wait_until = match rollout::decide(
            &id,
            &rel.info.version,
            rel.info.published,
            &rel.info.rollout,
            now_wall,
        ) {
            Rollout::Eligible => None,
            Rollout::Wait(None) => Some(u64::MAX),
            Rollout::Wait(Some(at)) => Some(now_mono + at.saturating_sub(now_wall)),
        };
        Candidate {
            version: rel.info.version,
            length: rel.usr.length,
            min_version: rel.info.min_version,
            wait_until,
        }
    }

    fn open_disk(&self) -> Result<(File, UsrPartition), ApplyError> {
        let p = &self.paths.disk;
        let mut disk = OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .map_err(io("opening the disk", p))?;
        let parts = gpt::read_usr(&mut disk)?;
        let target = self.target_slot();
        if target == self.booted {
            return Err(ApplyError::ActiveSlot(target));
        }
        let [a, b] = parts;
        if a.first_lba <= b.last_lba && b.first_lba <= a.last_lba {
            return Err(ApplyError::Overlap);
        }
        let part = if target == Slot::A { a } else { b };
        Ok((disk, part))
    }

    fn base(&self, conf: &UpdateConf, group: &str) -> Result<Url, ApplyError> {
        Ok(Url::parse(&conf.server)?.join(&format!("{group}/targets/")))
    }

    /// Streams the payload into the inactive slot (resuming a partial download), and stages the
    /// kernel and initrd in the state directory. `progress(done, total)` is called as it goes.
    pub fn download(
        &self,
        conf: &UpdateConf,
        rel: &Release,
        restart: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), ApplyError> {
        let (mut disk, part) = self.open_disk()?;
        let len = rel.usr.length;
        if len > part.size() {
            return Err(ApplyError::TooBig {
                len,
                size: part.size(),
                slot: self.target_slot().letter().to_uppercase(),
            });
        }
        let mut st: DownloadState = self.read_json(DOWNLOAD).unwrap_or_default();
        if restart
            || st.version != Some(rel.info.version)
            || st.sha256 != rel.usr.sha256
            || st.written > len
        {
            st = DownloadState {
                version: Some(rel.info.version),
                sha256: rel.usr.sha256.clone(),
                ..DownloadState::default()
            };
        }
        let base = self.base(conf, &rel.info.channel.to_string())?;
        if st.done_sha256.is_none() {
            self.stream(
                &mut disk,
                &part,
                &base.join(&rel.usr.path),
                len,
                &mut st,
                progress,
            )?;
        }
        progress(len, len);
        for (t, name) in [
            (&rel.kernel, "staged-vmlinuz"),
            (&rel.initrd, "staged-initrd"),
        ] {
            self.fetch_small(&base.join(&t.path), t, name)?;
        }
        Ok(())
    }

    fn stream(
        &self,
        disk: &mut File,
        part: &UsrPartition,
        url: &Url,
        len: u64,
        st: &mut DownloadState,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), ApplyError> {
        let dp = self.paths.disk.clone();
        // Re-hash what an earlier run already wrote: the hash covers the bytes on disk.
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        disk.seek(SeekFrom::Start(part.offset()))
            .map_err(io("reading", &dp))?;
        let mut left = st.written;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            disk.read_exact(&mut buf[..n]).map_err(io("reading", &dp))?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        let resp = if st.written < len {
            let r = http::get(url, (st.written > 0).then_some(st.written))?;
            match (r.status, r.range_start) {
                (206, Some(s)) if s == st.written => Some(r),
                (200, _) => {
                    // The server ignored the range: start over.
                    st.written = 0;
                    h = Sha256::new();
                    Some(r)
                }
                (status, _) => {
                    return Err(ApplyError::Status {
                        url: url.to_string(),
                        status,
                    })
                }
            }
        } else {
            None
        };
        if let Some(resp) = resp {
            let mut body = resp.body;
            disk.seek(SeekFrom::Start(part.offset() + st.written))
                .map_err(io("seeking", &dp))?;
            let mut since_sync = 0u64;
            let mut this_run = 0u64;
            while st.written < len {
                let cut_left = self
                    .cut_after
                    .map_or(u64::MAX, |c| c.saturating_sub(this_run));
                let want = (len - st.written).min(buf.len() as u64).min(cut_left) as usize;
                let n = body.read(&mut buf[..want]).map_err(|e| {
                    ApplyError::Http(HttpError::Io {
                        url: url.to_string(),
                        source: e,
                    })
                })?;
                if n == 0 {
                    self.checkpoint(disk, st)?;
                    return Err(ApplyError::Short {
                        url: url.to_string(),
                        got: st.written,
                        want: len,
                    });
                }
                disk.write_all(&buf[..n])
                    .map_err(io("writing the inactive slot on", &dp))?;
                h.update(&buf[..n]);
                st.written += n as u64;
                since_sync += n as u64;
                this_run += n as u64;
                progress(st.written, len);
                if since_sync >= SYNC_EVERY {
                    self.checkpoint(disk, st)?;
                    since_sync = 0;
                }
                if self.cut_after.is_some_and(|c| this_run >= c) && st.written < len {
                    self.checkpoint(disk, st)?;
                    return Err(ApplyError::Interrupted(st.written));
                }
            }
        }
        st.done_sha256 = Some(crust_common::verity::to_hex(&h.finalize()));
        self.checkpoint(disk, st)
    }

    /// Makes the written bytes durable, then records how far they go.
    fn checkpoint(&self, disk: &mut File, st: &DownloadState) -> Result<(), ApplyError> {
        disk.sync_data().map_err(io("syncing", &self.paths.disk))?;
        self.write_state(DOWNLOAD, &serde_json::to_vec(st).unwrap_or_default())
    }

    fn fetch_small(&self, url: &Url, t: &release::TargetRef, name: &str) -> Result<(), ApplyError> {
        let p = self.state(name);
        if sha256_file(&p).ok().as_deref() == Some(t.sha256.as_str()) {
            return Ok(());
        }
        let r = http::get(url, None)?;
        if r.status != 200 {
            return Err(ApplyError::Status {
                url: url.to_string(),
                status: r.status,
            });
        }
        let mut data = Vec::new();
        r.body
            .take(t.length + 1)
            .read_to_end(&mut data)
            .map_err(|e| {
                ApplyError::Http(HttpError::Io {
                    url: url.to_string(),
                    source: e,
                })
            })?;
        let got = crust_common::verity::to_hex(&Sha256::digest(&data));
        if data.len() as u64 != t.length || got != t.sha256 {
            return Err(ApplyError::Hash {
                what: t.path.clone(),
                got,
                want: t.sha256.clone(),
            });
        }
        self.write_state(name, &data)
    }

    /// Checks the downloaded payload: its sha256, and the verity root hash recomputed from the
    /// slot's data blocks against the signed `usrhash`. On failure the partial download is
    /// forgotten, so the next attempt starts over.
    pub fn verify(&self, rel: &Release) -> Result<(), ApplyError> {
        let r = self.verify_inner(rel);
        if r.is_err() {
            let _ = std::fs::remove_file(self.state(DOWNLOAD));
        }
        r
    }

    fn verify_inner(&self, rel: &Release) -> Result<(), ApplyError> {
        let st: DownloadState = self.read_json(DOWNLOAD).unwrap_or_default();
        if st.version != Some(rel.info.version) || st.written != rel.usr.length {
            return Err(ApplyError::Incomplete(rel.info.version));
        }
        let got = st.done_sha256.unwrap_or_default();
        if got != rel.usr.sha256 {
            return Err(ApplyError::Hash {
                what: rel.usr.path.clone(),
                got,
                want: rel.usr.sha256.clone(),
            });
        }
        let (mut disk, part) = self.open_disk()?;
        let salt = unhex(&rel.info.verity.salt).unwrap_or_default();
        crate::verity::check(
            &mut disk,
            part.offset(),
            rel.info.verity.hash_offset,
            rel.info.verity.data_blocks,
            &salt,
            &rel.info.usrhash,
        )?;
        for (t, name) in [
            (&rel.kernel, "staged-vmlinuz"),
            (&rel.initrd, "staged-initrd"),
        ] {
            let got = sha256_file(&self.state(name)).unwrap_or_default();
            if got != t.sha256 {
                return Err(ApplyError::Hash {
                    what: t.path.clone(),
                    got,
                    want: t.sha256.clone(),
                });
            }
        }
        Ok(())
    }

    /// Activates the verified slot: kernel and initrd onto the ESP, then (through the one
    /// slot-state function) its loader entry with one try and its gptprio bits.
    pub fn finalize(&self, rel: &Release) -> Result<String, ApplyError> {
        let slot = self.target_slot();
        let dir = self.paths.esp.join(slot.esp_dir());
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        for (name, dest) in [("staged-vmlinuz", "vmlinuz"), ("staged-initrd", "initrd")] {
            let to = dir.join(dest);
            let tmp = dir.join(format!("{dest}.new"));
            std::fs::copy(self.state(name), &tmp).map_err(io("copying to", &tmp))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io("syncing", &tmp))?;
            std::fs::rename(&tmp, &to).map_err(io("renaming", &to))?;
        }
        let params = crust_common::cmdline::BootParams {
            usr_partuuid: slot.partuuid().to_string(),
            usrhash: rel.info.usrhash.clone(),
            verify: crust_common::cmdline::Verify::Full,
        };
        let cmdline = format!("{} {}", rel.info.cmdline, params.to_cmdline())
            .trim()
            .to_string();
        let body = slot::entry_body("crust", &rel.info.version.to_string(), slot, &cmdline);
        let entries = std::fs::read_dir(self.paths.esp.join(slot::ENTRIES_DIR))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let running = slot::entries_of(&entries, self.booted)
            .first()
            .copied()
            .unwrap_or(EntryName::blessed(self.booted));
        let [new, old] = slot::activation(slot, 1, running);
        let mut disk = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.paths.disk)
            .map_err(io("opening the disk", &self.paths.disk))?;
        let name = slot::set_state(&self.paths.esp, &mut disk, &new, &[old], Some(&body))?;
        let pending = Pending {
            version: rel.info.version,
            slot: slot.letter().into(),
            from: self.current,
        };
        self.write_state(PENDING, &serde_json::to_vec(&pending).unwrap_or_default())?;
        let _ = std::fs::remove_file(self.state(DOWNLOAD));
        Ok(name)
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(crust_common::verity::to_hex(&h.finalize()))
}
