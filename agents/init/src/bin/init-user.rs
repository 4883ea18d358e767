//! The service manager as an ordinary process (`init --user-mode --root DIR`), for host tests of
//! crust-init; in images the same code runs as `crust-agent init --user-mode`.

fn main() {
    let mut argv: Vec<String> = std::env::args().collect();
    argv.push("--user-mode".into());
    std::process::exit(crust_init::run(&argv));
}
