//! Services that run OCI images: the `image`, `volumes`, `network` and
//! `hostname` keys of a `[[service]]`.
//!
//! ```toml
//! [[service]]
//! name = "web"
//! image = "oci-archive:images/web.tar"   # or "oci:DIR" / "oci:DIR:TAG" / "docker-archive:FILE"
//! exec = ["/bin/httpd", "-f"]            # optional: overrides the image's Entrypoint + Cmd
//! env = { MODE = "prod" }                # added to (and overriding) the image's Env
//! user = "1000:1000"                     # optional: overrides the image's User
//! workdir = "/srv"                       # optional: overrides the image's WorkingDir
//! volumes = ["/data/web:/var/lib/web", "/data/conf:/etc/web:ro"]  # under a [[mount]] path
//! network = "host"                       # host (default) | none
//! hostname = "web"                       # default: the appliance's
//! init = true                            # a tiny reaper as PID 1 (default: the entrypoint is PID 1)
//! storage = "erofs"                      # initramfs (default) | erofs: a read-only partition of [disk]
//! ```
//! Every other `[[service]]` key (restart, after, memory_max, ...) works
//! the same for a container.

use std::path::{Path, PathBuf};

use thiserror::Error;
use toml::Spanned;

use crate::diagnostic::{Located, Span};
use crate::runtime::{ContainerNetwork, VolumeConfig};

/// Where an image comes from (always a local file or directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `oci-archive:FILE`: a tar holding an OCI image layout.
    OciArchive(PathBuf),
    /// `oci:DIR[:TAG]`: an OCI image layout directory; `TAG` picks the
    /// manifest by its `org.opencontainers.image.ref.name` annotation.
    OciLayout { dir: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE`: what `docker save` / `podman save
    /// --format docker-archive` write.
    DockerArchive(PathBuf),
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            ImageRef::OciLayout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageRef::OciLayout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
        }
    }
}

/// Where the image's root filesystem goes (`storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageStorage {
    /// Under `/containers/NAME` in the initramfs (in RAM).
    #[default]
    Initramfs,
    /// An erofs filesystem on a partition of the disk image (`[disk]`),
    /// mounted read-only at `/containers/NAME` at boot.
    Erofs,
}

/// The GPT name of the partition holding service `name`'s image with
/// `storage = "erofs"`: lower case, so no `[[partition]]` label (upper
/// case only) can take it.
pub fn erofs_partition_label(name: &str) -> String {
    format!("img-{name}")
}

/// Longest service name with `storage = "erofs"`: a GPT partition name
/// holds 36 UTF-16 units, `img-` takes 4.
pub const MAX_EROFS_SERVICE_NAME: usize = 32;

/// The container part of a `[[service]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// `image`, with paths resolved against the manifest's directory.
    pub image: Located<ImageRef>,
    pub volumes: Vec<Located<VolumeConfig>>,
    pub network: ContainerNetwork,
    /// `user`: `NAME`, `UID`, `NAME:GROUP` or `UID:GID` inside the image;
    /// `None`: the image config's `User` (root when it has none).
    pub user: Option<Located<String>>,
    pub hostname: Option<String>,
    /// `init`: run a reaper as the container's PID 1.
    pub init: bool,
    /// `storage`, located at its value (or the image's when not set).
    pub storage: Located<ImageStorage>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ContainerInvalid {
    #[error("invalid `image` `{0}`: expected \"oci-archive:FILE\", \"oci:DIR\", \"oci:DIR:TAG\" or \"docker-archive:FILE\" (images are read from local files; pull them with skopeo or podman first)")]
    Image(String),
    #[error("invalid volume `{0}`: expected \"SRC:DST\" or \"SRC:DST:ro\", both absolute paths without `..`")]
    Volume(String),
    #[error("volume source `{0}` is not under the path of a [[mount]]; volumes give a container a directory on a data partition")]
    VolumeNotOnMount(String),
    #[error("invalid `network` `{0}`: expected \"host\" or \"none\"")]
    Network(String),
    #[error("invalid `hostname` `{0}`: expected dot-separated labels of letters, digits and `-`")]
    Hostname(String),
    #[error("`{0}` is only allowed together with `image`")]
    OnlyWithImage(&'static str),
    #[error("`{0}` is not supported together with `image`: the user's groups come from the image (`user = \"UID:GID\"` picks the primary group)")]
    NotWithImage(&'static str),
    #[error("invalid `user` `{0}`: expected NAME, UID, NAME:GROUP or UID:GID")]
    User(String),
    #[error("a [[service]] needs `exec`, or an `image` whose config supplies the program")]
    NoExec,
    #[error("invalid `storage` `{0}`: expected \"initramfs\" or \"erofs\"")]
    Storage(String),
    #[error("storage = \"erofs\" puts the image on a partition of the disk image, and this manifest writes none: add a [disk] table, or use storage = \"initramfs\"")]
    ErofsWithoutDisk,
    #[error("service name `{0}` is too long for storage = \"erofs\": its partition is named img-NAME, and GPT names hold 36 characters (at most 32 for NAME)")]
    ErofsName(String),
}

/// Parses `image`.
pub fn parse_image(text: &str, dir: &Path) -> Result<ImageRef, ContainerInvalid> {
    let bad = || ContainerInvalid::Image(text.to_string());
    if text.contains('\0') {
        return Err(bad());
    }
    let (kind, rest) = text.split_once(':').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    Ok(match kind {
        "oci-archive" => ImageRef::OciArchive(dir.join(rest)),
        "docker-archive" => ImageRef::DockerArchive(dir.join(rest)),
        "oci" => {
            let (d, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !d.is_empty() && !t.is_empty() && !t.contains('/') => {
                    (d, Some(t.to_string()))
                }
                Some(_) => return Err(bad()),
                None => (rest, None),
            };
            ImageRef::OciLayout {
                dir: dir.join(d),
                tag,
            }
        }
        _ => return Err(bad()),
    })
}

fn container_path(p: &str) -> bool {
    p.starts_with('/') && !p.split('/').any(|c| c == "..") && !p.contains('\0')
}

/// Parses one `volumes` entry.
pub fn parse_volume(text: &str) -> Result<VolumeConfig, ContainerInvalid> {
    let bad = || ContainerInvalid::Volume(text.to_string());
    let parts: Vec<&str> = text.split(':').collect();
    let (src, dst, readonly) = match parts[..] {
        [s, d] => (s, d, false),
        [s, d, "ro"] => (s, d, true),
        [s, d, "rw"] => (s, d, false),
        _ => return Err(bad()),
    };
    if !container_path(src) || !container_path(dst) || dst.split('/').all(|c| c.is_empty()) {
        return Err(bad());
    }
    Ok(VolumeConfig {
        src: src.to_string(),
        dst: dst.to_string(),
        readonly,
    })
}

/// A `user` for a container: `NAME`, `UID`, `NAME:GROUP`, `UID:GID`.
pub fn check_user(text: &str) -> Result<(), ContainerInvalid> {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    match text.split_once(':') {
        Some((u, g)) if ok(u) && ok(g) => Ok(()),
        None if ok(text) => Ok(()),
        _ => Err(ContainerInvalid::User(text.to_string())),
    }
}

/// Whether `path` is `mount` or below it.
pub fn is_under(path: &str, mount: &str) -> bool {
    let norm = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(String::from)
            .collect()
    };
    let (p, m) = (norm(path), norm(mount));
    p.len() >= m.len() && p[..m.len()] == m[..]
}

/// The raw keys, taken out of a `[[service]]`.
pub(crate) struct RawContainer {
    pub image: Option<Spanned<String>>,
    pub volumes: Vec<Spanned<String>>,
    pub network: Option<Spanned<String>>,
    pub hostname: Option<Spanned<String>>,
    pub init: Option<Spanned<bool>>,
    pub storage: Option<Spanned<String>>,
}

pub(crate) type Failure = (Span, ContainerInvalid);

/// Validates the container keys; `None` when there is no `image`.
/// `user` is the service's `user` (only passed when `image` is set).
pub(crate) fn build(
    raw: RawContainer,
    user: Option<Spanned<toml::Value>>,
    dir: &Path,
) -> Result<Option<ContainerSpec>, Failure> {
    let sp = |s: &Spanned<String>| -> Span { s.span().into() };
    let Some(image) = raw.image else {
        if let Some(v) = raw.volumes.first() {
            return Err((sp(v), ContainerInvalid::OnlyWithImage("volumes")));
        }
        if let Some(n) = &raw.network {
            return Err((sp(n), ContainerInvalid::OnlyWithImage("network")));
        }
        if let Some(h) = &raw.hostname {
            return Err((sp(h), ContainerInvalid::OnlyWithImage("hostname")));
        }
        if let Some(i) = &raw.init {
            return Err((i.span().into(), ContainerInvalid::OnlyWithImage("init")));
        }
        if let Some(s) = &raw.storage {
            return Err((sp(s), ContainerInvalid::OnlyWithImage("storage")));
        }
        return Ok(None);
    };
    let image_ref = parse_image(image.get_ref(), dir).map_err(|e| (sp(&image), e))?;
    let mut volumes = Vec::new();
    for v in &raw.volumes {
        let cfg = parse_volume(v.get_ref()).map_err(|e| (sp(v), e))?;
        volumes.push(Located::new(cfg, sp(v)));
    }
    let network = match &raw.network {
        None => ContainerNetwork::Host,
        Some(n) => match n.get_ref().as_str() {
            "host" => ContainerNetwork::Host,
            "none" => ContainerNetwork::None,
            other => return Err((sp(n), ContainerInvalid::Network(other.to_string()))),
        },
    };
    let hostname = match raw.hostname {
        Some(h) => {
            if crate::validate::check_hostname(h.get_ref()).is_err() {
                return Err((sp(&h), ContainerInvalid::Hostname(h.into_inner())));
            }
            Some(h.into_inner())
        }
        None => None,
    };
    let storage = match &raw.storage {
        None => Located::new(ImageStorage::Initramfs, sp(&image)),
        Some(s) => match s.get_ref().as_str() {
            "initramfs" => Located::new(ImageStorage::Initramfs, sp(s)),
            "erofs" => Located::new(ImageStorage::Erofs, sp(s)),
            other => return Err((sp(s), ContainerInvalid::Storage(other.to_string()))),
        },
    };
    let user = match user {
        None => None,
        Some(u) => {
            let span: Span = u.span().into();
            let text = match u.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) if *i >= 0 => i.to_string(),
                other => return Err((span, ContainerInvalid::User(other.to_string()))),
            };
            check_user(&text).map_err(|e| (span, e))?;
            Some(Located::new(text, span))
        }
    };
    Ok(Some(ContainerSpec {
        image: Located::new(image_ref, sp(&image)),
        volumes,
        network,
        user,
        hostname,
        init: raw.init.is_some_and(|i| *i.get_ref()),
        storage,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images() {
        let d = Path::new("/m");
        assert_eq!(
            parse_image("oci-archive:i/web.tar", d).unwrap(),
            ImageRef::OciArchive("/m/i/web.tar".into())
        );
        assert_eq!(
            parse_image("oci:lay:v1", d).unwrap(),
            ImageRef::OciLayout {
                dir: "/m/lay".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            parse_image("oci:/abs/lay", d).unwrap(),
            ImageRef::OciLayout {
                dir: "/abs/lay".into(),
                tag: None
            }
        );
        assert_eq!(
            parse_image("docker-archive:x.tar", d).unwrap(),
            ImageRef::DockerArchive("/m/x.tar".into())
        );
        for bad in [
            "docker://busybox",
            "web.tar",
            "oci-archive:",
            "oci::t",
            "oci:d:",
        ] {
            assert!(parse_image(bad, d).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        let v = parse_volume("/data/w:/var/lib/w:ro").unwrap();
        assert_eq!(
            (v.src.as_str(), v.dst.as_str(), v.readonly),
            ("/data/w", "/var/lib/w", true)
        );
        for bad in [
            "/a",
            "a:/b",
            "/a:b",
            "/a:/b:x",
            "/a/../b:/c",
            "/a:/",
            "/a:/b:ro:x",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
        assert!(is_under("/data/w", "/data"));
        assert!(is_under("/data", "/data/"));
        assert!(!is_under("/database", "/data"));
    }
}
