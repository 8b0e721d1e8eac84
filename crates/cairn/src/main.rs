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
    /// Hash a password for `[shell] password_hash` (argon2id): asks on a
    /// terminal, else reads the first line of standard input.
    HashPassword,
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
        Cmd::HashPassword => cairn::password::hash_from_stdin()
            .map(|h| println!("{h}"))
            .map_err(anyhow::Error::from),
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
