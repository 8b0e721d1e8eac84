//! `cairnctl`: the control client. A placeholder until the control socket
//! exists (supervision issue).

/// Exit status of the placeholder.
pub const NOT_IMPLEMENTED: i32 = 2;

/// Runs `cairnctl`; returns the process exit status.
pub fn main(_args: &[std::ffi::OsString]) -> i32 {
    eprintln!("cairnctl: not implemented yet (control socket arrives with the supervision issue)");
    NOT_IMPLEMENTED
}
