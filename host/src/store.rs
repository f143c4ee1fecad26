//! Durable key-value data, namespaced per service.
//!
//! This module owns the data the services keep. [`KeyValueStore`] is the seam that
//! lets a shared database (PostgreSQL, for several hosts) replace the embedded
//! [`SqliteStore`] later without touching the platform code above it. A
//! [`Namespace`] always names the owning service: nothing here lets one service
//! reach another's keys.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

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

/// A failure of the store; its message is shown to the guest.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Backend(#[from] rusqlite::Error),
    #[error("key is longer than {MAX_KEY_BYTES} bytes")]
    KeyTooLong,
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

/// The operations the platform's key-value imports need. Every call is atomic.
pub trait KeyValueStore: Send + Sync {
    fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn set(&self, ns: &Namespace, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError>;
    fn exists(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError>;
    /// Keys in ascending order, starting `cursor` keys in.
    fn list_keys(&self, ns: &Namespace, cursor: u64) -> Result<KeyPage, StoreError>;
    /// Add `delta` to the decimal counter under `key` (absent counts as 0).
    fn increment(&self, ns: &Namespace, key: &str, delta: u64) -> Result<u64, StoreError>;
    /// Write `new` if the current value equals `expected` (`None`: absent).
    fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError>;
}

/// Where the registry keeps each service's deployment record (active version,
/// rollback stack, traffic split, history) so that it survives a restart. The
/// record is opaque text to the store.
pub trait DeploymentStore: Send + Sync {
    fn load_deployments(&self) -> Result<Vec<(String, String)>, StoreError>;
    fn save_deployment(&self, service: &str, record: &str) -> Result<(), StoreError>;
}

/// The embedded default: one SQLite database file under the data directory.
///
/// One connection behind a mutex: every operation is a short statement, so
/// serialising them costs less than a pool would, and it makes each
/// read-modify-write trivially atomic within this process. `BEGIN IMMEDIATE`
/// keeps them atomic against other processes on the same file too.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        // WAL + NORMAL: a committed write survives a crash of the process; only a
        // power loss can take the last transactions back.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                service TEXT NOT NULL,
                bucket  TEXT NOT NULL,
                key     TEXT NOT NULL,
                value   BLOB NOT NULL,
                PRIMARY KEY (service, bucket, key)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS deployments (
                service TEXT PRIMARY KEY,
                record  TEXT NOT NULL
            );",
        )?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// Write everything in the write-ahead log into the database file, so
    /// that the file alone holds all data (on a clean shutdown).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // A panic while holding the lock cannot leave SQLite half-written (each
        // operation is one statement or transaction), so a poisoned lock is usable.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_BYTES {
        Err(StoreError::KeyTooLong)
    } else {
        Ok(())
    }
}

// Statements go through SQLite's per-connection cache (`prepare_cached`):
// parsing SQL costs more than running these one-row statements.

fn read(conn: &Connection, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT value FROM kv WHERE service = ?1 AND bucket = ?2 AND key = ?3")?;
    Ok(stmt
        .query_row(params![ns.service, ns.bucket, key], |row| row.get(0))
        .optional()?)
}

fn write(conn: &Connection, ns: &Namespace, key: &str, value: &[u8]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO kv (service, bucket, key, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (service, bucket, key) DO UPDATE SET value = excluded.value",
    )?;
    stmt.execute(params![ns.service, ns.bucket, key, value])?;
    Ok(())
}

impl KeyValueStore for SqliteStore {
    fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        self.with(|conn| read(conn, ns, key))
    }

    fn set(&self, ns: &Namespace, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        self.with(|conn| write(conn, ns, key, value))
    }

    fn delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.with(|conn| {
            conn.prepare_cached("DELETE FROM kv WHERE service = ?1 AND bucket = ?2 AND key = ?3")?
                .execute(params![ns.service, ns.bucket, key])?;
            Ok(())
        })
    }

    fn exists(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError> {
        Ok(self.get(ns, key)?.is_some())
    }

    fn list_keys(&self, ns: &Namespace, cursor: u64) -> Result<KeyPage, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key FROM kv WHERE service = ?1 AND bucket = ?2
                 ORDER BY key LIMIT ?3 OFFSET ?4",
            )?;
            // One extra row tells whether another page follows.
            let offset = i64::try_from(cursor).unwrap_or(i64::MAX);
            let keys = stmt
                .query_map(
                    params![ns.service, ns.bucket, LIST_PAGE as i64 + 1, offset],
                    |row| row.get::<_, String>(0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let more = keys.len() > LIST_PAGE;
            let keys: Vec<String> = keys.into_iter().take(LIST_PAGE).collect();
            let cursor = more.then(|| cursor + keys.len() as u64);
            Ok(KeyPage { keys, cursor })
        })
    }

    fn increment(&self, ns: &Namespace, key: &str, delta: u64) -> Result<u64, StoreError> {
        check_key(key)?;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = match read(&tx, ns, key)? {
                None => 0,
                Some(bytes) => std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::NotACounter(key.to_string()))?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| StoreError::Overflow(key.to_string()))?;
            write(&tx, ns, key, next.to_string().as_bytes())?;
            tx.commit()?;
            Ok(next)
        })
    }

    fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        check_key(key)?;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if read(&tx, ns, key)?.as_deref() != expected {
                return Ok(false);
            }
            write(&tx, ns, key, new)?;
            tx.commit()?;
            Ok(true)
        })
    }
}

impl DeploymentStore for SqliteStore {
    fn load_deployments(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT service, record FROM deployments")?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn save_deployment(&self, service: &str, record: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO deployments (service, record) VALUES (?1, ?2)
                 ON CONFLICT (service) DO UPDATE SET record = excluded.record",
                params![service, record],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(service: &str) -> Namespace {
        Namespace {
            service: service.into(),
            bucket: "b".into(),
        }
    }

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("kv.sqlite")).unwrap();
        (dir, store)
    }

    #[test]
    fn services_do_not_share_keys() {
        let (_dir, store) = store();
        store.set(&ns("goods"), "k", b"goods data").unwrap();
        assert_eq!(store.get(&ns("users"), "k").unwrap(), None);
        assert_eq!(store.list_keys(&ns("users"), 0).unwrap().keys.len(), 0);
    }

    #[test]
    fn compare_and_swap_writes_only_on_match() {
        let (_dir, store) = store();
        let n = ns("goods");
        assert!(store.compare_and_swap(&n, "k", None, b"1").unwrap());
        assert!(!store.compare_and_swap(&n, "k", None, b"2").unwrap());
        assert!(!store.compare_and_swap(&n, "k", Some(b"0"), b"2").unwrap());
        assert!(store.compare_and_swap(&n, "k", Some(b"1"), b"2").unwrap());
        assert_eq!(store.get(&n, "k").unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn list_keys_pages_with_a_cursor() {
        let (_dir, store) = store();
        let n = ns("goods");
        for i in 0..LIST_PAGE + 5 {
            store.set(&n, &format!("{i:05}"), b"").unwrap();
        }
        let first = store.list_keys(&n, 0).unwrap();
        assert_eq!(first.keys.len(), LIST_PAGE);
        let second = store.list_keys(&n, first.cursor.unwrap()).unwrap();
        assert_eq!(second.keys.len(), 5);
        assert_eq!(second.cursor, None);
    }

    #[test]
    fn increment_counts_and_refuses_non_counters() {
        let (_dir, store) = store();
        let n = ns("goods");
        assert_eq!(store.increment(&n, "c", 1).unwrap(), 1);
        assert_eq!(store.increment(&n, "c", 5).unwrap(), 6);
        store.set(&n, "text", b"abc").unwrap();
        assert!(matches!(
            store.increment(&n, "text", 1),
            Err(StoreError::NotACounter(_))
        ));
    }
}
