//! The one multi-call binary in crust images: dispatches on the name it was called by, like
//! busybox (`init`, `crustctl`, or `crust-agent AGENT ARGS...`).

use std::path::Path;

/// Agents that have names but are not in this build yet.
const NOT_YET: &[&str] = &["fleet", "fleetctl", "flannel", "flanneld", "runtime"];

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    std::process::exit(dispatch(&argv));
}

fn dispatch(argv: &[String]) -> i32 {
    let arg0 = argv.first().map(String::as_str).unwrap_or("crust-agent");
    // PID 1 is always init, whatever the kernel or a boot loader called it.
    if std::process::id() == 1 {
        return crust_init::run(argv);
    }
    let name = Path::new(arg0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(arg0);
    match name {
        "crust-agent" => match argv.get(1) {
            Some(agent) => run_agent(agent, &argv[1..]),
            None => {
                eprintln!("usage: crust-agent AGENT [ARGS...]   (agents: init, crustctl, kv)");
                2
            }
        },
        other => run_agent(other, argv),
    }
}

/// `argv[0]` is the agent's name.
fn run_agent(name: &str, argv: &[String]) -> i32 {
    match name {
        "init" => crust_init::run(argv),
        // etcd's names too, so units and scripts written for etcd2 run it unchanged.
        "kv" | "etcd2" | "etcd" => crust_kv::server::main(argv),
        // `crustctl update ...` belongs to update-engine; everything else to init's crustctl.
        "crustctl" if argv.get(1).map(String::as_str) == Some("update") => {
            crust_update_engine::ctl::run(&argv[2..])
        }
        "crustctl" if argv.get(1).map(String::as_str) == Some("locksmith") => {
            crust_update_engine::locksmith::ctl::run(&argv[2..])
        }
        "crustctl" if argv.get(1).map(String::as_str) == Some("kv") => {
            crust_kv::ctl::run(&argv[2..])
        }
        "crustctl" if argv.get(1).map(String::as_str) == Some("cloud-config") => {
            cloud_config_validate(&argv[2..])
        }
        "crustctl" => crust_init::ctl::run(&argv[1..]),
        "cloudinit" => crust_init::cloudinit::main(&argv[1..]),
        "systemd-notify" => crust_init::service::notify_cli(&argv[1..]),
        "exec-unit" => crust_init::service::exec_chain_main(&argv[1..]),
        "networkd" => crust_init::network::main(&argv[1..]),
        "update-engine" => crust_update_engine::daemon::run(argv),
        "locksmithd" => crust_update_engine::locksmith::daemon::run(argv),
        n if NOT_YET.contains(&n) => {
            eprintln!("crust-agent: {n} is not part of this build yet");
            2
        }
        n => {
            eprintln!("crust-agent: unknown agent {n:?} (agents: init, crustctl, kv)");
            2
        }
    }
}

/// `crustctl cloud-config validate FILE`: the same check and output as `crust validate-config`.
fn cloud_config_validate(args: &[String]) -> i32 {
    let [verb, file] = args else {
        eprintln!("usage: crustctl cloud-config validate FILE");
        return 2;
    };
    if verb != "validate" {
        eprintln!("usage: crustctl cloud-config validate FILE");
        return 2;
    }
    match std::fs::read(file) {
        Ok(bytes) => {
            let v = crust_common::cloudconfig::validate(&String::from_utf8_lossy(&bytes));
            print!("{}", v.render(file));
            if v.is_ok() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("crustctl: cannot read {file}: {e}; check the path");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dispatches_on_the_called_name() {
        // Agents not in this build say so and exit 2, by symlink name or as a subcommand.
        assert_eq!(dispatch(&argv(&["/usr/bin/fleet", "list-units"])), 2);
        assert_eq!(dispatch(&argv(&["crust-agent", "fleet"])), 2);
        // kv parses etcd's flags: an unknown one is a usage error before anything starts.
        assert_eq!(dispatch(&argv(&["crust-agent", "kv", "--frobnicate"])), 2);
        assert_eq!(dispatch(&argv(&["/usr/bin/etcd2", "--frobnicate"])), 2);
        // update-engine refuses to run on a system not booted from a crust USR slot.
        if !std::fs::read_to_string("/proc/cmdline")
            .unwrap_or_default()
            .contains("mount.usr=")
        {
            assert_eq!(
                dispatch(&argv(&["/usr/bin/crust-agent", "update-engine"])),
                1
            );
        }
        assert_eq!(
            dispatch(&argv(&["/usr/bin/crustctl", "locksmith", "frobnicate"])),
            2
        );
        // `crustctl update` with a bad verb is a usage error from update-engine's client.
        assert_eq!(
            dispatch(&argv(&["/usr/bin/crustctl", "update", "frobnicate"])),
            2
        );
        assert_eq!(dispatch(&argv(&["crust-agent", "no-such-agent"])), 2);
        assert_eq!(dispatch(&argv(&["crust-agent"])), 2);
        // crustctl parses its own arguments: an unknown verb is a usage error.
        assert_eq!(dispatch(&argv(&["/usr/bin/crustctl", "frobnicate"])), 2);
        assert_eq!(
            dispatch(&argv(&["crust-agent", "crustctl", "frobnicate"])),
            2
        );
        // init refuses to run when it is not PID 1 (as in any test process).
        assert_eq!(dispatch(&argv(&["/init"])), 1);
        assert_eq!(dispatch(&argv(&["crust-agent", "init"])), 1);
    }
}
