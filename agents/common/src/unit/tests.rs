//! Model tests: every option, fixtures shaped like real CoreOS units, diagnostics, and a no-panic
//! run over random input.
#![allow(clippy::unwrap_used)]

use super::*;

const ETCD2: &str = include_str!("../../fixtures/units/etcd2.service");
const WEB: &str = include_str!("../../fixtures/units/web@.service");
const SETUP: &str = include_str!("../../fixtures/units/setup-disks.service");
const MULTI_USER: &str = include_str!("../../fixtures/units/multi-user.target");

fn host() -> Host {
    Host {
        machine_id: Some("6f1b5a4c2d3e4f5a6b7c8d9e0f1a2b3c".into()),
        hostname: Some("node1".into()),
        boot_id: Some("00112233445566778899aabbccddeeff".into()),
    }
}

fn load(name: &str, text: &str) -> (Unit, Vec<Warning>) {
    let src = Source {
        path: name.into(),
        text: text.into(),
    };
    Unit::from_sources(name, &[src], &host()).unwrap()
}

/// A service with `extra` added under [Service].
fn service(extra: &str) -> Result<Unit, UnitError> {
    let text = format!("[Service]\nExecStart=/bin/true\n{extra}\n");
    Unit::from_text("t.service", &text).map(|(u, _)| u)
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn etcd2_fixture() {
    let (u, w) = load("etcd2.service", ETCD2);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(u.unit_type, UnitType::Service);
    assert_eq!(u.description.as_deref(), Some("etcd2"));
    assert_eq!(
        u.documentation,
        ["https://github.com/coreos/etcd", "man:etcd(1)"]
    );
    assert_eq!(u.conflicts, ["etcd.service"]);
    assert_eq!(u.after, ["network-online.target"]);
    assert_eq!(u.wants, ["network-online.target"]);
    assert_eq!(u.user.as_deref(), Some("etcd"));
    assert_eq!(u.kind, ServiceType::Notify);
    assert_eq!(
        u.environment,
        kv(&[
            ("ETCD_DATA_DIR", "/var/lib/etcd2"),
            ("ETCD_NAME", "6f1b5a4c2d3e4f5a6b7c8d9e0f1a2b3c")
        ])
    );
    assert_eq!(u.exec_start.len(), 1);
    assert_eq!(u.exec_start[0].argv, ["/usr/bin/etcd2"]);
    assert_eq!(u.restart, Restart::Always);
    assert_eq!(u.restart_ms, 10_000);
    assert_eq!(
        u.limit_nofile,
        Some(RLimit {
            soft: Some(40_000),
            hard: Some(40_000)
        })
    );
    assert_eq!(u.timeout_start_ms, None, "TimeoutStartSec=0 disables it");
    assert_eq!(u.timeout_stop_ms, Some(DEFAULT_TIMEOUT_MS));
    assert_eq!(u.wanted_by, ["multi-user.target"]);
}

#[test]
fn fleet_template_fixture() {
    let (u, w) = load("web@blue.service", WEB);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(u.description.as_deref(), Some("Web server blue on node1"));
    assert_eq!(u.binds_to, ["web-discovery@blue.service"]);
    assert_eq!(
        u.conditions,
        [
            Condition {
                check: Check::PathExists("/etc/web/enabled".into()),
                negate: false,
                trigger: true
            },
            Condition {
                check: Check::PathExists("/etc/web/disabled".into()),
                negate: true,
                trigger: true
            }
        ]
    );
    assert_eq!(u.timeout_start_ms, Some(300_000));
    assert_eq!(u.kill_mode, KillMode::Mixed);
    assert_eq!(
        u.environment_files,
        [
            OptionalPath {
                path: "/etc/environment".into(),
                optional: true
            },
            OptionalPath {
                path: "/run/web/blue.env".into(),
                optional: false
            }
        ]
    );
    let pre: Vec<(bool, Vec<String>)> = u
        .exec_start_pre
        .iter()
        .map(|c| (c.ignore_failure, c.argv.clone()))
        .collect();
    assert_eq!(
        pre,
        [
            (
                true,
                vec!["/usr/bin/docker".into(), "kill".into(), "web-blue".into()]
            ),
            (
                true,
                vec!["/usr/bin/docker".into(), "rm".into(), "web-blue".into()]
            ),
            (
                false,
                vec!["/usr/bin/docker".into(), "pull".into(), "nginx".into()]
            ),
        ]
    );
    assert_eq!(
        u.exec_start[0].argv,
        [
            "/usr/bin/docker",
            "run",
            "--rm",
            "--name",
            "web-blue",
            "-e",
            "GREETING=hello world",
            "-e",
            "SERVER=node1",
            "-p",
            "80:80",
            "nginx",
            "sh",
            "-c",
            "echo \"$GREETING\"; exec nginx -g \"daemon off;\""
        ]
    );
    assert_eq!(u.exec_stop[0].argv, ["/usr/bin/docker", "stop", "web-blue"]);
    assert_eq!(u.restart, Restart::OnFailure);
    // X-Fleet is kept as written, %-specifiers and all
    let fleet: Vec<(usize, &str, &str)> = u
        .x_fleet
        .iter()
        .map(|e| (e.line, e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        fleet,
        [
            (27, "Conflicts", "web@*.service"),
            (28, "MachineMetadata", "role=web")
        ]
    );
}

#[test]
fn oneshot_fixture_and_warnings() {
    let (u, w) = load("setup-disks.service", SETUP);
    assert_eq!(u.kind, ServiceType::Oneshot);
    assert!(u.remain_after_exit);
    let cmds: Vec<&str> = u.exec_start.iter().map(|c| c.program()).collect();
    assert_eq!(
        cmds,
        ["/usr/sbin/wipefs", "/usr/sbin/mkfs.ext4", "/bin/mkdir"]
    );
    assert_eq!(u.timeout_start_ms, None, "oneshot has no start timeout");
    assert_eq!(
        u.working_directory,
        Some(OptionalPath {
            path: "/var/lib".into(),
            optional: true
        })
    );
    assert_eq!(u.environment, kv(&[("OPTS", "-q -F"), ("MODE", "fast")]));
    assert_eq!(u.before, ["local-fs.target"]);
    assert_eq!(u.part_of, ["local-fs.target"]);
    assert_eq!(u.required_by, ["local-fs.target"]);
    assert_eq!(u.alias, ["disks.service"]);
    assert_eq!(u.also, ["other.service"]);
    let w: Vec<String> = w.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        [
            "setup-disks.service:14: [Service] StandardOutput= is not supported and is ignored",
            "setup-disks.service:15: [Service] PrivateTmp= is not supported and is ignored",
            "setup-disks.service:23: unknown section [Mystery] is ignored",
        ]
    );
}

#[test]
fn target_fixture() {
    let (u, w) = load("multi-user.target", MULTI_USER);
    assert_eq!(u.unit_type, UnitType::Target);
    assert_eq!(u.requires, ["basic.target"]);
    assert_eq!(u.conflicts, ["rescue.service", "rescue.target"]);
    assert_eq!(u.after, ["basic.target", "rescue.service", "rescue.target"]);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].line, 7);
    assert!(w[0].why.contains("AllowIsolate"));
    // a target needs no ExecStart=, and a [Service] section in it only warns
    let (t, w) = Unit::from_text("x.target", "[Service]\nExecStart=/x\n").unwrap();
    assert!(t.exec_start.is_empty());
    assert!(w[0].why.contains("does not belong in a .target"));
}

#[test]
fn unit_section_lists() {
    let text = "[Unit]\nRequires=a b\nWants=c\nAfter=d\nBefore=e\nConflicts=f\nBindsTo=g\nPartOf=h\nDocumentation=man:x\nDescription=D\n[Service]\nExecStart=/x\n";
    let (u, _) = Unit::from_text("t.service", text).unwrap();
    assert_eq!(u.requires, ["a", "b"]);
    assert_eq!(u.wants, ["c"]);
    assert_eq!(u.after, ["d"]);
    assert_eq!(u.before, ["e"]);
    assert_eq!(u.conflicts, ["f"]);
    assert_eq!(u.binds_to, ["g"]);
    assert_eq!(u.part_of, ["h"]);
    assert_eq!(u.documentation, ["man:x"]);
    assert_eq!(u.description.as_deref(), Some("D"));
}

#[test]
fn empty_assignments_reset_and_repeats_append_or_override() {
    let text = "\
[Unit]
After=a b
After=c
Wants=x
Wants=
Wants=y
Description=first
Description=second
ConditionPathExists=/a
ConditionPathExists=
ConditionPathExists=/b
[Service]
Type=oneshot
Type=simple
ExecStart=/first
ExecStart=
ExecStart=-/second x
ExecStartPre=/p1
ExecStartPre=/p2
ExecStartPost=/q1
ExecStartPost=
ExecStop=/s1
ExecStop=/s2
ExecReload=/r1
ExecReload=/r2
Environment=A=1
Environment=
Environment=B=2
Environment=B=3
EnvironmentFile=/e1
EnvironmentFile=
User=a
User=b
Group=g
Group=
Restart=always
Restart=
RestartSec=5
RestartSec=
TimeoutSec=10
TimeoutStopSec=20
LimitNOFILE=10
LimitNOFILE=
KillMode=none
KillMode=
RemainAfterExit=yes
RemainAfterExit=
WorkingDirectory=/w
WorkingDirectory=
[Install]
WantedBy=a.target
WantedBy=b.target a.target
";
    let (u, w) = Unit::from_text("t.service", text).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(u.after, ["a", "b", "c"]);
    assert_eq!(u.wants, ["y"]);
    assert_eq!(u.description.as_deref(), Some("second"));
    assert_eq!(u.conditions.len(), 1);
    assert_eq!(u.conditions[0].check, Check::PathExists("/b".into()));
    assert_eq!(u.kind, ServiceType::Simple);
    assert_eq!(u.exec_start.len(), 1);
    assert_eq!(u.exec_start[0].argv, ["/second", "x"]);
    assert!(u.exec_start[0].ignore_failure);
    assert_eq!(u.exec_start_pre.len(), 2);
    assert!(u.exec_start_post.is_empty());
    assert_eq!(u.exec_stop.len(), 2);
    assert_eq!(u.exec_reload.len(), 2);
    assert_eq!(u.environment, kv(&[("B", "2"), ("B", "3")]));
    assert!(u.environment_files.is_empty());
    assert_eq!(u.user.as_deref(), Some("b"));
    assert_eq!(u.group, None);
    assert_eq!(u.restart, Restart::No);
    assert_eq!(u.restart_ms, DEFAULT_RESTART_MS);
    assert_eq!(u.timeout_start_ms, Some(10_000));
    assert_eq!(u.timeout_stop_ms, Some(20_000));
    assert_eq!(u.limit_nofile, None);
    assert_eq!(u.kill_mode, KillMode::ControlGroup);
    assert!(!u.remain_after_exit);
    assert_eq!(u.working_directory, None);
    assert_eq!(u.wanted_by, ["a.target", "b.target"]);
}

#[test]
fn service_types() {
    for (v, want) in [
        ("simple", ServiceType::Simple),
        ("exec", ServiceType::Exec),
        ("oneshot", ServiceType::Oneshot),
        ("notify", ServiceType::Notify),
        ("forking", ServiceType::Forking),
    ] {
        assert_eq!(service(&format!("Type={v}")).unwrap().kind, want, "{v}");
    }
    for v in ["dbus", "idle", "notify-reload", "Simple"] {
        let e = service(&format!("Type={v}")).unwrap_err().to_string();
        assert!(e.contains(&format!("Type={v}: not supported")), "{e}");
    }
}

#[test]
fn restart_values_and_policy() {
    use Termination::*;
    for (v, want) in [
        ("no", Restart::No),
        ("always", Restart::Always),
        ("on-success", Restart::OnSuccess),
        ("on-failure", Restart::OnFailure),
        ("on-abnormal", Restart::OnAbnormal),
        ("on-abort", Restart::OnAbort),
        ("on-watchdog", Restart::OnWatchdog),
    ] {
        assert_eq!(
            service(&format!("Restart={v}")).unwrap().restart,
            want,
            "{v}"
        );
    }
    assert!(service("Restart=sometimes").is_err());
    // The table in systemd.service(5): which endings restart under each policy.
    let endings = [
        Exited(0),
        Signaled(15),
        Exited(1),
        Signaled(9),
        Timeout,
        Watchdog,
    ];
    for (policy, want) in [
        (Restart::No, [false, false, false, false, false, false]),
        (Restart::Always, [true, true, true, true, true, true]),
        (Restart::OnSuccess, [true, true, false, false, false, false]),
        (Restart::OnFailure, [false, false, true, true, true, true]),
        (Restart::OnAbnormal, [false, false, false, true, true, true]),
        (Restart::OnAbort, [false, false, false, true, false, false]),
        (
            Restart::OnWatchdog,
            [false, false, false, false, false, true],
        ),
    ] {
        let got: Vec<bool> = endings.iter().map(|&t| policy.should_restart(t)).collect();
        assert_eq!(got, want, "{policy:?}");
    }
    assert!(Restart::Always.applies(true));
    assert!(!Restart::OnFailure.applies(true));
    assert!(Restart::OnFailure.applies(false));
    assert!(!Restart::No.applies(false));
    assert!(Restart::OnSuccess.applies(true));
}

#[test]
fn time_settings() {
    let u = service("RestartSec=1min 30s\nTimeoutStartSec=500ms\nTimeoutStopSec=infinity").unwrap();
    assert_eq!(u.restart_ms, 90_000);
    assert_eq!(u.timeout_start_ms, Some(500));
    assert_eq!(u.timeout_stop_ms, None);
    let u = service("TimeoutSec=5").unwrap();
    assert_eq!(
        (u.timeout_start_ms, u.timeout_stop_ms),
        (Some(5_000), Some(5_000))
    );
    let u = service("").unwrap();
    assert_eq!(
        (u.timeout_start_ms, u.timeout_stop_ms, u.restart_ms),
        (
            Some(DEFAULT_TIMEOUT_MS),
            Some(DEFAULT_TIMEOUT_MS),
            DEFAULT_RESTART_MS
        )
    );
    for bad in [
        "RestartSec=soon",
        "RestartSec=infinity",
        "TimeoutSec=5 parsecs",
    ] {
        assert!(service(bad).is_err(), "{bad}");
    }
}

#[test]
fn kill_modes_limits_booleans() {
    for (v, want) in [
        ("control-group", KillMode::ControlGroup),
        ("process", KillMode::Process),
        ("mixed", KillMode::Mixed),
        ("none", KillMode::None),
    ] {
        assert_eq!(service(&format!("KillMode={v}")).unwrap().kill_mode, want);
    }
    assert!(service("KillMode=all").is_err());
    for (v, soft, hard) in [
        ("1024", Some(1024), Some(1024)),
        ("infinity", None, None),
        ("1024:524288", Some(1024), Some(524_288)),
    ] {
        assert_eq!(
            service(&format!("LimitNOFILE={v}")).unwrap().limit_nofile,
            Some(RLimit { soft, hard })
        );
    }
    assert!(service("LimitNOFILE=many").is_err());
    for (v, want) in [
        ("yes", true),
        ("true", true),
        ("on", true),
        ("1", true),
        ("no", false),
        ("false", false),
        ("off", false),
        ("0", false),
    ] {
        assert_eq!(
            service(&format!("RemainAfterExit={v}"))
                .unwrap()
                .remain_after_exit,
            want,
            "{v}"
        );
    }
    assert!(service("RemainAfterExit=maybe").is_err());
    assert!(service("SendSIGHUP=yes").unwrap().send_sighup);
    assert!(!service("SendSIGHUP=no").unwrap().send_sighup);
    assert!(service("SendSIGHUP=often").is_err());
}

#[test]
fn environment_and_paths() {
    let u = service(
        "Environment=A=1 B=2\nEnvironment=\"C=x y\" 'D=z'\nEnvironment=\"E=1 F=2\"\nEnvironmentFile=-/etc/opt\nWorkingDirectory=~\nUser=core\nGroup=docker",
    )
    .unwrap();
    assert_eq!(
        u.environment,
        kv(&[
            ("A", "1"),
            ("B", "2"),
            ("C", "x y"),
            ("D", "z"),
            ("E", "1 F=2")
        ])
    );
    assert_eq!(u.environment_files[0].path, "/etc/opt");
    assert!(u.environment_files[0].optional);
    assert_eq!(u.working_directory.as_ref().unwrap().path, "~");
    assert_eq!(u.user.as_deref(), Some("core"));
    assert_eq!(u.group.as_deref(), Some("docker"));
    for bad in [
        "Environment=NOEQ",
        "Environment=\"A=1",
        "EnvironmentFile=relative",
        "WorkingDirectory=relative",
    ] {
        assert!(service(bad).is_err(), "{bad}");
    }
}

#[test]
fn conditions_parse_and_evaluate() {
    let text = "[Unit]\nConditionPathExists=/a\nConditionPathExists=!/b\nConditionPathIsDirectory=|/c\nConditionFileNotEmpty=|!/d\nConditionDirectoryNotEmpty=/e\nConditionPathIsSymbolicLink=/f\nConditionFileIsExecutable=/g\nConditionVirtualization=kvm\n[Service]\nExecStart=/x\n";
    let (u, w) = Unit::from_text("t.service", text).unwrap();
    assert_eq!(u.conditions.len(), 7);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].line, 9);
    assert!(w[0].why.contains("ConditionVirtualization"));
    let c = |check, negate, trigger| Condition {
        check,
        negate,
        trigger,
    };
    let conds = [
        c(Check::PathExists("/a".into()), false, false),
        c(Check::PathExists("/b".into()), true, false),
        c(Check::PathIsDirectory("/c".into()), false, true),
        c(Check::FileNotEmpty("/d".into()), true, true),
    ];
    assert_eq!(u.conditions[..4], conds);
    let eval =
        |present: &[&str]| conditions_met(&conds, &mut |ch: &Check| present.contains(&ch.path()));
    // /a must exist, /b must not, and one trigger must hold: /c exists or /d does not
    assert!(eval(&["/a", "/d", "/c"]));
    assert!(eval(&["/a"]));
    assert!(!eval(&["/a", "/d"]));
    assert!(!eval(&["/a", "/b", "/c"]));
    assert!(!eval(&[]));
    assert!(conditions_met(&[], &mut |_| false));
    for bad in ["ConditionPathExists=relative", "ConditionPathExists=!!/x"] {
        let e = Unit::from_text(
            "t.service",
            &format!("[Unit]\n{bad}\n[Service]\nExecStart=/x\n"),
        );
        assert!(
            matches!(e, Err(UnitError::Syntax { line: 2, .. })),
            "{bad}: {e:?}"
        );
    }
}

#[test]
fn command_prefixes_are_stored() {
    let u = service("ExecStartPre=+/bin/a\nExecStartPre=!/bin/b\nExecStartPre=!!/bin/c\nExecStartPost=@/bin/d dee\nExecReload=:/bin/kill -HUP $MAINPID").unwrap();
    let p: Vec<Privileges> = u.exec_start_pre.iter().map(|c| c.privileges).collect();
    assert_eq!(
        p,
        [
            Privileges::Full,
            Privileges::NoSetuid,
            Privileges::NoSetuidWithoutAmbient
        ]
    );
    assert_eq!(u.exec_start_post[0].argv0.as_deref(), Some("dee"));
    assert!(u.exec_reload[0].no_env_expansion);
    assert_eq!(u.exec_reload[0].argv, ["/bin/kill", "-HUP", "$MAINPID"]);
}

#[test]
fn specifiers_in_values_and_their_errors() {
    let (u, _) = load(
        "app@a-b.service",
        "[Unit]\nDescription=%n %N %p %i %I %m %H %b 100%%\n[Service]\nExecStart=/bin/echo %I\n",
    );
    assert_eq!(
        u.description.as_deref(),
        Some("app@a-b.service app@a-b app a-b a/b 6f1b5a4c2d3e4f5a6b7c8d9e0f1a2b3c node1 00112233445566778899aabbccddeeff 100%")
    );
    assert_eq!(u.exec_start[0].argv, ["/bin/echo", "a/b"]);
    // specifiers in commands and environment expand word by word after unquoting: an
    // instance that unescapes to a space stays one word
    let (u, _) = load(
        "app@x\\x20y.service",
        "[Service]\nExecStart=/bin/echo %I \"%i\"\nEnvironment=NAME=%I 'Q=%I'\n",
    );
    assert_eq!(u.exec_start[0].argv, ["/bin/echo", "x y", "x\\x20y"]);
    assert_eq!(u.environment, kv(&[("NAME", "x y"), ("Q", "x y")]));
    // an unknown specifier names its line
    let e = Unit::from_text(
        "t.service",
        "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/date +%Y\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.service:4: ExecStart=/bin/date +%Y: unknown specifier %Y; write %% for a literal percent sign"
    );
    // host facts that were not given are errors, not empty strings
    let e = Unit::from_text("t.service", "[Service]\nExecStart=/bin/echo %H\n").unwrap_err();
    assert!(e.to_string().contains("%H needs the hostname"), "{e}");
    // an unknown key is only a warning, whatever its value holds
    let (_, w) = Unit::from_text(
        "t.service",
        "[Service]\nExecStart=/x\nStandardOutput=%bogus\n",
    )
    .unwrap();
    assert_eq!(w.len(), 1);
}

#[test]
fn whole_unit_diagnostics() {
    for (name, text, want) in [
        (
            "t.service",
            "[Service]\nExecStart=/a\nExecStart=/b\n",
            "t.service:3: a second ExecStart= command (first at t.service:2)",
        ),
        (
            "t.service",
            "[Unit]\nDescription=x\n",
            "t.service: [Service] has no ExecStart=",
        ),
        (
            "t.service",
            "[Service]\nExecStart=sh\n",
            "t.service:2: ExecStart=sh: program \"sh\" must be an absolute path",
        ),
        (
            "t.service",
            "[Service]\nExecStart=/a 'b\n",
            "t.service:2: ExecStart=/a 'b: unterminated ' quote",
        ),
        (
            "t.timer",
            "[Timer]\n",
            "t.timer: .timer units are not supported",
        ),
        ("t@.service", "[Service]\nExecStart=/a\n", "is a template"),
        ("bad name.service", "", "not a valid unit name"),
        ("t.service", "[Service\n", "t.service:1: section header"),
    ] {
        let e = Unit::from_text(name, text).unwrap_err().to_string();
        assert!(e.starts_with(want) || e.contains(want), "{text:?}: {e}");
    }
    // a oneshot may have several
    assert!(Unit::from_text(
        "t.service",
        "[Service]\nType=oneshot\nExecStart=/a\nExecStart=/b\n"
    )
    .is_ok());
}

#[test]
fn x_keys_and_sections_are_ignored_silently() {
    let (u, w) = Unit::from_text(
        "t.service",
        "[Unit]\nX-Thing=1\n[Service]\nExecStart=/x\nX-Other=%bad\n[X-Mine]\nA=b\n",
    )
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert!(u.x_fleet.is_empty());
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

#[test]
fn random_input_never_panics() {
    let tokens = [
        "[Unit]",
        "[Service]",
        "[Install]",
        "[X-Fleet]",
        "[",
        "]",
        "\n",
        "\n",
        "\n",
        "=",
        " ",
        "\t",
        "\\",
        "\\\n",
        "\"",
        "'",
        "%",
        "%i",
        "%n",
        "%%",
        "%z",
        ";",
        " ; ",
        "#",
        "-",
        "@",
        "+",
        "!",
        "!!",
        "|",
        ":",
        "/bin/x",
        "ExecStart=",
        "ExecStartPre=",
        "Environment=",
        "Type=",
        "oneshot",
        "Restart=",
        "always",
        "RestartSec=",
        "1min",
        "1.5",
        "ms",
        "infinity",
        "LimitNOFILE=",
        "1:2",
        "ConditionPathExists=",
        "After=",
        "a.service",
        "\\x4",
        "\\u00e9",
        "\\777",
        "é",
        "\u{feff}",
        "\r\n",
        "A=1",
        "TimeoutSec=",
        "0",
        "WorkingDirectory=",
        "EnvironmentFile=",
        "KillMode=",
        "RemainAfterExit=",
        "yes",
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let host = host();
    let lookup = Lookup::system();
    for _ in 0..20_000 {
        let len = (rng.next() % 40) as usize;
        let text: String = (0..len).map(|_| rng.pick(&tokens)).collect();
        let _ = parse(&text);
        let _ = Unit::from_text("t.service", &text);
        let _ = Unit::from_sources(
            "r@inst.service",
            &[
                Source {
                    path: "a".into(),
                    text: text.clone(),
                },
                Source {
                    path: "b".into(),
                    text: text.chars().rev().collect(),
                },
            ],
            &host,
        );
        let _ = split_words(&text);
        let _ = parse_timespan_ms(&text);
        let _ = parse_env_file(&text);
        let mut tree = UnitTree::new();
        tree.file("/etc/systemd/system/r@.service", &text)
            .file("/etc/systemd/system/r@inst.service.d/x.conf", &text);
        let _ = lookup.load(&tree, "r@inst.service", &host);
    }
    // raw bytes, decoded lossily as a reader of untrusted files would
    for _ in 0..5_000 {
        let len = (rng.next() % 200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        let _ = Unit::from_text("t.service", &text);
        let _ = UnitName::parse(&text);
        let _ = unescape(&text);
    }
}
