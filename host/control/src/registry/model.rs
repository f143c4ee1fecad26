//! The registry's plain data: what it routes to, where traffic goes, what a
//! version's state is, what survives a restart, and why a change is refused.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use semver::Version;
use serde::{Deserialize, Serialize};

use super::events::HistoryEntry;
use crate::compat::Incompatibility;
pub use crate::compat::Refusal;
pub use crate::deployable::Deployable;
pub use crate::failover::{FailoverPolicy, FailureWindow};

/// The largest weight one version may have in a traffic split: fine enough
/// for a 0.01 % canary, small enough that no sum of weights can overflow.
pub const MAX_WEIGHT: u32 = 10_000;

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Traffic goes to it.
    Active,
    /// Compiled and valid; no traffic.
    Standby,
    /// No new traffic, but calls that started on it are still running.
    Draining,
    /// Refused; the reason says why.
    Rejected,
    /// Taken out of traffic by failover; the reason says why. Activating it
    /// again clears the mark.
    Failed,
    /// Failing past its failover threshold, yet still taking traffic: no
    /// healthy version was left to take over. The reason says why;
    /// activating a version clears the mark.
    Failing,
}

/// A version as known to the registry: loaded, or refused with a reason.
pub enum VersionEntry<V> {
    Loaded(Arc<V>),
    Rejected(Refusal),
}

impl<V> Clone for VersionEntry<V> {
    fn clone(&self) -> Self {
        match self {
            VersionEntry::Loaded(v) => VersionEntry::Loaded(v.clone()),
            VersionEntry::Rejected(r) => VersionEntry::Rejected(r.clone()),
        }
    }
}

/// Whether a new highest version takes traffic when it arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// The highest version becomes active as soon as it is valid.
    #[default]
    Auto,
    /// New versions wait on standby until activated through the admin API.
    Manual,
}

/// Where a service's traffic goes: one version, or several by weight. The first
/// entry is the primary, the one reported as active and kept on rollback.
pub struct Routing<V> {
    entries: Vec<(Arc<V>, u32)>,
}

impl<V: Deployable> Routing<V> {
    pub fn none() -> Routing<V> {
        Routing {
            entries: Vec::new(),
        }
    }

    pub fn single(version: Arc<V>) -> Routing<V> {
        Routing {
            entries: vec![(version, 100)],
        }
    }

    /// Several versions by weight; the first is the primary.
    pub fn split(entries: Vec<(Arc<V>, u32)>) -> Routing<V> {
        Routing { entries }
    }

    /// A version for one call, drawn by weight.
    pub fn pick(&self) -> Option<Arc<V>> {
        match self.entries.as_slice() {
            [] => None,
            [(only, _)] => Some(only.clone()),
            entries => {
                // Weights are validated (see `check_split`); u64 keeps even
                // unvalidated ones from overflowing.
                let total: u64 = entries.iter().map(|(_, w)| u64::from(*w)).sum();
                let mut ticket = fastrand::u64(0..total.max(1));
                for (version, weight) in entries {
                    if ticket < u64::from(*weight) {
                        return Some(version.clone());
                    }
                    ticket -= u64::from(*weight);
                }
                entries.first().map(|(v, _)| v.clone())
            }
        }
    }

    pub fn primary(&self) -> Option<&Arc<V>> {
        self.entries.first().map(|(v, _)| v)
    }

    pub fn versions(&self) -> impl Iterator<Item = &Arc<V>> {
        self.entries.iter().map(|(v, _)| v)
    }

    /// Each version with its weight, primary first.
    pub fn weights(&self) -> impl Iterator<Item = (&Version, u32)> {
        self.entries.iter().map(|(v, w)| (v.version(), *w))
    }

    pub fn is_split(&self) -> bool {
        self.entries.len() > 1
    }

    pub fn weight_of(&self, version: &Version) -> Option<u32> {
        self.entries
            .iter()
            .find(|(v, _)| v.version() == version)
            .map(|(_, w)| *w)
    }

    /// Does this exact build take traffic?
    pub fn routes_to(&self, version: &Arc<V>) -> bool {
        self.versions().any(|v| Arc::ptr_eq(v, version))
    }

    pub(super) fn without(&self, version: &Version) -> Routing<V> {
        Routing {
            entries: self
                .entries
                .iter()
                .filter(|(v, _)| v.version() != version)
                .cloned()
                .collect(),
        }
    }

    pub(super) fn with_replaced(&self, loaded: &Arc<V>) -> Routing<V> {
        Routing {
            entries: self
                .entries
                .iter()
                .map(|(v, w)| {
                    let v = if v.version() == loaded.version() {
                        loaded
                    } else {
                        v
                    };
                    (v.clone(), *w)
                })
                .collect(),
        }
    }
}

/// Why an admin request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no service named {service:?}")]
    UnknownService { service: String },
    #[error("service {service} has no version {version}")]
    UnknownVersion { service: String, version: Version },
    #[error("{service} {version} was rejected: {why}")]
    Rejected {
        service: String,
        version: Version,
        why: Box<Refusal>,
    },
    #[error("{service} {version} cannot serve: {why}")]
    Incompatible {
        service: String,
        version: Version,
        why: Box<Incompatibility>,
    },
    #[error("service {service} has no earlier version to roll back to")]
    NoPrevious { service: String },
    #[error("invalid traffic split: {why}")]
    InvalidSplit { why: SplitError },
    #[error(
        "the deployment of {service} was changed on another host meanwhile; \
         this change was not made: look again and retry"
    )]
    Conflict { service: String },
}

/// Why a traffic split was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("weight {weight} is above the largest allowed, {MAX_WEIGHT}")]
    WeightTooLarge { weight: u32 },
    #[error("at least one version needs a weight above 0")]
    NothingWeighted,
}

/// Whether `weights` make a usable split: each at most [`MAX_WEIGHT`], and
/// at least one above 0.
pub fn check_split<'a>(weights: impl IntoIterator<Item = &'a u32>) -> Result<(), RegistryError> {
    let mut total = 0u64;
    for &weight in weights {
        if weight > MAX_WEIGHT {
            return Err(RegistryError::InvalidSplit {
                why: SplitError::WeightTooLarge { weight },
            });
        }
        total += u64::from(weight);
    }
    if total == 0 {
        return Err(RegistryError::InvalidSplit {
            why: SplitError::NothingWeighted,
        });
    }
    Ok(())
}

/// What survives a restart, per service.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub active: Option<Version>,
    #[serde(default)]
    pub traffic: Vec<(Version, u32)>,
    #[serde(default)]
    pub previous: Vec<Version>,
    /// Every version the host has seen, so that one dropped while the host was
    /// stopped can be told from one the operator rolled back from.
    #[serde(default)]
    pub known: BTreeSet<Version>,
    #[serde(default)]
    pub history: VecDeque<HistoryEntry>,
    /// Versions failover took out of traffic, and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<Version, String>,
    /// Versions refused because they do not fit the other services, and
    /// why: they load again at a restart, and stay refused (a load failure
    /// is found again by loading, so is not kept).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<Version, Refusal>,
}
