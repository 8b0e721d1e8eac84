//! Disks that fail while mounted: the kernel's I/O error lines on
//! `/dev/kmsg`, matched to the `[[mount]]` whose device they name. The
//! mount is then shown as failing (status screen, `cairnctl status
//! --json`), and the init says so once per mount, however many errors
//! follow.

#![forbid(unsafe_code)]

use super::{MountState, MountStatus};

/// The device a kernel log line reports an I/O error on, if it is one:
/// the block layer's `I/O error, dev vdb, sector ...`, the buffer
/// cache's `Buffer I/O error on dev vdb1, logical block ...`, and a
/// filesystem's `EXT4-fs error (device vdb1): ...` (or `warning`).
pub fn io_error_device(text: &str) -> Option<&str> {
    let name = |rest: &str, end: &[char]| -> Option<usize> {
        let n = rest.find(end).unwrap_or(rest.len());
        // A kernel block device name: letters, digits and `-_.:!` (the
        // kernel writes `/` as `!`). Anything else is not a device.
        let ok = rest[..n]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:!".contains(&b));
        (n > 0 && n <= 32 && ok).then_some(n)
    };
    if let Some(i) = text.find("I/O error, dev ") {
        let rest = &text[i + "I/O error, dev ".len()..];
        return name(rest, &[',', ' ']).map(|n| &rest[..n]);
    }
    if let Some(i) = text.find("I/O error on dev ") {
        let rest = &text[i + "I/O error on dev ".len()..];
        return name(rest, &[',', ' ']).map(|n| &rest[..n]);
    }
    for fs in ["EXT4-fs error (device ", "EXT4-fs warning (device "] {
        if let Some(i) = text.find(fs) {
            let rest = &text[i + fs.len()..];
            return name(rest, &[')']).map(|n| &rest[..n]);
        }
    }
    None
}

/// Whether kernel device name `kdev` (`vdb`, `vdb1`, `nvme0n1p2`) is the
/// mounted device `dev` (`/dev/vdb1`) or the whole disk it is on.
fn names_device(kdev: &str, dev: &str) -> bool {
    let Some(base) = dev.strip_prefix("/dev/") else {
        return false;
    };
    if base == kdev {
        return true;
    }
    // The whole disk: the rest is a partition number, `p`-prefixed when
    // the disk's name ends in a digit (nvme0n1p2, mmcblk0p1).
    let Some(rest) = base.strip_prefix(kdev) else {
        return false;
    };
    let digits = if kdev.ends_with(|c: char| c.is_ascii_digit()) {
        match rest.strip_prefix('p') {
            Some(d) => d,
            None => return false,
        }
    } else {
        rest
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl MountStatus {
    /// Takes a kernel log line that reports an I/O error on `kdev`: a
    /// mount on that device becomes failing. True the first time only
    /// (the moment to say so).
    pub fn note_io_error(&mut self, kdev: &str, line: &str) -> bool {
        let dev = match &self.state {
            MountState::Mounted { dev, .. } if names_device(kdev, dev) => dev.clone(),
            _ => return false,
        };
        let error: String = line.chars().take(200).collect();
        self.state = MountState::Failing { dev, error };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_io_error_lines() {
        assert_eq!(
            io_error_device(
                "I/O error, dev vda, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 2"
            ),
            Some("vda")
        );
        assert_eq!(
            io_error_device("Buffer I/O error on dev vdb1, logical block 5, lost async page write"),
            Some("vdb1")
        );
        assert_eq!(
            io_error_device("EXT4-fs error (device vda): ext4_journal_check_start:83: comm x: Detected aborted journal"),
            Some("vda")
        );
        assert_eq!(
            io_error_device("EXT4-fs warning (device nvme0n1p2): ext4_end_bio:343: I/O error 10 writing to inode 12"),
            Some("nvme0n1p2")
        );
        assert_eq!(io_error_device("EXT4-fs (vda): mounted filesystem"), None);
        assert_eq!(io_error_device("I/O error, dev , sector 1"), None);
        // Found by the kmsg fuzz target: a name with a comma (or any byte
        // a kernel device name does not have) is not a device.
        assert_eq!(
            io_error_device("EXT4-fs error (device v\u{1}db1,-;EXT4-fs): x"),
            None
        );
        assert_eq!(
            io_error_device(&format!("I/O error, dev {}", "x".repeat(40))),
            None
        );
    }

    #[test]
    fn whole_disks_and_partitions() {
        assert!(names_device("vda", "/dev/vda"));
        assert!(names_device("vda", "/dev/vda1"));
        assert!(names_device("vda1", "/dev/vda1"));
        assert!(!names_device("vda", "/dev/vdab"));
        assert!(!names_device("vd", "/dev/vda1"));
        assert!(!names_device("vda2", "/dev/vda1"));
        assert!(names_device("nvme0n1", "/dev/nvme0n1p2"));
        assert!(!names_device("nvme0n1", "/dev/nvme0n12"));
        assert!(!names_device("vda", "vda"));
    }

    #[test]
    fn a_mount_fails_once_on_its_own_device() {
        let mut m = MountStatus {
            path: "/data".into(),
            source: "LABEL=DATA".into(),
            required: true,
            state: MountState::Mounted {
                dev: "/dev/vdb1".into(),
                formatted: false,
            },
        };
        assert!(!m.note_io_error("vda", "I/O error, dev vda, sector 1"));
        assert!(m.note_io_error("vdb", "I/O error, dev vdb, sector 9"));
        assert!(!m.note_io_error("vdb", "I/O error, dev vdb, sector 10"));
        assert_eq!(
            m.state,
            MountState::Failing {
                dev: "/dev/vdb1".into(),
                error: "I/O error, dev vdb, sector 9".into()
            }
        );
    }
}
