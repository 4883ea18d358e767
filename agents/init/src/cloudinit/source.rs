//! Where user data and metadata come from, probed in coreos-cloudinit's spirit: a `config-2`
//! drive (FAT or ISO9660), QEMU fw_cfg, `cloud-config-url=` on the kernel command line, EC2 and
//! GCE metadata services (only when DMI names that cloud), and the OEM partition. The label
//! parsers are pure; probing is I/O.

use crust_common::http::{self, Url};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a data source provides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Which source: `config-2 drive /dev/vdb`, `fw_cfg`, ...
    pub source: String,
    pub user_data: Option<Vec<u8>>,
    pub meta: MetaData,
}

/// The metadata coreos-cloudinit used: hostname, SSH keys for `core`, addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaData {
    pub hostname: Option<String>,
    pub public_keys: Vec<String>,
    pub local_ipv4: Option<Ipv4Addr>,
    pub public_ipv4: Option<Ipv4Addr>,
}

/// OpenStack's `meta_data.json` (config-2 drives and fw_cfg `opt/org.crust/meta_data`).
#[derive(Debug, Deserialize, Default)]
struct OpenStackMeta {
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    public_keys: BTreeMap<String, String>,
}

pub fn parse_openstack_meta(bytes: &[u8]) -> Result<MetaData, String> {
    let m: OpenStackMeta = serde_json::from_slice(bytes)
        .map_err(|e| format!("meta_data.json is not valid JSON: {e}"))?;
    Ok(MetaData {
        hostname: m.hostname.filter(|h| !h.is_empty()),
        public_keys: m
            .public_keys
            .into_values()
            .map(|k| k.trim().to_string())
            .collect(),
        ..MetaData::default()
    })
}

/// The volume label of a FAT boot sector, when it is one.
pub fn fat_label(sector: &[u8]) -> Option<String> {
    if sector.len() < 512 || sector[510] != 0x55 || sector[511] != 0xaa {
        return None;
    }
    // Extended boot signature 0x29 at 38 (FAT12/16) or 66 (FAT32); the label follows at +5.
    let at = if sector[66] == 0x29 && &sector[82..87] == b"FAT32" {
        71
    } else if sector[38] == 0x29 {
        43
    } else {
        return None;
    };
    Some(
        String::from_utf8_lossy(&sector[at..at + 11])
            .trim_end()
            .to_string(),
    )
}

/// The volume id of an ISO9660 image, given the primary volume descriptor (sector 16).
pub fn iso9660_label(pvd: &[u8]) -> Option<String> {
    if pvd.len() < 72 || pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    Some(String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string())
}

/// A block device labelled `label`, and its file system type for mount.
pub fn find_labelled(label: &str) -> Option<(PathBuf, &'static str)> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("dm-"))
        .collect();
    names.sort();
    for n in names {
        let dev = PathBuf::from(format!("/dev/{n}"));
        let Ok(mut f) = std::fs::File::open(&dev) else {
            continue;
        };
        use std::io::{Read, Seek, SeekFrom};
        let mut s = vec![0u8; 512];
        if f.read_exact(&mut s).is_ok() && fat_label(&s).as_deref() == Some(label) {
            return Some((dev, "vfat"));
        }
        let mut pvd = vec![0u8; 2048];
        if f.seek(SeekFrom::Start(16 * 2048)).is_ok()
            && f.read_exact(&mut pvd).is_ok()
            && iso9660_label(&pvd).as_deref() == Some(label)
        {
            return Some((dev, "iso9660"));
        }
    }
    None
}

fn mount_ro(dev: &Path, fstype: &str, at: &Path) -> Result<(), String> {
    std::fs::create_dir_all(at).map_err(|e| format!("creating {}: {e}", at.display()))?;
    nix::mount::mount(
        Some(dev),
        at,
        Some(fstype),
        nix::mount::MsFlags::MS_RDONLY
            | nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "mounting {} ({fstype}) read-only on {}: {e}",
            dev.display(),
            at.display()
        )
    })
}

/// The config-2 drive, mounted read-only while its files are read.
pub fn config_drive() -> Option<Result<Found, String>> {
    let (dev, fstype) = find_labelled("config-2")?;
    let at = Path::new("/run/crust/config-2");
    Some((|| {
        if fstype == "iso9660" {
            // The ISO9660 driver is a module (genisoimage/xorriso-made config-2 drives).
            let _ = super::load_module("isofs");
        }
        mount_ro(&dev, fstype, at)?;
        let latest = at.join("openstack/latest");
        let user_data = std::fs::read(latest.join("user_data")).ok();
        let meta = match std::fs::read(latest.join("meta_data.json")) {
            Ok(b) => parse_openstack_meta(&b),
            Err(_) => Ok(MetaData::default()),
        };
        let _ = nix::mount::umount(at);
        Ok(Found {
            source: format!("config-2 drive {}", dev.display()),
            user_data,
            meta: meta?,
        })
    })())
}

/// QEMU fw_cfg items `opt/org.crust/config` (user data) and `opt/org.crust/meta_data`.
pub fn fw_cfg(sysfs: &Path) -> Option<Result<Found, String>> {
    let by_name = sysfs.join("by_name/opt/org.crust");
    let user_data = std::fs::read(by_name.join("config/raw")).ok();
    let meta_bytes = std::fs::read(by_name.join("meta_data/raw")).ok();
    if user_data.is_none() && meta_bytes.is_none() {
        return None;
    }
    let meta = match meta_bytes {
        Some(b) => match parse_openstack_meta(&b) {
            Ok(m) => m,
            Err(e) => return Some(Err(format!("fw_cfg opt/org.crust/meta_data: {e}"))),
        },
        None => MetaData::default(),
    };
    Some(Ok(Found {
        source: "fw_cfg opt/org.crust/config".into(),
        user_data,
        meta,
    }))
}

/// `cloud-config-url=URL` from the kernel command line.
pub fn cmdline_url(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cloud-config-url="))
        .map(str::to_string)
}

fn fetch(url: &Url, headers: &[(&str, &str)]) -> Result<Option<Vec<u8>>, String> {
    let mut r = http::request_with(
        "GET",
        url,
        None,
        None,
        headers,
        Some(Duration::from_secs(10)),
    )
    .map_err(|e| e.to_string())?;
    let status = r.status;
    // Bytes, not text: user data may be gzip-compressed.
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut r.body, &mut body).map_err(|e| format!("{url}: {e}"))?;
    match status {
        200 => Ok(Some(body)),
        404 => Ok(None),
        s => Err(format!("{url} answered HTTP {s}")),
    }
}

pub fn from_url(url: &str) -> Result<Found, String> {
    let u = Url::parse(url).map_err(|e| format!("cloud-config-url: {e}"))?;
    Ok(Found {
        source: format!("cloud-config-url {url}"),
        user_data: fetch(&u, &[])?,
        meta: MetaData::default(),
    })
}

/// Which cloud the DMI strings name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Ec2,
    Gce,
}

pub fn cloud_from_dmi(sys_vendor: &str, product_name: &str) -> Option<Cloud> {
    let v = sys_vendor.trim();
    let p = product_name.trim();
    if v == "Amazon EC2" || p.starts_with("Amazon EC2") {
        Some(Cloud::Ec2)
    } else if v == "Google" || p == "Google Compute Engine" {
        Some(Cloud::Gce)
    } else {
        None
    }
}

fn text(url: &Url, headers: &[(&str, &str)]) -> Result<Option<String>, String> {
    Ok(fetch(url, headers)?.map(|b| String::from_utf8_lossy(&b).trim().to_string()))
}

/// An IMDSv2 session token (`PUT /latest/api/token`), or None where the service only speaks
/// IMDSv1 (instances that require v2 answer every tokenless GET with 401).
fn ec2_token(base: &Url) -> Option<String> {
    let r = http::request_with(
        "PUT",
        &base.join("latest/api/token"),
        None,
        None,
        &[
            ("X-aws-ec2-metadata-token-ttl-seconds", "21600"),
            ("Content-Length", "0"),
        ],
        Some(Duration::from_secs(5)),
    )
    .ok()?;
    if r.status != 200 {
        return None;
    }
    r.text()
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// EC2's metadata service at `base` (`http://169.254.169.254` on EC2), with an IMDSv2 token when
/// the service hands one out.
pub fn ec2(base: &str) -> Result<Found, String> {
    let b = Url::parse(base).map_err(|e| e.to_string())?;
    let token = ec2_token(&b);
    let h: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| vec![("X-aws-ec2-metadata-token", t)])
        .unwrap_or_default();
    let v = b.join("2009-04-04");
    let md = v.join("meta-data");
    let mut meta = MetaData {
        hostname: text(&md.join("hostname"), &h)?,
        local_ipv4: text(&md.join("local-ipv4"), &h)?.and_then(|s| s.parse().ok()),
        public_ipv4: text(&md.join("public-ipv4"), &h)?.and_then(|s| s.parse().ok()),
        ..MetaData::default()
    };
    // public-keys/ lists `0=name`; each key is at public-keys/0/openssh-key.
    if let Some(list) = text(&md.join("public-keys/"), &h)? {
        for line in list.lines() {
            if let Some((idx, _)) = line.split_once('=') {
                if let Some(k) = text(&md.join(&format!("public-keys/{idx}/openssh-key")), &h)? {
                    meta.public_keys.push(k);
                }
            }
        }
    }
    Ok(Found {
        source: "ec2 metadata".into(),
        user_data: fetch(&v.join("user-data"), &h)?,
        meta,
    })
}

/// GCE's metadata server at `base` (`http://metadata.google.internal` on GCE).
pub fn gce(base: &str) -> Result<Found, String> {
    let h = [("Metadata-Flavor", "Google")];
    let b = Url::parse(base).map_err(|e| e.to_string())?;
    let inst = b.join("computeMetadata/v1/instance");
    let meta = MetaData {
        hostname: text(&inst.join("hostname"), &h)?,
        local_ipv4: text(&inst.join("network-interfaces/0/ip"), &h)?.and_then(|s| s.parse().ok()),
        public_ipv4: text(
            &inst.join("network-interfaces/0/access-configs/0/external-ip"),
            &h,
        )?
        .and_then(|s| s.parse().ok()),
        public_keys: Vec::new(),
    };
    // `ssh-keys` (and the older `sshKeys`) of the instance and the project: one
    // `USER:KEY` a line; as coreos-cloudinit did, every key goes to core.
    let mut meta = meta;
    let project = b.join("computeMetadata/v1/project/attributes");
    for url in [
        inst.join("attributes/ssh-keys"),
        inst.join("attributes/sshKeys"),
        project.join("ssh-keys"),
        project.join("sshKeys"),
    ] {
        if let Some(list) = text(&url, &h)? {
            meta.public_keys.extend(gce_keys(&list));
        }
    }
    meta.public_keys.dedup();
    Ok(Found {
        source: "gce metadata".into(),
        user_data: fetch(&inst.join("attributes/user-data"), &h)?,
        meta,
    })
}

/// The keys of a GCE `ssh-keys` value: `USER:KEY` lines, the user dropped.
pub fn gce_keys(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(_, k)| k.trim().to_string())
        .filter(|k| k.starts_with("ssh-") || k.starts_with("ecdsa-"))
        .collect()
}

/// The OEM partition's cloud-config (`cloud-config.yml` on the partition labelled OEM).
pub fn oem() -> Option<Result<Found, String>> {
    let (dev, fstype) = find_labelled("OEM")?;
    let at = Path::new("/run/crust/oem");
    Some((|| {
        mount_ro(&dev, fstype, at)?;
        let user_data = std::fs::read(at.join("cloud-config.yml")).ok();
        let _ = nix::mount::umount(at);
        Ok(Found {
            source: format!("OEM partition {}", dev.display()),
            user_data,
            meta: MetaData::default(),
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_fat_and_iso() {
        let size = 2 << 20;
        let mut c = std::io::Cursor::new(vec![0u8; size]);
        crust_fat::format(&mut c, size as u64, "config-2", &[]).unwrap();
        assert_eq!(fat_label(&c.get_ref()[..512]).as_deref(), Some("config-2"));
        let size = 40 << 20;
        let mut c = std::io::Cursor::new(vec![0u8; size]);
        crust_fat::format(&mut c, size as u64, "OEM", &[]).unwrap();
        assert_eq!(fat_label(&c.get_ref()[..512]).as_deref(), Some("OEM"));
        assert_eq!(fat_label(&[0u8; 512]), None);
        let mut pvd = vec![b' '; 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..48].copy_from_slice(b"config-2");
        assert_eq!(iso9660_label(&pvd).as_deref(), Some("config-2"));
        pvd[1] = b'X';
        assert_eq!(iso9660_label(&pvd), None);
    }

    #[test]
    fn metadata_and_cmdline() {
        let m = parse_openstack_meta(
            br#"{"uuid":"x","hostname":"node1","public_keys":{"a":"ssh-ed25519 AAA a\n"}}"#,
        )
        .unwrap();
        assert_eq!(m.hostname.as_deref(), Some("node1"));
        assert_eq!(m.public_keys, ["ssh-ed25519 AAA a"]);
        assert!(parse_openstack_meta(b"{").is_err());
        assert_eq!(
            cmdline_url("quiet cloud-config-url=http://10.0.2.100:8080/cc.yml x").as_deref(),
            Some("http://10.0.2.100:8080/cc.yml")
        );
        assert_eq!(cloud_from_dmi("Amazon EC2\n", ""), Some(Cloud::Ec2));
        assert_eq!(
            cloud_from_dmi("Google", "Google Compute Engine"),
            Some(Cloud::Gce)
        );
        assert_eq!(
            cloud_from_dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)"),
            None
        );
    }

    /// A fake metadata server on 127.0.0.1 answering fixed paths.
    fn fake(
        routes: Vec<(&'static str, &'static str)>,
        need_header: Option<&'static str>,
    ) -> String {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                r.read_line(&mut first).unwrap();
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut has = false;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if need_header.is_some_and(|n| h.starts_with(n)) {
                        has = true;
                    }
                }
                let body = routes.iter().find(|(p, _)| *p == path).map(|(_, b)| *b);
                // The IMDSv2 token itself is handed out without one.
                let ok = need_header.is_none() || has || path == "/latest/api/token";
                let resp = match body {
                    Some(b) if ok => {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}", b.len())
                    }
                    Some(_) => "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_string(),
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                };
                let mut c = conn;
                let _ = c.write_all(resp.as_bytes());
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn ec2_and_gce_metadata_services() {
        let base = fake(
            vec![
                ("/2009-04-04/user-data", "#cloud-config\nhostname: x\n"),
                ("/2009-04-04/meta-data/hostname", "ip-10-0-0-5"),
                ("/2009-04-04/meta-data/local-ipv4", "10.0.0.5"),
                ("/2009-04-04/meta-data/public-ipv4", "54.1.2.3"),
                ("/2009-04-04/meta-data/public-keys/", "0=mykey"),
                (
                    "/2009-04-04/meta-data/public-keys/0/openssh-key",
                    "ssh-rsa AAAA me",
                ),
            ],
            None,
        );
        let f = ec2(&base).unwrap();
        assert_eq!(f.user_data.unwrap(), b"#cloud-config\nhostname: x\n");
        // IMDSv2: every request carries the session token.
        let v2 = fake(
            vec![
                ("/latest/api/token", "TOKEN123"),
                ("/2009-04-04/user-data", "#cloud-config\n"),
                ("/2009-04-04/meta-data/hostname", "ip-10-0-0-6"),
            ],
            Some("X-aws-ec2-metadata-token: TOKEN123"),
        );
        let f2 = ec2(&v2).unwrap();
        assert_eq!(f2.meta.hostname.as_deref(), Some("ip-10-0-0-6"));
        assert_eq!(f2.user_data.unwrap(), b"#cloud-config\n");
        assert_eq!(f.meta.local_ipv4, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(f.meta.public_ipv4, Some(Ipv4Addr::new(54, 1, 2, 3)));
        assert_eq!(f.meta.public_keys, ["ssh-rsa AAAA me"]);
        let base = fake(
            vec![
                (
                    "/computeMetadata/v1/instance/attributes/user-data",
                    "#cloud-config\n",
                ),
                (
                    "/computeMetadata/v1/instance/hostname",
                    "vm.c.proj.internal",
                ),
                (
                    "/computeMetadata/v1/instance/network-interfaces/0/ip",
                    "10.128.0.2",
                ),
                (
                    "/computeMetadata/v1/instance/attributes/ssh-keys",
                    "core:ssh-ed25519 AAAA core@laptop\nalice:ssh-rsa BBBB alice",
                ),
                (
                    "/computeMetadata/v1/project/attributes/sshKeys",
                    "bob:ecdsa-sha2-nistp256 CCCC bob\nnot a key",
                ),
            ],
            Some("Metadata-Flavor: Google"),
        );
        let f = gce(&base).unwrap();
        assert_eq!(f.meta.hostname.as_deref(), Some("vm.c.proj.internal"));
        assert_eq!(f.meta.local_ipv4, Some(Ipv4Addr::new(10, 128, 0, 2)));
        assert_eq!(f.meta.public_ipv4, None);
        assert_eq!(
            f.meta.public_keys,
            [
                "ssh-ed25519 AAAA core@laptop",
                "ssh-rsa BBBB alice",
                "ecdsa-sha2-nistp256 CCCC bob"
            ]
        );
        assert_eq!(f.user_data.unwrap(), b"#cloud-config\n");
    }
}
