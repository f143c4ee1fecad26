//! The embedded backend: one SQLite database file under the data directory.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, TryLockError};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::{
    DeploymentStore, Entry, KeyPage, KeyValueStore, LIST_PAGE, Namespace, Quota, StoreError,
    StoredDeployment, Usage, check_key, check_value, incremented,
};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Backend(Box::new(e))
    }
}

/// Values larger than this are written off the async workers.
const LARGE_VALUE: usize = 64 << 10;
/// Read connections kept open between reads.
const IDLE_READERS: usize = 8;

/// The embedded default: one SQLite database file under the data directory.
///
/// SQLite in WAL mode lets readers work while one writer writes, so reads
/// take a connection of their own from a small pool and never wait for a
/// write, whoever makes it; writes share one connection. A write that would
/// wait for that connection, or that carries a large value, hands the async
/// worker's other tasks to another thread first (`block_in_place`), so that
/// one service's large or queued writes stall no one else. `BEGIN IMMEDIATE`
/// keeps read-modify-writes atomic against other processes on the file too.
///
/// Each service's use (keys, bytes) is kept by triggers in the `usage` table,
/// in the same transaction as the write, so quotas cost one row read.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open(path)?;
        // WAL + NORMAL: a committed write survives a crash of the process; only a
        // power loss can take the last transactions back.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let counted: bool = tx.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'usage'",
            [],
            |row| row.get(0),
        )?;
        tx.execute_batch(SCHEMA)?;
        let generations: bool = tx.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('deployments') WHERE name = 'generation'",
            [],
            |row| row.get(0),
        )?;
        if !generations {
            // A store written before records had generations.
            tx.execute(
                "ALTER TABLE deployments ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
                [],
            )?;
        }
        if !counted {
            // A store written before usage was counted: count it once.
            tx.execute(
                &format!(
                    "INSERT INTO usage (service, keys, bytes)
                     SELECT service, count(*), sum({ENTRY_BYTES}) FROM kv AS new GROUP BY service"
                ),
                [],
            )?;
        }
        tx.commit()?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::default(),
        })
    }

    /// Write everything in the write-ahead log into the database file, so
    /// that the file alone holds all data (on a clean shutdown).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.write(false, |conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    /// Run `f` on the write connection; `large` when it carries a large value.
    fn write<R>(
        &self,
        large: bool,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // A panic while holding the lock cannot leave SQLite half-written (each
        // operation is one statement or transaction), so a poisoned lock is usable.
        if !large {
            let now = match self.writer.try_lock() {
                Ok(conn) => Some(conn),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut conn) = now {
                return f(&mut conn);
            }
        }
        off_worker(|| {
            let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
    }

    /// Run `f` on a read connection of its own.
    fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                conn
            }
        };
        let outcome = f(&conn);
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < IDLE_READERS {
            readers.push(conn);
        }
        outcome
    }
}

/// Run `f`, which may wait, without holding up the async worker it runs on:
/// the worker's other tasks move to another thread meanwhile.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// What one row of `kv` counts for against a quota: its key and its value.
const ENTRY_BYTES: &str = "length(CAST(new.key AS BLOB)) + length(new.value)";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS kv (
        service TEXT NOT NULL,
        bucket  TEXT NOT NULL,
        key     TEXT NOT NULL,
        value   BLOB NOT NULL,
        PRIMARY KEY (service, bucket, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS deployments (
        service    TEXT PRIMARY KEY,
        record     TEXT NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS usage (
        service TEXT PRIMARY KEY,
        keys    INTEGER NOT NULL,
        bytes   INTEGER NOT NULL
    );
    CREATE TRIGGER IF NOT EXISTS kv_counted_insert AFTER INSERT ON kv BEGIN
        INSERT INTO usage (service, keys, bytes)
        VALUES (new.service, 1, length(CAST(new.key AS BLOB)) + length(new.value))
        ON CONFLICT (service) DO UPDATE
        SET keys = keys + 1, bytes = bytes + excluded.bytes;
    END;
    CREATE TRIGGER IF NOT EXISTS kv_counted_update AFTER UPDATE OF value ON kv BEGIN
        UPDATE usage SET bytes = bytes - length(old.value) + length(new.value)
        WHERE service = new.service;
    END;
    CREATE TRIGGER IF NOT EXISTS kv_counted_delete AFTER DELETE ON kv BEGIN
        UPDATE usage SET keys = keys - 1,
            bytes = bytes - length(CAST(old.key AS BLOB)) - length(old.value)
        WHERE service = old.service;
    END;
";

/// Whether writing `new` under `key` keeps `ns.service` within `quota`;
/// within the write's transaction.
fn check_quota(
    conn: &Connection,
    ns: &Namespace,
    key: &str,
    new: &[u8],
    quota: &Quota,
) -> Result<(), StoreError> {
    let old: Option<i64> = conn
        .prepare_cached(
            "SELECT length(value) FROM kv WHERE service = ?1 AND bucket = ?2 AND key = ?3",
        )?
        .query_row(params![ns.service, ns.bucket, key], |row| row.get(0))
        .optional()?;
    let (keys, bytes): (i64, i64) = conn
        .prepare_cached("SELECT keys, bytes FROM usage WHERE service = ?1")?
        .query_row(params![ns.service], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    let usage = Usage {
        keys: keys.max(0) as u64,
        bytes: bytes.max(0) as u64,
    };
    let old_len = old.map(|len| len.max(0) as usize);
    crate::check_quota(usage, key, old_len, new, quota)
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

#[async_trait::async_trait]
impl KeyValueStore for SqliteStore {
    async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        self.read(|conn| read(conn, ns, key))
    }

    async fn set(
        &self,
        ns: &Namespace,
        key: &str,
        value: &[u8],
        quota: &Quota,
    ) -> Result<(), StoreError> {
        check_key(key)?;
        check_value(value, quota)?;
        self.write(value.len() > LARGE_VALUE, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_quota(&tx, ns, key, value, quota)?;
            write(&tx, ns, key, value)?;
            tx.commit()?;
            Ok(())
        })
    }

    async fn delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.write(false, |conn| {
            conn.prepare_cached("DELETE FROM kv WHERE service = ?1 AND bucket = ?2 AND key = ?3")?
                .execute(params![ns.service, ns.bucket, key])?;
            Ok(())
        })
    }

    async fn exists(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT 1 FROM kv WHERE service = ?1 AND bucket = ?2 AND key = ?3",
            )?;
            Ok(stmt.exists(params![ns.service, ns.bucket, key])?)
        })
    }

    async fn list_keys(&self, ns: &Namespace, cursor: u64) -> Result<KeyPage, StoreError> {
        self.read(|conn| {
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

    async fn increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: u64,
        quota: &Quota,
    ) -> Result<u64, StoreError> {
        check_key(key)?;
        self.write(false, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let next = incremented(key, read(&tx, ns, key)?.as_deref(), delta)?;
            let value = next.to_string();
            check_quota(&tx, ns, key, value.as_bytes(), quota)?;
            write(&tx, ns, key, value.as_bytes())?;
            tx.commit()?;
            Ok(next)
        })
    }

    async fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        quota: &Quota,
    ) -> Result<bool, StoreError> {
        check_key(key)?;
        check_value(new, quota)?;
        self.write(new.len() > LARGE_VALUE, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if read(&tx, ns, key)?.as_deref() != expected {
                return Ok(false);
            }
            check_quota(&tx, ns, key, new, quota)?;
            write(&tx, ns, key, new)?;
            tx.commit()?;
            Ok(true)
        })
    }
}

#[async_trait::async_trait]
impl crate::Scan for SqliteStore {
    async fn scan(&self, after: Option<&Entry>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let (service, bucket, key) = match after {
            Some(e) => (e.ns.service.as_str(), e.ns.bucket.as_str(), e.key.as_str()),
            None => ("", "", ""),
        };
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT service, bucket, key, value FROM kv
                 WHERE (service, bucket, key) > (?1, ?2, ?3)
                 ORDER BY service, bucket, key LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![service, bucket, key, limit as i64], |row| {
                Ok(Entry {
                    ns: Namespace {
                        service: row.get(0)?,
                        bucket: row.get(1)?,
                    },
                    key: row.get(2)?,
                    value: row.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

/// One host: nothing to share.
impl crate::ComponentStore for SqliteStore {}
impl crate::NodeStore for SqliteStore {}

#[async_trait::async_trait]
impl crate::Store for SqliteStore {
    async fn close(&self) -> Result<(), StoreError> {
        self.checkpoint()
    }
}

#[async_trait::async_trait]
impl DeploymentStore for SqliteStore {
    async fn load_deployments(&self) -> Result<Vec<StoredDeployment>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT service, record, generation FROM deployments")?;
            let rows = stmt.query_map([], |row| {
                Ok(StoredDeployment {
                    service: row.get(0)?,
                    record: row.get(1)?,
                    generation: row.get::<_, i64>(2)?.max(0) as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn save_deployment(
        &self,
        service: &str,
        record: &str,
        based_on: u64,
    ) -> Result<u64, StoreError> {
        self.write(false, |conn| {
            let saved: Option<i64> = conn
                .query_row(
                    "INSERT INTO deployments (service, record, generation) VALUES (?1, ?2, 1)
                     ON CONFLICT (service) DO UPDATE
                     SET record = excluded.record, generation = deployments.generation + 1
                     WHERE deployments.generation = ?3
                     RETURNING generation",
                    params![service, record, based_on as i64],
                    |row| row.get(0),
                )
                .optional()?;
            saved
                .map(|g| g.max(0) as u64)
                .ok_or_else(|| StoreError::Conflict(service.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn ns(service: &str) -> Namespace {
        Namespace {
            service: service.into(),
            bucket: "b".into(),
        }
    }

    #[tokio::test]
    async fn usage_is_counted_once_for_a_store_written_before_quotas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE kv (service TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
                value BLOB NOT NULL, PRIMARY KEY (service, bucket, key)) WITHOUT ROWID;
             INSERT INTO kv VALUES ('goods', 'b', 'k1', x'0000'), ('goods', 'b', 'k2', x'00');",
        )
        .unwrap();
        drop(old);
        let store = SqliteStore::open(&path).unwrap();
        let quota = Quota {
            max_value_bytes: 10,
            max_keys: 2,
            max_bytes: 100,
        };
        assert!(matches!(
            store.set(&ns("goods"), "k3", b"", &quota).await,
            Err(StoreError::QuotaExceeded {
                what: "keys",
                used: 2,
                ..
            })
        ));
        // Opening again counts nothing twice.
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        store.set(&ns("goods"), "k1", b"", &quota).await.unwrap();
    }
}
