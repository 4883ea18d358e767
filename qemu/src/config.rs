//! How a cluster's cloud-config reaches its nodes, as on OpenStack and QEMU clouds CoreOS ran on:
//! a `config-2` drive (a small FAT volume with `openstack/latest/user_data` and
//! `openstack/latest/meta_data.json`) or QEMU `fw_cfg` items. One user-data document serves the
//! whole cluster (guests fill `$private_ipv4` themselves); the metadata is per node: its
//! hostname, a uuid and the cluster's management SSH key (`public_keys`, which the guest adds to
//! user `core` as coreos-cloudinit did).

use crate::error::{io, Error, Result};
use crate::state::NodePaths;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fw_cfg item carrying user data (DESIGN.md).
pub const FW_CFG_USER_DATA: &str = "opt/org.crust/config";
/// The fw_cfg item carrying the node's metadata, in `meta_data.json`'s format.
pub const FW_CFG_META_DATA: &str = "opt/org.crust/meta_data";
/// The volume label guests look for.
pub const CONFIG_DRIVE_LABEL: &str = "config-2";
/// fw_cfg items are held in guest memory by the firmware; keep user data to a sane size
/// (coreos-cloudinit itself warned above 64 KiB on EC2; OpenStack allows 64 KiB).
pub const MAX_USER_DATA: usize = 1 << 20;

/// Which carrier the nodes get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// A read-only `config-2` FAT drive (the default; what CoreOS on OpenStack read).
    #[default]
    ConfigDrive,
    /// QEMU fw_cfg items `opt/org.crust/config` and `opt/org.crust/meta_data`.
    FwCfg,
    /// The same `config-2` drive as an ISO9660 image (Rock Ridge + Joliet), as OpenStack and
    /// `genisoimage -V config-2` make it; needs `genisoimage` (or `xorriso`) on the host.
    ConfigDriveIso,
}

impl Delivery {
    pub fn parse(s: &str) -> Result<Delivery> {
        match s {
            "config-drive" | "drive" => Ok(Delivery::ConfigDrive),
            "fw-cfg" | "fw_cfg" => Ok(Delivery::FwCfg),
            "config-drive-iso" | "iso" => Ok(Delivery::ConfigDriveIso),
            other => Err(Error::Invalid {
                what: "config delivery",
                value: other.into(),
                reason: "use config-drive, config-drive-iso or fw-cfg".into(),
            }),
        }
    }
}

/// OpenStack's `meta_data.json`, the fields coreos-cloudinit read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaData {
    pub uuid: String,
    pub name: String,
    pub hostname: String,
    pub public_keys: BTreeMap<String, String>,
}

impl MetaData {
    pub fn for_node(cluster: &str, node: &str, ssh_key: Option<&str>) -> MetaData {
        let mut public_keys = BTreeMap::new();
        if let Some(k) = ssh_key {
            public_keys.insert(format!("crust-{cluster}"), k.trim().to_string());
        }
        MetaData {
            uuid: node_uuid(cluster, node),
            name: node.into(),
            hostname: node.into(),
            public_keys,
        }
    }
}

/// A stable uuid per cluster and node (name-based, so a restarted node keeps it). It is both the
/// metadata's `uuid` and the machine's SMBIOS system UUID (`-uuid`), as on OpenStack, so the
/// guest's machine id (taken from the system UUID on first boot) is stable and distinct.
pub fn node_uuid(cluster: &str, node: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("crust-cluster/{cluster}/{node}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5-style name-based
    b[8] = (b[8] & 0x3f) | 0x80;
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15]
    )
}

/// Files of a node's configuration, kept in its directory so a restart presents the same.
pub struct ConfigFiles {
    pub user_data: PathBuf,
    pub meta_data: PathBuf,
    pub drive: PathBuf,
}

impl ConfigFiles {
    pub fn of(paths: &NodePaths) -> ConfigFiles {
        ConfigFiles {
            user_data: paths.dir.join("user_data"),
            meta_data: paths.dir.join("meta_data.json"),
            drive: paths.dir.join("config-2.img"),
        }
    }
}

/// The size of a config drive holding `payload` bytes: room for FAT overhead, at least 2 MiB.
pub fn drive_size(payload: usize) -> u64 {
    ((payload as u64 * 2) + (1 << 20))
        .max(2 << 20)
        .next_multiple_of(1 << 20)
}

/// The entries of a config drive, in the layout coreos-cloudinit's configdrive source reads.
pub fn drive_entries(user_data: Option<&[u8]>, meta_data: &[u8]) -> Vec<crust_fat::Entry> {
    use crust_fat::Entry;
    let mut e = vec![
        Entry::Dir("openstack".into()),
        Entry::Dir("openstack/latest".into()),
        Entry::File("openstack/latest/meta_data.json".into(), meta_data.to_vec()),
    ];
    if let Some(u) = user_data {
        e.push(Entry::File("openstack/latest/user_data".into(), u.to_vec()));
    }
    e
}

/// Writes a node's configuration files (and its drive, for [`Delivery::ConfigDrive`]).
pub fn write_node(
    paths: &NodePaths,
    delivery: Delivery,
    user_data: Option<&[u8]>,
    meta: &MetaData,
) -> Result<()> {
    let files = ConfigFiles::of(paths);
    let meta_json = serde_json::to_vec_pretty(meta).map_err(|source| Error::Json {
        what: "encoding meta_data.json".into(),
        source,
    })?;
    write(&files.meta_data, &meta_json)?;
    if let Some(u) = user_data {
        write(&files.user_data, u)?;
    }
    if delivery == Delivery::ConfigDrive {
        let size = drive_size(meta_json.len() + user_data.map_or(0, <[u8]>::len));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&files.drive)
            .map_err(io(format!("creating {}", files.drive.display())))?;
        f.set_len(size)
            .map_err(io(format!("sizing {}", files.drive.display())))?;
        crust_fat::format(
            f,
            size,
            CONFIG_DRIVE_LABEL,
            &drive_entries(user_data, &meta_json),
        )
        .map_err(|e| Error::Invalid {
            what: "config drive",
            value: files.drive.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    if delivery == Delivery::ConfigDriveIso {
        write_iso(
            &files.drive,
            &paths.dir.join("config-2"),
            user_data,
            &meta_json,
        )?;
    }
    Ok(())
}

/// Writes the config drive as an ISO9660 image with the host's `genisoimage` or `xorriso`.
fn write_iso(iso: &Path, tree: &Path, user_data: Option<&[u8]>, meta_json: &[u8]) -> Result<()> {
    let _ = std::fs::remove_dir_all(tree);
    for e in drive_entries(user_data, meta_json) {
        match e {
            crust_fat::Entry::Dir(d) => std::fs::create_dir_all(tree.join(&d))
                .map_err(io(format!("creating {}", tree.join(&d).display())))?,
            crust_fat::Entry::File(f, data) => write(&tree.join(&f), &data)?,
        }
    }
    let tool = crate::tools::which("genisoimage")
        .map(|t| (t, vec![]))
        .or_else(|| {
            crate::tools::which("xorriso").map(|t| (t, vec!["-as".to_string(), "mkisofs".into()]))
        })
        .ok_or_else(|| Error::Invalid {
            what: "config delivery",
            value: "config-drive-iso".into(),
            reason: "needs genisoimage or xorriso on the host: apt-get install genisoimage (or use --config-via config-drive)".into(),
        })?;
    let out = std::process::Command::new(&tool.0)
        .args(&tool.1)
        .args(["-quiet", "-V", CONFIG_DRIVE_LABEL, "-r", "-J", "-o"])
        .arg(iso)
        .arg(tree)
        .output()
        .map_err(io(format!("running {}", tool.0.display())))?;
    if !out.status.success() {
        return Err(Error::Invalid {
            what: "config drive",
            value: iso.display().to_string(),
            reason: format!(
                "{} failed: {}",
                tool.0.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(io(format!("writing {}", path.display())))
}

/// QEMU arguments presenting a node's configuration. The drive is read-only: the guest must not
/// be able to change what it boots from next time.
pub fn qemu_args(paths: &NodePaths, delivery: Delivery, user_data: bool) -> Vec<String> {
    let files = ConfigFiles::of(paths);
    let opt = |p: &Path| crate::accel::qemu_opt(&p.display().to_string());
    match delivery {
        Delivery::ConfigDrive | Delivery::ConfigDriveIso => vec![
            "-drive".into(),
            format!(
                "file={},if=none,id=config2,format=raw,readonly=on",
                opt(&files.drive)
            ),
            "-device".into(),
            "virtio-blk-pci,drive=config2".into(),
        ],
        Delivery::FwCfg => {
            let mut a = vec![
                "-fw_cfg".into(),
                format!("name={FW_CFG_META_DATA},file={}", opt(&files.meta_data)),
            ];
            if user_data {
                a.push("-fw_cfg".into());
                a.push(format!(
                    "name={FW_CFG_USER_DATA},file={}",
                    opt(&files.user_data)
                ));
            }
            a
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn metadata_is_stable_per_node_and_carries_the_key() {
        let a = MetaData::for_node("c", "node0", Some("ssh-ed25519 AAAA x\n"));
        let b = MetaData::for_node("c", "node0", None);
        assert_eq!(a.uuid, b.uuid);
        assert_ne!(a.uuid, MetaData::for_node("c", "node1", None).uuid);
        assert_eq!(a.uuid.len(), 36);
        assert_eq!(a.hostname, "node0");
        assert_eq!(a.public_keys["crust-c"], "ssh-ed25519 AAAA x");
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(r#""public_keys":{"crust-c":"ssh-ed25519 AAAA x"}"#));
    }

    #[test]
    fn drive_holds_the_openstack_layout() {
        let meta = br#"{"hostname":"node0"}"#;
        let size = drive_size(100);
        let mut c = Cursor::new(vec![0u8; size as usize]);
        crust_fat::format(
            &mut c,
            size,
            CONFIG_DRIVE_LABEL,
            &drive_entries(Some(b"#cloud-config\n"), meta),
        )
        .unwrap();
        assert_eq!(
            crust_fat::read_file(&mut c, "openstack/latest/user_data").unwrap(),
            b"#cloud-config\n"
        );
        assert_eq!(
            crust_fat::read_file(&mut c, "openstack/latest/meta_data.json").unwrap(),
            meta
        );
        // The label is what guests probe for, byte for byte.
        let mut boot = [0u8; 512];
        boot.copy_from_slice(&c.get_ref()[..512]);
        assert!(boot.windows(11).any(|w| w == b"config-2   "));
    }

    #[test]
    fn sizes_and_arguments() {
        assert_eq!(drive_size(0), 2 << 20);
        assert_eq!(drive_size(MAX_USER_DATA), 3 << 20);
        let p = NodePaths::new("/s/c/node0".into());
        let drive = qemu_args(&p, Delivery::ConfigDrive, true).join(" ");
        assert!(
            drive
                .contains("file=/s/c/node0/config-2.img,if=none,id=config2,format=raw,readonly=on"),
            "{drive}"
        );
        let fw = qemu_args(&p, Delivery::FwCfg, true).join(" ");
        assert!(
            fw.contains("name=opt/org.crust/config,file=/s/c/node0/user_data"),
            "{fw}"
        );
        assert!(!qemu_args(&p, Delivery::FwCfg, false)
            .join(" ")
            .contains("org.crust/config"));
        assert!(
            fw.contains("name=opt/org.crust/meta_data,file=/s/c/node0/meta_data.json"),
            "{fw}"
        );
        assert!(Delivery::parse("fw-cfg").is_ok());
        assert!(Delivery::parse("floppy").is_err());
    }
}
