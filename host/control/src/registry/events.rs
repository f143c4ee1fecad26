//! What the registry tells the world: a typed [`Event`] for every change,
//! sent to subscribers (metrics, logs, a dashboard), and its line in the
//! service's history, where it is kept as a sentence.

use std::fmt;
use std::time::Duration;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::compat::Refusal;

/// Something that happened to a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub service: String,
    /// When, in ms since the Unix epoch (for a swap: just before it, so that
    /// no call served by the new routing predates its event).
    pub at_ms: u64,
    pub change: Change,
}

/// What changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A version took all traffic.
    Activated { version: Version, cause: Cause },
    /// A new build of a serving version took its place.
    Replaced { version: Version },
    /// Traffic was split across versions (primary first).
    Split { weights: Vec<(Version, u32)> },
    /// A failing version's traffic moved to `to`.
    FailedOver {
        failed: Version,
        to: Version,
        failure: Failing,
    },
    /// A version failed and no healthy one was left to take its traffic.
    NoFallback { failed: Version, failure: Failing },
    /// A version was refused.
    Rejected { version: Version, why: Refusal },
    /// A new build of a serving version was refused; the old one serves on.
    Refused { version: Version, why: Refusal },
    /// A version arrived: on standby, or serving where it completes what
    /// the stored record routes to.
    Added { version: Version },
    /// A version's file was removed.
    Removed { version: Version },
}

/// Why a version was activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// It is the highest valid version and the service activates automatically.
    Auto,
    /// The same, for a version that arrived while the host was stopped.
    AutoWhileStopped,
    /// An operator asked for it.
    Admin,
    /// An operator rolled back (from the version named, if one served).
    Rollback { from: Option<Version> },
    /// The serving version's file was removed.
    Fallback { removed: Version },
    /// It served before the restart, or is the best the host found.
    StartUp,
}

/// How a version came to be failed over: its own failures crossed the
/// service's threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub failures: usize,
    pub window: Duration,
    /// The last failure, as a sentence.
    pub last: String,
}

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failures within {:?} (the last: {})",
            self.failures, self.window, self.last
        )
    }
}

/// The kind of a change, as the history and the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Activated,
    Replaced,
    Traffic,
    Failover,
    /// Failover found no healthy version to move the traffic to.
    NoFallback,
    Rejected,
    Refused,
    Added,
    Removed,
}

impl Action {
    /// The name it goes by in the history and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Activated => "activated",
            Action::Replaced => "replaced",
            Action::Traffic => "traffic",
            Action::Failover => "failover",
            Action::NoFallback => "no-fallback",
            Action::Rejected => "rejected",
            Action::Refused => "refused",
            Action::Added => "added",
            Action::Removed => "removed",
        }
    }
}

impl Change {
    /// Whether it decides where the service's traffic goes.
    pub fn routes(&self) -> bool {
        match self {
            Change::Activated { .. }
            | Change::Split { .. }
            | Change::FailedOver { .. }
            | Change::NoFallback { .. } => true,
            Change::Replaced { .. }
            | Change::Rejected { .. }
            | Change::Refused { .. }
            | Change::Added { .. }
            | Change::Removed { .. } => false,
        }
    }

    pub fn action(&self) -> Action {
        match self {
            Change::Activated { .. } => Action::Activated,
            Change::Replaced { .. } => Action::Replaced,
            Change::Split { .. } => Action::Traffic,
            Change::FailedOver { .. } => Action::Failover,
            Change::NoFallback { .. } => Action::NoFallback,
            Change::Rejected { .. } => Action::Rejected,
            Change::Refused { .. } => Action::Refused,
            Change::Added { .. } => Action::Added,
            Change::Removed { .. } => Action::Removed,
        }
    }

    /// The version the history line is about: the one that serves after a
    /// failover, none for a split.
    pub fn version(&self) -> Option<&Version> {
        match self {
            Change::Activated { version, .. }
            | Change::Replaced { version }
            | Change::Rejected { version, .. }
            | Change::Refused { version, .. }
            | Change::Added { version }
            | Change::Removed { version } => Some(version),
            Change::FailedOver { to, .. } => Some(to),
            Change::NoFallback { failed, .. } => Some(failed),
            Change::Split { .. } => None,
        }
    }
}

impl Event {
    /// Its line in the service's history.
    pub fn entry(&self) -> HistoryEntry {
        HistoryEntry {
            at_ms: self.at_ms,
            action: self.change.action(),
            version: self.change.version().map(Version::to_string),
            reason: self.to_string(),
        }
    }
}

impl fmt::Display for Event {
    /// Why it happened, as the history says it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.change {
            Change::Activated { cause, .. } => match cause {
                Cause::Auto => f.write_str("the highest version (auto)"),
                Cause::AutoWhileStopped => {
                    f.write_str("the highest version, added while the host was stopped (auto)")
                }
                Cause::Admin => f.write_str("activated through the admin API"),
                Cause::Rollback { from: Some(from) } => write!(f, "rollback from {from}"),
                Cause::Rollback { from: None } => f.write_str("rollback"),
                Cause::Fallback { removed } => write!(f, "{removed} was removed"),
                Cause::StartUp => f.write_str("serving after start-up"),
            },
            Change::Replaced { .. } => f.write_str("a new build of a serving version"),
            Change::Split { weights } => {
                f.write_str("split: ")?;
                for (i, (version, weight)) in weights.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{version} {weight}")?;
                }
                Ok(())
            }
            Change::FailedOver {
                failed, failure, ..
            } => write!(f, "{} {failed} failed: {failure}", self.service),
            Change::NoFallback { failure, .. } => write!(
                f,
                "failed ({failure}), and no healthy version is left to take over"
            ),
            Change::Rejected { why, .. } => write!(f, "{why}"),
            Change::Refused { why, .. } => write!(
                f,
                "the new file was refused, the old build keeps serving: {why}"
            ),
            Change::Added { .. } => f.write_str("on standby"),
            Change::Removed { .. } => f.write_str("its file was removed"),
        }
    }
}

/// One line of a service's history (kept across restarts, shown by the admin
/// API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub at_ms: u64,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub reason: String,
}
