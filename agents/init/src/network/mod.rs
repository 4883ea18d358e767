//! `crust-agent networkd` (systemd-networkd.service): configures every Ethernet link from
//! systemd-networkd `.network` files, and by DHCP where none matches, as CoreOS machines were
//! configured. Files come from `/etc/systemd/network`, `/run/systemd/network` and
//! `/usr/lib/systemd/network` (a name in an earlier directory hides the same name in a later
//! one; files apply in name order; the first file whose [Match] fits a link configures it), and
//! are read with the one unit-file syntax parser. Understood: [Match] Name= (globs, lists) and
//! MACAddress=; [Network] Address=, Gateway=, DNS=, Domains=, DHCP=; [Address] Address=;
//! [Route] Destination=, Gateway=. Links are set with busybox `ip`, DHCP runs busybox `udhcpc`
//! (its script records each lease in `/run/crust/net/LINK.ipv4`, which cloud-config reads for
//! `$private_ipv4`; static addresses are recorded there too). `/etc/resolv.conf` points at
//! `/run/crust/resolv.conf`; `/etc/hosts` is written when missing. Running it again (restart)
//! re-reads the files and reconfigures the links.

use crust_common::unit::{parse, Section};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DIRS: [&str; 3] = [
    "/etc/systemd/network",
    "/run/systemd/network",
    "/usr/lib/systemd/network",
];
const STATE: &str = "/run/crust/net";
const RESOLV: &str = "/run/crust/resolv.conf";

/// What one `.network` file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkFile {
    pub name: String,
    pub match_names: Vec<String>,
    pub match_macs: Vec<String>,
    pub addresses: Vec<String>,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
    pub domains: Vec<String>,
    pub dhcp: bool,
    pub routes: Vec<(String, Option<String>)>,
}

/// Parses a `.network` file; unknown keys are ignored as systemd-networkd warns and goes on.
pub fn parse_network(name: &str, text: &str) -> Result<NetworkFile, String> {
    let sections: Vec<Section> =
        parse(text).map_err(|e| format!("{name}: line {}: {}", e.line, e.why))?;
    let mut n = NetworkFile {
        name: name.to_string(),
        ..NetworkFile::default()
    };
    for s in &sections {
        let mut route = (None::<String>, None::<String>);
        for e in &s.entries {
            let words = || e.value.split_whitespace().map(str::to_string);
            match (s.name.as_str(), e.key.as_str()) {
                ("Match", "Name") => n.match_names.extend(words()),
                ("Match", "MACAddress") => {
                    n.match_macs.extend(words().map(|m| m.to_ascii_lowercase()))
                }
                ("Network", "Address") | ("Address", "Address") => {
                    n.addresses.push(e.value.trim().to_string())
                }
                ("Network", "Gateway") => n.gateway = Some(e.value.trim().to_string()),
                ("Network", "DNS") => n.dns.extend(words()),
                ("Network", "Domains") => n.domains.extend(words()),
                ("Network", "DHCP") => {
                    n.dhcp = matches!(e.value.trim(), "yes" | "true" | "ipv4" | "both" | "1")
                }
                ("Route", "Destination") => route.0 = Some(e.value.trim().to_string()),
                ("Route", "Gateway") => route.1 = Some(e.value.trim().to_string()),
                _ => {}
            }
        }
        if s.name == "Route" {
            n.routes
                .push((route.0.unwrap_or_else(|| "default".into()), route.1));
        }
    }
    for a in &n.addresses {
        check_cidr(a).map_err(|why| format!("{name}: Address={a}: {why}"))?;
    }
    Ok(n)
}

fn check_cidr(a: &str) -> Result<(), String> {
    let (ip, len) = a
        .split_once('/')
        .ok_or("needs a prefix length, e.g. 10.0.0.5/24")?;
    ip.parse::<std::net::IpAddr>()
        .map_err(|_| "not an IP address".to_string())?;
    match len.parse::<u8>() {
        Ok(l) if l <= 128 => Ok(()),
        _ => Err("the prefix length is not a number from 0 to 128".into()),
    }
}

/// Shell-style glob with `*` and `?`.
pub fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

impl NetworkFile {
    pub fn matches(&self, link: &str, mac: &str) -> bool {
        let name_ok = self.match_names.is_empty() || self.match_names.iter().any(|p| glob(p, link));
        let mac_ok = self.match_macs.is_empty()
            || self
                .match_macs
                .iter()
                .any(|m| m == &mac.to_ascii_lowercase());
        name_ok && mac_ok
    }
}

/// The `.network` files in effect under `root`, in application order.
pub fn load(root: &Path) -> (Vec<NetworkFile>, Vec<String>) {
    let mut by_name: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for d in DIRS.iter().rev() {
        if let Ok(rd) = fs::read_dir(root.join(d.trim_start_matches('/'))) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with(".network") {
                    by_name.insert(n, e.path());
                }
            }
        }
    }
    let mut files = Vec::new();
    let mut notes = Vec::new();
    for (name, path) in by_name {
        if fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null")) {
            continue;
        }
        match fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_network(&name, &t))
        {
            Ok(f) => files.push(f),
            Err(e) => notes.push(format!("{}: {e}; the file is ignored", path.display())),
        }
    }
    (files, notes)
}

/// `resolv.conf` text from name servers and search domains.
pub fn resolv_conf(dns: &[String], domains: &[String]) -> String {
    let mut s = String::from("# written by crust networkd from .network files and DHCP leases\n");
    if !domains.is_empty() {
        s.push_str(&format!("search {}\n", domains.join(" ")));
    }
    for d in dns {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("/usr/bin/busybox")
        .arg("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn links() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n == "lo" || !e.path().join("device").exists() {
                continue;
            }
            let mac = fs::read_to_string(e.path().join("address")).unwrap_or_default();
            out.push((n, mac.trim().to_string()));
        }
    }
    out.sort();
    out
}

fn stop_dhcp(link: &str) {
    let pidfile = format!("/run/udhcpc.{link}.pid");
    if let Some(pid) = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = fs::remove_file(pidfile);
}

pub fn main(_args: &[String]) -> i32 {
    let _ = fs::create_dir_all(STATE);
    let _ = ip(&["link", "set", "lo", "up"]);
    let (files, notes) = load(Path::new("/"));
    for n in notes {
        eprintln!("networkd: {n}");
    }
    let mut dns: Vec<String> = Vec::new();
    let mut domains: Vec<String> = Vec::new();
    let mut failed = false;
    for (link, mac) in links() {
        let file = files.iter().find(|f| f.matches(&link, &mac));
        stop_dhcp(&link);
        let _ = ip(&["link", "set", &link, "up"]);
        let dhcp = file.is_none_or(|f| f.dhcp || f.addresses.is_empty());
        if let Some(f) = file {
            println!("networkd: {link}: configured by {}", f.name);
            let _ = ip(&["-4", "addr", "flush", "dev", &link]);
            for a in &f.addresses {
                if let Err(e) = ip(&["addr", "add", a, "dev", &link]) {
                    eprintln!("networkd: {link}: {e}");
                    failed = true;
                }
            }
            if let Some(first) = f.addresses.iter().find(|a| !a.contains(':')) {
                let addr = first.split('/').next().unwrap_or(first);
                let _ = fs::write(format!("{STATE}/{link}.ipv4"), format!("{addr}\n"));
            }
            if let Some(g) = &f.gateway {
                if let Err(e) = ip(&["route", "replace", "default", "via", g, "dev", &link]) {
                    eprintln!("networkd: {link}: {e}");
                    failed = true;
                }
            }
            for (dest, gw) in &f.routes {
                let mut args = vec!["route", "replace", dest.as_str()];
                if let Some(g) = gw {
                    args.extend(["via", g.as_str()]);
                }
                args.extend(["dev", link.as_str()]);
                if let Err(e) = ip(&args) {
                    eprintln!("networkd: {link}: {e}");
                    failed = true;
                }
            }
            dns.extend(f.dns.iter().cloned());
            domains.extend(f.domains.iter().cloned());
        }
        if dhcp {
            let status = Command::new("/usr/bin/busybox")
                .args([
                    "udhcpc", "-b", "-R", "-t", "3", "-T", "1", "-A", "5", "-i", &link,
                ])
                .args([
                    "-s",
                    "/usr/lib/crust/udhcpc.script",
                    "-p",
                    &format!("/run/udhcpc.{link}.pid"),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if let Err(e) = status {
                eprintln!("networkd: {link}: udhcpc: {e}");
            }
        }
    }
    // Name servers from DHCP leases come after static ones.
    if let Ok(rd) = fs::read_dir(STATE) {
        let mut leases: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "dns"))
            .collect();
        leases.sort();
        for p in leases {
            for l in fs::read_to_string(p).unwrap_or_default().lines() {
                if let Some(s) = l.strip_prefix("nameserver ") {
                    if !dns.iter().any(|d| d == s) {
                        dns.push(s.to_string());
                    }
                }
            }
        }
    }
    let _ = fs::write(RESOLV, resolv_conf(&dns, &domains));
    let etc_resolv = Path::new("/etc/resolv.conf");
    if fs::symlink_metadata(etc_resolv).is_err() {
        let _ = std::os::unix::fs::symlink(RESOLV, etc_resolv);
    }
    if !Path::new("/etc/hosts").exists() {
        let _ = fs::write(
            "/etc/hosts",
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        );
    }
    if failed {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_files_parse_match_and_layer() {
        let f = parse_network(
            "10-static.network",
            "[Match]\nName=eth* en?1\nMACAddress=02:00:00:00:00:01\n[Network]\nAddress=10.0.0.5/24\nGateway=10.0.0.254\nDNS=10.0.0.53 1.1.1.1\nDomains=example.internal\n[Route]\nDestination=192.168.0.0/16\nGateway=10.0.0.1\n",
        )
        .unwrap();
        assert_eq!(f.addresses, ["10.0.0.5/24"]);
        assert_eq!(f.gateway.as_deref(), Some("10.0.0.254"));
        assert_eq!(f.dns, ["10.0.0.53", "1.1.1.1"]);
        assert_eq!(
            f.routes,
            [("192.168.0.0/16".to_string(), Some("10.0.0.1".to_string()))]
        );
        assert!(!f.dhcp);
        assert!(f.matches("eth0", "02:00:00:00:00:01"));
        assert!(!f.matches("eth0", "02:00:00:00:00:02"));
        assert!(!f.matches("wlan0", "02:00:00:00:00:01"));
        assert!(parse_network("x.network", "[Network]\nAddress=10.0.0.5\n")
            .unwrap_err()
            .contains("prefix length"));
        assert!(glob("en?1", "ens1") && !glob("en?1", "ens11") && glob("*", "anything"));

        let r = tempfile::tempdir().unwrap();
        let etc = r.path().join("etc/systemd/network");
        let usr = r.path().join("usr/lib/systemd/network");
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(&usr).unwrap();
        fs::write(
            usr.join("50-dhcp.network"),
            "[Match]\nName=*\n[Network]\nDHCP=yes\n",
        )
        .unwrap();
        fs::write(
            usr.join("10-a.network"),
            "[Match]\nName=eth0\n[Network]\nAddress=10.0.0.9/24\n",
        )
        .unwrap();
        // Same name in /etc wins; order is by file name.
        fs::write(
            etc.join("10-a.network"),
            "[Match]\nName=eth0\n[Network]\nAddress=10.0.0.7/24\n",
        )
        .unwrap();
        fs::write(etc.join("20-bad.network"), "[Network]\nAddress=nope/24\n").unwrap();
        let (files, notes) = load(r.path());
        assert_eq!(
            files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["10-a.network", "50-dhcp.network"]
        );
        assert_eq!(files[0].addresses, ["10.0.0.7/24"]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(
            resolv_conf(&["10.0.0.53".into()], &["x.internal".into()]),
            "# written by crust networkd from .network files and DHCP leases\nsearch x.internal\nnameserver 10.0.0.53\n"
        );
    }
}
