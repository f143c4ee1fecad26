//! Durable data: the key-value data the services keep, namespaced per
//! service, and the registry's deployment records.
//!
//! This crate owns the storage seam. [`KeyValueStore`] and
//! [`DeploymentStore`] are async, and their errors name no backend, so that a networked database (PostgreSQL, for
//! several hosts) can stand in for the embedded [`SqliteStore`] without
//! touching the platform code above it. A [`Namespace`] always names the
//! owning service: nothing here lets one service reach another's keys.
//!
//! It must never block an async worker for long: see [`SqliteStore`] for how
//! the embedded backend keeps to that.

mod sqlite;

pub use sqlite::SqliteStore;

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

/// Where the registry keeps each service's deployment record (active version,
/// rollback stack, traffic split, history) so that it survives a restart. The
/// record is opaque text to the store.
#[async_trait::async_trait]
pub trait DeploymentStore: Send + Sync {
    async fn load_deployments(&self) -> Result<Vec<(String, String)>, StoreError>;
    async fn save_deployment(&self, service: &str, record: &str) -> Result<(), StoreError>;
}

/// Check what every backend checks before a write.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_BYTES {
        Err(StoreError::KeyTooLong)
    } else {
        Ok(())
    }
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
