//! The update repository's signed metadata (`cairn-update.json`), shared
//! by `cairn publish` (which signs it) and the update agent (which checks
//! it). A simple signed JSON document rather than TUF: see the README.
//!
//! ```json
//! {"signed": "{\"name\":\"web\",\"version\":2,...}",
//!  "signatures": [{"key": "HEX PUBLIC KEY", "sig": "HEX ED25519 SIGNATURE"}]}
//! ```
//!
//! The signature covers the exact bytes of the `signed` string, so no
//! canonical JSON is needed; the release inside is parsed only after a
//! trusted key's signature over those bytes checks out.

use serde::{Deserialize, Serialize};

/// The largest metadata document the agent reads.
pub const METADATA_MAX: usize = 64 * 1024;

/// One release, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The appliance's name: an image only takes releases of its own name.
    pub name: String,
    /// Strictly greater than the running image's to be taken.
    pub version: u64,
    /// Unix seconds after which the metadata is refused (no freeze attack).
    pub expires: u64,
    /// The UKI's file name in the repository.
    pub file: String,
    pub size: u64,
    /// SHA-256 of the UKI, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub key: String,
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub signed: String,
    pub signatures: Vec<Signature>,
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Signs `release` with the ed25519 key from `seed` (32 bytes).
pub fn sign(release: &Release, seed: &[u8; 32]) -> Metadata {
    let signed = serde_json::to_string(release).expect("a release always serializes");
    let sig = sign_bytes(signed.as_bytes(), seed);
    Metadata {
        signed,
        signatures: vec![sig],
    }
}

/// The public key of `seed`.
pub fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(*seed));
    *kp.pk
}

/// Whether one of `sigs` is a signature over `msg` by one of the
/// `trusted` keys (hex).
pub fn trusted_signature(sigs: &[Signature], trusted: &[String], msg: &[u8]) -> bool {
    sigs.iter().any(|s| {
        if !trusted.iter().any(|t| t.eq_ignore_ascii_case(&s.key)) {
            return false;
        }
        let (Some(pk), Some(sig)) = (unhex(&s.key), unhex(&s.sig)) else {
            return false;
        };
        let (Ok(pk), Ok(sig)) = (
            ed25519_compact::PublicKey::from_slice(&pk),
            ed25519_compact::Signature::from_slice(&sig),
        ) else {
            return false;
        };
        pk.verify(msg, &sig).is_ok()
    })
}

/// The signature of `msg` by the key of `seed`.
pub fn sign_bytes(msg: &[u8], seed: &[u8; 32]) -> Signature {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(*seed));
    Signature {
        key: hex(kp.pk.as_ref()),
        sig: hex(kp.sk.sign(msg, None).as_ref()),
    }
}

/// Why metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("metadata is not valid JSON: {0}")]
    Malformed(String),
    #[error("no signature by a trusted key verifies")]
    Signature,
    #[error("release is for appliance {0:?}, not {1:?}")]
    Name(String, String),
    #[error("version {0} is not newer than the running version {1}")]
    NotNewer(u64, u64),
    #[error("metadata expired at {0} (now {1})")]
    Expired(u64, u64),
}

/// Checks `text` against `trusted` (hex public keys): a trusted key's
/// signature over the signed bytes, then name, expiry (`now`, Unix
/// seconds) and version (> `running`). Returns the release.
pub fn verify(
    text: &[u8],
    trusted: &[String],
    name: &str,
    running: u64,
    now: u64,
) -> Result<Release, Refused> {
    let md: Metadata =
        serde_json::from_slice(text).map_err(|e| Refused::Malformed(e.to_string()))?;
    let ok = trusted_signature(&md.signatures, trusted, md.signed.as_bytes());
    if !ok {
        return Err(Refused::Signature);
    }
    let r: Release =
        serde_json::from_str(&md.signed).map_err(|e| Refused::Malformed(e.to_string()))?;
    if r.name != name {
        return Err(Refused::Name(r.name, name.into()));
    }
    if r.expires <= now {
        return Err(Refused::Expired(r.expires, now));
    }
    if r.version <= running {
        return Err(Refused::NotNewer(r.version, running));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(version: u64, expires: u64) -> Release {
        Release {
            name: "web".into(),
            version,
            expires,
            file: "web-2.efi".into(),
            size: 3,
            sha256: "00".into(),
        }
    }

    #[test]
    fn sign_and_verify() {
        let seed = [7u8; 32];
        let trusted = vec![hex(&public_key(&seed))];
        let md = serde_json::to_vec(&sign(&rel(2, 1000), &seed)).unwrap();
        assert_eq!(verify(&md, &trusted, "web", 1, 10).unwrap().version, 2);
        assert_eq!(
            verify(&md, &trusted, "web", 2, 10),
            Err(Refused::NotNewer(2, 2))
        );
        assert_eq!(
            verify(&md, &trusted, "web", 1, 1000),
            Err(Refused::Expired(1000, 1000))
        );
        assert!(matches!(
            verify(&md, &trusted, "db", 1, 10),
            Err(Refused::Name(..))
        ));
        // Another key, and a changed byte.
        let other = vec![hex(&public_key(&[8u8; 32]))];
        assert_eq!(verify(&md, &other, "web", 1, 10), Err(Refused::Signature));
        let text = String::from_utf8(md)
            .unwrap()
            .replace("\\\"version\\\":2", "\\\"version\\\":9");
        assert_eq!(
            verify(text.as_bytes(), &trusted, "web", 1, 10),
            Err(Refused::Signature)
        );
        assert!(matches!(
            verify(b"garbage", &trusted, "web", 1, 10),
            Err(Refused::Malformed(_))
        ));
    }
}
