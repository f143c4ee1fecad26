//! The failover rule: how many failures of a version, within how long, move
//! its service's traffic back to the previous good version.
//!
//! Plain data and arithmetic over failure times; acting on a crossing is
//! the registry's, never this file's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a version's failures move its service's traffic back to the previous
/// good version.
#[derive(Debug, Clone, Copy)]
pub struct FailoverPolicy {
    pub enabled: bool,
    /// Failures within `window` that trigger it.
    pub threshold: usize,
    pub window: Duration,
}

/// A version's recent failures (traps, timeouts, memory), for the failover rule.
#[derive(Debug, Default)]
pub struct FailureWindow {
    times: VecDeque<Instant>,
}

impl FailureWindow {
    /// Note a failure at `now`; true when it makes `policy.threshold`
    /// failures within `policy.window` (and the count starts over).
    pub fn crosses(&mut self, policy: &FailoverPolicy, now: Instant) -> bool {
        if !policy.enabled {
            return false;
        }
        self.times.push_back(now);
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.window)
        {
            self.times.pop_front();
        }
        if self.times.len() >= policy.threshold {
            self.times.clear();
            true
        } else {
            false
        }
    }
}
