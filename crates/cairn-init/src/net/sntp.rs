//! SNTP (RFC 4330) client, packet side: a mode-3 request and the checked
//! answer's clock offset. The first good answer steps the clock; later
//! ones slew it with `adjtime` when the offset is small, else step again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds between 1900-01-01 (NTP era 0) and 1970-01-01.
const NTP_UNIX: u64 = 2_208_988_800;
/// Offsets smaller than this are slewed, larger ones stepped.
pub const SLEW_LIMIT: Duration = Duration::from_millis(500);
/// How often the clock is checked again once set.
pub const POLL: Duration = Duration::from_secs(1024);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SntpError {
    #[error("SNTP answer has {0} bytes, expected at least 48")]
    Short(usize),
    #[error("SNTP answer is not a server reply (mode {0})")]
    Mode(u8),
    #[error("SNTP server is unsynchronised (stratum {0} / leap 3)")]
    Unsynchronised(u8),
    #[error("SNTP answer does not echo our request time")]
    Origin,
    #[error("SNTP answer has a zero transmit time")]
    NoTime,
}

fn to_ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn from_ntp(v: u64) -> SystemTime {
    let secs = v >> 32;
    let nanos = ((v & 0xffff_ffff) * 1_000_000_000) >> 32;
    // Era 0 ends in 2036; timestamps below 1970+ are read as era 1.
    let secs = if secs < NTP_UNIX {
        secs + (1 << 32) - NTP_UNIX
    } else {
        secs - NTP_UNIX
    };
    UNIX_EPOCH + Duration::new(secs, nanos as u32)
}

/// `t` as an RFC 3339 UTC time to the second (`2026-01-31T12:00:00Z`),
/// for the log.
pub fn utc(t: SystemTime) -> String {
    cairn_manifest::date::utc(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// A client request stamped with `now`; returns the packet and the
/// transmit stamp to match the answer against.
pub fn request(now: SystemTime) -> ([u8; 48], u64) {
    let mut p = [0u8; 48];
    p[0] = 0x23; // LI 0, version 4, mode 3 (client)
    let t = to_ntp(now);
    p[40..48].copy_from_slice(&t.to_be_bytes());
    (p, t)
}

/// The offset (server minus local clock; positive: local is behind) from
/// an answer received at `received`, for a request stamped `sent`.
pub fn offset(answer: &[u8], sent_stamp: u64, received: SystemTime) -> Result<i128, SntpError> {
    if answer.len() < 48 {
        return Err(SntpError::Short(answer.len()));
    }
    let mode = answer[0] & 7;
    if mode != 4 {
        return Err(SntpError::Mode(mode));
    }
    let stratum = answer[1];
    if answer[0] >> 6 == 3 || stratum == 0 || stratum > 15 {
        return Err(SntpError::Unsynchronised(stratum));
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&answer[i..i + 8]);
        u64::from_be_bytes(b)
    };
    if word(24) != sent_stamp {
        return Err(SntpError::Origin);
    }
    if word(40) == 0 {
        return Err(SntpError::NoTime);
    }
    let nanos = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    let t1 = nanos(from_ntp(sent_stamp));
    let t2 = nanos(from_ntp(word(32)));
    let t3 = nanos(from_ntp(word(40)));
    let t4 = nanos(received);
    Ok(((t2 - t1) + (t3 - t4)) / 2)
}

/// Applies an offset in nanoseconds: step if `step` or large, else slew.
/// Returns whether it stepped.
pub fn apply(offset_ns: i128, step: bool) -> std::io::Result<bool> {
    let abs = offset_ns.unsigned_abs();
    if step || abs > SLEW_LIMIT.as_nanos() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        let target = (now + offset_ns).max(0);
        let ts = rustix::time::Timespec {
            tv_sec: (target / 1_000_000_000) as i64,
            tv_nsec: (target % 1_000_000_000) as i64,
        };
        rustix::time::clock_settime(rustix::time::ClockId::Realtime, ts)
            .map_err(std::io::Error::from)?;
        Ok(true)
    } else {
        let tv = libc::timeval {
            // `as _`: the field types differ between glibc and musl.
            tv_sec: (offset_ns / 1_000_000_000) as _,
            tv_usec: ((offset_ns % 1_000_000_000) / 1000) as _,
        };
        crate::sys::time::adjtime(&tv)?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(sent: u64, server: SystemTime) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x24;
        p[1] = 2;
        p[24..32].copy_from_slice(&sent.to_be_bytes());
        p[32..40].copy_from_slice(&to_ntp(server).to_be_bytes());
        p[40..48].copy_from_slice(&to_ntp(server).to_be_bytes());
        p
    }

    #[test]
    fn offset_of_a_clock_one_hour_behind() {
        let local = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (req, stamp) = request(local);
        assert_eq!(req[0], 0x23);
        let server = local + Duration::from_secs(3600);
        let off = offset(&answer(stamp, server), stamp, local).unwrap();
        assert!((off - 3_600_000_000_000).abs() < 1_000, "{off}");
    }

    #[test]
    fn bad_answers() {
        let local = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (_, stamp) = request(local);
        let good = answer(stamp, local);
        assert_eq!(offset(&good[..47], stamp, local), Err(SntpError::Short(47)));
        let mut a = good.clone();
        a[0] = 0x23;
        assert_eq!(offset(&a, stamp, local), Err(SntpError::Mode(3)));
        let mut a = good.clone();
        a[1] = 0;
        assert_eq!(offset(&a, stamp, local), Err(SntpError::Unsynchronised(0)));
        assert_eq!(offset(&good, stamp + 1, local), Err(SntpError::Origin));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(utc(t(978_307_200)), "2001-01-01T00:00:00Z");
        assert_eq!(utc(t(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(utc(t(1_795_322_866)), "2026-11-22T04:47:46Z");
        assert_eq!(utc(t(4_102_444_799)), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn ntp_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        let back = from_ntp(to_ntp(t));
        let d = back.duration_since(t).unwrap_or_else(|e| e.duration());
        assert!(d < Duration::from_micros(1));
    }
}
