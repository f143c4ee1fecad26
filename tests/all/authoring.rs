//! A service author's first steps, as the README gives them: `switchyard
//! new` writes a service in each language, `switchyard build` builds it
//! with the pinned toolchain straight into a running host's services folder,
//! and the host serves it.

use std::path::Path;
use std::process::{Command, Output};

use axum::http::StatusCode;
use serde_json::json;

use crate::support::Site;

/// `switchyard ARGS`, to its end (off the test's runtime threads).
async fn switchyard(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&args)
            // The toolchains `make tools` installed, at the same pins.
            .env("SWITCHYARD_TOOLCHAINS", root.join("target/tools"))
            // A Rust service builds where the guests were built
            // (tests/artifacts), so that wit-bindgen and its macros are
            // compiled once per run, not again for it.
            .env("CARGO_TARGET_DIR", root.join("target/wasm"))
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn a_new_service_in_each_language_is_built_into_a_running_host_and_served() {
    let site = Site::shop();
    let host = site.start();
    let work = tempfile::tempdir().unwrap();
    let services = site.services().display().to_string();
    for (language, name) in [
        ("python", "hello-py"),
        ("javascript", "hello-js"),
        ("rust", "hello-rs"),
    ] {
        let dir = work.path().display().to_string();
        let new = switchyard(
            [
                "new", name, "--lang", language, "--import", "catalog", "--dir", &dir,
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert!(new.status.success(), "{}", said(&new));
        let folder = work.path().join(name).display().to_string();
        let build = ["build", &folder, "--services", &services].map(String::from);
        let built = switchyard(build.to_vec()).await;
        assert!(built.status.success(), "{language}: {}", said(&built));
        assert!(
            said(&built).contains(&format!("built {name} 0.1.0")),
            "{}",
            said(&built)
        );

        host.wait_active(name, "0.1.0").await;
        let hello = host.get(&format!("/{name}/")).await;
        assert_eq!(hello.status, StatusCode::OK, "{language}: {hello:?}");
        assert_eq!(hello.body, json!({"service": name, "message": "hello"}));
        let missing = host.get(&format!("/{name}/nowhere")).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{missing:?}");
        // Its world imports the catalog; a Rust component keeps only the
        // imports its code calls, the others all of them.
        let service = host.service(name).await;
        let imports = service["imports"].as_array().unwrap();
        assert_eq!(
            imports.contains(&json!("switchyard:shop/catalog@1.0.0")),
            language != "rust",
            "{language}: {service}"
        );

        // The same version again is refused, and the served file stays.
        let again = switchyard(build.to_vec()).await;
        assert!(!again.status.success());
        assert!(
            said(&again).contains("exists: a version is never built over"),
            "{}",
            said(&again)
        );
    }

    let refused = switchyard(
        ["new", "admin", "--lang", "rust"]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(!refused.status.success());
    assert!(said(&refused).contains("reserved"), "{}", said(&refused));
}
