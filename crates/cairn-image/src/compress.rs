//! Initramfs compression, deterministic and in formats the kernel unpacks.
//!
//! - zstd: level 19, single-threaded, content size and checksum in the frame.
//! - gzip: best compression, mtime 0, no file name, OS byte "unknown".
//! - xz: LZMA2 preset 9 with a **CRC32** check (the kernel refuses CRC64).
//!   The dictionary is capped at the input size rounded up to a power of two
//!   (at least 4 KiB, at most 8 MiB): the kernel's decompressor allocates the
//!   whole dictionary named in the header, and preset 9's 64 MiB would not fit
//!   a small guest. Same input, same output.
//! - none: the bytes unchanged.
//!
//! zstd 19 is slow (about 1.3 s for a 3.5 MB initramfs, 3.3 s for 5.5 MB) but
//! its output is 10-20% smaller than level 9's (0.2 s); image size is the
//! budget that matters, so [`compress_cached`] keeps level 19 and remembers
//! each result by the SHA-256 of its input: rebuilding unchanged contents
//! costs a hash, not a compression.
//!
//! [`Effort::Fast`] (`cairn build --fast`, for development builds) trades
//! size for time: zstd level 3 on every core (1 MiB jobs, so an initramfs of
//! a few MB is split between them; the output is the same for any number of
//! workers), xz preset 1, gzip level 1. The release setting is unchanged.

use std::io::{Read, Write};
use std::path::Path;

use cairn_manifest::Compression;

const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const CPIO_MAGIC: &[u8] = b"07070";
const XZ_DICT_MIN: u32 = 4 << 10;
const XZ_DICT_MAX: u32 = 8 << 20;

/// Errors from compressing or decompressing.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("{format} compression failed: {source}")]
    Compress {
        format: &'static str,
        source: std::io::Error,
    },
    #[error("{format} decompression failed: {source}")]
    Decompress {
        format: &'static str,
        source: std::io::Error,
    },
    #[error(
        "unrecognised data format: first bytes {head:02x?}, expected zstd, gzip, xz or an \
         uncompressed cpio archive"
    )]
    UnknownFormat { head: Vec<u8> },
}

/// How hard to compress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Effort {
    /// The smallest output (release builds; the default).
    #[default]
    Release,
    /// Quick, on every core where the format allows (development builds).
    Fast,
}

/// Compresses `data` with `c` at the release setting.
pub fn compress(data: &[u8], c: Compression) -> Result<Vec<u8>, CompressError> {
    compress_with(data, c, Effort::Release)
}

/// Compresses `data` with `c` at `effort`.
pub fn compress_with(
    data: &[u8],
    c: Compression,
    effort: Effort,
) -> Result<Vec<u8>, CompressError> {
    match c {
        Compression::Zstd => {
            zstd_compress(data, effort).map_err(|source| CompressError::Compress {
                format: "zstd",
                source,
            })
        }
        Compression::Gzip => {
            gzip_compress(data, effort).map_err(|source| CompressError::Compress {
                format: "gzip",
                source,
            })
        }
        Compression::Xz => xz_compress(data, effort).map_err(|source| CompressError::Compress {
            format: "xz",
            source,
        }),
        Compression::None => Ok(data.to_vec()),
    }
}

/// Compressed results kept in the cache; older ones are removed.
const CACHE_KEEP: usize = 32;
/// Bumped when a format's parameters change (so do its outputs).
const CACHE_VERSION: &str = "1";

/// [`compress`], with results remembered in `cache/initramfs/` by the
/// SHA-256 of `data` and the format. A cache that cannot be read or
/// written is only a slower build.
pub fn compress_cached(
    data: &[u8],
    c: Compression,
    cache: &Path,
) -> Result<Vec<u8>, CompressError> {
    compress_cached_with(data, c, Effort::Release, cache)
}

/// [`compress_cached`] at `effort` (remembered apart from the release
/// setting's results).
pub fn compress_cached_with(
    data: &[u8],
    c: Compression,
    effort: Effort,
    cache: &Path,
) -> Result<Vec<u8>, CompressError> {
    use sha2::{Digest, Sha256};
    if c == Compression::None {
        return Ok(data.to_vec());
    }
    let digest = Sha256::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let dir = cache.join("initramfs");
    let setting = match effort {
        Effort::Release => "",
        Effort::Fast => ".fast",
    };
    let file = dir.join(format!("{hex}.{c:?}{setting}.v{CACHE_VERSION}").to_lowercase());
    if let Ok(bytes) = std::fs::read(&file) {
        // The name is the input's hash, but the file is only trusted once
        // it decompresses, in the expected format, to exactly this input:
        // a damaged or replaced entry would otherwise go into the image.
        match decompress_auto(&bytes) {
            Ok((got, plain)) if got == c && plain == data => return Ok(bytes),
            _ => eprintln!(
                "cairn: warning: the cached initramfs {} is not this archive compressed \
                 (damaged or replaced); compressing again",
                file.display()
            ),
        }
    }
    let out = compress_with(data, c, effort)?;
    if std::fs::create_dir_all(&dir).is_ok() {
        let tmp = dir.join(format!(".tmp-{}-{hex}", std::process::id()));
        if std::fs::write(&tmp, &out).is_ok() && std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        prune(&dir);
    }
    Ok(out)
}

/// Keeps the [`CACHE_KEEP`] most recently written entries of `dir`.
fn prune(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= CACHE_KEEP {
        return;
    }
    files.sort();
    for (_, p) in &files[..files.len() - CACHE_KEEP] {
        let _ = std::fs::remove_file(p);
    }
}

/// zstd jobs of the fast setting: small enough that an initramfs of a few
/// MB keeps two cores busy.
const ZSTD_FAST_JOB: u32 = 1 << 20;

fn zstd_compress(data: &[u8], effort: Effort) -> std::io::Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let level = match effort {
        Effort::Release => 19,
        Effort::Fast => 3,
    };
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    c.set_parameter(CParameter::ChecksumFlag(true))?;
    if effort == Effort::Fast {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // With one worker or more, zstd's output does not depend on how
        // many: the build stays reproducible across machines.
        c.set_parameter(CParameter::NbWorkers(u32::try_from(cores).unwrap_or(1)))?;
        c.set_parameter(CParameter::JobSize(ZSTD_FAST_JOB))?;
    }
    c.compress(data)
}

fn gzip_compress(data: &[u8], effort: Effort) -> std::io::Result<Vec<u8>> {
    let level = match effort {
        Effort::Release => flate2::Compression::best(),
        Effort::Fast => flate2::Compression::fast(),
    };
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), level);
    enc.write_all(data)?;
    enc.finish()
}

fn xz_dict_size(len: usize) -> u32 {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    len.clamp(XZ_DICT_MIN, XZ_DICT_MAX).next_power_of_two()
}

fn xz_compress(data: &[u8], effort: Effort) -> std::io::Result<Vec<u8>> {
    use xz2::stream::{Check, Filters, LzmaOptions, Stream};
    let mut opts = LzmaOptions::new_preset(match effort {
        Effort::Release => 9,
        Effort::Fast => 1,
    })?;
    opts.dict_size(xz_dict_size(data.len()));
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    let stream = Stream::new_stream_encoder(&filters, Check::Crc32)?;
    let mut enc = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
    enc.write_all(data)?;
    enc.finish()
}

/// Detects the format by its magic bytes and decompresses. Data that starts
/// like a cpio archive is returned unchanged as [`Compression::None`].
pub fn decompress_auto(data: &[u8]) -> Result<(Compression, Vec<u8>), CompressError> {
    if data.starts_with(ZSTD_MAGIC) {
        let out = zstd::stream::decode_all(data).map_err(|source| CompressError::Decompress {
            format: "zstd",
            source,
        })?;
        Ok((Compression::Zstd, out))
    } else if data.starts_with(GZIP_MAGIC) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|source| CompressError::Decompress {
                format: "gzip",
                source,
            })?;
        Ok((Compression::Gzip, out))
    } else if data.starts_with(XZ_MAGIC) {
        let mut out = Vec::new();
        xz2::read::XzDecoder::new_multi_decoder(data)
            .read_to_end(&mut out)
            .map_err(|source| CompressError::Decompress {
                format: "xz",
                source,
            })?;
        Ok((Compression::Xz, out))
    } else if data.starts_with(CPIO_MAGIC) {
        Ok((Compression::None, data.to_vec()))
    } else {
        Err(CompressError::UnknownFormat {
            head: data.iter().take(8).copied().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn payload() -> Vec<u8> {
        let mut v = b"070701".to_vec();
        for i in 0..30_000u32 {
            v.extend_from_slice(format!("line {} {}\n", i, i % 7).as_bytes());
        }
        v
    }

    const ALL: [Compression; 4] = [
        Compression::Zstd,
        Compression::Gzip,
        Compression::Xz,
        Compression::None,
    ];

    #[test]
    fn round_trip_and_deterministic() {
        let data = payload();
        for c in ALL {
            let packed = compress(&data, c).unwrap();
            if c != Compression::None {
                assert!(packed.len() < data.len() / 4, "{c:?} did not compress");
            }
            assert_eq!(
                packed,
                compress(&data, c).unwrap(),
                "{c:?} not deterministic"
            );
            let (found, out) = decompress_auto(&packed).unwrap();
            assert_eq!(found, c);
            assert_eq!(out, data, "{c:?} round trip");
        }
    }

    #[test]
    fn fast_setting_round_trips_reproducibly_and_is_cached_apart() {
        // More than two zstd jobs' worth, so the workers split it.
        let mut data = Vec::new();
        while data.len() < 3 * ZSTD_FAST_JOB as usize {
            data.extend_from_slice(&payload());
        }
        for c in ALL {
            let fast = compress_with(&data, c, Effort::Fast).unwrap();
            assert_eq!(
                fast,
                compress_with(&data, c, Effort::Fast).unwrap(),
                "{c:?} fast not deterministic"
            );
            let (found, out) = decompress_auto(&fast).unwrap();
            assert_eq!((found, out == data), (c, true), "{c:?} fast round trip");
        }
        // zstd's output does not depend on the number of workers.
        let one = {
            use zstd::zstd_safe::CParameter;
            let mut z = zstd::bulk::Compressor::new(3).unwrap();
            z.set_parameter(CParameter::ContentSizeFlag(true)).unwrap();
            z.set_parameter(CParameter::ChecksumFlag(true)).unwrap();
            z.set_parameter(CParameter::NbWorkers(1)).unwrap();
            z.set_parameter(CParameter::JobSize(ZSTD_FAST_JOB)).unwrap();
            z.compress(&data).unwrap()
        };
        assert_eq!(
            one,
            compress_with(&data, Compression::Zstd, Effort::Fast).unwrap()
        );
        // The release setting is unchanged, and the cache keeps the two apart.
        let dir = tempfile::tempdir().unwrap();
        let small = compress_cached(&data, Compression::Zstd, dir.path()).unwrap();
        let quick =
            compress_cached_with(&data, Compression::Zstd, Effort::Fast, dir.path()).unwrap();
        assert_eq!(small, compress(&data, Compression::Zstd).unwrap());
        assert_eq!(
            quick,
            compress_with(&data, Compression::Zstd, Effort::Fast).unwrap()
        );
        assert_ne!(small, quick);
        assert_eq!(
            std::fs::read_dir(dir.path().join("initramfs"))
                .unwrap()
                .count(),
            2
        );
    }

    #[test]
    fn cached_compression_matches_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = payload();
        for c in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Xz,
            Compression::None,
        ] {
            let a = compress_cached(&data, c, dir.path()).unwrap();
            assert_eq!(a, compress(&data, c).unwrap(), "{c:?}");
            assert_eq!(compress_cached(&data, c, dir.path()).unwrap(), a);
        }
        let entries = std::fs::read_dir(dir.path().join("initramfs"))
            .unwrap()
            .count();
        assert_eq!(
            entries, 3,
            "one entry per compressed format, none for `none`"
        );
        // The cache is really used: a planted entry that decompresses to
        // the same archive (here compressed at another level) is returned
        // as is.
        let f = std::fs::read_dir(dir.path().join("initramfs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".zstd.v1"))
            .unwrap();
        let other_level = compress_with(&data, Compression::Zstd, Effort::Fast).unwrap();
        assert_ne!(other_level, compress(&data, Compression::Zstd).unwrap());
        std::fs::write(&f, &other_level).unwrap();
        assert_eq!(
            compress_cached(&data, Compression::Zstd, dir.path()).unwrap(),
            other_level
        );
        // One that does not (garbage, another archive, another format) is
        // not trusted: the build compresses again and repairs the entry.
        let right = compress(&data, Compression::Zstd).unwrap();
        for planted in [
            b"planted".to_vec(),
            compress(b"another archive", Compression::Zstd).unwrap(),
            compress(&data, Compression::Gzip).unwrap(),
        ] {
            std::fs::write(&f, &planted).unwrap();
            assert_eq!(
                compress_cached(&data, Compression::Zstd, dir.path()).unwrap(),
                right
            );
            assert_eq!(std::fs::read(&f).unwrap(), right);
        }
        // Different input, different entry.
        let other = compress_cached(b"other", Compression::Zstd, dir.path()).unwrap();
        assert_eq!(decompress_auto(&other).unwrap().1, b"other");
    }

    #[test]
    fn empty_input_round_trips() {
        for c in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let packed = compress(&[], c).unwrap();
            assert_eq!(decompress_auto(&packed).unwrap(), (c, vec![]));
        }
    }

    #[test]
    fn xz_uses_crc32_and_a_small_dictionary() {
        let packed = compress(&payload(), Compression::Xz).unwrap();
        // Stream header: 6 magic bytes, then stream flags 0x00 and the check
        // id (0x01 = CRC32; 0x04 would be CRC64).
        assert_eq!(&packed[..6], XZ_MAGIC);
        assert_eq!(packed[6], 0x00);
        assert_eq!(packed[7], 0x01);
        assert_eq!(xz_dict_size(10), 4096);
        assert_eq!(xz_dict_size(3_000_000), 4 << 20);
        assert_eq!(xz_dict_size(usize::MAX), 8 << 20);
    }

    #[test]
    fn gzip_header_has_no_name_and_zero_mtime() {
        let packed = compress(b"hello", Compression::Gzip).unwrap();
        assert_eq!(&packed[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(packed[3], 0, "FLG: no name, no extra");
        assert_eq!(&packed[4..8], &[0, 0, 0, 0], "mtime 0");
    }

    #[test]
    fn zstd_frame_has_content_size() {
        let packed = compress(&payload(), Compression::Zstd).unwrap();
        let size = zstd::zstd_safe::get_frame_content_size(&packed).unwrap();
        assert_eq!(size, Some(payload().len() as u64));
    }

    #[test]
    fn unknown_and_corrupt_input_errors() {
        assert!(matches!(
            decompress_auto(b"hello world"),
            Err(CompressError::UnknownFormat { .. })
        ));
        for c in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let mut packed = compress(&payload(), c).unwrap();
            let n = packed.len();
            packed.truncate(n / 2);
            assert!(
                decompress_auto(&packed).is_err(),
                "{c:?} truncated accepted"
            );
        }
    }

    #[test]
    fn external_tools_accept_outputs() {
        let data = payload();
        for (c, tool, args) in [
            (Compression::Zstd, "zstd", &["-d", "-c", "-q"][..]),
            (Compression::Gzip, "gzip", &["-d", "-c"][..]),
            (Compression::Xz, "xz", &["-d", "-c"][..]),
        ] {
            let packed = compress(&data, c).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("blob");
            std::fs::write(&file, &packed).unwrap();
            let out = match Command::new(tool)
                .args(args)
                .arg(&file)
                .stderr(Stdio::piped())
                .output()
            {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("note: skipping {tool}: {e}");
                    continue;
                }
            };
            assert!(
                out.status.success(),
                "{tool}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, data, "{tool} output differs");
            // `-t` integrity check too.
            let st = Command::new(tool).arg("-t").arg(&file).status().unwrap();
            assert!(st.success(), "{tool} -t failed");
        }
    }
}
