//! The cluster backend: a PostgreSQL database that several hosts share.
//!
//! Connections come from a `deadpool-postgres` pool. The schema is created
//! and migrated by the host itself ([`MIGRATIONS`], versioned in
//! `switchyard_schema`), under an advisory lock, so that nodes starting at
//! once do not race.
//!
//! Every write of a key (set, delete, increment, compare-and-swap) is one
//! statement, `switchyard_kv_write`, a function the migrations install: one
//! round trip, atomic on its own. A service's use (keys, bytes) is counted
//! in 16 rows (`usage_shards`, by a hash of the key), each holding a share
//! of the quota, so writes to different keys rarely wait for each other,
//! on one host or many. A shard that has used up its share asks for more
//! with a second statement, which locks the service's shards, checks the
//! write against the whole quota and shares out what is left: a quota is
//! never overrun, and a write is refused only when the whole quota is full.
//! Reads never wait.

use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{
    ComponentStore, DeploymentStore, Entry, KeyPage, KeyValueStore, LIST_PAGE, Namespace, NodeBeat,
    NodeStore, Quota, SharedVersion, StoreError, StoredDeployment, check_key, check_value,
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
    // 5: usage counted in 16 shards per service, each holding a share of
    // the quota, instead of one row every write of a service locked; every
    // write one statement (`switchyard_kv_write`), not a transaction of
    // several round trips.
    r#"
    CREATE FUNCTION switchyard_shard(key TEXT) RETURNS INTEGER
        LANGUAGE SQL IMMUTABLE PARALLEL SAFE
        AS $$ SELECT abs(hashtext(key) % 16) $$;
    CREATE TABLE usage_shards (
        service       TEXT NOT NULL,
        shard         INTEGER NOT NULL,
        keys          BIGINT NOT NULL DEFAULT 0,
        bytes         BIGINT NOT NULL DEFAULT 0,
        -- This shard's share of the quota: its keys and bytes may grow to
        -- these without asking the other shards. The shares of a service
        -- never add up to more than the quota they were drawn from.
        keys_allowed  BIGINT NOT NULL DEFAULT 0,
        bytes_allowed BIGINT NOT NULL DEFAULT 0,
        -- The quota the shares were drawn from (0: none yet).
        quota_keys    BIGINT NOT NULL DEFAULT 0,
        quota_bytes   BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (service, shard)
    );
    INSERT INTO usage_shards (service, shard, keys, bytes)
        SELECT service, switchyard_shard(key), count(*),
               sum(octet_length(key) + octet_length(value))
        FROM kv GROUP BY 1, 2;
    DROP TRIGGER kv_counted ON kv;
    DROP FUNCTION switchyard_count_usage();
    DROP TABLE usage;

    -- One write of a key: `op` is 'set', 'cas' (when the value is
    -- `expected`, NULL: absent), 'incr' (by `delta`) or 'delete'. Locks
    -- the key's shard, then the key (always in that order, so writers
    -- never deadlock). When the shard's share cannot take the write (or
    -- the quota changed), it answers 'rebalance' having done nothing; the
    -- caller then asks again with `rebalance`, which locks every shard of
    -- the service in order first, checks the write against the whole
    -- quota and shares out what is left. Outcomes: 'ok' (`counter` the
    -- new count for 'incr'), 'mismatch' (cas), 'keys' or 'bytes' (the
    -- quota is full; `used` what the service uses), 'not-a-counter',
    -- 'overflow', 'rebalance'.
    CREATE FUNCTION switchyard_kv_write(
        p_service TEXT, p_bucket TEXT, p_key TEXT, p_op TEXT,
        p_value BYTEA, p_expected BYTEA, p_delta NUMERIC,
        p_max_keys BIGINT, p_max_bytes BIGINT, p_rebalance BOOLEAN,
        OUT outcome TEXT, OUT used BIGINT, OUT counter NUMERIC
    ) LANGUAGE plpgsql AS $$
    DECLARE
        s INTEGER := switchyard_shard(p_key);
        u usage_shards%ROWTYPE;
        old BYTEA;
        had BOOLEAN;
        next BYTEA;
        dk BIGINT;
        db BIGINT;
        total_keys BIGINT;
        total_bytes BIGINT;
        spare_keys BIGINT;
        spare_bytes BIGINT;
    BEGIN
        IF p_rebalance THEN
            INSERT INTO usage_shards (service, shard)
                SELECT p_service, g FROM generate_series(0, 15) g
                ON CONFLICT DO NOTHING;
            PERFORM 1 FROM usage_shards WHERE service = p_service
                ORDER BY shard FOR UPDATE;
        END IF;
        SELECT * INTO u FROM usage_shards
            WHERE service = p_service AND shard = s FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO usage_shards (service, shard) VALUES (p_service, s)
                ON CONFLICT DO NOTHING;
            SELECT * INTO u FROM usage_shards
                WHERE service = p_service AND shard = s FOR UPDATE;
        END IF;
        SELECT value INTO old FROM kv
            WHERE service = p_service AND bucket = p_bucket AND key = p_key FOR UPDATE;
        had := FOUND;

        IF p_op = 'delete' THEN
            IF had THEN
                DELETE FROM kv WHERE service = p_service AND bucket = p_bucket AND key = p_key;
                UPDATE usage_shards SET keys = keys - 1,
                    bytes = bytes - octet_length(p_key) - octet_length(old)
                    WHERE service = p_service AND shard = s;
            END IF;
            outcome := 'ok';
            RETURN;
        ELSIF p_op = 'cas' THEN
            IF old IS DISTINCT FROM p_expected THEN
                outcome := 'mismatch';
                RETURN;
            END IF;
            next := p_value;
        ELSIF p_op = 'incr' THEN
            -- A decimal u64, as Rust parses one (an optional '+', digits).
            IF NOT had THEN
                counter := 0;
            ELSIF encode(old, 'escape') ~ '^[+]?[0-9]+$'
                  AND ltrim(encode(old, 'escape'), '+')::NUMERIC <= 18446744073709551615 THEN
                counter := ltrim(encode(old, 'escape'), '+')::NUMERIC;
            ELSE
                outcome := 'not-a-counter';
                RETURN;
            END IF;
            counter := counter + p_delta;
            IF counter > 18446744073709551615 THEN
                outcome := 'overflow';
                counter := NULL;
                RETURN;
            END IF;
            next := convert_to(counter::TEXT, 'UTF8');
        ELSE
            next := p_value;
        END IF;

        dk := CASE WHEN had THEN 0 ELSE 1 END;
        db := octet_length(p_key) + octet_length(next)
              - CASE WHEN had THEN octet_length(p_key) + octet_length(old) ELSE 0 END;
        IF u.quota_keys <> p_max_keys OR u.quota_bytes <> p_max_bytes
           OR (dk > 0 AND u.keys + dk > u.keys_allowed)
           OR (db > 0 AND u.bytes + db > u.bytes_allowed) THEN
            IF NOT p_rebalance THEN
                outcome := 'rebalance';
                counter := NULL;
                RETURN;
            END IF;
            SELECT sum(keys), sum(bytes) INTO total_keys, total_bytes
                FROM usage_shards WHERE service = p_service;
            IF dk > 0 AND total_keys + dk > p_max_keys THEN
                outcome := 'keys';
                used := total_keys;
                counter := NULL;
                RETURN;
            END IF;
            IF db > 0 AND total_bytes + db > p_max_bytes THEN
                outcome := 'bytes';
                used := total_bytes;
                counter := NULL;
                RETURN;
            END IF;
            -- What is left after this write, shared out evenly; the rest of
            -- the division stays with this shard.
            spare_keys := greatest(p_max_keys - total_keys - greatest(dk, 0), 0);
            spare_bytes := greatest(p_max_bytes - total_bytes - greatest(db, 0), 0);
            UPDATE usage_shards SET
                keys_allowed = keys + spare_keys / 16
                    + CASE WHEN shard = s THEN greatest(dk, 0) + spare_keys % 16 ELSE 0 END,
                bytes_allowed = bytes + spare_bytes / 16
                    + CASE WHEN shard = s THEN greatest(db, 0) + spare_bytes % 16 ELSE 0 END,
                quota_keys = p_max_keys,
                quota_bytes = p_max_bytes
                WHERE service = p_service;
        END IF;

        INSERT INTO kv (service, bucket, key, value) VALUES (p_service, p_bucket, p_key, next)
            ON CONFLICT (service, bucket, key) DO UPDATE SET value = excluded.value;
        UPDATE usage_shards SET keys = keys + dk, bytes = bytes + db
            WHERE service = p_service AND shard = s;
        outcome := 'ok';
    END $$;
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

/// One write of a key, as `switchyard_kv_write` (migration 5) does it.
enum Write<'a> {
    Set(&'a [u8]),
    CompareAndSwap {
        expected: Option<&'a [u8]>,
        new: &'a [u8],
    },
    Increment(u64),
    Delete,
}

/// What a write came to.
enum Written {
    Done,
    /// The counter's value after an increment.
    Counted(u64),
    /// A compare-and-swap found another value.
    Mismatch,
}

impl PostgresStore {
    /// `write` of `key`, in one statement: one round trip, unless the key's
    /// shard has used up its share of the quota (then a second one, which
    /// shares out what is left of it).
    async fn write(
        &self,
        ns: &Namespace,
        key: &str,
        write: Write<'_>,
        quota: &Quota,
    ) -> Result<Written, StoreError> {
        let (op, value, expected, delta) = match write {
            Write::Set(value) => ("set", Some(value), None, 0),
            Write::CompareAndSwap { expected, new } => ("cas", Some(new), expected, 0),
            Write::Increment(delta) => ("incr", None, None, delta),
            Write::Delete => ("delete", None, None, 0),
        };
        // Quotas past what BIGINT holds are as good as none.
        let max_keys = i64::try_from(quota.max_keys).unwrap_or(i64::MAX);
        let max_bytes = i64::try_from(quota.max_bytes).unwrap_or(i64::MAX);
        let delta = delta.to_string();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT outcome, used, counter::TEXT FROM switchyard_kv_write(
                     $1, $2, $3, $4, $5, $6, $7::TEXT::NUMERIC, $8, $9, $10)",
            )
            .await?;
        for rebalance in [false, true] {
            let row = client
                .query_one(
                    &statement,
                    &[
                        &ns.service,
                        &ns.bucket,
                        &key,
                        &op,
                        &value,
                        &expected,
                        &delta,
                        &max_keys,
                        &max_bytes,
                        &rebalance,
                    ],
                )
                .await?;
            let outcome: &str = row.get(0);
            let used = || row.get::<_, Option<i64>>(1).unwrap_or(0).max(0) as u64;
            return match outcome {
                "ok" => match row.get::<_, Option<String>>(2) {
                    Some(counter) => counter
                        .parse()
                        .map(Written::Counted)
                        .map_err(|e| StoreError::Backend(Box::new(e))),
                    None => Ok(Written::Done),
                },
                "mismatch" => Ok(Written::Mismatch),
                "keys" => Err(StoreError::QuotaExceeded {
                    what: "keys",
                    used: used(),
                    limit: quota.max_keys,
                }),
                "bytes" => Err(StoreError::QuotaExceeded {
                    what: "bytes",
                    used: used(),
                    limit: quota.max_bytes,
                }),
                "not-a-counter" => Err(StoreError::NotACounter(key.to_string())),
                "overflow" => Err(StoreError::Overflow(key.to_string())),
                "rebalance" => continue,
                other => Err(StoreError::Backend(
                    format!("switchyard_kv_write answered {other:?}").into(),
                )),
            };
        }
        Err(StoreError::Backend(
            "switchyard_kv_write asked to rebalance twice".into(),
        ))
    }
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
        self.write(ns, key, Write::Set(value), quota).await?;
        Ok(())
    }

    async fn delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        // Deleting only frees: no quota applies.
        self.write(ns, key, Write::Delete, &Quota::UNLIMITED)
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
        match self.write(ns, key, Write::Increment(delta), quota).await? {
            Written::Counted(next) => Ok(next),
            _ => Err(StoreError::Backend("an increment answered no count".into())),
        }
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
        let write = Write::CompareAndSwap { expected, new };
        let written = self.write(ns, key, write, quota).await?;
        Ok(!matches!(written, Written::Mismatch))
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
