//! The init's only door to raw system calls: every `unsafe` block of
//! cairn-init is in this module, each with a `// SAFETY:` line saying why
//! it is sound, behind a small typed function that returns `io::Result`
//! (modelled on sudo-rs's `src/system/`). The rest of the crate is
//! `#![forbid(unsafe_code)]` and calls rustix where rustix has a safe
//! wrapper, or these functions where it has none.
//!
//! - the blocked signal mask, the signalfd and `kill(-1, …)` ([`signal`]);
//! - interface flags, link-layer sockets, socket filters and
//!   `SO_BINDTODEVICE` ([`net`]);
//! - what a child does between `fork` and `exec`, the only `pre_exec` of
//!   the init ([`process::ChildSetup`], [`process::before_exec`]);
//! - `adjtime` ([`time`]);
//! - the watchdog timeout ioctl ([`watchdog`]).

// Clippy holds every unsafe block here to its `// SAFETY:` comment.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod net;
pub mod process;
pub mod signal;
pub mod time;
pub mod watchdog;

/// `Err(last OS error)` when a libc call returned a negative value.
fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
