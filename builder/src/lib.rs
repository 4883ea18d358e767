//! `crust`, the host side of crust: builds reproducible A/B disk images from Debian packages and
//! the agents in this workspace, inspects them, and drives QEMU clusters (through `crust-qemu`).
//!
//! The build is a pipeline of small pure-ish steps, each in its own module:
//! `manifest` (what to build) -> `debian` (packages into the cache) -> `kmod` / `elf` (module and
//! library closures) -> `usr` (the USR and initramfs trees, see `tree`) -> `squashfs` + `verity`
//! (the USR partition) -> `initramfs` (cpio) -> `esp` (FAT32) -> `disk` (GPT image) -> `build`
//! (orchestration, JSON manifest). `inspect` reads an image back.

pub mod agent;
pub mod bench;
pub mod build;
pub mod channel;
pub mod debian;
pub mod demo;
pub mod disk;
pub mod elf;
pub mod esp;
pub mod initramfs;
pub mod inspect;
pub mod keys;
pub mod kmod;
pub mod manifest;
pub mod progress;
pub mod publish;
pub mod serve;
pub mod squashfs;
pub mod tree;
pub mod usr;
pub mod validate;
pub mod verity;
