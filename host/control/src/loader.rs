//! Turns component files (and uploads) into validated, compiled versions, and
//! hands them to the registry.
//!
//! Layout: `services/<name>/<semver>.wasm`, plus an optional
//! `services/<name>/service.toml`. A version is compiled off the request path
//! (or loaded from the compiled-component cache), checked to be a component
//! that exports the platform handler and uses no resources across services,
//! and linked. What cannot load gets a reason naming the problem; one bad file
//! never stops the other services.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use semver::Version;
use serde::Deserialize;

use crate::balance::{HashKey, InstancePool, Isolation, PoolPolicy, Strategy};
use crate::files;
use crate::links::ServiceLinks;
use crate::registry::{
    Activation, FailoverPolicy, Found, LoadedVersion, Refusal, Registry, VersionEntry, now_ms,
};
use crate::rpc;
use switchyard_platform::Platform;
use switchyard_runtime::outbound::AllowedHosts;
use switchyard_runtime::{Limits, MEMORY_CEILING, Provider, Runtime};
use switchyard_store::{ComponentStore, KeyValueStore, MAX_VALUE_CEILING, Quota, SharedVersion};

/// The largest component accepted, from a file or an upload.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;
/// The largest `service.toml` read.
const MAX_SETTINGS_BYTES: usize = 64 << 10;

/// Route prefixes the gateway keeps for itself.
const RESERVED_NAMES: [&str; 5] = ["admin", "healthz", "readyz", "metrics", "rpc"];

/// What loading needs from the rest of the host.
pub struct Loader {
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn KeyValueStore>,
    /// Where versions are shared with other hosts (a no-op on one host).
    pub components: Arc<dyn ComponentStore>,
    pub services_dir: PathBuf,
    /// Where compiled components are cached (under the data directory).
    pub cache_dir: PathBuf,
    /// A call's deadline where the service sets none.
    pub default_deadline: Duration,
}

/// `services/<name>/service.toml`. Every field is optional.
#[derive(Debug, Default, Deserialize)]
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcSettings {
    /// `"<interface>.<function>"` or a whole `"<interface>"`, the interface
    /// by its short or full name (see [`crate::rpc::publish`]).
    pub public: Vec<String>,
}

/// `[outbound]`: outgoing HTTP (`wasi:http/outgoing-handler`) is denied
/// except to these hosts.
#[derive(Debug, Default, Deserialize)]
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
#[derive(Debug, Deserialize)]
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
#[derive(Debug, Deserialize)]
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
#[derive(Debug, Deserialize)]
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
fn check_quota(quota: &Quota) -> Result<()> {
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
    fn policy(&self, default_deadline: Duration) -> Result<PoolPolicy> {
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

/// Is `name` usable as a service name (and so as the first path segment)?
pub fn valid_service_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !starts_with_letter || !rest_ok || name.len() > 63 {
        bail!(
            "{name:?} is not a valid service name: use 1 to 63 lower-case letters, digits \
             and '-', starting with a letter"
        );
    }
    if RESERVED_NAMES.contains(&name) {
        bail!("{name:?} is reserved for the host's own routes");
    }
    Ok(())
}

/// The version a component file stands for: `1.2.3.wasm` → 1.2.3.
pub fn version_of_file(file_name: &str) -> Result<Version> {
    let Some(stem) = file_name.strip_suffix(".wasm") else {
        bail!("{file_name:?} is not a .wasm file");
    };
    Version::parse(stem).with_context(|| format!("{stem:?} is not a semver version (like 1.2.0)"))
}

/// Is this a file the loader looks at? Hidden files (uploads in progress,
/// editors' temporaries) and other extensions are not.
pub fn is_component_file(file_name: &str) -> bool {
    file_name.ends_with(".wasm") && !file_name.starts_with('.')
}

impl Loader {
    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.services_dir.join(service)
    }

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

    /// Load every service under the services directory, then let the registry
    /// decide what serves, and warm one instance of each serving version.
    pub async fn load_all(&self) -> Result<()> {
        std::fs::create_dir_all(&self.services_dir).with_context(|| {
            format!(
                "cannot create the services directory {}",
                self.services_dir.display()
            )
        })?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.services_dir)? {
            let dir = entry?.path();
            if !dir.is_dir() {
                continue;
            }
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Err(e) = valid_service_name(&name) {
                if !name.starts_with('.') {
                    tracing::error!(dir = %dir.display(), "skipping: {e:#}");
                }
                continue;
            }
            found.push(self.load_service(&name, &dir).await);
        }
        self.registry.bootstrap(found).await;
        self.warm_serving().await;
        Ok(())
    }

    /// Create an instance ahead of traffic for every version that serves.
    pub async fn warm_serving(&self) {
        for service in self.registry.list() {
            for version in service.routing().versions() {
                if version.pool.instances() == 0
                    && let Err(e) = version.pool.warm().await
                {
                    tracing::warn!(service = %service.name, version = %version.version, "cannot pre-instantiate: {e:#}");
                }
            }
        }
    }

    async fn load_service(&self, name: &str, dir: &Path) -> Found<LoadedVersion> {
        let settings = self.settings(name);
        let mut found = Found {
            name: name.to_string(),
            mode: settings.as_ref().map(|s| s.activation).unwrap_or_default(),
            versions: BTreeMap::new(),
            refused_files: BTreeMap::new(),
        };
        let files = match std::fs::read_dir(dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(dir = %dir.display(), "cannot read: {e}");
                return found;
            }
        };
        for path in files.flatten().map(|f| f.path()) {
            let file_name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !is_component_file(&file_name) {
                continue;
            }
            let version = match version_of_file(&file_name) {
                Ok(version) => version,
                Err(e) => {
                    tracing::error!(file = %path.display(), "refused: {e:#}");
                    found.refused_files.insert(file_name, format!("{e:#}"));
                    continue;
                }
            };
            let entry = match &settings {
                Ok(_) => self.load_file(name, &version, &path).await,
                Err(e) => VersionEntry::Rejected(Refusal::Load {
                    reason: e.to_string(),
                }),
            };
            found.versions.insert(version, entry);
        }
        found
    }

    async fn load_file(&self, service: &str, version: &Version, path: &Path) -> VersionEntry {
        let bytes = match read_component(path).await {
            Ok(bytes) => bytes,
            Err(e) => return self.rejected(path, format!("{e:#}")),
        };
        match self.load_bytes(service, version, bytes).await {
            Ok(loaded) => VersionEntry::Loaded(loaded),
            Err(e) => self.rejected(path, format!("{e:#}")),
        }
    }

    /// A component file appeared or changed: load it and offer it to the
    /// registry, unless it is the very build that version already runs.
    pub async fn file_changed(&self, service: &str, version: &Version, path: &Path) {
        let bytes = match read_component(path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let entry = self.rejected(path, format!("{e:#}"));
                let mode = self.activation(service);
                let _ = self
                    .registry
                    .offer(service, mode, version.clone(), entry)
                    .await;
                return;
            }
        };
        let (digest, bytes) =
            match tokio::task::spawn_blocking(move || (switchyard_runtime::digest(&bytes), bytes))
                .await
            {
                Ok(hashed) => hashed,
                Err(e) => {
                    tracing::error!(file = %path.display(), "cannot hash: {e}");
                    return;
                }
            };
        if self.registry.has_build(service, version, &digest) {
            return;
        }
        let entry = match self.load_bytes(service, version, bytes).await {
            Ok(loaded) => VersionEntry::Loaded(loaded),
            Err(e) => self.rejected(path, format!("{e:#}")),
        };
        let mode = self.activation(service);
        match self
            .registry
            .offer(service, mode, version.clone(), entry)
            .await
        {
            Ok(state) => {
                tracing::info!(service, %version, ?state, file = %path.display(), "loaded");
                self.warm_serving().await;
            }
            Err(reason) => {
                tracing::error!(service, %version, file = %path.display(), "refused: {reason}")
            }
        }
    }

    /// The file of `version` is gone: the version goes, here and from what
    /// this host offers other hosts (their copies stay theirs).
    pub async fn file_removed(&self, service: &str, version: &Version) {
        self.registry.withdraw(service, version).await;
        if let Err(e) = self
            .components
            .unshare_component(service, &version.to_string())
            .await
        {
            tracing::warn!(service, %version, "cannot withdraw the component from other hosts: {e}");
        }
    }

    /// The service's activation mode, as its service.toml says now.
    pub fn activation(&self, service: &str) -> Activation {
        self.settings(service)
            .map(|s| s.activation)
            .unwrap_or_default()
    }

    fn rejected(&self, path: &Path, reason: String) -> VersionEntry {
        tracing::error!(file = %path.display(), "rejected: {reason}");
        VersionEntry::Rejected(Refusal::Load { reason })
    }

    /// Compile (or fetch from the cache), validate and link one component.
    pub async fn load_bytes(
        &self,
        service: &str,
        version: &Version,
        bytes: Vec<u8>,
    ) -> Result<Arc<LoadedVersion>> {
        let settings = self.settings(service)?;
        let runtime = self.runtime.clone();
        let cache_dir = self.cache_dir.clone();
        let (compiled, bytes) = tokio::task::spawn_blocking(move || {
            runtime
                .compile_cached(&bytes, &cache_dir)
                .map(|compiled| (compiled, bytes))
        })
        .await??;
        let component = &compiled.component;

        let imports = self.runtime.imports(component);
        let exports = self.runtime.exports(component);
        let published = rpc::publish(&exports, &settings.rpc.public)
            .with_context(|| format!("services/{service}/service.toml"))?;
        let crossing = imports
            .iter()
            .chain(&exports)
            .filter(|i| i.provider() == Provider::Service);
        for interface in crossing {
            if interface.uses_resources {
                bail!(
                    "{} uses resources, which cannot cross between services",
                    interface.name
                );
            }
        }
        let links = Arc::new(ServiceLinks {
            registry: Arc::downgrade(&self.registry),
        });
        let allowed = AllowedHosts::parse(&settings.outbound.allowed_hosts)
            .map_err(|e| anyhow::anyhow!("services/{service}/service.toml: [outbound] {e}"))?;
        let linked = self.runtime.link(component, &exports, links, allowed)?;
        let kind = linked.kind();

        let policy = settings
            .policy(self.default_deadline)
            .with_context(|| format!("services/{service}/service.toml"))?;
        let hash_key = settings
            .hash_key
            .as_deref()
            .map(HashKey::parse)
            .transpose()?;
        let (store, name, ver) = (self.store.clone(), service.to_string(), version.to_string());
        check_quota(&settings.storage)
            .with_context(|| format!("services/{service}/service.toml"))?;
        let quota = settings.storage;
        let config = Arc::new(settings.config);
        let platform = Box::new(move || {
            Platform::new(
                name.clone(),
                ver.clone(),
                store.clone(),
                config.clone(),
                quota,
            )
        });
        let pool = InstancePool::new(self.runtime.clone(), linked, platform, policy);
        pool.try_start()
            .await
            .map_err(|e| anyhow::anyhow!("cannot start an instance: {e:#}"))?;
        // Other hosts sharing the store can fetch it now.
        let shared = SharedVersion {
            service: service.to_string(),
            version: version.to_string(),
            digest: compiled.digest.clone(),
        };
        if let Err(e) = self.components.share_component(&shared, &bytes).await {
            tracing::warn!(service, %version, "cannot share the component with other hosts: {e}");
        }
        Ok(Arc::new(LoadedVersion {
            service: service.to_string(),
            version: version.clone(),
            version_text: version.to_string(),
            imports,
            exports,
            published,
            pool: Arc::new(pool),
            digest: compiled.digest,
            compile_time: compiled.compile_time,
            from_cache: compiled.from_cache,
            loaded_at_ms: now_ms(),
            requests: Default::default(),
            errors: Default::default(),
            hash_key,
            kind,
            failover: FailoverPolicy {
                enabled: settings.failover.enabled,
                threshold: settings.failover.threshold,
                window: Duration::from_millis(settings.failover.window_ms),
            },
            failures: Default::default(),
            request_metrics: Default::default(),
        }))
    }
}

/// The component file at `path`: a regular file of at most
/// [`MAX_COMPONENT_BYTES`], read off the async workers.
async fn read_component(path: &Path) -> Result<Vec<u8>> {
    let path = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || files::read_regular(&path, MAX_COMPONENT_BYTES));
    Ok(read.await??)
}
