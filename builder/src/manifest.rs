//! The image manifest: what goes into an image, as YAML. Unknown keys are errors, and values that
//! cannot work (a version of another channel, a partition too small) are refused here, before
//! anything is downloaded or written.

use crust_channels::{Channel, Version};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The manifest `crust build` uses without `--manifest`.
pub const DEFAULT_MANIFEST: &str = include_str!("../manifests/default.yaml");

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("manifest {origin}: field `{field}`: {why}")]
    Invalid {
        origin: String,
        field: String,
        why: String,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// OS version, `MAJOR.MINOR.PATCH` with MINOR naming the channel.
    pub version: Version,
    pub channel: Channel,
    /// Written into os-release as NAME/ID.
    #[serde(default = "default_name")]
    pub name: String,
    /// The platform the image is for; written to the OEM partition as its platform id.
    pub platform: Platform,
    pub kernel: Kernel,
    /// Debian packages whose files are installed into USR, with their dependency closure
    /// downloaded for the libraries those files need.
    pub packages: BTreeMap<String, Package>,
    /// Dependencies not followed when computing the closure (packaging-time helpers such as
    /// initramfs-tools that never run in the image).
    #[serde(default)]
    pub skip_dependencies: Vec<String>,
    /// Names under which the multi-call `crust-agent` binary is linked into /usr/bin.
    pub agents: Vec<String>,
    /// Directories copied over the root of the USR tree, in order; later ones win. Relative to
    /// the manifest's directory.
    pub overlays: Vec<PathBuf>,
    pub partitions: Partitions,
    pub boot: Boot,
}

fn default_name() -> String {
    "crust".to_string()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Qemu,
    Aws,
    Gce,
    Pxe,
}

impl Platform {
    pub fn id(self) -> &'static str {
        match self {
            Platform::Qemu => "qemu",
            Platform::Aws => "ec2",
            Platform::Gce => "gce",
            Platform::Pxe => "pxe",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Kernel {
    /// Debian package (or metapackage) providing vmlinuz and modules.
    pub package: String,
    /// Extra kernel command line; `mount.usr=` and `usrhash=` are added by the build.
    pub cmdline: String,
    /// Modules stage 1 loads from the initramfs (their dependencies are added automatically).
    pub early_modules: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Package {
    /// Paths inside the package (as in `dpkg -L`, without the leading `/`) installed into USR.
    /// Paths outside `usr/` are moved under it (merged /usr). The shared libraries these files
    /// need are found in the dependency closure and installed too.
    #[serde(default)]
    pub install: Vec<String>,
}

/// Partition sizes in MiB.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Partitions {
    pub esp_mib: u64,
    pub bios_boot_mib: u64,
    pub usr_mib: u64,
    pub oem_mib: u64,
    /// ROOT as shipped in the image; stage 1 grows it to the end of the disk.
    pub root_mib: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Boot {
    /// Boot counter of a new slot's loader entry: tries before systemd-boot falls back.
    pub tries: u32,
    /// systemd-boot menu timeout in seconds (0 boots at once).
    #[serde(default)]
    pub timeout: u32,
}

impl Manifest {
    /// Parses and validates. `origin` names the source in errors (a path or "default manifest").
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_saphyr::from_str(text).map_err(|e| ManifestError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        m.validate(origin)?;
        Ok(m)
    }

    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(&text, &path.display().to_string())
    }

    fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        let invalid = |field: &str, why: String| ManifestError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            why,
        };
        self.version
            .check_channel(self.channel)
            .map_err(|e| invalid("version", e.to_string()))?;
        let p = &self.partitions;
        for (field, value, min) in [
            ("partitions.esp-mib", p.esp_mib, 64),
            ("partitions.bios-boot-mib", p.bios_boot_mib, 1),
            ("partitions.usr-mib", p.usr_mib, 16),
            ("partitions.oem-mib", p.oem_mib, 1),
            ("partitions.root-mib", p.root_mib, 16),
        ] {
            if value < min {
                return Err(invalid(
                    field,
                    format!("{value} MiB is too small: at least {min} MiB"),
                ));
            }
        }
        // FAT32 needs at least 65525 clusters; see esp.rs for the cluster size used.
        if !(1..=15).contains(&self.boot.tries) {
            return Err(invalid(
                "boot.tries",
                format!("{} is out of range: use 1 to 15", self.boot.tries),
            ));
        }
        if self.kernel.cmdline.contains("mount.usr=") || self.kernel.cmdline.contains("usrhash=") {
            return Err(invalid(
                "kernel.cmdline",
                "must not set mount.usr= or usrhash=: the build adds them per slot".into(),
            ));
        }
        if self.agents.is_empty() {
            return Err(invalid("agents", "list at least `init`".into()));
        }
        for a in &self.agents {
            if a.is_empty() || a.contains('/') {
                return Err(invalid("agents", format!("{a:?} is not a command name")));
            }
        }
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "name",
                format!("{:?}: use lowercase letters, digits and -", self.name),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_manifest_is_valid() {
        let m = Manifest::parse(DEFAULT_MANIFEST, "default manifest").unwrap();
        assert_eq!(m.channel.minor(), m.version.minor);
        assert!(m.packages.contains_key("busybox-static"));
        assert!(m.agents.contains(&"init".to_string()));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let text = DEFAULT_MANIFEST.replace("channel:", "chanel: x\nchannel:");
        let e = Manifest::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(e.contains("chanel"), "{e}");
        let text = DEFAULT_MANIFEST.replace("  usr-mib:", "  usr-size: 3\n  usr-mib:");
        let e = Manifest::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(e.contains("usr-size"), "{e}");
    }

    #[test]
    fn impossible_values_name_the_field() {
        let text = DEFAULT_MANIFEST.replace("channel: alpha", "channel: stable");
        let e = Manifest::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(e.contains("`version`"), "{e}");
        let text = DEFAULT_MANIFEST.replace("  usr-mib: 1024", "  usr-mib: 2");
        let e = Manifest::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(e.contains("partitions.usr-mib"), "{e}");
        let text = DEFAULT_MANIFEST.replace("  tries: 3", "  tries: 0");
        let e = Manifest::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(e.contains("boot.tries"), "{e}");
    }
}
