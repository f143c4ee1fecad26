//! The services folder, at start-up and as it changes: every service's
//! files loaded and offered to the registry, rejected files with their
//! reason, removed files withdrawn. Each file goes through
//! [`Loader::load_bytes`](super::Loader::load_bytes).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use semver::Version;

use super::naming::{is_component_file, misplaced, valid_service_name, version_of_file};
use super::{Loader, MAX_COMPONENT_BYTES};
use crate::compat::{AtStage, LoadStage, Refusal};
use crate::files;
use crate::registry::{Found, LoadedVersion, VersionEntry};

impl Loader {
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
            let name = file_name(&dir);
            if !dir.is_dir() {
                self.note_misplaced(&[&name], &dir);
                continue;
            }
            if let Err(e) = valid_service_name(&name) {
                if !name.starts_with('.') {
                    tracing::error!(dir = %dir.display(), "skipping: {e:#}");
                    for file in files::entries(&dir) {
                        self.note_misplaced(&[&name, &file_name(&file)], &file);
                    }
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
            let file_name = file_name(&path);
            if path.is_dir() {
                for inner in files::entries(&path) {
                    self.note_misplaced(&[name, &file_name, &self::file_name(&inner)], &inner);
                }
                continue;
            }
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
                Err(e) => VersionEntry::Rejected(Refusal::load(LoadStage::Settings, e)),
            };
            found.versions.insert(version, entry);
        }
        found
    }

    async fn load_file(&self, service: &str, version: &Version, path: &Path) -> VersionEntry {
        let loaded = match read_component(path).await.at(LoadStage::File) {
            Ok(bytes) => self.load_bytes(service, version, bytes).await,
            Err(refusal) => Err(refusal),
        };
        loaded.map_or_else(
            |refusal| {
                tracing::error!(file = %path.display(), "rejected: {refusal}");
                VersionEntry::Rejected(refusal)
            },
            VersionEntry::Loaded,
        )
    }

    /// A component file appeared or changed: load it and offer it to the
    /// registry, unless it is the very build that version already runs.
    /// What becomes of it is logged once, from the registry's answer.
    pub async fn file_changed(&self, service: &str, version: &Version, path: &Path) {
        let entry = match read_component(path).await.at(LoadStage::File) {
            Err(refusal) => VersionEntry::Rejected(refusal),
            Ok(bytes) => {
                let hashed = tokio::task::spawn_blocking(move || {
                    (switchyard_runtime::digest(&bytes), bytes)
                });
                let (digest, bytes) = match hashed.await {
                    Ok(hashed) => hashed,
                    Err(e) => {
                        tracing::error!(file = %path.display(), "cannot hash: {e}");
                        return;
                    }
                };
                if self.registry.has_build(service, version, &digest) {
                    return;
                }
                match self.load_bytes(service, version, bytes).await {
                    Ok(loaded) => VersionEntry::Loaded(loaded),
                    Err(refusal) => VersionEntry::Rejected(refusal),
                }
            }
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

    /// `path`, at `parts` under the services folder, is a component file
    /// that will not be loaded (or is gone): say so in the log and the
    /// admin view (see [`misplaced`]).
    pub fn note_misplaced(&self, parts: &[&str], path: &Path) {
        let Some(reason) = misplaced(parts) else {
            return;
        };
        let file = parts.join("/");
        if path.exists() {
            tracing::error!(file = %path.display(), "not loaded: {reason}");
            self.registry.misplaced_file(&file, Some(&reason));
        } else {
            self.registry.misplaced_file(&file, None);
        }
    }
}

/// The component file at `path`: a regular file of at most
/// [`MAX_COMPONENT_BYTES`], read off the async workers.
async fn read_component(path: &Path) -> Result<Vec<u8>> {
    let path = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || files::read_regular(&path, MAX_COMPONENT_BYTES));
    Ok(read.await??)
}

/// The last part of `path`, as text.
fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
