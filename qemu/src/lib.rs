//! QEMU machines and clusters for crust images. Being written.
pub mod cli;
