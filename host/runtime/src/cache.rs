//! The compiled-component cache: a compiled component is written under the
//! host's data directory, keyed by the file's SHA-256 and the engine's
//! compatibility hash, and loaded instead of compiling again. It only ever
//! loads what an engine like this one wrote.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
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
        if entry.exists() {
            // SAFETY: the entry was written by `Component::serialize` below, into
            // the host's own data directory, by an engine with this same hash.
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

fn write_cache_entry(component: &Component, entry: &Path) -> Result<()> {
    let dir = entry
        .parent()
        .context("a cache entry lives in a directory")?;
    std::fs::create_dir_all(dir)?;
    let partial = entry.with_extension("partial");
    std::fs::write(&partial, component.serialize()?)?;
    std::fs::rename(&partial, entry)?;
    Ok(())
}

/// The SHA-256 of a component file, lower-case hex: its identity.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
