use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use cairn::build::{build, BuildOptions};
use cairn::run::{Accel, Boot, Net, RunOptions};

/// Build tiny declarative Linux appliances.
#[derive(Parser)]
#[command(name = "cairn", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The manifest (cairn.toml).
    manifest: PathBuf,
    /// Output directory.
    #[arg(short, long, default_value = "out")]
    out: PathBuf,
    #[command(flatten)]
    flags: BuildFlags,
}

/// How to build, besides the manifest and the output directory.
#[derive(clap::Args)]
struct BuildFlags {
    /// The cairn-init binary to put in the image (default: $CAIRN_INIT or
    /// the one built by `cargo xtask build-init`).
    #[arg(long)]
    init: Option<PathBuf>,
    /// systemd-stub to build the UKI on.
    #[arg(long, default_value = cairn_image::uki::DEFAULT_STUB)]
    stub: PathBuf,
    /// Ask apt for the kernel package's current version even if the cached
    /// answer is less than a day old.
    #[arg(long)]
    refresh: bool,
    /// Also write NAME.spdx.json: every file in the image with its origin
    /// and licence (SPDX 2.3).
    #[arg(long)]
    sbom: bool,
    /// Development build: compress the initramfs quickly (zstd level 3 on
    /// every core, xz preset 1, gzip level 1) instead of the smallest
    /// (release) setting.
    #[arg(long)]
    fast: bool,
    /// Sign the UKI for Secure Boot with this PEM key (overrides [sign]).
    #[arg(long, requires = "sign_cert")]
    sign_key: Option<PathBuf>,
    /// The PEM certificate of --sign-key.
    #[arg(long, requires = "sign_key")]
    sign_cert: Option<PathBuf>,
}

#[derive(clap::Args)]
struct FirmwareArgs {
    /// Boot through OVMF's Secure Boot build, enforcing signatures
    /// (implies --uefi; default variables: Debian's snakeoil keys).
    #[arg(long)]
    secure_boot: bool,
    /// OVMF variable store to boot with (copied, never modified), e.g. one
    /// with your own keys enrolled.
    #[arg(long)]
    vars: Option<PathBuf>,
    /// After the guest powers off, save the variable store as the firmware
    /// left it (for example with keys the guest enrolled) to this file.
    #[arg(long)]
    save_vars: Option<PathBuf>,
}

/// How `run` and `boot` start QEMU.
#[derive(clap::Args)]
struct MachineArgs {
    #[command(flatten)]
    firmware: FirmwareArgs,
    /// Boot the ISO or disk image through SeaBIOS (legacy BIOS) instead
    /// of OVMF (UEFI).
    #[arg(long, conflicts_with = "secure_boot")]
    bios: bool,
    /// How the ISO or disk image is attached: a CD-ROM drive, a USB stick
    /// (usb-storage on xHCI) or a virtio disk. Default: cdrom for an .iso,
    /// disk otherwise.
    #[arg(long = "as", value_enum, value_name = "MEDIA")]
    media: Option<cairn::run::MediaKind>,
    #[arg(long, value_enum, default_value = "tcg")]
    accel: Accel,
    /// Guest memory, as QEMU takes it (64M, 1G); default: the manifest's
    /// `memory` (`cairn run`), else 256M.
    #[arg(long)]
    mem: Option<String>,
    #[arg(long, value_enum, default_value = "user")]
    net: Net,
    /// Stop QEMU (and fail) after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Extra QEMU arguments, after `--`.
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

impl MachineArgs {
    fn run_options(self, uefi: bool, arch: cairn_manifest::Arch) -> RunOptions {
        RunOptions {
            qemu: cairn::run::qemu_for(arch),
            uefi,
            bios: self.bios,
            secure_boot: self.firmware.secure_boot,
            vars: self.firmware.vars,
            save_vars: self.firmware.save_vars,
            accel: self.accel,
            mem: self.mem.unwrap_or_else(|| "256M".into()),
            net: self.net,
            timeout: self.timeout.map(Duration::from_secs),
            extra: self.qemu_args,
        }
    }
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Make a PK/KEK/db key set with .esl and .auth files to enroll it.
    Generate {
        dir: PathBuf,
        /// Prefix of the certificates' common names.
        #[arg(long, default_value = "cairn")]
        common_name: String,
        /// Make the ed25519 update signing key pair instead (update.key,
        /// update.pub) for `[update] keys` and `cairn publish --key`.
        #[arg(long)]
        update: bool,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Start an appliance: write DIR/cairn.toml (commented, builds and
    /// boots as it is) from a template. Refuses to overwrite a manifest.
    New {
        /// The directory (created if missing); its name names the appliance.
        dir: PathBuf,
        /// hello | net | web | disk
        #[arg(long, short, default_value = "hello", value_parser = template_names())]
        template: String,
    },
    /// Build NAME.vmlinuz, NAME.initrd and NAME.efi from a manifest.
    Build(BuildArgs),
    /// Build, then boot in QEMU with the serial console here.
    Run {
        #[command(flatten)]
        build: BuildArgs,
        /// Boot the UKI through OVMF instead of direct kernel boot.
        #[arg(long)]
        uefi: bool,
        /// Boot NAME.img (the manifest's [disk]) through OVMF. The image is
        /// booted in place, so what the appliance writes persists across
        /// runs; only its ESP is refreshed with the new UKI.
        #[arg(long, conflicts_with = "uefi")]
        disk: bool,
        /// Boot NAME.iso (the manifest's [iso]): by UEFI, or by BIOS with
        /// --bios; as a CD unless --as says otherwise.
        #[arg(long, conflicts_with_all = ["uefi", "disk"])]
        iso: bool,
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// Boot an existing UKI (.efi) through OVMF, or an ISO (.iso) or disk
    /// image (.img, .vhd, .vhdx) through OVMF or, with --bios, SeaBIOS,
    /// without building.
    Boot {
        #[arg(value_name = "FILE")]
        efi: PathBuf,
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// List what is inside a UKI (.efi) or an initramfs, and a UKI's
    /// Secure Boot signature.
    Inspect {
        file: PathBuf,
        /// Say whether the signature verifies against this certificate.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
    /// What changed between two images (.efi, .initrd or raw .img):
    /// partitions, kernel, command line, files (sizes, SHA-256), services,
    /// network, signature. Exit status: 0 no differences, 1 differences,
    /// 2 trouble.
    Diff { old: PathBuf, new: PathBuf },
    /// Secure Boot keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `cairn completions bash >
    /// ~/.local/share/bash-completion/completions/cairn`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page cairn(1), or with --dir write it and one page
    /// per command (cairn-build.1, ...) into DIR.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the manifest's JSON Schema (for editors: a `#:schema FILE`
    /// first line in cairn.toml points taplo / Even Better TOML at it).
    Schema {
        /// The secondary config's schema instead (cairn.toml on the
        /// [config] mount).
        #[arg(long)]
        config: bool,
    },
    /// Build the manifest into DIR and write beside the image what a boot
    /// server needs: iPXE (undionly.kpxe) and its script for BIOS
    /// machines, dnsmasq configurations (full DHCP, and proxy DHCP) that
    /// answer UEFI HTTP boot, UEFI PXE and BIOS PXE, and nodes/ for the
    /// signed per-node configs.
    Netboot(NetbootCmd),
    /// Build the manifest (its [update] version) and publish the UKI with
    /// signed metadata into an update repository directory, served by any
    /// static HTTP server.
    Publish {
        #[command(flatten)]
        build: BuildArgs,
        /// The repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// The secret update key (`cairn keys generate --update`).
        #[arg(long)]
        key: PathBuf,
        /// How long the metadata stays valid (30d, 12h, ...).
        #[arg(long, default_value = "30d")]
        expires: String,
        /// Expiry as Unix seconds (overrides --expires; for tests).
        #[arg(long, hide = true)]
        expires_at: Option<u64>,
    },
    /// Hash a password for `[shell] password_hash` (argon2id): asks on a
    /// terminal, else reads the first line of standard input.
    HashPassword,
    /// Kernels built from source (`[kernel] source`).
    #[command(subcommand)]
    Kernel(KernelCmd),
    /// Write a raw disk image (NAME.img) or ISO (NAME.iso) to a whole
    /// block device you name, then read it back and verify it. Refuses a
    /// partition, a mounted or busy device, the root filesystem's disk and
    /// a device smaller than the image.
    Write {
        /// The raw image or ISO that `cairn build` wrote.
        image: PathBuf,
        /// The whole device to overwrite, e.g. /dev/sdb (never guessed).
        device: PathBuf,
        /// Do not ask for the device name to be typed back (needed without
        /// a terminal).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct NetbootCmd {
    #[command(subcommand)]
    sub: Option<NetbootSub>,
    #[command(flatten)]
    args: NetbootArgs,
}

#[derive(Subcommand)]
enum NetbootSub {
    /// Check a node config (the secondary config's schema; no [[network]]
    /// or [net]) as the node will, sign it for one node's MAC with a key
    /// of the manifest's [netboot] keys, and write DIR/nodes/MAC.toml.
    SignNode {
        /// The node config (TOML).
        config: PathBuf,
        /// The appliance's manifest (its name and [netboot] keys).
        #[arg(long)]
        manifest: PathBuf,
        /// The node's MAC address.
        #[arg(long)]
        mac: String,
        /// The secret key (`cairn keys generate --update`).
        #[arg(long)]
        key: PathBuf,
        /// The netboot directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct NetbootArgs {
    /// The manifest (cairn.toml).
    #[arg(required = true)]
    manifest: Option<PathBuf>,
    /// The directory to write (the build's outputs and the server's files).
    #[arg(long, required = true)]
    dir: Option<PathBuf>,
    /// The HTTP server serving DIR, as the nodes reach it: IPV4[:PORT]
    /// (dnsmasq's TFTP is on the same address).
    #[arg(long, required = true)]
    server: Option<String>,
    /// The interface dnsmasq serves.
    #[arg(long, default_value = "eth0")]
    interface: String,
    /// Addresses dnsmasq leases (full DHCP): FIRST,LAST. Default: .100
    /// to .199 of the server's /24.
    #[arg(long)]
    range: Option<String>,
    /// iPXE for BIOS PXE ROMs.
    #[arg(long, default_value = cairn::netboot::UNDIONLY)]
    ipxe: PathBuf,
    #[command(flatten)]
    flags: BuildFlags,
}

fn netboot(c: &NetbootCmd) -> anyhow::Result<()> {
    if let Some(NetbootSub::SignNode {
        config,
        manifest,
        mac,
        key,
        dir,
    }) = &c.sub
    {
        print!(
            "{}",
            cairn::netboot::sign_node(manifest, config, mac, key, dir)?
        );
        return Ok(());
    }
    let a = &c.args;
    // clap insists on these without a subcommand.
    let (Some(manifest), Some(dir), Some(server)) = (&a.manifest, &a.dir, &a.server) else {
        anyhow::bail!("cairn netboot needs MANIFEST, --dir and --server");
    };
    let site = cairn::netboot::Site::parse(server, &a.interface, a.range.as_deref())?;
    let report = build(manifest, &build_options_in(dir, &a.flags))?;
    eprint!("{report}");
    print!(
        "{}",
        cairn::netboot::write_dir(dir, &report.name, &report.cmdline, &site, &a.ipxe)?
    );
    Ok(())
}

#[derive(Subcommand)]
enum KernelCmd {
    /// Build (or find in the cache) the kernel a manifest's `[kernel]
    /// source` describes; print where it is.
    Build {
        /// The manifest (cairn.toml).
        manifest: PathBuf,
    },
    /// Merge the manifest's config fragments onto the base config, without
    /// compiling, and list the options that did not end up as requested
    /// (exit status 1 if any).
    Check {
        /// The manifest (cairn.toml).
        manifest: PathBuf,
    },
}

fn template_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        cairn::new::TEMPLATES
            .iter()
            .map(|t| clap::builder::PossibleValue::new(t.name).help(t.about)),
    )
}

fn build_options(a: &BuildArgs) -> BuildOptions {
    build_options_in(&a.out, &a.flags)
}

fn build_options_in(out: &std::path::Path, a: &BuildFlags) -> BuildOptions {
    let mut o = BuildOptions::new(out.to_path_buf());
    o.init = a.init.clone();
    o.stub = a.stub.clone();
    o.refresh = a.refresh;
    o.sbom = a.sbom;
    if a.fast {
        o.compression_effort = cairn_image::compress::Effort::Fast;
    }
    if let (Some(key), Some(cert)) = (&a.sign_key, &a.sign_cert) {
        o.sign = Some(cairn::sign::SignKey {
            key: key.clone(),
            cert: cert.clone(),
        });
    }
    o
}

/// The manifest and its `[kernel] source`, for `cairn kernel VERB`.
fn source_manifest(
    manifest: &std::path::Path,
    verb: &str,
) -> anyhow::Result<(cairn_manifest::Manifest, cairn_manifest::SourceKernel)> {
    let m = cairn_manifest::Manifest::load(manifest)?;
    let cairn_manifest::KernelSource::Source(src) = &m.kernel.source.value else {
        return Err(m
            .error_at(
                m.kernel.source.span,
                format!(
                    "`cairn kernel {verb}` needs a kernel built from source: set [kernel] source"
                ),
            )
            .into());
    };
    let src = src.clone();
    Ok((m, src))
}

fn kernel_check(manifest: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (m, src) = source_manifest(manifest, "check")?;
    let missing =
        cairn::kernel_build::check_source_kernel(&m, &src, &cairn_image::kernel::cache_dir())?;
    if missing.is_empty() {
        println!("every option of the fragments applied");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} option(s) did not end up as requested:", missing.len());
    for n in &missing {
        println!("  {n}");
    }
    Ok(ExitCode::FAILURE)
}

fn kernel_build(manifest: &std::path::Path) -> anyhow::Result<()> {
    let (m, src) = source_manifest(manifest, "build")?;
    let cache = cairn_image::kernel::cache_dir();
    let (k, built) = cairn::kernel_build::build_source_kernel(&m, &src, &cache)?;
    let size = std::fs::metadata(&k.image).map(|md| md.len()).unwrap_or(0);
    println!(
        "kernel {} ({} bytes){}",
        k.version,
        size,
        if built.cached { ", from the cache" } else { "" }
    );
    println!("image  {}", k.image.display());
    println!("config {}", built.config.display());
    Ok(())
}

/// `cairn man`: cairn(1) on stdout, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    let mut pages = vec![("cairn".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        // `cairn build` is shown as cairn-build, as git's pages are.
        let full = sub.clone().bin_name(format!("cairn {}", sub.get_name()));
        pages.push((format!("cairn-{}", sub.get_name()), full));
    }
    for (name, c) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .title(name.clone())
            .render(&mut out)?;
        let p = dir.join(format!("{name}.1"));
        std::fs::write(&p, out)?;
        println!("{}", p.display());
    }
    Ok(())
}

fn toml_string(s: &str) -> toml::Value {
    toml::Value::String(s.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build(a) => build(&a.manifest, &build_options(&a))
            .map(|r| print!("{r}"))
            .map_err(anyhow::Error::from),
        Cmd::Run {
            build: a,
            uefi,
            disk,
            iso,
            machine,
        } => (|| {
            let mut bo = build_options(&a);
            bo.keep_disk = disk;
            let report = build(&a.manifest, &bo)?;
            eprint!("{report}");
            let mut boot = Boot::in_dir(&a.out, &report.name, &report.cmdline);
            boot.arch = report.arch;
            if disk {
                if report.disk.is_none() {
                    anyhow::bail!("--disk needs a [disk] table in {}", a.manifest.display());
                }
                boot.disk = report.disk.clone();
            }
            if iso {
                let Some(path) = &report.iso else {
                    anyhow::bail!("--iso needs an [iso] table in {}", a.manifest.display());
                };
                let kind = machine.media.unwrap_or(cairn::run::MediaKind::Cdrom);
                boot.media = Some(cairn::run::Media::from_file(path, kind));
            } else if machine.bios || machine.media.is_some() {
                anyhow::bail!("--bios and --as go with --iso");
            }
            let mut machine = machine;
            if let (None, Some(n)) = (&machine.mem, report.memory) {
                machine.mem = Some(format!("{}M", n >> 20));
            }
            cairn::run::run(&boot, &machine.run_options(uefi || disk, report.arch))?;
            Ok(())
        })(),
        Cmd::New { dir, template } => cairn::new::new(&dir, &template)
            .map(|c| print!("{c}"))
            .map_err(anyhow::Error::from),
        Cmd::Schema { config } => {
            print!(
                "{}",
                if config {
                    cairn::new::CONFIG_SCHEMA
                } else {
                    cairn::new::SCHEMA
                }
            );
            Ok(())
        }
        Cmd::Diff { old, new } => {
            return match cairn::diff::diff_files(&old, &new) {
                Ok(d) => {
                    print!("{}", d.text);
                    ExitCode::from(u8::from(d.changed))
                }
                Err(e) => {
                    eprintln!("cairn: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man { dir } => man(dir.as_deref()),
        Cmd::Netboot(a) => netboot(&a),
        Cmd::HashPassword => cairn::password::hash_from_stdin()
            .map(|h| println!("{h}"))
            .map_err(anyhow::Error::from),
        Cmd::Kernel(KernelCmd::Build { manifest }) => kernel_build(&manifest),
        Cmd::Write { image, device, yes } => {
            let o = cairn::write::WriteOptions {
                yes,
                ..Default::default()
            };
            cairn::write::write(&image, &device, &o)
                .map(|w| print!("{w}"))
                .map_err(anyhow::Error::from)
        }
        Cmd::Kernel(KernelCmd::Check { manifest }) => match kernel_check(&manifest) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Cmd::Boot { efi, machine } => {
            // A UKI is a PE image ("MZ"); anything else is an ISO or a disk.
            let mut magic = [0u8; 2];
            let is_efi = std::fs::File::open(&efi)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .map_or(
                    efi.extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("efi")),
                    |()| magic == *b"MZ",
                );
            let is_iso = efi
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("iso"));
            let media = (!is_efi).then(|| {
                let default = if is_iso {
                    cairn::run::MediaKind::Cdrom
                } else {
                    cairn::run::MediaKind::Disk
                };
                cairn::run::Media::from_file(&efi, machine.media.unwrap_or(default))
            });
            if is_efi && (machine.bios || machine.media.is_some()) {
                eprintln!("cairn: --bios and --as are for ISO and disk images, not a UKI");
                return ExitCode::FAILURE;
            }
            // An arm64 UKI boots on the arm64 machine.
            let arch = match std::fs::read(&efi)
                .ok()
                .and_then(|b| is_efi.then(|| cairn_image::pe::parse(&b).ok()).flatten())
            {
                Some(i) if i.machine == cairn_image::pe::MACHINE_ARM64 => {
                    cairn_manifest::Arch::Arm64
                }
                _ => cairn_manifest::Arch::X86_64,
            };
            let boot = Boot {
                vmlinuz: PathBuf::new(),
                initrd: PathBuf::new(),
                efi,
                cmdline: String::new(),
                disk: None,
                media,
                arch,
            };
            cairn::run::run(&boot, &machine.run_options(true, boot.arch))
                .map_err(anyhow::Error::from)
        }
        Cmd::Inspect { file, cert } => cairn::inspect::inspect_with(&file, cert.as_deref())
            .map(|t| print!("{t}"))
            .map_err(anyhow::Error::from),
        Cmd::Keys(KeysCmd::Generate {
            dir, update: true, ..
        }) => cairn::publish::generate_keys(&dir)
            .map(|t| print!("{t}"))
            .map_err(anyhow::Error::from),
        Cmd::Publish {
            build: a,
            repo,
            key,
            expires,
            expires_at,
        } => (|| {
            let report = build(&a.manifest, &build_options(&a))?;
            eprint!("{report}");
            let m = cairn_manifest::Manifest::load(&a.manifest)?;
            let Some(u) = &m.update else {
                return Err(cairn::publish::PublishError::NoUpdate(a.manifest.clone()).into());
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let expires = match expires_at {
                Some(t) => t,
                None => {
                    let d = cairn_manifest::update::parse_duration(&toml_string(&expires))
                        .ok_or_else(|| {
                            anyhow::anyhow!("--expires {expires:?}: expected a duration like 30d")
                        })?;
                    now + d
                }
            };
            let uki = std::fs::read(a.out.join(format!("{}.efi", m.name)))?;
            let text = cairn::publish::publish(&cairn::publish::Publish {
                name: &m.name,
                version: u.version,
                trusted: &u.keys,
                uki: &uki,
                key: &key,
                repo: &repo,
                expires,
            })?;
            print!("{text}");
            Ok(())
        })(),
        Cmd::Keys(KeysCmd::Generate {
            dir, common_name, ..
        }) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            cairn::keys::generate(&dir, &common_name, now)
                .map(|set| print!("{set}"))
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}
