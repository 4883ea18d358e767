//! Build-level tests: reproducibility and refusal of bad input. They use the real Debian packages
//! (downloaded into the cache on first use) and compile the agent, so they live with the other
//! end-to-end tests rather than in the builder's unit tests.

use crust::build::{self, BuildArgs};
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/crust-e2e-build")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn two_builds_with_the_same_inputs_are_byte_identical() {
    let a = scratch("repro-a");
    let b = scratch("repro-b");
    let args = |out: &PathBuf| BuildArgs {
        out: out.clone(),
        quiet: true,
        ..BuildArgs::default()
    };
    let one = build::run(&args(&a)).expect("first build");
    let two = build::run(&args(&b)).expect("second build");
    for f in ["crust.img", "usr.img", "initrd", "vmlinuz", "crust.json"] {
        let x = std::fs::read(a.join(f)).expect("read first output");
        let y = std::fs::read(b.join(f)).expect("read second output");
        assert!(x == y, "{f} differs between two builds of the same inputs");
    }
    assert_eq!(one.verity.root_hash, two.verity.root_hash);
    let report = crust::inspect::inspect(&a.join("crust.img"))
        .expect("inspect")
        .to_string();
    assert!(
        report.contains(&one.verity.root_hash),
        "inspect shows the root hash:\n{report}"
    );
    assert!(
        report.contains(&one.version),
        "inspect shows the version:\n{report}"
    );
}

#[test]
fn a_usr_partition_too_small_for_the_tree_is_refused_naming_the_field() {
    let dir = scratch("too-small");
    let manifest = dir.join("small.yaml");
    let text = crust::manifest::DEFAULT_MANIFEST
        .replace("  usr-mib: 1024", "  usr-mib: 16")
        .replace(
            "../../overlays",
            &format!("{}/overlays", crust::agent::source_dir().display()),
        );
    std::fs::write(&manifest, text).expect("write manifest");
    let err = build::run(&BuildArgs {
        manifest: Some(manifest),
        out: dir.join("out"),
        quiet: true,
        ..BuildArgs::default()
    })
    .expect_err("a 16 MiB USR cannot hold the tree");
    let msg = err.to_string();
    assert!(msg.contains("usr-mib"), "{msg}");
}

#[test]
fn offline_build_with_an_empty_cache_names_the_missing_package() {
    let dir = scratch("offline");
    let err = build::run(&BuildArgs {
        out: dir.join("out"),
        offline: true,
        quiet: true,
        cache: Some(dir.join("empty-cache")),
        ..BuildArgs::default()
    })
    .expect_err("nothing is cached");
    let msg = err.to_string();
    assert!(msg.contains("apt-get download"), "{msg}");
    assert!(
        [
            "busybox-static",
            "e2fsprogs",
            "libc6",
            "systemd-boot-efi",
            "linux-image-cloud-amd64"
        ]
        .iter()
        .any(|p| msg.contains(p)),
        "{msg}"
    );
}
