//! Whole-document tests: every key, the diagnostics with their positions, the fixtures, and
//! random input that must never panic.

use super::*;
use std::collections::BTreeMap;

fn ok(text: &str) -> (CloudConfig, Vec<Diagnostic>) {
    match parse(text) {
        Ok(v) => v,
        Err(e) => panic!("expected a valid document, got {e}\n{:#?}", e.diagnostics()),
    }
}

/// `(line, severity, message fragment)` of each diagnostic.
fn diags(text: &str) -> Vec<(usize, Severity, String)> {
    validate(text)
        .diagnostics
        .into_iter()
        .map(|d| (d.line, d.severity, d.message))
        .collect()
}

fn assert_one(text: &str, line: usize, severity: Severity, fragment: &str) {
    let got = diags(text);
    assert!(
        got.len() == 1 && got[0].0 == line && got[0].1 == severity && got[0].2.contains(fragment),
        "want one {severity} on line {line} containing {fragment:?}, got {got:#?}\nin:\n{text}"
    );
}

#[test]
fn classification_by_first_line() {
    let cases: &[(&str, UserDataKind)] = &[
        ("#cloud-config\nhostname: a\n", UserDataKind::CloudConfig),
        (
            "#cloud-config\r\nhostname: a\r\n",
            UserDataKind::CloudConfig,
        ),
        ("\u{feff}#cloud-config\n", UserDataKind::CloudConfig),
        ("#cloud-config", UserDataKind::CloudConfig),
        ("#cloud-config  \n", UserDataKind::CloudConfig),
        ("#!/bin/sh\necho hi\n", UserDataKind::Script),
        ("#!/usr/bin/env python3\n", UserDataKind::Script),
        ("", UserDataKind::Empty),
        ("  \n\n", UserDataKind::Empty),
        ("hostname: a\n", UserDataKind::Unknown),
        ("#cloud-config-archive\n", UserDataKind::Unknown),
        ("{\"ignition\": {}}", UserDataKind::Unknown),
        (" #cloud-config\n", UserDataKind::Unknown),
    ];
    for (text, kind) in cases {
        assert_eq!(classify(text), *kind, "{text:?}");
    }
}

#[test]
fn parse_refuses_what_is_not_a_cloud_config() {
    assert_eq!(parse("#!/bin/sh\n"), Err(ParseError::Script));
    assert_eq!(parse(""), Err(ParseError::Empty));
    let e = parse("hostname: a\n").expect_err("no header");
    assert!(matches!(e, ParseError::NotCloudConfig { .. }));
    assert!(e.to_string().contains("#cloud-config"), "{e}");
    let v = validate("hostname: a\n");
    assert_eq!(v.errors(), 1);
    assert_eq!(v.diagnostics[0].line, 1);
    let v = validate("#!/bin/bash\nanything: [\n");
    assert_eq!(v.kind, UserDataKind::Script);
    assert!(v.diagnostics.is_empty());
}

#[test]
fn header_only_is_an_empty_valid_config() {
    let (cfg, d) = ok("#cloud-config\n");
    assert_eq!(cfg, CloudConfig::default());
    assert!(d.is_empty());
    let (cfg, _) = ok("#cloud-config\n# just comments\n\n");
    assert_eq!(cfg, CloudConfig::default());
}

#[test]
fn top_level_keys() {
    let (cfg, d) = ok("#cloud-config
hostname: node1
ssh_authorized_keys:
  - ssh-ed25519 AAAA one
  - ssh-rsa BBBB two
manage_etc_hosts: localhost
");
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(cfg.hostname.as_deref(), Some("node1"));
    assert_eq!(
        cfg.ssh_authorized_keys,
        vec!["ssh-ed25519 AAAA one", "ssh-rsa BBBB two"]
    );
    assert_eq!(cfg.manage_etc_hosts, Some(EtcHosts::Localhost));
}

#[test]
fn dashes_and_underscores_are_the_same_key() {
    let dashed = ok("#cloud-config
ssh-authorized-keys: [k1]
manage-etc-hosts: localhost
write-files:
  - path: /etc/a
users:
  - name: u
    no-create-home: true
    primary-group: g
coreos:
  etcd2:
    advertise-client-urls: http://x:2379
  update:
    reboot-strategy: reboot
  units:
    - name: a.service
      drop-ins:
        - name: 10-a.conf
          content: x
")
    .0;
    let underscored = ok("#cloud-config
ssh_authorized_keys: [k1]
manage_etc_hosts: localhost
write_files:
  - path: /etc/a
users:
  - name: u
    no_create_home: true
    primary_group: g
coreos:
  etcd2:
    advertise_client_urls: http://x:2379
  update:
    reboot_strategy: reboot
  units:
    - name: a.service
      drop_ins:
        - name: 10-a.conf
          content: x
")
    .0;
    assert_eq!(dashed, underscored);
    assert_eq!(dashed.coreos.units[0].drop_ins[0].name, "10-a.conf");
}

#[test]
fn every_user_key() {
    let (cfg, d) = ok("#cloud-config
users:
  - name: elroy
    passwd: $6$salt$hash
    gecos: Elroy Jetson
    homedir: /home/elroy
    no_create_home: false
    primary_group: jetsons
    groups: [sudo, docker]
    no_user_group: true
    ssh_authorized_keys: [ssh-ed25519 AAAA elroy]
    system: no
    no_log_init: on
    shell: /bin/bash
");
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(
        cfg.users,
        vec![User {
            name: "elroy".into(),
            passwd: Some("$6$salt$hash".into()),
            gecos: Some("Elroy Jetson".into()),
            homedir: Some("/home/elroy".into()),
            no_create_home: false,
            primary_group: Some("jetsons".into()),
            groups: vec!["sudo".into(), "docker".into()],
            no_user_group: true,
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA elroy".into()],
            system: false,
            no_log_init: true,
            shell: Some("/bin/bash".into()),
        }]
    );
}

#[test]
fn write_files_keys_and_permissions() {
    let (cfg, d) = ok("#cloud-config
write_files:
  - path: /etc/a
    content: hello
    permissions: '0600'
    owner: core:core
  - path: /etc/b
    permissions: 0755
  - path: /etc/c
    permissions: 644
  - path: /var/d
    permissions: 01777
  - path: /opt/e
");
    assert!(d.is_empty(), "{d:?}");
    let modes: Vec<u32> = cfg.write_files.iter().map(WriteFile::mode).collect();
    assert_eq!(modes, vec![0o600, 0o755, 0o644, 0o1777, 0o644]);
    assert_eq!(cfg.write_files[0].owner.as_deref(), Some("core:core"));
    assert_eq!(cfg.write_files[0].decoded().expect("plain"), b"hello");
    assert_eq!(cfg.write_files[4].decoded().expect("empty"), b"");
}

#[test]
fn write_files_every_encoding() {
    // "hello\n" in each encoding.
    let b64 = "aGVsbG8K";
    let gz_b64 = "H4sIAAAAAAACA8tIzcnJ5wIAIDA6NgYAAAA=";
    for spelling in Encoding::SPELLINGS {
        let content = match Encoding::parse(spelling) {
            Some(Encoding::Base64) => b64,
            Some(Encoding::GzipBase64) => gz_b64,
            // Raw gzip needs `!!binary` content; tested below.
            Some(Encoding::Gzip) => continue,
            None => panic!("{spelling} must parse"),
        };
        let doc = format!(
            "#cloud-config\nwrite_files:\n  - path: /etc/x\n    encoding: {spelling}\n    content: {content}\n"
        );
        let (cfg, _) = ok(&doc);
        assert_eq!(
            cfg.write_files[0].decoded().expect(spelling),
            b"hello\n",
            "{spelling}"
        );
    }
    for spelling in ["gz", "gzip"] {
        let doc = format!(
            "#cloud-config\nwrite_files:\n  - path: /etc/x\n    encoding: {spelling}\n    content: !!binary {gz_b64}\n"
        );
        let (cfg, _) = ok(&doc);
        assert_eq!(cfg.write_files[0].encoding, Some(Encoding::GzipBase64));
        assert_eq!(cfg.write_files[0].decoded().expect(spelling), b"hello\n");
    }
    let (cfg, _) =
        ok("#cloud-config\nwrite_files:\n  - path: /etc/x\n    content: !!binary aGVsbG8K\n");
    assert_eq!(cfg.write_files[0].decoded().expect("binary"), b"hello\n");
}

#[test]
fn coreos_units_every_key() {
    let (cfg, d) = ok("#cloud-config
coreos:
  units:
    - name: app.service
      content: |
        [Service]
        ExecStart=/bin/true
      enable: true
      command: reload-or-try-restart
      runtime: true
      mask: false
      drop_ins:
        - name: 10-env.conf
          content: |
            [Service]
            Environment=A=b
");
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(
        cfg.coreos.units,
        vec![Unit {
            name: "app.service".into(),
            content: Some("[Service]\nExecStart=/bin/true\n".into()),
            enable: true,
            command: Some(UnitCommand::ReloadOrTryRestart),
            runtime: true,
            mask: false,
            drop_ins: vec![DropIn {
                name: "10-env.conf".into(),
                content: "[Service]\nEnvironment=A=b\n".into(),
            }],
        }]
    );
    for (word, cmd) in UnitCommand::ALL {
        let doc = format!(
            "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      command: {word}\n"
        );
        assert_eq!(ok(&doc).0.coreos.units[0].command, Some(*cmd), "{word}");
        assert_eq!(cmd.as_str(), *word);
    }
}

#[test]
fn coreos_env_sections_update_and_oem() {
    let (cfg, d) = ok("#cloud-config
coreos:
  etcd2:
    name: n1
    election-timeout: 1000
    debug: yes
    proxy: on
  fleet:
    public-ip: 10.0.0.1
    verbosity: 2
  flannel:
    etcd_endpoints: http://127.0.0.1:2379
    interface: eth1
  locksmith:
    window_start: Thu 04:00
    window_length: 2h
  update:
    reboot_strategy: best-effort
    group: beta
    server: http://10.0.0.1:8000/v1/update/
  oem:
    id: qemu
    name: QEMU
    version_id: 1.0
    home_url: https://qemu.org
    bug_report_url: https://qemu.org/bugs
");
    assert!(d.is_empty(), "{d:?}");
    let c = &cfg.coreos;
    assert_eq!(c.etcd2.get("debug").map(String::as_str), Some("true"));
    assert_eq!(c.etcd2.get("proxy").map(String::as_str), Some("on"));
    assert_eq!(
        c.etcd2.get("election_timeout").map(String::as_str),
        Some("1000")
    );
    assert_eq!(c.fleet.len(), 2);
    assert_eq!(c.flannel.get("interface").map(String::as_str), Some("eth1"));
    assert_eq!(
        c.locksmith.get("window_start").map(String::as_str),
        Some("Thu 04:00")
    );
    assert_eq!(
        c.update,
        Update {
            reboot_strategy: Some(RebootStrategy::BestEffort),
            group: Some("beta".into()),
            server: Some("http://10.0.0.1:8000/v1/update/".into()),
        }
    );
    let oem = c.oem.clone().expect("oem");
    assert_eq!(oem.version_id.as_deref(), Some("1.0"));
    assert_eq!(oem.bug_report_url.as_deref(), Some("https://qemu.org/bugs"));
    for (word, r) in RebootStrategy::ALL {
        let doc = format!("#cloud-config\ncoreos:\n  update:\n    reboot-strategy: {word}\n");
        assert_eq!(ok(&doc).0.coreos.update.reboot_strategy, Some(*r), "{word}");
    }
}

/// Each bad document: the line of its one diagnostic, the severity and part of the message.
#[test]
fn diagnostics_table() {
    use Severity::{Error, Warning};
    let cases: &[(&str, usize, Severity, &str)] = &[
        // unknown keys warn, with the key's line
        ("#cloud-config\nhostname: a\nhostnmae: b\n", 3, Warning, "did you mean \"hostname\""),
        ("#cloud-config\nfrobnicate: 1\n", 2, Warning, "unrecognized key \"frobnicate\""),
        ("#cloud-config\nusers:\n  - name: a\n    sudo: ALL\n", 4, Warning, "users[0].sudo"),
        ("#cloud-config\ncoreos:\n  unit:\n    - name: a\n", 3, Warning, "did you mean \"units\""),
        ("#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      contents: x\n", 5, Warning, "did you mean \"content\""),
        ("#cloud-config\ncoreos:\n  etcd2:\n    nmae: x\n", 4, Warning, "passed through as ETCD_NMAE"),
        ("#cloud-config\ncoreos:\n  etcd2:\n    ca_file: /x\n", 4, Warning, "deprecated"),
        ("#cloud-config\ncoreos:\n  etcd:\n    name: x\n", 3, Warning, "etcd 0.4"),
        ("#cloud-config\nusers:\n  - name: a\n    coreos-ssh-import-github: a\n", 4, Warning, "deprecated"),
        ("#cloud-config\ncoreos:\n  update:\n    channel: beta\n", 4, Warning, "coreos.update.channel"),
        ("#cloud-config\ncoreos:\n  oem:\n    vendor: x\n", 4, Warning, "coreos.oem.vendor"),
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    mode: 0644\n", 4, Warning, "write_files[0].mode"),
        ("#cloud-config\nhostname: a\nhostname: b\n", 3, Warning, "given twice (also on line 2)"),
        ("#cloud-config\nssh_authorized_keys: [a]\nssh-authorized-keys: [b]\n", 3, Warning, "given twice"),
        ("#cloud-config\ncoreos:\n  units:\n    - name: app\n", 4, Warning, "does not end in a unit type"),
        ("#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      drop_ins:\n        - name: x.txt\n", 6, Warning, "does not end in .conf"),
        ("#cloud-config\nhostname: my host\n", 2, Warning, "characters other than"),
        // wrong types are errors, on the value's line
        ("#cloud-config\nwrite_files: foo\n", 2, Error, "incorrect type for \"write_files\": want a list of files, found a scalar"),
        ("#cloud-config\nusers:\n  name: a\n", 3, Error, "want a list of users, found a mapping"),
        ("#cloud-config\nhostname: [a, b]\n", 2, Error, "incorrect type for \"hostname\": want a string"),
        ("#cloud-config\nssh_authorized_keys: ssh-rsa AAAA\n", 2, Error, "want a list of strings"),
        ("#cloud-config\nssh_authorized_keys:\n  - [a]\n", 3, Error, "ssh_authorized_keys[0]"),
        ("#cloud-config\ncoreos: [units]\n", 2, Error, "incorrect type for \"coreos\": want a mapping"),
        ("#cloud-config\ncoreos:\n  units: {name: a}\n", 3, Error, "want a list of units"),
        ("#cloud-config\ncoreos:\n  units:\n    - a.service\n", 4, Error, "want a mapping (a unit)"),
        ("#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      enable: 'yes'\n", 5, Error, "want true or false"),
        ("#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      enable: sometimes\n", 5, Error, "want true or false"),
        ("#cloud-config\nusers:\n  - name: a\n    groups: wheel\n", 4, Error, "users[0].groups"),
        ("#cloud-config\ncoreos:\n  etcd2: http://x\n", 3, Error, "coreos.etcd2"),
        ("#cloud-config\ncoreos:\n  etcd2:\n    election_timeout: soon\n", 4, Error, "want an integer"),
        ("#cloud-config\ncoreos:\n  etcd2:\n    debug: maybe\n", 4, Error, "want true or false"),
        ("#cloud-config\ncoreos:\n  fleet:\n    metadata: [a, b]\n", 4, Error, "coreos.fleet.metadata"),
        ("#cloud-config\n- a\n- b\n", 2, Error, "a cloud-config is a mapping"),
        ("#cloud-config\njust words\n", 2, Error, "a cloud-config is a mapping"),
        // bad values
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    permissions: '0999'\n", 4, Error, "invalid permissions \"0999\""),
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    permissions: rwx\n", 4, Error, "invalid permissions \"rwx\""),
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    permissions: 077777\n", 4, Error, "invalid permissions"),
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    permissions: 64\n", 4, Error, "invalid permissions"),
        ("#cloud-config\nwrite_files:\n  - path: /usr/bin/x\n", 3, Error, "/usr is read-only"),
        ("#cloud-config\nwrite_files:\n  - path: //usr/./lib/x\n", 3, Error, "/usr is read-only"),
        ("#cloud-config\nwrite_files:\n  - path: /usr\n", 3, Error, "/usr is read-only"),
        ("#cloud-config\nwrite_files:\n  - path: etc/motd\n", 3, Error, "must be absolute"),
        ("#cloud-config\nwrite_files:\n  - path: /etc/../usr/x\n", 3, Error, "\"..\""),
        ("#cloud-config\nwrite_files:\n  - path: /etc/dir/\n", 3, Error, "names a directory"),
        ("#cloud-config\nwrite_files:\n  - content: x\n", 3, Error, "a file needs a path"),
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    encoding: uuencode\n", 4, Error, "unknown encoding \"uuencode\""),
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    encoding: b64\n    content: '@@@'\n", 5, Error, "not valid base64"),
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    encoding: gz+b64\n    content: aGVsbG8K\n", 5, Error, "not valid gzip"),
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    owner: 'a:b:c'\n", 4, Error, "invalid owner"),
        ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    owner: ':g'\n", 4, Error, "invalid owner"),
        ("#cloud-config\nmanage_etc_hosts: true\n", 2, Error, "only supported value is \"localhost\""),
        ("#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      command: bounce\n", 5, Error, "invalid command \"bounce\""),
        ("#cloud-config\ncoreos:\n  units:\n    - command: start\n", 4, Error, "a unit needs a name"),
        ("#cloud-config\ncoreos:\n  units:\n    - name: ../x.service\n", 4, Error, "invalid unit name"),
        ("#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      drop_ins:\n        - content: x\n", 6, Error, "a drop-in needs a name"),
        ("#cloud-config\ncoreos:\n  update:\n    reboot_strategy: sometimes\n", 4, Error, "invalid reboot strategy \"sometimes\""),
        ("#cloud-config\ncoreos:\n  etcd2:\n    proxy: maybe\n", 4, Error, "want one of on, off, readonly"),
        ("#cloud-config\ncoreos:\n  locksmith:\n    window_start: 25:00\n", 4, Error, "window_start"),
        ("#cloud-config\ncoreos:\n  locksmith:\n    window_length: forever\n", 4, Error, "duration"),
        ("#cloud-config\ncoreos:\n  etcd2:\n    name: |\n      two\n      lines\n", 5, Error, "one line"),
        ("#cloud-config\nusers:\n  - gecos: nobody\n", 3, Error, "a user needs a name"),
        ("#cloud-config\nhostname: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 2, Error, "at most 64"),
    ];
    for (text, line, severity, fragment) in cases {
        assert_one(text, *line, *severity, fragment);
    }
}

#[test]
fn yaml_syntax_errors_have_line_and_column() {
    let v =
        validate("#cloud-config\nhostname: a\ncoreos:\n  units:\n    - name: a\n   bad: indent\n");
    assert_eq!(v.errors(), 1, "{:?}", v.diagnostics);
    let d = &v.diagnostics[0];
    assert!(d.message.starts_with("YAML syntax:"), "{d}");
    assert_eq!(d.line, 6, "{d}");
    assert!(d.column >= 1);

    let v = validate("#cloud-config\nssh_authorized_keys: [a, b\n");
    assert_eq!(v.errors(), 1);
    assert!(v.diagnostics[0].line >= 2, "{:?}", v.diagnostics);

    let v = validate("#cloud-config\na: \"unterminated\n");
    assert_eq!(v.errors(), 1);
    assert_eq!(v.diagnostics[0].severity, Severity::Error);

    let v = validate("#cloud-config\nhostname: a\n---\nhostname: b\n");
    assert_eq!(v.diagnostics[0].line, 3);
    assert!(v.diagnostics[0].message.contains("second YAML document"));
}

#[test]
fn diagnostics_come_sorted_with_columns_and_parse_refuses_errors() {
    let text = "#cloud-config
coreos:
  units:
    - name: a.service
      command: bounce
  bogus: 1
write_files:
  - path: /usr/x
hostnam: h
";
    let v = validate(text);
    let got: Vec<(usize, usize, Severity)> = v
        .diagnostics
        .iter()
        .map(|d| (d.line, d.column, d.severity))
        .collect();
    assert_eq!(
        got,
        vec![
            (5, 16, Severity::Error),
            (6, 3, Severity::Warning),
            (8, 11, Severity::Error),
            (9, 1, Severity::Warning),
        ]
    );
    assert_eq!((v.errors(), v.warnings()), (2, 2));
    let e = parse(text).expect_err("has errors");
    assert_eq!(e.diagnostics().len(), 4);
    let msg = e.to_string();
    assert!(
        msg.starts_with("cloud-config is invalid: 5:16: error: invalid command"),
        "{msg}"
    );
    assert!(msg.ends_with("(and 1 more error)"), "{msg}");
    assert_eq!(
        v.diagnostics[0].to_string(),
        "5:16: error: invalid command \"bounce\" for \"coreos.units[0].command\": want one of \
         start, stop, restart, reload, try-restart, reload-or-restart, reload-or-try-restart"
    );
}

#[test]
fn warnings_alone_still_parse() {
    let (cfg, d) = ok("#cloud-config\nhostname: a\nunknown_thing: 1\n");
    assert_eq!(cfg.hostname.as_deref(), Some("a"));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].severity, Severity::Warning);
}

#[test]
fn unknown_env_keys_are_passed_through() {
    let (cfg, d) = ok("#cloud-config\ncoreos:\n  etcd2:\n    name: a\n    enable-v2: true\n");
    assert_eq!(d.len(), 1);
    let dropin = etcd2_dropin(&cfg.coreos.etcd2).expect("dropin");
    assert!(
        dropin
            .content
            .contains("Environment=\"ETCD_ENABLE_V2=true\"\n"),
        "{}",
        dropin.content
    );
}

#[test]
fn null_values_read_as_absent() {
    let (cfg, d) =
        ok("#cloud-config\nhostname:\nusers:\nwrite_files: ~\ncoreos:\n  units:\n  etcd2:\n");
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(cfg, CloudConfig::default());
}

#[test]
fn anchors_and_merge_keys_work_like_go_yaml() {
    let (cfg, d) = ok("#cloud-config
coreos:
  units:
    - &base
      name: a.service
      command: start
    - <<: *base
      name: b.service
");
    assert!(d.is_empty(), "{d:?}");
    let names: Vec<(&str, Option<UnitCommand>)> = cfg
        .coreos
        .units
        .iter()
        .map(|u| (u.name.as_str(), u.command))
        .collect();
    assert_eq!(
        names,
        vec![
            ("a.service", Some(UnitCommand::Start)),
            ("b.service", Some(UnitCommand::Start))
        ]
    );
}

#[test]
fn substitution_then_parse_then_convert() {
    let text = std::fs::read_to_string(fixture("etcd2-fleet-cluster.yaml")).expect("fixture");
    let subs = Substitutions {
        private_ipv4: Some("10.0.0.5".parse().expect("ip")),
        public_ipv4: Some("203.0.113.5".parse().expect("ip")),
        ..Substitutions::default()
    };
    assert!(subs.unresolved(&text).is_empty());
    let (cfg, _) = ok(&substitute(&text, &subs));
    let g = generate(&cfg.coreos, "");
    let etcd = &g.dropins[0];
    assert_eq!(etcd.relative_path(), "etcd2.service.d/20-cloudinit.conf");
    assert_eq!(
        etcd.content,
        "[Service]\n\
         Environment=\"ETCD_DISCOVERY=https://discovery.etcd.io/6a28e078895c5ec737174db2419bb2f3\"\n\
         Environment=\"ETCD_ADVERTISE_CLIENT_URLS=http://10.0.0.5:2379,http://10.0.0.5:4001\"\n\
         Environment=\"ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379,http://0.0.0.0:4001\"\n\
         Environment=\"ETCD_LISTEN_PEER_URLS=http://10.0.0.5:2380\"\n\
         Environment=\"ETCD_INITIAL_ADVERTISE_PEER_URLS=http://10.0.0.5:2380\"\n"
    );
    let fleet = &g.dropins[1];
    assert_eq!(
        fleet.content,
        "[Service]\nEnvironment=\"FLEET_METADATA=region=us-west,disk=ssd\"\n\
         Environment=\"FLEET_PUBLIC_IP=10.0.0.5\"\n"
    );
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/cloud-config")
        .join(name)
}

const FIXTURES: &[&str] = &[
    "etcd2-fleet-cluster.yaml",
    "flannel-docker.yaml",
    "full-node.yaml",
    "etcd2-proxy-worker.yaml",
];

#[test]
fn fixtures_validate_clean() {
    for name in FIXTURES {
        let text = std::fs::read_to_string(fixture(name)).expect("fixture readable");
        let v = validate(&text);
        assert_eq!(v.kind, UserDataKind::CloudConfig, "{name}");
        assert!(v.diagnostics.is_empty(), "{name}: {:#?}", v.diagnostics);
    }
}

#[test]
fn full_node_fixture_model() {
    let text = std::fs::read_to_string(fixture("full-node.yaml")).expect("fixture");
    let (cfg, _) = ok(&text);
    assert_eq!(cfg.hostname.as_deref(), Some("web01.example.com"));
    assert_eq!(cfg.users.len(), 2);
    assert!(cfg.users[1].system && cfg.users[1].no_create_home && cfg.users[1].no_log_init);
    let files: Vec<(&str, u32)> = cfg
        .write_files
        .iter()
        .map(|f| (f.path.as_str(), f.mode()))
        .collect();
    assert_eq!(
        files,
        vec![
            ("/etc/motd", 0o644),
            ("/etc/profile.d/etcdctl.sh", 0o755),
            ("/etc/sysctl.d/90-node.conf", 0o644),
            ("/opt/bin/hello", 0o755),
        ]
    );
    assert_eq!(
        cfg.write_files[1].decoded().expect("b64"),
        b"export ETCDCTL_PEERS=http://127.0.0.1:2379\n"
    );
    assert_eq!(
        cfg.write_files[2].decoded().expect("gz+b64"),
        b"net.ipv4.ip_forward = 1\nnet.core.somaxconn = 1024\n"
    );
    let g = generate(&cfg.coreos, "GROUP=alpha\n");
    assert_eq!(g.dropins.len(), 1);
    assert!(g.dropins[0]
        .content
        .contains("Environment=\"LOCKSMITHD_REBOOT_WINDOW_START=Sun 03:00\"\n"));
    assert_eq!(
        g.files[0].content,
        "GROUP=stable\nREBOOT_STRATEGY=etcd-lock\n"
    );
    assert_eq!(cfg.coreos.units.len(), 3);
    assert!(cfg.coreos.units[0].runtime);
}

#[test]
fn flannel_fixture_converts_both_ways() {
    let text = std::fs::read_to_string(fixture("flannel-docker.yaml")).expect("fixture");
    let subs = Substitutions {
        private_ipv4: Some("10.0.0.101".parse().expect("ip")),
        ..Substitutions::default()
    };
    let (cfg, _) = ok(&substitute(&text, &subs));
    let want_env = "FLANNELD_ETCD_ENDPOINTS=http://127.0.0.1:2379\n\
                    FLANNELD_ETCD_PREFIX=/coreos.com/network\nFLANNELD_IFACE=10.0.0.101\n";
    assert_eq!(
        flannel_options_env(&cfg.coreos.flannel)
            .expect("env")
            .content,
        want_env
    );
    let d = flannel_dropin(&cfg.coreos.flannel).expect("dropin");
    assert_eq!(d.relative_path(), "flanneld.service.d/20-cloudinit.conf");
    assert!(d
        .content
        .contains("Environment=\"FLANNELD_IFACE=10.0.0.101\"\n"));
    assert_eq!(
        cfg.coreos.units[1].drop_ins[0].name,
        "50-network-config.conf"
    );
}

#[test]
fn worker_fixture_masks_locksmith() {
    let text = std::fs::read_to_string(fixture("etcd2-proxy-worker.yaml")).expect("fixture");
    let (cfg, _) = ok(&text);
    assert_eq!(cfg.coreos.update.reboot_strategy, Some(RebootStrategy::Off));
    let actions = update_actions(&cfg.coreos.update);
    assert_eq!(actions.len(), 1);
    assert!(actions[0].mask && actions[0].command == UnitCommand::Stop);
    // `proxy: on` is a YAML 1.1 boolean; like go-yaml into a string field, the text is kept.
    assert_eq!(
        cfg.coreos.etcd2.get("proxy").map(String::as_str),
        Some("on")
    );
    // Unquoted `off` too.
    let (cfg, _) = ok("#cloud-config\ncoreos:\n  update:\n    reboot-strategy: off\n");
    assert_eq!(cfg.coreos.update.reboot_strategy, Some(RebootStrategy::Off));
}

#[test]
fn model_round_trips_through_json() {
    let text = std::fs::read_to_string(fixture("full-node.yaml")).expect("fixture");
    let (cfg, _) = ok(&text);
    let json = serde_json::to_string(&cfg).expect("serialize");
    let back: CloudConfig = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, cfg);
}

/// A small deterministic generator, so the no-panic test needs no extra crate and is stable.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `parse` accepts exactly the cloud-configs `validate` finds no error in.
fn consistent(doc: &str) {
    let v = validate(doc);
    let parsed = parse(doc);
    if v.kind == UserDataKind::CloudConfig {
        assert_eq!(parsed.is_ok(), v.is_ok(), "{doc:?}: {:?}", v.diagnostics);
    } else {
        assert!(parsed.is_err());
    }
}

#[test]
fn random_input_never_panics() {
    const PIECES: &[&str] = &[
        "#cloud-config\n",
        "\n",
        "  ",
        "    ",
        "- ",
        ": ",
        "key",
        "coreos",
        "units",
        "name",
        "write_files",
        "path",
        "/usr/x",
        "content",
        "encoding",
        "b64",
        "gz+base64",
        "!!binary ",
        "permissions",
        "0644",
        "'0999'",
        "&a ",
        "*a",
        "<<: *a\n",
        "[",
        "]",
        "{",
        "}",
        ",",
        "|\n",
        ">\n",
        "\"",
        "'",
        "~",
        "null",
        "yes",
        "etcd2",
        "update",
        "reboot-strategy",
        "$private_ipv4",
        "\\",
        "\t",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "? ",
        "#",
        "é",
        "\u{feff}",
        "\r\n",
        "users",
        "drop_ins",
        "command",
        "bounce",
        "- name: a.service\n",
        "\0",
    ];
    let mut rng = XorShift(0x5eed_c0de_2024_0001);
    for _ in 0..4000 {
        let mut doc = String::from("#cloud-config\n");
        for _ in 0..rng.below(60) {
            doc.push_str(PIECES[rng.below(PIECES.len())]);
        }
        consistent(&doc);
    }
    // Byte-level mutations of the fixtures.
    for name in FIXTURES {
        let text = std::fs::read_to_string(fixture(name)).expect("fixture");
        for _ in 0..300 {
            let mut bytes = text.clone().into_bytes();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bytes.len());
                match rng.below(3) {
                    0 => {
                        let set = b" :-[]{}|>'\"\n#&*!%@`";
                        bytes[i] = set[rng.below(set.len())];
                    }
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, b"\n :-"[rng.below(4)]),
                }
            }
            let doc = String::from_utf8_lossy(&bytes);
            consistent(&doc);
        }
    }
}

#[test]
fn generated_outputs_are_empty_for_an_empty_config() {
    assert_eq!(
        generate(&CoreOs::default(), "GROUP=stable\n"),
        Generated::default()
    );
    let empty: BTreeMap<String, String> = BTreeMap::new();
    assert_eq!(locksmith_dropin(&empty), None);
}
