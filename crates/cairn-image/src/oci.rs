//! OCI images read offline: an `oci-archive` (a tar holding an OCI image
//! layout), an OCI layout directory and a `docker-archive` (`docker save`).
//!
//! Every blob is checked against the digest and size its descriptor gives
//! (docker archives have no descriptors: the config against the digest in
//! its name, each layer against the config's `rootfs.diff_ids`). The
//! layers (tar, gzip or zstd) are applied in order into an in-memory tree
//! ([`Tree`]) with OCI whiteouts (`.wh.NAME` removes `NAME` of the layers
//! below, `.wh..wh..opq` empties its directory of them), keeping modes,
//! owners, symlinks, hard links and device nodes. A path with `..`, one
//! that goes through a symlink (how an absolute or relative symlink would
//! carry a later write out of the root), a hard link to something outside
//! the tree, an unknown media type, a missing blob and a digest or size
//! mismatch are refused, each with the image and the blob named.
//!
//! The tree goes into the initramfs with [`Tree::add_to_archive`]; it is
//! sorted, so the same image gives the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_manifest::ImageRef;
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};

use crate::cpio;

/// Largest blob (compressed or not) and largest image tree read: an
/// appliance's initramfs lives in RAM.
pub const MAX_BLOB: u64 = 1 << 30;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFIFO: u32 = 0o010_000;

const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// What went wrong with an image; [`OciError`] adds which image and blob.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OciProblem {
    #[error("cannot read: {0}")]
    Io(String),
    #[error("blob is missing from the image")]
    MissingBlob,
    #[error("digest mismatch: the content hashes to {actual}")]
    DigestMismatch { actual: String },
    #[error("size mismatch: the descriptor says {expected} bytes, the blob has {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("unsupported digest `{0}`: expected sha256:HEX or sha512:HEX")]
    BadDigest(String),
    #[error("unknown media type `{0}`")]
    UnknownMediaType(String),
    #[error("{0}")]
    Json(String),
    #[error("{0}")]
    Choice(String),
    #[error("layer entry `{path}`: {reason}")]
    Entry { path: String, reason: String },
    #[error("larger than {} MiB; refused", MAX_BLOB >> 20)]
    TooLarge,
}

/// An image problem, with the image (as the manifest names it) and the
/// blob or file it is in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("image {image}{}: {problem}", blob.as_ref().map(|b| format!(", {b}")).unwrap_or_default())]
pub struct OciError {
    pub image: String,
    pub blob: Option<String>,
    pub problem: OciProblem,
}

/// The parts of the image config a container runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
}

/// One applied layer, for the SBOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// A read image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference as the manifest wrote it.
    pub reference: String,
    /// Digest of the image manifest (`None` for a docker archive, which has
    /// none).
    pub manifest_digest: Option<String>,
    /// Digest of the config blob (the image ID).
    pub config_digest: String,
    pub config: RunConfig,
    pub layers: Vec<LayerInfo>,
    pub tree: Tree,
}

/// The kind of a tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    /// A regular file; hard links share the `Arc`.
    File(Arc<Vec<u8>>),
    Symlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// For a hard link: the path it was linked to.
    pub link_to: Option<String>,
}

/// A root filesystem: normalized relative paths (no leading `/`) to nodes.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
}

fn problem(image: &str, blob: Option<&str>, problem: OciProblem) -> OciError {
    OciError {
        image: image.to_string(),
        blob: blob.map(String::from),
        problem,
    }
}

/// Reads the image `reference` names.
pub fn read(reference: &ImageRef) -> Result<Image, OciError> {
    let name = reference.to_string();
    match reference {
        ImageRef::OciArchive(path) => {
            let files = read_tar_files(&name, path)?;
            let store = Store::Files(files);
            read_oci(&name, &store, None)
        }
        ImageRef::OciLayout { dir, tag } => {
            let store = Store::Dir(dir.clone());
            read_oci(&name, &store, tag.as_deref())
        }
        ImageRef::DockerArchive(path) => {
            let files = read_tar_files(&name, path)?;
            read_docker(&name, &Store::Files(files))
        }
    }
}

/// Where the files of an image are.
enum Store {
    /// Regular files of an archive, by normalized path.
    Files(BTreeMap<String, Vec<u8>>),
    Dir(PathBuf),
}

impl Store {
    fn file(&self, image: &str, path: &str) -> Result<Vec<u8>, OciError> {
        let missing = || problem(image, Some(path), OciProblem::MissingBlob);
        match self {
            Store::Files(f) => f
                .get(&normalize(path).ok_or_else(missing)?)
                .cloned()
                .ok_or_else(missing),
            Store::Dir(d) => {
                let rel = normalize(path).ok_or_else(missing)?;
                let p = d.join(rel);
                let meta = std::fs::symlink_metadata(&p).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => missing(),
                    _ => problem(image, Some(path), OciProblem::Io(e.to_string())),
                })?;
                if !meta.is_file() {
                    return Err(missing());
                }
                if meta.len() > MAX_BLOB {
                    return Err(problem(image, Some(path), OciProblem::TooLarge));
                }
                std::fs::read(&p)
                    .map_err(|e| problem(image, Some(path), OciProblem::Io(e.to_string())))
            }
        }
    }

    /// The blob `digest`, checked against it and against `size`.
    fn blob(&self, image: &str, digest: &str, size: Option<u64>) -> Result<Vec<u8>, OciError> {
        let (alg, hex) = split_digest(digest)
            .ok_or_else(|| problem(image, Some(digest), OciProblem::BadDigest(digest.into())))?;
        let data = self
            .file(image, &format!("blobs/{alg}/{hex}"))
            .map_err(|e| OciError {
                blob: Some(digest.to_string()),
                ..e
            })?;
        if let Some(expected) = size {
            if data.len() as u64 != expected {
                return Err(problem(
                    image,
                    Some(digest),
                    OciProblem::SizeMismatch {
                        expected,
                        actual: data.len() as u64,
                    },
                ));
            }
        }
        check_digest(image, digest, &data)?;
        Ok(data)
    }
}

fn split_digest(digest: &str) -> Option<(&str, &str)> {
    let (alg, hex) = digest.split_once(':')?;
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    (hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some((alg, hex))
}

fn hash(alg: &str, data: &[u8]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    match alg {
        "sha512" => format!("sha512:{}", hex(&Sha512::digest(data))),
        _ => format!("sha256:{}", hex(&Sha256::digest(data))),
    }
}

fn check_digest(image: &str, digest: &str, data: &[u8]) -> Result<(), OciError> {
    let (alg, _) = split_digest(digest)
        .ok_or_else(|| problem(image, Some(digest), OciProblem::BadDigest(digest.into())))?;
    let actual = hash(alg, data);
    if actual != digest {
        return Err(problem(
            image,
            Some(digest),
            OciProblem::DigestMismatch { actual },
        ));
    }
    Ok(())
}

/// `./a//b/` -> `a/b`; `None` for `..` anywhere or an empty result.
fn normalize(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn read_tar_files(image: &str, path: &Path) -> Result<BTreeMap<String, Vec<u8>>, OciError> {
    let io = |e: std::io::Error| problem(image, None, OciProblem::Io(e.to_string()));
    let f = std::fs::File::open(path).map_err(io)?;
    let mut files = BTreeMap::new();
    let mut ar = tar::Archive::new(f);
    for entry in ar.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = normalize(&name) else {
            continue;
        };
        if entry.size() > MAX_BLOB {
            return Err(problem(image, Some(&name), OciProblem::TooLarge));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(io)?;
        files.insert(name, data);
    }
    Ok(files)
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ManifestJson {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
struct ConfigJson {
    #[serde(default)]
    config: Option<ContainerJson>,
    #[serde(default)]
    rootfs: Option<RootfsJson>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerJson {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
}

#[derive(Deserialize, Default)]
struct RootfsJson {
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn json<T: for<'de> Deserialize<'de>>(image: &str, blob: &str, data: &[u8]) -> Result<T, OciError> {
    serde_json::from_slice(data).map_err(|e| {
        problem(
            image,
            Some(blob),
            OciProblem::Json(format!("not valid JSON of the expected shape: {e}")),
        )
    })
}

fn read_oci(image: &str, store: &Store, tag: Option<&str>) -> Result<Image, OciError> {
    let index: Index = json(image, "index.json", &store.file(image, "index.json")?)?;
    let mut desc = pick(image, "index.json", index.manifests, tag)?;
    // Nested indexes (multi-platform images): follow to a manifest.
    for _ in 0..4 {
        if desc.media_type != MT_OCI_INDEX && desc.media_type != MT_DOCKER_LIST {
            break;
        }
        let data = store.blob(image, &desc.digest, Some(desc.size))?;
        let nested: Index = json(image, &desc.digest, &data)?;
        let _ = nested.media_type;
        desc = pick(image, &desc.digest, nested.manifests, None)?;
    }
    if desc.media_type != MT_OCI_MANIFEST && desc.media_type != MT_DOCKER_MANIFEST {
        return Err(problem(
            image,
            Some(&desc.digest),
            OciProblem::UnknownMediaType(desc.media_type),
        ));
    }
    let data = store.blob(image, &desc.digest, Some(desc.size))?;
    let manifest: ManifestJson = json(image, &desc.digest, &data)?;
    if let Some(mt) = &manifest.media_type {
        if mt != MT_OCI_MANIFEST && mt != MT_DOCKER_MANIFEST {
            return Err(problem(
                image,
                Some(&desc.digest),
                OciProblem::UnknownMediaType(mt.clone()),
            ));
        }
    }
    let cfg_desc = &manifest.config;
    if !matches!(
        cfg_desc.media_type.as_str(),
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    ) {
        return Err(problem(
            image,
            Some(&cfg_desc.digest),
            OciProblem::UnknownMediaType(cfg_desc.media_type.clone()),
        ));
    }
    let cfg_bytes = store.blob(image, &cfg_desc.digest, Some(cfg_desc.size))?;
    let cfg: ConfigJson = json(image, &cfg_desc.digest, &cfg_bytes)?;
    let diff_ids = cfg
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .unwrap_or_default();
    let mut tree = Tree::default();
    let mut layers = Vec::new();
    for (i, l) in manifest.layers.iter().enumerate() {
        let compression = layer_compression(&l.media_type).ok_or_else(|| {
            problem(
                image,
                Some(&l.digest),
                OciProblem::UnknownMediaType(l.media_type.clone()),
            )
        })?;
        let blob = store.blob(image, &l.digest, Some(l.size))?;
        let tar = decompress(image, &l.digest, compression, &blob)?;
        if let Some(diff) = diff_ids.get(i) {
            check_digest(image, diff, &tar).map_err(|e| OciError {
                blob: Some(format!("{} (uncompressed, rootfs.diff_ids[{i}])", l.digest)),
                ..e
            })?;
        }
        tree.apply_layer(&tar)
            .map_err(|p| problem(image, Some(&l.digest), p))?;
        layers.push(LayerInfo {
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
        });
    }
    Ok(Image {
        reference: image.to_string(),
        manifest_digest: Some(desc.digest),
        config_digest: cfg_desc.digest.clone(),
        config: run_config(cfg.config.unwrap_or_default()),
        layers,
        tree,
    })
}

fn run_config(c: ContainerJson) -> RunConfig {
    RunConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        user: c.user.filter(|u| !u.is_empty()),
        workdir: c.working_dir.filter(|w| !w.is_empty()),
    }
}

/// The manifest of `manifests` to use: the one tagged `tag`, else the only
/// one (or the only linux/amd64 one).
fn pick(
    image: &str,
    place: &str,
    manifests: Vec<Descriptor>,
    tag: Option<&str>,
) -> Result<Descriptor, OciError> {
    const REF: &str = "org.opencontainers.image.ref.name";
    let tags: Vec<String> = manifests
        .iter()
        .filter_map(|m| m.annotations.get(REF).cloned())
        .collect();
    let mut chosen: Vec<Descriptor> = match tag {
        Some(t) => manifests
            .into_iter()
            .filter(|m| {
                m.annotations
                    .get(REF)
                    .is_some_and(|r| r == t || r.rsplit_once(':').is_some_and(|(_, x)| x == t))
            })
            .collect(),
        None => manifests,
    };
    if chosen.len() > 1 {
        chosen.retain(
            |m| !matches!(&m.platform, Some(p) if p.os != "linux" || p.architecture != "amd64"),
        );
    }
    match chosen.len() {
        1 => Ok(chosen.remove(0)),
        0 => Err(problem(
            image,
            Some(place),
            OciProblem::Choice(match tag {
                Some(t) => format!("no manifest tagged `{t}` (tags: {})", tags.join(", ")),
                None => "lists no image manifest".into(),
            }),
        )),
        n => Err(problem(
            image,
            Some(place),
            OciProblem::Choice(format!(
                "lists {n} manifests; name one as oci:DIR:TAG (tags: {})",
                tags.join(", ")
            )),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
    /// Docker archives do not say: look at the magic bytes.
    Detect,
}

fn layer_compression(media_type: &str) -> Option<Compression> {
    let base = media_type.replace(".nondistributable", "").replace(
        "application/vnd.oci.image.layer.nondistributable",
        "application/vnd.oci.image.layer",
    );
    Some(match base.as_str() {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        _ => return None,
    })
}

fn decompress(image: &str, blob: &str, c: Compression, data: &[u8]) -> Result<Vec<u8>, OciError> {
    let c = match c {
        Compression::Detect if data.starts_with(&[0x1f, 0x8b]) => Compression::Gzip,
        Compression::Detect if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) => Compression::Zstd,
        Compression::Detect => Compression::None,
        c => c,
    };
    let fail = |e: std::io::Error| {
        problem(
            image,
            Some(blob),
            OciProblem::Io(format!("cannot decompress layer: {e}")),
        )
    };
    let mut out = Vec::new();
    match c {
        Compression::None | Compression::Detect => return Ok(data.to_vec()),
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(data)
                .take(MAX_BLOB + 1)
                .read_to_end(&mut out)
                .map_err(fail)?;
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(data)
                .map_err(fail)?
                .take(MAX_BLOB + 1)
                .read_to_end(&mut out)
                .map_err(fail)?;
        }
    }
    if out.len() as u64 > MAX_BLOB {
        return Err(problem(image, Some(blob), OciProblem::TooLarge));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn read_docker(image: &str, store: &Store) -> Result<Image, OciError> {
    let list: Vec<DockerManifest> =
        json(image, "manifest.json", &store.file(image, "manifest.json")?)?;
    let [m] = <[DockerManifest; 1]>::try_from(list).map_err(|l| {
        problem(
            image,
            Some("manifest.json"),
            OciProblem::Choice(format!(
                "holds {} images; save one image per archive",
                l.len()
            )),
        )
    })?;
    let _ = &m.repo_tags;
    let cfg_bytes = store.file(image, &m.config)?;
    // The config's name is its digest: `HEX.json` or `blobs/sha256/HEX`.
    let stem = m
        .config
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".json");
    let config_digest = format!("sha256:{stem}");
    if split_digest(&config_digest).is_none() {
        return Err(problem(
            image,
            Some(&m.config),
            OciProblem::BadDigest(m.config.clone()),
        ));
    }
    check_digest(image, &config_digest, &cfg_bytes).map_err(|e| OciError {
        blob: Some(m.config.clone()),
        ..e
    })?;
    let cfg: ConfigJson = json(image, &m.config, &cfg_bytes)?;
    let diff_ids = cfg
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .unwrap_or_default();
    if diff_ids.len() != m.layers.len() {
        return Err(problem(
            image,
            Some(&m.config),
            OciProblem::Json(format!(
                "rootfs.diff_ids lists {} layers, manifest.json {}",
                diff_ids.len(),
                m.layers.len()
            )),
        ));
    }
    let mut tree = Tree::default();
    let mut layers = Vec::new();
    for (path, diff) in m.layers.iter().zip(&diff_ids) {
        let blob = store.file(image, path)?;
        let tar = decompress(image, path, Compression::Detect, &blob)?;
        check_digest(image, diff, &tar).map_err(|e| OciError {
            blob: Some(format!("{path} ({diff})")),
            ..e
        })?;
        tree.apply_layer(&tar)
            .map_err(|p| problem(image, Some(path), p))?;
        layers.push(LayerInfo {
            digest: diff.clone(),
            size: tar.len() as u64,
            media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
        });
    }
    Ok(Image {
        reference: image.to_string(),
        manifest_digest: None,
        config_digest,
        config: run_config(cfg.config.unwrap_or_default()),
        layers,
        tree,
    })
}

impl Tree {
    fn remove_below(&mut self, dir: &str, keep: &BTreeSet<String>) {
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .filter(|k| !keep.contains(k))
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    fn remove(&mut self, path: &str) {
        self.nodes.remove(path);
        self.remove_below(path, &BTreeSet::new());
    }

    /// Applies one uncompressed layer tar.
    pub fn apply_layer(&mut self, tar_bytes: &[u8]) -> Result<(), OciProblem> {
        let io = |e: std::io::Error| OciProblem::Io(format!("layer tar: {e}"));
        let mut ar = tar::Archive::new(tar_bytes);
        // Paths this layer has added: whiteouts only remove lower layers'.
        let mut added: BTreeSet<String> = BTreeSet::new();
        for entry in ar.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let raw = entry.path_bytes().into_owned();
            let raw = String::from_utf8(raw).map_err(|e| OciProblem::Entry {
                path: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                reason: "the name is not UTF-8".into(),
            })?;
            let bad = |reason: &str| OciProblem::Entry {
                path: raw.clone(),
                reason: reason.to_string(),
            };
            if raw.contains('\0') {
                return Err(bad("NUL in the name"));
            }
            if raw.split('/').any(|c| c == "..") {
                return Err(bad("`..` would leave the image root"));
            }
            let ty = entry.header().entry_type();
            if matches!(ty, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
                continue;
            }
            let Some(path) = normalize(&raw) else {
                // The root itself ("./"): nothing to keep.
                continue;
            };
            let (parent, base) = match path.rsplit_once('/') {
                Some((p, b)) => (Some(p.to_string()), b.to_string()),
                None => (None, path.clone()),
            };
            // No write may go through a symlink (or a non-directory).
            if let Some(p) = &parent {
                let mut prefix = String::new();
                for c in p.split('/') {
                    if !prefix.is_empty() {
                        prefix.push('/');
                    }
                    prefix.push_str(c);
                    match self.nodes.get(&prefix).map(|n| &n.kind) {
                        Some(NodeKind::Dir) | None => {}
                        Some(NodeKind::Symlink(t)) => {
                            return Err(bad(&format!(
                                "goes through the symlink `{prefix}` -> `{t}`, which could lead out of the image root"
                            )))
                        }
                        Some(_) => return Err(bad(&format!("`{prefix}` is not a directory"))),
                    }
                }
            }
            if base == ".wh..wh..opq" {
                if let Some(p) = &parent {
                    self.remove_below(p, &added);
                } else {
                    let keep = added.clone();
                    self.nodes.retain(|k, _| keep.contains(k));
                }
                continue;
            }
            if let Some(name) = base.strip_prefix(".wh.") {
                if name.is_empty() {
                    return Err(bad("empty whiteout name"));
                }
                let victim = match &parent {
                    Some(p) => format!("{p}/{name}"),
                    None => name.to_string(),
                };
                if !added.contains(&victim) {
                    self.remove(&victim);
                }
                continue;
            }
            let h = entry.header();
            let mode = h.mode().map_err(io)? & 0o7777;
            let uid = u32::try_from(h.uid().map_err(io)?).map_err(|_| bad("uid out of range"))?;
            let gid = u32::try_from(h.gid().map_err(io)?).map_err(|_| bad("gid out of range"))?;
            let dev = || -> Result<(u32, u32), OciProblem> {
                Ok((
                    h.device_major().map_err(io)?.unwrap_or(0),
                    h.device_minor().map_err(io)?.unwrap_or(0),
                ))
            };
            let mut link_to = None;
            let kind = match ty {
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if entry.size() > MAX_BLOB {
                        return Err(OciProblem::TooLarge);
                    }
                    let mut data = Vec::with_capacity(entry.size() as usize);
                    entry.read_to_end(&mut data).map_err(io)?;
                    NodeKind::File(Arc::new(data))
                }
                tar::EntryType::Symlink => {
                    let t = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    if t.is_empty() || t.contains('\0') {
                        return Err(bad("empty symlink target"));
                    }
                    NodeKind::Symlink(t)
                }
                tar::EntryType::Link => {
                    let t = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let target = normalize(&t)
                        .filter(|_| !t.split('/').any(|c| c == ".."))
                        .ok_or_else(|| bad(&format!("hard link to `{t}` leaves the image root")))?;
                    match self.nodes.get(&target) {
                        Some(
                            n @ Node {
                                kind: NodeKind::File(_),
                                ..
                            },
                        ) => {
                            let n = n.clone();
                            link_to = Some(n.link_to.clone().unwrap_or(target));
                            self.insert(&path, Node { link_to, ..n }, &mut added);
                            continue;
                        }
                        _ => {
                            return Err(bad(&format!(
                                "hard link to `{t}`, which is not a regular file of the image"
                            )))
                        }
                    }
                }
                tar::EntryType::Char => {
                    let (a, b) = dev()?;
                    NodeKind::Char(a, b)
                }
                tar::EntryType::Block => {
                    let (a, b) = dev()?;
                    NodeKind::Block(a, b)
                }
                tar::EntryType::Fifo => NodeKind::Fifo,
                other => return Err(bad(&format!("unsupported tar entry type {other:?}"))),
            };
            self.insert(
                &path,
                Node {
                    kind,
                    mode,
                    uid,
                    gid,
                    link_to,
                },
                &mut added,
            );
        }
        Ok(())
    }

    fn insert(&mut self, path: &str, node: Node, added: &mut BTreeSet<String>) {
        let is_dir = node.kind == NodeKind::Dir;
        match self.nodes.get_mut(path) {
            // A directory over a directory keeps what is below it.
            Some(existing) if existing.kind == NodeKind::Dir && is_dir => *existing = node,
            Some(existing) if existing.kind == NodeKind::Dir => {
                self.remove(path);
                self.nodes.insert(path.to_string(), node);
            }
            _ => {
                self.nodes.insert(path.to_string(), node);
            }
        }
        added.insert(path.to_string());
    }

    /// Total bytes of file data (hard links counted once).
    pub fn data_size(&self) -> u64 {
        self.nodes
            .values()
            .filter(|n| n.link_to.is_none())
            .map(|n| match &n.kind {
                NodeKind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// The path `n` is a hard link to, when that path still holds the same
    /// file (a later layer may have replaced it).
    pub fn live_link<'a>(&self, n: &'a Node) -> Option<&'a String> {
        n.link_to.as_ref().filter(|t| {
            matches!((&n.kind, self.nodes.get(*t).map(|t| &t.kind)),
                (NodeKind::File(a), Some(NodeKind::File(b))) if Arc::ptr_eq(a, b))
        })
    }

    /// Adds the tree to `archive` under `root` (an absolute path).
    pub fn add_to_archive(
        &self,
        archive: &mut cpio::Archive,
        root: &str,
    ) -> Result<(), cpio::CpioError> {
        archive.add_dir(root, 0o755)?;
        let full = |p: &str| format!("{root}/{p}");
        // Parents first (sorted order), hard links after their targets.
        let mut links = Vec::new();
        for (path, n) in &self.nodes {
            let (ty, data) = match &n.kind {
                NodeKind::Dir => (S_IFDIR, Vec::new()),
                NodeKind::File(d) => (S_IFREG, d.as_ref().clone()),
                NodeKind::Symlink(t) => (S_IFLNK, t.as_bytes().to_vec()),
                NodeKind::Char(..) => (S_IFCHR, Vec::new()),
                NodeKind::Block(..) => (S_IFBLK, Vec::new()),
                NodeKind::Fifo => (S_IFIFO, Vec::new()),
            };
            let mode = if ty == S_IFLNK { 0o777 } else { n.mode };
            let mut e = cpio::Entry::with_owner(&full(path), ty | mode, n.uid, n.gid, data);
            if let NodeKind::Char(a, b) | NodeKind::Block(a, b) = n.kind {
                e.rdev_major = a;
                e.rdev_minor = b;
            }
            match self.live_link(n) {
                Some(t) => {
                    e.link_to = Some(full(t));
                    links.push(e);
                }
                None => archive.add_entry(e)?,
            }
        }
        for e in links {
            archive.add_entry(e)?;
        }
        Ok(())
    }

    /// The `etc/passwd` or `etc/group` line whose field `key` (0: name,
    /// 2: id) is `value`: `(id, field 3 or the id)`.
    fn account(&self, file: &str, key: usize, value: &str) -> Option<(u32, u32)> {
        let Some(NodeKind::File(data)) = self.nodes.get(file).map(|n| &n.kind) else {
            return None;
        };
        String::from_utf8_lossy(data).lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 3 && f[key] == value {
                let id = f[2].parse().ok()?;
                let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
                Some((id, gid))
            } else {
                None
            }
        })
    }

    /// Resolves a container `user` (`NAME`, `UID`, `USER:GROUP`) against
    /// the tree's `/etc/passwd` and `/etc/group`: `(uid, gid)`. A user
    /// without a group gets its primary group (a number not in
    /// `/etc/passwd`: the same number).
    pub fn resolve_user(&self, user: &str) -> Result<(u32, u32), String> {
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        let (uid, primary) = match u.parse::<u32>() {
            Ok(n) => self.account("etc/passwd", 2, u).unwrap_or((n, n)),
            Err(_) => self
                .account("etc/passwd", 0, u)
                .ok_or_else(|| format!("user `{u}` is not in the image's /etc/passwd"))?,
        };
        let gid = match g {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => self
                    .account("etc/group", 0, g)
                    .map(|(id, _)| id)
                    .ok_or_else(|| format!("group `{g}` is not in the image's /etc/group"))?,
            },
        };
        Ok((uid, gid))
    }
}

#[cfg(test)]
mod tests;
