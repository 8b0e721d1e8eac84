//! `cairn publish` and the update key pair of `cairn keys generate
//! --update`: a repository directory any static HTTP server can serve,
//! holding `NAME-VERSION.efi` and the signed `cairn-update.json`.

use std::path::{Path, PathBuf};

use base64ct::{Base64, Encoding};
use cairn_manifest::release::{self, Metadata, Release};
use cairn_manifest::runtime::METADATA_FILE;
use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not an update key (base64 of a 32-byte ed25519 seed, from `cairn keys generate --update`)")]
    Key(PathBuf),
    #[error("{0} has no [update] table: it names the version to publish")]
    NoUpdate(PathBuf),
    #[error("version {0} is not greater than the repository's current version {1}; raise [update] version")]
    NotNewer(u64, u64),
    #[error("{0}: the repository's metadata is unreadable ({1}); refusing to overwrite it")]
    Repo(PathBuf, String),
    #[error("{key} is not among the manifest's [update] keys: the images it updates would refuse this release")]
    Untrusted { key: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// [`write_atomic`], its error naming `path`.
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PublishError> {
    write_atomic(path, bytes, mode).map_err(io(path))
}

/// `cairn keys generate --update DIR`: `update.key` (the secret seed,
/// 0600) and `update.pub` (what `[update] keys` names). Refuses to
/// overwrite either.
pub fn generate_keys(dir: &Path) -> Result<String, PublishError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (key, public) = (dir.join("update.key"), dir.join("update.pub"));
    for p in [&key, &public] {
        if p.exists() {
            return Err(PublishError::Io {
                path: p.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists; not overwritten",
                ),
            });
        }
    }
    let mut seed = [0u8; 32];
    let rnd = Path::new("/dev/urandom");
    std::io::Read::read_exact(&mut std::fs::File::open(rnd).map_err(io(rnd))?, &mut seed)
        .map_err(io(rnd))?;
    let pk = release::public_key(&seed);
    write(
        &key,
        format!("{}\n", Base64::encode_string(&seed)).as_bytes(),
        0o600,
    )?;
    write(
        &public,
        format!("{}\n", Base64::encode_string(&pk)).as_bytes(),
        0o644,
    )?;
    Ok(format!(
        "{}: secret update key (keep it off the appliances)\n{}: public key, for [update] keys\n",
        key.display(),
        public.display()
    ))
}

pub(crate) fn read_seed(path: &Path) -> Result<[u8; 32], PublishError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    Base64::decode_vec(text.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| PublishError::Key(path.to_path_buf()))
}

/// The repository's current version (0 when it has no metadata yet).
pub fn current_version(repo: &Path) -> Result<u64, PublishError> {
    let path = repo.join(METADATA_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(&path)(e)),
    };
    let bad = |e: String| PublishError::Repo(path.clone(), e);
    let md: Metadata = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let r: Release = serde_json::from_str(&md.signed).map_err(|e| bad(e.to_string()))?;
    Ok(r.version)
}

pub struct Publish<'a> {
    pub name: &'a str,
    pub version: u64,
    /// The manifest's trusted keys (hex), to catch a key they lack.
    pub trusted: &'a [String],
    pub uki: &'a [u8],
    pub key: &'a Path,
    pub repo: &'a Path,
    /// Unix seconds.
    pub expires: u64,
}

/// Writes `NAME-VERSION.efi`, then the signed metadata naming it.
pub fn publish(p: &Publish) -> Result<String, PublishError> {
    let seed = read_seed(p.key)?;
    let pk = release::hex(&release::public_key(&seed));
    if !p.trusted.iter().any(|t| t.eq_ignore_ascii_case(&pk)) {
        return Err(PublishError::Untrusted { key: pk });
    }
    std::fs::create_dir_all(p.repo).map_err(io(p.repo))?;
    let current = current_version(p.repo)?;
    if p.version <= current {
        return Err(PublishError::NotNewer(p.version, current));
    }
    let file = format!("{}-{}.efi", p.name, p.version);
    write(&p.repo.join(&file), p.uki, 0o644)?;
    let rel = Release {
        name: p.name.into(),
        version: p.version,
        expires: p.expires,
        file: file.clone(),
        size: p.uki.len() as u64,
        sha256: release::hex(&sha2::Sha256::digest(p.uki)),
    };
    let md = release::sign(&rel, &seed);
    let text = serde_json::to_string_pretty(&md).expect("metadata serializes") + "\n";
    write(&p.repo.join(METADATA_FILE), text.as_bytes(), 0o644)?;
    Ok(format!(
        "published {} version {} ({} bytes, sha256 {}) to {}, expires at {} (Unix)\n",
        p.name,
        p.version,
        rel.size,
        rel.sha256,
        p.repo.display(),
        p.expires
    ))
}
