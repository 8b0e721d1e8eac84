//! Targets services can wait for with `after` (`network-online`,
//! `mounts`), reached by name.
//!
//! A target nobody [`hold`]s counts as reached. A subsystem that provides
//! one (networking, disks) calls [`hold`] early in boot, before the
//! supervisor starts services, and [`reach`] once it is there.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;

static TARGETS: Mutex<BTreeMap<String, bool>> = Mutex::new(BTreeMap::new());

fn with<T>(f: impl FnOnce(&mut BTreeMap<String, bool>) -> T) -> T {
    f(&mut TARGETS.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Marks `name` as not reached until [`reach`] is called.
pub fn hold(name: &str) {
    with(|t| {
        t.entry(name.to_string()).or_insert(false);
    });
}

/// Marks `name` as reached; services waiting for it may start.
pub fn reach(name: &str) {
    with(|t| {
        if t.insert(name.to_string(), true) != Some(true) {
            crate::info!("target {name} reached");
        }
    });
}

/// Whether `name` is reached (true unless held and not yet reached).
pub fn is_reached(name: &str) -> bool {
    with(|t| t.get(name).copied().unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_reached() {
        assert!(is_reached("test-target-a"));
        hold("test-target-a");
        assert!(!is_reached("test-target-a"));
        hold("test-target-a");
        reach("test-target-a");
        assert!(is_reached("test-target-a"));
        hold("test-target-a"); // holding again does not un-reach it
        assert!(is_reached("test-target-a"));
    }
}
