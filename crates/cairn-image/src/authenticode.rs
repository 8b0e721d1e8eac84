//! Authenticode: the image digest UEFI firmware checks before it runs a PE
//! file, and the signatures (PKCS#7 SignedData in the certificate table)
//! that carry it.
//!
//! The digest follows the "Windows Authenticode Portable Executable Signature
//! Format" (and EDK2's `HashPeImage`, which is what OVMF runs): hash the
//! headers except the CheckSum field and the certificate-table directory
//! entry, then every section's raw data in file order, then whatever trails
//! the sections except the certificate table itself.
//!
//! Reading a signature needs only a small DER walker: the content type must be
//! `SpcIndirectDataContent`, whose `DigestInfo` holds the digest the signer
//! vouched for; the signer's certificate is found by issuer and serial number.
//! Verifying the RSA signature itself is left to `sbverify`.

use sha2::{Sha256, Sha384, Sha512};
use thiserror::Error;

use crate::pe::{self, PeError};

/// `WIN_CERT_REVISION_2_0`.
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERT_TYPE_PKCS_SIGNED_DATA`.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_SPC_INDIRECT_DATA: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x04];
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

/// Errors reading Authenticode data.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthenticodeError {
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error("certificate table at file offset {offset:#x}: {reason}")]
    CertTable { offset: usize, reason: String },
    #[error(
        "PKCS#7 signature (certificate table entry at {entry:#x}), byte {offset:#x}: {reason}"
    )]
    Pkcs7 {
        entry: usize,
        offset: usize,
        reason: String,
    },
}

/// A digest algorithm an Authenticode signature may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    fn from_oid(oid: &[u8]) -> Option<Self> {
        Some(match oid {
            OID_SHA1 => DigestAlgorithm::Sha1,
            OID_SHA256 => DigestAlgorithm::Sha256,
            OID_SHA384 => DigestAlgorithm::Sha384,
            OID_SHA512 => DigestAlgorithm::Sha512,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DigestAlgorithm::Sha1 => "sha1",
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha384 => "sha384",
            DigestAlgorithm::Sha512 => "sha512",
        })
    }
}

/// Where the certificate table is: (file offset, size); `None` if unsigned.
pub fn cert_table(bytes: &[u8]) -> Result<Option<(usize, usize)>, AuthenticodeError> {
    let (_, layout) = pe::parse_with_layout(bytes)?;
    let Some(dir) = security_dir_offset(bytes, &layout)? else {
        return Ok(None);
    };
    let addr = pe::read_u32(bytes, dir, "security directory VirtualAddress")? as usize;
    let size = pe::read_u32(bytes, dir + 4, "security directory Size")? as usize;
    if addr == 0 && size == 0 {
        return Ok(None);
    }
    if addr.checked_add(size).is_none_or(|end| end > bytes.len()) {
        return Err(AuthenticodeError::CertTable {
            offset: addr,
            reason: format!(
                "{size} bytes do not fit in the file ({} bytes)",
                bytes.len()
            ),
        });
    }
    Ok(Some((addr, size)))
}

/// Offset of the certificate-table data directory entry, if the optional
/// header has one.
fn security_dir_offset(bytes: &[u8], layout: &pe::Layout) -> Result<Option<usize>, PeError> {
    let n = pe::read_u32(
        bytes,
        layout.opt + 108,
        "optional header NumberOfRvaAndSizes",
    )? as usize;
    Ok((n > pe::DIR_SECURITY).then_some(layout.opt + 112 + pe::DIR_SECURITY * 8))
}

/// The Authenticode digest of a PE image with `alg` (SHA-1 is not offered:
/// cairn neither signs with it nor trusts it).
pub fn digest(bytes: &[u8], alg: DigestAlgorithm) -> Result<Option<Vec<u8>>, AuthenticodeError> {
    Ok(match alg {
        DigestAlgorithm::Sha1 => None,
        DigestAlgorithm::Sha256 => Some(digest_with::<Sha256>(bytes)?),
        DigestAlgorithm::Sha384 => Some(digest_with::<Sha384>(bytes)?),
        DigestAlgorithm::Sha512 => Some(digest_with::<Sha512>(bytes)?),
    })
}

/// The SHA-256 Authenticode digest of a PE image.
pub fn sha256(bytes: &[u8]) -> Result<[u8; 32], AuthenticodeError> {
    let d = digest_with::<Sha256>(bytes)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&d);
    Ok(out)
}

fn digest_with<D: sha2::Digest>(bytes: &[u8]) -> Result<Vec<u8>, AuthenticodeError> {
    let (info, layout) = pe::parse_with_layout(bytes)?;
    let headers = info.size_of_headers as usize;
    if headers > bytes.len() {
        return Err(PeError::Invalid {
            field: "optional header SizeOfHeaders",
            offset: layout.opt + 60,
            reason: format!(
                "{headers} is beyond the end of the file ({} bytes)",
                bytes.len()
            ),
        }
        .into());
    }
    let checksum = pe::checksum_offset(&layout);
    let mut h = D::new();
    h.update(&bytes[..checksum]);
    match security_dir_offset(bytes, &layout)? {
        Some(dir) if dir + 8 <= headers => {
            h.update(&bytes[checksum + 4..dir]);
            h.update(&bytes[dir + 8..headers]);
        }
        _ => h.update(bytes.get(checksum + 4..headers).unwrap_or_default()),
    }
    let mut sections: Vec<_> = info.sections.iter().filter(|s| s.raw_size != 0).collect();
    sections.sort_by_key(|s| s.raw_offset);
    let mut hashed = headers;
    for s in sections {
        // parse() checked that raw data lies inside the file.
        let start = s.raw_offset as usize;
        h.update(&bytes[start..start + s.raw_size as usize]);
        hashed += s.raw_size as usize;
    }
    let cert_size = cert_table(bytes)?.map_or(0, |(_, size)| size);
    if bytes.len() > hashed + cert_size {
        h.update(&bytes[hashed..bytes.len() - cert_size]);
    }
    Ok(h.finalize().to_vec())
}

/// One Authenticode signature found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// File offset of its `WIN_CERTIFICATE` entry.
    pub offset: usize,
    /// The digest algorithm of the signed image digest.
    pub algorithm: Option<DigestAlgorithm>,
    /// The image digest the signer signed (from `SpcIndirectDataContent`).
    pub signed_digest: Vec<u8>,
    /// The signer's certificate subject, as `CN=..., O=...`.
    pub signer_subject: Option<String>,
    /// The signer's certificate issuer.
    pub signer_issuer: Option<String>,
    /// The DER bytes of the signer's certificate.
    pub signer_cert: Option<Vec<u8>>,
    /// The whole PKCS#7 ContentInfo (DER).
    pub pkcs7: Vec<u8>,
}

/// Every PKCS#7 signature in the image's certificate table (empty if none).
pub fn signatures(bytes: &[u8]) -> Result<Vec<Signature>, AuthenticodeError> {
    let Some((start, size)) = cert_table(bytes)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut off = start;
    let end = start + size;
    while off + 8 <= end {
        let len = pe::read_u32(bytes, off, "WIN_CERTIFICATE dwLength")? as usize;
        let rev = pe::read_u16(bytes, off + 4, "WIN_CERTIFICATE wRevision")?;
        let kind = pe::read_u16(bytes, off + 6, "WIN_CERTIFICATE wCertificateType")?;
        if len < 8 || off + len > end {
            return Err(AuthenticodeError::CertTable {
                offset: off,
                reason: format!("WIN_CERTIFICATE length {len} does not fit the table"),
            });
        }
        if rev == WIN_CERT_REVISION_2_0 && kind == WIN_CERT_TYPE_PKCS_SIGNED_DATA {
            out.push(parse_pkcs7(off, &bytes[off + 8..off + len])?);
        }
        off += len.next_multiple_of(8);
    }
    Ok(out)
}

/// A DER element: tag, contents, and the contents' offset in the blob.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
    at: usize,
    /// Offset of the tag byte, and the whole encoding.
    start: usize,
    raw: &'a [u8],
}

/// Reads DER elements from `blob[pos..end]`.
struct Der<'a> {
    blob: &'a [u8],
    pos: usize,
    end: usize,
    entry: usize,
}

impl<'a> Der<'a> {
    fn err(&self, offset: usize, reason: impl Into<String>) -> AuthenticodeError {
        AuthenticodeError::Pkcs7 {
            entry: self.entry,
            offset,
            reason: reason.into(),
        }
    }

    fn inside(&self, t: &Tlv<'a>) -> Der<'a> {
        Der {
            blob: self.blob,
            pos: t.at,
            end: t.at + t.body.len(),
            entry: self.entry,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    fn next(&mut self) -> Result<Tlv<'a>, AuthenticodeError> {
        let start = self.pos;
        let byte = |i: usize| -> Result<u8, AuthenticodeError> {
            if i < self.end {
                Ok(self.blob[i])
            } else {
                Err(self.err(i, "truncated DER element"))
            }
        };
        let tag = byte(start)?;
        if tag & 0x1f == 0x1f {
            return Err(self.err(start, "multi-byte DER tags are not expected here"));
        }
        let first = byte(start + 1)?;
        let (len, hdr) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 {
                return Err(self.err(start + 1, format!("unsupported DER length form {first:#x}")));
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | byte(start + 2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let at = start + hdr;
        if at.checked_add(len).is_none_or(|e| e > self.end) {
            return Err(self.err(
                start,
                format!("DER element of {len} bytes runs past its parent"),
            ));
        }
        self.pos = at + len;
        Ok(Tlv {
            tag,
            body: &self.blob[at..at + len],
            at,
            start,
            raw: &self.blob[start..at + len],
        })
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, AuthenticodeError> {
        let t = self.next()?;
        if t.tag != tag {
            return Err(self.err(
                t.start,
                format!("{what}: expected tag {tag:#04x}, found {:#04x}", t.tag),
            ));
        }
        Ok(t)
    }
}

const SEQ: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INT: u8 = 0x02;
const OCTETS: u8 = 0x04;
const CTX0: u8 = 0xa0;

fn parse_pkcs7(entry: usize, blob: &[u8]) -> Result<Signature, AuthenticodeError> {
    let mut top = Der {
        blob,
        pos: 0,
        end: blob.len(),
        entry,
    };
    let ci = top.expect(SEQ, "ContentInfo")?;
    let mut ci = top.inside(&ci);
    let ct = ci.expect(OID, "ContentInfo contentType")?;
    if ct.body != OID_SIGNED_DATA {
        return Err(ci.err(ct.at, "content type is not PKCS#7 signedData"));
    }
    let explicit = ci.expect(CTX0, "ContentInfo content")?;
    let mut ex = ci.inside(&explicit);
    let sd = ex.expect(SEQ, "SignedData")?;
    let mut sd = ex.inside(&sd);
    sd.expect(INT, "SignedData version")?;
    sd.expect(SET, "SignedData digestAlgorithms")?;
    let eci = sd.expect(SEQ, "SignedData contentInfo")?;
    let mut eci = sd.inside(&eci);
    let ect = eci.expect(OID, "contentInfo contentType")?;
    if ect.body != OID_SPC_INDIRECT_DATA {
        return Err(eci.err(ect.at, "content is not SpcIndirectDataContent"));
    }
    let econtent = eci.expect(CTX0, "contentInfo content")?;
    let mut ec = eci.inside(&econtent);
    let spc = ec.expect(SEQ, "SpcIndirectDataContent")?;
    let mut spc = ec.inside(&spc);
    spc.expect(SEQ, "SpcIndirectDataContent data")?;
    let di = spc.expect(SEQ, "DigestInfo")?;
    let mut di = spc.inside(&di);
    let alg = di.expect(SEQ, "DigestInfo digestAlgorithm")?;
    let alg_oid = di.inside(&alg).expect(OID, "digest algorithm")?;
    let digest = di.expect(OCTETS, "DigestInfo digest")?;

    // certificates [0] IMPLICIT, optional; crls [1], optional; signerInfos.
    let mut certs = Vec::new();
    let mut signer_infos = None;
    while !sd.at_end() {
        let t = sd.next()?;
        match t.tag {
            CTX0 => {
                let mut c = sd.inside(&t);
                while !c.at_end() {
                    certs.push(c.expect(SEQ, "certificate")?);
                }
            }
            SET => signer_infos = Some(t),
            _ => {}
        }
    }
    let mut signer_cert = None;
    if let Some(si) = signer_infos {
        let mut set = sd.inside(&si);
        if !set.at_end() {
            let info = set.expect(SEQ, "SignerInfo")?;
            let mut info = set.inside(&info);
            info.expect(INT, "SignerInfo version")?;
            let ias = info.expect(SEQ, "SignerInfo issuerAndSerialNumber")?;
            for c in &certs {
                let (issuer, serial) = cert_issuer_serial(&sd, c)?;
                if [issuer.raw, serial.raw].concat() == ias.body {
                    signer_cert = Some(*c);
                }
            }
        }
    }
    let (subject, issuer) = match &signer_cert {
        Some(c) => {
            let (iss, _) = cert_issuer_serial(&sd, c)?;
            let subj = cert_subject(&sd, c)?;
            (
                Some(name_string(&sd, &subj)?),
                Some(name_string(&sd, &iss)?),
            )
        }
        None => (None, None),
    };
    Ok(Signature {
        offset: entry,
        algorithm: DigestAlgorithm::from_oid(alg_oid.body),
        signed_digest: digest.body.to_vec(),
        signer_subject: subject,
        signer_issuer: issuer,
        signer_cert: signer_cert.map(|c| c.raw.to_vec()),
        pkcs7: blob.to_vec(),
    })
}

/// tbsCertificate's fields up to the subject.
fn tbs<'a>(d: &Der<'a>, cert: &Tlv<'a>) -> Result<Der<'a>, AuthenticodeError> {
    let mut c = d.inside(cert);
    let tbs = c.expect(SEQ, "tbsCertificate")?;
    let mut t = c.inside(&tbs);
    let mut probe = c.inside(&tbs);
    if probe.next()?.tag == CTX0 {
        t.next()?; // [0] version
    }
    Ok(t)
}

fn cert_issuer_serial<'a>(
    d: &Der<'a>,
    cert: &Tlv<'a>,
) -> Result<(Tlv<'a>, Tlv<'a>), AuthenticodeError> {
    let mut t = tbs(d, cert)?;
    let serial = t.expect(INT, "certificate serialNumber")?;
    t.expect(SEQ, "certificate signature")?;
    let issuer = t.expect(SEQ, "certificate issuer")?;
    Ok((issuer, serial))
}

fn cert_subject<'a>(d: &Der<'a>, cert: &Tlv<'a>) -> Result<Tlv<'a>, AuthenticodeError> {
    let mut t = tbs(d, cert)?;
    t.expect(INT, "certificate serialNumber")?;
    t.expect(SEQ, "certificate signature")?;
    t.expect(SEQ, "certificate issuer")?;
    t.expect(SEQ, "certificate validity")?;
    t.expect(SEQ, "certificate subject")
}

/// An X.501 Name as `CN=..., O=...` (known attribute types by their short
/// names, others as dotted OIDs).
fn name_string(d: &Der<'_>, name: &Tlv<'_>) -> Result<String, AuthenticodeError> {
    let mut parts = Vec::new();
    let mut n = d.inside(name);
    while !n.at_end() {
        let rdn = n.expect(SET, "RelativeDistinguishedName")?;
        let mut r = n.inside(&rdn);
        while !r.at_end() {
            let atv = r.expect(SEQ, "AttributeTypeAndValue")?;
            let mut a = r.inside(&atv);
            let oid = a.expect(OID, "attribute type")?;
            let value = a.next()?;
            let key = match oid.body {
                [0x55, 0x04, 0x03] => "CN".to_string(),
                [0x55, 0x04, 0x06] => "C".to_string(),
                [0x55, 0x04, 0x07] => "L".to_string(),
                [0x55, 0x04, 0x08] => "ST".to_string(),
                [0x55, 0x04, 0x0a] => "O".to_string(),
                [0x55, 0x04, 0x0b] => "OU".to_string(),
                other => oid_string(other),
            };
            parts.push(format!("{key}={}", String::from_utf8_lossy(value.body)));
        }
    }
    Ok(parts.join(", "))
}

fn oid_string(body: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut v: u64 = 0;
    for (i, b) in body.iter().enumerate() {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() && i < body.len() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    #[test]
    fn unsigned_stub_has_no_signatures_and_a_stable_digest() {
        let bytes = std::fs::read(STUB).unwrap();
        assert_eq!(cert_table(&bytes).unwrap(), None);
        assert!(signatures(&bytes).unwrap().is_empty());
        let a = sha256(&bytes).unwrap();
        // The CheckSum field is not part of the digest ...
        let (_, layout) = pe::parse_with_layout(&bytes).unwrap();
        let mut b = bytes.clone();
        let c = pe::checksum_offset(&layout);
        b[c] ^= 0xff;
        assert_eq!(sha256(&b).unwrap(), a);
        // ... but a byte of code is.
        let text = pe::parse(&bytes)
            .unwrap()
            .sections
            .into_iter()
            .find(|s| s.name == ".text")
            .unwrap();
        b[text.raw_offset as usize + 10] ^= 1;
        assert_ne!(sha256(&b).unwrap(), a);
    }

    #[test]
    fn oids_print_dotted() {
        assert_eq!(oid_string(OID_SHA256), "2.16.840.1.101.3.4.2.1");
        assert_eq!(oid_string(OID_SPC_INDIRECT_DATA), "1.3.6.1.4.1.311.2.1.4");
    }

    #[test]
    fn bad_cert_table_is_an_error() {
        let mut bytes = std::fs::read(STUB).unwrap();
        let (_, layout) = pe::parse_with_layout(&bytes).unwrap();
        let dir = security_dir_offset(&bytes, &layout).unwrap().unwrap();
        let len = bytes.len() as u32;
        bytes[dir..dir + 4].copy_from_slice(&(len - 16).to_le_bytes());
        bytes[dir + 4..dir + 8].copy_from_slice(&64u32.to_le_bytes());
        let e = signatures(&bytes).unwrap_err();
        assert!(matches!(e, AuthenticodeError::CertTable { .. }), "{e}");
        // A table that fits but holds garbage PKCS#7.
        bytes[dir + 4..dir + 8].copy_from_slice(&16u32.to_le_bytes());
        let at = (len - 16) as usize;
        bytes[at..at + 4].copy_from_slice(&16u32.to_le_bytes());
        bytes[at + 4..at + 6].copy_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
        bytes[at + 6..at + 8].copy_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        let e = signatures(&bytes).unwrap_err();
        assert!(matches!(e, AuthenticodeError::Pkcs7 { .. }), "{e}");
    }
}
