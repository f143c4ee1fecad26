//! The operator's commands against a running host (`switchyard services`,
//! `service`, `deploy`, `activate`, `rollback`, `split`, `history`): each is
//! one admin API call, shown as an aligned table for people or as the
//! host's JSON for scripts (`--json`).
//!
//! It owns talking to the admin API from outside and how its answers look
//! in a terminal; it never decides anything itself: a refusal is the host's,
//! repeated word for word.

use std::fmt;
use std::path::Path;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// How a command ended, as its exit code says.
#[derive(Debug)]
pub enum Failure {
    /// The host answered with a refusal (exit code 1); `message` is its reason.
    Refused { status: StatusCode, message: String },
    /// The host could not be reached, or answered what is no admin API
    /// (exit code 3; 2 is a command line clap refused).
    Unreachable(String),
    /// Something on this side: a file to deploy that cannot be read (exit 1).
    Local(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Refused { .. } | Failure::Local(_) => 1,
            Failure::Unreachable(_) => 3,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused { status, message } => {
                write!(f, "refused ({}): {message}", status.as_u16())
            }
            Failure::Unreachable(why) => write!(f, "cannot reach the host: {why}"),
            Failure::Local(why) => f.write_str(why),
        }
    }
}

/// A running host's admin API.
pub struct Remote {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Remote {
    pub fn new(url: &str, token: Option<String>) -> Remote {
        Remote {
            base: url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// One admin call; the host's JSON answer, or why there is none.
    async fn call(&self, method: Method, path: &str, body: Body) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let bytes = match body {
            Body::None => Bytes::new(),
            Body::Json(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(value.to_string())
            }
            Body::Component(bytes) => {
                request = request.header(header::CONTENT_TYPE, "application/wasm");
                Bytes::from(bytes)
            }
        };
        let request = request
            .body(Full::new(bytes))
            .map_err(|e| Failure::Unreachable(format!("{url}: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| Failure::Unreachable(format!("{url}: {}", root(&e))))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Unreachable(format!("{url}: {e}")))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body).map_err(|_| {
            Failure::Unreachable(format!(
                "{url} answered {} with no JSON: is this a Switchyard host?",
                status.as_u16()
            ))
        })?;
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string);
        Err(Failure::Refused { status, message })
    }
}

/// The innermost cause (connection refused, no such host...).
fn root(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

enum Body {
    None,
    Json(Value),
    Component(Vec<u8>),
}

/// One operator command.
pub enum Command {
    Services,
    Service {
        name: String,
    },
    Deploy {
        name: String,
        file: std::path::PathBuf,
        version: String,
    },
    Activate {
        name: String,
        version: String,
    },
    Rollback {
        name: String,
    },
    Split {
        name: String,
        weights: Vec<(String, u32)>,
    },
    History {
        name: String,
    },
}

/// Run `command` against `remote`; what to print on stdout.
pub async fn run(remote: &Remote, command: Command, as_json: bool) -> Result<String, Failure> {
    let path = |name: &str, rest: &str| format!("/admin/services/{name}{rest}");
    let (answer, show): (Value, fn(&Value) -> String) = match command {
        Command::Services => (
            remote
                .call(Method::GET, "/admin/services", Body::None)
                .await?,
            services_table,
        ),
        Command::Service { name } => (
            remote
                .call(Method::GET, &path(&name, ""), Body::None)
                .await?,
            service_table,
        ),
        Command::History { name } => (
            remote
                .call(Method::GET, &path(&name, ""), Body::None)
                .await?,
            history_table,
        ),
        Command::Deploy {
            name,
            file,
            version,
        } => {
            let bytes = read_component(&file)?;
            let at = path(&name, &format!("/versions?version={version}"));
            (
                remote
                    .call(Method::POST, &at, Body::Component(bytes))
                    .await?,
                service_table,
            )
        }
        Command::Activate { name, version } => (
            remote
                .call(
                    Method::POST,
                    &path(&name, "/activate"),
                    Body::Json(json!({ "version": version })),
                )
                .await?,
            service_table,
        ),
        Command::Rollback { name } => (
            remote
                .call(
                    Method::POST,
                    &path(&name, "/rollback"),
                    Body::Json(json!({})),
                )
                .await?,
            service_table,
        ),
        Command::Split { name, weights } => {
            let split: serde_json::Map<String, Value> =
                weights.into_iter().map(|(v, w)| (v, json!(w))).collect();
            (
                remote
                    .call(
                        Method::PUT,
                        &path(&name, "/traffic"),
                        Body::Json(Value::Object(split)),
                    )
                    .await?,
                service_table,
            )
        }
    };
    Ok(if as_json {
        format!("{answer:#}\n")
    } else {
        show(&answer)
    })
}

fn read_component(file: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(file).map_err(|e| Failure::Local(format!("cannot read {}: {e}", file.display())))
}

/// `1.0.0=90` → (`1.0.0`, 90).
pub fn parse_weight(text: &str) -> Result<(String, u32), String> {
    let (version, weight) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: give VERSION=WEIGHT, like 1.1.0=10"))?;
    let weight = weight
        .parse()
        .map_err(|_| format!("{text:?}: the weight must be a whole number"))?;
    Ok((version.to_string(), weight))
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn traffic(service: &Value) -> String {
    service["traffic"]
        .as_object()
        .map(|t| {
            t.iter()
                .map(|(v, w)| format!("{v}={w}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "-".into())
}

fn sum(service: &Value, field: &str) -> u64 {
    service["versions"]
        .as_array()
        .map(|vs| vs.iter().filter_map(|v| v[field].as_u64()).sum())
        .unwrap_or(0)
}

fn services_table(listing: &Value) -> String {
    let rows = listing["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                text(&s["name"]),
                text(&s["active_version"]),
                traffic(s),
                s["versions"].as_array().map_or(0, Vec::len).to_string(),
                text(&s["instances"]),
                sum(s, "requests").to_string(),
                sum(s, "errors").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "ACTIVE",
            "TRAFFIC",
            "VERSIONS",
            "INSTANCES",
            "REQUESTS",
            "ERRORS",
        ],
        rows,
    )
}

fn service_table(service: &Value) -> String {
    let mut out = format!(
        "{}: active {}, traffic {}\n\n",
        text(&service["name"]),
        text(&service["active_version"]),
        traffic(service)
    );
    let rows = service["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            vec![
                text(&v["version"]),
                text(&v["state"]),
                text(&v["weight"]),
                text(&v["requests"]),
                text(&v["errors"]),
                text(&v["instances"]),
                text(&v["reason"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "VERSION",
            "STATE",
            "WEIGHT",
            "REQUESTS",
            "ERRORS",
            "INSTANCES",
            "REASON",
        ],
        rows,
    ));
    out
}

fn history_table(service: &Value) -> String {
    let rows = service["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let at = h["at_ms"].as_u64().map_or_else(
                || "-".into(),
                |ms| {
                    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                    humantime::format_rfc3339_seconds(time).to_string()
                },
            );
            vec![
                at,
                text(&h["action"]),
                text(&h["version"]),
                text(&h["reason"]),
            ]
        })
        .collect();
    table(&["TIME", "ACTION", "VERSION", "REASON"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let shown = table(
            &["SERVICE", "ACTIVE"],
            vec![
                vec!["goods".into(), "1.1.0".into()],
                vec!["a-long-name".into(), "-".into()],
            ],
        );
        let lines: Vec<&str> = shown.lines().collect();
        let column = lines[0].find("ACTIVE").unwrap();
        assert!(lines[1][column..].starts_with("1.1.0"), "{shown}");
        assert!(
            lines[2][column..].starts_with("- ") || lines[2][column..] == *"-",
            "{shown}"
        );
        assert!(lines[1][..column].ends_with("  "), "{shown}");
    }

    #[test]
    fn weights_are_version_equals_weight() {
        assert_eq!(parse_weight("1.1.0=10"), Ok(("1.1.0".into(), 10)));
        assert!(
            parse_weight("1.1.0")
                .unwrap_err()
                .contains("VERSION=WEIGHT")
        );
        assert!(
            parse_weight("1.1.0=ten")
                .unwrap_err()
                .contains("whole number")
        );
    }
}
