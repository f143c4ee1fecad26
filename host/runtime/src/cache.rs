//! The compiled-component cache: a compiled component is written under the
//! host's data directory, keyed by the file's SHA-256 and the engine's
//! compatibility hash, and loaded instead of compiling again. It only ever
//! loads what an engine like this one wrote.
//!
//! Several hosts may share one cache (`--compiled-cache`): each entry is
//! compiled under a lock of its own (`<entry>.lock`, held while compiling
//! and writing), so hosts loading the same component at once compile it
//! once, and an entry is only ever read complete, never while written.

use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::engine::Runtime;

impl Runtime {
    /// Compile `bytes`, or load the result of an earlier compilation from
    /// `cache_dir`. The cache key is the SHA-256 of the bytes and the engine's
    /// compatibility hash (wasmtime version, compiler settings, CPU features), so
    /// an entry is only ever loaded by an engine that could have written it.
    pub fn compile_cached(&self, bytes: &[u8], cache_dir: &Path) -> Result<Compiled> {
        let started = Instant::now();
        let digest = digest(bytes);
        let mut engine_hash = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let entry = cache_dir.join(format!("{digest}-{:016x}.cwasm", engine_hash.finish()));
        // Without the lock (a read-only cache, say), this host compiles on
        // its own: slower, never wrong.
        let _compiling = lock_entry(&entry).inspect_err(
            |e| tracing::debug!(entry = %entry.display(), "cannot lock a cache entry: {e}"),
        );
        if entry.exists() {
            // SAFETY: the entry was written by `Component::serialize` below, into
            // the host's own data directory, by an engine with this same hash,
            // and put in place complete (written aside, then renamed, under
            // the entry's lock): nothing writes to it while it is mapped.
            #[allow(unsafe_code)]
            let cached = unsafe { Component::deserialize_file(&self.engine, &entry) };
            match cached {
                Ok(component) => {
                    return Ok(Compiled {
                        component,
                        digest,
                        from_cache: true,
                        compile_time: started.elapsed(),
                    });
                }
                Err(e) => {
                    tracing::warn!(entry = %entry.display(), "ignoring an unreadable cache entry: {e:#}")
                }
            }
        }
        let component = self.compile(bytes)?;
        if let Err(e) = write_cache_entry(&component, &entry) {
            tracing::warn!(entry = %entry.display(), "cannot cache a compiled component: {e:#}");
        }
        Ok(Compiled {
            component,
            digest,
            from_cache: false,
            compile_time: started.elapsed(),
        })
    }
}

/// A compiled component and how it came to be.
pub struct Compiled {
    pub component: Component,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    pub from_cache: bool,
    pub compile_time: Duration,
}

/// Wait for, and hold until dropped, the lock on `entry`: one host or
/// thread at a time looks it up and, if missing, compiles and writes it.
fn lock_entry(entry: &Path) -> std::io::Result<File> {
    if let Some(dir) = entry.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(entry.with_extension("lock"))?;
    lock.lock()?;
    Ok(lock)
}

fn write_cache_entry(component: &Component, entry: &Path) -> Result<()> {
    let dir = entry
        .parent()
        .context("a cache entry lives in a directory")?;
    std::fs::create_dir_all(dir)?;
    // A name of its own, in case another writer got no lock either.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let partial = entry.with_extension(format!(
        "{}-{}.partial",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::write(&partial, component.serialize()?)
        .and_then(|()| std::fs::rename(&partial, entry));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    Ok(written?)
}

/// The SHA-256 of a component file, lower-case hex: its identity.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
