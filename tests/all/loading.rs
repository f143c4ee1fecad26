//! Loading services from the services folder: what is served, what is refused
//! and why, and what the admin API reports.

use crate::support::{Host, Site, component, eventually};
use axum::http::StatusCode;
use serde_json::{Value, json};

fn service<'a>(listing: &'a Value, name: &str) -> &'a Value {
    listing["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed in {listing}"))
}

fn reason(service: &Value, version: &str) -> String {
    let entry = service["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("version {version} not listed in {service}"));
    assert_eq!(entry["state"], "rejected", "{entry}");
    entry["reason"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_files_are_refused_and_healthy_services_still_serve() {
    let site = Site::shop();
    let goods = std::fs::read(component("goods")).unwrap();
    site.write("garbage", "1.0.0", b"this is not wasm at all");
    site.write("empty", "1.0.0", b"");
    // A valid core module (magic, version 1) rather than a component.
    site.write("core", "1.0.0", b"\0asm\x01\0\0\0");
    // A newer goods cut off half-way: refused, and 1.0.0 serves instead.
    site.write("goods", "2.0.0", &goods[..goods.len() / 2]);
    // A component that does not export the platform handler.
    site.install("lonely", "1.0.0", &component("kv_probe"));
    std::fs::remove_file(site.services().join("lonely/1.0.0.wasm")).unwrap();
    site.write("lonely", "1.0.0", &wasm_component_without_handler());
    // A good component, with settings out of range.
    site.install("tuned", "1.0.0", &component("goods"));
    site.settings("tuned", "[instances]\nmax = 0\n");
    let host = site.start();

    let listing = host.get("/admin/services").await.body;
    assert!(reason(service(&listing, "garbage"), "1.0.0").contains("not a WebAssembly file"));
    assert!(reason(service(&listing, "empty"), "1.0.0").contains("empty"));
    assert!(reason(service(&listing, "core"), "1.0.0").contains("core WebAssembly module"));
    assert!(reason(service(&listing, "goods"), "2.0.0").contains("not a valid component"));
    assert!(reason(service(&listing, "lonely"), "1.0.0").contains("switchyard:platform/handler"));
    assert!(reason(service(&listing, "tuned"), "1.0.0").contains("[instances]"));
    assert_eq!(service(&listing, "goods")["active_version"], "1.0.0");
    // Which step of loading failed, as data.
    for (name, version, stage) in [
        ("garbage", "1.0.0", "compile"),
        ("core", "1.0.0", "compile"),
        ("goods", "2.0.0", "compile"),
        ("lonely", "1.0.0", "link"),
        ("tuned", "1.0.0", "settings"),
    ] {
        let entry = service(&listing, name)["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == version)
            .unwrap();
        assert_eq!(entry["refusal"]["kind"], "load", "{name}: {entry}");
        assert_eq!(entry["refusal"]["stage"], stage, "{name}: {entry}");
    }

    let refused = host.get("/garbage/anything").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused.error().contains("not a WebAssembly file"),
        "{refused:?}"
    );

    let user = host.add_user().await;
    let pen = host.add_goods("pen", 150, 10).await;
    assert_eq!(pen.header("x-switchyard-version"), "1.0.0");
    let order = host
        .post(
            "/orders",
            json!({"user_id": user.str("id"), "items": [{"goods_id": pen.str("id"), "qty": 1}]}),
        )
        .await;
    assert_eq!(order.status, StatusCode::CREATED, "{order:?}");
    assert!(
        site.log_mentioning("garbage").contains("garbage"),
        "the log names the bad file"
    );
}

/// The smallest component there is: valid, but exporting nothing.
fn wasm_component_without_handler() -> Vec<u8> {
    b"\0asm\x0d\0\x01\0".to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_without_its_provider_is_refused_with_the_reason() {
    let site = Site::new();
    site.install("users", "1.0.0", &component("users"));
    site.install("orders", "1.0.0", &component("orders"));
    let host = site.start_in_process();

    let listing = host.get("/admin/services").await.body;
    let why = reason(service(&listing, "orders"), "1.0.0");
    assert!(why.contains("switchyard:shop/catalog@1.0.0"), "{why}");
    assert!(why.contains("no loaded service exports"), "{why}");
    assert_eq!(service(&listing, "orders")["active_version"], Value::Null);
    let refused = host
        .post("/orders", json!({"user_id": "u1", "items": []}))
        .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.error().contains("catalog"));
    let user = host.add_user().await;
    assert_eq!(user.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_lists_services_versions_interfaces_and_instances() {
    let site = Site::shop();
    site.install("goods", "0.9.0", &component("goods"));
    let host = site.start_in_process();
    let listing = host.get("/admin/services").await;
    assert_eq!(listing.status, StatusCode::OK);
    let names: Vec<&str> = listing.body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["goods", "orders", "users"]);

    let goods = service(&listing.body, "goods");
    assert_eq!(goods["active_version"], "1.0.0");
    let states: Vec<(&str, &str)> = goods["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_str().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("1.0.0", "active"), ("0.9.0", "standby")]);
    assert_eq!(goods["traffic"], json!({"1.0.0": 100}));
    assert_eq!(goods["mode"], "auto");
    let exports = goods["exports"].as_array().unwrap();
    assert!(exports.contains(&json!("switchyard:shop/catalog@1.0.0")));
    assert!(exports.contains(&json!("switchyard:platform/handler@0.1.0")));
    assert!(goods["instances"].as_u64().unwrap() >= 1);

    let orders = service(&listing.body, "orders");
    let imports = orders["imports"].as_array().unwrap();
    assert!(imports.contains(&json!("switchyard:shop/catalog@1.0.0")));
    assert!(imports.contains(&json!("switchyard:shop/directory@1.0.0")));

    let one = host.get("/admin/services/orders").await;
    assert_eq!(&one.body, orders);
    let missing = host.get("/admin/services/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.error().contains("nope"));
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn plain_exports_a_toolchain_leaves_are_no_service_interface() {
    let site = Site::new();
    for name in ["alpha", "beta"] {
        site.install(name, "1.0.0", &component("toolchain_export"));
    }
    let host = site.start_in_process();
    for name in ["alpha", "beta"] {
        assert_eq!(
            host.active(name).await,
            "1.0.0",
            "{}",
            host.service(name).await
        );
        let reply = host.get(&format!("/{name}/")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
}

/// The misplaced component files the admin API lists, by path.
async fn misplaced(host: &crate::support::Host) -> Value {
    host.read("/admin/services").await.body["misplaced_files"].clone()
}

/// The misplaced files once `check` holds for them (or, after waiting for
/// it in vain, as they are: the caller's assertion says what is wrong).
async fn misplaced_until(host: &crate::support::Host, check: impl Fn(&Value) -> bool) -> Value {
    let listed = eventually(async || Some(misplaced(host).await).filter(|l| check(l)));
    match listed.await {
        Some(listed) => listed,
        None => misplaced(host).await,
    }
}

fn reason_for<'a>(listed: &'a Value, file: &str) -> Option<&'a str> {
    listed
        .as_array()?
        .iter()
        .find(|entry| entry["file"] == file)?["reason"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_file_out_of_place_is_listed_with_where_it_belongs() {
    let site = Site::new();
    site.install("goods", "1.0.0", &component("goods"));
    let goods = std::fs::read(component("goods")).unwrap();
    // There at start-up: at the top of the folder, under a name that is no
    // service's, one folder too deep.
    std::fs::write(site.services().join("ratings.wasm"), &goods).unwrap();
    std::fs::create_dir_all(site.services().join("Bad_Name")).unwrap();
    std::fs::write(site.services().join("Bad_Name/1.0.0.wasm"), &goods).unwrap();
    std::fs::create_dir_all(site.services().join("goods/old")).unwrap();
    std::fs::write(site.services().join("goods/old/0.9.0.wasm"), &goods).unwrap();
    let host = site.start();

    let listed = misplaced(&host).await;
    let top = reason_for(&listed, "ratings.wasm").unwrap_or_else(|| panic!("{listed}"));
    assert!(top.contains("services/ratings/1.0.0.wasm"), "{top}");
    let bad = reason_for(&listed, "Bad_Name/1.0.0.wasm").unwrap_or_else(|| panic!("{listed}"));
    assert!(bad.contains("not a valid service name"), "{bad}");
    let deep = reason_for(&listed, "goods/old/0.9.0.wasm").unwrap_or_else(|| panic!("{listed}"));
    assert!(deep.contains("too deep"), "{deep}");
    assert!(site.log().contains("ratings.wasm"), "the log says so too");
    assert_eq!(host.active("goods").await, "1.0.0");

    // Dropped while serving, then taken away: listed, then no more.
    std::fs::write(site.services().join("reviews.wasm"), &goods).unwrap();
    let listed = misplaced_until(&host, |l| reason_for(l, "reviews.wasm").is_some()).await;
    let dropped = reason_for(&listed, "reviews.wasm").unwrap_or_else(|| panic!("{listed}"));
    assert!(dropped.contains("services/reviews/1.0.0.wasm"), "{dropped}");
    std::fs::remove_file(site.services().join("reviews.wasm")).unwrap();
    std::fs::remove_dir_all(site.services().join("Bad_Name")).unwrap();
    let listed = misplaced_until(&host, |l| {
        reason_for(l, "reviews.wasm").is_none() && reason_for(l, "Bad_Name/1.0.0.wasm").is_none()
    })
    .await;
    assert!(reason_for(&listed, "reviews.wasm").is_none(), "{listed}");
    assert!(
        reason_for(&listed, "Bad_Name/1.0.0.wasm").is_none(),
        "{listed}"
    );
    assert!(reason_for(&listed, "ratings.wasm").is_some(), "{listed}");
}

/// A service folder made while the host runs, with a file written into it
/// at once: the folder is listed and the file has events of its own, yet
/// the file is handled once, and logged once (before, every such file was
/// rejected and counted twice, with four log lines).
#[tokio::test(flavor = "multi_thread")]
async fn a_file_dropped_in_a_new_folder_is_handled_once() {
    let site = Site::new();
    let host = site.start();
    let names: Vec<String> = (1..=4).map(|i| format!("fresh{i}")).collect();
    for name in &names {
        std::fs::create_dir(site.services().join(name)).unwrap();
        // As a person's `mkdir` then `cp`: the file comes once the host
        // watches the new folder, so it has events of its own.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        std::fs::write(site.services().join(name).join("1.0.0.wasm"), b"junk").unwrap();
    }
    for name in &names {
        host.wait_state(name, "1.0.0", "rejected").await;
    }
    // What is asserted is that nothing more happens: the second handling
    // came one settling period (150 ms) after the first.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    for name in &names {
        let counted = format!(r#"switchyard_rejected_versions_total{{service="{name}"}}"#);
        assert_eq!(host.metric(&counted).await, 1.0, "{name}");
        let file = format!("{name}/1.0.0.wasm");
        let logged = site.log().lines().filter(|l| l.contains(&file)).count();
        assert_eq!(logged, 1, "{name}: {}", site.log());
    }
}

/// Editing `service.toml` applies without a restart and without dropping a
/// request: new `[config]` values and pool sizes reach new calls while calls
/// keep being answered; an invalid edit is refused with its reason (the
/// admin view and the log) and the settings before it stay; the next valid
/// edit applies and clears the refusal.
#[tokio::test(flavor = "multi_thread")]
async fn an_edited_service_toml_applies_while_serving_and_a_bad_edit_is_refused() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let site = Site::new();
    site.install("faulty", "1.0.0", &component("faulty"));
    site.settings(
        "faulty",
        "[instances]\nmax = 2\n[config]\ngreeting = \"hello\"\n",
    );
    let host = Arc::new(site.start());
    let greeting = |host: Arc<crate::support::Host>| async move {
        host.get("/faulty/config/greeting").await.body
    };
    assert_eq!(greeting(host.clone()).await, "hello");
    let max = |host: Arc<crate::support::Host>| async move {
        let stats = host.get("/admin/stats").await.body;
        stats["services"][0]["instances"]["max"].clone()
    };
    assert_eq!(max(host.clone()).await, 2);
    let history = host.service("faulty").await["history"].clone();

    // Calls keep coming, each taking a while, through every edit below.
    let loading = Arc::new(AtomicBool::new(true));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (host, loading) = (host.clone(), loading.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while loading.load(Ordering::Relaxed) {
                    statuses.push(host.get("/faulty/slow?ms=20").await.status);
                }
                statuses
            })
        })
        .collect();
    let until = |what: &'static str, host: Arc<crate::support::Host>, value: Value| async move {
        let read = async || host.get(&format!("/faulty/config/{what}")).await.body;
        let reached = eventually(async || (read().await == value).then_some(()));
        if reached.await.is_none() {
            panic!("{what} stayed {}", read().await);
        }
    };

    site.settings(
        "faulty",
        "[instances]\nmax = 5\n[config]\ngreeting = \"bonjour\"\n",
    );
    until("greeting", host.clone(), json!("bonjour")).await;
    assert_eq!(max(host.clone()).await, 5);

    // Out of range: refused, with the reason where operators look.
    site.settings(
        "faulty",
        "[instances]\nmax = 0\n[config]\ngreeting = \"nope\"\n",
    );
    let refused = host.wait_refused("faulty", "service.toml", |_| true).await;
    assert!(refused.contains("max"), "{refused}");
    let log = site.log_mentioning("service.toml refused");
    assert!(log.contains("service.toml refused"), "{log}");
    assert_eq!(greeting(host.clone()).await, "bonjour");
    assert_eq!(max(host.clone()).await, 5);

    // Not TOML at all: the same, once refused for that.
    site.settings("faulty", "[instances\n");
    host.wait_refused("faulty", "service.toml", |why| why != refused)
        .await;
    assert_eq!(greeting(host.clone()).await, "bonjour");

    // Removed: the defaults apply, and the refusal is gone.
    std::fs::remove_file(site.services().join("faulty/service.toml")).unwrap();
    until("greeting", host.clone(), Value::Null).await;
    assert_eq!(max(host.clone()).await, 4);
    let view = host.service("faulty").await;
    assert_eq!(view["refused_files"], json!([]), "{view}");
    assert_eq!(
        view["history"], history,
        "settings are not a deployment change"
    );

    loading.store(false, Ordering::Relaxed);
    let mut answered = 0;
    for task in load {
        for status in task.await.unwrap() {
            assert_eq!(status, StatusCode::OK, "no call is dropped");
            answered += 1;
        }
    }
    assert!(answered > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_that_share_a_compiled_cache_compile_each_component_once() {
    let cache = tempfile::tempdir().unwrap();
    let sites = [Site::shop(), Site::shop()];
    // Started together, as a service manager starts several hosts.
    let hosts: Vec<Host> = std::thread::scope(|scope| {
        let starting: Vec<_> = sites
            .iter()
            .map(|site| {
                scope.spawn(|| {
                    let cache = cache.path().to_str().unwrap();
                    site.start_with(&["--compiled-cache", cache])
                })
            })
            .collect();
        starting.into_iter().map(|s| s.join().unwrap()).collect()
    });
    for service in ["goods", "users", "orders"] {
        let mut compiled = 0;
        for host in &hosts {
            let view = host.service(service).await;
            if view["versions"][0]["from_cache"] == false {
                compiled += 1;
            }
        }
        assert_eq!(
            compiled, 1,
            "{service} compiled by one host, loaded by the other"
        );
    }
    assert!(std::fs::read_dir(cache.path()).unwrap().all(|e| {
        let name = e.unwrap().file_name();
        !name.to_string_lossy().ends_with(".partial")
    }));
}
