//! `cairn keys generate DIR`: a Secure Boot key hierarchy (PK, KEK, db) with
//! the files needed to enroll it.
//!
//! Keys and certificates (RSA-2048, SHA-256, self-signed X.509) are made by
//! the `openssl` command line tool, as is the PKCS#7 signature inside each
//! `.auth` file. The EFI signature lists (`.esl`) and the time-based
//! authenticated variable updates (`.auth`, UEFI 2.x section 8.2.2,
//! `EFI_VARIABLE_AUTHENTICATION_2`) are written here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `EFI_CERT_X509_GUID`.
pub const EFI_CERT_X509_GUID: Guid = Guid::parse_const("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
/// `EFI_CERT_TYPE_PKCS7_GUID`.
pub const EFI_CERT_TYPE_PKCS7_GUID: Guid =
    Guid::parse_const("4aafd29d-68df-49ee-8aa9-347d375665a7");
/// `EFI_GLOBAL_VARIABLE` (PK, KEK).
pub const EFI_GLOBAL_VARIABLE: Guid = Guid::parse_const("8be4df61-93ca-11d2-aa0d-00e098032b8c");
/// `EFI_IMAGE_SECURITY_DATABASE_GUID` (db, dbx).
pub const EFI_IMAGE_SECURITY_DATABASE_GUID: Guid =
    Guid::parse_const("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS |
/// TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
pub const AUTH_VAR_ATTRIBUTES: u32 = 0x01 | 0x02 | 0x04 | 0x20;
/// `WIN_CERT_TYPE_EFI_GUID`.
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0ef1;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite keys (use an empty directory)")]
    Exists { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start openssl (install the `openssl` package): {0}")]
    Spawn(std::io::Error),
    #[error("openssl {what} failed: {stderr}")]
    Openssl { what: String, stderr: String },
    #[error("openssl produced a PKCS#7 blob cairn cannot read: {0}")]
    BadPkcs7(String),
    #[error("cannot read random bytes from /dev/urandom: {0}")]
    Random(std::io::Error),
}

/// An EFI GUID, stored in its on-disk (mixed-endian) byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` at compile time.
    pub const fn parse_const(s: &str) -> Guid {
        match Guid::parse(s) {
            Some(g) => g,
            None => panic!("bad GUID constant"),
        }
    }

    /// Parse the textual form; `None` if malformed.
    pub const fn parse(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        // Text order of the 16 bytes.
        let mut text = [0u8; 16];
        let mut i = 0;
        let mut n = 0;
        while i < 36 {
            if b[i] == b'-' {
                i += 1;
                continue;
            }
            let (Some(hi), Some(lo)) = (hexval(b[i]), hexval(b[i + 1])) else {
                return None;
            };
            text[n] = hi << 4 | lo;
            n += 1;
            i += 2;
        }
        // The first three fields are little-endian on disk.
        let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut out = [0u8; 16];
        let mut k = 0;
        while k < 16 {
            out[k] = text[order[k]];
            k += 1;
        }
        Some(Guid(out))
    }

    /// A random (version 4) GUID.
    pub fn random() -> Result<Guid, KeysError> {
        use std::io::Read;
        let mut b = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(KeysError::Random)?;
        // Version 4 in the high nibble of time_hi (little-endian field: byte 7),
        // RFC 4122 variant in clock_seq_hi (byte 8).
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(Guid(b))
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

const fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// An `EFI_SIGNATURE_LIST` holding one X.509 certificate (DER).
pub fn esl_x509(owner: Guid, cert_der: &[u8]) -> Vec<u8> {
    let sig_size = 16 + cert_der.len();
    let list_size = 28 + sig_size;
    let mut v = Vec::with_capacity(list_size);
    v.extend_from_slice(&EFI_CERT_X509_GUID.0);
    v.extend_from_slice(&(list_size as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes()); // SignatureHeaderSize
    v.extend_from_slice(&(sig_size as u32).to_le_bytes());
    v.extend_from_slice(&owner.0);
    v.extend_from_slice(cert_der);
    v
}

/// An `EFI_TIME` (all padding, nanoseconds, time zone and daylight zero, as
/// time-based authenticated variables require), UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EfiTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl EfiTime {
    /// From seconds since the Unix epoch (UTC).
    pub fn from_unix(secs: u64) -> EfiTime {
        let days = (secs / 86400) as i64;
        let rem = secs % 86400;
        // Civil-from-days (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
        EfiTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&self.year.to_le_bytes());
        b[2] = self.month;
        b[3] = self.day;
        b[4] = self.hour;
        b[5] = self.minute;
        b[6] = self.second;
        b
    }
}

/// The bytes a time-based authenticated write signs:
/// VariableName (UTF-16LE, no terminator) || VendorGuid || Attributes ||
/// TimeStamp || Data.
pub fn signed_payload(name: &str, vendor: Guid, attrs: u32, time: EfiTime, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for u in name.encode_utf16() {
        v.extend_from_slice(&u.to_le_bytes());
    }
    v.extend_from_slice(&vendor.0);
    v.extend_from_slice(&attrs.to_le_bytes());
    v.extend_from_slice(&time.to_bytes());
    v.extend_from_slice(data);
    v
}

/// An `EFI_VARIABLE_AUTHENTICATION_2` header with `signed_data` (a DER
/// PKCS#7 SignedData), followed by the variable data.
pub fn auth2(time: EfiTime, signed_data: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&time.to_bytes());
    // WIN_CERTIFICATE_UEFI_GUID: Hdr (dwLength covers Hdr+CertType+CertData).
    let len = 8 + 16 + signed_data.len();
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&0x0200u16.to_le_bytes());
    v.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
    v.extend_from_slice(&EFI_CERT_TYPE_PKCS7_GUID.0);
    v.extend_from_slice(signed_data);
    v.extend_from_slice(data);
    v
}

/// Reads one DER header at `at`: (tag, header length, content length).
fn der_header(b: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let tag = *b.get(at)?;
    let first = *b.get(at + 1)?;
    if first < 0x80 {
        return Some((tag, 2, first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | *b.get(at + 2 + i)? as usize;
    }
    Some((tag, 2 + n, len))
}

/// The SignedData inside a PKCS#7 ContentInfo (what the UEFI spec puts in
/// `CertData`): `SEQUENCE { OID signedData, [0] { SignedData } }`.
pub fn strip_content_info(ci: &[u8]) -> Result<&[u8], KeysError> {
    let bad = |what: &str| KeysError::BadPkcs7(what.to_string());
    let (t, h, _) = der_header(ci, 0).ok_or_else(|| bad("no ContentInfo"))?;
    if t != 0x30 {
        return Err(bad("ContentInfo is not a SEQUENCE"));
    }
    let (t, oh, ol) = der_header(ci, h).ok_or_else(|| bad("no content type"))?;
    if t != 0x06 {
        return Err(bad("content type is not an OID"));
    }
    let at = h + oh + ol;
    let (t, eh, _) = der_header(ci, at).ok_or_else(|| bad("no [0] content"))?;
    if t != 0xa0 {
        return Err(bad("content is not [0]"));
    }
    let sd = at + eh;
    let (t, sh, sl) = der_header(ci, sd).ok_or_else(|| bad("no SignedData"))?;
    if t != 0x30 {
        return Err(bad("SignedData is not a SEQUENCE"));
    }
    ci.get(sd..sd + sh + sl)
        .ok_or_else(|| bad("SignedData truncated"))
}

fn openssl(what: &str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, KeysError> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(KeysError::Spawn)?;
    if !out.status.success() {
        return Err(KeysError::Openssl {
            what: what.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// A detached PKCS#7 signature (DER ContentInfo, no signed attributes,
/// SHA-256) over the file `payload`.
pub fn pkcs7_sign(payload: &Path, key: &Path, cert: &Path) -> Result<Vec<u8>, KeysError> {
    openssl(
        "smime -sign",
        &[
            "smime".as_ref(),
            "-sign".as_ref(),
            "-binary".as_ref(),
            "-noattr".as_ref(),
            "-md".as_ref(),
            "sha256".as_ref(),
            "-outform".as_ref(),
            "DER".as_ref(),
            "-in".as_ref(),
            payload.as_os_str(),
            "-signer".as_ref(),
            cert.as_os_str(),
            "-inkey".as_ref(),
            key.as_os_str(),
        ],
    )
}

/// The three levels of the hierarchy, and which one signs each.
pub const LEVELS: [(&str, &str, Guid); 3] = [
    ("PK", "PK", EFI_GLOBAL_VARIABLE),
    ("KEK", "PK", EFI_GLOBAL_VARIABLE),
    ("db", "KEK", EFI_IMAGE_SECURITY_DATABASE_GUID),
];

/// What `generate` wrote.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub dir: PathBuf,
    pub owner: Guid,
    pub files: Vec<PathBuf>,
}

impl std::fmt::Display for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.dir.display();
        writeln!(
            f,
            "Secure Boot keys written to {d} (owner GUID {}):",
            self.owner
        )?;
        for p in &self.files {
            writeln!(f, "  {}", p.display())?;
        }
        writeln!(
            f,
            "\nSign images with the db key:\n  \
             [sign]\n  key = \"{d}/db.key\"\n  cert = \"{d}/db.crt\"\n  \
             (or: cairn build --sign-key {d}/db.key --sign-cert {d}/db.crt ...)\n\n\
             Enroll (PK first: the firmware leaves setup mode and then checks that\n\
             KEK.auth is signed by PK and db.auth by KEK):\n\
             - firmware in setup mode, from Linux with efivarfs mounted: write each\n  \
             .auth behind the attributes 0x27 (NV, BS, RT, time-based auth) in one write:\n    \
             cd /sys/firmware/efi/efivars\n    \
             (printf '\\047\\0\\0\\0'; cat {d}/PK.auth) > /tmp/v && dd if=/tmp/v of=PK-{global} bs=64k\n    \
             (printf '\\047\\0\\0\\0'; cat {d}/KEK.auth) > /tmp/v && dd if=/tmp/v of=KEK-{global} bs=64k\n    \
             (printf '\\047\\0\\0\\0'; cat {d}/db.auth) > /tmp/v && dd if=/tmp/v of=db-{db} bs=64k\n\
             - firmware setup menu / KeyTool.efi: load db.auth, KEK.auth, PK.auth \
             (or the .esl / .cer files) from a FAT drive\n\
             - a QEMU/OVMF variable store (virt-firmware from PyPI):\n    \
             virt-fw-vars -i /usr/share/OVMF/OVMF_VARS_4M.fd -o vars.fd --secure-boot \\\n      \
             --set-pk {g} {d}/PK.crt --add-kek {g} {d}/KEK.crt --add-db {g} {d}/db.crt\n    \
             cairn run --secure-boot --vars vars.fd MANIFEST\n\n\
             Keep PK.key and KEK.key offline: whoever holds them controls what this machine boots.",
            g = self.owner,
            global = EFI_GLOBAL_VARIABLE,
            db = EFI_IMAGE_SECURITY_DATABASE_GUID,
        )
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeysError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeysError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                KeysError::Create {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    f.write_all(bytes).map_err(|source| KeysError::Create {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, KeysError> {
    std::fs::read(path).map_err(|source| KeysError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Generate PK, KEK and db into `dir` (created if missing; existing key
/// files are never overwritten). `common_name` prefixes each certificate's
/// CN; `now` is the Unix time stamped into the `.auth` files.
pub fn generate(dir: &Path, common_name: &str, now: u64) -> Result<KeySet, KeysError> {
    std::fs::create_dir_all(dir).map_err(|source| KeysError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    for (name, _, _) in LEVELS {
        for ext in ["key", "crt", "cer", "esl", "auth"] {
            let p = dir.join(format!("{name}.{ext}"));
            if p.exists() {
                return Err(KeysError::Exists { path: p });
            }
        }
    }
    let owner = Guid::random()?;
    let time = EfiTime::from_unix(now);
    let mut files = Vec::new();
    let scratch = tempfile::tempdir_in(dir).map_err(|source| KeysError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    for (name, _, _) in LEVELS {
        let key = dir.join(format!("{name}.key"));
        let crt = dir.join(format!("{name}.crt"));
        let cer = dir.join(format!("{name}.cer"));
        let tmp_key = scratch.path().join(format!("{name}.key"));
        let subj = format!("/CN={common_name} {name}/");
        openssl(
            "req (key generation)",
            &[
                "req".as_ref(),
                "-new".as_ref(),
                "-x509".as_ref(),
                "-newkey".as_ref(),
                "rsa:2048".as_ref(),
                "-nodes".as_ref(),
                "-sha256".as_ref(),
                "-days".as_ref(),
                "3650".as_ref(),
                "-subj".as_ref(),
                subj.as_ref(),
                "-keyout".as_ref(),
                tmp_key.as_os_str(),
                "-out".as_ref(),
                scratch.path().join(format!("{name}.crt")).as_os_str(),
            ],
        )?;
        write_new(&key, &read(&tmp_key)?, 0o600)?;
        write_new(
            &crt,
            &read(&scratch.path().join(format!("{name}.crt")))?,
            0o644,
        )?;
        let der = openssl(
            "x509 (DER conversion)",
            &[
                "x509".as_ref(),
                "-in".as_ref(),
                crt.as_os_str(),
                "-outform".as_ref(),
                "DER".as_ref(),
            ],
        )?;
        write_new(&cer, &der, 0o644)?;
        write_new(
            &dir.join(format!("{name}.esl")),
            &esl_x509(owner, &der),
            0o644,
        )?;
        files.extend([key, crt, cer, dir.join(format!("{name}.esl"))]);
    }
    for (name, signer, vendor) in LEVELS {
        let esl = read(&dir.join(format!("{name}.esl")))?;
        let payload = signed_payload(name, vendor, AUTH_VAR_ATTRIBUTES, time, &esl);
        let pfile = scratch.path().join(format!("{name}.payload"));
        std::fs::write(&pfile, &payload).map_err(|source| KeysError::Create {
            path: pfile.clone(),
            source,
        })?;
        let ci = pkcs7_sign(
            &pfile,
            &dir.join(format!("{signer}.key")),
            &dir.join(format!("{signer}.crt")),
        )?;
        let sd = strip_content_info(&ci)?;
        let auth = dir.join(format!("{name}.auth"));
        write_new(&auth, &auth2(time, sd, &esl), 0o644)?;
        files.push(auth);
    }
    let guid = dir.join("GUID");
    std::fs::write(&guid, format!("{owner}\n")).map_err(|source| KeysError::Create {
        path: guid.clone(),
        source,
    })?;
    files.push(guid);
    Ok(KeySet {
        dir: dir.to_path_buf(),
        owner,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip_and_layout() {
        let g = EFI_GLOBAL_VARIABLE;
        assert_eq!(g.to_string(), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
        assert_eq!(&g.0[..4], &[0x61, 0xdf, 0xe4, 0x8b]);
        assert_eq!(&g.0[8..], &[0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c]);
        assert!(Guid::parse("8be4df61-93ca-11d2-aa0d-00e098032b8").is_none());
        assert!(Guid::parse("8be4df61x93ca-11d2-aa0d-00e098032b8c").is_none());
        assert!(Guid::parse("8be4df61-93ca-11d2-aa0d-00e098032bzz").is_none());
        let r = Guid::random().unwrap();
        assert_eq!(Guid::parse(&r.to_string()), Some(r));
        assert_eq!(r.to_string().as_bytes()[14], b'4');
    }

    #[test]
    fn efi_time() {
        // 2023-11-14 22:13:20 UTC.
        let t = EfiTime::from_unix(1_700_000_000);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2023, 11, 14, 22, 13, 20)
        );
        let b = t.to_bytes();
        assert_eq!(&b[..7], &[0xe7, 0x07, 11, 14, 22, 13, 20]);
        assert!(b[7..].iter().all(|&x| x == 0));
        let t = EfiTime::from_unix(951_782_400); // 2000-02-29
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
    }

    #[test]
    fn esl_layout() {
        let owner = EFI_GLOBAL_VARIABLE;
        let e = esl_x509(owner, b"CERT");
        assert_eq!(e.len(), 28 + 16 + 4);
        assert_eq!(&e[..16], &EFI_CERT_X509_GUID.0);
        assert_eq!(u32::from_le_bytes(e[16..20].try_into().unwrap()), 48);
        assert_eq!(u32::from_le_bytes(e[20..24].try_into().unwrap()), 0);
        assert_eq!(u32::from_le_bytes(e[24..28].try_into().unwrap()), 20);
        assert_eq!(&e[28..44], &owner.0);
        assert_eq!(&e[44..], b"CERT");
    }

    #[test]
    fn payload_layout() {
        let t = EfiTime::from_unix(0);
        let p = signed_payload("db", EFI_IMAGE_SECURITY_DATABASE_GUID, 0x27, t, b"D");
        assert_eq!(&p[..4], &[b'd', 0, b'b', 0]);
        assert_eq!(&p[4..20], &EFI_IMAGE_SECURITY_DATABASE_GUID.0);
        assert_eq!(&p[20..24], &[0x27, 0, 0, 0]);
        assert_eq!(&p[24..40], &t.to_bytes());
        assert_eq!(&p[40..], b"D");
    }

    #[test]
    fn strip_content_info_rejects_garbage() {
        assert!(strip_content_info(b"").is_err());
        assert!(strip_content_info(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        // SEQ { OID 1.2, [0] { SEQ {} } }
        let ci = [0x30, 0x07, 0x06, 0x01, 0x2a, 0xa0, 0x02, 0x30, 0x00];
        assert_eq!(strip_content_info(&ci).unwrap(), &[0x30, 0x00]);
    }

    /// The whole set, checked with openssl: every .auth carries a PKCS#7
    /// signature by the right parent key over exactly the bytes the firmware
    /// will reconstruct.
    #[test]
    fn generated_auth_files_verify() {
        let dir = tempfile::tempdir().unwrap();
        let set = generate(dir.path(), "cairn test", 1_700_000_000).unwrap();
        let d = dir.path();
        assert!(set.to_string().contains("db.key"));
        // Refuses to overwrite.
        assert!(matches!(
            generate(d, "again", 0),
            Err(KeysError::Exists { .. })
        ));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.join("PK.key")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        for (name, signer, vendor) in LEVELS {
            let esl = std::fs::read(d.join(format!("{name}.esl"))).unwrap();
            let cer = std::fs::read(d.join(format!("{name}.cer"))).unwrap();
            assert_eq!(&esl[44..], &cer[..]);
            let auth = std::fs::read(d.join(format!("{name}.auth"))).unwrap();
            let time = EfiTime::from_unix(1_700_000_000);
            assert_eq!(&auth[..16], &time.to_bytes());
            let len = u32::from_le_bytes(auth[16..20].try_into().unwrap()) as usize;
            assert_eq!(&auth[20..24], &[0x00, 0x02, 0xf1, 0x0e]);
            assert_eq!(&auth[24..40], &EFI_CERT_TYPE_PKCS7_GUID.0);
            let sd = &auth[40..16 + len];
            assert_eq!(&auth[16 + len..], &esl[..]);
            // Re-wrap the SignedData in a ContentInfo for openssl.
            let mut body = vec![
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
            ];
            body.extend(der_wrap(0xa0, sd));
            let ci = der_wrap(0x30, &body);
            let sig = d.join(format!("{name}.sig"));
            std::fs::write(&sig, ci).unwrap();
            let payload = d.join(format!("{name}.payload"));
            std::fs::write(
                &payload,
                signed_payload(name, vendor, AUTH_VAR_ATTRIBUTES, time, &esl),
            )
            .unwrap();
            let ok = |ca: &str| {
                Command::new("openssl")
                    .args(["smime", "-verify", "-binary", "-inform", "DER", "-in"])
                    .arg(&sig)
                    .arg("-content")
                    .arg(&payload)
                    .arg("-CAfile")
                    .arg(d.join(format!("{ca}.crt")))
                    .args(["-purpose", "any", "-out", "/dev/null"])
                    .output()
                    .unwrap()
                    .status
                    .success()
            };
            assert!(ok(signer), "{name}.auth is not signed by {signer}");
            let other = if signer == "PK" { "db" } else { "PK" };
            assert!(!ok(other), "{name}.auth verifies against {other}");
        }
    }

    fn der_wrap(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = body.len();
        if n < 0x80 {
            v.push(n as u8);
        } else if n < 0x100 {
            v.extend([0x81, n as u8]);
        } else {
            v.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(body);
        v
    }
}
