//! Small readers of `/proc` files the init reports from (memory, its own
//! resident size). A leaf: it uses nothing else of the init.

#![forbid(unsafe_code)]

/// The text of a file, or "" when it cannot be read.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A `Key:   N kB` field of /proc/meminfo or /proc/PID/status, in KiB
/// (0 when absent).
fn kib_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `MemTotal` and `MemAvailable` in KiB.
pub fn meminfo(text: &str) -> (u64, u64) {
    (
        kib_field(text, "MemTotal:"),
        kib_field(text, "MemAvailable:"),
    )
}

/// The init's own resident set size in KiB: the second field of
/// /proc/self/statm (pages), the same count as `VmRSS` of
/// /proc/self/status, whose kernel side prints fifty fields more.
pub fn init_rss_kib() -> u64 {
    statm_rss_kib(&read("/proc/self/statm"), rustix::param::page_size() as u64)
}

/// Resident KiB from the text of a statm file (0 when unreadable).
fn statm_rss_kib(text: &str, page_size: u64) -> u64 {
    text.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_rss() {
        assert_eq!(
            meminfo("MemTotal:  2048 kB\nMemFree: 1 kB\nMemAvailable:   1024 kB\n"),
            (2048, 1024)
        );
        assert_eq!(meminfo("garbage"), (0, 0));
        assert_eq!(
            kib_field("Name:\tinit\nVmRSS:\t    1500 kB\n", "VmRSS:"),
            1500
        );
        assert_eq!(statm_rss_kib("1000 375 100 10 0 200 0\n", 4096), 1500);
        assert_eq!(statm_rss_kib("garbage", 4096), 0);
        // On the host the test process has some resident memory, and statm
        // agrees with status (read a moment apart: within 10%).
        let rss = init_rss_kib();
        let status = kib_field(&read("/proc/self/status"), "VmRSS:");
        assert!(rss > 0);
        assert!(rss.abs_diff(status) * 10 <= status, "{rss} vs {status}");
    }
}
