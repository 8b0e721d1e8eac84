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
    /// The cairn-init binary to put in the image (default: $CAIRN_INIT or
    /// the one built by `cargo xtask build-init`).
    #[arg(long)]
    init: Option<PathBuf>,
    /// systemd-stub to build the UKI on.
    #[arg(long, default_value = cairn_image::uki::DEFAULT_STUB)]
    stub: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
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
        #[arg(long, value_enum, default_value = "tcg")]
        accel: Accel,
        /// Guest memory, as QEMU takes it (64M, 1G).
        #[arg(long, default_value = "256M")]
        mem: String,
        #[arg(long, value_enum, default_value = "user")]
        net: Net,
        /// Stop QEMU (and fail) after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Extra QEMU arguments, after `--`.
        #[arg(last = true)]
        qemu_args: Vec<String>,
    },
    /// List what is inside a UKI (.efi) or an initramfs.
    Inspect { file: PathBuf },
}

fn build_options(a: &BuildArgs) -> BuildOptions {
    let mut o = BuildOptions::new(a.out.clone());
    o.init = a.init.clone();
    o.stub = a.stub.clone();
    o
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
            accel,
            mem,
            net,
            timeout,
            qemu_args,
        } => (|| {
            let mut bo = build_options(&a);
            bo.keep_disk = disk;
            let report = build(&a.manifest, &bo)?;
            eprint!("{report}");
            let m = cairn_manifest::Manifest::load(&a.manifest)?;
            let mut boot = Boot::in_dir(&a.out, &report.name, &m.kernel.cmdline);
            if disk {
                let Some(d) = &m.disk else {
                    anyhow::bail!("--disk needs a [disk] table in {}", a.manifest.display());
                };
                boot.disk = Some((
                    a.out.join(format!("{}.img", report.name)),
                    d.format == cairn_manifest::ImageFormat::Qcow2,
                ));
            }
            let opts = RunOptions {
                uefi: uefi || disk,
                accel,
                mem,
                net,
                timeout: timeout.map(Duration::from_secs),
                extra: qemu_args,
                ..RunOptions::default()
            };
            cairn::run::run(&boot, &opts)?;
            Ok(())
        })(),
        Cmd::Inspect { file } => cairn::inspect::inspect(&file)
            .map(|t| print!("{t}"))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}
