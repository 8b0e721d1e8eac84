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
    /// Ask apt for the kernel package's current version even if the cached
    /// answer is less than a day old.
    #[arg(long)]
    refresh: bool,
    /// Also write NAME.spdx.json: every file in the image with its origin
    /// and licence (SPDX 2.3).
    #[arg(long)]
    sbom: bool,
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
    /// Kernels built from source (`[kernel] source`).
    #[command(subcommand)]
    Kernel(KernelCmd),
}

#[derive(Subcommand)]
enum KernelCmd {
    /// Build (or find in the cache) the kernel a manifest's `[kernel]
    /// source` describes; print where it is.
    Build {
        /// The manifest (cairn.toml).
        manifest: PathBuf,
    },
}

fn build_options(a: &BuildArgs) -> BuildOptions {
    let mut o = BuildOptions::new(a.out.clone());
    o.init = a.init.clone();
    o.stub = a.stub.clone();
    o.refresh = a.refresh;
    o.sbom = a.sbom;
    o
}

fn kernel_build(manifest: &std::path::Path) -> anyhow::Result<()> {
    let m = cairn_manifest::Manifest::load(manifest)?;
    let cairn_manifest::KernelSource::Source(src) = &m.kernel.source.value else {
        return Err(m
            .error_at(
                m.kernel.source.span,
                "`cairn kernel build` needs a kernel built from source: set [kernel] source",
            )
            .into());
    };
    let cache = cairn_image::kernel::cache_dir();
    let (k, built) = cairn::kernel_build::build_source_kernel(&m, src, &cache)?;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build(a) => build(&a.manifest, &build_options(&a))
            .map(|r| print!("{r}"))
            .map_err(anyhow::Error::from),
        Cmd::Run {
            build: a,
            uefi,
            accel,
            mem,
            net,
            timeout,
            qemu_args,
        } => (|| {
            let report = build(&a.manifest, &build_options(&a))?;
            eprint!("{report}");
            let m = cairn_manifest::Manifest::load(&a.manifest)?;
            let boot = Boot::in_dir(&a.out, &report.name, &m.kernel.cmdline);
            let opts = RunOptions {
                uefi,
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
        Cmd::Kernel(KernelCmd::Build { manifest }) => kernel_build(&manifest),
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
