//! Turning a validated cloud-config plus metadata into file operations (pure: [`plan`]), and
//! carrying them out under a root directory ([`apply`]) with temp file + rename, so a failure
//! part-way never leaves a half-written file.

use crust_common::cloudconfig as convert;
use crust_common::cloudconfig::{CloudConfig, EtcHosts};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::source::MetaData;

/// User `core`, as on CoreOS.
pub const CORE_UID: u32 = 500;
pub const CORE_GID: u32 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    Write {
        path: String,
        data: Vec<u8>,
        mode: u32,
        owner: Option<String>,
    },
    Symlink {
        path: String,
        target: String,
    },
    Dir {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// The account files as they are before applying (`/etc/passwd`, `/etc/group`, `/etc/shadow`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub passwd: String,
    pub group: String,
    pub shadow: String,
}

impl Accounts {
    pub fn read(root: &Path) -> Accounts {
        let r = |f: &str| std::fs::read_to_string(under(root, f)).unwrap_or_default();
        Accounts {
            passwd: r("/etc/passwd"),
            group: r("/etc/group"),
            shadow: r("/etc/shadow"),
        }
    }
}

fn ids(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

fn field<'a>(text: &'a str, name: &str, idx: usize) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(idx).copied())?
    })
}

fn append_line(text: &mut String, line: &str) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
}

/// A user's home to make: name, path, uid, gid and the keys for its `authorized_keys`.
pub type Home = (String, String, u32, u32, Vec<String>);

/// coreos-cloudinit's `users:`: a user that does not exist is created (useradd's rules: the next
/// free uid from 1000, or below 1000 for `system`; a group of its own unless `no_user_group` or
/// `primary_group`; supplementary `groups`, which must exist; home made unless
/// `no_create_home`); an existing user only gets its password hash replaced. Keys are returned
/// per user for `authorized_keys`. Pure: new account texts and the homes to make.
pub fn plan_users(
    users: &[crust_common::cloudconfig::User],
    acc: &Accounts,
) -> Result<(Accounts, Vec<Home>), String> {
    let mut out = acc.clone();
    let mut homes = Vec::new();
    for u in users {
        if u.name.is_empty() || u.name.contains(':') || u.name.contains('\n') {
            return Err(format!("users: {:?} is not a valid user name", u.name));
        }
        let exists = field(&out.passwd, &u.name, 0).is_some();
        if !exists {
            let taken: Vec<u32> = ids(&out.passwd);
            let uid = if u.system {
                (201..1000).rev().find(|i| !taken.contains(i))
            } else {
                (1000..60000).find(|i| !taken.contains(i))
            }
            .ok_or("users: no free uid left")?;
            let gid = match &u.primary_group {
                Some(g) => field(&out.group, g, 2)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        format!("users: {}: primary_group {g} does not exist", u.name)
                    })?,
                None if u.no_user_group => 100,
                None => {
                    let gtaken = ids(&out.group);
                    let gid = if gtaken.contains(&uid) {
                        (1000..60000)
                            .find(|i| !gtaken.contains(i))
                            .ok_or("users: no free gid left")?
                    } else {
                        uid
                    };
                    append_line(&mut out.group, &format!("{}:x:{gid}:", u.name));
                    gid
                }
            };
            let home = u
                .homedir
                .clone()
                .unwrap_or_else(|| format!("/home/{}", u.name));
            let shell = u.shell.clone().unwrap_or_else(|| "/bin/sh".into());
            let gecos = u.gecos.clone().unwrap_or_default().replace(':', " ");
            append_line(
                &mut out.passwd,
                &format!("{}:x:{uid}:{gid}:{gecos}:{home}:{shell}", u.name),
            );
            append_line(
                &mut out.shadow,
                &format!("{}:{}:1::::::", u.name, u.passwd.as_deref().unwrap_or("*")),
            );
            if !u.no_create_home {
                homes.push((u.name.clone(), home, uid, gid, Vec::new()));
            }
        } else if let Some(hash) = &u.passwd {
            out.shadow = out
                .shadow
                .lines()
                .map(|l| {
                    let mut f: Vec<String> = l.split(':').map(str::to_string).collect();
                    if f.first().map(String::as_str) == Some(u.name.as_str()) && f.len() > 1 {
                        f[1] = hash.clone();
                    }
                    f.join(":") + "\n"
                })
                .collect();
        }
        for g in &u.groups {
            let mut found = false;
            out.group = out
                .group
                .lines()
                .map(|l| {
                    let mut f: Vec<String> = l.split(':').map(str::to_string).collect();
                    if f.first() == Some(g) && f.len() == 4 {
                        found = true;
                        let mut members: Vec<&str> =
                            f[3].split(',').filter(|m| !m.is_empty()).collect();
                        if !members.contains(&u.name.as_str()) {
                            members.push(&u.name);
                        }
                        f[3] = members.join(",");
                    }
                    f.join(":") + "\n"
                })
                .collect();
            if !found {
                return Err(format!("users: {}: group {g} does not exist", u.name));
            }
        }
        if !u.ssh_authorized_keys.is_empty() {
            let uid: u32 = field(&out.passwd, &u.name, 2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let gid: u32 = field(&out.passwd, &u.name, 3)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let home = field(&out.passwd, &u.name, 5).unwrap_or("/").to_string();
            match homes.iter_mut().find(|h| h.0 == u.name) {
                Some(h) => h.4.extend(u.ssh_authorized_keys.iter().cloned()),
                None => homes.push((
                    u.name.clone(),
                    home,
                    uid,
                    gid,
                    u.ssh_authorized_keys.clone(),
                )),
            }
        }
    }
    Ok((out, homes))
}

/// A unit command to send once the files are in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub verb: &'static str,
    pub unit: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub hostname: Option<String>,
    pub files: Vec<FileOp>,
    pub commands: Vec<Command>,
    /// Whether systemd-networkd should reread its files (a .network/.netdev/.link was written).
    pub network_changed: bool,
}

fn unit_dir(runtime: bool) -> &'static str {
    if runtime {
        "/run/systemd/system"
    } else {
        "/etc/systemd/system"
    }
}

/// `WantedBy=` targets of a unit's [Install] section, read with the one unit-file syntax parser.
fn wanted_by(content: &str) -> Vec<String> {
    crust_common::unit::parse(content)
        .unwrap_or_default()
        .iter()
        .filter(|s| s.name == "Install")
        .flat_map(|s| s.entries.iter())
        .filter(|e| e.key == "WantedBy")
        .flat_map(|e| e.value.split_whitespace().map(str::to_string))
        .collect()
}

/// Everything the document and metadata ask for, with no account files (see [`plan_with`]).
/// Fails only on data that cannot be decoded.
pub fn plan(cfg: &CloudConfig, meta: &MetaData, update_conf_base: &str) -> Result<Plan, String> {
    plan_with(cfg, meta, update_conf_base, &Accounts::default())
}

/// [`plan`] with the machine's account files, which `users:` edits.
pub fn plan_with(
    cfg: &CloudConfig,
    meta: &MetaData,
    update_conf_base: &str,
    acc: &Accounts,
) -> Result<Plan, String> {
    let mut p = Plan {
        hostname: cfg.hostname.clone().or_else(|| meta.hostname.clone()),
        ..Plan::default()
    };
    let mut core_keys: Vec<String> = Vec::new();
    if !cfg.users.is_empty() {
        let (new, homes) = plan_users(&cfg.users, acc)?;
        p.files.push(FileOp::Write {
            path: "/etc/passwd".into(),
            data: new.passwd.into_bytes(),
            mode: 0o644,
            owner: None,
        });
        p.files.push(FileOp::Write {
            path: "/etc/group".into(),
            data: new.group.into_bytes(),
            mode: 0o644,
            owner: None,
        });
        p.files.push(FileOp::Write {
            path: "/etc/shadow".into(),
            data: new.shadow.into_bytes(),
            mode: 0o600,
            owner: None,
        });
        for (name, home, uid, gid, keys) in homes {
            if name == "core" {
                core_keys.extend(keys);
                continue;
            }
            p.files.push(FileOp::Dir {
                path: home.clone(),
                mode: 0o755,
                uid,
                gid,
            });
            if !keys.is_empty() {
                p.files.push(FileOp::Dir {
                    path: format!("{home}/.ssh"),
                    mode: 0o700,
                    uid,
                    gid,
                });
                p.files.push(FileOp::Write {
                    path: format!("{home}/.ssh/authorized_keys"),
                    data: (keys.join("\n") + "\n").into_bytes(),
                    mode: 0o600,
                    owner: Some(format!("{uid}:{gid}")),
                });
            }
        }
    }
    // write_files first (decoded here so a bad encoding stops everything before any write).
    for f in &cfg.write_files {
        let data = f
            .decoded()
            .map_err(|e| format!("write_files {}: {e}", f.path))?;
        p.files.push(FileOp::Write {
            path: f.path.clone(),
            data,
            mode: f.mode(),
            owner: f.owner.clone(),
        });
    }
    // Keys for core: metadata keys and ssh_authorized_keys, once each.
    let mut keys: Vec<String> = Vec::new();
    for k in meta
        .public_keys
        .iter()
        .chain(&cfg.ssh_authorized_keys)
        .chain(&core_keys)
    {
        let k = k.trim().to_string();
        if !k.is_empty() && !keys.contains(&k) {
            keys.push(k);
        }
    }
    if !keys.is_empty() {
        p.files.push(FileOp::Dir {
            path: "/home/core/.ssh".into(),
            mode: 0o700,
            uid: CORE_UID,
            gid: CORE_GID,
        });
        p.files.push(FileOp::Write {
            path: "/home/core/.ssh/authorized_keys".into(),
            data: (keys.join("\n") + "\n").into_bytes(),
            mode: 0o600,
            owner: Some("core:core".into()),
        });
    }
    if let Some(EtcHosts::Localhost) = cfg.manage_etc_hosts {
        let host = p.hostname.clone().unwrap_or_else(|| "localhost".into());
        p.files.push(FileOp::Write {
            path: "/etc/hosts".into(),
            data: format!("127.0.0.1 {host} localhost\n::1 {host} localhost\n").into_bytes(),
            mode: 0o644,
            owner: None,
        });
    }
    for u in &cfg.coreos.units {
        let network = [".network", ".netdev", ".link"]
            .iter()
            .any(|s| u.name.ends_with(s));
        let dir = if network {
            if u.runtime {
                "/run/systemd/network"
            } else {
                "/etc/systemd/network"
            }
        } else {
            unit_dir(u.runtime)
        };
        if u.mask {
            p.files.push(FileOp::Symlink {
                path: format!("{dir}/{}", u.name),
                target: "/dev/null".into(),
            });
            continue;
        }
        if let Some(content) = &u.content {
            p.files.push(FileOp::Write {
                path: format!("{dir}/{}", u.name),
                data: content.clone().into_bytes(),
                mode: 0o644,
                owner: None,
            });
            if network {
                p.network_changed = true;
            }
            if u.enable {
                let targets = wanted_by(content);
                for t in if targets.is_empty() {
                    vec!["multi-user.target".to_string()]
                } else {
                    targets
                } {
                    p.files.push(FileOp::Symlink {
                        path: format!("{dir}/{t}.wants/{}", u.name),
                        target: format!("../{}", u.name),
                    });
                }
            }
        }
        for d in &u.drop_ins {
            p.files.push(FileOp::Write {
                path: format!("{}/{}.d/{}", unit_dir(u.runtime), u.name, d.name),
                data: d.content.clone().into_bytes(),
                mode: 0o644,
                owner: None,
            });
        }
        if let Some(c) = u.command {
            use crust_common::cloudconfig::UnitCommand as C;
            let verb = match c {
                C::Start => "start",
                C::Stop => "stop",
                C::Restart | C::Reload | C::ReloadOrRestart => "restart",
                C::TryRestart | C::ReloadOrTryRestart => "try-restart",
            };
            p.commands.push(Command {
                verb,
                unit: u.name.clone(),
            });
        }
    }
    let g = convert::generate(&cfg.coreos, update_conf_base);
    for d in &g.dropins {
        p.files.push(FileOp::Write {
            path: format!("{}/{}", unit_dir(d.runtime), d.relative_path()),
            data: d.content.clone().into_bytes(),
            mode: 0o644,
            owner: None,
        });
    }
    for f in &g.files {
        p.files.push(FileOp::Write {
            path: f.path.clone(),
            data: f.content.clone().into_bytes(),
            mode: f.mode,
            owner: None,
        });
    }
    if let Some(oem) = &cfg.coreos.oem {
        let mut s = String::new();
        for (k, v) in [
            ("ID", &oem.id),
            ("NAME", &oem.name),
            ("VERSION_ID", &oem.version_id),
            ("HOME_URL", &oem.home_url),
            ("BUG_REPORT_URL", &oem.bug_report_url),
        ] {
            if let Some(v) = v {
                s.push_str(&format!("{k}={v}\n"));
            }
        }
        p.files.push(FileOp::Write {
            path: "/etc/oem-release".into(),
            data: s.into_bytes(),
            mode: 0o644,
            owner: None,
        });
    }
    for a in &g.actions {
        let verb = if a.mask { "stop" } else { "restart" };
        p.commands.push(Command {
            verb,
            unit: a.unit.clone(),
        });
    }
    if p.network_changed {
        p.commands.push(Command {
            verb: "try-restart",
            unit: "systemd-networkd.service".into(),
        });
    }
    Ok(p)
}

fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// `user[:group]` to ids from the passwd and group files under `root`.
pub fn resolve_owner(root: &Path, owner: &str) -> Result<(u32, u32), String> {
    let (user, group) = owner.split_once(':').unwrap_or((owner, ""));
    let passwd = std::fs::read_to_string(under(root, "/etc/passwd")).unwrap_or_default();
    let groups = std::fs::read_to_string(under(root, "/etc/group")).unwrap_or_default();
    let field = |text: &str, name: &str, idx: usize| -> Option<u32> {
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| f.get(idx)?.parse().ok())
    };
    let uid = user
        .parse()
        .ok()
        .or_else(|| field(&passwd, user, 2))
        .ok_or_else(|| format!("owner {owner:?}: no user {user:?} in /etc/passwd"))?;
    let gid = if group.is_empty() {
        field(&passwd, user, 3).unwrap_or(uid)
    } else {
        group
            .parse()
            .ok()
            .or_else(|| field(&groups, group, 2))
            .ok_or_else(|| format!("owner {owner:?}: no group {group:?} in /etc/group"))?
    };
    Ok((uid, gid))
}

/// Makes sure user `core` exists (uid/gid 500, home /home/core, shell /bin/sh, no password).
pub fn ensure_core(root: &Path) -> Result<(), String> {
    let add = |file: &str, line: &str, mode: u32| -> Result<(), String> {
        let path = under(root, file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().any(|l| l.starts_with("core:")) {
            return Ok(());
        }
        let mut new = text;
        if !new.is_empty() && !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(line);
        new.push('\n');
        write_atomic(&path, new.as_bytes(), mode)
    };
    add(
        "/etc/passwd",
        "core:x:500:500:CoreOS Admin:/home/core:/bin/sh",
        0o644,
    )?;
    add("/etc/group", "core:x:500:", 0o644)?;
    add("/etc/shadow", "core:*:1::::::", 0o600)?;
    let home = under(root, "/home/core");
    std::fs::create_dir_all(&home).map_err(|e| format!("creating {}: {e}", home.display()))?;
    let _ = nix::unistd::chown(&home, Some(CORE_UID.into()), Some(CORE_GID.into()));
    Ok(())
}

/// A scratch root holding the planned passwd/group (when `users:` changes them) so owners
/// resolve against them before anything is written.
fn tempfile_root(
    root: &Path,
    passwd: Option<String>,
    group: Option<String>,
) -> Result<Option<PathBuf>, String> {
    if passwd.is_none() && group.is_none() {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("crust-cloudinit-{}", std::process::id()));
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| format!("creating {}: {e}", etc.display()))?;
    let cur = |f: &str| std::fs::read_to_string(under(root, f)).unwrap_or_default();
    std::fs::write(
        etc.join("passwd"),
        passwd.unwrap_or_else(|| cur("/etc/passwd")),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        etc.join("group"),
        group.unwrap_or_else(|| cur("/etc/group")),
    )
    .map_err(|e| e.to_string())?;
    Ok(Some(dir))
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.cloudinit-tmp"));
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming into {}: {e}", path.display()))
}

/// Carries the file operations out under `root`. Owners are resolved first, so an unknown
/// owner stops before anything is written.
pub fn apply(root: &Path, plan: &Plan) -> Result<(), String> {
    let needs_core = plan.files.iter().any(|f| match f {
        FileOp::Write { owner: Some(o), .. } => o.starts_with("core"),
        FileOp::Dir { uid, .. } => *uid == CORE_UID,
        _ => false,
    });
    if needs_core {
        ensure_core(root)?;
    }
    // Owners are looked up in the account files as they will be (users: may add some).
    let planned = |path: &str| {
        plan.files.iter().find_map(|f| match f {
            FileOp::Write { path: p, data, .. } if p == path => {
                Some(String::from_utf8_lossy(data).into_owned())
            }
            _ => None,
        })
    };
    let scratch = tempfile_root(root, planned("/etc/passwd"), planned("/etc/group"))?;
    let lookup_root = scratch.as_deref().unwrap_or(root);
    let mut owners = Vec::new();
    for f in &plan.files {
        owners.push(match f {
            FileOp::Write { owner: Some(o), .. } => Some(resolve_owner(lookup_root, o)?),
            _ => None,
        });
    }
    if let Some(dir) = &scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    for (f, owner) in plan.files.iter().zip(owners) {
        match f {
            FileOp::Write {
                path, data, mode, ..
            } => {
                let p = under(root, path);
                write_atomic(&p, data, *mode)?;
                if let Some((uid, gid)) = owner {
                    nix::unistd::chown(&p, Some(uid.into()), Some(gid.into()))
                        .map_err(|e| format!("chown {}: {e}", p.display()))?;
                }
            }
            FileOp::Symlink { path, target } => {
                let p = under(root, path);
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d)
                        .map_err(|e| format!("creating {}: {e}", d.display()))?;
                }
                let _ = std::fs::remove_file(&p);
                std::os::unix::fs::symlink(target, &p)
                    .map_err(|e| format!("linking {} -> {target}: {e}", p.display()))?;
            }
            FileOp::Dir {
                path,
                mode,
                uid,
                gid,
            } => {
                let p = under(root, path);
                std::fs::create_dir_all(&p)
                    .map_err(|e| format!("creating {}: {e}", p.display()))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("chmod {}: {e}", p.display()))?;
                let _ = nix::unistd::chown(&p, Some((*uid).into()), Some((*gid).into()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_common::cloudconfig::parse;

    fn cfg(text: &str) -> CloudConfig {
        parse(text).unwrap().0
    }

    #[test]
    fn plans_files_units_keys_and_dropins() {
        let c = cfg(r#"#cloud-config
hostname: web1
ssh_authorized_keys:
  - ssh-ed25519 AAAA user
write_files:
  - path: /etc/a.txt
    permissions: "0600"
    owner: core:core
    content: hello
  - path: /etc/b.bin
    encoding: b64
    content: aGk=
manage_etc_hosts: localhost
coreos:
  etcd2:
    name: node1
    advertise_client_urls: http://10.0.0.1:2379
  units:
    - name: hello.service
      command: start
      enable: true
      content: |
        [Service]
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
    - name: bad.service
      mask: true
    - name: 10-static.network
      runtime: true
      content: |
        [Match]
        Name=eth0
    - name: docker.service
      drop_ins:
        - name: 50-opts.conf
          content: "[Service]\nEnvironment=X=1\n"
"#);
        let meta = MetaData {
            hostname: Some("ignored".into()),
            public_keys: vec!["ssh-ed25519 AAAA user".into(), "ssh-rsa BBBB meta".into()],
            ..MetaData::default()
        };
        let p = plan(&c, &meta, "").unwrap();
        assert_eq!(p.hostname.as_deref(), Some("web1"));
        let write = |path: &str| {
            p.files.iter().find_map(|f| match f {
                FileOp::Write {
                    path: q,
                    data,
                    mode,
                    ..
                } if q == path => Some((data.clone(), *mode)),
                _ => None,
            })
        };
        assert_eq!(write("/etc/a.txt"), Some((b"hello".to_vec(), 0o600)));
        assert_eq!(write("/etc/b.bin"), Some((b"hi".to_vec(), 0o644)));
        // Metadata keys first, duplicates once.
        assert_eq!(
            write("/home/core/.ssh/authorized_keys").unwrap().0,
            b"ssh-ed25519 AAAA user\nssh-rsa BBBB meta\n"
        );
        assert!(write("/etc/hosts")
            .unwrap()
            .0
            .starts_with(b"127.0.0.1 web1 localhost"));
        assert!(write("/etc/systemd/system/hello.service").is_some());
        assert!(write("/run/systemd/network/10-static.network").is_some());
        assert!(write("/etc/systemd/system/docker.service.d/50-opts.conf").is_some());
        let etcd = write("/run/systemd/system/etcd2.service.d/20-cloudinit.conf")
            .unwrap()
            .0;
        assert!(String::from_utf8_lossy(&etcd).contains("ETCD_NAME=node1"));
        assert!(p.files.contains(&FileOp::Symlink {
            path: "/etc/systemd/system/bad.service".into(),
            target: "/dev/null".into()
        }));
        assert!(p.files.contains(&FileOp::Symlink {
            path: "/etc/systemd/system/multi-user.target.wants/hello.service".into(),
            target: "../hello.service".into()
        }));
        assert!(p.network_changed);
        let verbs: Vec<(&str, &str)> = p
            .commands
            .iter()
            .map(|c| (c.verb, c.unit.as_str()))
            .collect();
        assert_eq!(
            verbs,
            [
                ("start", "hello.service"),
                ("try-restart", "systemd-networkd.service")
            ]
        );
    }

    #[test]
    fn applies_under_a_root_and_resolves_owners() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.path().join("etc/group"), "root:x:0:\n").unwrap();
        let p = plan(
            &cfg("#cloud-config\nwrite_files:\n  - path: /etc/x/y.conf\n    content: v\n    owner: root:root\n"),
            &MetaData { public_keys: vec!["ssh-ed25519 K".into()], ..MetaData::default() },
            "",
        )
        .unwrap();
        apply(root.path(), &p).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/x/y.conf")).unwrap(),
            "v"
        );
        // core was added because its keys were asked for.
        let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
        assert!(passwd.contains("core:x:500:500:"), "{passwd}");
        let keys = root.path().join("home/core/.ssh/authorized_keys");
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), "ssh-ed25519 K\n");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&keys).unwrap().mode() & 0o777, 0o600);
        assert!(resolve_owner(root.path(), "nobody:root")
            .unwrap_err()
            .contains("no user"));
        assert_eq!(resolve_owner(root.path(), "core").unwrap(), (500, 500));
        // An unknown owner stops before anything is written.
        let bad = plan(
            &cfg("#cloud-config\nwrite_files:\n  - path: /etc/first\n    content: a\n  - path: /etc/second\n    content: b\n    owner: ghost\n"),
            &MetaData::default(),
            "",
        )
        .unwrap();
        assert!(apply(root.path(), &bad).unwrap_err().contains("ghost"));
        assert!(!root.path().join("etc/first").exists());
    }

    #[test]
    fn users_are_created_like_useradd() {
        let acc = Accounts {
            passwd: "root:x:0:0::/root:/bin/sh\ncore:x:500:500::/home/core:/bin/sh\n".into(),
            group: "root:x:0:\nwheel:x:10:root\ncore:x:500:\n".into(),
            shadow: "root:*:1::::::\ncore:*:1::::::\n".into(),
        };
        let c = cfg("#cloud-config\nusers:\n  - name: elroy\n    passwd: $6$x$y\n    groups: [wheel]\n    ssh_authorized_keys: [ssh-ed25519 E elroy]\n  - name: svc\n    system: true\n    no_create_home: true\n  - name: core\n    passwd: $6$new\n    ssh_authorized_keys: [ssh-ed25519 C more]\n");
        let p = plan_with(&c, &MetaData::default(), "", &acc).unwrap();
        let text = |path: &str| {
            p.files
                .iter()
                .find_map(|f| match f {
                    FileOp::Write { path: q, data, .. } if q == path => {
                        Some(String::from_utf8_lossy(data).into_owned())
                    }
                    _ => None,
                })
                .unwrap()
        };
        let passwd = text("/etc/passwd");
        assert!(
            passwd.contains("elroy:x:1000:1000::/home/elroy:/bin/sh"),
            "{passwd}"
        );
        assert!(
            passwd.contains("svc:x:999:999::/home/svc:/bin/sh"),
            "{passwd}"
        );
        let group = text("/etc/group");
        assert!(
            group.contains("wheel:x:10:root,elroy") && group.contains("elroy:x:1000:"),
            "{group}"
        );
        let shadow = text("/etc/shadow");
        assert!(
            shadow.contains("elroy:$6$x$y:") && shadow.contains("core:$6$new:"),
            "{shadow}"
        );
        assert_eq!(
            text("/home/elroy/.ssh/authorized_keys"),
            "ssh-ed25519 E elroy\n"
        );
        assert_eq!(
            text("/home/core/.ssh/authorized_keys"),
            "ssh-ed25519 C more\n"
        );
        assert!(p.files.contains(&FileOp::Dir {
            path: "/home/elroy".into(),
            mode: 0o755,
            uid: 1000,
            gid: 1000
        }));
        assert!(!p
            .files
            .iter()
            .any(|f| matches!(f, FileOp::Dir { path, .. } if path == "/home/svc")));
        // A missing group stops everything before anything is planned.
        let bad = cfg("#cloud-config\nusers:\n  - name: x\n    groups: [nope]\n");
        assert!(plan_with(&bad, &MetaData::default(), "", &acc)
            .unwrap_err()
            .contains("group nope does not exist"));
    }
}
