//! The validated manifest (`cairn.toml`) and how it is loaded.
//!
//! ```toml
//! name = "hello"                 # required; output file names
//! hostname = "hello"             # optional
//! on_panic = "continue"          # optional: continue | reboot
//! arch = "x86_64"                # optional: x86_64 (default) | arm64
//! memory = "256M"                # optional: the machine's RAM (`cairn run`'s default
//!                                # --mem; the builder warns when the initramfs needs too much of it)
//!
//! [kernel]                       # required
//! package = "linux-image-cloud-amd64"   # or: path = "...", modules_dir = "..."
//! # or: source = "/usr/src/linux-source-6.1.tar.xz", config = ["tiny.config"], base = "tinyconfig"
//! cmdline = "console=ttyS0"
//! modules = ["virtio_net"]
//! implied_modules = true         # default: add the modules the manifest implies (crate::implied)
//!
//! [initramfs]
//! compression = "zstd"           # zstd | gzip | xz | none
//!
//! [[service]]
//! name = "greet"
//! exec = ["/bin/echo", "hi"]
//! env = { LANG = "C" }
//! restart = "never"              # always | on-failure | never
//! on_exit = "poweroff"           # poweroff | reboot
//! after = ["network-online"]     # services, or targets network-online / mounts
//!
//! [[file]]
//! src = "www/index.html"
//! dst = "/srv/www/index.html"
//! mode = "0644"
//!
//! [[binary]]
//! path = "/usr/bin/jq"
//! dst = "/usr/bin/jq"
//!
//! [[package]]                    # from Debian's archive, not the build host
//! name = "dnsmasq-base"
//! files = ["/usr/sbin/dnsmasq"]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::compression::Compression;
use crate::diagnostic::{Diagnostic, Located, Span};
use crate::raw::{
    self, RawBinary, RawFile, RawKernel, RawManifest, RawPackage, RawService, RawSign,
};
use crate::runtime::{
    ExitAction, LogConfig, NetConfig, PanicAction, RestartPolicy, RunSettings, ServiceConfig,
    SystemConfig,
};
use crate::supervision::{self, Accounts};
use crate::validate::{self as check, Invalid, TARGETS};

/// Kernel command line used when `[kernel] cmdline` is not set.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// Permissions of a `[[file]]` without `mode`.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Largest manifest read (1 MiB): a manifest is a few KiB; anything near
/// this is a mistake (a wrong path, a device, a pipe that never ends).
pub const MANIFEST_MAX: u64 = 1024 * 1024;

/// Reads a text file of at most `max` bytes; a larger one is an error that
/// says so, without reading it all.
pub fn read_limited(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB; refused",
            max / 1024
        )));
    }
    Ok(text)
}

/// The machine an image is for (`arch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum Arch {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
}

impl Arch {
    /// The manifest's name: `x86_64`, `arm64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Debian's name of the architecture: `amd64`, `arm64`.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// A parsed and validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest file as it was given.
    pub path: PathBuf,
    /// The directory holding the manifest; relative paths in it are
    /// resolved against this (`.` when the manifest path has no directory).
    pub dir: PathBuf,
    /// The full manifest text, for diagnostics.
    pub source: String,
    /// `name`: the appliance name, `[a-z0-9][a-z0-9-]*`, at most 64
    /// characters; output files are called `NAME.efi`, `NAME.initrd`, ...
    pub name: String,
    /// `hostname`: the host name to set at boot (RFC 1123, at most 64
    /// characters); `None` leaves the kernel default.
    pub hostname: Option<String>,
    /// `on_panic`: what PID 1 does after catching a panic in its own code:
    /// `continue` (default) or `reboot`.
    pub on_panic: PanicAction,
    /// `arch`: the machine the image is for, `x86_64` (default) or `arm64`.
    pub arch: Located<Arch>,
    /// `test_hooks`: obey the init's test hooks on the kernel command line
    /// (`cairn.test_panic`) in this image (default `false`: they are
    /// ignored outside test mode).
    pub test_hooks: bool,
    /// `memory`: the RAM of the machine the appliance is meant for, in
    /// bytes (a whole number of MiB). `cairn run` gives QEMU this much
    /// unless `--mem` says otherwise, and `cairn build` warns when the
    /// initramfs would need too much of it while it is unpacked.
    pub memory: Option<u64>,
    /// `[kernel]`: which kernel to boot, its command line and modules.
    pub kernel: KernelSpec,
    /// `[initramfs] compression`: `zstd` (default), `gzip`, `xz` or `none`.
    pub compression: Compression,
    /// `[[service]]` entries, in manifest order.
    pub services: Vec<Service>,
    /// `[[file]]` entries, in manifest order.
    pub files: Vec<FileEntry>,
    /// `[[binary]]` entries, in manifest order.
    pub binaries: Vec<BinaryEntry>,
    /// `[[package]]` entries, in manifest order.
    pub packages: Vec<PackageEntry>,
    /// `[disk]` with its `[[partition]]`s: write `NAME.img` (see
    /// [`crate::disk`]).
    pub disk: Option<crate::disk::DiskSpec>,
    /// `[iso]`: write `NAME.iso` too (see [`crate::disk::IsoSpec`]).
    pub iso: Option<crate::disk::IsoSpec>,
    /// `[[mount]]` entries, in manifest order.
    pub mounts: Vec<crate::disk::Mount>,
    /// `[config] mount`: the mount point holding the secondary config.
    pub config_mount: Option<Located<String>>,
    /// `[[network]]` entries and `[net]` (see [`crate::network`]).
    pub net: NetConfig,
    /// Users and groups of the image (`[[user]]`, `[[group]]`, plus root
    /// and nobody), written to `/etc/passwd` and `/etc/group`.
    pub accounts: Accounts,
    /// `[log]`.
    pub log: LogConfig,
    /// `[shell]`: the break-glass console shell; `None` (default): none.
    pub shell: Option<crate::shell::Shell>,
    /// `[sign]`: sign the UKI for Secure Boot; `None` leaves it unsigned.
    pub sign: Option<SignSpec>,
    /// `[update]`: signed A/B updates (see [`crate::update`]).
    pub update: Option<crate::runtime::UpdateConfig>,
    /// `[netboot]`: per-node configs (see [`crate::netboot`]).
    pub netboot: Option<crate::runtime::NetbootConfig>,
}

/// The `[sign]` table: the Secure Boot signing key and certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignSpec {
    /// `key`: PEM private key (unencrypted), resolved against the
    /// manifest's directory.
    pub key: Located<PathBuf>,
    /// `cert`: PEM X.509 certificate matching `key`, resolved against the
    /// manifest's directory.
    pub cert: Located<PathBuf>,
}

/// The `[kernel]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSpec {
    /// Where the kernel comes from: `package` or `path` (+ `modules_dir`).
    /// The span is that of the `package` or `path` value.
    pub source: Located<KernelSource>,
    /// `cmdline`: the kernel command line; default `console=ttyS0`. No
    /// control characters, at most 2047 bytes.
    pub cmdline: String,
    /// `modules`: kernel modules to load at boot, by name (`virtio_net`).
    /// Only their spelling is checked here; the builder checks that the
    /// kernel has them and adds their dependencies.
    pub modules: Vec<Located<String>>,
    /// `implied_modules` (default `true`): also load the modules what the
    /// manifest uses implies, when the kernel has them as modules (see
    /// [`crate::implied`]).
    pub implied_modules: bool,
}

/// Where the kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// `package`: a Debian kernel package, such as `linux-image-cloud-amd64`.
    Package(String),
    /// `path`: a kernel image on the host, with `modules_dir`, its modules
    /// directory (`/lib/modules/VERSION`), if modules are needed. Both are
    /// resolved against the manifest's directory.
    Path {
        image: PathBuf,
        modules_dir: Option<PathBuf>,
    },
    /// `source`: a kernel source tarball or tree, built with Kbuild.
    Source(SourceKernel),
}

/// A kernel built from source: `[kernel] source`, `config` and `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceKernel {
    /// The source tarball (`.tar`, `.tar.xz`, ...) or tree, resolved
    /// against the manifest's directory.
    pub source: PathBuf,
    /// `base`: the configuration the fragments are merged onto.
    pub base: KernelBase,
    /// `config`: config fragments, in merge order (later ones win),
    /// resolved against the manifest's directory.
    pub config: Vec<Located<PathBuf>>,
}

/// The Kbuild configuration a source kernel starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KernelBase {
    /// `make tinyconfig`: the smallest kernel; fragments add what is needed.
    #[default]
    Tinyconfig,
    /// `make defconfig`: the architecture's default configuration.
    Defconfig,
}

impl KernelBase {
    /// The make target (and manifest spelling).
    pub fn target(self) -> &'static str {
        match self {
            KernelBase::Tinyconfig => "tinyconfig",
            KernelBase::Defconfig => "defconfig",
        }
    }
}

/// A `[[service]]` entry: a program PID 1 starts and supervises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `name`: unique, `[a-zA-Z0-9_.-]+`, not `network-online` or `mounts`.
    pub name: Located<String>,
    /// `exec`: the argv; `exec[0]` is an absolute path inside the image.
    pub exec: Located<Vec<String>>,
    /// `env`: environment variables (names without `=` or NUL).
    pub env: BTreeMap<String, String>,
    /// `config_env`: the variables a secondary config may set for this
    /// service (none by default). Names the dynamic loader or an
    /// interpreter takes code from (`LD_*`, `PATH`, ... see
    /// [`crate::validate::NEVER_FROM_CONFIG`]) are refused.
    pub config_env: Vec<String>,
    /// `restart`: `always`, `on-failure` or `never` (default).
    pub restart: RestartPolicy,
    /// `on_exit`: `poweroff` or `reboot` the machine when the service has
    /// exited for good; `None` (default) leaves the machine running.
    pub on_exit: Option<ExitAction>,
    /// `after`: services or targets (`network-online`, `mounts`) to wait
    /// for before starting; cycles are refused.
    pub after: Vec<Located<String>>,
    /// `enabled`: `false` keeps the service from starting (default `true`;
    /// a secondary config can change it).
    pub enabled: bool,
    /// Credentials, limits, restart backoff, stop timeout
    /// ([`crate::supervision`]).
    pub run: RunSettings,
    /// `image` and the keys that go with it: the service runs an OCI image
    /// ([`crate::container`]). `exec` may then be empty (the image config
    /// supplies it) and need not be absolute (it is looked up in `PATH`
    /// inside the container).
    pub container: Option<crate::container::ContainerSpec>,
}

/// A `[[file]]` entry: a host file copied into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// `src`: the host file, resolved against the manifest's directory.
    pub src: Located<PathBuf>,
    /// `dst`: where it goes in the image: absolute, no `..`, not `/`.
    pub dst: Located<String>,
    /// `mode`: permission bits, written as an octal string (`"0755"`);
    /// default `0644`.
    pub mode: u32,
}

/// A `[[binary]]` entry: a host program copied into the image together
/// with the shared libraries it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryEntry {
    /// `path`: the program on the host (absolute).
    pub path: Located<PathBuf>,
    /// `dst`: where it goes in the image; default: the same as `path`.
    pub dst: String,
}

/// A `[[package]]` entry: files taken from a Debian package of the
/// image's architecture, fetched with apt (not from the build host); the
/// shared libraries they need come from the package's dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEntry {
    /// `name`: the Debian package.
    pub name: Located<String>,
    /// `files`: absolute paths inside the package, each put at the same
    /// path in the image.
    pub files: Vec<Located<String>>,
}

impl Manifest {
    /// Reads, parses and validates the manifest at `path`.
    ///
    /// A file that cannot be read, or is larger than [`MANIFEST_MAX`],
    /// gives a [`Diagnostic`] without position (`line == 0`), shown as
    /// `PATH: error: cannot read manifest: ...`.
    pub fn load(path: &Path) -> Result<Manifest, Diagnostic> {
        let text = read_limited(path, MANIFEST_MAX).map_err(|e| {
            Diagnostic::without_position(path, format!("cannot read manifest: {e}"))
        })?;
        Manifest::parse(&text, path)
    }

    /// Parses and validates manifest `text`; `path` is where it came from
    /// (for messages and to resolve relative paths), it is not read.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, Diagnostic> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let raw = raw::parse(text).map_err(|(span, message)| {
            Diagnostic::at(path, text, span.unwrap_or_default(), message)
        })?;
        let builder = Builder { text, dir: &dir };
        builder
            .build(raw)
            .map_err(|(span, err)| Diagnostic::at(path, text, span, err.to_string()))
            .map(|parts| Manifest {
                path: path.to_path_buf(),
                dir,
                source: text.to_string(),
                ..parts
            })
    }

    /// A diagnostic about `span` of this manifest, for checks made later
    /// (for example by the builder: a `[[file]] src` that does not exist).
    pub fn error_at(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(&self.path, &self.source, span, message)
    }

    /// The runtime configuration for `cairn-init`. `modules` are the paths
    /// inside the image of the modules to load, in load order, as resolved
    /// by the builder.
    pub fn system_config(&self, modules: Vec<String>) -> SystemConfig {
        SystemConfig {
            name: self.name.clone(),
            hostname: self.hostname.clone(),
            modules,
            on_panic: self.on_panic,
            test_hooks: self.test_hooks,
            net: self.net.clone(),
            services: self
                .services
                .iter()
                .map(|s| ServiceConfig {
                    name: s.name.value.clone(),
                    exec: s.exec.value.clone(),
                    env: s.env.clone(),
                    config_env: s.config_env.clone(),
                    restart: s.restart,
                    on_exit: s.on_exit,
                    after: {
                        let mut after: Vec<String> =
                            s.after.iter().map(|a| a.value.clone()).collect();
                        // A container's volumes are on [[mount]]s: wait for them.
                        let has_volumes =
                            s.container.as_ref().is_some_and(|c| !c.volumes.is_empty());
                        if has_volumes && !after.iter().any(|a| a == "mounts") {
                            after.push("mounts".into());
                        }
                        after
                    },
                    enabled: s.enabled,
                    // Filled in by the builder, which reads the image.
                    container: None,
                    run: s.run.clone(),
                })
                .collect(),
            log: self.log.clone(),
            mounts: self.mounts.iter().map(|m| m.config.clone()).collect(),
            config_mount: self.config_mount.as_ref().map(|c| c.value.clone()),
            shell: self.shell.as_ref().map(crate::shell::Shell::config),
            update: self.update.clone(),
            netboot: self.netboot.clone(),
        }
        .with_update_agent()
        .with_node_agent()
    }
}

type Failure = (Span, Invalid);

/// `source` set together with `package` or `path`: points at the later one.
fn source_conflict(key: &'static str, other: Span, src: Span) -> Failure {
    let later = if src.start > other.start { src } else { other };
    (later, Invalid::KernelSourceConflict(key))
}

fn run_failure((span, e): supervision::RunFailure) -> Failure {
    (span, Invalid::Run(e))
}

fn span<T>(s: &Spanned<T>) -> Span {
    s.span().into()
}

fn at<T>(s: &Spanned<T>) -> impl FnOnce(Invalid) -> Failure {
    let sp = span(s);
    move |e| (sp, e)
}

fn located<T>(s: Spanned<T>) -> Located<T> {
    let sp = span(&s);
    Located::new(s.into_inner(), sp)
}

/// Turns the raw manifest into the validated one (without path/source,
/// which the caller fills in).
struct Builder<'a> {
    text: &'a str,
    dir: &'a Path,
}

impl Builder<'_> {
    fn resolve(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn line_of(&self, span: Span) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn build(&self, raw: RawManifest) -> Result<Manifest, Failure> {
        check::check_name(raw.name.get_ref()).map_err(at(&raw.name))?;
        if let Some(h) = &raw.hostname {
            check::check_hostname(h.get_ref()).map_err(at(h))?;
        }
        let kernel = self.kernel(raw.kernel)?;
        let accounts = Accounts::build(raw.user, raw.group).map_err(run_failure)?;
        let log = supervision::log_config(raw.log).map_err(run_failure)?;
        let shell = crate::shell::shell(raw.shell).map_err(|(sp, e)| (sp, Invalid::Shell(e)))?;
        let services = self.services(raw.service, &accounts)?;
        let files = raw
            .file
            .into_iter()
            .map(|f| self.file(f.into_inner()))
            .collect::<Result<Vec<_>, _>>()?;
        let binaries = raw
            .binary
            .into_iter()
            .map(|b| self.binary(b.into_inner()))
            .collect::<Result<Vec<_>, _>>()?;
        let packages = raw
            .package
            .into_iter()
            .map(|p| self.package(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.unique_destinations(
            &files,
            &binaries,
            &packages,
            raw.hostname.is_some(),
            !kernel.modules.is_empty(),
        )?;
        let net = crate::network::build(raw.network, raw.net, &|s| self.line_of(s))
            .map_err(|(s, e)| (s, Invalid::Network(e)))?;
        let sign = raw.sign.map(|s| self.sign(s.into_inner())).transpose()?;
        let disk = crate::disk::build(
            self.text,
            self.dir,
            raw.disk,
            raw.partition,
            raw.mount,
            raw.config,
        )
        .map_err(|(sp, e)| (sp, Invalid::from(e)))?;
        let iso = crate::disk::build_iso(raw.name.get_ref(), raw.iso)
            .map_err(|(sp, e)| (sp, Invalid::from(e)))?;
        let memory = match &raw.memory {
            Some(v) => Some(
                crate::disk::parse_size(v.get_ref()).map_err(|e| (span(v), Invalid::from(e)))?,
            ),
            None => None,
        };
        for s in &services {
            let Some(c) = &s.container else { continue };
            if c.storage.value == crate::container::ImageStorage::Erofs {
                use crate::container::{ContainerInvalid, MAX_EROFS_SERVICE_NAME};
                if disk.disk.is_none() {
                    return Err((c.storage.span, ContainerInvalid::ErofsWithoutDisk.into()));
                }
                if s.name.value.len() > MAX_EROFS_SERVICE_NAME {
                    return Err((
                        s.name.span,
                        ContainerInvalid::ErofsName(s.name.value.clone()).into(),
                    ));
                }
            }
        }
        for c in services.iter().filter_map(|s| s.container.as_ref()) {
            for v in &c.volumes {
                if !disk
                    .mounts
                    .iter()
                    .any(|m| crate::container::is_under(&v.value.src, &m.config.path))
                {
                    return Err((
                        v.span,
                        crate::container::ContainerInvalid::VolumeNotOnMount(v.value.src.clone())
                            .into(),
                    ));
                }
            }
        }
        if let Some(a) = raw.arch.as_ref().filter(|a| *a.get_ref() == Arch::Arm64) {
            let not_yet = [
                (disk.disk.is_some(), "[disk] (a GPT disk image)"),
                (iso.is_some(), "[iso]"),
                (sign.is_some(), "[sign] (a signed UKI)"),
                (raw.update.is_some(), "[update] (updates of the UKI)"),
                (
                    matches!(kernel.source.value, KernelSource::Source(_)),
                    "a kernel built from `source`",
                ),
            ];
            if let Some((_, what)) = not_yet.iter().find(|(set, _)| *set) {
                return Err((span(a), Invalid::NotForArm64(what)));
            }
        }
        let names: Vec<&str> = services.iter().map(|s| s.name.value.as_str()).collect();
        let update = crate::update::build(raw.update, disk.disk.is_some(), &names, self.dir)
            .map_err(|(sp, e)| (sp, Invalid::from(e)))?;
        let netboot = crate::netboot::build(raw.netboot, self.dir)
            .map_err(|(sp, e)| (sp, Invalid::from(e)))?;
        Ok(Manifest {
            path: PathBuf::new(),
            dir: PathBuf::new(),
            source: String::new(),
            name: raw.name.into_inner(),
            hostname: raw.hostname.map(Spanned::into_inner),
            on_panic: raw.on_panic.unwrap_or_default(),
            arch: raw
                .arch
                .map(located)
                .unwrap_or_else(|| Located::new(Arch::default(), Span::default())),
            test_hooks: raw.test_hooks.unwrap_or(false),
            memory,
            kernel,
            compression: raw.initramfs.map(|i| i.compression).unwrap_or_default(),
            services,
            files,
            binaries,
            packages,
            disk: disk.disk.map(|d| crate::disk::DiskSpec {
                ab_slots: update.is_some(),
                ..d
            }),
            iso,
            mounts: disk.mounts,
            config_mount: disk.config_mount,
            net,
            accounts,
            log,
            shell,
            sign,
            update,
            netboot,
        })
    }

    fn sign(&self, s: RawSign) -> Result<SignSpec, Failure> {
        check::check_host_path("key", s.key.get_ref()).map_err(at(&s.key))?;
        check::check_host_path("cert", s.cert.get_ref()).map_err(at(&s.cert))?;
        let (ks, cs) = (span(&s.key), span(&s.cert));
        Ok(SignSpec {
            key: Located::new(self.resolve(s.key.get_ref()), ks),
            cert: Located::new(self.resolve(s.cert.get_ref()), cs),
        })
    }

    fn kernel(&self, raw: Spanned<RawKernel>) -> Result<KernelSpec, Failure> {
        let table = span(&raw);
        let k = raw.into_inner();
        if k.source.is_none() {
            if let Some(c) = &k.config {
                return Err((span(c), Invalid::OnlyWithSource("config")));
            }
            if let Some(b) = &k.base {
                return Err((span(b), Invalid::OnlyWithSource("base")));
            }
        }
        let source = match (k.package, k.path, k.source) {
            (Some(pkg), Some(path), _) => {
                // Point at whichever of the two comes second.
                let (a, b) = (span(&pkg), span(&path));
                let later = if b.start > a.start { b } else { a };
                return Err((later, Invalid::KernelBoth));
            }
            (Some(other), None, Some(src)) => {
                return Err(source_conflict("package", span(&other), span(&src)));
            }
            (None, Some(other), Some(src)) => {
                return Err(source_conflict("path", span(&other), span(&src)));
            }
            (None, None, None) => return Err((table, Invalid::KernelMissing)),
            (None, None, Some(src)) => {
                if let Some(md) = &k.modules_dir {
                    return Err((span(md), Invalid::ModulesDirWithoutPath));
                }
                if let Some(first) = k.modules.first() {
                    return Err((span(first), Invalid::ModulesWithSource));
                }
                check::check_host_path("source", src.get_ref()).map_err(at(&src))?;
                let base = match &k.base {
                    Some(b) => match b.get_ref().as_str() {
                        "tinyconfig" => KernelBase::Tinyconfig,
                        "defconfig" => KernelBase::Defconfig,
                        other => return Err((span(b), Invalid::KernelBase(other.to_string()))),
                    },
                    None => KernelBase::default(),
                };
                let mut config = Vec::new();
                for c in k.config.map(Spanned::into_inner).unwrap_or_default() {
                    check::check_host_path("config", c.get_ref()).map_err(at(&c))?;
                    config.push(Located::new(self.resolve(c.get_ref()), span(&c)));
                }
                let sp = span(&src);
                Located::new(
                    KernelSource::Source(SourceKernel {
                        source: self.resolve(src.get_ref()),
                        base,
                        config,
                    }),
                    sp,
                )
            }
            (Some(pkg), None, None) => {
                if let Some(md) = &k.modules_dir {
                    return Err((span(md), Invalid::ModulesDirWithoutPath));
                }
                check::check_package(pkg.get_ref()).map_err(at(&pkg))?;
                let sp = span(&pkg);
                Located::new(KernelSource::Package(pkg.into_inner()), sp)
            }
            (None, Some(path), None) => {
                check::check_host_path("path", path.get_ref()).map_err(at(&path))?;
                let modules_dir = match &k.modules_dir {
                    Some(md) => {
                        check::check_host_path("modules_dir", md.get_ref()).map_err(at(md))?;
                        Some(self.resolve(md.get_ref()))
                    }
                    None => None,
                };
                Located::new(
                    KernelSource::Path {
                        image: self.resolve(path.get_ref()),
                        modules_dir,
                    },
                    span(&path),
                )
            }
        };
        let cmdline = match k.cmdline {
            Some(c) => {
                check::check_cmdline(c.get_ref()).map_err(at(&c))?;
                c.into_inner()
            }
            None => DEFAULT_CMDLINE.to_string(),
        };
        for m in &k.modules {
            check::check_module(m.get_ref()).map_err(at(m))?;
        }
        Ok(KernelSpec {
            source,
            cmdline,
            modules: k.modules.into_iter().map(located).collect(),
            implied_modules: k.implied_modules.unwrap_or(true),
        })
    }

    fn services(
        &self,
        raw: Vec<Spanned<RawService>>,
        accounts: &Accounts,
    ) -> Result<Vec<Service>, Failure> {
        let mut seen: HashMap<String, Span> = HashMap::new();
        let mut services = Vec::with_capacity(raw.len());
        for s in raw {
            let header = span(&s);
            let s = s.into_inner();
            check::check_service_name(s.name.get_ref()).map_err(at(&s.name))?;
            if let Some(first) = seen.get(s.name.get_ref()) {
                return Err((
                    span(&s.name),
                    Invalid::DuplicateService {
                        name: s.name.get_ref().clone(),
                        first_line: self.line_of(*first),
                    },
                ));
            }
            seen.insert(s.name.get_ref().clone(), span(&s.name));
            services.push(self.service(s, header, accounts)?);
        }
        check_after(&services)?;
        Ok(services)
    }

    fn service(
        &self,
        mut s: RawService,
        header: Span,
        accounts: &Accounts,
    ) -> Result<Service, Failure> {
        use crate::container::{self, ContainerInvalid, RawContainer};
        let raw_container = RawContainer {
            image: s.image.take(),
            volumes: std::mem::take(&mut s.volumes),
            network: s.network.take(),
            hostname: s.hostname.take(),
            init: s.init.take(),
            storage: s.storage.take(),
        };
        let is_container = raw_container.image.is_some();
        let mut raw_run = s.take_run();
        // A container's user lives in the image, not in the appliance's
        // accounts: it is resolved by the builder against the image.
        let container_user = if is_container {
            if let Some(g) = &raw_run.group {
                return Err((span(g), ContainerInvalid::NotWithImage("group").into()));
            }
            if let Some(g) = raw_run.groups.first() {
                return Err((span(g), ContainerInvalid::NotWithImage("groups").into()));
            }
            raw_run.user.take()
        } else {
            None
        };
        let container = container::build(raw_container, container_user, self.dir)
            .map_err(|(sp, e)| (sp, Invalid::from(e)))?;
        let run = supervision::run_settings(raw_run, accounts).map_err(run_failure)?;
        let (exec_span, exec): (Span, Vec<Spanned<String>>) = match s.exec {
            Some(e) => (span(&e), e.into_inner()),
            None if is_container => (header, Vec::new()),
            None => return Err((header, ContainerInvalid::NoExec.into())),
        };
        let plain: Vec<String> = exec.iter().map(|a| a.get_ref().clone()).collect();
        let checked = if is_container {
            if plain.iter().any(|a| a.contains('\0')) {
                Err(Invalid::Nul("exec"))
            } else if exec.is_empty() && exec_span != header {
                Err(Invalid::EmptyExec)
            } else {
                Ok(())
            }
        } else {
            check::check_exec(&plain)
        };
        if let Err(e) = checked {
            // Point at the offending argument where there is one.
            let sp = match &e {
                Invalid::RelativeExec(_) => exec.first().map_or(exec_span, span),
                Invalid::Nul(_) => exec
                    .iter()
                    .find(|a| a.get_ref().contains('\0'))
                    .map_or(exec_span, span),
                _ => exec_span,
            };
            return Err((sp, e));
        }
        let mut env = BTreeMap::new();
        for (k, v) in s.env {
            check::check_env_name(k.get_ref()).map_err(at(&k))?;
            if v.get_ref().contains('\0') {
                return Err((span(&v), Invalid::Nul("env")));
            }
            env.insert(k.into_inner(), v.into_inner());
        }
        let mut config_env: Vec<String> = Vec::new();
        for k in s.config_env {
            check::check_config_env(k.get_ref()).map_err(at(&k))?;
            if config_env.contains(k.get_ref()) {
                return Err((
                    span(&k),
                    Invalid::ConfigEnvDuplicate {
                        name: k.into_inner(),
                    },
                ));
            }
            config_env.push(k.into_inner());
        }
        Ok(Service {
            name: located(s.name),
            exec: Located::new(plain, exec_span),
            env,
            config_env,
            restart: s.restart,
            on_exit: s.on_exit,
            after: s.after.into_iter().map(located).collect(),
            enabled: s.enabled.unwrap_or(true),
            run,
            container,
        })
    }

    fn file(&self, f: RawFile) -> Result<FileEntry, Failure> {
        check::check_host_path("src", f.src.get_ref()).map_err(at(&f.src))?;
        check::check_destination("dst", f.dst.get_ref()).map_err(at(&f.dst))?;
        let mode = match &f.mode {
            Some(m) => check::mode_from_value(m.get_ref()).map_err(at(m))?,
            None => DEFAULT_FILE_MODE,
        };
        let src_span = span(&f.src);
        Ok(FileEntry {
            src: Located::new(self.resolve(f.src.get_ref()), src_span),
            dst: located(f.dst),
            mode,
        })
    }

    fn binary(&self, b: RawBinary) -> Result<BinaryEntry, Failure> {
        let p = b.path.get_ref();
        check::check_host_path("path", p).map_err(at(&b.path))?;
        if !p.starts_with('/') {
            return Err((span(&b.path), Invalid::RelativeBinary(p.clone())));
        }
        let dst = match &b.dst {
            Some(d) => {
                check::check_destination("dst", d.get_ref()).map_err(at(d))?;
                d.get_ref().clone()
            }
            None => {
                check::check_destination("path", p).map_err(at(&b.path))?;
                p.clone()
            }
        };
        Ok(BinaryEntry {
            path: Located::new(PathBuf::from(p), span(&b.path)),
            dst,
        })
    }

    fn package(&self, p: Spanned<RawPackage>) -> Result<PackageEntry, Failure> {
        let p = p.into_inner();
        check::check_package(p.name.get_ref()).map_err(at(&p.name))?;
        if p.files.get_ref().is_empty() {
            return Err((span(&p.files), Invalid::PackageNoFiles));
        }
        let mut files = Vec::new();
        for f in p.files.into_inner() {
            check::check_destination("files", f.get_ref()).map_err(at(&f))?;
            files.push(located(f));
        }
        Ok(PackageEntry {
            name: located(p.name),
            files,
        })
    }

    /// `line L, column C` of a span, as [`Diagnostic`] counts them.
    fn place(&self, span: Span) -> String {
        let start = span.start.min(self.text.len());
        let start = (0..=start)
            .rev()
            .find(|&i| self.text.is_char_boundary(i))
            .unwrap_or(0);
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..start].chars().count() + 1;
        format!("line {}, column {col}", self.line_of(span))
    }

    /// Two entries writing the same image path, or one entry writing below
    /// another's file, is a mistake; so is an entry writing a path the
    /// builder generates itself ([`generated_conflict`]). The error points
    /// at the later entry and names the earlier one's place.
    /// (Binaries without `dst` are located at their `path`.)
    fn unique_destinations(
        &self,
        files: &[FileEntry],
        binaries: &[BinaryEntry],
        packages: &[PackageEntry],
        hostname: bool,
        modules: bool,
    ) -> Result<(), Failure> {
        let mut all: Vec<(&str, Span, &'static str)> = files
            .iter()
            .map(|f| (f.dst.value.as_str(), f.dst.span, "[[file]]"))
            .chain(
                binaries
                    .iter()
                    .map(|b| (b.dst.as_str(), b.path.span, "[[binary]]")),
            )
            .chain(packages.iter().flat_map(|p| {
                p.files
                    .iter()
                    .map(|f| (f.value.as_str(), f.span, "[[package]]"))
            }))
            .collect();
        // Compare in text order so that "first" really is the earlier one.
        all.sort_by_key(|(_, sp, _)| sp.start);
        let mut seen: Vec<(String, Span, &'static str)> = Vec::new();
        for (dst, sp, this_kind) in &all {
            let key = normalize(dst);
            if let Some(what) = generated_conflict(&key, hostname, modules) {
                return Err((
                    *sp,
                    Invalid::GeneratedDestination {
                        dst: dst.to_string(),
                        what,
                    },
                ));
            }
            for (other, first, kind) in &seen {
                let clash = if *other == key {
                    Some("is already installed by")
                } else if key.starts_with(&format!("{other}/")) {
                    Some("is below the file installed by")
                } else if other.starts_with(&format!("{key}/")) {
                    Some("would be a file where a directory is needed by")
                } else {
                    None
                };
                if let Some(how) = clash {
                    return Err((
                        *sp,
                        Invalid::DuplicateDestination {
                            dst: dst.to_string(),
                            how,
                            kind,
                            first: self.place(*first),
                        },
                    ));
                }
            }
            seen.push((key, *sp, this_kind));
        }
        Ok(())
    }
}

/// Files the builder writes into every image (or, for `/etc/hostname`,
/// when `hostname` is set), with what they are. A `[[file]]` or
/// `[[binary]]` may not take their place, sit below them, or take the place
/// of a directory above them.
pub const GENERATED_FILES: &[(&str, &str)] = &[
    ("/init", "the cairn-init binary (PID 1)"),
    ("/usr/bin/cairnctl", "the cairnctl link to the init"),
    ("/etc/os-release", "the image's os-release"),
    ("/etc/passwd", "the users from [[user]]"),
    ("/etc/group", "the groups from [[group]]"),
    ("/dev/console", "a device node"),
    ("/dev/null", "a device node"),
    ("/dev/kmsg", "a device node"),
];

/// Directories the builder owns whole: nothing may be installed in them.
/// `/lib/modules` only when `kernel.modules` is set.
pub const GENERATED_TREES: &[(&str, &str)] = &[
    ("/etc/cairn", "the init's runtime configuration"),
    ("/dev", "devtmpfs, mounted there at boot"),
    ("/proc", "procfs, mounted there at boot"),
    ("/sys", "sysfs, mounted there at boot"),
    ("/run", "a tmpfs, mounted there at boot"),
    ("/tmp", "a tmpfs, mounted there at boot"),
];

/// Directories the builder creates: a file cannot stand in their place.
pub const GENERATED_DIRS: &[&str] = &["/etc", "/root", "/usr", "/usr/bin", "/bin", "/sbin", "/var"];

/// What the builder generates at or around the image path `key`
/// (normalised: no leading `/`), if anything.
fn generated_conflict(key: &str, hostname: bool, modules: bool) -> Option<String> {
    let key_abs = format!("/{key}");
    let hostname_file = [("/etc/hostname", "the host name from `hostname`")];
    let modules_tree = [("/lib/modules", "the kernel modules from `kernel.modules`")];
    let files = GENERATED_FILES
        .iter()
        .chain(hostname_file.iter().filter(|_| hostname));
    for (path, what) in files {
        if key_abs == *path {
            return Some(format!("`{path}`, {what}"));
        }
        if key_abs.starts_with(&format!("{path}/")) {
            return Some(format!("the file `{path}` ({what}) above it"));
        }
    }
    let trees = GENERATED_TREES
        .iter()
        .chain(modules_tree.iter().filter(|_| modules));
    for (path, what) in trees {
        if key_abs == *path || key_abs.starts_with(&format!("{path}/")) {
            return Some(format!("`{path}`: {what}"));
        }
    }
    let needed_dirs = GENERATED_FILES
        .iter()
        .map(|(p, _)| *p)
        .chain(GENERATED_TREES.iter().map(|(p, _)| *p))
        .chain(GENERATED_DIRS.iter().copied());
    for path in needed_dirs {
        if *path == *key_abs && GENERATED_DIRS.contains(&path)
            || path.starts_with(&format!("{key_abs}/"))
        {
            return Some(format!("the directory `{key_abs}`, needed for `{path}`"));
        }
    }
    None
}

/// `/srv//www/./x` and `/srv/www/x` are the same file.
fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `after` entry names a service or a target, and the services do
/// not wait for each other in a cycle. A cycle is reported at the entry
/// that closes it.
fn check_after(services: &[Service]) -> Result<(), Failure> {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.value.as_str(), i))
        .collect();
    let mut edges: Vec<Vec<(usize, Span)>> = vec![Vec::new(); services.len()];
    for (i, s) in services.iter().enumerate() {
        for a in &s.after {
            if TARGETS.contains(&a.value.as_str()) {
                continue;
            }
            match index.get(a.value.as_str()) {
                Some(&j) => edges[i].push((j, a.span)),
                None => {
                    let expected = TARGETS
                        .iter()
                        .copied()
                        .chain(services.iter().map(|s| s.name.value.as_str()))
                        .filter(|n| *n != s.name.value)
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err((
                        a.span,
                        Invalid::UnknownAfter {
                            name: a.value.clone(),
                            expected,
                        },
                    ));
                }
            }
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; services.len()];
    for root in 0..services.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative depth-first search: (service, next edge to follow).
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let Some(&(to, sp)) = edges[node].get(*next) else {
                mark[node] = Mark::Done;
                stack.pop();
                continue;
            };
            *next += 1;
            match mark[to] {
                Mark::New => {
                    mark[to] = Mark::OnPath;
                    stack.push((to, 0));
                }
                Mark::OnPath => {
                    let from = stack.iter().position(|&(n, _)| n == to).unwrap_or(0);
                    let mut cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                    // Tell it from the service whose entry closes the cycle.
                    let closing = cycle.len() - 1;
                    cycle.rotate_left(closing);
                    cycle.push(node);
                    let names: Vec<&str> = cycle
                        .iter()
                        .map(|&n| services[n].name.value.as_str())
                        .collect();
                    return Err((sp, Invalid::Cycle(describe_cycle(&names))));
                }
                Mark::Done => {}
            }
        }
    }
    Ok(())
}

/// `["b", "a", "b"]` -> "`b` starts after `a`, which starts after `b`".
fn describe_cycle(names: &[&str]) -> String {
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        match i {
            0 => out.push_str(&format!("`{n}`")),
            1 => out.push_str(&format!(" starts after `{n}`")),
            _ => out.push_str(&format!(", which starts after `{n}`")),
        }
    }
    if names.len() == 2 {
        out.push_str(" (itself)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: &str = "[kernel]\npackage = \"linux-image-cloud-amd64\"\n";

    fn parse(text: &str) -> Result<Manifest, Diagnostic> {
        Manifest::parse(text, Path::new("app/cairn.toml"))
    }

    /// Parses `text`, expecting an error; returns (line, col, message).
    fn err(text: &str) -> (usize, usize, String) {
        let d = parse(text).expect_err("manifest should be refused");
        assert_eq!(d.file, Path::new("app/cairn.toml"));
        (d.line, d.col, d.message)
    }

    #[test]
    fn packages_name_files_placed_and_checked() {
        let m = parse(&format!(
            "name = \"x\"\n{KERNEL}[[package]]\nname = \"dnsmasq-base\"\nfiles = [\"/usr/sbin/dnsmasq\"]\n"
        ))
        .unwrap();
        assert_eq!(m.packages.len(), 1);
        assert_eq!(m.packages[0].name.value, "dnsmasq-base");
        assert_eq!(m.packages[0].files[0].value, "/usr/sbin/dnsmasq");
        for (entry, line, col, want) in [
            (
                "name = \"Bad_Name\"\nfiles = [\"/a\"]",
                5,
                8,
                "invalid Debian package name",
            ),
            ("name = \"jq\"\nfiles = []", 6, 9, "at least one path"),
            (
                "name = \"jq\"\nfiles = [\"/bin/x\", \"usr/bin/jq\"]",
                6,
                20,
                "absolute path",
            ),
            ("name = \"jq\"", 4, 1, "files"),
        ] {
            let (l, c, msg) = err(&format!("name = \"x\"\n{KERNEL}[[package]]\n{entry}\n"));
            assert!(msg.contains(want), "{entry}: {msg}");
            assert_eq!((l, c), (line, col), "{entry}: {msg}");
        }
        // A package's file collides with a [[binary]] like any entry.
        let (l, _, msg) = err(&format!(
            "name = \"x\"\n{KERNEL}[[binary]]\npath = \"/usr/bin/jq\"\n[[package]]\nname = \"jq\"\nfiles = [\"/usr/bin/jq\"]\n"
        ));
        assert_eq!(l, 8, "{msg}");
        assert!(msg.contains("[[binary]] at line 5"), "{msg}");
    }

    fn with_kernel(before: &str, after: &str) -> String {
        format!("{before}{KERNEL}{after}")
    }

    #[test]
    fn arch_defaults_to_x86_64_and_takes_arm64() {
        let m = parse(&with_kernel("name = \"x\"\n", "")).unwrap();
        assert_eq!(m.arch.value, Arch::X86_64);
        let m = parse(&with_kernel("name = \"x\"\narch = \"arm64\"\n", "")).unwrap();
        assert_eq!(
            (m.arch.value, m.arch.value.debian()),
            (Arch::Arm64, "arm64")
        );
        let (line, col, msg) = err(&with_kernel("name = \"x\"\narch = \"riscv64\"\n", ""));
        assert_eq!((line, col), (2, 8), "{msg}");
        assert!(msg.contains("x86_64") && msg.contains("arm64"), "{msg}");
    }

    #[test]
    fn arm64_refuses_what_needs_its_uki_at_arch() {
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\narch = \"arm64\"\n",
            "[sign]\nkey = \"k.pem\"\ncert = \"c.pem\"\n",
        ));
        assert_eq!((line, col), (2, 8), "{msg}");
        assert!(msg.contains("[sign]") && msg.contains("arm64"), "{msg}");
    }

    #[test]
    fn unknown_top_level_key() {
        let (line, col, msg) = err(&with_kernel("name = \"x\"\nbogus = 1\n", ""));
        assert_eq!((line, col), (2, 1), "{msg}");
        assert!(
            msg.starts_with("unknown key `bogus` at the top level"),
            "{msg}"
        );
        for key in ["name", "hostname", "on_panic", "kernel", "service", "file"] {
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
        }
    }

    #[test]
    fn unknown_key_in_service() {
        let text = with_kernel(
            "name = \"x\"\n",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n\n[[service]]\nname = \"b\"\nexec = [\"/b\"]\n  restrat = \"always\"\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (11, 3), "{msg}");
        assert!(
            msg.starts_with("unknown key `restrat` in [[service]] #2"),
            "{msg}"
        );
        for key in ["name", "exec", "env", "restart", "on_exit", "after"] {
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
        }
    }

    #[test]
    fn unknown_key_in_kernel_and_inline_table() {
        let (line, col, msg) = err("name = \"x\"\nkernel = { package = \"ab\", pkg = 1 }\n");
        assert_eq!((line, col), (2, 28), "{msg}");
        assert!(msg.starts_with("unknown key `pkg` in [kernel]"), "{msg}");
    }

    #[test]
    fn string_where_array_expected() {
        let text = with_kernel(
            "name = \"x\"\n",
            "[[service]]\nname = \"a\"\nexec = \"/bin/echo hi\"\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (6, 8), "{msg}");
        assert!(msg.contains("`exec` in [[service]] #1"), "{msg}");
        assert!(msg.contains("expected an array"), "{msg}");
    }

    #[test]
    fn invalid_restart_lists_allowed_values() {
        let text = with_kernel(
            "name = \"x\"\n",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrestart = \"sometimes\"\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (7, 11), "{msg}");
        assert!(msg.contains("`sometimes`"), "{msg}");
        for v in ["always", "on-failure", "never"] {
            assert!(msg.contains(&format!("`{v}`")), "{msg}");
        }
    }

    #[test]
    fn missing_name() {
        let (line, col, msg) = err(&with_kernel("hostname = \"x\"\n", ""));
        assert_eq!((line, col), (1, 1), "{msg}");
        assert_eq!(msg, "missing required key `name` at the top level");
    }

    #[test]
    fn missing_kernel() {
        let (line, col, msg) = err("name = \"x\"\n");
        assert_eq!((line, col), (1, 1), "{msg}");
        assert_eq!(msg, "missing required key `kernel` at the top level");
    }

    #[test]
    fn missing_key_in_service_points_at_its_header() {
        let text = with_kernel("name = \"x\"\n", "\n[[service]]\nexec = [\"/a\"]\n");
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (5, 1), "{msg}");
        assert_eq!(msg, "missing required key `name` in [[service]] #1");
    }

    #[test]
    fn both_package_and_path() {
        let text =
            "name = \"x\"\n[kernel]\npackage = \"linux-image-amd64\"\npath = \"/boot/vmlinuz\"\n";
        let (line, col, msg) = err(text);
        assert_eq!((line, col), (4, 8), "{msg}");
        assert!(msg.contains("both `package` and `path`"), "{msg}");
    }

    #[test]
    fn neither_package_nor_path() {
        let (line, col, msg) = err("name = \"x\"\n\n[kernel]\ncmdline = \"quiet\"\n");
        assert_eq!((line, col), (3, 1), "{msg}");
        assert_eq!(msg, Invalid::KernelMissing.to_string());
    }

    const SRC: &str = "name = \"x\"\n[kernel]\nsource = \"/usr/src/linux.tar.xz\"\n";

    #[test]
    fn source_kernel_with_fragments_and_base() {
        let text = format!("{SRC}config = [\"../kernel/tiny.config\", \"/abs/extra.config\"]\nbase = \"defconfig\"\n");
        let m = parse(&text).unwrap();
        let KernelSource::Source(s) = &m.kernel.source.value else {
            panic!("not a source kernel: {:?}", m.kernel.source.value);
        };
        assert_eq!(s.source, Path::new("/usr/src/linux.tar.xz"));
        assert_eq!(s.base, KernelBase::Defconfig);
        let cfg: Vec<_> = s.config.iter().map(|c| c.value.clone()).collect();
        assert_eq!(
            cfg,
            [
                PathBuf::from("app/../kernel/tiny.config"),
                PathBuf::from("/abs/extra.config")
            ]
        );
        // The span of each fragment is its string (line 4, after `config = [`).
        let d = m.error_at(s.config[1].span, "x");
        assert_eq!((d.line, d.col), (4, 36));
        // Relative source, default base.
        let m = parse("name = \"x\"\n[kernel]\nsource = \"linux\"\n").unwrap();
        let KernelSource::Source(s) = &m.kernel.source.value else {
            panic!()
        };
        assert_eq!(s.source, Path::new("app/linux"));
        assert_eq!(s.base, KernelBase::Tinyconfig);
        assert!(s.config.is_empty());
    }

    #[test]
    fn source_conflicts_with_package_and_path() {
        let text = format!("{SRC}package = \"linux-image-amd64\"\n");
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (4, 11), "{msg}");
        assert_eq!(msg, Invalid::KernelSourceConflict("package").to_string());
        let text = "name = \"x\"\n[kernel]\npath = \"/boot/vmlinuz\"\nsource = \"/src\"\n";
        let (line, col, msg) = err(text);
        assert_eq!((line, col), (4, 10), "{msg}");
        assert!(msg.contains("both `source` and `path`"), "{msg}");
    }

    #[test]
    fn config_and_base_need_source() {
        let text = with_kernel("name = \"x\"\n", "config = [\"tiny.config\"]\n");
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (4, 10), "{msg}");
        assert_eq!(msg, Invalid::OnlyWithSource("config").to_string());
        let text = with_kernel("name = \"x\"\n", "base = \"defconfig\"\n");
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (4, 8), "{msg}");
        assert_eq!(msg, Invalid::OnlyWithSource("base").to_string());
    }

    #[test]
    fn source_kernel_values_are_checked() {
        let (line, col, msg) = err(&format!("{SRC}base = \"allnoconfig\"\n"));
        assert_eq!((line, col), (4, 8), "{msg}");
        assert!(msg.contains("\"tinyconfig\" or \"defconfig\""), "{msg}");
        let (line, col, msg) = err(&format!("{SRC}config = [\"a\", \"\"]\n"));
        assert_eq!((line, col), (4, 16), "{msg}");
        assert_eq!(msg, Invalid::Empty("config").to_string());
        let (line, col, msg) = err("name = \"x\"\n[kernel]\nsource = \"\"\n");
        assert_eq!((line, col), (3, 10), "{msg}");
        assert_eq!(msg, Invalid::Empty("source").to_string());
        let (line, col, msg) = err(&format!("{SRC}modules = [\"virtio_net\"]\n"));
        assert_eq!((line, col), (4, 12), "{msg}");
        assert_eq!(msg, Invalid::ModulesWithSource.to_string());
        let (line, col, msg) = err(&format!("{SRC}modules_dir = \"/lib/modules/x\"\n"));
        assert_eq!((line, col), (4, 15), "{msg}");
        assert_eq!(msg, Invalid::ModulesDirWithoutPath.to_string());
        let (line, col, msg) = err(&format!("{SRC}config = \"tiny.config\"\n"));
        assert_eq!((line, col), (4, 10), "{msg}");
        assert!(msg.contains("config"), "{msg}");
    }

    #[test]
    fn modules_dir_needs_path() {
        let text = "name = \"x\"\n[kernel]\npackage = \"linux-image-amd64\"\nmodules_dir = \"/lib/modules/6.1\"\n";
        let (line, col, msg) = err(text);
        assert_eq!((line, col), (4, 15), "{msg}");
        assert_eq!(msg, Invalid::ModulesDirWithoutPath.to_string());
    }

    #[test]
    fn duplicate_service_points_at_second() {
        let text = with_kernel(
            "name = \"x\"\n",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n[[service]]\nname = \"a\"\nexec = [\"/b\"]\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (8, 8), "{msg}");
        assert_eq!(msg, "duplicate service name `a` (already used on line 5)");
    }

    #[test]
    fn after_unknown_service() {
        let text = with_kernel(
            "name = \"x\"\n",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nafter = [\"network-online\", \"dbb\"]\n[[service]]\nname = \"db\"\nexec = [\"/b\"]\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (7, 28), "{msg}");
        assert!(msg.contains("`dbb`"), "{msg}");
        assert!(msg.ends_with("`network-online`, `mounts`, `db`"), "{msg}");
    }

    #[test]
    fn after_cycle() {
        let text = with_kernel(
            "name = \"x\"\n",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nafter = [\"b\"]\n\n[[service]]\nname = \"b\"\nexec = [\"/b\"]\nafter = [\"mounts\", \"a\"]\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (12, 20), "{msg}");
        assert!(
            msg.ends_with("`b` starts after `a`, which starts after `b`"),
            "{msg}"
        );
    }

    #[test]
    fn after_longer_cycle_and_self() {
        let svc = |n: &str, after: &str| {
            format!("[[service]]\nname = \"{n}\"\nexec = [\"/x\"]\nafter = [{after}]\n")
        };
        let text = with_kernel(
            "name = \"x\"\n",
            &[svc("a", "\"b\""), svc("b", "\"c\""), svc("c", "\"a\"")].concat(),
        );
        let (line, _, msg) = err(&text);
        assert_eq!(line, 15, "{msg}");
        assert!(
            msg.ends_with("`c` starts after `a`, which starts after `b`, which starts after `c`"),
            "{msg}"
        );
        let text = with_kernel("name = \"x\"\n", &svc("a", "\"a\""));
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (7, 10), "{msg}");
        assert!(msg.ends_with("`a` starts after `a` (itself)"), "{msg}");
    }

    #[test]
    fn after_without_cycle_is_fine() {
        let svc = |n: &str, after: &str| {
            format!("[[service]]\nname = \"{n}\"\nexec = [\"/x\"]\nafter = [{after}]\n")
        };
        // A diamond: d waits for b and c, both wait for a.
        let text = with_kernel(
            "name = \"x\"\n",
            &[
                svc("d", "\"b\", \"c\""),
                svc("b", "\"a\""),
                svc("c", "\"a\""),
                svc("a", "\"network-online\""),
            ]
            .concat(),
        );
        let m = parse(&text).unwrap();
        assert_eq!(m.services.len(), 4);
    }

    #[test]
    fn relative_exec() {
        let text = with_kernel(
            "name = \"x\"\n",
            "[[service]]\nname = \"a\"\nexec = [ \"echo\", \"hi\"]\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (6, 10), "{msg}");
        assert!(msg.contains("absolute path"), "{msg}");
    }

    #[test]
    fn bad_mode() {
        let text = with_kernel(
            "name = \"x\"\n",
            "[[file]]\nsrc = \"a\"\ndst = \"/a\"\nmode = \"0948\"\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (7, 8), "{msg}");
        assert!(msg.contains("invalid mode `0948`"), "{msg}");

        let text = with_kernel(
            "name = \"x\"\n",
            "[[file]]\nsrc = \"a\"\ndst = \"/a\"\nmode = 644\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (7, 8), "{msg}");
        assert!(msg.contains("decimal"), "{msg}");
    }

    #[test]
    fn sign_table() {
        let m = parse(&with_kernel(
            "name = \"x\"\n",
            "[sign]\nkey = \"keys/db.key\"\ncert = \"/etc/db.pem\"\n",
        ))
        .unwrap();
        let s = m.sign.unwrap();
        assert_eq!(s.key.value, Path::new("app/keys/db.key"));
        assert_eq!(s.cert.value, Path::new("/etc/db.pem"));
        assert!(parse(&with_kernel("name = \"x\"\n", ""))
            .unwrap()
            .sign
            .is_none());
    }

    /// A valid `[update]` key (base64 of 32 bytes).
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn update_manifest(update: &str) -> String {
        with_kernel(
            "name = \"x\"\n",
            &format!(
                "[disk]\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\n[update]\n{update}"
            ),
        )
    }

    #[test]
    fn update_table() {
        let m = parse(&update_manifest(&format!(
            "version = 3\nurl = \"http://10.0.0.1:8000/r\"\nkeys = [\"{KEY}\"]\n\
             interval = \"2h\"\nhealth = {{ services = [\"app\"], for = \"45s\", network = true }}\n\
             watchdog = {{ timeout = \"20s\" }}\n"
        )))
        .unwrap();
        let u = m.update.clone().unwrap();
        assert_eq!((u.version, u.interval_s, u.health.for_s), (3, 7200, 45));
        assert_eq!(
            u.keys,
            vec!["000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"]
        );
        assert!(u.health.network);
        assert_eq!(u.watchdog.unwrap().device, "/dev/watchdog");
        assert!(m.disk.as_ref().unwrap().ab_slots);
        let sys = m.system_config(Vec::new());
        assert!(sys.services.iter().any(|s| s.name == "cairn-update"));
        assert!(sys.mounts.iter().any(|mt| mt.path == "/boot/efi"));
    }

    #[test]
    fn bad_update_table() {
        let base = format!("version = 1\nurl = \"http://10.0.0.1/\"\nkeys = [\"{KEY}\"]\n");
        // Line 9 is the first key of [update] (after name, kernel, disk, service).
        for (extra, line, col, needle) in [
            (
                "health = { services = [\"nope\"] }\n",
                12,
                24,
                "health service `nope`",
            ),
            ("interval = \"soon\"\n", 12, 12, "`interval`"),
            ("watchdog = { device = \"dog\" }\n", 12, 23, "absolute path"),
        ] {
            let (l, c, msg) = err(&update_manifest(&format!("{base}{extra}")));
            assert_eq!((l, c), (line, col), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
        let (l, c, msg) = err(&update_manifest(&format!(
            "version = 1\nurl = \"https://updates.example/\"\nkeys = [\"{KEY}\"]\n"
        )));
        assert_eq!((l, c), (10, 7), "{msg}");
        assert!(msg.contains("http://HOST[:PORT]/PATH"), "{msg}");
        let (l, _, msg) = err(&update_manifest(
            "version = 1\nurl = \"http://10.0.0.1/\"\nkeys = [\"missing.pub\"]\n",
        ));
        assert_eq!(l, 11, "{msg}");
        assert!(msg.contains("missing.pub"), "{msg}");
        let (l, _, msg) = err(&update_manifest(&format!("{}version = 0\n", "").replace(
            "version = 0\n",
            &format!("version = 0\nurl = \"http://10.0.0.1/\"\nkeys = [\"{KEY}\"]\n"),
        )));
        assert_eq!(l, 9, "{msg}");
        // Without [disk].
        let text = with_kernel("name = \"x\"\n", &format!("[update]\n{base}"));
        let (l, _, msg) = err(&text);
        assert_eq!(l, 4, "{msg}");
        assert!(msg.contains("needs a [disk]"), "{msg}");
    }

    #[test]
    fn bad_sign_table() {
        // Empty path: points at the value.
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            "[sign]\nkey = \"k\"\ncert = \"\"\n",
        ));
        assert_eq!((line, col), (6, 8), "{msg}");
        assert!(msg.contains("cert"), "{msg}");
        // Unknown key.
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            "[sign]\nkey = \"k\"\ncert = \"c\"\npassword = \"no\"\n",
        ));
        assert_eq!((line, col), (7, 1), "{msg}");
        assert!(msg.contains("unknown key `password`"), "{msg}");
        // Missing cert.
        let (line, _, msg) = err(&with_kernel("name = \"x\"\n", "[sign]\nkey = \"k\"\n"));
        assert_eq!(line, 4, "{msg}");
        assert!(msg.contains("cert"), "{msg}");
    }

    #[test]
    fn bad_hostname() {
        let (line, col, msg) = err(&with_kernel("name = \"x\"\nhostname = \"web_1\"\n", ""));
        assert_eq!((line, col), (2, 12), "{msg}");
        assert!(msg.starts_with("invalid hostname `web_1`"), "{msg}");
    }

    #[test]
    fn bad_name() {
        let (line, col, msg) = err(&with_kernel("name = \"Hello\"\n", ""));
        assert_eq!((line, col), (1, 8), "{msg}");
        assert!(msg.starts_with("invalid name `Hello`"), "{msg}");
    }

    #[test]
    fn column_counts_characters_after_multibyte_text() {
        // "é" is 2 bytes and "€" 3: the column must count them once each.
        let text = with_kernel(
            "name = \"x\"\n",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nenv = { \"É€\" = \"ü\", \"A=B\" = \"c\" }\n",
        );
        let (line, col, msg) = err(&text);
        assert_eq!((line, col), (7, 21), "{msg}");
        assert!(msg.contains("`A=B`"), "{msg}");
    }

    #[test]
    fn destinations_are_checked() {
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            "[[file]]\nsrc = \"a\"\ndst = \"/srv/../etc/passwd\"\n",
        ));
        assert_eq!((line, col), (6, 7), "{msg}");
        assert!(msg.contains("`..`"), "{msg}");
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            "[[file]]\nsrc = \"a\"\ndst = \"/usr/bin/jq\"\n[[binary]]\npath = \"/usr/bin/jq\"\n",
        ));
        assert_eq!((line, col), (8, 8), "{msg}");
        assert!(
            msg.contains("already installed by the [[file]] at line 6, column 7"),
            "{msg}"
        );
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            "[[binary]]\npath = \"bin/jq\"\n",
        ));
        assert_eq!((line, col), (5, 8), "{msg}");
        assert!(msg.contains("absolute host path"), "{msg}");
    }

    /// A `[[file]]`/`[[binary]]` may not replace, sit below, or stand in
    /// for a directory of what the builder generates; the error is at the
    /// entry's `dst` (or a binary's `path`).
    #[test]
    fn destinations_may_not_collide_with_generated_paths() {
        let file = |dst: &str| format!("[[file]]\nsrc = \"a\"\ndst = \"{dst}\"\n");
        for (dst, want) in [
            ("/init", "`/init`, the cairn-init binary"),
            ("//init", "`/init`, the cairn-init binary"),
            ("/init/x", "the file `/init`"),
            ("/usr/bin/cairnctl", "the cairnctl link"),
            (
                "/etc/cairn/system.json",
                "`/etc/cairn`: the init's runtime configuration",
            ),
            ("/etc/cairn", "`/etc/cairn`"),
            ("/etc/os-release", "os-release"),
            ("/etc/passwd", "[[user]]"),
            ("/dev/console", "a device node"),
            ("/dev/sda", "devtmpfs"),
            ("/proc/cmdline", "procfs"),
            ("/run/x.sock", "tmpfs"),
            ("/etc", "the directory `/etc`"),
            ("/usr", "the directory `/usr`, needed for `/usr/bin"),
            ("/usr/bin", "the directory `/usr/bin`"),
        ] {
            let (line, col, msg) = err(&with_kernel("name = \"x\"\n", &file(dst)));
            assert_eq!((line, col), (6, 7), "{dst}: {msg}");
            assert!(msg.contains(want), "{dst}: {msg}");
            assert!(
                msg.contains("collides with what the builder generates"),
                "{msg}"
            );
        }
        // A binary is located at its path.
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            "[[binary]]\npath = \"/usr/bin/jq\"\ndst = \"/init\"\n",
        ));
        assert_eq!((line, col), (5, 8), "{msg}");
        assert!(msg.contains("`/init`"), "{msg}");
        // /etc/hostname only when the manifest sets a host name.
        parse(&with_kernel("name = \"x\"\n", &file("/etc/hostname"))).unwrap();
        let (_, _, msg) = err(&with_kernel(
            "name = \"x\"\nhostname = \"h\"\n",
            &file("/etc/hostname"),
        ));
        assert!(msg.contains("`hostname`"), "{msg}");
        // /lib/modules only when modules are listed.
        parse(&with_kernel("name = \"x\"\n", &file("/lib/modules/x"))).unwrap();
        let text = "name = \"x\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\nmodules = [\"virtio_net\"]\n[[file]]\nsrc = \"a\"\ndst = \"/lib/modules/6.1/x.ko\"\n";
        let (line, _, msg) = err(text);
        assert_eq!(line, 7, "{msg}");
        assert!(msg.contains("kernel.modules"), "{msg}");
        // Ordinary places are fine.
        for ok in [
            "/etc/motd",
            "/usr/bin/jq",
            "/var/lib/x",
            "/etc/ssl/cert.pem",
            "/initrd",
        ] {
            parse(&with_kernel("name = \"x\"\n", &file(ok))).unwrap();
        }
    }

    /// One entry below another's file, or a file where another needs a
    /// directory: both places are named.
    #[test]
    fn destinations_may_not_nest_in_each_other() {
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            "[[file]]\nsrc = \"a\"\ndst = \"/srv/a\"\n[[file]]\nsrc = \"b\"\ndst = \"/srv/a/b\"\n",
        ));
        assert_eq!((line, col), (9, 7), "{msg}");
        assert!(
            msg.contains(
                "`/srv/a/b` is below the file installed by the [[file]] at line 6, column 7"
            ),
            "{msg}"
        );
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            "[[binary]]\npath = \"/usr/bin/jq\"\ndst = \"/opt/jq/bin\"\n[[file]]\nsrc = \"b\"\ndst = \"/opt/jq\"\n",
        ));
        assert_eq!((line, col), (9, 7), "{msg}");
        assert!(
            msg.contains(
                "would be a file where a directory is needed by the [[binary]] at line 5, column 8"
            ),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let (line, col, msg) = err("name = \"x\"\n[kernel\n");
        assert_eq!(line, 2, "{msg}");
        assert!(col > 1, "{msg}");
    }

    #[test]
    fn display_shows_source_line_and_caret() {
        let d = parse(&with_kernel("name = \"x\"\nbogus = 1\n", "")).unwrap_err();
        let shown = d.to_string();
        let mut lines = shown.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("app/cairn.toml:2:1: error: unknown key `bogus`"),
            "{shown}"
        );
        assert_eq!(lines.next(), Some("  |"), "{shown}");
        assert_eq!(lines.next(), Some("2 | bogus = 1"), "{shown}");
        assert_eq!(lines.next(), Some("  | ^^^^^"), "{shown}");
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn an_oversized_manifest_is_refused_without_reading_it_all() {
        let dir = std::env::temp_dir().join(format!("cairn-manifest-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cairn.toml");
        let big = "# x\n".repeat((MANIFEST_MAX as usize) / 4 + 1);
        std::fs::write(&path, with_kernel("name = \"x\"\n", &big)).unwrap();
        let d = Manifest::load(&path).unwrap_err();
        assert_eq!((d.line, d.col), (0, 0));
        let shown = d.to_string();
        assert!(
            shown.contains("cannot read manifest: larger than 1024 KiB; refused"),
            "{shown}"
        );
        // Just under the limit is read.
        let fits = "# x\n".repeat(1000);
        std::fs::write(&path, with_kernel("name = \"x\"\n", &fits)).unwrap();
        assert_eq!(Manifest::load(&path).unwrap().name, "x");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const SVC: &str = "[[service]]\nname = \"web\"\nexec = [\"/a\"]\n";

    #[test]
    fn config_env_lists_what_the_secondary_config_may_set() {
        let m = parse(&with_kernel(
            "name = \"x\"\n",
            &format!("{SVC}env = {{ PORT = \"80\" }}\nconfig_env = [\"GREETING\", \"PORT\"]\n"),
        ))
        .unwrap();
        assert_eq!(m.services[0].config_env, ["GREETING", "PORT"]);
        let sys = m.system_config(Vec::new());
        assert_eq!(sys.services[0].config_env, ["GREETING", "PORT"]);
        sys.assert_round_trips();
        // None by default, and then absent from system.json.
        let m = parse(&with_kernel("name = \"x\"\n", SVC)).unwrap();
        assert!(m.services[0].config_env.is_empty());
        assert!(!m.system_config(Vec::new()).to_json().contains("config_env"));
    }

    #[test]
    fn config_env_refuses_loader_and_path_keys_at_their_place() {
        // Lines: 1 name, 2-3 [kernel], 4-6 the service, 7 config_env.
        let cases: &[(&str, usize, &str)] = &[
            (
                "[\"LD_PRELOAD\"]",
                15,
                "`config_env` cannot list `LD_PRELOAD`",
            ),
            ("[\"A\", \"LD_LIBRARY_PATH\"]", 20, "`LD_LIBRARY_PATH`"),
            ("[\"LD_\"]", 15, "`LD_`"),
            ("[\"PATH\"]", 15, "`config_env` cannot list `PATH`"),
            ("[\"PYTHONPATH\"]", 15, "`PYTHONPATH`"),
            ("[\"GLIBC_TUNABLES\"]", 15, "`GLIBC_TUNABLES`"),
            ("[\"BASH_ENV\"]", 15, "`BASH_ENV`"),
            ("[\"A=B\"]", 15, "invalid environment variable name `A=B`"),
            ("[\"\"]", 15, "invalid environment variable name"),
            ("[\"A\", \"A\"]", 20, "lists `A` twice"),
        ];
        for (list, col, needle) in cases {
            let text = with_kernel("name = \"x\"\n", &format!("{SVC}config_env = {list}\n"));
            let (line, c, msg) = err(&text);
            assert_eq!((line, c), (7, *col), "{list}: {msg}");
            assert!(msg.contains(needle), "{list}: {msg}");
        }
        let (_, _, msg) = err(&with_kernel(
            "name = \"x\"\n",
            &format!("{SVC}config_env = [\"LD_PRELOAD\"]\n"),
        ));
        assert!(msg.contains("Secure Boot does not cover"), "{msg}");
        // Names that merely contain these are fine.
        let m = parse(&with_kernel(
            "name = \"x\"\n",
            &format!("{SVC}config_env = [\"OLD_PATH\", \"DATA_PATH\", \"XLD_A\"]\n"),
        ))
        .unwrap();
        assert_eq!(m.services[0].config_env.len(), 3);
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            &format!("{SVC}config_env = \"PORT\"\n"),
        ));
        assert_eq!((line, col), (7, 14), "{msg}");
        assert!(msg.contains("config_env"), "{msg}");
    }

    #[test]
    fn test_hooks_are_off_unless_asked_for() {
        let m = parse(&with_kernel("name = \"x\"\n", "")).unwrap();
        assert!(!m.test_hooks && !m.system_config(Vec::new()).test_hooks);
        assert!(!m.system_config(Vec::new()).to_json().contains("test_hooks"));
        let m = parse(&with_kernel("name = \"x\"\ntest_hooks = true\n", "")).unwrap();
        let sys = m.system_config(Vec::new());
        assert!(sys.test_hooks);
        sys.assert_round_trips();
        let (line, col, msg) = err(&with_kernel("name = \"x\"\ntest_hooks = \"yes\"\n", ""));
        assert_eq!((line, col), (2, 14), "{msg}");
        assert!(msg.contains("test_hooks"), "{msg}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let d = Manifest::load(Path::new("/nonexistent/cairn.toml")).unwrap_err();
        assert_eq!((d.line, d.col), (0, 0));
        let shown = d.to_string();
        assert!(
            shown.starts_with("/nonexistent/cairn.toml: error: cannot read manifest:"),
            "{shown}"
        );
    }

    #[test]
    fn load_reads_the_file() {
        let dir = std::env::temp_dir().join(format!("cairn-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cairn.toml");
        std::fs::write(&path, with_kernel("name = \"x\"\n", "")).unwrap();
        let m = Manifest::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        let m = m.unwrap();
        assert_eq!(m.dir, dir);
        assert_eq!(m.name, "x");
    }

    #[test]
    fn defaults() {
        let m =
            Manifest::parse(&with_kernel("name = \"x\"\n", ""), Path::new("cairn.toml")).unwrap();
        assert_eq!(m.dir, Path::new("."));
        assert_eq!(m.hostname, None);
        assert_eq!(m.on_panic, PanicAction::Continue);
        assert_eq!(m.kernel.cmdline, DEFAULT_CMDLINE);
        assert!(m.kernel.modules.is_empty());
        assert_eq!(m.compression, Compression::Zstd);
        assert!(m.services.is_empty() && m.files.is_empty() && m.binaries.is_empty());
    }

    const FULL: &str = r#"name = "hello"
hostname = "hello"
on_panic = "reboot"

[kernel]
path = "kernel/vmlinuz"
modules_dir = "/lib/modules/6.1.0-56-cloud-amd64"
cmdline = "console=ttyS0 quiet"
modules = ["virtio_net", "virtio_blk"]

[initramfs]
compression = "xz"

[[service]]
name = "greet"
exec = ["/bin/echo", "hi"]
env = { LANG = "C", GREETING = "héllo" }
restart = "on-failure"
on_exit = "poweroff"
after = ["network-online", "web"]

[[service]]
name = "web"
exec = ["/bin/busybox", "httpd", "-f"]
restart = "always"

[[file]]
src = "www/index.html"
dst = "/srv/www/index.html"

[[file]]
src = "/etc/motd"
dst = "/etc/motd"
mode = "0600"

[[binary]]
path = "/usr/bin/jq"

[[binary]]
path = "/usr/bin/jq"
dst = "/bin/jq2"
"#;

    #[test]
    fn full_manifest_into_system_config() {
        let m = parse(FULL).unwrap();
        assert_eq!(m.path, Path::new("app/cairn.toml"));
        assert_eq!(m.dir, Path::new("app"));
        assert_eq!(m.source, FULL);
        assert_eq!(m.name, "hello");
        assert_eq!(m.hostname.as_deref(), Some("hello"));
        assert_eq!(m.on_panic, PanicAction::Reboot);
        assert_eq!(
            m.kernel.source.value,
            KernelSource::Path {
                image: PathBuf::from("app/kernel/vmlinuz"),
                modules_dir: Some(PathBuf::from("/lib/modules/6.1.0-56-cloud-amd64")),
            }
        );
        assert_eq!(
            &FULL[m.kernel.source.span.start..m.kernel.source.span.end],
            "\"kernel/vmlinuz\""
        );
        assert_eq!(m.kernel.cmdline, "console=ttyS0 quiet");
        let modules: Vec<&str> = m.kernel.modules.iter().map(|m| m.value.as_str()).collect();
        assert_eq!(modules, ["virtio_net", "virtio_blk"]);
        assert_eq!(m.compression, Compression::Xz);

        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[0].src.value, Path::new("app/www/index.html"));
        assert_eq!(m.files[0].mode, 0o644);
        assert_eq!(m.files[1].src.value, Path::new("/etc/motd"));
        assert_eq!(m.files[1].mode, 0o600);
        let e = m.error_at(m.files[0].src.span, "no such file");
        assert_eq!((e.line, e.col), (28, 7));
        assert!(
            e.to_string().contains("28 | src = \"www/index.html\""),
            "{e}"
        );

        assert_eq!(m.binaries[0].path.value, Path::new("/usr/bin/jq"));
        assert_eq!(m.binaries[0].dst, "/usr/bin/jq");
        assert_eq!(m.binaries[1].dst, "/bin/jq2");

        let sys = m.system_config(vec!["/lib/modules/6.1/virtio_net.ko".into()]);
        let expected = SystemConfig {
            name: "hello".into(),
            hostname: Some("hello".into()),
            modules: vec!["/lib/modules/6.1/virtio_net.ko".into()],
            on_panic: PanicAction::Reboot,
            services: vec![
                ServiceConfig {
                    name: "greet".into(),
                    exec: vec!["/bin/echo".into(), "hi".into()],
                    env: BTreeMap::from([
                        ("GREETING".into(), "héllo".into()),
                        ("LANG".into(), "C".into()),
                    ]),
                    restart: RestartPolicy::OnFailure,
                    on_exit: Some(ExitAction::Poweroff),
                    after: vec!["network-online".into(), "web".into()],
                    ..ServiceConfig::new("greet", &[])
                },
                ServiceConfig {
                    name: "web".into(),
                    exec: vec!["/bin/busybox".into(), "httpd".into(), "-f".into()],
                    env: BTreeMap::new(),
                    restart: RestartPolicy::Always,
                    on_exit: None,
                    after: vec![],
                    ..ServiceConfig::new("web", &[])
                },
            ],
            ..Default::default()
        };
        assert_eq!(sys, expected);
        // And it survives the trip through the file baked into the image.
        sys.assert_round_trips();
    }

    #[test]
    fn package_kernel() {
        let m = parse(&with_kernel("name = \"x\"\n", "")).unwrap();
        assert_eq!(
            m.kernel.source.value,
            KernelSource::Package("linux-image-cloud-amd64".into())
        );
        let (line, col, msg) = err("name = \"x\"\n[kernel]\npackage = \"Linux\"\n");
        assert_eq!((line, col), (3, 11), "{msg}");
        let (line, col, msg) = err(&with_kernel("name = \"x\"\n", "modules = [\"a.ko\"]\n"));
        assert_eq!((line, col), (4, 12), "{msg}");
        assert!(msg.contains("`a.ko`"), "{msg}");
    }

    const MOUNT: &str = "[[partition]]\nlabel = \"DATA\"\nsize = \"8M\"\nfs = \"ext4\"\n\n[[mount]]\nlabel = \"DATA\"\npath = \"/data\"\nfs = \"ext4\"\n";

    #[test]
    fn container_service() {
        let text = with_kernel(
            "name = \"x\"\nhostname = \"box\"\n",
            &format!(
                "[disk]\n{MOUNT}\n[[service]]\nname = \"web\"\nimage = \"oci:img:v1\"\nvolumes = [\"/data/web:/srv:ro\"]\nnetwork = \"none\"\nuser = \"www:www\"\nmemory_max = \"32M\"\n"
            ),
        );
        let m = parse(&text).unwrap();
        let s = &m.services[0];
        assert!(s.exec.value.is_empty());
        let c = s.container.as_ref().unwrap();
        assert_eq!(
            c.image.value,
            crate::ImageRef::OciLayout {
                dir: "app/img".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(c.user.as_ref().unwrap().value, "www:www");
        assert_eq!(c.network, crate::ContainerNetwork::None);
        assert!(c.volumes[0].value.readonly);
        // The user is the image's: the appliance's accounts are not asked.
        assert_eq!(s.run.user, None);
        assert_eq!(s.run.memory_max, Some(32 << 20));
        // A container with volumes waits for the mounts.
        let sys = m.system_config(vec![]);
        assert_eq!(sys.services[0].after, ["mounts"]);
    }

    #[test]
    fn container_keys_are_checked_where_they_are() {
        let svc = |extra: &str| {
            with_kernel(
                "name = \"x\"\n",
                &format!("[disk]\n{MOUNT}\n[[service]]\nname = \"web\"\n{extra}"),
            )
        };
        // Lines: 1 name, 2-3 kernel, 4 [disk], 5-8 partition, 9 blank,
        // 10-13 mount, 14 blank, 15 [[service]], 16 name, 17 on.
        let (line, col, msg) = err(&svc("image = \"oci:i\"\nvolumes = [\"/var/x:/x\"]\n"));
        assert_eq!((line, col), (18, 12), "{msg}");
        assert!(msg.contains("not under the path of a [[mount]]"), "{msg}");
        let (line, _, msg) = err(&svc("image = \"docker://busybox\"\n"));
        assert_eq!(line, 17, "{msg}");
        assert!(msg.contains("invalid `image`"), "{msg}");
        let (line, _, msg) = err(&svc("image = \"oci:i\"\nnetwork = \"bridge\"\n"));
        assert_eq!(line, 18, "{msg}");
        assert!(msg.contains("\"host\" or \"none\""), "{msg}");
        let (line, _, msg) = err(&svc("image = \"oci:i\"\ngroups = [\"audio\"]\n"));
        assert_eq!(line, 18, "{msg}");
        assert!(
            msg.contains("`groups` is not supported together with `image`"),
            "{msg}"
        );
        let (line, _, msg) = err(&svc("volumes = [\"/data/a:/a\"]\nexec = [\"/a\"]\n"));
        assert_eq!(line, 17, "{msg}");
        assert!(
            msg.contains("`volumes` is only allowed together with `image`"),
            "{msg}"
        );
        let (line, _, msg) = err(&svc("restart = \"always\"\n"));
        assert_eq!(line, 15, "{msg}");
        assert!(msg.contains("needs `exec`, or an `image`"), "{msg}");
        let (line, _, msg) = err(&svc("exec = [\"/a\"]\ninit = true\n"));
        assert_eq!(line, 18, "{msg}");
        assert!(
            msg.contains("`init` is only allowed together with `image`"),
            "{msg}"
        );
        // A relative exec is fine in a container (PATH inside it).
        parse(&svc(
            "image = \"oci:i\"\nexec = [\"sh\", \"-c\", \"true\"]\n",
        ))
        .unwrap();
    }

    #[test]
    fn container_storage_and_memory() {
        use crate::container::ImageStorage;
        let text = |head: &str, disk: &str, svc: &str| {
            with_kernel(
                &format!("name = \"x\"\n{head}"),
                &format!("{disk}[[service]]\nname = \"web\"\nimage = \"oci:i\"\n{svc}"),
            )
        };
        let m = parse(&text(
            "memory = \"64M\"\n",
            "[disk]\n",
            "storage = \"erofs\"\n",
        ))
        .unwrap();
        assert_eq!(m.memory, Some(64 << 20));
        let c = m.services[0].container.as_ref().unwrap();
        assert_eq!(c.storage.value, ImageStorage::Erofs);
        // The disk's partition and filesystem modules come with it.
        let implied = m.implied_modules(&crate::implied::FatDefaults::default());
        assert!(implied
            .iter()
            .any(|i| i.name == "erofs" && i.reason == "[[service]] web (storage = erofs)"));
        assert!(implied.iter().any(|i| i.name == "virtio_blk"));
        let m = parse(&text("", "", "")).unwrap();
        assert_eq!(m.memory, None);
        let c = m.services[0].container.as_ref().unwrap();
        assert_eq!(c.storage.value, ImageStorage::Initramfs);
        assert!(!m
            .implied_modules(&crate::implied::FatDefaults::default())
            .iter()
            .any(|i| i.name == "erofs"));
        // Lines: 1 name, 2 head (if any), then kernel (2), [[service]],
        // name, image, storage.
        let (line, col, msg) = err(&text("", "", "storage = \"erofs\"\n"));
        assert_eq!((line, col), (7, 11), "{msg}");
        assert!(msg.contains("add a [disk] table"), "{msg}");
        let (line, col, msg) = err(&text("", "[disk]\n", "storage = \"squash\"\n"));
        assert_eq!((line, col), (8, 11), "{msg}");
        assert!(msg.contains("\"initramfs\" or \"erofs\""), "{msg}");
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            "[[service]]\nname = \"w\"\nexec = [\"/a\"]\nstorage = \"erofs\"\n",
        ));
        assert_eq!((line, col), (7, 11), "{msg}");
        assert!(
            msg.contains("`storage` is only allowed together with `image`"),
            "{msg}"
        );
        let long = "a".repeat(33);
        let (line, col, msg) = err(&with_kernel(
            "name = \"x\"\n",
            &format!(
                "[disk]\n[[service]]\nname = \"{long}\"\nimage = \"oci:i\"\nstorage = \"erofs\"\n"
            ),
        ));
        assert_eq!((line, col), (6, 8), "{msg}");
        assert!(msg.contains("too long for storage = \"erofs\""), "{msg}");
        let (line, col, msg) = err(&text("memory = \"64X\"\n", "", ""));
        assert_eq!((line, col), (2, 10), "{msg}");
        assert!(msg.contains("invalid size"), "{msg}");
    }
}
