//! Restart decisions: restart policy × how the service ended, and the delay
//! before the next start.
//!
//! The delay comes from a [`Backoff`] object per service: [`Exponential`]
//! (`restart_delay`, doubled per restart up to `restart_delay_max`, reset
//! after a run that stayed up [`HEALTHY`]; after `restart_limit` quick
//! failures in a row the service is given up), or [`FixedDelay`].

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
    /// Whether to stop restarting (the service is then `failed`).
    fn give_up(&self) -> bool {
        false
    }
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

/// A run that lasted this long resets the backoff.
pub const HEALTHY: Duration = Duration::from_secs(10);

/// Exponential backoff with a cap and a limit of quick restarts in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exponential {
    pub start: Duration,
    pub max: Duration,
    /// Quick restarts in a row allowed; 0 = no limit.
    pub limit: u32,
    /// Restarts since the last healthy run.
    pub count: u32,
}

impl Exponential {
    pub fn new(start: Duration, max: Duration, limit: u32) -> Self {
        Exponential {
            start,
            max: max.max(start),
            limit,
            count: 0,
        }
    }

    /// Whether the limit of restarts in a row has been used up.
    pub fn exhausted(&self) -> bool {
        self.limit != 0 && self.count >= self.limit
    }
}

impl Backoff for Exponential {
    fn next_delay(&mut self) -> Duration {
        let shift = self.count.min(31);
        self.count = self.count.saturating_add(1);
        self.start
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }

    fn reset(&mut self) {
        self.count = 0;
    }

    fn give_up(&self) -> bool {
        self.exhausted()
    }
}

/// What to do after a service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart(Duration),
    /// Leave it stopped (its `on_exit` action, if any, now applies).
    Stop,
    /// Restart limit reached: the service is failed and left alone.
    GiveUp,
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
/// `ran` is how long the run lasted: a healthy run resets the backoff.
pub fn decide(
    policy: RestartPolicy,
    exit: Exit,
    ran: Duration,
    backoff: &mut dyn Backoff,
) -> Decision {
    if ran >= HEALTHY {
        backoff.reset();
    }
    if !should_restart(policy, exit) {
        Decision::Stop
    } else if backoff.give_up() {
        Decision::GiveUp
    } else {
        Decision::Restart(backoff.next_delay())
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
        let z = Duration::ZERO;
        assert_eq!(
            decide(RestartPolicy::OnFailure, Exit::Code(3), z, &mut b),
            Decision::Restart(Duration::from_millis(250))
        );
        assert_eq!(
            decide(RestartPolicy::OnFailure, Exit::Code(0), z, &mut b),
            Decision::Stop
        );
        assert_eq!(FixedDelay::default().next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn exit_display() {
        assert_eq!(Exit::Code(3).to_string(), "status 3");
        assert_eq!(Exit::Signal(15).to_string(), "signal 15");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn exponential_schedule_caps_and_gives_up() {
        let mut b = Exponential::new(ms(100), ms(1000), 6);
        let quick = ms(5);
        let mut delays = Vec::new();
        loop {
            match decide(RestartPolicy::Always, Exit::Code(1), quick, &mut b) {
                Decision::Restart(d) => delays.push(d.as_millis()),
                Decision::GiveUp => break,
                Decision::Stop => panic!("always never stops"),
            }
        }
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        // A healthy run resets the schedule, even after giving up.
        assert_eq!(
            decide(RestartPolicy::Always, Exit::Code(1), HEALTHY, &mut b),
            Decision::Restart(ms(100))
        );
        assert_eq!(
            decide(RestartPolicy::Always, Exit::Code(1), quick, &mut b),
            Decision::Restart(ms(200))
        );
    }

    #[test]
    fn exponential_without_limit_never_gives_up_and_never_overflows() {
        let mut b = Exponential::new(Duration::from_secs(1), Duration::from_secs(60), 0);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
        assert!(!b.give_up());
        assert_eq!(b.next_delay(), Duration::from_secs(60));
    }
}
