//! Turns the files under the services directory into registered services.
//!
//! Layout: `services/<name>/<semver>.wasm`, plus an optional
//! `services/<name>/service.toml` whose `[config]` table the service reads through
//! `wasi:config`. Every version is compiled, validated and linked; the highest
//! version whose imports are all satisfied becomes active, the other valid ones
//! stay on standby, and a version that fails gets a reason naming the problem.
//! One bad file never stops the other services from loading.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use semver::Version;
use serde::Deserialize;

use crate::balance::{InstancePool, ServiceLinks};
use crate::platform::{HANDLER_INTERFACE, Platform};
use crate::registry::{LoadedVersion, Registry, ServiceEntry, VersionEntry, VersionState};
use crate::runtime::Runtime;
use crate::store::KeyValueStore;

/// The largest component file accepted.
const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// Route prefixes the gateway keeps for itself.
const RESERVED_NAMES: [&str; 1] = ["admin"];

/// What loading needs from the rest of the host.
pub struct Loader {
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn KeyValueStore>,
    pub services_dir: PathBuf,
    /// Idle instances each version keeps for reuse.
    pub pool_size: usize,
}

/// `services/<name>/service.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceConfig {
    /// Values the service reads through `wasi:config/store`.
    #[serde(default)]
    config: BTreeMap<String, String>,
}

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

/// One version's file, compiled and linked, or why it could not be.
struct Candidate {
    version: Version,
    file: PathBuf,
    outcome: Result<Arc<LoadedVersion>, String>,
}

impl Loader {
    /// Load every service found under the services directory into the registry.
    pub async fn load_all(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.services_dir).with_context(|| {
            format!(
                "cannot read the services directory {}",
                self.services_dir.display()
            )
        })?;
        let mut services: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for entry in entries {
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
                tracing::error!(dir = %dir.display(), "skipping: {e:#}");
                continue;
            }
            services.insert(name.clone(), self.load_service(&name, &dir).await);
        }
        choose_active(&mut services);
        for (name, candidates) in services {
            self.register(name, candidates).await;
        }
        Ok(())
    }

    /// Compile and link every version file of one service.
    async fn load_service(&self, name: &str, dir: &Path) -> Vec<Candidate> {
        let config = read_config(dir);
        let mut candidates = Vec::new();
        let files = match std::fs::read_dir(dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(dir = %dir.display(), "cannot read: {e}");
                return candidates;
            }
        };
        for file in files.flatten().map(|f| f.path()) {
            if file.extension().is_none_or(|ext| ext != "wasm") {
                continue;
            }
            let stem = file.file_stem().unwrap_or_default().to_string_lossy();
            let version = match Version::parse(&stem) {
                Ok(version) => version,
                Err(e) => {
                    tracing::error!(file = %file.display(), "skipping: {stem:?} is not a semver version: {e}");
                    continue;
                }
            };
            let outcome = match &config {
                Ok(config) => self
                    .load_version(name, &version, &file, config.clone())
                    .await
                    .map_err(|e| format!("{e:#}")),
                Err(e) => Err(e.clone()),
            };
            candidates.push(Candidate {
                version,
                file,
                outcome,
            });
        }
        candidates.sort_by(|a, b| b.version.cmp(&a.version));
        candidates
    }

    /// Read, compile, validate and link one component file.
    async fn load_version(
        &self,
        service: &str,
        version: &Version,
        file: &Path,
        config: Arc<BTreeMap<String, String>>,
    ) -> Result<Arc<LoadedVersion>> {
        let size = std::fs::metadata(file)?.len();
        if size > MAX_COMPONENT_BYTES {
            bail!("the file is {size} bytes; the limit is {MAX_COMPONENT_BYTES}");
        }
        let bytes = std::fs::read(file)?;
        let runtime = self.runtime.clone();
        let component = tokio::task::spawn_blocking(move || runtime.compile(&bytes)).await??;

        let imports = self.runtime.imports(&component);
        let exports = self.runtime.exports(&component);
        if !exports.iter().any(|e| e.name == HANDLER_INTERFACE) {
            bail!(
                "does not export {HANDLER_INTERFACE}: a service must target the \
                 switchyard:platform/service world"
            );
        }
        for import in imports
            .iter()
            .filter(|i| i.provider() == crate::runtime::Provider::Service)
        {
            if import.uses_resources {
                bail!(
                    "imports {} which uses resources; interfaces between services cannot",
                    import.name
                );
            }
        }
        let links = Arc::new(ServiceLinks {
            registry: Arc::downgrade(&self.registry),
        });
        let pre = self.runtime.link(&component, links)?;
        let export_indices = self.runtime.export_indices(&component, &exports);

        let (store, name, ver) = (self.store.clone(), service.to_string(), version.to_string());
        let platform = Box::new(move || Platform {
            service: name.clone(),
            version: ver.clone(),
            store: store.clone(),
            config: config.clone(),
        });
        let pool = InstancePool::new(
            self.runtime.clone(),
            pre,
            platform,
            export_indices,
            self.pool_size,
        );
        Ok(Arc::new(LoadedVersion {
            service: service.to_string(),
            version: version.clone(),
            imports,
            exports,
            pool: Arc::new(pool),
        }))
    }

    async fn register(&self, name: String, candidates: Vec<Candidate>) {
        let mut versions = Vec::new();
        for candidate in candidates {
            let (state, reason, loaded) = match candidate.outcome {
                Ok(loaded) => {
                    let state = if versions
                        .iter()
                        .any(|v: &VersionEntry| v.state == VersionState::Active)
                    {
                        VersionState::Standby
                    } else {
                        VersionState::Active
                    };
                    (state, None, Some(loaded))
                }
                Err(reason) => {
                    tracing::error!(file = %candidate.file.display(), "rejected: {reason}");
                    (VersionState::Rejected, Some(reason), None)
                }
            };
            if let (VersionState::Active, Some(loaded)) = (state, &loaded) {
                tracing::info!(service = %name, version = %loaded.version, "active");
                if let Err(e) = loaded.pool.warm().await {
                    tracing::warn!(service = %name, "cannot pre-instantiate: {e:#}");
                }
            }
            versions.push(VersionEntry {
                version: candidate.version,
                state,
                reason,
                loaded,
            });
        }
        self.registry.insert(ServiceEntry::new(name, versions));
    }
}

/// Reject, per service, the highest loaded version's imports that no other
/// service's would-be active version provides, until every would-be active
/// version is satisfied. Each round rejects at least one version, so it ends.
fn choose_active(services: &mut BTreeMap<String, Vec<Candidate>>) {
    loop {
        let active: HashMap<&str, Arc<LoadedVersion>> = services
            .iter()
            .filter_map(|(name, c)| {
                let first = c.iter().find_map(|c| c.outcome.as_ref().ok())?;
                Some((name.as_str(), first.clone()))
            })
            .collect();
        let mut unsatisfied = None;
        'find: for (name, version) in &active {
            for import in version.service_imports() {
                let provided = active
                    .iter()
                    .any(|(other, v)| other != name && v.provides(&import.name, &import.functions));
                if !provided {
                    let reason = format!(
                        "imports {} ({}), which no loaded service exports",
                        import.name,
                        import.functions.join(", ")
                    );
                    unsatisfied = Some((name.to_string(), version.version.clone(), reason));
                    break 'find;
                }
            }
        }
        let Some((name, version, reason)) = unsatisfied else {
            return;
        };
        let candidates = services.get_mut(&name).expect("chosen from this map");
        let candidate = candidates
            .iter_mut()
            .find(|c| c.version == version)
            .expect("chosen from this list");
        candidate.outcome = Err(reason);
    }
}

fn read_config(dir: &Path) -> Result<Arc<BTreeMap<String, String>>, String> {
    let path = dir.join("service.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Arc::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    toml::from_str::<ServiceConfig>(&text)
        .map(|c| Arc::new(c.config))
        .map_err(|e| format!("{} is invalid: {e}", path.display()))
}
