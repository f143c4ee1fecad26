//! Watches the services directory and turns what happens there into registry
//! changes: a new or rewritten `<name>/<semver>.wasm` is loaded and offered, a
//! removed one withdrawn, a misnamed one refused with a reason; an edited
//! `<name>/service.toml` applies to the versions loaded
//! ([`Loader::reconfigure`]).
//!
//! A file is only read once it has stopped changing: after each event it must
//! keep the same size and modification time for [`SETTLE`], so a slow `cp`
//! is read when it is done, and a write-then-rename as soon as it lands.
//! And each state of a file is handled once: a folder that appears is
//! listed (its files may predate the watch on it), and the files it lists
//! often have events of their own too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::files;
use crate::loader::{Loader, is_component_file, valid_service_name, version_of_file};

/// How long a file must stay unchanged before it is read. Copies write far
/// faster than this; a rename is one event.
pub const SETTLE: Duration = Duration::from_millis(150);

/// What identifies one state of a file: its size and modification time.
type Fingerprint = (u64, SystemTime);

struct Pending {
    due: Instant,
    seen: Option<Fingerprint>,
}

/// Start watching; changes are applied until the returned watcher is dropped.
pub fn watch(loader: Arc<Loader>) -> Result<RecommendedWatcher> {
    let (events, paths) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            // Reads (including the loader's own) are not changes.
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                for path in event.paths {
                    let _ = events.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("file watching: {e}"),
        })?;
    watcher
        .watch(&loader.services_dir, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", loader.services_dir.display()))?;
    tokio::spawn(settle(loader, paths));
    Ok(watcher)
}

async fn settle(loader: Arc<Loader>, mut paths: mpsc::UnboundedReceiver<PathBuf>) {
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    // The state each file was in when it was last handled.
    let mut handled: HashMap<PathBuf, Fingerprint> = HashMap::new();
    loop {
        let next_due = pending.values().map(|p| p.due).min();
        tokio::select! {
            path = paths.recv() => {
                let Some(path) = path else { return };
                schedule(&mut pending, path);
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                let now = Instant::now();
                let due: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, p)| p.due <= now)
                    .map(|(path, _)| path.clone())
                    .collect();
                for path in due {
                    let current = fingerprint(&path);
                    let entry = pending.get_mut(&path).expect("listed above");
                    if current.is_some() && current != entry.seen {
                        entry.seen = current;
                        entry.due = now + SETTLE;
                        continue;
                    }
                    pending.remove(&path);
                    match current {
                        Some(state) if !path.is_dir() => {
                            if handled.insert(path.clone(), state) == Some(state) {
                                continue;
                            }
                        }
                        None => {
                            handled.remove(&path);
                        }
                        Some(_) => {}
                    }
                    for found in apply(&loader, &path).await {
                        schedule(&mut pending, found);
                    }
                }
            }
        }
    }
}

/// (Re)start `path`'s settling period, remembering the state it is in now: it
/// is read only if it is still in that state when the period ends.
fn schedule(pending: &mut HashMap<PathBuf, Pending>, path: PathBuf) {
    let seen = fingerprint(&path);
    let due = Instant::now() + SETTLE;
    pending.insert(path, Pending { due, seen });
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Bring the registry in line with what `path` is now. Returns the files of
/// a folder that appeared, to be settled and applied in turn.
async fn apply(loader: &Loader, path: &Path) -> Vec<PathBuf> {
    let Ok(relative) = path.strip_prefix(&loader.services_dir) else {
        return Vec::new();
    };
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match parts.as_slice() {
        [file] if !path.is_dir() && is_component_file(file) => loader.note_misplaced(&parts, path),
        [service] => return service_dir_changed(loader, service, path).await,
        [service, file] => file_changed(loader, service, file, path).await,
        _ => loader.note_misplaced(&parts, path),
    }
    Vec::new()
}

/// A whole service folder appeared (moved in: its files may predate the
/// watch on it) or disappeared (every version goes with it).
async fn service_dir_changed(loader: &Loader, service: &str, dir: &Path) -> Vec<PathBuf> {
    if service.starts_with('.') {
        return Vec::new();
    }
    if dir.is_dir() {
        return files::entries(dir);
    }
    loader.registry.forget_misplaced_in(service);
    if valid_service_name(service).is_err() {
        return Vec::new();
    }
    for version in loader.registry.versions_of(service) {
        loader.file_removed(service, &version).await;
    }
    Vec::new()
}

async fn file_changed(loader: &Loader, service: &str, file: &str, path: &Path) {
    if !is_component_file(file) {
        if file == "service.toml" && valid_service_name(service).is_ok() {
            loader.reconfigure(service).await;
        }
        return;
    }
    if valid_service_name(service).is_err() {
        loader.note_misplaced(&[service, file], path);
        return;
    }
    let version = match version_of_file(file) {
        Ok(version) => version,
        Err(e) => {
            if path.exists() {
                tracing::error!(file = %path.display(), "refused: {e:#}");
                loader
                    .registry
                    .refuse_file(service, file, &format!("{e:#}"))
                    .await;
            } else {
                loader.registry.forget_file(service, file);
            }
            return;
        }
    };
    if path.exists() {
        loader.file_changed(service, &version, path).await;
    } else {
        loader.file_removed(service, &version).await;
    }
}
