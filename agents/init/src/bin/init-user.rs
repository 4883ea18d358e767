//! The service manager as an ordinary process (`init --user-mode --root DIR`), for host tests of
//! crust-init; in images the same code runs as `crust-agent init --user-mode`.

fn main() {
    let mut argv: Vec<String> = std::env::args().collect();
    // The manager runs ExecStartPre=/ExecStop= chains through its own binary.
    if argv.get(1).map(String::as_str) == Some("exec-unit") {
        std::process::exit(crust_init::service::exec_chain_main(&argv[2..]));
    }
    argv.push("--user-mode".into());
    std::process::exit(crust_init::run(&argv));
}
