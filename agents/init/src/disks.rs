//! Finding disks and partitions the way the kernel names them: whole disks and partitions come
//! from /sys/class/block (a partition has a `partition` file holding its number, `dev` holds
//! major:minor), partition identities from the disk's GPT (read with the `gpt` crate).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the system's views live; tests point these at a temporary directory.
#[derive(Debug, Clone)]
pub struct Roots {
    pub sys_block: PathBuf,
    pub dev: PathBuf,
}

impl Default for Roots {
    fn default() -> Roots {
        Roots {
            sys_block: PathBuf::from("/sys/class/block"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// One GPT partition on one disk, with the names needed to open both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub disk: String,
    pub disk_dev: PathBuf,
    pub number: u32,
    pub name: String,
    pub dev: PathBuf,
    /// `major:minor`, which dm tables accept without a device node.
    pub majmin: String,
    pub partuuid: String,
    pub label: String,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Whole disks worth looking at (not partitions, not loop/ram/dm/optical devices).
pub fn disks(r: &Roots) -> Vec<String> {
    let Ok(rd) = fs::read_dir(&r.sys_block) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["loop", "ram", "dm-", "sr", "zram", "md", "nbd"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .filter(|n| !r.sys_block.join(n).join("partition").exists())
        .collect();
    out.sort();
    out
}

/// The kernel name of partition `number` of `disk` (e.g. `vda9`, `nvme0n1p9`), if it exists yet.
pub fn partition_name(r: &Roots, disk: &str, number: u32) -> Option<String> {
    let rd = fs::read_dir(r.sys_block.join(disk)).ok()?;
    rd.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|child| {
            read_trim(&r.sys_block.join(disk).join(child).join("partition"))
                .and_then(|n| n.parse::<u32>().ok())
                == Some(number)
        })
}

/// `/dev/<name>`, created from sysfs' major:minor when devtmpfs has not made it.
pub fn dev_node(r: &Roots, name: &str) -> io::Result<PathBuf> {
    let path = r.dev.join(name);
    if path.exists() {
        return Ok(path);
    }
    let majmin = majmin(r, name)?;
    let (ma, mi) = parse_majmin(&majmin)
        .ok_or_else(|| io::Error::other(format!("bad dev number {majmin:?} for {name}")))?;
    mknod_block(&path, ma, mi)?;
    Ok(path)
}

pub fn majmin(r: &Roots, name: &str) -> io::Result<String> {
    read_trim(&r.sys_block.join(name).join("dev")).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} has no dev in sysfs"),
        )
    })
}

pub fn parse_majmin(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

pub fn mknod_block(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    mknod(
        path,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(u64::from(major), u64::from(minor)),
    )
    .map_err(io::Error::from)
}

/// Size of a block device in bytes (sysfs `size` counts 512-byte sectors).
pub fn size_bytes(r: &Roots, name: &str) -> Option<u64> {
    read_trim(&r.sys_block.join(name).join("size"))?
        .parse::<u64>()
        .ok()
        .map(|s| s * 512)
}

/// Every GPT partition of `disk` that the kernel already shows.
pub fn gpt_partitions(r: &Roots, disk: &str) -> io::Result<Vec<Partition>> {
    let disk_dev = dev_node(r, disk)?;
    let gpt = gpt::GptConfig::new()
        .writable(false)
        .open(&disk_dev)
        .map_err(|e| io::Error::other(format!("{}: no readable GPT: {e}", disk_dev.display())))?;
    let mut out = Vec::new();
    for (number, p) in gpt.partitions() {
        let Some(name) = partition_name(r, disk, *number) else {
            continue;
        };
        out.push(Partition {
            disk: disk.to_string(),
            disk_dev: disk_dev.clone(),
            number: *number,
            dev: dev_node(r, &name)?,
            majmin: majmin(r, &name)?,
            name,
            partuuid: p.part_guid.to_string().to_ascii_lowercase(),
            label: p.name.clone(),
        });
    }
    Ok(out)
}

/// The partition with this PARTUUID on any disk, if the kernel shows it yet.
pub fn find_partuuid(r: &Roots, partuuid: &str) -> Option<Partition> {
    disks(r).into_iter().find_map(|d| {
        gpt_partitions(r, &d)
            .ok()?
            .into_iter()
            .find(|p| p.partuuid.eq_ignore_ascii_case(partuuid))
    })
}

/// Partition `number` of the disk `on` lives on.
pub fn sibling(r: &Roots, on: &Partition, number: u32) -> io::Result<Option<Partition>> {
    Ok(gpt_partitions(r, &on.disk)?
        .into_iter()
        .find(|p| p.number == number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sys() -> (tempfile::TempDir, Roots) {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        for (name, parent, part, dev) in [
            ("vda", None, None, "254:0"),
            ("vda3", Some("vda"), Some(3), "254:3"),
            ("vda9", Some("vda"), Some(9), "254:9"),
            ("loop0", None, None, "7:0"),
            ("dm-0", None, None, "253:0"),
        ] {
            let d = sys.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
            if let (Some(p), Some(n)) = (parent, part) {
                fs::write(d.join("partition"), format!("{n}\n")).unwrap();
                let under = sys.join(p).join(name);
                fs::create_dir_all(&under).unwrap();
                fs::write(under.join("partition"), format!("{n}\n")).unwrap();
            }
        }
        let r = Roots {
            sys_block: sys,
            dev: t.path().join("dev"),
        };
        (t, r)
    }

    #[test]
    fn lists_disks_and_finds_partitions_by_number() {
        let (_t, r) = fake_sys();
        assert_eq!(disks(&r), ["vda"]);
        assert_eq!(partition_name(&r, "vda", 9).as_deref(), Some("vda9"));
        assert_eq!(partition_name(&r, "vda", 4), None);
        assert_eq!(majmin(&r, "vda3").unwrap(), "254:3");
        assert_eq!(parse_majmin("254:3"), Some((254, 3)));
        assert_eq!(parse_majmin("x"), None);
    }
}
