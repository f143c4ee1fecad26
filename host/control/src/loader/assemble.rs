//! Assembling one version from a component's bytes: compiled (or taken
//! from the cache), checked against its settings, linked, its pool started
//! and the component shared with other hosts.

use std::sync::Arc;
use std::time::Duration;

use semver::Version;

use super::Loader;
use super::settings::ServiceSettings;
use super::settings::check_quota;
use crate::balance::{HashKey, InstancePool};
use crate::compat::{AtStage, LoadStage, Refusal};
use crate::links::ServiceLinks;
use crate::registry::{FailoverPolicy, LoadedVersion, now_ms};
use crate::rpc;
use switchyard_platform::Platform;
use switchyard_runtime::outbound::AllowedHosts;
use switchyard_runtime::{Compiled, Provider};
use switchyard_store::SharedVersion;

impl Loader {
    /// Compile (or fetch from the cache), validate and link one component,
    /// with its service's settings as `service.toml` says now; shared with
    /// the other hosts once it is accepted.
    pub async fn load_bytes(
        &self,
        service: &str,
        version: &Version,
        bytes: Vec<u8>,
    ) -> Result<Arc<LoadedVersion>, Refusal> {
        let settings = self.settings(service).at(LoadStage::Settings)?;
        let runtime = self.runtime.clone();
        let cache_dir = self.cache_dir.clone();
        let (compiled, bytes) = tokio::task::spawn_blocking(move || {
            runtime
                .compile_cached(&bytes, &cache_dir)
                .map(|compiled| (compiled, bytes))
        })
        .await
        .at(LoadStage::Compile)?
        .at(LoadStage::Compile)?;
        let loaded = self.assemble(service, version, compiled, settings).await?;
        // Other hosts sharing the store can fetch it now.
        let shared = SharedVersion {
            service: service.to_string(),
            version: version.to_string(),
            digest: loaded.digest.clone(),
        };
        if let Err(e) = self.components.share_component(&shared, &bytes).await {
            tracing::warn!(service, %version, "cannot share the component with other hosts: {e}");
        }
        Ok(Arc::new(loaded))
    }

    /// `service.toml` of `service` changed: every version it has loaded is
    /// built again from its compiled component with the new settings and
    /// takes its old build's place (new requests go to the new build, calls
    /// running finish on the old one). Settings that do not parse, or that
    /// a version cannot run with, are refused as a whole: the reason goes
    /// to the log and to the service's refused files (`service.toml`), and
    /// every version keeps its settings.
    pub async fn reconfigure(&self, service: &str) {
        const FILE: &str = "service.toml";
        let versions: Vec<Arc<LoadedVersion>> = self
            .registry
            .read_book(service, |book| book.loaded_versions().cloned().collect())
            .unwrap_or_default();
        if versions.is_empty() {
            return;
        }
        let refuse = |why: String| async move {
            tracing::error!(
                service,
                "{FILE} refused, the settings before it stay: {why}"
            );
            self.registry.refuse_file(service, FILE, &why).await;
        };
        let settings = match self.settings(service) {
            Ok(settings) => settings,
            Err(e) => return refuse(format!("{e:#}")).await,
        };
        let mode = settings.activation;
        let mut builds = Vec::with_capacity(versions.len());
        for old in &versions {
            let compiled = Compiled {
                component: old.component.clone(),
                digest: old.digest.clone(),
                from_cache: true,
                compile_time: old.compile_time,
            };
            match self
                .assemble(service, &old.version, compiled, settings.clone())
                .await
            {
                Ok(build) => builds.push(Arc::new(build.succeeding(old))),
                Err(why) => return refuse(format!("version {}: {why}", old.version)).await,
            }
        }
        self.registry.forget_file(service, FILE);
        let replaced = self.registry.reconfigure(service, mode, builds).await;
        self.warm_serving().await;
        tracing::info!(service, versions = replaced, "{FILE} changed: applied");
    }

    /// One version from its compiled component and its settings: checked,
    /// linked, its pool able to start.
    async fn assemble(
        &self,
        service: &str,
        version: &Version,
        compiled: Compiled,
        settings: ServiceSettings,
    ) -> Result<LoadedVersion, Refusal> {
        let in_settings = |e: anyhow::Error| {
            Refusal::load(
                LoadStage::Settings,
                e.context(format!("services/{service}/service.toml")),
            )
        };
        let component = &compiled.component;

        let imports = self.runtime.imports(component);
        let exports = self.runtime.exports(component);
        let published =
            rpc::publish(&exports, &settings.rpc.public).map_err(|e| in_settings(e.into()))?;
        let crossing = imports
            .iter()
            .chain(&exports)
            .filter(|i| i.provider() == Provider::Service);
        for interface in crossing {
            if interface.uses_resources {
                return Err(Refusal::load(
                    LoadStage::Interfaces,
                    format!(
                        "{} uses resources, which cannot cross between services",
                        interface.name
                    ),
                ));
            }
        }
        let links = Arc::new(ServiceLinks {
            registry: Arc::downgrade(&self.registry),
        });
        let allowed = AllowedHosts::parse(&settings.outbound.allowed_hosts)
            .map_err(|e| in_settings(anyhow::anyhow!("[outbound] {e}")))?;
        let linked = self
            .runtime
            .link(component, &exports, links, allowed)
            .at(LoadStage::Link)?;
        let kind = linked.kind();

        let policy = settings
            .policy(self.default_deadline)
            .map_err(in_settings)?;
        let hash_key = settings
            .hash_key
            .as_deref()
            .map(HashKey::parse)
            .transpose()
            .map_err(|e| in_settings(e.into()))?;
        let (store, name, ver) = (self.store.clone(), service.to_string(), version.to_string());
        check_quota(&settings.storage).map_err(in_settings)?;
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
        pool.try_start().await.map_err(|e| {
            Refusal::load(LoadStage::Start, format!("cannot start an instance: {e:#}"))
        })?;
        Ok(LoadedVersion {
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
            attempts: Default::default(),
            errors: Default::default(),
            hash_key,
            kind,
            failover: FailoverPolicy {
                enabled: settings.failover.enabled,
                threshold: settings.failover.threshold,
                window: Duration::from_millis(settings.failover.window_ms),
            },
            failures: Default::default(),
            last_error: Default::default(),
            request_metrics: Default::default(),
            signals: Default::default(),
            component: compiled.component,
        })
    }
}
