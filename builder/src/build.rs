//! `crust build`: the whole pipeline from a manifest to a bootable raw disk image plus a JSON
//! description of what was built.
//!
//! Outputs in `--out` (default `out/`):
//! - `crust.img`: the raw, sparse GPT disk image;
//! - `crust.json`: version, channel, sizes, sha256s, verity root hash, input packages;
//! - `usr.img` (squashfs + dm-verity tree, the update payload), `vmlinuz`, `initrd`.

use crate::debian::{self, Cache};
use crate::disk::{self, Region};
use crate::manifest::{Manifest, DEFAULT_MANIFEST};
use crate::progress::Progress;
use crate::tree::{Source, Tree};
use crate::usr::{self, Inputs, Unpacked};
use crate::{agent, esp, initramfs, kmod, squashfs, verity};
use crust_common::cmdline::{BootParams, Verify};
use crust_common::slot::{EntryName, GptPrio, Slot};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct BuildArgs {
    /// Image manifest (YAML); the bundled default manifest when omitted.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Build from the package cache only; fails naming any package that is not cached.
    #[arg(long)]
    pub offline: bool,
    /// No progress bars: one log line per step.
    #[arg(long)]
    pub quiet: bool,
    /// Package cache directory (default: $CRUST_CACHE, else ~/.cache/crust).
    #[arg(long, env = "CRUST_CACHE")]
    pub cache: Option<PathBuf>,
    /// Keys directory (`crust keys init`): its root.json becomes the image's update root of
    /// trust at /usr/share/crust/update/root.json. Without it the image cannot verify updates.
    #[arg(long, env = "CRUST_KEYS")]
    pub keys: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error(transparent)]
    Debian(#[from] debian::DebianError),
    #[error(transparent)]
    Kmod(#[from] kmod::KmodError),
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    #[error(transparent)]
    Usr(#[from] usr::UsrError),
    #[error(transparent)]
    Squashfs(#[from] squashfs::SquashfsError),
    #[error(transparent)]
    Verity(#[from] verity::VerityError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Esp(#[from] esp::EspError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error("{what} is {size} bytes but partitions.{field} gives only {limit} bytes; raise partitions.{field} in the manifest (note: USR sizes cannot change for machines in the field)")]
    TooBig {
        what: &'static str,
        field: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("no package in the closure of {0} ships a kernel (lib/modules/<release>/ and boot/vmlinuz-<release>)")]
    NoKernel(String),
    #[error("systemd-boot EFI binary not found at {0:?}; is systemd-boot-efi in the manifest's packages?")]
    NoBootloader(PathBuf),
    #[error("--keys: {0}")]
    Keys(String),
    #[error("{path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a build produced (also written as `crust.json`).
#[derive(Debug, Clone, Serialize)]
pub struct BuildOutput {
    #[serde(skip)]
    pub image: PathBuf,
    pub name: String,
    pub version: String,
    pub channel: String,
    pub platform: String,
    pub source_date_epoch: u64,
    pub kernel_release: String,
    pub cmdline: String,
    pub verity: VerityJson,
    pub files: Vec<FileJson>,
    pub partitions: Vec<PartitionJson>,
    pub early_modules: Vec<String>,
    pub packages: Vec<PackageJson>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerityJson {
    pub root_hash: String,
    pub salt: String,
    pub data_blocks: u64,
    pub hash_offset: u64,
    pub squashfs_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileJson {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionJson {
    pub number: u32,
    pub label: String,
    pub partuuid: String,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageJson {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// SOURCE_DATE_EPOCH when set, else the time of the source tree's last commit, else 0; never
/// the wall clock, so rebuilds of the same inputs are identical.
pub fn source_date_epoch() -> u64 {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return e;
    }
    std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(agent::source_dir())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// Enabled in images built with `--keys` (they can verify updates).
pub const UPDATE_UNITS: [&str; 2] = ["update-engine.service", "locksmithd.service"];

/// Builds the default manifest into `out` (used by tests and `crust demo`).
pub fn build_default(out: &Path) -> Result<BuildOutput, BuildError> {
    run(&BuildArgs {
        out: out.to_path_buf(),
        quiet: true,
        ..BuildArgs::default()
    })
}

pub fn run(args: &BuildArgs) -> Result<BuildOutput, BuildError> {
    let progress = Progress::new(args.quiet);
    let (manifest, manifest_dir) = match &args.manifest {
        Some(p) => {
            let dir = p
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            (Manifest::load(p)?, dir)
        }
        None => (
            Manifest::parse(DEFAULT_MANIFEST, "default manifest")?,
            agent::source_dir().join("builder/manifests"),
        ),
    };
    let epoch = source_date_epoch();
    let out = &args.out;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let layout = disk::layout(&manifest.partitions);

    // The agent compiles while packages download: the two are independent and both slow cold.
    let offline = args.offline;
    let agent_build = std::thread::spawn(move || agent::build(offline));

    let cache = match &args.cache {
        Some(root) => Cache { root: root.clone() },
        None => Cache::from_env(),
    };
    let mut roots: Vec<String> = manifest.packages.keys().cloned().collect();
    roots.push(manifest.kernel.package.clone());
    let debs = debian::resolve(
        &cache,
        &roots,
        &manifest.skip_dependencies,
        args.offline,
        &progress,
    )?;
    let step = progress.step("unpack packages", Some(debs.len() as u64));
    let mut unpacked = Vec::new();
    for deb in &debs {
        unpacked.push(Unpacked {
            name: deb.name.clone(),
            root: debian::unpack(&cache, deb)?,
        });
        step.inc(1);
    }
    step.done(&format!("{} packages", debs.len()));

    let kernel_pkg = unpacked
        .iter()
        .find(|u| u.root.join("lib/modules").is_dir() && u.root.join("boot").is_dir())
        .ok_or_else(|| BuildError::NoKernel(manifest.kernel.package.clone()))?;
    let modules = kmod::scan(&kernel_pkg.root)?;
    let vmlinuz = modules.vmlinuz(&kernel_pkg.root);

    let step = progress.step("agent (cargo build)", None);
    let agent_bin = agent_build
        .join()
        .unwrap_or_else(|_| Err(agent::AgentError::NoSource(PathBuf::from("<panicked>"))))?;
    let agent_size = std::fs::metadata(&agent_bin).map(|m| m.len()).unwrap_or(0);
    step.done(&format!(
        "{:.1} MiB static crust-agent",
        agent_size as f64 / 1048576.0
    ));

    let inputs = Inputs {
        manifest: &manifest,
        manifest_dir: &manifest_dir,
        packages: &unpacked,
        modules: &modules,
        agent: &agent_bin,
        epoch,
    };

    // USR: squashfs + verity tree, written to usr.img, checked against the partition size.
    let step = progress.step("USR squashfs + verity", None);
    let mut usr_tree = usr::usr_tree(&inputs)?;
    if let Some(keys) = &args.keys {
        let root = crate::keys::root_json(keys).map_err(|e| BuildError::Keys(e.to_string()))?;
        usr_tree
            .file(crate::keys::ROOT_IN_IMAGE, 0o644, Source::Bytes(root))
            .map_err(usr::UsrError::from)?;
        // An image that can verify updates keeps itself current, as Container Linux did:
        // update-engine and locksmithd are enabled (REBOOT_STRATEGY and the server come from
        // update.conf; cloud-config or `crustctl disable`/`mask` turn them off).
        for unit in UPDATE_UNITS {
            usr_tree
                .symlink(
                    format!("lib/systemd/system/multi-user.target.wants/{unit}"),
                    format!("../{unit}"),
                )
                .map_err(usr::UsrError::from)?;
        }
    }
    let usr_path = out.join("usr.img");
    let mut usr_file = create(&usr_path)?;
    let squashfs_bytes = squashfs::write(&usr_tree, &mut usr_file, epoch as u32)?;
    let seed = format!("crust-usr {} {} {epoch}", manifest.name, manifest.version);
    let salt = Sha256::digest(format!("salt {seed}").as_bytes()).to_vec();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&Sha256::digest(format!("uuid {seed}").as_bytes())[..16]);
    let vinfo = verity::append_hash_tree(&mut usr_file, squashfs_bytes, &salt, uuid)?;
    usr_file.flush().map_err(io(&usr_path))?;
    let usr_limit = layout.part(Slot::A.partition_number()).size_bytes;
    if vinfo.total_len > usr_limit {
        return Err(BuildError::TooBig {
            what: "the USR image (squashfs + verity tree)",
            field: "usr-mib",
            size: vinfo.total_len,
            limit: usr_limit,
        });
    }
    let root_hash = hex::encode(vinfo.root_hash);
    step.done(&format!(
        "{} entries, {:.1} MiB squashfs, root hash {}",
        usr_tree.len(),
        squashfs_bytes as f64 / 1048576.0,
        &root_hash[..16]
    ));

    // Initramfs.
    let step = progress.step("initramfs", None);
    let (initrd_tree, early_modules) = usr::initramfs_tree(&inputs)?;
    let initrd_path = out.join("initrd");
    let mut initrd_buf = Vec::new();
    initramfs::write(&initrd_tree, &mut initrd_buf, epoch as u32)?;
    std::fs::write(&initrd_path, &initrd_buf).map_err(io(&initrd_path))?;
    step.done(&format!(
        "{} early modules, {:.1} MiB",
        early_modules.len(),
        initrd_buf.len() as f64 / 1048576.0
    ));
    let vmlinuz_out = out.join("vmlinuz");
    std::fs::copy(&vmlinuz, &vmlinuz_out).map_err(io(&vmlinuz))?;

    // ESP: systemd-boot, loader.conf, slot A's entry with a boot counter, kernel and initramfs.
    let params = BootParams {
        usr_partuuid: Slot::A.partuuid().to_string(),
        usrhash: root_hash.clone(),
        verify: Verify::Full,
    };
    let cmdline = format!("{} {}", manifest.kernel.cmdline, params.to_cmdline());
    let sdboot = usr::by_name(&unpacked)
        .get("systemd-boot-efi")
        .map(|r| r.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"))
        .unwrap_or_default();
    if !sdboot.is_file() {
        return Err(BuildError::NoBootloader(sdboot));
    }
    let esp_tree = esp_tree(&manifest, &sdboot, &vmlinuz, &initrd_buf, &cmdline)?;
    let esp_size = layout.part(1).size_bytes;
    let esp_bytes: u64 = esp_tree
        .iter()
        .filter_map(|(_, n)| match n {
            crate::tree::Node::File { source, .. } => source.size().ok(),
            _ => None,
        })
        .sum();
    // Room for a second slot's kernel and initramfs is needed by the first update.
    if esp_bytes * 2 > esp_size {
        return Err(BuildError::TooBig {
            what: "twice the ESP content (both slots' kernels and initramfs)",
            field: "esp-mib",
            size: esp_bytes * 2,
            limit: esp_size,
        });
    }

    // The disk image.
    let step = progress.step("disk image", None);
    let image = out.join("crust.img");
    let tmp_image = out.join(".crust.img.tmp");
    let mut img = create(&tmp_image)?;
    img.set_len(layout.total_bytes).map_err(io(&tmp_image))?;
    let slots = [
        // A factory image's slot is trusted as CoreOS ships it (priority 1, successful); the
        // loader entry's counter still guards the first boot, and the first good boot blesses it.
        (Slot::A, GptPrio::new(1, 0, true)),
        (Slot::B, GptPrio::new(0, 0, false)),
    ];
    disk::write_gpt(&mut img, &layout, &slots)?;
    {
        let p = layout.part(1);
        let region = Region::new(&mut img, p.first_lba * 512, p.size_bytes);
        esp::write(region, p.size_bytes, &esp_tree)?;
    }
    {
        let p = layout.part(6);
        let mut oem = Tree::new();
        oem.file(
            "oem-release",
            0o644,
            Source::Bytes(
                format!(
                    "ID={}\nNAME=\"{}\"\n",
                    manifest.platform.id(),
                    manifest.platform.id()
                )
                .into_bytes(),
            ),
        )
        .map_err(usr::UsrError::from)?;
        let region = Region::new(&mut img, p.first_lba * 512, p.size_bytes);
        esp::write_fat(region, p.size_bytes, &oem, "OEM")?;
    }
    {
        let p = layout.part(Slot::A.partition_number());
        copy_sparse(&usr_path, &mut img, p.first_lba * 512)?;
    }
    img.sync_all().map_err(io(&tmp_image))?;
    drop(img);
    std::fs::rename(&tmp_image, &image).map_err(io(&image))?;
    step.done(&format!(
        "{:.0} MiB virtual",
        layout.total_bytes as f64 / 1048576.0
    ));

    let step = progress.step("checksums", None);
    let mut files = Vec::new();
    for (name, path) in [
        ("crust.img", &image),
        ("usr.img", &usr_path),
        ("vmlinuz", &vmlinuz_out),
        ("initrd", &initrd_path),
    ] {
        let (size, sha256) = sha256_file(path)?;
        files.push(FileJson {
            name: name.to_string(),
            size,
            sha256,
        });
    }
    step.done("sha256");

    let output = BuildOutput {
        image: image.clone(),
        name: manifest.name.clone(),
        version: manifest.version.to_string(),
        channel: manifest.channel.to_string(),
        platform: manifest.platform.id().to_string(),
        source_date_epoch: epoch,
        kernel_release: modules.release.clone(),
        cmdline,
        verity: VerityJson {
            root_hash,
            salt: hex::encode(&vinfo.salt),
            data_blocks: vinfo.data_blocks,
            hash_offset: vinfo.hash_offset,
            squashfs_bytes,
        },
        files,
        partitions: layout
            .parts
            .iter()
            .map(|p| PartitionJson {
                number: p.number,
                label: p.label.to_string(),
                partuuid: p.partuuid.to_string(),
                offset: p.first_lba * 512,
                size: p.size_bytes,
            })
            .collect(),
        early_modules,
        packages: debs
            .iter()
            .map(|d| PackageJson {
                name: d.name.clone(),
                version: d.version.clone(),
                sha256: d.sha256.clone(),
            })
            .collect(),
    };
    let json_path = out.join("crust.json");
    let json = serde_json::to_string_pretty(&output).unwrap_or_default();
    std::fs::write(&json_path, json + "\n").map_err(io(&json_path))?;
    progress.log(&format!(
        "built {} ({} {}), USR {:.1} MiB, verity root hash {}",
        image.display(),
        output.version,
        output.channel,
        squashfs_bytes as f64 / 1048576.0,
        output.verity.root_hash
    ));
    Ok(output)
}

/// The loader entry for a slot (Boot Loader Spec type 1), as update-engine writes it too.
pub fn loader_entry(manifest: &Manifest, slot: Slot, cmdline: &str) -> String {
    crust_common::slot::entry_body(&manifest.name, &manifest.version.to_string(), slot, cmdline)
}

fn esp_tree(
    manifest: &Manifest,
    sdboot: &Path,
    vmlinuz: &Path,
    initrd: &[u8],
    cmdline: &str,
) -> Result<Tree, BuildError> {
    let mut t = Tree::new();
    let add = |t: &mut Tree, p: &str, s: Source| t.file(p, 0o644, s).map_err(usr::UsrError::from);
    add(
        &mut t,
        "EFI/BOOT/BOOTX64.EFI",
        Source::Path(sdboot.to_path_buf()),
    )?;
    // No `default`: systemd-boot then prefers entries with tries left and, among those (all
    // with one sort-key), the highest `version`, which is what an A/B update wants.
    let loader_conf = format!(
        "timeout {}\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n",
        manifest.boot.timeout
    );
    add(
        &mut t,
        "loader/loader.conf",
        Source::Bytes(loader_conf.into_bytes()),
    )?;
    let entry = EntryName::new(Slot::A, manifest.boot.tries);
    add(
        &mut t,
        &format!("{}/{entry}", crust_common::slot::ENTRIES_DIR),
        Source::Bytes(loader_entry(manifest, Slot::A, cmdline).into_bytes()),
    )?;
    let dir = Slot::A.esp_dir();
    add(
        &mut t,
        &format!("{dir}/vmlinuz"),
        Source::Path(vmlinuz.to_path_buf()),
    )?;
    add(
        &mut t,
        &format!("{dir}/initrd"),
        Source::Bytes(initrd.to_vec()),
    )?;
    Ok(t)
}

fn create(path: &Path) -> Result<File, BuildError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io(path))
}

/// Copies `src` into `dst` at `offset`, skipping all-zero blocks so the image stays sparse.
fn copy_sparse(src: &Path, dst: &mut File, offset: u64) -> Result<(), BuildError> {
    let mut f = File::open(src).map_err(io(src))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = offset;
    loop {
        let n = read_full(&mut f, &mut buf).map_err(io(src))?;
        if n == 0 {
            break;
        }
        for chunk in buf[..n].chunks(4096) {
            if chunk.iter().any(|&b| b != 0) {
                dst.seek(SeekFrom::Start(pos)).map_err(io(src))?;
                dst.write_all(chunk).map_err(io(src))?;
            }
            pos += chunk.len() as u64;
        }
    }
    Ok(())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Size and sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<(u64, String), BuildError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(h.finalize())))
}
