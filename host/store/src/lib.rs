//! Durable data: the key-value data the services keep, namespaced per
//! service, and the registry's deployment records.
//!
//! This crate owns the storage seam. [`KeyValueStore`] and
//! [`DeploymentStore`] are async, and their errors name no backend, so that a networked database (PostgreSQL, for
//! several hosts) can stand in for the embedded [`SqliteStore`] without
//! touching the platform code above it. A [`Namespace`] always names the
//! owning service: nothing here lets one service reach another's keys.
//!
//! Two backends: [`SqliteStore`], embedded, the default for one machine; and
//! [`PostgresStore`], a PostgreSQL database several hosts share. Both pass
//! the same conformance tests (`conformance.rs`).
//!
//! It must never block an async worker for long: see [`SqliteStore`] for how
//! the embedded backend keeps to that.

mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

pub use postgres::{MIGRATIONS, PostgresStore};
pub use sqlite::SqliteStore;

/// Where a host keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An embedded SQLite file (one host).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL (several hosts may share it).
    Postgres(String),
}

impl Location {
    /// `postgres://…` or `postgresql://…` names a PostgreSQL database;
    /// `sqlite:DIR` the embedded store in DIR; anything else is refused.
    pub fn parse(text: &str) -> Result<Location, NotAStore> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Location::Postgres(text.to_string()))
        } else if let Some(dir) = text.strip_prefix("sqlite:") {
            Ok(Location::Sqlite(PathBuf::from(dir).join(SQLITE_FILE)))
        } else {
            Err(NotAStore(text.to_string()))
        }
    }

    /// The embedded store in the data directory `dir`.
    pub fn sqlite_in(dir: &std::path::Path) -> Location {
        Location::Sqlite(dir.join(SQLITE_FILE))
    }
}

/// A `--store` that names no store.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a store: give postgres://USER@HOST:PORT/DB or sqlite:DIR")]
pub struct NotAStore(pub String);

/// The embedded store's file name in its directory.
const SQLITE_FILE: &str = "store.sqlite";

/// A service version's component, as hosts sharing a store know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedVersion {
    pub service: String,
    pub version: String,
    /// SHA-256 of the component, hex: the key its bytes are kept under.
    pub digest: String,
}

/// Component files shared by the hosts of a cluster, content-addressed: a
/// version loaded on one host can be fetched by every other. A store no
/// other host shares keeps nothing (the default methods).
#[async_trait::async_trait]
pub trait ComponentStore: Send + Sync {
    /// `service` `version` is the component `bytes`, whose digest is `digest`.
    async fn share_component(
        &self,
        _version: &SharedVersion,
        _bytes: &[u8],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// `service` `version` is no longer offered (its file was removed).
    async fn unshare_component(&self, _service: &str, _version: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every version offered.
    async fn shared_components(&self) -> Result<Vec<SharedVersion>, StoreError> {
        Ok(Vec::new())
    }

    /// The bytes kept under `digest`, if any.
    async fn component(&self, _digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
}

/// A host's last heartbeat, as hosts sharing a store see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    pub node: String,
    pub address: String,
    /// When the store received it, in ms since the Unix epoch (the store's
    /// clock, so that hosts' clocks need not agree).
    pub at_ms: u64,
    /// How long before the store read it, in ms (by the same clock).
    pub age_ms: u64,
    /// What the host reports about itself (JSON, opaque to the store).
    pub report: String,
}

/// Heartbeats of the hosts sharing a store. A store no other host shares
/// keeps none (the default methods).
#[async_trait::async_trait]
pub trait NodeStore: Send + Sync {
    /// `node` at `address` is alive and reports `report`.
    async fn heartbeat(
        &self,
        _node: &str,
        _address: &str,
        _report: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every host's last heartbeat.
    async fn nodes(&self) -> Result<Vec<NodeBeat>, StoreError> {
        Ok(Vec::new())
    }
}

/// Everything a host keeps, from one backend.
#[async_trait::async_trait]
pub trait Store: KeyValueStore + Scan + DeploymentStore + ComponentStore + NodeStore {
    /// Make every write durable and let go of the backend (at shutdown).
    async fn close(&self) -> Result<(), StoreError>;
}

/// Open (and create or migrate) the store at `location`.
pub async fn open(location: &Location) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        Location::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
        Location::Postgres(url) => Arc::new(PostgresStore::connect(url).await?),
    })
}

/// The longest key a service may use, in bytes: keys are identifiers, not data.
pub const MAX_KEY_BYTES: usize = 1024;
/// How many keys one `list_keys` page returns before handing back a cursor.
pub const LIST_PAGE: usize = 1000;

/// Where a key lives: the owning service's name and one of its buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub service: String,
    pub bucket: String,
}

/// What one service may keep: the size of one value, and how many keys and
/// bytes (keys and values together, across its buckets) in all. Read from
/// the `[storage]` table of a service's `service.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// The largest value one key may hold.
    pub max_value_bytes: usize,
    /// Keys across all the service's buckets.
    pub max_keys: u64,
    /// Bytes of keys and values across all its buckets.
    pub max_bytes: u64,
}

/// The largest value a service may be allowed (`[storage] max_value_bytes`).
pub const MAX_VALUE_CEILING: usize = 64 << 20;

impl Quota {
    /// No limit at all: for moving data that is already stored, and for
    /// deleting, which only frees.
    pub const UNLIMITED: Quota = Quota {
        max_value_bytes: usize::MAX,
        max_keys: u64::MAX,
        max_bytes: u64::MAX,
    };
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            max_value_bytes: 1 << 20,
            max_keys: 1_000_000,
            max_bytes: 1 << 30,
        }
    }
}

/// A failure of the store; its message is shown to the guest.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (the database is unreachable, corrupt, full...).
    #[error("storage failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("key is longer than {MAX_KEY_BYTES} bytes")]
    KeyTooLong,
    #[error("the value is {size} bytes; the limit is {limit} ([storage] max_value_bytes)")]
    ValueTooLarge { size: usize, limit: usize },
    #[error("the service's storage quota is full: {used} of {limit} {what} ([storage] max_{what})")]
    QuotaExceeded {
        what: &'static str,
        used: u64,
        limit: u64,
    },
    #[error("value under {0:?} is not a decimal counter")]
    NotACounter(String),
    #[error("counter {0:?} would overflow")]
    Overflow(String),
    /// A compare-and-swap on a record's generation lost: another host
    /// changed it first.
    #[error("the deployment of {0} was changed by another host meanwhile")]
    Conflict(String),
}

/// One page of keys, and where the next page starts (`None` at the end).
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<u64>,
}

/// The operations the platform's key-value imports need. Every call is
/// atomic; writes keep within the service's [`Quota`].
#[async_trait::async_trait]
pub trait KeyValueStore: Send + Sync {
    async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set(
        &self,
        ns: &Namespace,
        key: &str,
        value: &[u8],
        quota: &Quota,
    ) -> Result<(), StoreError>;
    async fn delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError>;
    async fn exists(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError>;
    /// Keys in ascending order, starting `cursor` keys in.
    async fn list_keys(&self, ns: &Namespace, cursor: u64) -> Result<KeyPage, StoreError>;
    /// Add `delta` to the decimal counter under `key` (absent counts as 0).
    async fn increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: u64,
        quota: &Quota,
    ) -> Result<u64, StoreError>;
    /// Write `new` if the current value equals `expected` (`None`: absent).
    async fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        quota: &Quota,
    ) -> Result<bool, StoreError>;
}

/// One service's deployment record as stored, and its generation: every
/// save bumps it, so a host can tell whether it has seen the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeployment {
    pub service: String,
    pub record: String,
    pub generation: u64,
}

/// One key and its value, with whose they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ns: Namespace,
    pub key: String,
    pub value: Vec<u8>,
}

/// Reading every service's data in order, page by page (for copying a
/// store): entries ordered by service, bucket and key, after `after`.
#[async_trait::async_trait]
pub trait Scan: Send + Sync {
    async fn scan(&self, after: Option<&Entry>, limit: usize) -> Result<Vec<Entry>, StoreError>;
}

/// What [`copy`] copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub entries: u64,
    pub deployments: u64,
}

/// Copy every service's data and every deployment record from `from` into
/// `to`, which must hold neither yet (a copy never merges). Quotas are not
/// applied: what was kept is kept.
pub async fn copy(from: &dyn Store, to: &dyn Store) -> Result<Copied, StoreError> {
    let refuse = |what: &str| {
        StoreError::Backend(
            format!("the target store already holds {what}: copy into an empty one").into(),
        )
    };
    if !to.scan(None, 1).await?.is_empty() {
        return Err(refuse("services' data"));
    }
    if !to.load_deployments().await?.is_empty() {
        return Err(refuse("deployment records"));
    }
    let mut copied = Copied::default();
    let mut after: Option<Entry> = None;
    loop {
        let page = from.scan(after.as_ref(), LIST_PAGE).await?;
        for entry in &page {
            to.set(&entry.ns, &entry.key, &entry.value, &Quota::UNLIMITED)
                .await?;
            copied.entries += 1;
        }
        match page.into_iter().last() {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    for record in from.load_deployments().await? {
        to.save_deployment(&record.service, &record.record, 0)
            .await?;
        copied.deployments += 1;
    }
    Ok(copied)
}

/// Where the registry keeps each service's deployment record (active version,
/// rollback stack, traffic split, failed marks, history) so that it survives
/// a restart, and so that hosts sharing the store share it. The record is
/// opaque text to the store.
#[async_trait::async_trait]
pub trait DeploymentStore: Send + Sync {
    async fn load_deployments(&self) -> Result<Vec<StoredDeployment>, StoreError>;

    /// Store `record` as `service`'s if its stored generation is still
    /// `based_on` (0: nothing stored yet), and return the new generation;
    /// [`StoreError::Conflict`] when another host saved first.
    async fn save_deployment(
        &self,
        service: &str,
        record: &str,
        based_on: u64,
    ) -> Result<u64, StoreError>;

    /// Changes whenever another host may have saved a record or shared a
    /// component (`None`: no other host can share this store). A notice
    /// can be lost (a reconnect): readers also look now and then.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

#[cfg(test)]
mod conformance;

/// Check what every backend checks before a write.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_BYTES {
        Err(StoreError::KeyTooLong)
    } else {
        Ok(())
    }
}

/// A service's use of its store: keys, and bytes of keys and values.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub keys: u64,
    pub bytes: u64,
}

/// Whether replacing a value of `old_len` bytes (`None`: no value) with
/// `new` under `key` keeps a service that uses `usage` within `quota`.
/// Writes that shrink are always allowed.
pub(crate) fn check_quota(
    usage: Usage,
    key: &str,
    old_len: Option<usize>,
    new: &[u8],
    quota: &Quota,
) -> Result<(), StoreError> {
    let Usage { keys, bytes } = usage;
    if old_len.is_none() && keys + 1 > quota.max_keys {
        return Err(StoreError::QuotaExceeded {
            what: "keys",
            used: keys,
            limit: quota.max_keys,
        });
    }
    let before = old_len.map_or(0, |len| (key.len() + len) as u64);
    let after = (key.len() + new.len()) as u64;
    if after > before && bytes - before.min(bytes) + after > quota.max_bytes {
        return Err(StoreError::QuotaExceeded {
            what: "bytes",
            used: bytes,
            limit: quota.max_bytes,
        });
    }
    Ok(())
}

/// The counter under `key` (now `current`, `None`: absent, which counts as
/// 0) after adding `delta`.
pub(crate) fn incremented(
    key: &str,
    current: Option<&[u8]>,
    delta: u64,
) -> Result<u64, StoreError> {
    let current = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| StoreError::NotACounter(key.to_string()))?,
    };
    current
        .checked_add(delta)
        .ok_or_else(|| StoreError::Overflow(key.to_string()))
}

pub(crate) fn check_value(value: &[u8], quota: &Quota) -> Result<(), StoreError> {
    if value.len() > quota.max_value_bytes {
        return Err(StoreError::ValueTooLarge {
            size: value.len(),
            limit: quota.max_value_bytes,
        });
    }
    Ok(())
}
