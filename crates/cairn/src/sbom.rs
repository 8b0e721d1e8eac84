//! `cairn build --sbom`: an SPDX 2.3 JSON document listing every file that
//! went into the image (each regular file of the initramfs, and the kernel)
//! with its checksums, its origin and, where known, its licence.
//!
//! Origins come from the build report: host files are traced to the Debian
//! package that owns them (`/var/lib/dpkg/info/*.list`, version from
//! `/var/lib/dpkg/status`), licences from the package's machine-readable
//! `/usr/share/doc/PKG/copyright` (`License:` fields). The kernel from
//! source is GPL-2.0-only; cairn-init carries the workspace licence.
//! The document is deterministic: sorted, no wall-clock time (the creation
//! date is `SOURCE_DATE_EPOCH`, else 1970-01-01).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cairn_image::cpio::Archive;
use cairn_image::kernel::Kernel;
use serde_json::json;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::report::ReportLine;

/// The licence of the crates of this workspace (cairn-init).
pub const WORKSPACE_LICENSE: &str = env!("CARGO_PKG_LICENSE");

/// Where a file came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// A file of an installed Debian package (or a downloaded kernel package).
    Debian { package: String, version: String },
    /// The cairn-init crate of this workspace.
    Crate { name: String, version: String },
    /// A kernel built from this source.
    KernelSource { source: String },
    /// A host file no package owns, or a file from the manifest.
    Host { path: String },
    /// Written by cairn (system.json, os-release, ...).
    Generated,
}

/// Debian package data read from the dpkg database.
#[derive(Debug, Default)]
pub struct Dpkg {
    /// Installed path -> owning package (without `:arch`).
    owners: BTreeMap<String, String>,
    /// Package -> version.
    versions: BTreeMap<String, String>,
    /// Root of the file system (`/`), for `usr/share/doc`.
    root: PathBuf,
    /// Packages fetched for `[[package]]`: name -> extracted tree (for
    /// their `usr/share/doc/NAME/copyright`).
    fetched: BTreeMap<String, PathBuf>,
}

impl Dpkg {
    /// Reads `ROOT/var/lib/dpkg`; an unreadable database gives an empty one.
    pub fn load(root: &Path) -> Dpkg {
        let mut d = Dpkg {
            root: root.to_path_buf(),
            ..Dpkg::default()
        };
        let info = root.join("var/lib/dpkg/info");
        if let Ok(rd) = std::fs::read_dir(&info) {
            let mut lists: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "list"))
                .collect();
            lists.sort();
            for l in lists {
                let stem = l.file_stem().unwrap_or_default().to_string_lossy();
                let pkg = stem.split(':').next().unwrap_or_default().to_string();
                if let Ok(text) = std::fs::read_to_string(&l) {
                    for line in text.lines() {
                        d.owners
                            .entry(line.to_string())
                            .or_insert_with(|| pkg.clone());
                    }
                }
            }
        }
        if let Ok(status) = std::fs::read_to_string(root.join("var/lib/dpkg/status")) {
            d.versions = parse_status(&status);
        }
        d
    }

    /// The package owning `path` (trying the `/usr`-merged spelling too).
    pub fn owner(&self, path: &Path) -> Option<&str> {
        let p = path.to_string_lossy();
        let alt = match p.strip_prefix("/usr") {
            Some(rest) => rest.to_string(),
            None => format!("/usr{p}"),
        };
        self.owners
            .get(p.as_ref())
            .or_else(|| self.owners.get(&alt))
            .map(String::as_str)
    }

    pub fn version(&self, package: &str) -> Option<&str> {
        self.versions.get(package).map(String::as_str)
    }

    /// SPDX licence expression from the package's machine-readable
    /// copyright file, or `None`.
    /// Adds the packages fetched for `[[package]]` (name, extracted tree).
    pub fn with_fetched(mut self, fetched: impl IntoIterator<Item = (String, PathBuf)>) -> Dpkg {
        self.fetched.extend(fetched);
        self
    }

    pub fn license(&self, package: &str) -> Option<String> {
        let root = self.fetched.get(package).unwrap_or(&self.root);
        let text =
            std::fs::read_to_string(root.join("usr/share/doc").join(package).join("copyright"))
                .ok()?;
        license_from_copyright(&text)
    }
}

/// `Package:` -> `Version:` of installed packages in a dpkg status file.
pub fn parse_status(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for para in text.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
        if let (Some(p), Some(v), true) = (field("Package:"), field("Version:"), installed) {
            out.insert(p, v);
        }
    }
    out
}

/// The licences named in a machine-readable Debian copyright file
/// (`Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/`),
/// joined into one SPDX expression with `AND`; `None` for free-form files.
pub fn license_from_copyright(text: &str) -> Option<String> {
    if !text.starts_with("Format:") {
        return None;
    }
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("License:") {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            // "GPL-2+ or Artistic" -> each alternative.
            for part in v.split([' ', ',']).filter(|t| !t.is_empty()) {
                match part.to_ascii_lowercase().as_str() {
                    "or" | "and" | "with" | "|" => {}
                    _ => {
                        names.insert(spdx_id(part));
                    }
                }
            }
        }
    }
    if names.is_empty() {
        None
    } else {
        Some(names.into_iter().collect::<Vec<_>>().join(" AND "))
    }
}

/// Debian short licence names to SPDX identifiers; unknown ones become
/// `LicenseRef-` identifiers.
pub fn spdx_id(debian: &str) -> String {
    let known = [
        ("GPL-2", "GPL-2.0-only"),
        ("GPL-2+", "GPL-2.0-or-later"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("GPL-3", "GPL-3.0-only"),
        ("GPL-3+", "GPL-3.0-or-later"),
        ("LGPL-2.1", "LGPL-2.1-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("LGPL-3+", "LGPL-3.0-or-later"),
        ("Expat", "MIT"),
        ("MIT", "MIT"),
        ("BSD-2-clause", "BSD-2-Clause"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("BSD-4-clause", "BSD-4-Clause"),
        ("ISC", "ISC"),
        ("Apache-2.0", "Apache-2.0"),
        ("Zlib", "Zlib"),
        ("public-domain", "LicenseRef-public-domain"),
        ("CC-BY-3.0", "CC-BY-3.0"),
    ];
    if let Some((_, id)) = known.iter().find(|(d, _)| d.eq_ignore_ascii_case(debian)) {
        return id.to_string();
    }
    let clean: String = debian
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("LicenseRef-{clean}")
}

/// Works out the origin of each image path from the build report.
pub fn origins(
    inputs: &[ReportLine],
    kernel: &Kernel,
    dpkg: &Dpkg,
) -> (BTreeMap<String, Origin>, Origin) {
    let debian_origin = |host: &Path| match dpkg.owner(host) {
        Some(pkg) => Origin::Debian {
            package: pkg.to_string(),
            version: dpkg.version(pkg).unwrap_or("unknown").to_string(),
        },
        None => Origin::Host {
            path: host.display().to_string(),
        },
    };
    let kernel_origin = if let Some(rest) = kernel.origin.strip_prefix("debian:") {
        let (package, version) = rest.split_once(' ').unwrap_or((rest, "unknown"));
        Origin::Debian {
            package: package.to_string(),
            version: version.to_string(),
        }
    } else if let Some(rest) = kernel.origin.strip_prefix("source:") {
        Origin::KernelSource {
            source: rest.to_string(),
        }
    } else {
        debian_origin(&kernel.image)
    };
    let mut map = BTreeMap::new();
    for l in inputs {
        let path = l.what.trim_start_matches('/').to_string();
        let o = if let Some(h) = l.origin.strip_prefix("host ") {
            debian_origin(Path::new(h))
        } else if l.origin.starts_with("module ") {
            kernel_origin.clone()
        } else if l.origin.starts_with("cairn-init ") {
            Origin::Crate {
                name: "cairn-init".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }
        } else if let Some(rest) = l.origin.strip_prefix("package ") {
            let (package, version) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            Origin::Debian {
                package: package.to_string(),
                version: version.to_string(),
            }
        } else if let Some(f) = l.origin.strip_prefix("file ") {
            Origin::Host {
                path: f.to_string(),
            }
        } else {
            continue;
        };
        map.insert(path, o);
    }
    (map, kernel_origin)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spdx_ref(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn date(epoch: u32) -> String {
    cairn_manifest::date::utc(u64::from(epoch))
}

/// An OCI image a service runs, as the SBOM lists it: a package whose
/// files are those under `root`.
#[derive(Debug, Clone)]
pub struct ContainerImage {
    /// The service's name.
    pub service: String,
    /// The image reference as the manifest wrote it.
    pub reference: String,
    /// Where its root filesystem is in the initramfs (no leading `/`).
    pub root: String,
    pub manifest_digest: Option<String>,
    pub config_digest: String,
    /// The image config's Entrypoint, Cmd, Env, User, WorkingDir as run.
    pub config: String,
    /// (digest, media type) of each layer, in order.
    pub layers: Vec<(String, String)>,
}

/// The SPDX 2.3 JSON document for an image.
#[allow(clippy::too_many_arguments)]
pub fn document(
    name: &str,
    archive: &Archive,
    vmlinuz: &[u8],
    origins: &BTreeMap<String, Origin>,
    kernel_origin: &Origin,
    dpkg: &Dpkg,
    images: &[ContainerImage],
    epoch: u32,
) -> String {
    let mut files = Vec::new();
    // Each package's files in the image: (SPDX id, SHA-1 hex).
    let mut packages: BTreeMap<Origin, Vec<(String, String)>> = BTreeMap::new();
    let mut add = |file_name: String, data: &[u8], origin: Origin| {
        let id = format!("SPDXRef-File-{}", spdx_ref(&file_name));
        let licence = licence_of(&origin, dpkg);
        let sha1 = hex(&Sha1::digest(data));
        files.push(json!({
            "SPDXID": id,
            "fileName": file_name,
            "checksums": [
                {"algorithm": "SHA1", "checksumValue": sha1},
                {"algorithm": "SHA256", "checksumValue": hex(&Sha256::digest(data))},
            ],
            "licenseConcluded": "NOASSERTION",
            "licenseInfoInFiles": [licence.clone().unwrap_or_else(|| "NOASSERTION".into())],
            "copyrightText": "NOASSERTION",
            "comment": format!("origin: {}", describe(&origin)),
        }));
        if !matches!(origin, Origin::Host { .. } | Origin::Generated) {
            packages
                .entry(origin)
                .or_default()
                .push((id.clone(), sha1.clone()));
        }
        (id, sha1)
    };
    add("./vmlinuz".into(), vmlinuz, kernel_origin.clone());
    // Each container image's files: (SPDX id, SHA-1 hex).
    let mut image_files: Vec<Vec<(String, String)>> = vec![Vec::new(); images.len()];
    let mut entries: Vec<_> = archive
        .entries()
        .filter(|e| e.mode & 0o170000 == 0o100000)
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    for e in entries {
        let path = e.path.trim_start_matches('/');
        let origin = origins.get(path).cloned().unwrap_or(Origin::Generated);
        let file = add(format!("./{path}"), &e.data, origin);
        if let Some(i) = images
            .iter()
            .position(|im| path.starts_with(&format!("{}/", im.root)))
        {
            image_files[i].push(file);
        }
    }
    let mut pkgs = Vec::new();
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Appliance",
    })];
    pkgs.push(json!({
        "SPDXID": "SPDXRef-Appliance",
        "name": name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING-SYSTEM",
    }));
    for (origin, ids) in &packages {
        let (pname, version, purl) = match origin {
            Origin::Debian { package, version } => (
                package.clone(),
                version.clone(),
                Some(format!("pkg:deb/debian/{package}@{version}?arch=amd64")),
            ),
            Origin::Crate { name, version } => (
                name.clone(),
                version.clone(),
                Some(format!("pkg:cargo/{name}@{version}")),
            ),
            Origin::KernelSource { source } => {
                ("linux".to_string(), source.clone(), None::<String>)
            }
            Origin::Host { .. } | Origin::Generated => continue,
        };
        let id = format!("SPDXRef-Package-{}", spdx_ref(&pname));
        // The package element stands for what of the package is in the
        // image, and those files were analysed (hashed): SPDX 2.3 allows
        // CONTAINS relationships to files only then, and asks for the
        // verification code over them (SHA-1 of their sorted SHA-1s).
        let code = verification_code(ids);
        let mut p = json!({
            "SPDXID": id,
            "name": pname,
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": true,
            "packageVerificationCode": {"packageVerificationCodeValue": code},
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": licence_of(origin, dpkg).unwrap_or_else(|| "NOASSERTION".into()),
            "copyrightText": "NOASSERTION",
        });
        if let Some(purl) = purl {
            p["externalRefs"] = json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }]);
        }
        pkgs.push(p);
        rels.push(json!({
            "spdxElementId": "SPDXRef-Appliance",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
        for (f, _) in ids {
            rels.push(json!({
                "spdxElementId": id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": f,
            }));
        }
    }
    for (im, ids) in images.iter().zip(&image_files) {
        let id = format!("SPDXRef-Container-{}", spdx_ref(&im.service));
        let layers: Vec<String> = im
            .layers
            .iter()
            .map(|(d, mt)| format!("{d} ({mt})"))
            .collect();
        let mut p = json!({
            "SPDXID": id,
            "name": im.reference,
            "versionInfo": im.manifest_digest.clone().unwrap_or_else(|| im.config_digest.clone()),
            "downloadLocation": "NOASSERTION",
            // Its files in the image were analysed (see the packages above).
            "filesAnalyzed": true,
            "packageVerificationCode": {"packageVerificationCodeValue": verification_code(ids)},
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "CONTAINER",
            "comment": format!(
                "service {}; config {}: {}; layers: {}",
                im.service,
                im.config_digest,
                im.config,
                layers.join(", ")
            ),
        });
        let digest = im.manifest_digest.as_deref().unwrap_or(&im.config_digest);
        if let Some(hex) = digest.strip_prefix("sha256:") {
            p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": hex}]);
        }
        p["externalRefs"] = json!([{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!("pkg:oci/{}@{}", spdx_ref(&im.service).to_lowercase(), digest.replace(':', "%3A")),
        }]);
        pkgs.push(p);
        rels.push(json!({
            "spdxElementId": "SPDXRef-Appliance",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
        for (f, _) in ids {
            rels.push(json!({
                "spdxElementId": id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": f,
            }));
        }
    }
    let body = json!({
        "files": files,
        "packages": pkgs,
        "relationships": rels,
    });
    let digest = hex(&Sha256::digest(body.to_string().as_bytes()));
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://cairn.invalid/spdx/{name}-{}", &digest[..32]),
        "creationInfo": {
            "created": date(epoch),
            "creators": [format!("Tool: cairn-{}", env!("CARGO_PKG_VERSION"))],
        },
        "documentDescribes": ["SPDXRef-Appliance"],
        "packages": body["packages"],
        "files": body["files"],
        "relationships": body["relationships"],
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// SPDX 2.3's package verification code: the SHA-1 of the sorted SHA-1s
/// (hex) of the package's files, concatenated.
fn verification_code(files: &[(String, String)]) -> String {
    let mut sums: Vec<&str> = files.iter().map(|(_, sha1)| sha1.as_str()).collect();
    sums.sort_unstable();
    hex(&Sha1::digest(sums.concat().as_bytes()))
}

fn licence_of(origin: &Origin, dpkg: &Dpkg) -> Option<String> {
    match origin {
        Origin::Debian { package, .. } if package.starts_with("linux-image") => {
            Some("GPL-2.0-only".into())
        }
        Origin::Debian { package, .. } => dpkg.license(package),
        Origin::Crate { .. } => Some(WORKSPACE_LICENSE.replace('/', " OR ")),
        Origin::KernelSource { .. } => Some("GPL-2.0-only".into()),
        Origin::Host { .. } | Origin::Generated => None,
    }
}

fn describe(o: &Origin) -> String {
    match o {
        Origin::Debian { package, version } => format!("debian package {package} {version}"),
        Origin::Crate { name, version } => format!("crate {name} {version}"),
        Origin::KernelSource { source } => format!("kernel built from {source}"),
        Origin::Host { path } => format!("host file {path}"),
        Origin::Generated => "generated by cairn".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn machine_readable_copyright_licences() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+ or Artistic\n\nFiles: x\nLicense: Expat\n Permission is...\nLicense: BSD-3-clause\n";
        assert_eq!(
            license_from_copyright(text).as_deref(),
            Some("BSD-3-Clause AND GPL-2.0-or-later AND LicenseRef-Artistic AND MIT")
        );
        assert_eq!(license_from_copyright("This is free-form text.\n"), None);
    }

    #[test]
    fn dpkg_status_versions_of_installed_packages() {
        let text = "Package: jq\nStatus: install ok installed\nVersion: 1.6-2.1\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        let v = parse_status(text);
        assert_eq!(v.get("jq").map(String::as_str), Some("1.6-2.1"));
        assert!(!v.contains_key("gone"));
    }

    #[test]
    fn dates_from_epoch() {
        assert_eq!(date(0), "1970-01-01T00:00:00Z");
        assert_eq!(date(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn document_lists_files_with_origins_deterministically() {
        let mut a = Archive::default();
        a.add_file("/init", 0o755, b"init".to_vec()).unwrap();
        a.add_file("/etc/os-release", 0o644, b"NAME=cairn\n".to_vec())
            .unwrap();
        a.add_file("/usr/bin/jq", 0o755, b"jq".to_vec()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
        std::fs::write(root.join("var/lib/dpkg/info/jq.list"), "/usr/bin/jq\n").unwrap();
        std::fs::write(
            root.join("var/lib/dpkg/status"),
            "Package: jq\nStatus: install ok installed\nVersion: 1.6-2.1\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("usr/share/doc/jq")).unwrap();
        std::fs::write(
            root.join("usr/share/doc/jq/copyright"),
            "Format: https://x/\n\nFiles: *\nLicense: Expat\n",
        )
        .unwrap();
        let dpkg = Dpkg::load(root);
        let inputs = vec![
            ReportLine {
                what: "/init".into(),
                origin: "cairn-init /x/cairn-init".into(),
                bytes: 4,
            },
            ReportLine {
                what: "/usr/bin/jq".into(),
                origin: "host /usr/bin/jq".into(),
                bytes: 2,
            },
        ];
        let kernel = Kernel {
            image: "/k".into(),
            version: "6.1".into(),
            modules_dir: None,
            origin: "source:/usr/src/linux.tar.xz (tinyconfig)".into(),
        };
        let (map, ko) = origins(&inputs, &kernel, &dpkg);
        let doc = document("t", &a, b"kernel", &map, &ko, &dpkg, &[], 0);
        assert_eq!(doc, document("t", &a, b"kernel", &map, &ko, &dpkg, &[], 0));
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        let files = v["files"].as_array().unwrap();
        let names: Vec<&str> = files
            .iter()
            .map(|f| f["fileName"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["./vmlinuz", "./etc/os-release", "./init", "./usr/bin/jq"]
        );
        let jq = &files[3];
        assert_eq!(jq["comment"], "origin: debian package jq 1.6-2.1");
        assert_eq!(jq["licenseInfoInFiles"][0], "MIT");
        assert_eq!(
            jq["checksums"][1]["checksumValue"],
            hex(&Sha256::digest(b"jq"))
        );
        assert_eq!(files[0]["licenseInfoInFiles"][0], "GPL-2.0-only");
        assert_eq!(files[1]["comment"], "origin: generated by cairn");
        assert_eq!(files[2]["licenseInfoInFiles"][0], "MIT OR Apache-2.0");
        let pkgs: Vec<&str> = v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(pkgs, ["t", "jq", "cairn-init", "linux"]);
    }
}
