//! Kernel modules a manifest implies: what the appliance uses needs these
//! drivers on a kernel that has them as modules (Debian's cloud kernel),
//! and a user has no reason to know their names. The builder adds those
//! the kernel has as loadable modules (not built in, not missing) unless
//! `[kernel] implied_modules = false`, and shows the reason beside each in
//! its table.
//!
//! - every appliance: the ACPI power button (`button`) and the input
//!   events the init reads it from (`evdev`);
//! - networking (`[[network]]`, `[net] ntp`, or a service after
//!   `network-online`): QEMU's virtio NIC, `virtio_pci` and `virtio_net`;
//! - `[[mount]]`s: QEMU's virtio disk (`virtio_pci`, `virtio_blk`) and the
//!   filesystem (`ext4`; `vfat` with the code page and I/O character set
//!   it loads at mount time: `codepage=`/`iocharset=` from the mount's
//!   options, else the kernel's defaults, `nls_cp437` and, on Debian's
//!   kernels, `nls_ascii`);
//! - a service that runs an OCI image: `overlay`, its root filesystem;
//!   with `storage = "erofs"` also the virtio disk and `erofs`.

use crate::manifest::Manifest;
use crate::runtime::FsType;

/// One implied module and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImpliedModule {
    pub name: String,
    /// What implies it, as the build table shows it after "implied by ":
    /// `[[mount]] /boot (vfat)`, `the ACPI power button`, ...
    pub reason: String,
}

/// The FAT defaults a kernel was configured with
/// (`CONFIG_FAT_DEFAULT_CODEPAGE`, `CONFIG_FAT_DEFAULT_IOCHARSET`): vfat
/// loads both character sets at mount time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatDefaults {
    pub codepage: String,
    pub iocharset: String,
}

impl Default for FatDefaults {
    /// Linux's own defaults.
    fn default() -> Self {
        FatDefaults {
            codepage: "437".into(),
            iocharset: "iso8859-1".into(),
        }
    }
}

impl FatDefaults {
    /// From a kernel `.config` text; Linux's defaults for what it lacks.
    pub fn from_kernel_config(config: &str) -> FatDefaults {
        let mut d = FatDefaults::default();
        for line in config.lines() {
            if let Some(v) = line.strip_prefix("CONFIG_FAT_DEFAULT_CODEPAGE=") {
                d.codepage = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("CONFIG_FAT_DEFAULT_IOCHARSET=") {
                d.iocharset = v.trim().trim_matches('"').to_string();
            }
        }
        d
    }
}

/// The module that provides character set `name` (`iso8859-1` ->
/// `nls_iso8859_1`, `437` -> `nls_cp437`), as `load_nls` asks for it.
fn nls_module(charset: &str) -> String {
    format!("nls_{}", charset.replace('-', "_"))
}

impl Manifest {
    /// The modules this manifest implies, in load order, each once (the
    /// first reason wins). Empty with `implied_modules = false`.
    pub fn implied_modules(&self, fat: &FatDefaults) -> Vec<ImpliedModule> {
        let mut out: Vec<ImpliedModule> = Vec::new();
        if !self.kernel.implied_modules {
            return out;
        }
        let mut add = |name: &str, reason: &str| {
            if !out.iter().any(|m| m.name == name) {
                out.push(ImpliedModule {
                    name: name.to_string(),
                    reason: reason.to_string(),
                });
            }
        };
        let button = "the ACPI power button";
        add("button", button);
        add("evdev", button);

        let net_reason = if !self.net.interfaces.is_empty() {
            Some("[[network]]".to_string())
        } else if !self.net.ntp.is_empty() {
            Some("[net] ntp".to_string())
        } else {
            self.services
                .iter()
                .find(|s| s.after.iter().any(|a| a.value == "network-online"))
                .map(|s| format!("service {} after network-online", s.name.value))
        };
        if let Some(r) = net_reason {
            add("virtio_pci", &r);
            add("virtio_net", &r);
        }

        for m in &self.mounts {
            let c = &m.config;
            let r = format!("[[mount]] {} ({})", c.path, c.fs.as_str());
            add("virtio_pci", &r);
            add("virtio_blk", &r);
            match c.fs {
                FsType::Ext4 => add("ext4", &r),
                FsType::Erofs => add("erofs", &r),
                FsType::Vfat => {
                    add("vfat", &r);
                    let opt = |key: &str| {
                        c.options
                            .split(',')
                            .find_map(|o| o.trim().strip_prefix(key))
                            .map(str::to_string)
                    };
                    let cp = opt("codepage=").unwrap_or_else(|| fat.codepage.clone());
                    let io = opt("iocharset=").unwrap_or_else(|| fat.iocharset.clone());
                    add(&nls_module(&format!("cp{cp}")), &r);
                    add(&nls_module(&io), &r);
                }
            }
        }

        // A container's root is an overlay (read-only image, tmpfs above).
        if let Some(s) = self.services.iter().find(|s| s.container.is_some()) {
            add("overlay", &format!("[[service]] {} (image)", s.name.value));
        }
        // ... whose lower layer may be an erofs partition.
        let on_disk = self.services.iter().find(|s| {
            s.container
                .as_ref()
                .is_some_and(|c| c.storage.value == crate::container::ImageStorage::Erofs)
        });
        if let Some(s) = on_disk {
            let r = format!("[[service]] {} (storage = erofs)", s.name.value);
            add("virtio_pci", &r);
            add("virtio_blk", &r);
            add("erofs", &r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Manifest {
        Manifest::parse(text, std::path::Path::new("/x/cairn.toml")).unwrap()
    }

    fn names(m: &Manifest, fat: &FatDefaults) -> Vec<(String, String)> {
        m.implied_modules(fat)
            .into_iter()
            .map(|i| (i.name, i.reason))
            .collect()
    }

    const KERNEL: &str = "name = \"x\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n";

    #[test]
    fn every_appliance_gets_the_power_button() {
        let m = load(KERNEL);
        let n = names(&m, &FatDefaults::default());
        assert_eq!(
            n,
            [
                ("button".into(), "the ACPI power button".into()),
                ("evdev".into(), "the ACPI power button".into())
            ]
        );
    }

    #[test]
    fn networking_implies_the_virtio_nic() {
        let svc =
            "[[service]]\nname = \"web\"\nexec = [\"/bin/x\"]\nafter = [\"network-online\"]\n";
        let m = load(&format!("{KERNEL}{svc}"));
        let n = names(&m, &FatDefaults::default());
        assert!(n.contains(&(
            "virtio_net".into(),
            "service web after network-online".into()
        )));
        assert!(n.iter().any(|(m, _)| m == "virtio_pci"));
        let m = load(&format!(
            "{KERNEL}[[network]]\nmatch = {{ name = \"eth0\" }}\ndhcp4 = true\n"
        ));
        assert!(names(&m, &FatDefaults::default())
            .contains(&("virtio_net".into(), "[[network]]".into())));
        let m = load(&format!("{KERNEL}[net]\nntp = [\"192.0.2.1\"]\n"));
        assert!(
            names(&m, &FatDefaults::default()).contains(&("virtio_net".into(), "[net] ntp".into()))
        );
    }

    #[test]
    fn mounts_imply_disk_filesystem_and_code_pages() {
        let mounts = "[[mount]]\nlabel = \"BOOT\"\npath = \"/boot\"\nfs = \"vfat\"\n\
                      [[mount]]\nlabel = \"DATA\"\npath = \"/data\"\nfs = \"ext4\"\n";
        let m = load(&format!("{KERNEL}{mounts}"));
        let debian = FatDefaults::from_kernel_config(
            "CONFIG_VFAT_FS=m\nCONFIG_FAT_DEFAULT_CODEPAGE=437\nCONFIG_FAT_DEFAULT_IOCHARSET=\"ascii\"\n",
        );
        let n = names(&m, &debian);
        let boot = "[[mount]] /boot (vfat)".to_string();
        let data = "[[mount]] /data (ext4)".to_string();
        assert_eq!(
            &n[2..],
            [
                ("virtio_pci".into(), boot.clone()),
                ("virtio_blk".into(), boot.clone()),
                ("vfat".into(), boot.clone()),
                ("nls_cp437".into(), boot.clone()),
                ("nls_ascii".into(), boot),
                ("ext4".into(), data),
            ]
        );
        // Linux's defaults without a kernel config.
        let n = names(&m, &FatDefaults::default());
        assert!(n.iter().any(|(m, _)| m == "nls_iso8859_1"));
        // The mount's own options win.
        let m = load(&format!(
            "{KERNEL}[[mount]]\nlabel = \"B\"\npath = \"/b\"\nfs = \"vfat\"\noptions = \"ro,codepage=850,iocharset=utf8\"\n"
        ));
        let n = names(&m, &FatDefaults::default());
        assert!(n.iter().any(|(m, _)| m == "nls_cp850"));
        assert!(n.iter().any(|(m, _)| m == "nls_utf8"));
        assert!(!n.iter().any(|(m, _)| m == "nls_cp437"));
    }

    #[test]
    fn implied_modules_false_turns_it_off() {
        let m = load(&KERNEL.replace("[kernel]\n", "[kernel]\nimplied_modules = false\n"));
        assert!(m.implied_modules(&FatDefaults::default()).is_empty());
    }

    #[test]
    fn implied_modules_must_be_a_boolean() {
        let text = KERNEL.replace("[kernel]\n", "[kernel]\nimplied_modules = \"no\"\n");
        let e = Manifest::parse(&text, std::path::Path::new("/x/cairn.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/x/cairn.toml:3:19"), "{e}");
        assert!(e.contains("implied_modules"), "{e}");
    }
}
