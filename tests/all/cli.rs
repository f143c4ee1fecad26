//! The operator's commands against a running host, as a person or a script
//! runs them: tables, `--json`, and exit codes that tell a refusal (1, with
//! the host's reason) from a host out of reach (3).

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{Site, component};

const TOKEN: &str = "cli-secret";

/// `switchyard ARGS` against `url`, with `token` in SWITCHYARD_ADMIN_TOKEN.
async fn switchyard(url: &str, token: &str, args: &[&str]) -> Output {
    let (url, token) = (url.to_string(), token.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&args)
            .env("SWITCHYARD_URL", url)
            .env("SWITCHYARD_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_lists_deploys_splits_rolls_back_and_reads_history_from_the_cli() {
    let site = Site::new();
    site.install("goods", "1.0.0", &component("goods"));
    let host = site.start_in_process_with(|s| s.admin_token = Some(TOKEN.into()));
    let url = host.base.clone();
    let run = |args: &'static [&'static str]| switchyard(&url, TOKEN, args);

    // A table for people: columns line up under their headers.
    let listed = run(&["services"]).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let table = stdout(&listed);
    let lines: Vec<&str> = table.lines().collect();
    let column = lines[0].find("ACTIVE").unwrap_or_else(|| panic!("{table}"));
    let goods = lines.iter().find(|l| l.starts_with("goods")).unwrap();
    assert!(goods[column..].starts_with("1.0.0"), "{table}");

    // Deploy a version, split, activate, roll back: each answers the service.
    let file = component("goods_v2").display().to_string();
    let deploy = ["deploy", "goods", &file, "--version", "1.1.0"];
    let deployed = switchyard(&url, TOKEN, &deploy).await;
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let split = run(&["split", "goods", "1.0.0=90", "1.1.0=10"]).await;
    assert!(split.status.success(), "{}", stderr(&split));
    assert!(
        stdout(&split).contains("traffic 1.0.0=90 1.1.0=10"),
        "{}",
        stdout(&split)
    );
    let shown = run(&["service", "goods", "--json"]).await;
    let service: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(service["traffic"]["1.1.0"], 10, "{service}");
    let activated = run(&["activate", "goods", "1.1.0"]).await;
    assert!(activated.status.success(), "{}", stderr(&activated));
    assert_eq!(host.active("goods").await, "1.1.0");
    let rolled = run(&["rollback", "goods"]).await;
    assert!(rolled.status.success(), "{}", stderr(&rolled));
    assert!(
        stdout(&rolled).contains("active 1.0.0"),
        "{}",
        stdout(&rolled)
    );
    let history = stdout(&run(&["history", "goods"]).await);
    assert!(history.starts_with("TIME"), "{history}");
    for action in ["traffic", "activated"] {
        assert!(history.contains(action), "{action}: {history}");
    }

    // A refusal: exit code 1, the host's reason word for word.
    let refused = run(&["activate", "goods", "9.9.9"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let reason = host
        .send_as(
            TOKEN,
            axum::http::Method::POST,
            "/admin/services/goods/activate",
            Some(br#"{"version": "9.9.9"}"#.to_vec()),
        )
        .await;
    assert!(
        stderr(&refused).contains(reason.error()),
        "{}",
        stderr(&refused)
    );
    let bad_split = run(&["split", "goods", "1.0.0"]).await;
    assert_eq!(
        bad_split.status.code(),
        Some(2),
        "a command line not understood"
    );
    let wrong = switchyard(&url, "not-the-token", &["services"]).await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("refused (401)"),
        "{}",
        stderr(&wrong)
    );

    // No host there: exit code 3, saying so.
    let away = switchyard("http://127.0.0.1:9", TOKEN, &["services"]).await;
    assert_eq!(away.status.code(), Some(3), "{}", stderr(&away));
    assert!(
        stderr(&away).contains("cannot reach the host"),
        "{}",
        stderr(&away)
    );
}
