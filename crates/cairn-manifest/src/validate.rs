//! Checks on single manifest values, and the messages for everything the
//! manifest can get wrong after it parsed as TOML.

use thiserror::Error;

/// Targets a service may name in `after` besides other services.
pub const TARGETS: [&str; 2] = ["network-online", "mounts"];

/// Longest hostname Linux accepts (`HOST_NAME_MAX`).
pub const HOSTNAME_MAX: usize = 64;

/// Longest appliance name (it becomes part of output file names).
pub const NAME_MAX: usize = 64;

/// Longest kernel command line on x86 (`COMMAND_LINE_SIZE` less the NUL).
pub const CMDLINE_MAX: usize = 2047;

/// Everything a well-formed TOML manifest can still get wrong.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("invalid name `{0}`: expected lowercase letters, digits and `-`, starting with a letter or digit, at most {NAME_MAX} characters (it names the output files)")]
    Name(String),
    #[error("invalid hostname `{0}`: expected dot-separated labels of letters, digits and `-` (each 1-63 characters, not starting or ending with `-`), at most {HOSTNAME_MAX} characters in all")]
    Hostname(String),
    #[error("arch = \"arm64\" images cannot have {0} yet: cairn builds arm64 images as a kernel and an initramfs (NAME.vmlinuz, NAME.initrd) only")]
    NotForArm64(&'static str),
    #[error("[kernel] needs a kernel: set `package` (a Debian kernel package), `path` (a kernel image) or `source` (a kernel source tarball or tree to build)")]
    KernelMissing,
    #[error(
        "[kernel] has both `source` and `{0}`; set exactly one of `package`, `path` and `source`"
    )]
    KernelSourceConflict(&'static str),
    #[error("`{0}` is only allowed together with `source` (a kernel built from source)")]
    OnlyWithSource(&'static str),
    #[error("invalid `base` `{0}`: expected \"tinyconfig\" or \"defconfig\"")]
    KernelBase(String),
    #[error("a kernel built from `source` has no modules: build the drivers in with a `config` fragment (CONFIG_X=y) and remove `modules`")]
    ModulesWithSource,
    #[error("[kernel] has both `package` and `path`; set exactly one")]
    KernelBoth,
    #[error("`modules_dir` is only allowed together with `path` (a kernel package brings its own modules)")]
    ModulesDirWithoutPath,
    #[error("invalid Debian package name `{0}`: expected lowercase letters, digits and `+-.`, at least 2 characters, starting with a letter or digit")]
    PackageName(String),
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    #[error("`{0}` must not contain a NUL character")]
    Nul(&'static str),
    #[error("`cmdline` must not contain control characters such as newlines")]
    CmdlineControl,
    #[error("`cmdline` is {0} bytes long; the kernel accepts at most {CMDLINE_MAX}")]
    CmdlineTooLong(usize),
    #[error("invalid module name `{0}`: expected letters, digits, `_` and `-` (a name like `virtio_net`, not a file name)")]
    ModuleName(String),
    #[error("invalid service name `{0}`: expected letters, digits and `_.-`")]
    ServiceName(String),
    #[error("service name `{0}` is reserved for a target that services can wait for with `after`")]
    ReservedServiceName(String),
    #[error("duplicate service name `{name}` (already used on line {first_line})")]
    DuplicateService { name: String, first_line: usize },
    #[error("`exec` must name at least the program to run")]
    EmptyExec,
    #[error("`exec[0]` must be an absolute path inside the image, like `/bin/{0}`; got `{0}`")]
    RelativeExec(String),
    #[error("invalid environment variable name `{0}`: it must be non-empty and contain neither `=` nor NUL")]
    EnvName(String),
    #[error("`config_env` cannot list `{name}`: {reason}; the secondary config lives on a partition Secure Boot does not cover, so it may never set it (set it in `env` here instead)")]
    ConfigEnvForbidden { name: String, reason: &'static str },
    #[error("`config_env` lists `{name}` twice")]
    ConfigEnvDuplicate { name: String },
    #[error("`after` names `{name}`, which is neither a service nor a target; expected one of: {expected}")]
    UnknownAfter { name: String, expected: String },
    #[error("`after` makes services wait for each other in a cycle: {0}")]
    Cycle(String),
    #[error("invalid `{key}` `{path}`: {reason}")]
    Destination {
        key: &'static str,
        path: String,
        reason: &'static str,
    },
    #[error("`{dst}` {how} the {kind} at {first} (each image path has one source)")]
    DuplicateDestination {
        dst: String,
        how: &'static str,
        kind: &'static str,
        first: String,
    },
    #[error(
        "`{dst}` collides with what the builder generates: {what}; choose another destination"
    )]
    GeneratedDestination { dst: String, what: String },
    #[error("invalid mode `{0}`: expected a string of octal digits such as \"0644\" or \"0755\", at most \"7777\"")]
    Mode(String),
    #[error("`mode` must be a string such as \"0644\": a bare TOML number would be read as decimal, {0} is {0:#o} in octal")]
    ModeNumber(i64),
    #[error("`mode` must be a string of octal digits such as \"0644\", found {0}")]
    ModeType(&'static str),
    #[error(
        "`path` of a [[binary]] must be an absolute host path, like `/usr/bin/{0}`; got `{0}`"
    )]
    RelativeBinary(String),
    #[error("`files` of a [[package]] must list at least one path inside the package, like \"/usr/sbin/dnsmasq\"")]
    PackageNoFiles,
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskInvalid),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkInvalid),
    #[error(transparent)]
    Run(#[from] crate::supervision::RunInvalid),
    #[error(transparent)]
    Shell(#[from] crate::shell::ShellInvalid),
    #[error(transparent)]
    Container(#[from] crate::container::ContainerInvalid),
    #[error(transparent)]
    Update(#[from] crate::update::UpdateInvalid),
    #[error(transparent)]
    Netboot(#[from] crate::netboot::NetbootInvalid),
}

/// `[a-z0-9][a-z0-9-]*`, at most [`NAME_MAX`] characters.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && name.len() <= NAME_MAX {
        Ok(())
    } else {
        Err(Invalid::Name(name.to_string()))
    }
}

/// RFC 1123 host name: dot-separated labels of `[A-Za-z0-9-]`, 1-63
/// characters each, not starting or ending with `-`; at most
/// [`HOSTNAME_MAX`] characters.
pub fn check_hostname(host: &str) -> Result<(), Invalid> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.len() <= HOSTNAME_MAX && host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(Invalid::Hostname(host.to_string()))
    }
}

/// Debian policy: `[a-z0-9][a-z0-9+.-]+`.
pub fn check_package(name: &str) -> Result<(), Invalid> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if first_ok && rest_ok && name.len() >= 2 {
        Ok(())
    } else {
        Err(Invalid::PackageName(name.to_string()))
    }
}

/// A host path given in the manifest: non-empty and without NUL.
pub fn check_host_path(key: &'static str, path: &str) -> Result<(), Invalid> {
    if path.is_empty() {
        Err(Invalid::Empty(key))
    } else if path.contains('\0') {
        Err(Invalid::Nul(key))
    } else {
        Ok(())
    }
}

pub fn check_cmdline(cmdline: &str) -> Result<(), Invalid> {
    if cmdline.chars().any(char::is_control) {
        Err(Invalid::CmdlineControl)
    } else if cmdline.len() > CMDLINE_MAX {
        Err(Invalid::CmdlineTooLong(cmdline.len()))
    } else {
        Ok(())
    }
}

/// Module names as `modprobe` takes them: `[A-Za-z0-9_-]+`.
pub fn check_module(name: &str) -> Result<(), Invalid> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(Invalid::ModuleName(name.to_string()))
    }
}

/// `[a-zA-Z0-9_.-]+`, not `.`/`..` (names may become file names), not a target.
pub fn check_service_name(name: &str) -> Result<(), Invalid> {
    if TARGETS.contains(&name) {
        return Err(Invalid::ReservedServiceName(name.to_string()));
    }
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if chars_ok && !name.is_empty() && name != "." && name != ".." {
        Ok(())
    } else {
        Err(Invalid::ServiceName(name.to_string()))
    }
}

/// The program to run must be an absolute path; no argument may hold NUL.
pub fn check_exec(exec: &[String]) -> Result<(), Invalid> {
    let Some(program) = exec.first() else {
        return Err(Invalid::EmptyExec);
    };
    if exec.iter().any(|a| a.contains('\0')) {
        return Err(Invalid::Nul("exec"));
    }
    if program.starts_with('/') {
        Ok(())
    } else {
        Err(Invalid::RelativeExec(program.clone()))
    }
}

pub fn check_env_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        Err(Invalid::EnvName(name.to_string()))
    } else {
        Ok(())
    }
}

/// Environment variables that choose code a program loads or runs (the
/// dynamic loader's, glibc's, shells' and common interpreters'), or files
/// it writes as its user: a secondary config may never set them, whatever
/// `config_env` says. Names starting with one of [`NEVER_FROM_CONFIG_PREFIXES`]
/// are refused too.
pub const NEVER_FROM_CONFIG: &[&str] = &[
    "PATH",
    // glibc (its list of variables it drops for setuid programs)
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
    // shells
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "IFS",
    "CDPATH",
    // interpreters and runtimes
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONINSPECT",
    "PERL5LIB",
    "PERLLIB",
    "PERL5OPT",
    "RUBYLIB",
    "RUBYOPT",
    "NODE_OPTIONS",
    "NODE_PATH",
    "LUA_INIT",
    "LUA_PATH",
    "LUA_CPATH",
    "CLASSPATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "GIO_EXTRA_MODULES",
    "GTK_MODULES",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
];

/// Prefixes of names a secondary config may never set: the dynamic
/// loader's (`LD_PRELOAD`, `LD_LIBRARY_PATH`, `LD_AUDIT`, ...), glibc's
/// tunables, and bash's exported functions.
pub const NEVER_FROM_CONFIG_PREFIXES: &[&str] = &["LD_", "GLIBC_", "BASH_FUNC_"];

/// Why `name` may never come from a secondary config, if it may not.
pub fn never_from_config(name: &str) -> Option<&'static str> {
    if NEVER_FROM_CONFIG_PREFIXES
        .iter()
        .any(|p| name.starts_with(p))
    {
        Some("the dynamic loader, glibc and bash take code or settings from variables named like this")
    } else if NEVER_FROM_CONFIG.contains(&name) {
        Some("it chooses code the program loads or runs, or where it writes")
    } else {
        None
    }
}

/// A `config_env` entry: a valid name that a secondary config may set.
pub fn check_config_env(name: &str) -> Result<(), Invalid> {
    check_env_name(name)?;
    match never_from_config(name) {
        Some(reason) => Err(Invalid::ConfigEnvForbidden {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A path inside the image: absolute, not `/`, no `..` component, no NUL.
pub fn check_destination(key: &'static str, path: &str) -> Result<(), Invalid> {
    let reason = if !path.starts_with('/') {
        "expected an absolute path inside the image"
    } else if path.split('/').any(|c| c == "..") {
        "`..` is not allowed"
    } else if path.split('/').all(|c| c.is_empty() || c == ".") {
        "the image root itself cannot be replaced"
    } else if path.contains('\0') {
        "a NUL character is not allowed"
    } else {
        return Ok(());
    };
    Err(Invalid::Destination {
        key,
        path: path.to_string(),
        reason,
    })
}

/// An octal permission string such as `"0644"`: digits 0-7, at most `0o7777`.
pub fn parse_mode(text: &str) -> Result<u32, Invalid> {
    let bad = || Invalid::Mode(text.to_string());
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(bad()),
    }
}

/// The `mode` value as written: a string is parsed, anything else refused
/// with a message that says why.
pub fn mode_from_value(value: &toml::Value) -> Result<u32, Invalid> {
    match value {
        toml::Value::String(s) => parse_mode(s),
        toml::Value::Integer(n) => Err(Invalid::ModeNumber(*n)),
        other => Err(Invalid::ModeType(other.type_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["hello", "a", "0day", "web-1"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Hello", "-a", "a_b", "a.b", "é", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        for ok in ["hello", "Web-1", "a.example.org", &"a".repeat(63)] {
            assert_eq!(check_hostname(ok), Ok(()), "{ok}");
        }
        let long = format!("{}.{}", "a".repeat(40), "b".repeat(30));
        for bad in ["", "-a", "a-", "a..b", "a_b", "a.", &"a".repeat(64), &long] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn packages() {
        assert_eq!(check_package("linux-image-cloud-amd64"), Ok(()));
        assert_eq!(check_package("g++"), Ok(()));
        for bad in ["", "a", "Linux", "-x", "a b", "a_b"] {
            assert!(check_package(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cmdline() {
        assert_eq!(check_cmdline("console=ttyS0 quiet"), Ok(()));
        assert_eq!(check_cmdline("a\nb"), Err(Invalid::CmdlineControl));
        assert_eq!(
            check_cmdline(&"x".repeat(2048)),
            Err(Invalid::CmdlineTooLong(2048))
        );
    }

    #[test]
    fn modules() {
        assert_eq!(check_module("virtio_net"), Ok(()));
        assert_eq!(check_module("virtio-net"), Ok(()));
        for bad in ["", "virtio_net.ko", "a/b", "a b"] {
            assert!(check_module(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_names() {
        for ok in ["greet", "My_svc.2", "a-b"] {
            assert_eq!(check_service_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_service_name("mounts"),
            Err(Invalid::ReservedServiceName("mounts".into()))
        );
        for bad in ["", ".", "..", "a b", "a/b"] {
            assert!(check_service_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exec() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_exec(&v(&["/bin/echo", "hi"])), Ok(()));
        assert_eq!(check_exec(&[]), Err(Invalid::EmptyExec));
        assert_eq!(
            check_exec(&v(&["echo"])),
            Err(Invalid::RelativeExec("echo".into()))
        );
        assert_eq!(
            check_exec(&v(&["/bin/x", "a\0"])),
            Err(Invalid::Nul("exec"))
        );
    }

    #[test]
    fn env_names() {
        assert_eq!(check_env_name("LANG"), Ok(()));
        for bad in ["", "A=B", "A\0"] {
            assert!(check_env_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn destinations() {
        assert_eq!(check_destination("dst", "/srv/www/index.html"), Ok(()));
        for bad in ["srv/x", "/", "//", "/./", "/srv/../etc/passwd", "/a\0"] {
            assert!(check_destination("dst", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        for bad in [
            "",
            "0o644",
            "0944",
            "rw-r--r--",
            "17777",
            "-644",
            "99999999999",
        ] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
        assert_eq!(
            mode_from_value(&toml::Value::Integer(644)),
            Err(Invalid::ModeNumber(644))
        );
        assert_eq!(
            mode_from_value(&toml::Value::Boolean(true)),
            Err(Invalid::ModeType("boolean"))
        );
    }
}
