//! Authenticode signing of the assembled UKI for Secure Boot.
//!
//! The signature itself is made by `sbsign` (sbsigntool): no maintained
//! Rust crate writes Authenticode signatures. cairn then reads the result
//! back with its own parser and checks that the signed digest is the
//! Authenticode digest it computes, before the build commits any output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn_image::authenticode;

pub const SBSIGN: &str = "sbsign";
pub const SBVERIFY: &str = "sbverify";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read {what} {path}: {source}")]
    Input {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot prepare a scratch directory for signing: {0}")]
    Scratch(std::io::Error),
    #[error("cannot start {program} (install sbsigntool, `cargo xtask deps`): {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error(
        "sbsign failed (key {key}, cert {cert}; the key must be an unencrypted PEM key): {stderr}"
    )]
    Sbsign {
        key: PathBuf,
        cert: PathBuf,
        stderr: String,
    },
    #[error("the signed UKI does not read back: {0}")]
    Readback(#[from] authenticode::AuthenticodeError),
    #[error("the signed UKI's signature does not carry its Authenticode digest ({signed} != {computed})")]
    DigestMismatch { signed: String, computed: String },
}

/// Signing inputs: a PEM private key and its PEM X.509 certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignKey {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// Sign `efi` and return the signed image. Neither input file is touched.
pub fn sign(efi: &[u8], k: &SignKey) -> Result<Vec<u8>, SignError> {
    for (what, path) in [("signing key", &k.key), ("signing certificate", &k.cert)] {
        std::fs::metadata(path).map_err(|source| SignError::Input {
            what,
            path: path.clone(),
            source,
        })?;
    }
    let dir = tempfile::Builder::new()
        .prefix("cairn-sign-")
        .tempdir()
        .map_err(SignError::Scratch)?;
    let unsigned = dir.path().join("unsigned.efi");
    let signed = dir.path().join("signed.efi");
    std::fs::write(&unsigned, efi).map_err(SignError::Scratch)?;
    let out = Command::new(SBSIGN)
        .arg("--key")
        .arg(&k.key)
        .arg("--cert")
        .arg(&k.cert)
        .arg("--output")
        .arg(&signed)
        .arg(&unsigned)
        // No terminal: an encrypted key fails instead of prompting.
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SignError::Spawn {
            program: SBSIGN,
            source,
        })?;
    if !out.status.success() || !signed.is_file() {
        return Err(SignError::Sbsign {
            key: k.key.clone(),
            cert: k.cert.clone(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let bytes = std::fs::read(&signed).map_err(SignError::Scratch)?;
    check(&bytes)?;
    Ok(bytes)
}

/// The last signature's digest must be the image's Authenticode digest.
fn check(bytes: &[u8]) -> Result<(), SignError> {
    let computed = authenticode::sha256(bytes)?;
    let sigs = authenticode::signatures(bytes)?;
    let signed = sigs
        .last()
        .map(|s| s.signed_digest.clone())
        .unwrap_or_default();
    if signed != computed {
        return Err(SignError::DigestMismatch {
            signed: authenticode::hex(&signed),
            computed: authenticode::hex(&computed),
        });
    }
    Ok(())
}

/// What `sbverify --cert CERT FILE` says: (verified, its message).
pub fn sbverify(file: &Path, cert: &Path) -> Result<(bool, String), SignError> {
    let out = Command::new(SBVERIFY)
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SignError::Spawn {
            program: SBVERIFY,
            source,
        })?;
    let mut msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !msg.is_empty() {
            msg.push_str("; ");
        }
        msg.push_str(err.trim());
    }
    Ok((out.status.success(), msg.replace('\n', "; ")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
    pub const SNAKEOIL_PEM: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    /// The snakeoil key without its passphrase, in `dir`.
    pub fn snakeoil(dir: &Path) -> SignKey {
        let key = dir.join("snakeoil.key");
        let st = Command::new("openssl")
            .args([
                "rsa",
                "-passin",
                "pass:snakeoil",
                "-in",
                SNAKEOIL_KEY,
                "-out",
            ])
            .arg(&key)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        SignKey {
            key,
            cert: PathBuf::from(SNAKEOIL_PEM),
        }
    }

    #[test]
    fn signs_verifies_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let k = snakeoil(dir.path());
        let stub = std::fs::read(STUB).unwrap();
        let signed = sign(&stub, &k).unwrap();
        let sigs = authenticode::signatures(&signed).unwrap();
        assert_eq!(sigs.len(), 1);
        let s = &sigs[0];
        assert_eq!(s.algorithm, Some(authenticode::DigestAlgorithm::Sha256));
        assert_eq!(
            s.signed_digest,
            authenticode::sha256(&signed).unwrap().to_vec()
        );
        assert_eq!(
            s.signer_subject.as_deref(),
            Some("C=US, ST=Colorado, L=Fort Collins, O=SnakeOil")
        );
        let f = dir.path().join("s.efi");
        std::fs::write(&f, &signed).unwrap();
        assert!(sbverify(&f, &k.cert).unwrap().0);
        // A changed byte: the digest no longer matches, sbverify refuses.
        let mut t = signed.clone();
        let text = cairn_image::pe::parse(&t)
            .unwrap()
            .sections
            .into_iter()
            .find(|s| s.name == ".text")
            .unwrap();
        t[text.raw_offset as usize + 100] ^= 0x01;
        assert!(matches!(check(&t), Err(SignError::DigestMismatch { .. })));
        std::fs::write(&f, &t).unwrap();
        assert!(!sbverify(&f, &k.cert).unwrap().0);
    }

    #[test]
    fn encrypted_key_fails_without_prompting() {
        let stub = std::fs::read(STUB).unwrap();
        let e = sign(
            &stub,
            &SignKey {
                key: SNAKEOIL_KEY.into(),
                cert: SNAKEOIL_PEM.into(),
            },
        )
        .unwrap_err();
        assert!(matches!(e, SignError::Sbsign { .. }), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let e = sign(
            b"MZ",
            &SignKey {
                key: "/nonexistent/db.key".into(),
                cert: SNAKEOIL_PEM.into(),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/db.key"), "{e}");
    }
}
