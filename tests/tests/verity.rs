//! A USR partition that does not match its verity root hash must never be mounted: stage 1
//! refuses it with a clear console message and drops to the emergency shell instead of booting.

use anyhow::{Context, Result};
use crust_tests::{image, Cluster, BOOT_TIMEOUT};
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;

#[test]
fn one_flipped_byte_in_usr_a_stops_the_boot_with_a_message() -> Result<()> {
    let original = image()?;
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("flipped.img");
    // cp keeps the image sparse; a plain copy would write 2 GiB of zeros.
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&original)
        .arg(&bad)
        .status()
        .context("running cp")?;
    anyhow::ensure!(st.success(), "cp failed: {st}");

    // One byte in the middle of USR-A's squashfs data.
    let parts = crust::disk::read_gpt(&bad)?;
    let usr_a = parts
        .iter()
        .find(|p| p.number == 3)
        .context("image has no partition 3")?;
    let at = usr_a.first_lba * 512 + 8 * 1024 * 1024;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bad)?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut b)?;
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&b)?;
    f.sync_all()?;
    drop(f);

    let c = Cluster::start(bad, 1)?;
    let log = c
        .node(0)
        .wait_console("emergency shell", BOOT_TIMEOUT)
        .context("stage 1 should stop at the emergency shell")?;
    assert!(
        log.contains("stage 1 failed") && log.contains("dm-verity"),
        "the console names the verity failure:\n{log}"
    );
    assert!(
        !log.contains(crust_common::ready::PREFIX),
        "a machine with a corrupted /usr must not reach ready:\n{log}"
    );
    Ok(())
}
