//! The cluster backend: a PostgreSQL database that several hosts share.
//!
//! Connections come from a `deadpool-postgres` pool. The schema is created
//! and migrated by the host itself ([`MIGRATIONS`], versioned in
//! `switchyard_schema`), under an advisory lock, so that nodes starting at
//! once do not race. Each service's use (keys, bytes) is counted by triggers
//! in `usage`, in the same transaction as the write, as on SQLite. A write
//! that reads first (a quota check, an increment, a compare-and-swap) locks
//! its service's `usage` row first: the writes of one service are serialised
//! across every node, which keeps quotas exact and makes increments and
//! compare-and-swaps atomic (reads never wait).

use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Transaction};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{
    ComponentStore, DeploymentStore, Entry, KeyPage, KeyValueStore, LIST_PAGE, Namespace, NodeBeat,
    NodeStore, Quota, SharedVersion, StoreError, StoredDeployment, Usage, check_key, check_quota,
    check_value, incremented,
};

/// How long connecting (and waiting for a pooled connection) may take before
/// the store counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections each host keeps at most.
const POOL_SIZE: usize = 16;
/// The advisory lock that serialises migrations across nodes.
const MIGRATION_LOCK: i64 = 0x5357_5944; // "SWYD"

/// The schema, one step per version; a database at version N runs the steps
/// after N. Never edit a step that has shipped: add one.
pub const MIGRATIONS: &[&str] = &[
    // 1: key-value data, usage counted by triggers, deployment records.
    r#"
    CREATE TABLE kv (
        service TEXT NOT NULL,
        bucket  TEXT NOT NULL,
        key     TEXT COLLATE "C" NOT NULL,
        value   BYTEA NOT NULL,
        PRIMARY KEY (service, bucket, key)
    );
    CREATE TABLE usage (
        service TEXT PRIMARY KEY,
        keys    BIGINT NOT NULL,
        bytes   BIGINT NOT NULL
    );
    CREATE TABLE deployments (
        service TEXT PRIMARY KEY,
        record  TEXT NOT NULL
    );
    CREATE FUNCTION switchyard_count_usage() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO usage (service, keys, bytes)
            VALUES (NEW.service, 1, octet_length(NEW.key) + octet_length(NEW.value))
            ON CONFLICT (service) DO UPDATE
            SET keys = usage.keys + 1, bytes = usage.bytes + excluded.bytes;
        ELSIF TG_OP = 'UPDATE' THEN
            UPDATE usage SET bytes = bytes - octet_length(OLD.value) + octet_length(NEW.value)
            WHERE service = NEW.service;
        ELSE
            UPDATE usage SET keys = keys - 1,
                bytes = bytes - octet_length(OLD.key) - octet_length(OLD.value)
            WHERE service = OLD.service;
        END IF;
        RETURN NULL;
    END $$ LANGUAGE plpgsql;
    CREATE TRIGGER kv_counted AFTER INSERT OR UPDATE OF value OR DELETE ON kv
        FOR EACH ROW EXECUTE FUNCTION switchyard_count_usage();
    "#,
    // 2: records have generations, for compare-and-swap and for hosts to
    // tell whether they have seen the latest.
    "ALTER TABLE deployments ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;",
    // 3: component files, content-addressed, and the versions they are.
    r#"
    CREATE TABLE components (
        digest TEXT PRIMARY KEY,
        bytes  BYTEA NOT NULL
    );
    CREATE TABLE versions (
        service TEXT NOT NULL,
        version TEXT NOT NULL,
        digest  TEXT NOT NULL REFERENCES components,
        PRIMARY KEY (service, version)
    );
    "#,
    // 4: hosts' heartbeats.
    r#"
    CREATE TABLE nodes (
        node      TEXT PRIMARY KEY,
        address   TEXT NOT NULL,
        heartbeat TIMESTAMPTZ NOT NULL,
        report    TEXT NOT NULL
    );
    "#,
];

/// The channel on which a saved deployment is announced to every host.
const CHANGES_CHANNEL: &str = "switchyard_deployments";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Backend(Box::new(e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Backend(Box::new(e))
    }
}

/// Several hosts' shared store: one PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    /// Counts the announcements of saved records and shared components.
    changes: Arc<watch::Sender<u64>>,
}

impl PostgresStore {
    /// Connect to the database at `url` (`postgres://USER@HOST:PORT/DB`) and
    /// bring its schema up to date. Fails within seconds, with the reason,
    /// when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("switchyard");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let store = PostgresStore {
            pool,
            changes: Arc::new(watch::Sender::new(0)),
        };
        store.migrate().await?;
        tokio::spawn(listen(config, Arc::downgrade(&store.changes)));
        Ok(store)
    }

    /// Run the migration steps the database lacks, one node at a time.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS switchyard_schema (version INTEGER NOT NULL);
             INSERT INTO switchyard_schema (version)
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM switchyard_schema);",
        )
        .await?;
        let version: i32 = tx
            .query_one("SELECT version FROM switchyard_schema", &[])
            .await?
            .get(0);
        let known = MIGRATIONS.len() as i32;
        if version > known {
            return Err(StoreError::Backend(
                format!(
                    "the database's schema is version {version}, newer than this host \
                     knows ({known}): upgrade the host"
                )
                .into(),
            ));
        }
        for step in &MIGRATIONS[version as usize..] {
            tx.batch_execute(step).await?;
        }
        tx.execute("UPDATE switchyard_schema SET version = $1", &[&known])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// Lock `service`'s usage row for the rest of `tx` (creating it if need
/// be), and return its (keys, bytes).
async fn lock_usage(tx: &Transaction<'_>, service: &str) -> Result<Usage, StoreError> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO usage (service, keys, bytes) VALUES ($1, 0, 0)
             ON CONFLICT (service) DO NOTHING",
        )
        .await?;
    tx.execute(&insert, &[&service]).await?;
    let select = tx
        .prepare_cached("SELECT keys, bytes FROM usage WHERE service = $1 FOR UPDATE")
        .await?;
    let row = tx.query_one(&select, &[&service]).await?;
    let (keys, bytes): (i64, i64) = (row.get(0), row.get(1));
    Ok(Usage {
        keys: keys.max(0) as u64,
        bytes: bytes.max(0) as u64,
    })
}

/// The value under `key`, locked for the rest of `tx`.
async fn read_for_update(
    tx: &Transaction<'_>,
    ns: &Namespace,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let select = tx
        .prepare_cached(
            "SELECT value FROM kv WHERE service = $1 AND bucket = $2 AND key = $3 FOR UPDATE",
        )
        .await?;
    let row = tx
        .query_opt(&select, &[&ns.service, &ns.bucket, &key])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

async fn write(
    tx: &Transaction<'_>,
    ns: &Namespace,
    key: &str,
    value: &[u8],
) -> Result<(), StoreError> {
    let upsert = tx
        .prepare_cached(
            "INSERT INTO kv (service, bucket, key, value) VALUES ($1, $2, $3, $4)
             ON CONFLICT (service, bucket, key) DO UPDATE SET value = excluded.value",
        )
        .await?;
    tx.execute(&upsert, &[&ns.service, &ns.bucket, &key, &value])
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl KeyValueStore for PostgresStore {
    async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT value FROM kv WHERE service = $1 AND bucket = $2 AND key = $3")
            .await?;
        let row = client
            .query_opt(&select, &[&ns.service, &ns.bucket, &key])
            .await?;
        Ok(row.map(|r| r.get(0)))
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let usage = lock_usage(&tx, &ns.service).await?;
        let old = read_for_update(&tx, ns, key).await?;
        check_quota(usage, key, old.as_ref().map(Vec::len), value, quota)?;
        write(&tx, ns, key, value).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        let client = self.client().await?;
        let delete = client
            .prepare_cached("DELETE FROM kv WHERE service = $1 AND bucket = $2 AND key = $3")
            .await?;
        client
            .execute(&delete, &[&ns.service, &ns.bucket, &key])
            .await?;
        Ok(())
    }

    async fn exists(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT 1 FROM kv WHERE service = $1 AND bucket = $2 AND key = $3")
            .await?;
        let row = client
            .query_opt(&select, &[&ns.service, &ns.bucket, &key])
            .await?;
        Ok(row.is_some())
    }

    async fn list_keys(&self, ns: &Namespace, cursor: u64) -> Result<KeyPage, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT key FROM kv WHERE service = $1 AND bucket = $2
                 ORDER BY key LIMIT $3 OFFSET $4",
            )
            .await?;
        // One extra row tells whether another page follows.
        let offset = i64::try_from(cursor).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &select,
                &[&ns.service, &ns.bucket, &(LIST_PAGE as i64 + 1), &offset],
            )
            .await?;
        let more = rows.len() > LIST_PAGE;
        let keys: Vec<String> = rows.iter().take(LIST_PAGE).map(|r| r.get(0)).collect();
        let cursor = more.then(|| cursor + keys.len() as u64);
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: u64,
        quota: &Quota,
    ) -> Result<u64, StoreError> {
        check_key(key)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let usage = lock_usage(&tx, &ns.service).await?;
        let old = read_for_update(&tx, ns, key).await?;
        let next = incremented(key, old.as_deref(), delta)?;
        let value = next.to_string();
        check_quota(
            usage,
            key,
            old.as_ref().map(Vec::len),
            value.as_bytes(),
            quota,
        )?;
        write(&tx, ns, key, value.as_bytes()).await?;
        tx.commit().await?;
        Ok(next)
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let usage = lock_usage(&tx, &ns.service).await?;
        let old = read_for_update(&tx, ns, key).await?;
        if old.as_deref() != expected {
            return Ok(false);
        }
        check_quota(usage, key, old.as_ref().map(Vec::len), new, quota)?;
        write(&tx, ns, key, new).await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait::async_trait]
impl ComponentStore for PostgresStore {
    async fn share_component(
        &self,
        version: &SharedVersion,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let known = tx
            .query_opt(
                "SELECT 1 FROM components WHERE digest = $1",
                &[&version.digest],
            )
            .await?
            .is_some();
        if !known {
            tx.execute(
                "INSERT INTO components (digest, bytes) VALUES ($1, $2)
                 ON CONFLICT (digest) DO NOTHING",
                &[&version.digest, &bytes],
            )
            .await?;
        }
        let changed = tx
            .execute(
                "INSERT INTO versions (service, version, digest) VALUES ($1, $2, $3)
                 ON CONFLICT (service, version) DO UPDATE SET digest = excluded.digest
                 WHERE versions.digest <> excluded.digest",
                &[&version.service, &version.version, &version.digest],
            )
            .await?;
        if changed > 0 {
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANGES_CHANNEL, &version.service],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn unshare_component(&self, service: &str, version: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM versions WHERE service = $1 AND version = $2",
                &[&service, &version],
            )
            .await?;
        Ok(())
    }

    async fn shared_components(&self) -> Result<Vec<SharedVersion>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT service, version, digest FROM versions", &[])
            .await?;
        Ok(rows
            .iter()
            .map(|r| SharedVersion {
                service: r.get(0),
                version: r.get(1),
                digest: r.get(2),
            })
            .collect())
    }

    async fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT bytes FROM components WHERE digest = $1", &[&digest])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}

#[async_trait::async_trait]
impl crate::Scan for PostgresStore {
    async fn scan(&self, after: Option<&Entry>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let (service, bucket, key) = match after {
            Some(e) => (e.ns.service.as_str(), e.ns.bucket.as_str(), e.key.as_str()),
            None => ("", "", ""),
        };
        let client = self.client().await?;
        let rows = client
            .query(
                r#"SELECT service, bucket, key, value FROM kv
                   WHERE (service COLLATE "C", bucket COLLATE "C", key) > ($1, $2, $3)
                   ORDER BY service COLLATE "C", bucket COLLATE "C", key LIMIT $4"#,
                &[&service, &bucket, &key, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Entry {
                ns: Namespace {
                    service: r.get(0),
                    bucket: r.get(1),
                },
                key: r.get(2),
                value: r.get(3),
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl NodeStore for PostgresStore {
    async fn heartbeat(&self, node: &str, address: &str, report: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO nodes (node, address, heartbeat, report) VALUES ($1, $2, now(), $3)
                 ON CONFLICT (node) DO UPDATE
                 SET address = excluded.address, heartbeat = now(), report = excluded.report",
                &[&node, &address, &report],
            )
            .await?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeBeat>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT node, address,
                        (extract(epoch FROM heartbeat) * 1000)::BIGINT,
                        (extract(epoch FROM now() - heartbeat) * 1000)::BIGINT,
                        report
                 FROM nodes ORDER BY node",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| NodeBeat {
                node: r.get(0),
                address: r.get(1),
                at_ms: r.get::<_, i64>(2).max(0) as u64,
                age_ms: r.get::<_, i64>(3).max(0) as u64,
                report: r.get(4),
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl crate::Store for PostgresStore {
    async fn close(&self) -> Result<(), StoreError> {
        // Every write was committed when it returned.
        self.pool.close();
        Ok(())
    }
}

#[async_trait::async_trait]
impl DeploymentStore for PostgresStore {
    async fn load_deployments(&self) -> Result<Vec<StoredDeployment>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT service, record, generation FROM deployments", &[])
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredDeployment {
                service: r.get(0),
                record: r.get(1),
                generation: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }

    async fn save_deployment(
        &self,
        service: &str,
        record: &str,
        based_on: u64,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let saved = tx
            .query_opt(
                "INSERT INTO deployments (service, record, generation) VALUES ($1, $2, 1)
                 ON CONFLICT (service) DO UPDATE
                 SET record = excluded.record, generation = deployments.generation + 1
                 WHERE deployments.generation = $3
                 RETURNING generation",
                &[&service, &record, &(based_on as i64)],
            )
            .await?;
        let Some(saved) = saved else {
            return Err(StoreError::Conflict(service.to_string()));
        };
        // Delivered when the transaction commits, to every host listening.
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &service])
            .await?;
        tx.commit().await?;
        Ok(saved.get::<_, i64>(0).max(0) as u64)
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }
}

/// Listen for saved deployments on a connection of its own, and tell
/// `changes` of each; reconnect after a second when the connection is lost
/// (what was missed meanwhile, the readers' own polling finds). Ends when
/// the store is gone.
async fn listen(config: tokio_postgres::Config, changes: Weak<watch::Sender<u64>>) {
    while changes.strong_count() > 0 {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let told = changes.clone();
            let driving = tokio::spawn(async move {
                while let Some(Ok(message)) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    let Some(changes) = told.upgrade() else {
                        return;
                    };
                    if let AsyncMessage::Notification(_) = message {
                        changes.send_modify(|n| *n += 1);
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
                .await
                .is_ok()
            {
                let _ = driving.await;
            } else {
                driving.abort();
            }
            // Something may have been missed while not listening.
            if let Some(changes) = changes.upgrade() {
                changes.send_modify(|n| *n += 1);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
