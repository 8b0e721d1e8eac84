//! `cairn build`: manifest -> initramfs, kernel, UKI, written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_image::{compress, cpio, elfdeps, kernel, kmod, output, uki};
use cairn_manifest::{Arch, Diagnostic, KernelSource, Manifest, SYSTEM_CONFIG_PATH};

use crate::progress::Step;
use crate::report::{BuildReport, ReportLine};

/// Where the init binary lives inside the image; the kernel runs `/init`.
pub const INIT_PATH: &str = "/init";
/// `cairnctl` is the init binary under another name.
pub const CAIRNCTL_PATH: &str = "/usr/bin/cairnctl";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Manifest(#[from] Box<Diagnostic>),
    #[error("kernel: {0}")]
    Kernel(#[from] kernel::KernelError),
    #[error("cache: {0}")]
    Cache(kernel::KernelError),
    #[error("kernel modules: {0}")]
    Kmod(#[from] kmod::KmodError),
    #[error("initramfs: {0}")]
    Cpio(#[from] cpio::CpioError),
    #[error("compression: {0}")]
    Compress(#[from] compress::CompressError),
    #[error("UKI: {0}")]
    Uki(#[from] uki::UkiError),
    #[error("output: {0}")]
    Output(#[from] output::OutputError),
    #[error("signing: {0}")]
    Sign(#[from] crate::sign::SignError),
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    #[error("cannot make a scratch directory in {path}: {source}")]
    Scratch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cairn-init binary not found (looked in: {looked}); build it with `cargo xtask build-init` \
         (arm64: `cargo xtask build-init --arch arm64`) or pass --init PATH / set CAIRN_INIT \
         (arm64: CAIRN_INIT_ARM64)"
    )]
    InitNotFound { looked: String },
    #[error("{path} is not a statically linked executable; cairn-init must be built with `cargo xtask build-init`")]
    InitNotStatic { path: PathBuf },
}

impl From<Diagnostic> for BuildError {
    fn from(d: Diagnostic) -> Self {
        BuildError::Manifest(Box::new(d))
    }
}

/// Inputs of a build besides the manifest.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    /// The cairn-init binary; `None` = search the usual places.
    pub init: Option<PathBuf>,
    /// systemd-stub to build the UKI on.
    pub stub: PathBuf,
    /// Kernel/package cache.
    pub cache_dir: PathBuf,
    /// Host root for `[[binary]]` resolution.
    pub host_root: PathBuf,
    /// mtime of every initramfs entry (SOURCE_DATE_EPOCH or 0).
    pub mtime: u32,
    /// Ask apt again even when the cached kernel resolution is recent.
    pub refresh: bool,
    /// Also write `NAME.spdx.json`.
    pub sbom: bool,
    /// How hard to compress the initramfs (`--fast`: quickly, for
    /// development builds).
    pub compression_effort: compress::Effort,
    /// Sign the UKI with this key (overrides the manifest's `[sign]`).
    pub sign: Option<crate::sign::SignKey>,
    /// Keep the state on an existing `NAME.img` (`cairn run --disk`): only
    /// its ESP is rewritten with the new UKI, in place.
    pub keep_disk: bool,
}

impl BuildOptions {
    pub fn new(out_dir: PathBuf) -> Self {
        BuildOptions {
            out_dir,
            init: None,
            stub: PathBuf::from(uki::DEFAULT_STUB),
            cache_dir: kernel::cache_dir(),
            host_root: PathBuf::from("/"),
            mtime: source_date_epoch(),
            refresh: false,
            sbom: false,
            compression_effort: compress::Effort::Release,
            sign: None,
            keep_disk: false,
        }
    }
}

/// SOURCE_DATE_EPOCH if set and valid, else 0.
pub fn source_date_epoch() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

/// Locate the cairn-init binary for `arch`: explicit path, else
/// `CAIRN_INIT` (x86_64) or `CAIRN_INIT_ARM64` (arm64), else the static
/// build in the cargo target tree beside this executable.
pub fn find_init(explicit: Option<&Path>, arch: Arch) -> Result<PathBuf, BuildError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let (var, triples): (&str, &[&str]) = match arch {
        // `cargo xtask build-init` makes the musl one; glibc is its fallback.
        Arch::X86_64 => (
            "CAIRN_INIT",
            &["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"],
        ),
        // `cargo xtask build-init --arch arm64` (static glibc).
        Arch::Arm64 => ("CAIRN_INIT_ARM64", &["aarch64-unknown-linux-gnu"]),
    };
    if let Some(p) = std::env::var_os(var) {
        return Ok(PathBuf::from(p));
    }
    let mut looked = vec![format!("${var}")];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            // target/{debug,release}/cairn -> target/TRIPLE/release/cairn-init
            // Prefer the static build in the cargo target tree over a host
            // build that may sit beside us in target/debug.
            let mut candidates = Vec::new();
            for triple in triples {
                candidates.push(dir.join("..").join(triple).join("release/cairn-init"));
                candidates.push(dir.join("../..").join(triple).join("release/cairn-init"));
            }
            if arch == Arch::X86_64 {
                candidates.push(dir.join("cairn-init"));
            }
            for c in candidates {
                if c.is_file() {
                    return Ok(c);
                }
                looked.push(c.display().to_string());
            }
        }
    }
    Err(BuildError::InitNotFound {
        looked: looked.join(", "),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A static ELF executable has no PT_INTERP.
fn check_static(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    match goblin::elf::Elf::parse(bytes) {
        Ok(elf) if elf.interpreter.is_none() => Ok(()),
        _ => Err(BuildError::InitNotStatic {
            path: path.to_path_buf(),
        }),
    }
}

/// Adds a program's closure (from [`elfdeps::closure`]) to the archive,
/// each file once; `origin` says where a file came from in the build table.
fn add_closure(
    files: Vec<elfdeps::HostFile>,
    seen: &mut BTreeMap<String, ()>,
    inputs: &mut Vec<ReportLine>,
    archive: &mut cpio::Archive,
    origin: &dyn Fn(&Path) -> String,
) -> Result<(), BuildError> {
    for f in files {
        if seen.insert(f.image_path.clone(), ()).is_some() {
            continue;
        }
        match f.kind {
            elfdeps::HostFileKind::File { host_path, mode } => {
                let bytes = read(&host_path)?;
                inputs.push(ReportLine {
                    what: f.image_path.clone(),
                    origin: origin(&host_path),
                    bytes: bytes.len() as u64,
                });
                archive.add_file(&f.image_path, mode & 0o7777, bytes)?;
            }
            elfdeps::HostFileKind::Symlink { target } => {
                archive.add_symlink(&f.image_path, &target)?;
            }
        }
    }
    Ok(())
}

/// The ELF machine number of an image architecture's programs.
fn elf_machine(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => goblin::elf::header::EM_X86_64,
        Arch::Arm64 => goblin::elf::header::EM_AARCH64,
    }
}

/// A program for another architecture than the image's is refused.
fn check_arch(path: &Path, arch: Arch) -> Result<(), String> {
    let mut head = [0u8; 20];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    if n < 20 || &head[..4] != b"\x7fELF" {
        return Ok(()); // not ELF: elfdeps says what it is
    }
    let machine = if head[5] == 2 {
        u16::from_be_bytes([head[18], head[19]])
    } else {
        u16::from_le_bytes([head[18], head[19]])
    };
    if machine == elf_machine(arch) {
        return Ok(());
    }
    Err(format!(
        "{} is a program for {} (ELF machine {machine}), but this image is {}",
        path.display(),
        goblin::elf::header::machine_to_str(machine),
        arch.as_str()
    ))
}

/// systemd-stub for arm64 (`linuxaa64.efi.stub`), from Debian's
/// `systemd-boot-efi` package for arm64, fetched and cached like a
/// `[[package]]` (the host's own systemd-boot-efi is for the host).
fn arm64_stub(
    m: &Manifest,
    opts: &BuildOptions,
    inputs: &mut Vec<ReportLine>,
) -> Result<Vec<u8>, BuildError> {
    const PACKAGE: &str = "systemd-boot-efi";
    const STUB: &str = "usr/lib/systemd/boot/efi/linuxaa64.efi.stub";
    let fetched = cairn_image::packages::resolve(&[PACKAGE], "arm64", &opts.cache_dir, &mut |l| {
        eprintln!("cairn: {l}")
    })
    .map_err(|e| BuildError::from(m.error_at(m.arch.span, format!("the arm64 UEFI stub: {e}"))))?;
    let stub = read(&fetched.root().join(STUB))?;
    let version = fetched
        .packages
        .iter()
        .find(|p| p.name == PACKAGE)
        .map(|p| p.version.clone())
        .unwrap_or_default();
    inputs.push(ReportLine {
        what: "UEFI stub".into(),
        origin: format!("package {PACKAGE} {version} (arm64)"),
        bytes: stub.len() as u64,
    });
    Ok(stub)
}

/// `[[package]]`: fetches the packages with their dependencies and adds
/// each listed file, with the libraries it needs found among the
/// packages' files. Returns each fetched package's name and extracted
/// tree (for the SBOM's licences).
fn add_packages(
    m: &Manifest,
    opts: &BuildOptions,
    seen: &mut BTreeMap<String, ()>,
    inputs: &mut Vec<ReportLine>,
    archive: &mut cpio::Archive,
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    use cairn_image::packages;
    let names: Vec<&str> = m.packages.iter().map(|p| p.name.value.as_str()).collect();
    let step = Step::start(format!("Debian packages {}", names.join(" ")));
    let root = packages::resolve(
        &names,
        m.arch.value.as_str(),
        &opts.cache_dir,
        &mut |line| eprintln!("cairn: {line}"),
    );
    step.done();
    let root = root.map_err(|e| {
        // Point at the entry the error is about, else the first one.
        let text = e.to_string();
        let at = m
            .packages
            .iter()
            .find(|p| text.contains(&format!("package {} ", p.name.value)))
            .unwrap_or(&m.packages[0]);
        BuildError::from(m.error_at(at.name.span, text))
    })?;
    for p in &m.packages {
        let v = root
            .packages
            .iter()
            .find(|r| r.name == p.name.value)
            .map(|r| r.version.clone())
            .unwrap_or_default();
        for f in &p.files {
            let host = root.root().join(f.value.trim_start_matches('/'));
            let err = |msg: String| BuildError::from(m.error_at(f.span, msg));
            let meta = std::fs::symlink_metadata(&host).map_err(|_| {
                err(format!(
                    "`{}` is not in package {} {v}; `dpkg-deb -c` on its .deb lists what it has",
                    f.value, p.name.value
                ))
            })?;
            match root.owner(&f.value) {
                Some(o) if o.name == p.name.value => {}
                Some(o) => {
                    return Err(err(format!(
                        "`{}` comes from package {} {}, not from {}; name that package",
                        f.value, o.name, o.version, p.name.value
                    )))
                }
                None => {
                    return Err(err(format!(
                        "`{}` is a directory; list the files to take from it",
                        f.value
                    )))
                }
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host).unwrap_or_default();
                return Err(err(format!(
                    "`{}` is a symbolic link to `{}` in package {}; list the file it points to",
                    f.value,
                    target.display(),
                    p.name.value
                )));
            }
            let files = match elfdeps::closure(&host, &f.value, root.root()) {
                Ok(files) => files,
                // Data files and scripts are copied as they are.
                Err(
                    elfdeps::ElfDepsError::NotElf { .. } | elfdeps::ElfDepsError::Script { .. },
                ) => {
                    use std::os::unix::fs::PermissionsExt;
                    vec![elfdeps::HostFile {
                        image_path: f.value.clone(),
                        kind: elfdeps::HostFileKind::File {
                            host_path: host.clone(),
                            mode: meta.permissions().mode() & 0o7777,
                        },
                    }]
                }
                Err(e) => {
                    return Err(err(e
                        .to_string()
                        .replace(&root.root().display().to_string(), "the packages")))
                }
            };
            add_closure(files, seen, inputs, archive, &|host| {
                root.owner_of_host_path(host)
                    .map(|o| format!("package {} {}", o.name, o.version))
                    .unwrap_or_else(|| format!("package {}", p.name.value))
            })?;
        }
    }
    Ok(root
        .packages
        .iter()
        .map(|r| (r.name.clone(), r.tree(&opts.cache_dir)))
        .collect())
}

fn os_release(m: &Manifest) -> String {
    format!(
        "NAME=cairn\nID=cairn\nPRETTY_NAME=\"cairn appliance {name}\"\nIMAGE_ID={name}\nVERSION_ID={ver}\n",
        name = m.name,
        ver = env!("CARGO_PKG_VERSION")
    )
}

/// Build everything the manifest describes into `opts.out_dir`.
/// Nothing in `out_dir` changes unless the whole build succeeds.
pub fn build(manifest_path: &Path, opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let m = Manifest::load(manifest_path)?;
    kernel::prepare_cache_dir(&opts.cache_dir).map_err(BuildError::Cache)?;
    // Taken first: a second build into the same directory waits here, and
    // the leftovers of an interrupted one are removed.
    let mut out = output::OutputSet::new(&opts.out_dir)?;
    let mut inputs = Vec::new();
    let mut archive = cpio::Archive::default();

    // Kernel.
    let kern = match &m.kernel.source.value {
        KernelSource::Package(pkg) => {
            // A download (first use, or a new version) takes a while.
            let step = Step::start(format!("kernel package {pkg}"));
            let k = kernel::resolve_package_recent(
                pkg,
                m.arch.value.debian(),
                &opts.cache_dir,
                opts.refresh,
            );
            step.done();
            k
        }
        KernelSource::Path { image, modules_dir } => {
            kernel::resolve_path(image, modules_dir.as_deref())
        }
        KernelSource::Source(src) => {
            Ok(crate::kernel_build::build_source_kernel(&m, src, &opts.cache_dir)?.0)
        }
    }
    .map_err(|e| BuildError::from(m.error_at(m.kernel.source.span, e.to_string())))?;
    let vmlinuz = read(&kern.image)?;
    inputs.push(ReportLine {
        what: "kernel".into(),
        origin: kern.origin.clone(),
        bytes: vmlinuz.len() as u64,
    });

    // Base layout.
    for d in [
        "/dev", "/proc", "/sys", "/run", "/tmp", "/etc", "/root", "/usr/bin", "/bin", "/sbin",
        "/var",
    ] {
        archive.add_dir(d, 0o755)?;
    }
    archive.add_dir("/tmp", 0o1777)?;
    archive.add_dir("/root", 0o700)?;
    archive.add_char_dev("/dev/console", 0o600, 5, 1)?;
    archive.add_char_dev("/dev/null", 0o666, 1, 3)?;
    // Before devtmpfs is mounted, so the init can set its log clock to the
    // kernel's from its first line on.
    archive.add_char_dev("/dev/kmsg", 0o644, 1, 11)?;

    // Init.
    let init_path = find_init(opts.init.as_deref(), m.arch.value)?;
    let init = read(&init_path)?;
    check_static(&init_path, &init)?;
    check_arch(&init_path, m.arch.value)
        .map_err(|e| BuildError::from(m.error_at(m.arch.span, format!("the init: {e}"))))?;
    inputs.push(ReportLine {
        what: INIT_PATH.into(),
        origin: format!("cairn-init {}", init_path.display()),
        bytes: init.len() as u64,
    });
    archive.add_file(INIT_PATH, 0o755, init)?;
    archive.add_symlink(CAIRNCTL_PATH, INIT_PATH)?;

    // Kernel modules: those listed, then those the manifest implies that
    // the kernel has as loadable modules.
    let mut module_paths = Vec::new();
    let index = match (&kern.modules_dir, m.kernel.modules.first()) {
        (Some(dir), Some(_)) => Some(kmod::ModuleIndex::load(dir)?),
        // Only implied ones: a modules directory cairn cannot read just
        // means there are none to add.
        (Some(dir), None) if m.kernel.implied_modules => kmod::ModuleIndex::load(dir).ok(),
        (Some(_), None) => None,
        (None, Some(first)) => {
            return Err(m
                .error_at(
                    first.span,
                    "modules are listed but the kernel has no modules directory; set kernel.modules_dir",
                )
                .into())
        }
        (None, None) => None,
    };
    if let Some(index) = index {
        let mut names: Vec<&str> = m.kernel.modules.iter().map(|l| l.value.as_str()).collect();
        let implied = implied_modules(&m, &kern, &index);
        names.extend(implied.iter().map(|i| i.name.as_str()));
        let mods = index.closure(&names).map_err(|e| match &e {
            kmod::KmodError::Unknown { name, .. } => {
                let span = m
                    .kernel
                    .modules
                    .iter()
                    .find(|l| &l.value == name)
                    .or(m.kernel.modules.first())
                    .map(|l| l.span)
                    .unwrap_or(m.kernel.source.span);
                BuildError::from(m.error_at(span, e.to_string()))
            }
            _ => BuildError::from(e),
        })?;
        if !mods.is_empty() {
            let base = format!("/lib/modules/{}", index.version());
            for module in &mods {
                let bytes = kmod::load_bytes(module)?;
                let path = format!("{base}/{}", module.rel_path);
                let why = implied
                    .iter()
                    .find(|i| kmod::normalize_name(&i.name) == kmod::normalize_name(&module.name))
                    .map(|i| format!(" (implied by {})", i.reason))
                    .unwrap_or_default();
                inputs.push(ReportLine {
                    what: path.clone(),
                    origin: format!("module {}{why}", module.name),
                    bytes: bytes.len() as u64,
                });
                archive.add_file(&path, 0o644, bytes)?;
                module_paths.push(path);
            }
            archive.add_file(
                &format!("{base}/modules.dep"),
                0o644,
                kmod::modules_dep(&mods).into_bytes(),
            )?;
        }
    }

    // Host binaries with their libraries.
    let mut seen = BTreeMap::new();
    let mut bins: Vec<(PathBuf, String, cairn_manifest::Span)> = m
        .binaries
        .iter()
        .map(|b| (b.path.value.clone(), b.dst.clone(), b.path.span))
        .collect();
    bins.extend(crate::disk::auto_binaries(&m));
    for (path, dst, span) in &bins {
        check_arch(path, m.arch.value).map_err(|e| BuildError::from(m.error_at(*span, e)))?;
        let files = elfdeps::closure(path, dst, &opts.host_root)
            .map_err(|e| BuildError::from(m.error_at(*span, e.to_string())))?;
        add_closure(files, &mut seen, &mut inputs, &mut archive, &|host| {
            format!("host {}", host.display())
        })?;
    }

    // Files from Debian packages, with their libraries from the packages'
    // dependencies (never from the host).
    let fetched = if m.packages.is_empty() {
        Vec::new()
    } else {
        add_packages(&m, opts, &mut seen, &mut inputs, &mut archive)?
    };

    // Plain files. The manifest already refused collisions between entries
    // and with the paths the builder generates; what is left are the
    // libraries of [[binary]] entries and the kernel modules, known only now.
    for f in &m.files {
        if let Some(owner) = taken_by(&archive, &inputs, &f.dst.value) {
            return Err(m
                .error_at(
                    f.dst.span,
                    format!(
                        "`{}` collides with {owner}, which the builder puts there; \
                         choose another destination",
                        f.dst.value
                    ),
                )
                .into());
        }
        let bytes = std::fs::read(&f.src.value).map_err(|e| {
            BuildError::from(m.error_at(
                f.src.span,
                format!("cannot read {}: {e}", f.src.value.display()),
            ))
        })?;
        inputs.push(ReportLine {
            what: f.dst.value.clone(),
            origin: format!("file {}", f.src.value.display()),
            bytes: bytes.len() as u64,
        });
        archive.add_file(&f.dst.value, f.mode, bytes)?;
    }

    // OCI images of container services; those with storage = "erofs"
    // are packed in a scratch directory beside the outputs, for the disk.
    let scratch = match has_erofs(&m) {
        true => Some(
            tempfile::Builder::new()
                .prefix(".cairn-erofs-")
                .tempdir_in(&opts.out_dir)
                .map_err(|source| BuildError::Scratch {
                    path: opts.out_dir.clone(),
                    source,
                })?,
        ),
        false => None,
    };
    let containers = add_containers(
        &m,
        &mut archive,
        &mut inputs,
        scratch.as_ref().map(|d| d.path()),
        opts.mtime,
    )?;
    let disk_spec = disk_with_images(&m, &containers)?;

    // Every service's program must be in the image.
    for s in m.services.iter().filter(|s| s.container.is_none()) {
        let prog = &s.exec.value[0];
        if !is_executable_in(&archive, prog) {
            return Err(m
                .error_at(
                    s.exec.span,
                    format!(
                        "service `{}` runs {prog}, which is not in the image; add it with \
                         [[binary]] path = \"{prog}\" or a [[file]] with mode \"0755\"",
                        s.name.value
                    ),
                )
                .into());
        }
    }

    // So must the break-glass shell.
    if let Some(sh) = &m.shell {
        let prog = &sh.exec.value[0];
        if !is_executable_in(&archive, prog) {
            return Err(m
                .error_at(
                    sh.exec.span,
                    format!(
                        "[shell] runs {prog}, which is not in the image; add it with \
                         [[binary]] path = \"{prog}\" or a [[file]] with mode \"0755\""
                    ),
                )
                .into());
        }
    }

    // Runtime config.
    let mut system = m.system_config(module_paths);
    for (svc, c) in system.services.iter_mut().zip(&containers) {
        if let Some(c) = c {
            svc.exec = c.exec.clone();
            svc.env = c.env.clone();
            svc.run.workdir = c.workdir.clone();
            svc.container = Some(c.config.clone());
        }
    }
    // Each erofs image is mounted read-only where its tree would be, by
    // its partition's GPT name, before any service starts.
    for c in containers.iter().flatten() {
        if let Some(e) = &c.erofs {
            system.mounts.push(cairn_manifest::MountConfig {
                source: cairn_manifest::MountSource::Partlabel(e.label.clone()),
                path: c.config.root.clone(),
                fs: cairn_manifest::FsType::Erofs,
                options: "ro".into(),
                format: cairn_manifest::FormatPolicy::Never,
                required: true,
                wait: cairn_manifest::DEFAULT_MOUNT_WAIT_SECS,
            });
        }
    }
    if let (Some(u), Some(d)) = (system.update.as_mut(), &disk_spec) {
        // The slots' Boot#### entries name the ESP by its GPT entry.
        let esp = &cairn_image::disk::layout(d)[0];
        let guid = cairn_image::disk::derive_id(&[&m.name, &esp.label, "partition"]);
        u.esp = Some(cairn_manifest::runtime::EspLocation {
            partition: 1,
            start_lba: esp.offset / 512,
            sectors: esp.len / 512,
            guid: guid.iter().map(|b| format!("{b:02x}")).collect(),
        });
        archive.add_symlink(cairn_manifest::runtime::UPDATE_AGENT_PATH, INIT_PATH)?;
    }
    if system.netboot.is_some() {
        archive.add_symlink(cairn_manifest::runtime::NODE_AGENT_PATH, INIT_PATH)?;
    }
    // 0600: it holds the shell's password hash and every service's env.
    archive.add_file(SYSTEM_CONFIG_PATH, 0o600, system.to_json().into_bytes())?;
    archive.add_file("/etc/os-release", 0o644, os_release(&m).into_bytes())?;
    // Users and groups for services' `user`/`group` (parsed by cairn-init, never NSS).
    archive.add_file("/etc/passwd", 0o644, m.accounts.passwd().into_bytes())?;
    archive.add_file("/etc/group", 0o644, m.accounts.group().into_bytes())?;
    if let Some(h) = &m.hostname {
        archive.add_file("/etc/hostname", 0o644, format!("{h}\n").into_bytes())?;
    }

    let cpio_bytes = archive.to_bytes(opts.mtime);
    let step = Step::start(format!(
        "compressing the initramfs ({}, {})",
        crate::report::human(cpio_bytes.len() as u64),
        format!("{:?}", m.compression).to_lowercase()
    ));
    let initrd = compress::compress_cached_with(
        &cpio_bytes,
        m.compression,
        opts.compression_effort,
        &opts.cache_dir,
    )?;
    step.done();
    if let Some(w) = ram_warning(m.memory, cpio_bytes.len() as u64, initrd.len() as u64) {
        eprintln!("cairn: warning: {w}");
    }

    let stub = match m.arch.value {
        Arch::X86_64 => read(&opts.stub)?,
        Arch::Arm64 if opts.stub != Path::new(uki::DEFAULT_STUB) => read(&opts.stub)?,
        Arch::Arm64 => arm64_stub(&m, opts, &mut inputs)?,
    };
    let efi = uki::build(
        &stub,
        &uki::UkiParts {
            osrel: os_release(&m).as_bytes(),
            cmdline: m.kernel.cmdline.as_bytes(),
            linux: &vmlinuz,
            initrd: &initrd,
        },
    )?;
    let efi = sign_uki(&m, opts, efi)?;

    let mut outputs = Vec::new();
    for (suffix, bytes) in [
        ("vmlinuz", &vmlinuz[..]),
        ("initrd", &initrd[..]),
        ("efi", &efi[..]),
    ] {
        let p = out.add(&format!("{}.{suffix}", m.name), bytes)?;
        outputs.push((p, bytes.len() as u64));
    }
    if let Some(spec) = &disk_spec {
        let step = Step::start(format!("disk image {}.img", m.name));
        if let Some(img) = crate::disk::write(&m, spec, &efi, opts.mtime, opts.keep_disk, &mut out)?
        {
            outputs.push(img);
        }
        step.done();
    }
    if let Some(iso) = crate::disk::write_iso(&m, &efi, &vmlinuz, &initrd, opts.mtime, &mut out)? {
        outputs.push(iso);
    }
    if opts.sbom {
        let dpkg = crate::sbom::Dpkg::load(&opts.host_root).with_fetched(fetched);
        let (origins, kernel_origin) = crate::sbom::origins(&inputs, &kern, &dpkg);
        let doc = crate::sbom::document(
            &m.name,
            &archive,
            &vmlinuz,
            &origins,
            &kernel_origin,
            &dpkg,
            &containers
                .iter()
                .flatten()
                .map(|c| c.sbom.clone())
                .collect::<Vec<_>>(),
            opts.mtime,
        );
        let p = out.add(&format!("{}.spdx.json", m.name), doc.as_bytes())?;
        outputs.push((p, doc.len() as u64));
    }
    out.commit()?;
    drop(scratch);

    Ok(BuildReport {
        arch: m.arch.value,
        name: m.name.clone(),
        kernel_version: kern.version,
        inputs,
        outputs,
        initrd_uncompressed: cpio_bytes.len() as u64,
        cmdline: m.kernel.cmdline.clone(),
        memory: m.memory,
        disk: m.disk.as_ref().map(|d| {
            (
                opts.out_dir
                    .join(crate::disk::image_name(&m).unwrap_or_default()),
                d.format,
            )
        }),
        iso: m
            .iso
            .as_ref()
            .map(|_| opts.out_dir.join(format!("{}.iso", m.name))),
    })
}

/// The modules `m` implies (see [`cairn_manifest::implied`]) that this
/// kernel has as loadable modules and the manifest does not list: built-in
/// and missing ones are left out. vfat's character sets follow the
/// kernel's `config-VERSION` beside its image, when there is one.
fn implied_modules(
    m: &Manifest,
    kern: &kernel::Kernel,
    index: &kmod::ModuleIndex,
) -> Vec<cairn_manifest::implied::ImpliedModule> {
    use cairn_manifest::implied::FatDefaults;
    let fat = kern
        .image
        .parent()
        .map(|d| d.join(format!("config-{}", kern.version)))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|c| FatDefaults::from_kernel_config(&c))
        .unwrap_or_default();
    let listed: Vec<String> = m
        .kernel
        .modules
        .iter()
        .map(|l| kmod::normalize_name(&l.value))
        .collect();
    m.implied_modules(&fat)
        .into_iter()
        .filter(|i| {
            let n = kmod::normalize_name(&i.name);
            index.contains(&n) && !index.is_builtin(&n) && !listed.contains(&n)
        })
        .collect()
}

/// Sign the assembled UKI (before anything is written) with the key given on
/// the command line, else the manifest's `[sign]`, else leave it unsigned.
fn sign_uki(m: &Manifest, opts: &BuildOptions, efi: Vec<u8>) -> Result<Vec<u8>, BuildError> {
    use crate::sign::{sign, SignError, SignKey};
    if let Some(k) = &opts.sign {
        return Ok(sign(&efi, k)?);
    }
    let Some(s) = &m.sign else {
        return Ok(efi);
    };
    let k = SignKey {
        key: s.key.value.clone(),
        cert: s.cert.value.clone(),
    };
    sign(&efi, &k).map_err(|e| match &e {
        SignError::Input { path, .. } if *path == k.cert => {
            m.error_at(s.cert.span, e.to_string()).into()
        }
        SignError::Input { .. } | SignError::Sbsign { .. } => {
            m.error_at(s.key.span, e.to_string()).into()
        }
        _ => BuildError::from(e),
    })
}

/// What already occupies `path` in the archive (anything but a directory),
/// described by where it came from.
fn taken_by(archive: &cpio::Archive, inputs: &[ReportLine], path: &str) -> Option<String> {
    let key = cpio::normalize_path(path).ok()?;
    let entry = archive.entries().find(|e| e.path == key)?;
    if entry.mode & 0o170000 == 0o040000 {
        return None;
    }
    let origin = inputs
        .iter()
        .find(|l| l.what.trim_start_matches('/') == key)
        .map(|l| l.origin.clone())
        .unwrap_or_else(|| "a library link of a [[binary]]".to_string());
    Some(format!("`/{key}` ({origin})"))
}

/// Is `path` a regular executable file in the archive, following symlinks?
fn is_executable_in(archive: &cpio::Archive, path: &str) -> bool {
    let mut cur = path.trim_start_matches('/').to_string();
    for _ in 0..16 {
        let Some(e) = archive
            .entries()
            .find(|e| e.path.trim_start_matches('/') == cur)
        else {
            return false;
        };
        match e.mode & 0o170000 {
            0o100000 => return e.mode & 0o111 != 0,
            0o120000 => {
                let target = String::from_utf8_lossy(&e.data).to_string();
                cur = if target.starts_with('/') {
                    target.trim_start_matches('/').to_string()
                } else {
                    let parent = Path::new(&cur).parent().unwrap_or(Path::new(""));
                    normalize(&parent.join(target))
                };
            }
            _ => return false,
        }
    }
    false
}

fn normalize(p: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.to_str().unwrap_or("").split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// What the builder makes of a container service.
struct BuiltContainer {
    exec: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    config: cairn_manifest::ContainerConfig,
    sbom: crate::sbom::ContainerImage,
    /// With `storage = "erofs"`: its partition.
    erofs: Option<ErofsImage>,
}

/// A container image packed as erofs for its partition.
struct ErofsImage {
    /// The partition's GPT name (`img-NAME`).
    label: String,
    /// The erofs file in the scratch directory.
    file: PathBuf,
    bytes: u64,
    /// `storage` in the manifest.
    span: cairn_manifest::Span,
}

fn has_erofs(m: &Manifest) -> bool {
    use cairn_manifest::container::ImageStorage;
    m.services.iter().any(|s| {
        s.container
            .as_ref()
            .is_some_and(|c| c.storage.value == ImageStorage::Erofs)
    })
}

/// The manifest's `[disk]` with a partition for each erofs image after
/// its own, each a whole number of MiB. A disk without `size` grows by
/// them; one whose `size` leaves too little room is an error at the
/// first such image's `storage`.
fn disk_with_images(
    m: &Manifest,
    containers: &[Option<BuiltContainer>],
) -> Result<Option<cairn_manifest::DiskSpec>, BuildError> {
    use cairn_manifest::disk::MIB;
    let Some(d) = &m.disk else { return Ok(None) };
    let mut d = d.clone();
    let own = 2 * MIB + d.esp_size + d.partitions.iter().map(|p| p.size).sum::<u64>();
    let images: Vec<&ErofsImage> = containers
        .iter()
        .flatten()
        .filter_map(|c| c.erofs.as_ref())
        .collect();
    let Some(first) = images.first() else {
        return Ok(Some(d));
    };
    for e in &images {
        d.partitions.push(cairn_manifest::PartitionSpec {
            label: cairn_manifest::Located::new(e.label.clone(), e.span),
            size: e.bytes.div_ceil(MIB).max(1) * MIB,
            fs: cairn_manifest::PartitionFs::Erofs,
            content: Some(cairn_manifest::Located::new(e.file.clone(), e.span)),
        });
    }
    let needed = 2 * MIB + d.esp_size + d.partitions.iter().map(|p| p.size).sum::<u64>();
    if d.size == own {
        d.size = needed;
    } else if d.size < needed {
        return Err(m
            .error_at(
                first.span,
                format!(
                    "[disk] size is {} bytes, but its partitions and the container images' \
                     erofs partitions need {needed} bytes; raise [disk] size or leave it out \
                     (the disk then grows by the images)",
                    d.size
                ),
            )
            .into());
    }
    Ok(Some(d))
}

/// Whether the initramfs is too large for `memory` (the manifest's, else
/// `cairn run`'s default 256 MiB), as a warning to print. The kernel
/// unpacks the initramfs into its root filesystem, a tmpfs capped at half
/// of the RAM (Debian's kernels; without tmpfs, ramfs, with no cap), while
/// the compressed copy is still in memory; only then does it free that
/// copy. So the files must fit in half the RAM, and the two together
/// should leave the other half to the kernel and the services.
pub fn ram_warning(memory: Option<u64>, unpacked: u64, compressed: u64) -> Option<String> {
    use crate::report::human;
    let (mem, whose) = match memory {
        Some(n) => (n, "`memory`".to_string()),
        None => (
            DEFAULT_MEMORY,
            "`cairn run`'s default (set `memory`)".to_string(),
        ),
    };
    let hint = "move large container images to a partition (storage = \"erofs\") or raise `memory`";
    if unpacked > mem / 2 {
        Some(format!(
            "the initramfs unpacks to {}, more than half of the appliance's {} of RAM \
             ({whose}): the kernel unpacks it into a tmpfs capped at half the RAM, so the \
             boot fails; {hint}",
            human(unpacked),
            human(mem)
        ))
    } else if unpacked + compressed > mem / 2 {
        Some(format!(
            "while it boots, the initramfs takes {} unpacked plus {} compressed, more than \
             half of the appliance's {} of RAM ({whose}), leaving {} to the kernel and the \
             services; {hint}",
            human(unpacked),
            human(compressed),
            human(mem),
            human(mem - unpacked - compressed.min(mem - unpacked))
        ))
    } else {
        None
    }
}

/// The guest memory `cairn run` gives a manifest without `memory`.
pub const DEFAULT_MEMORY: u64 = 256 << 20;

/// Reads each container service's image, puts its root filesystem under
/// `/containers/NAME` and works out what the container runs: the
/// manifest's `exec`, `env`, `user`, `workdir` over the image config's.
/// One entry per service (`None` for plain ones).
fn add_containers(
    m: &Manifest,
    archive: &mut cpio::Archive,
    inputs: &mut Vec<ReportLine>,
    scratch: Option<&Path>,
    mtime: u32,
) -> Result<Vec<Option<BuiltContainer>>, BuildError> {
    use cairn_image::oci;
    use cairn_manifest::container::{erofs_partition_label, ImageStorage};
    let mut out = Vec::new();
    for s in &m.services {
        let Some(c) = &s.container else {
            out.push(None);
            continue;
        };
        let img = oci::read(&c.image.value)
            .map_err(|e| BuildError::from(m.error_at(c.image.span, e.to_string())))?;
        let root = format!("{}/{}", cairn_manifest::CONTAINER_ROOT_DIR, s.name.value);
        let image_err = |e: &dyn std::fmt::Display| {
            m.error_at(c.image.span, format!("image {}: {e}", c.image.value))
        };
        let erofs = match (c.storage.value, scratch) {
            (ImageStorage::Erofs, Some(dir)) => {
                // Only the mount point is in the initramfs.
                archive
                    .add_dir(&root, 0o755)
                    .map_err(|e| BuildError::from(image_err(&e)))?;
                let label = erofs_partition_label(&s.name.value);
                let tree_dir = dir.join(format!("{}.tree", s.name.value));
                let file = dir.join(format!("{}.erofs", s.name.value));
                std::fs::create_dir(&tree_dir).map_err(|e| BuildError::from(image_err(&e)))?;
                let uuid = cairn_image::disk::uuid_string(&cairn_image::disk::derive_id(&[
                    &m.name, &label, "erofs",
                ]));
                let bytes = cairn_image::erofs::build(&img.tree, &file, &tree_dir, &uuid, mtime)
                    .map_err(|e| BuildError::from(image_err(&e)))?;
                // The unpacked copy is not needed any more.
                let _ = std::fs::remove_dir_all(&tree_dir);
                inputs.push(ReportLine {
                    what: format!("{root} (partition {label})"),
                    origin: format!(
                        "image {} ({}), erofs of {} of files",
                        c.image.value,
                        img.config_digest,
                        crate::report::human(img.tree.data_size())
                    ),
                    bytes,
                });
                Some(ErofsImage {
                    label,
                    file,
                    bytes,
                    span: c.storage.span,
                })
            }
            _ => {
                img.tree
                    .add_to_archive(archive, &root)
                    .map_err(|e| BuildError::from(image_err(&e)))?;
                inputs.push(ReportLine {
                    what: root.clone(),
                    origin: format!("image {} ({})", c.image.value, img.config_digest),
                    bytes: img.tree.data_size(),
                });
                None
            }
        };
        let exec = if s.exec.value.is_empty() {
            let mut v = img.config.entrypoint.clone();
            v.extend(img.config.cmd.iter().cloned());
            v
        } else {
            s.exec.value.clone()
        };
        if exec.is_empty() {
            return Err(m
                .error_at(
                    c.image.span,
                    format!(
                        "image {}: no Entrypoint or Cmd in its config; set `exec` for service `{}`",
                        c.image.value, s.name.value
                    ),
                )
                .into());
        }
        // The image's Env, then the manifest's over it.
        let mut env: BTreeMap<String, String> = img
            .config
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (user_text, user_span) = match &c.user {
            Some(u) => (Some(u.value.clone()), u.span),
            None => (img.config.user.clone(), c.image.span),
        };
        let (uid, gid) = match &user_text {
            Some(u) => img.tree.resolve_user(u).map_err(|e| {
                BuildError::from(m.error_at(user_span, format!("image {}: {e}", c.image.value)))
            })?,
            None => (0, 0),
        };
        let workdir = s.run.workdir.clone().or_else(|| img.config.workdir.clone());
        let config = cairn_manifest::ContainerConfig {
            root: root.clone(),
            hostname: c.hostname.clone().or_else(|| m.hostname.clone()),
            volumes: c.volumes.iter().map(|v| v.value.clone()).collect(),
            network: c.network,
            uid,
            gid,
            groups: Vec::new(),
            init: c.init,
        };
        let sbom = crate::sbom::ContainerImage {
            service: s.name.value.clone(),
            reference: c.image.value.to_string(),
            root: root.trim_start_matches('/').to_string(),
            manifest_digest: img.manifest_digest.clone(),
            config_digest: img.config_digest.clone(),
            config: format!(
                "Entrypoint {:?} Cmd {:?} Env {:?} User {:?} WorkingDir {:?}",
                img.config.entrypoint,
                img.config.cmd,
                img.config.env,
                img.config.user,
                img.config.workdir
            ),
            layers: img
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.media_type.clone()))
                .collect(),
        };
        out.push(Some(BuiltContainer {
            exec,
            env,
            workdir,
            config,
            sbom,
            erofs,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initramfs against the appliance's RAM: its files must fit in
    /// half (the tmpfs cap), files and compressed copy together should.
    #[test]
    fn ram_warning_compares_the_unpacked_and_compressed_initramfs() {
        const M: u64 = 1 << 20;
        assert_eq!(ram_warning(Some(64 * M), 20 * M, 8 * M), None);
        let w = ram_warning(Some(64 * M), 40 * M, 10 * M).unwrap();
        assert!(w.contains("unpacks to 40.00 MiB, more than half of the appliance's 64.00 MiB of RAM (`memory`)"), "{w}");
        assert!(
            w.contains(
                "boot fails; move large container images to a partition (storage = \"erofs\")"
            ),
            "{w}"
        );
        let w = ram_warning(Some(64 * M), 28 * M, 8 * M).unwrap();
        assert!(
            w.contains("28.00 MiB unpacked plus 8.00 MiB compressed, more than half of the appliance's 64.00 MiB"),
            "{w}"
        );
        assert!(w.contains("leaving 28.00 MiB to the kernel"), "{w}");
        // Without `memory`: cairn run's default, and the warning says so.
        assert_eq!(ram_warning(None, 100 * M, 20 * M), None);
        let w = ram_warning(None, 130 * M, 20 * M).unwrap();
        assert!(
            w.contains("256.00 MiB of RAM (`cairn run`'s default (set `memory`))"),
            "{w}"
        );
    }

    #[test]
    fn executable_lookup_follows_symlinks() {
        let mut a = cpio::Archive::default();
        a.add_file("/usr/bin/real", 0o755, b"x".to_vec()).unwrap();
        a.add_file("/usr/bin/data", 0o644, b"x".to_vec()).unwrap();
        a.add_symlink("/bin/rel", "../usr/bin/real").unwrap();
        a.add_symlink("/bin/abs", "/usr/bin/real").unwrap();
        a.add_symlink("/bin/loop", "/bin/loop").unwrap();
        assert!(is_executable_in(&a, "/usr/bin/real"));
        assert!(is_executable_in(&a, "/bin/rel"));
        assert!(is_executable_in(&a, "/bin/abs"));
        assert!(!is_executable_in(&a, "/usr/bin/data"));
        assert!(!is_executable_in(&a, "/bin/loop"));
        assert!(!is_executable_in(&a, "/bin/missing"));
    }

    /// The manifest's list of generated paths covers what `build` writes.
    #[test]
    fn generated_paths_are_known_to_the_manifest() {
        use cairn_manifest::{GENERATED_DIRS, GENERATED_FILES, GENERATED_TREES};
        for p in [
            INIT_PATH,
            CAIRNCTL_PATH,
            "/etc/os-release",
            "/etc/passwd",
            "/etc/group",
        ] {
            assert!(GENERATED_FILES.iter().any(|(g, _)| *g == p), "{p}");
        }
        assert!(SYSTEM_CONFIG_PATH.starts_with("/etc/cairn/"));
        assert!(GENERATED_TREES.iter().any(|(g, _)| *g == "/etc/cairn"));
        for d in ["/etc", "/root", "/usr/bin", "/bin", "/sbin", "/var"] {
            assert!(GENERATED_DIRS.contains(&d), "{d}");
        }
    }

    #[test]
    fn a_file_may_not_replace_a_library_of_a_binary() {
        let mut a = cpio::Archive::default();
        a.add_file("/lib/x86_64-linux-gnu/libc.so.6", 0o755, b"x".to_vec())
            .unwrap();
        a.add_symlink("/lib64/ld-linux-x86-64.so.2", "/lib/x/ld.so")
            .unwrap();
        let inputs = vec![ReportLine {
            what: "/lib/x86_64-linux-gnu/libc.so.6".into(),
            origin: "host /lib/x86_64-linux-gnu/libc.so.6".into(),
            bytes: 1,
        }];
        let t = taken_by(&a, &inputs, "/lib/x86_64-linux-gnu//libc.so.6").unwrap();
        assert!(t.contains("host /lib/x86_64-linux-gnu/libc.so.6"), "{t}");
        let t = taken_by(&a, &inputs, "/lib64/ld-linux-x86-64.so.2").unwrap();
        assert!(t.contains("library link"), "{t}");
        // A directory made by the builder is no collision; nor is a new path.
        assert_eq!(taken_by(&a, &inputs, "/lib"), None);
        assert_eq!(taken_by(&a, &inputs, "/srv/x"), None);
    }
}
