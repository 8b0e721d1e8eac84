//! `cairn inspect`: what is inside a UKI or an initramfs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cairn_image::{authenticode, compress, cpio, pe};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a PE image: {source}")]
    Pe { path: PathBuf, source: pe::PeError },
    #[error("{path}: {source}")]
    Compress {
        path: PathBuf,
        source: compress::CompressError,
    },
    #[error("{path}: {source}")]
    Signature {
        path: PathBuf,
        source: authenticode::AuthenticodeError,
    },
    #[error("{path}: {source}")]
    Verify {
        path: PathBuf,
        source: crate::sign::SignError,
    },
    #[error("{path}: --cert only applies to a PE image (.efi)")]
    CertNotPe { path: PathBuf },
    #[error("{path}: disk image: {source}")]
    Disk {
        path: PathBuf,
        source: cairn_image::disk::DiskError,
    },
    #[error(
        "{path}: disk image without a UKI at EFI/BOOT/BOOTX64.EFI in its EFI system partition"
    )]
    NoUki { path: PathBuf },
    #[error("{path}: qcow2 disk image: {detail}")]
    Qcow2 { path: PathBuf, detail: String },
    #[error("{path}: not a newc cpio archive: {source}")]
    Cpio {
        path: PathBuf,
        source: cpio::CpioError,
    },
}

/// Describe `path` (a UKI, or a possibly compressed initramfs) as text.
pub fn inspect(path: &Path) -> Result<String, InspectError> {
    inspect_with(path, None)
}

/// Like [`inspect`]; with `cert`, also say whether the UKI's signature
/// verifies against that certificate.
pub fn inspect_with(path: &Path, cert: Option<&Path>) -> Result<String, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.starts_with(b"MZ") {
        let mut out = inspect_pe(path, &bytes)?;
        out.push_str(&signature_report(path, &bytes, cert)?);
        Ok(out)
    } else if cert.is_some() {
        Err(InspectError::CertNotPe {
            path: path.to_path_buf(),
        })
    } else {
        let (compression, raw) =
            compress::decompress_auto(&bytes).map_err(|source| InspectError::Compress {
                path: path.to_path_buf(),
                source,
            })?;
        let mut out = format!(
            "{}: initramfs, {:?}, {} bytes ({} uncompressed)\n",
            path.display(),
            compression,
            bytes.len(),
            raw.len()
        );
        out.push_str(&list_cpio(path, &raw)?);
        Ok(out)
    }
}

fn inspect_pe(path: &Path, bytes: &[u8]) -> Result<String, InspectError> {
    let info = pe::parse(bytes).map_err(|source| InspectError::Pe {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: PE32+ image for {}, {} bytes, {} sections, signed: {}",
        path.display(),
        match info.machine {
            pe::MACHINE_AMD64 => "x86_64".to_string(),
            pe::MACHINE_ARM64 => "arm64".to_string(),
            other => format!("machine {other:#06x}"),
        },
        bytes.len(),
        info.sections.len(),
        if info.has_signature { "yes" } else { "no" }
    );
    let _ = writeln!(
        out,
        "{:<10} {:>12} {:>12} {:>12}",
        "section", "vaddr", "size", "file offset"
    );
    for s in &info.sections {
        let _ = writeln!(
            out,
            "{:<10} {:>#12x} {:>12} {:>#12x}",
            s.name, s.virtual_address, s.virtual_size, s.raw_offset
        );
    }
    for name in [".osrel", ".cmdline", ".uname"] {
        if let Some(data) = pe::section_data(bytes, name) {
            let text = String::from_utf8_lossy(data);
            let _ = writeln!(out, "\n{name}:");
            for line in text.trim_end_matches('\0').lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    if let Some(initrd) = pe::section_data(bytes, ".initrd") {
        if let Ok((c, raw)) = compress::decompress_auto(initrd) {
            let _ = writeln!(out, "\n.initrd: {:?}, {} bytes uncompressed", c, raw.len());
            out.push_str(&list_cpio(path, &raw)?);
        }
    }
    Ok(out)
}

/// The Authenticode section of `cairn inspect`: the digest cairn computes,
/// each signature's signer and signed digest, and (with `cert`) sbverify's
/// verdict.
fn signature_report(
    path: &Path,
    bytes: &[u8],
    cert: Option<&Path>,
) -> Result<String, InspectError> {
    let err = |source| InspectError::Signature {
        path: path.to_path_buf(),
        source,
    };
    let computed = authenticode::sha256(bytes).map_err(err)?;
    let sigs = authenticode::signatures(bytes).map_err(err)?;
    let mut out = String::new();
    let _ = writeln!(out, "\nAuthenticode:");
    let _ = writeln!(
        out,
        "  image digest (sha256): {}",
        authenticode::hex(&computed)
    );
    if sigs.is_empty() {
        let _ = writeln!(
            out,
            "  signatures: none (Secure Boot firmware will refuse this image)"
        );
    }
    for (i, s) in sigs.iter().enumerate() {
        let alg = s
            .algorithm
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let _ = writeln!(out, "  signature {}:", i + 1);
        let _ = writeln!(
            out,
            "    signer: {}",
            s.signer_subject
                .as_deref()
                .unwrap_or("(certificate not included)")
        );
        if let Some(issuer) = &s.signer_issuer {
            let _ = writeln!(out, "    issuer: {issuer}");
        }
        let _ = writeln!(out, "    digest algorithm: {alg}");
        let _ = writeln!(
            out,
            "    signed digest: {}",
            authenticode::hex(&s.signed_digest)
        );
        let matches = match s.algorithm {
            Some(a) => authenticode::digest(bytes, a)
                .map_err(err)?
                .map(|d| d == s.signed_digest),
            None => None,
        };
        let _ = writeln!(
            out,
            "    digest matches image: {}",
            match matches {
                Some(true) => "yes",
                Some(false) => "NO (the image was changed after signing)",
                None => "not checked (unsupported algorithm)",
            }
        );
    }
    if let Some(c) = cert {
        let (ok, msg) = crate::sign::sbverify(path, c).map_err(|source| InspectError::Verify {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = writeln!(
            out,
            "  verifies against {}: {} (sbverify: {msg})",
            c.display(),
            if ok { "yes" } else { "NO" }
        );
    }
    Ok(out)
}

fn list_cpio(path: &Path, raw: &[u8]) -> Result<String, InspectError> {
    let entries = cpio::read(raw).map_err(|source| InspectError::Cpio {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = String::new();
    for e in entries {
        let kind = e.mode & 0o170000;
        let size = if kind == 0o020000 || kind == 0o060000 {
            format!("{},{}", e.rdev_major, e.rdev_minor)
        } else {
            e.data.len().to_string()
        };
        let _ = write!(
            out,
            "{} {:>4} {:>4} {:>10} /{}",
            mode_string(e.mode),
            e.uid,
            e.gid,
            size,
            e.path.trim_start_matches('/')
        );
        if kind == 0o120000 {
            let _ = write!(out, " -> {}", String::from_utf8_lossy(&e.data));
        }
        out.push('\n');
    }
    Ok(out)
}

/// `ls -l` style mode string.
pub fn mode_string(mode: u32) -> String {
    let t = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, ch)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let c = match i {
            2 if mode & 0o4000 != 0 => {
                if set {
                    's'
                } else {
                    'S'
                }
            }
            5 if mode & 0o2000 != 0 => {
                if set {
                    's'
                } else {
                    'S'
                }
            }
            8 if mode & 0o1000 != 0 => {
                if set {
                    't'
                } else {
                    'T'
                }
            }
            _ if set => *ch,
            _ => '-',
        };
        s.push(c);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(0o100755), "-rwxr-xr-x");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o020600), "crw-------");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
    }

    #[test]
    fn lists_an_initramfs() {
        let mut a = cpio::Archive::default();
        a.add_file("/init", 0o755, b"abc".to_vec()).unwrap();
        a.add_char_dev("/dev/console", 0o600, 5, 1).unwrap();
        let bytes = compress::compress(&a.to_bytes(0), cairn_manifest::Compression::Zstd).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.initrd");
        std::fs::write(&p, bytes).unwrap();
        let text = inspect(&p).unwrap();
        assert!(
            text.contains("-rwxr-xr-x    0    0          3 /init"),
            "{text}"
        );
        assert!(
            text.contains("crw-------    0    0        5,1 /dev/console"),
            "{text}"
        );
        assert!(text.contains("Zstd"), "{text}");
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk");
        std::fs::write(&p, b"hello world").unwrap();
        assert!(inspect(&p).is_err());
    }
}
