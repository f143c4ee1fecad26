//! What every backend must do, as tests that run on each: the same data
//! semantics (namespaces, compare-and-swap, counters, cursors, key order,
//! quotas), also under concurrent writers, and deployment records that
//! outlive the store's process. [`conformance!`] instantiates them for a
//! backend; the SQLite and PostgreSQL modules below do.

use std::sync::Arc;

use crate::*;

/// A store opened for one test, with whatever keeps its data alive.
pub struct Opened {
    pub location: Location,
    pub store: Arc<dyn Store>,
    pub _guard: Box<dyn std::any::Any + Send>,
}

fn ns(service: &str) -> Namespace {
    Namespace {
        service: service.into(),
        bucket: "b".into(),
    }
}

/// Every conformance test, for the backend `$open` opens (an async fn from
/// the test's name to `Option<Opened>`; `None` skips).
macro_rules! conformance {
    ($open:path) => {
        conformance!(@tests $open,
            services_do_not_share_keys,
            compare_and_swap_writes_only_on_match,
            list_keys_pages_with_a_cursor_in_byte_order,
            increment_counts_and_refuses_non_counters,
            quotas_count_keys_and_bytes_and_let_shrinking_writes_through,
            concurrent_writers_lose_no_update,
            concurrent_writers_cannot_overrun_a_quota,
            a_deployment_record_is_replaced_and_survives_reopening,
            a_save_based_on_a_stale_generation_is_a_conflict,
            a_scan_reads_every_entry_in_order_page_by_page,
        );
    };
    (@tests $open:path, $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $test() {
                if let Some(opened) = $open(stringify!($test)).await {
                    crate::conformance::$test(opened).await;
                }
            }
        )*
    };
}

pub async fn services_do_not_share_keys(opened: Opened) {
    let store = opened.store;
    store
        .set(&ns("goods"), "k", b"goods data", &Quota::default())
        .await
        .unwrap();
    assert_eq!(store.get(&ns("users"), "k").await.unwrap(), None);
    assert!(!store.exists(&ns("users"), "k").await.unwrap());
    assert!(store.exists(&ns("goods"), "k").await.unwrap());
    assert_eq!(
        store.list_keys(&ns("users"), 0).await.unwrap().keys.len(),
        0
    );
}

pub async fn compare_and_swap_writes_only_on_match(opened: Opened) {
    let store = opened.store;
    let n = ns("goods");
    let q = Quota::default();
    assert!(
        store
            .compare_and_swap(&n, "k", None, b"1", &q)
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap(&n, "k", None, b"2", &q)
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap(&n, "k", Some(b"0"), b"2", &q)
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap(&n, "k", Some(b"1"), b"2", &q)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get(&n, "k").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    store.delete(&n, "k").await.unwrap();
    assert_eq!(store.get(&n, "k").await.unwrap(), None);
}

pub async fn list_keys_pages_with_a_cursor_in_byte_order(opened: Opened) {
    let store = opened.store;
    let n = ns("goods");
    for i in 0..LIST_PAGE + 5 {
        store
            .set(&n, &format!("{i:05}"), b"", &Quota::default())
            .await
            .unwrap();
    }
    let first = store.list_keys(&n, 0).await.unwrap();
    assert_eq!(first.keys.len(), LIST_PAGE);
    assert_eq!(first.keys[0], "00000");
    let second = store.list_keys(&n, first.cursor.unwrap()).await.unwrap();
    assert_eq!(second.keys.len(), 5);
    assert_eq!(second.cursor, None);

    let other = ns("order");
    for key in ["é", "a", "B", "a b", "Z"] {
        store
            .set(&other, key, b"", &Quota::default())
            .await
            .unwrap();
    }
    let keys = store.list_keys(&other, 0).await.unwrap().keys;
    assert_eq!(keys, ["B", "Z", "a", "a b", "é"], "bytewise order");
}

pub async fn increment_counts_and_refuses_non_counters(opened: Opened) {
    let store = opened.store;
    let n = ns("goods");
    let q = Quota::default();
    assert_eq!(store.increment(&n, "c", 1, &q).await.unwrap(), 1);
    assert_eq!(store.increment(&n, "c", 5, &q).await.unwrap(), 6);
    assert_eq!(
        store.get(&n, "c").await.unwrap().as_deref(),
        Some(&b"6"[..])
    );
    store.set(&n, "text", b"abc", &q).await.unwrap();
    assert!(matches!(
        store.increment(&n, "text", 1, &q).await,
        Err(StoreError::NotACounter(_))
    ));
    store
        .set(&n, "big", u64::MAX.to_string().as_bytes(), &q)
        .await
        .unwrap();
    assert!(matches!(
        store.increment(&n, "big", 1, &q).await,
        Err(StoreError::Overflow(_))
    ));
}

pub async fn quotas_count_keys_and_bytes_and_let_shrinking_writes_through(opened: Opened) {
    let store = opened.store;
    let n = ns("goods");
    let quota = Quota {
        max_value_bytes: 10,
        max_keys: 2,
        max_bytes: 20,
    };
    assert!(matches!(
        store.set(&n, "a", &[0; 11], &quota).await,
        Err(StoreError::ValueTooLarge {
            size: 11,
            limit: 10
        })
    ));
    store.set(&n, "a", &[0; 9], &quota).await.unwrap(); // 10 bytes with its key
    store.set(&n, "b", &[0; 9], &quota).await.unwrap(); // 20
    assert!(matches!(
        store.set(&n, "c", b"", &quota).await,
        Err(StoreError::QuotaExceeded { what: "keys", .. })
    ));
    assert!(matches!(
        store.set(&n, "a", &[0; 10], &quota).await,
        Err(StoreError::QuotaExceeded { what: "bytes", .. })
    ));
    store.set(&n, "a", &[0; 1], &quota).await.unwrap(); // shrinking: 12
    store.delete(&n, "b").await.unwrap(); // 2 bytes, 1 key
    store.set(&n, "c", &[0; 9], &quota).await.unwrap();
    // Other services count on their own.
    store.set(&ns("users"), "a", &[0; 9], &quota).await.unwrap();
}

pub async fn concurrent_writers_lose_no_update(opened: Opened) {
    let store = opened.store;
    let (tasks, rounds) = (8u64, 25u64);
    let mut running = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        running.push(tokio::spawn(async move {
            let n = ns("goods");
            let q = Quota::default();
            for _ in 0..rounds {
                store.increment(&n, "counter", 1, &q).await.unwrap();
                // A read-modify-write by compare-and-swap, retried on conflict.
                loop {
                    let old = store.get(&n, "cas").await.unwrap();
                    let next = old
                        .as_deref()
                        .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap())
                        + 1u64;
                    let swapped = store
                        .compare_and_swap(
                            &n,
                            "cas",
                            old.as_deref(),
                            next.to_string().as_bytes(),
                            &q,
                        )
                        .await
                        .unwrap();
                    if swapped {
                        break;
                    }
                }
            }
        }));
    }
    for task in running {
        task.await.unwrap();
    }
    let total = (tasks * rounds).to_string();
    let n = ns("goods");
    assert_eq!(
        store.get(&n, "counter").await.unwrap(),
        Some(total.clone().into_bytes())
    );
    assert_eq!(
        store.get(&n, "cas").await.unwrap(),
        Some(total.into_bytes())
    );
}

pub async fn concurrent_writers_cannot_overrun_a_quota(opened: Opened) {
    let store = opened.store;
    let quota = Quota {
        max_value_bytes: 100,
        max_keys: 5,
        max_bytes: 10_000,
    };
    let mut running = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        running.push(tokio::spawn(async move {
            store
                .set(&ns("goods"), &format!("k{i}"), b"v", &quota)
                .await
        }));
    }
    let mut stored = 0;
    for task in running {
        match task.await.unwrap() {
            Ok(()) => stored += 1,
            Err(StoreError::QuotaExceeded { what: "keys", .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(stored, 5);
    let keys = store.list_keys(&ns("goods"), 0).await.unwrap().keys;
    assert_eq!(keys.len(), 5);
}

pub async fn a_deployment_record_is_replaced_and_survives_reopening(opened: Opened) {
    let store = opened.store;
    assert_eq!(store.save_deployment("goods", "first", 0).await.unwrap(), 1);
    assert_eq!(
        store.save_deployment("users", "theirs", 0).await.unwrap(),
        1
    );
    assert_eq!(
        store.save_deployment("goods", "second", 1).await.unwrap(),
        2
    );
    store.close().await.unwrap();
    drop(store);
    let store = open(&opened.location).await.unwrap();
    let mut records = store.load_deployments().await.unwrap();
    records.sort_by(|a, b| a.service.cmp(&b.service));
    let stored = |service: &str, record: &str, generation| StoredDeployment {
        service: service.into(),
        record: record.into(),
        generation,
    };
    assert_eq!(
        records,
        vec![stored("goods", "second", 2), stored("users", "theirs", 1)]
    );
}

pub async fn a_save_based_on_a_stale_generation_is_a_conflict(opened: Opened) {
    let store = opened.store;
    store.save_deployment("goods", "a", 0).await.unwrap();
    store.save_deployment("goods", "b", 1).await.unwrap();
    // A host that saw generation 1 saves after another host's save.
    assert!(matches!(
        store.save_deployment("goods", "stale", 1).await,
        Err(StoreError::Conflict(service)) if service == "goods"
    ));
    let records = store.load_deployments().await.unwrap();
    assert_eq!(records[0].record, "b");
    assert_eq!(records[0].generation, 2);
}

pub async fn a_scan_reads_every_entry_in_order_page_by_page(opened: Opened) {
    let store = opened.store;
    let q = Quota::default();
    let written = [
        ("users", "b", "x"),
        ("goods", "b", "k2"),
        ("goods", "a", "k9"),
        ("goods", "b", "k1"),
    ];
    for (service, bucket, key) in written {
        let ns = Namespace {
            service: service.into(),
            bucket: bucket.into(),
        };
        store.set(&ns, key, key.as_bytes(), &q).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<Entry> = None;
    loop {
        let page = store.scan(after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last().cloned() else {
            break;
        };
        for entry in page {
            assert_eq!(entry.value, entry.key.as_bytes());
            seen.push(format!(
                "{}/{}/{}",
                entry.ns.service, entry.ns.bucket, entry.key
            ));
        }
        after = Some(last);
    }
    assert_eq!(
        seen,
        ["goods/a/k9", "goods/b/k1", "goods/b/k2", "users/b/x"]
    );
}

mod sqlite {
    use super::*;

    async fn open_sqlite(_test: &str) -> Option<Opened> {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::sqlite_in(dir.path());
        let store = open(&location).await.unwrap();
        Some(Opened {
            location,
            store,
            _guard: Box::new(dir),
        })
    }

    conformance!(open_sqlite);
}

mod postgres {
    use super::*;

    async fn open_postgres(test: &str) -> Option<Opened> {
        let database = test_pg::fresh(test).await?;
        let location = Location::Postgres(database.url.clone());
        let store = open(&location).await.unwrap();
        Some(Opened {
            location,
            store,
            _guard: Box::new(database),
        })
    }

    conformance!(open_postgres);

    #[tokio::test(flavor = "multi_thread")]
    async fn every_simple_operation_is_one_round_trip() {
        let Some(database) = test_pg::fresh("round_trips").await else {
            return;
        };
        let proxy = test_pg::Proxy::to(&database.url).await;
        let store = PostgresStore::connect(&proxy.url(&database.url))
            .await
            .unwrap();
        let (n, q) = (ns("goods"), Quota::default());
        // The first write of a service draws the shards' shares of its quota
        // (a second round trip), and a connection prepares each statement
        // once.
        store.set(&n, "warm", b"1", &q).await.unwrap();
        store.increment(&n, "warm-count", 1, &q).await.unwrap();
        store
            .compare_and_swap(&n, "warm", Some(b"1"), b"2", &q)
            .await
            .unwrap();
        store.delete(&n, "warm-gone").await.unwrap();
        store.get(&n, "warm").await.unwrap();
        store.exists(&n, "warm").await.unwrap();
        // The listening connection has said LISTEN by now.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;

        let counted = |before: u64| proxy.round_trips() - before;
        let mut costs = Vec::new();
        for i in 0..20 {
            let key = format!("k{i}");
            let before = proxy.round_trips();
            store.set(&n, &key, b"v", &q).await.unwrap();
            costs.push(("set (new)", counted(before)));
            let before = proxy.round_trips();
            store.set(&n, &key, b"vv", &q).await.unwrap();
            costs.push(("set (replace)", counted(before)));
            let before = proxy.round_trips();
            store.increment(&n, &format!("c{i}"), 2, &q).await.unwrap();
            costs.push(("increment", counted(before)));
            let before = proxy.round_trips();
            assert!(
                store
                    .compare_and_swap(&n, &key, Some(b"vv"), b"w", &q)
                    .await
                    .unwrap()
            );
            costs.push(("compare-and-swap", counted(before)));
            let before = proxy.round_trips();
            assert!(
                !store
                    .compare_and_swap(&n, &key, None, b"x", &q)
                    .await
                    .unwrap()
            );
            costs.push(("compare-and-swap (lost)", counted(before)));
            let before = proxy.round_trips();
            assert_eq!(store.get(&n, &key).await.unwrap(), Some(b"w".to_vec()));
            costs.push(("get", counted(before)));
            let before = proxy.round_trips();
            store.delete(&n, &key).await.unwrap();
            costs.push(("delete", counted(before)));
        }
        for (operation, round_trips) in costs {
            assert_eq!(round_trips, 1, "{operation}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_quota_holds_across_hosts_under_concurrent_writers() {
        let Some(database) = test_pg::fresh("quota_hosts").await else {
            return;
        };
        let hosts = [
            Arc::new(PostgresStore::connect(&database.url).await.unwrap()),
            Arc::new(PostgresStore::connect(&database.url).await.unwrap()),
        ];
        let quota = Quota {
            max_value_bytes: 100,
            max_keys: 37,
            max_bytes: 1_000_000,
        };
        // 2 hosts × 8 writers × 10 distinct keys each: 160 tries for 37 keys.
        let mut running = Vec::new();
        for (h, host) in hosts.iter().enumerate() {
            for w in 0..8 {
                let host = host.clone();
                running.push(tokio::spawn(async move {
                    let mut stored = 0;
                    for k in 0..10 {
                        let key = format!("h{h}-w{w}-k{k}");
                        match host.set(&ns("goods"), &key, b"v", &quota).await {
                            Ok(()) => stored += 1,
                            Err(StoreError::QuotaExceeded { what: "keys", .. }) => {}
                            Err(e) => panic!("unexpected: {e}"),
                        }
                    }
                    stored
                }));
            }
        }
        let mut stored = 0;
        for task in running {
            stored += task.await.unwrap();
        }
        // Exact: full, never over.
        assert_eq!(stored, 37);
        let mut keys = Vec::new();
        let mut cursor = Some(0);
        while let Some(at) = cursor {
            let page = hosts[0].list_keys(&ns("goods"), at).await.unwrap();
            keys.extend(page.keys);
            cursor = page.cursor;
        }
        assert_eq!(keys.len(), 37);
        // Freed room is usable from any host, whichever shard it was in.
        // (Which keys won the race is up to the scheduler: free one that did.)
        hosts[1].delete(&ns("goods"), &keys[0]).await.unwrap();
        hosts[0]
            .set(&ns("goods"), "more", b"v", &quota)
            .await
            .unwrap();
        assert!(matches!(
            hosts[1].set(&ns("goods"), "again", b"v", &quota).await,
            Err(StoreError::QuotaExceeded {
                what: "keys",
                used: 37,
                limit: 37
            })
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn usage_counted_before_the_shards_carries_over() {
        let Some(database) = test_pg::fresh("usage_carried").await else {
            return;
        };
        // A database as schema 4 left it, written through its triggers.
        let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        for step in &crate::MIGRATIONS[..4] {
            client.batch_execute(step).await.unwrap();
        }
        client
            .batch_execute(
                "CREATE TABLE switchyard_schema (version INTEGER NOT NULL);
                 INSERT INTO switchyard_schema VALUES (4);
                 INSERT INTO kv SELECT 'goods', 'b', 'k' || g, '\\x0102' FROM generate_series(1, 30) g;",
            )
            .await
            .unwrap();
        let store = PostgresStore::connect(&database.url).await.unwrap();
        let quota = Quota {
            max_value_bytes: 100,
            max_keys: 31,
            max_bytes: 1_000_000,
        };
        store
            .set(&ns("goods"), "one-more", b"v", &quota)
            .await
            .unwrap();
        assert!(matches!(
            store.set(&ns("goods"), "too-many", b"v", &quota).await,
            Err(StoreError::QuotaExceeded {
                what: "keys",
                used: 31,
                limit: 31
            })
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn nodes_starting_at_once_migrate_the_schema_once() {
        let Some(database) = test_pg::fresh("migrate").await else {
            return;
        };
        let location = Location::Postgres(database.url.clone());
        let starting: Vec<_> = (0..4)
            .map(|_| {
                let location = location.clone();
                tokio::spawn(async move { open(&location).await.map(|_| ()) })
            })
            .collect();
        for start in starting {
            start.await.unwrap().unwrap();
        }
        let store = PostgresStore::connect(&database.url).await.unwrap();
        store
            .set(&ns("goods"), "k", b"v", &Quota::default())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_save_by_one_host_is_announced_to_the_others() {
        let Some(database) = test_pg::fresh("announce").await else {
            return;
        };
        let one = PostgresStore::connect(&database.url).await.unwrap();
        let other = PostgresStore::connect(&database.url).await.unwrap();
        let mut told = other.changes().unwrap();
        // Let the listener connect and listen.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        told.mark_unchanged();
        let waiting = tokio::spawn(async move { told.changed().await.unwrap() });
        one.save_deployment("goods", "record", 0).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the other host was told within 5 s")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn components_are_shared_by_digest_and_withdrawn_by_version() {
        let Some(database) = test_pg::fresh("components").await else {
            return;
        };
        let store = PostgresStore::connect(&database.url).await.unwrap();
        let shared = |version: &str, digest: &str| SharedVersion {
            service: "goods".into(),
            version: version.into(),
            digest: digest.into(),
        };
        store
            .share_component(&shared("1.0.0", "d1"), b"one")
            .await
            .unwrap();
        // The same bytes as another version, and the same version again.
        store
            .share_component(&shared("1.1.0", "d1"), b"one")
            .await
            .unwrap();
        store
            .share_component(&shared("1.0.0", "d1"), b"one")
            .await
            .unwrap();
        // A new build of 1.1.0.
        store
            .share_component(&shared("1.1.0", "d2"), b"two")
            .await
            .unwrap();
        let mut offered = store.shared_components().await.unwrap();
        offered.sort_by(|a, b| a.version.cmp(&b.version));
        assert_eq!(offered, vec![shared("1.0.0", "d1"), shared("1.1.0", "d2")]);
        assert_eq!(
            store.component("d2").await.unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(store.component("d9").await.unwrap(), None);
        store.unshare_component("goods", "1.0.0").await.unwrap();
        assert_eq!(
            store.shared_components().await.unwrap(),
            vec![shared("1.1.0", "d2")]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_copy_moves_data_and_records_into_an_empty_store_only() {
        let Some(database) = test_pg::fresh("copy").await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let from = open(&Location::sqlite_in(dir.path())).await.unwrap();
        let to = open(&Location::Postgres(database.url.clone()))
            .await
            .unwrap();
        for i in 0..LIST_PAGE + 3 {
            from.set(&ns("goods"), &format!("k{i:05}"), b"v", &Quota::default())
                .await
                .unwrap();
        }
        from.save_deployment("goods", "record", 0).await.unwrap();
        let copied = copy(&*from, &*to).await.unwrap();
        assert_eq!(
            copied,
            Copied {
                entries: LIST_PAGE as u64 + 3,
                deployments: 1
            }
        );
        assert_eq!(
            to.get(&ns("goods"), "k01002").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(to.load_deployments().await.unwrap()[0].record, "record");
        // Usage was counted on the way in: the quota holds in the new store.
        let tight = Quota {
            max_keys: LIST_PAGE as u64 + 3,
            ..Quota::default()
        };
        assert!(matches!(
            to.set(&ns("goods"), "one-more", b"v", &tight).await,
            Err(StoreError::QuotaExceeded { what: "keys", .. })
        ));
        // Never into a store that holds something.
        let again = copy(&*from, &*to).await;
        assert!(
            matches!(&again, Err(e) if e.to_string().contains("already holds")),
            "{again:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unreachable_server_is_an_error_within_seconds() {
        let started = std::time::Instant::now();
        // A port nothing listens on.
        let refused = PostgresStore::connect("postgres://postgres@127.0.0.1:9/test").await;
        assert!(matches!(refused, Err(StoreError::Backend(_))));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
