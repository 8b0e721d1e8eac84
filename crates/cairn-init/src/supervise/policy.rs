//! Restart decisions: restart policy × how the service ended, and the delay
//! before the next start.
//!
//! The delay comes from a [`Backoff`] object per service. This first cut
//! uses [`FixedDelay`] (1 s); an exponential backoff only has to implement
//! the trait.

use std::fmt;
use std::time::Duration;

use cairn_manifest::RestartPolicy;

/// How a service run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// The program could not be started (exec failed).
    SpawnFailed,
}

impl Exit {
    /// Only `exit(0)` is a success.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "status {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
            Exit::SpawnFailed => f.write_str("failed to start"),
        }
    }
}

/// Delay before restarting a service.
pub trait Backoff: Send {
    /// The delay before the next start; called once per restart.
    fn next_delay(&mut self) -> Duration;
    /// Called when a run is considered healthy again.
    fn reset(&mut self);
}

/// The same delay every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedDelay(pub Duration);

impl Default for FixedDelay {
    fn default() -> Self {
        FixedDelay(Duration::from_secs(1))
    }
}

impl Backoff for FixedDelay {
    fn next_delay(&mut self) -> Duration {
        self.0
    }
    fn reset(&mut self) {}
}

/// What to do after a service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart(Duration),
    /// Leave it stopped (its `on_exit` action, if any, now applies).
    Stop,
}

/// Whether `policy` restarts a service that ended with `exit`.
pub fn should_restart(policy: RestartPolicy, exit: Exit) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.success(),
        RestartPolicy::Never => false,
    }
}

/// The decision for a service that ended with `exit`.
pub fn decide(policy: RestartPolicy, exit: Exit, backoff: &mut dyn Backoff) -> Decision {
    if should_restart(policy, exit) {
        Decision::Restart(backoff.next_delay())
    } else {
        Decision::Stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXITS: [Exit; 5] = [
        Exit::Code(0),
        Exit::Code(1),
        Exit::Code(255),
        Exit::Signal(9),
        Exit::SpawnFailed,
    ];

    #[test]
    fn policy_by_exit() {
        for exit in EXITS {
            assert!(should_restart(RestartPolicy::Always, exit), "{exit}");
            assert!(!should_restart(RestartPolicy::Never, exit), "{exit}");
            assert_eq!(
                should_restart(RestartPolicy::OnFailure, exit),
                exit != Exit::Code(0),
                "{exit}"
            );
        }
    }

    #[test]
    fn decision_uses_backoff_delay() {
        let mut b = FixedDelay(Duration::from_millis(250));
        assert_eq!(
            decide(RestartPolicy::OnFailure, Exit::Code(3), &mut b),
            Decision::Restart(Duration::from_millis(250))
        );
        assert_eq!(
            decide(RestartPolicy::OnFailure, Exit::Code(0), &mut b),
            Decision::Stop
        );
        assert_eq!(FixedDelay::default().next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn exit_display() {
        assert_eq!(Exit::Code(3).to_string(), "status 3");
        assert_eq!(Exit::Signal(15).to_string(), "signal 15");
    }
}
