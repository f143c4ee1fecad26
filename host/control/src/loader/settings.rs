//! `services/<name>/service.toml`: its schema, reading it (never past
//! `MAX_SETTINGS_BYTES`, never blocking on a special file) and checking what
//! it asks for. It decides nothing about versions: the loader applies it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::Loader;
use crate::balance::{Isolation, PoolPolicy, Strategy};
use crate::files;
use crate::registry::Activation;
use switchyard_runtime::{Limits, MEMORY_CEILING};
use switchyard_store::{MAX_VALUE_CEILING, Quota};

/// The largest `service.toml` read.
const MAX_SETTINGS_BYTES: usize = 64 << 10;

/// `services/<name>/service.toml`. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// `auto` (default): the highest version takes traffic when it arrives;
    /// `manual`: new versions wait on standby until activated.
    pub activation: Activation,
    /// `pooled` (default) or `per-request`.
    pub isolation: Isolation,
    /// `round-robin` (default), `random`, `least-outstanding` or `consistent-hash`.
    pub strategy: Strategy,
    /// For `consistent-hash`: `header:<name>` or `path:<n>`.
    pub hash_key: Option<String>,
    pub instances: InstanceSettings,
    pub limits: LimitSettings,
    pub failover: FailoverSettings,
    /// `[storage]`: what the service may keep in the key-value store.
    pub storage: Quota,
    /// Values the service reads through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// `[outbound]`: where the service's outgoing HTTP may go.
    pub outbound: OutboundSettings,
    /// `[rpc]`: what anonymous clients may call over `/rpc`.
    pub rpc: RpcSettings,
}

/// `[rpc]`: a service's exported functions are for other services; over
/// `/rpc` anonymous clients reach only those named here (operators, with
/// the admin token, reach all).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcSettings {
    /// `"<interface>.<function>"` or a whole `"<interface>"`, the interface
    /// by its short or full name (see [`crate::rpc::publish`]).
    pub public: Vec<String>,
}

/// `[outbound]`: outgoing HTTP (`wasi:http/outgoing-handler`) is denied
/// except to these hosts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSettings {
    /// `host:port`, or `host` for the scheme's default port; `*` for any.
    pub allowed_hosts: Vec<String>,
}

/// Why a `service.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: files::FileError,
    },
    #[error("{} is invalid: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: toml::de::Error,
    },
}

/// `[instances]`: how many instances each version may have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceSettings {
    /// Created ahead of traffic.
    pub min: usize,
    /// Never more than this; calls beyond wait for one to free up.
    pub max: usize,
    /// How long a call waits for a busy instance before a 503.
    pub queue_timeout_ms: u64,
}

impl Default for InstanceSettings {
    fn default() -> Self {
        // Two cores: four instances keep both busy while one waits on I/O.
        InstanceSettings {
            min: 1,
            max: 4,
            queue_timeout_ms: 1000,
        }
    }
}

/// `[limits]`: what one instance and one call may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Per call; default: the host's `--request-timeout-ms`.
    pub deadline_ms: Option<u64>,
    /// Linear memory per instance.
    pub memory_mib: usize,
    /// A pooled instance whose memory grew beyond this is replaced after
    /// its call; default: 4 × its initial memory, at least 16 MiB.
    pub retained_memory_mib: Option<usize>,
    /// How deep a chain of service-to-service calls may go.
    pub call_depth: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            deadline_ms: None,
            memory_mib: 64,
            retained_memory_mib: None,
            call_depth: 8,
        }
    }
}

/// `[failover]`: when a failing version is taken out of traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverSettings {
    pub enabled: bool,
    /// Failures (traps, timeouts, memory) within the window that trigger it.
    pub threshold: usize,
    pub window_ms: u64,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        FailoverSettings {
            enabled: true,
            threshold: 5,
            window_ms: 10_000,
        }
    }
}

/// Whether a `[storage]` table asks for a usable quota.
pub(super) fn check_quota(quota: &Quota) -> Result<()> {
    if quota.max_value_bytes == 0 || quota.max_value_bytes > MAX_VALUE_CEILING {
        bail!("[storage] max_value_bytes must be from 1 to {MAX_VALUE_CEILING}");
    }
    if quota.max_keys == 0 || quota.max_bytes == 0 {
        bail!("[storage] max_keys and max_bytes must be at least 1");
    }
    Ok(())
}

impl ServiceSettings {
    /// The pool policy these settings ask for, or what is wrong with them.
    pub(super) fn policy(&self, default_deadline: Duration) -> Result<PoolPolicy> {
        let i = &self.instances;
        if i.max == 0 || i.max > MAX_INSTANCES || i.min > i.max {
            bail!("[instances] needs 0 <= min <= max and 1 <= max <= {MAX_INSTANCES}");
        }
        let memory = self.limits.memory_mib << 20;
        if memory == 0 || memory > MEMORY_CEILING {
            bail!(
                "[limits] memory_mib must be from 1 to {}",
                MEMORY_CEILING >> 20
            );
        }
        if self
            .limits
            .retained_memory_mib
            .is_some_and(|r| r == 0 || r > self.limits.memory_mib)
        {
            bail!("[limits] retained_memory_mib must be from 1 to memory_mib");
        }
        if self.limits.call_depth == 0 {
            bail!("[limits] call_depth must be at least 1");
        }
        if self.strategy == Strategy::ConsistentHash && self.hash_key.is_none() {
            bail!(
                "strategy \"consistent-hash\" needs a hash_key (\"header:<name>\" or \"path:<n>\")"
            );
        }
        if self.failover.threshold == 0 {
            bail!("[failover] threshold must be at least 1");
        }
        Ok(PoolPolicy {
            isolation: self.isolation,
            strategy: self.strategy,
            min: i.min,
            max: i.max,
            queue_timeout: Duration::from_millis(i.queue_timeout_ms),
            limits: Limits {
                memory_bytes: memory,
                retained_memory_bytes: self.limits.retained_memory_mib.map(|r| r << 20),
                deadline: self
                    .limits
                    .deadline_ms
                    .map_or(default_deadline, Duration::from_millis),
                call_depth: self.limits.call_depth,
            },
        })
    }
}

/// The most instances one version may have.
const MAX_INSTANCES: usize = 64;

impl Loader {
    /// Read `services/<name>/service.toml` (absent: the defaults).
    pub fn settings(&self, service: &str) -> Result<ServiceSettings, SettingsError> {
        let path = self.service_dir(service).join("service.toml");
        let text = match files::read_regular(&path, MAX_SETTINGS_BYTES) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.is_not_found() => return Ok(ServiceSettings::default()),
            Err(source) => return Err(SettingsError::Unreadable { path, source }),
        };
        toml::from_str(&text).map_err(|source| SettingsError::Invalid { path, source })
    }

    /// The service's activation mode, as its service.toml says now.
    pub fn activation(&self, service: &str) -> Activation {
        self.settings(service)
            .map(|s| s.activation)
            .unwrap_or_default()
    }
}
