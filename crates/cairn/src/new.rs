//! `cairn new DIR [--template NAME]`: a commented manifest (and whatever
//! files it names) that builds and boots as it is, to start an appliance
//! from. The templates live in `crates/cairn/templates/` and are compiled
//! in; `@NAME@` in them becomes the appliance name.

use std::io::Write;
use std::path::{Path, PathBuf};

/// One template: its manifest and the other files it names.
pub struct Template {
    pub name: &'static str,
    /// One line for `--help` and the listing.
    pub about: &'static str,
    manifest: &'static str,
    /// (path relative to the new directory, contents)
    files: &'static [(&'static str, &'static str)],
    /// The command that boots it, printed after writing (`{m}` is the
    /// manifest's path).
    run: &'static str,
}

/// Every template, `hello` first (the default).
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "hello",
        about: "one service prints a greeting, then the machine powers off",
        manifest: include_str!("../templates/hello.toml"),
        files: &[],
        run: "cairn run {m}",
    },
    Template {
        name: "net",
        about: "DHCP on every NIC; a service prints the lease and DNS, then powers off",
        manifest: include_str!("../templates/net.toml"),
        files: &[],
        run: "cairn run {m}",
    },
    Template {
        name: "web",
        about: "a static web server (BusyBox httpd) on port 80 once the network is up",
        manifest: include_str!("../templates/web.toml"),
        files: &[("www/index.html", include_str!("../templates/web/www/index.html"))],
        run: "cairn run {m} --net none -- -netdev user,id=n0,ipv6=off,hostfwd=tcp:127.0.0.1:8080-:80 -device virtio-net-pci,netdev=n0",
    },
    Template {
        name: "disk",
        about: "a GPT disk image with a data partition formatted on first boot",
        manifest: include_str!("../templates/disk.toml"),
        files: &[],
        run: "cairn run {m} --disk",
    },
];

/// The manifest's file name in the new directory.
pub const MANIFEST: &str = "cairn.toml";

/// The manifest's JSON Schema (`schema/cairn.schema.json`), written beside
/// a new manifest under this name and named by its first line, so editors
/// with a TOML language server (taplo, Even Better TOML) complete and
/// check its keys.
pub const SCHEMA_FILE: &str = "cairn.schema.json";
pub const SCHEMA: &str = include_str!("../../../schema/cairn.schema.json");
/// The secondary config's JSON Schema (`schema/cairn-config.schema.json`).
pub const CONFIG_SCHEMA: &str = include_str!("../../../schema/cairn-config.schema.json");

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error("unknown template `{0}`; there are: {1}")]
    UnknownTemplate(String, String),
    #[error(
        "{0} already exists; refusing to overwrite it (choose another directory, or move it away)"
    )]
    Exists(PathBuf),
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn template(name: &str) -> Result<&'static Template, NewError> {
    TEMPLATES.iter().find(|t| t.name == name).ok_or_else(|| {
        let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
        NewError::UnknownTemplate(name.to_string(), names.join(", "))
    })
}

/// The appliance name for directory `dir`: its last component, lowercased,
/// with every character outside `[a-z0-9-]` turned into `-` (runs of them
/// folded, none at either end), at most 64 characters; `fallback` when
/// nothing is left.
pub fn appliance_name(dir: &Path, fallback: &str) -> String {
    let base = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .or_else(|| dir.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut name = String::new();
    for c in base.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (name.is_empty() || name.ends_with('-')) {
            continue;
        }
        name.push(c);
    }
    name.truncate(64);
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() {
        fallback.to_string()
    } else {
        name
    }
}

/// What `new` wrote, and what to do next (its Display).
pub struct Created {
    pub manifest: PathBuf,
    /// Every file written, the manifest first.
    pub written: Vec<PathBuf>,
    /// Files the template has that were already there and were left alone.
    pub kept: Vec<PathBuf>,
    pub name: String,
    template: &'static Template,
}

impl std::fmt::Display for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "new appliance `{}` from template `{}` ({})",
            self.name, self.template.name, self.template.about
        )?;
        for p in &self.written {
            writeln!(f, "  wrote {}", p.display())?;
        }
        for p in &self.kept {
            writeln!(f, "  kept  {} (it was already there)", p.display())?;
        }
        writeln!(f)?;
        writeln!(f, "Build and boot it in QEMU (Ctrl-A X quits):")?;
        writeln!(
            f,
            "  {}",
            self.template
                .run
                .replace("{m}", &self.manifest.display().to_string())
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Then change it: the comments at the top of {} say what to change next;",
            self.manifest.display()
        )?;
        writeln!(
            f,
            "`cairn build` checks every key and names file:line:col when one is wrong."
        )
    }
}

/// Writes template `template` into `dir` (created if missing). Refuses,
/// before writing anything, when `dir/cairn.toml` exists; the template's
/// other files are written only where nothing is.
pub fn new(dir: &Path, template_name: &str) -> Result<Created, NewError> {
    let t = template(template_name)?;
    let manifest = dir.join(MANIFEST);
    if manifest.exists() || manifest.is_symlink() {
        return Err(NewError::Exists(manifest));
    }
    std::fs::create_dir_all(dir).map_err(|source| NewError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    let name = appliance_name(dir, t.name);
    let fill = |s: &str| s.replace("@NAME@", &name);
    // The manifest first, with create_new: if it appeared meanwhile, stop.
    let text = format!("#:schema ./{SCHEMA_FILE}\n{}", fill(t.manifest));
    write_new(&manifest, &text)?;
    let mut written = vec![manifest.clone()];
    let mut kept = Vec::new();
    let schema = [(SCHEMA_FILE, SCHEMA)];
    for (rel, text) in t.files.iter().chain(&schema) {
        let p = dir.join(rel);
        if p.exists() {
            kept.push(p);
            continue;
        }
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|source| NewError::Create {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        write_new(&p, &fill(text))?;
        written.push(p);
    }
    Ok(Created {
        manifest,
        written,
        kept,
        name,
        template: t,
    })
}

fn write_new(path: &Path, text: &str) -> Result<(), NewError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                NewError::Exists(path.to_path_buf())
            } else {
                NewError::Create {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| NewError::Create {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_directories() {
        assert_eq!(
            appliance_name(Path::new("/x/My App_2"), "hello"),
            "my-app-2"
        );
        assert_eq!(appliance_name(Path::new("/x/--a--b--"), "hello"), "a-b");
        assert_eq!(appliance_name(Path::new("/x/___"), "hello"), "hello");
        assert_eq!(appliance_name(Path::new("/x/Été"), "hello"), "t");
        let long = "a".repeat(80);
        assert_eq!(appliance_name(Path::new(&long), "hello").len(), 64);
    }

    /// Every template parses and validates as a manifest (host paths such
    /// as /bin/busybox are checked by the builder, not here).
    #[test]
    fn every_template_is_a_valid_manifest() {
        for t in TEMPLATES {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().join(format!("my-{}", t.name));
            let c = new(&d, t.name).unwrap();
            assert_eq!(c.name, format!("my-{}", t.name));
            let m = cairn_manifest::Manifest::load(&c.manifest)
                .unwrap_or_else(|e| panic!("template {}: {e}", t.name));
            assert_eq!(m.name, c.name);
            let text = std::fs::read_to_string(&c.manifest).unwrap();
            assert!(!text.contains("@NAME@"), "{text}");
            assert!(text.starts_with("#:schema ./cairn.schema.json\n"), "{text}");
            let schema = std::fs::read_to_string(d.join(SCHEMA_FILE)).unwrap();
            assert_eq!(schema, SCHEMA);
            assert!(text.contains("What to change next"), "{}", t.name);
            for f in &m.files {
                assert!(f.src.value.exists(), "{}: {:?}", t.name, f.src.value);
            }
        }
    }

    #[test]
    fn refuses_to_overwrite_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join(MANIFEST);
        std::fs::write(&m, "mine").unwrap();
        let e = new(dir.path(), "web").err().unwrap();
        assert!(matches!(e, NewError::Exists(ref p) if *p == m), "{e}");
        assert!(e.to_string().contains("refusing to overwrite"));
        assert_eq!(std::fs::read_to_string(&m).unwrap(), "mine");
        // Nothing else was written either.
        assert!(!dir.path().join("www").exists());
    }

    #[test]
    fn keeps_existing_files_beside_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        let page = dir.path().join("www/index.html");
        std::fs::write(&page, "my page").unwrap();
        let c = new(dir.path(), "web").unwrap();
        assert_eq!(c.kept, vec![page.clone()]);
        assert_eq!(std::fs::read_to_string(&page).unwrap(), "my page");
        assert!(c.to_string().contains("kept"));
    }

    #[test]
    fn unknown_template_lists_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let e = new(dir.path(), "nope").err().unwrap().to_string();
        assert!(e.contains("hello, net, web, disk"), "{e}");
    }
}
