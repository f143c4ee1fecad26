//! What every shop service does the same way at its HTTP edge: parse the request
//! (path segments, query parameters, JSON bodies) and build JSON replies, including
//! the `{"error": "..."}` body every 4xx carries.
//!
//! It also owns the bindings of the platform imports (key-value, compare-and-swap,
//! config, logging), which the services reuse through wit-bindgen's `with`, and
//! [`store`], the typed JSON-record layer the services keep their data in. Each
//! service converts a [`Reply`] into its own generated response, with
//! [`http_handler!`] or [`http_handler2!`].

pub mod store;

/// Bindings of the host imports every service may use.
pub mod bindings {
    wit_bindgen::generate!({
        inline: "
            package switchyard:guest-common;
            world platform-imports {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/atomics@0.2.0-draft;
                import switchyard:platform/keyvalue-cas@0.1.0;
                import wasi:config/store@0.2.0-rc.1;
                import wasi:logging/logging@0.1.0-draft;
            }
        ",
        path: [
            "../../wit/deps/keyvalue",
            "../../wit/deps/config",
            "../../wit/deps/logging",
            "../../wit/platform",
        ],
        generate_all,
    });
}

/// Generate a shop service's bindings for `world` (from `wit/shop`), reusing
/// this crate's bindings of the platform imports. For crates in `guests/<name>`,
/// from where the WIT folder is `../../wit`.
#[macro_export]
macro_rules! service_bindings {
    ($world:literal) => {
        $crate::service_bindings!(@paths $world, [
            "../../wit/deps/keyvalue",
            "../../wit/deps/config",
            "../../wit/deps/logging",
            "../../wit/platform",
            "../../wit/shop",
        ]);
    };
    // A test fixture in `tests/fixtures/<name>` built from a service's source:
    // the WIT folder is one level further up.
    (fixture $world:literal) => {
        $crate::service_bindings!(@paths $world, [
            "../../../wit/deps/keyvalue",
            "../../../wit/deps/config",
            "../../../wit/deps/logging",
            "../../../wit/platform",
            "../../../wit/shop",
        ]);
    };
    (@paths $world:literal, [$($path:literal),* $(,)?]) => {
        wit_bindgen::generate!({
            world: $world,
            path: [$($path),*],
            with: {
                "wasi:keyvalue/store@0.2.0-draft": guest_common::bindings::wasi::keyvalue::store,
                "wasi:keyvalue/atomics@0.2.0-draft": guest_common::bindings::wasi::keyvalue::atomics,
                "switchyard:platform/keyvalue-cas@0.1.0": guest_common::bindings::switchyard::platform::keyvalue_cas,
                "wasi:config/store@0.2.0-rc.1": guest_common::bindings::wasi::config::store,
                "wasi:logging/logging@0.1.0-draft": guest_common::bindings::wasi::logging::logging,
            },
        });
    };
}

/// Generate bindings for a test fixture in `tests/fixtures/<name>`, from where
/// the WIT folder is `../../../wit`: the platform packages are on the path, and
/// `$options` says the rest (`world: ...` or `inline: ...`, with a trailing comma),
/// after `wit: [...],` naming more WIT folders if the fixture needs them.
#[macro_export]
macro_rules! fixture_bindings {
    (wit: [$($wit:literal),* $(,)?], $($options:tt)*) => {
        wit_bindgen::generate!({
            $($options)*
            path: [
                "../../../wit/deps/keyvalue",
                "../../../wit/deps/config",
                "../../../wit/deps/logging",
                "../../../wit/platform",
                $($wit),*
            ],
            generate_all,
        });
    };
    ($($options:tt)*) => {
        $crate::fixture_bindings!(wit: [], $($options)*);
    };
}

/// Implement the platform handler for `$service` by calling `$route`, a
/// `fn(&Request) -> Outcome`: both a success and an error reply go back as they are.
#[macro_export]
// `crate` is meant: the bindings are the calling crate's, wherever it calls this.
#[allow(clippy::crate_in_macro_def)]
macro_rules! http_handler {
    ($service:ident, $route:path) => {
        impl crate::exports::switchyard::platform::handler::Guest for $service {
            fn handle(
                request: crate::exports::switchyard::platform::handler::Request,
            ) -> crate::exports::switchyard::platform::handler::Response {
                let reply = $route(&request).unwrap_or_else(|error| error);
                crate::exports::switchyard::platform::handler::Response {
                    status: reply.status,
                    headers: reply.headers(),
                    body: reply.body,
                }
            }
        }
    };
}

/// Implement the platform's `handler2` for `$service` by calling `$route`, a
/// `fn(&Request) -> Outcome` given the lent request (which it reads with
/// `method()`, `path()`, `header(name)`, `body()`...): both a success and an
/// error reply go back as they are.
#[macro_export]
// `crate` is meant: the bindings are the calling crate's, wherever it calls this.
#[allow(clippy::crate_in_macro_def)]
macro_rules! http_handler2 {
    ($service:ident, $route:path) => {
        impl crate::exports::switchyard::platform::handler2::Guest for $service {
            fn handle(
                request: &crate::switchyard::platform::incoming::Request,
            ) -> crate::switchyard::platform::incoming::Response {
                let reply = $route(request).unwrap_or_else(|error| error);
                crate::switchyard::platform::incoming::Response {
                    status: reply.status,
                    headers: reply.headers(),
                    body: reply.body,
                }
            }
        }
    };
}

/// Log `message` at info level through the host's logging import.
pub fn log_info(context: &str, message: &str) {
    use bindings::wasi::logging::logging::{Level, log};
    log(Level::Info, context, message);
}

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A JSON reply: status and serialized body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Headers beyond the content type.
    pub extra_headers: Vec<(String, String)>,
}

impl Reply {
    /// `status` with `value` serialized as the JSON body.
    pub fn json(status: u16, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::bytes(status, body),
            Err(e) => Reply::error(500, format!("cannot encode the response: {e}")),
        }
    }

    /// `status` with `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        let body = serde_json::json!({ "error": message.into() });
        Reply::bytes(status, body.to_string().into_bytes())
    }

    /// `status` with `body` as it is.
    pub fn bytes(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            body,
            extra_headers: Vec::new(),
        }
    }

    /// 204, nothing in the body.
    pub fn no_content() -> Reply {
        Reply::bytes(204, Vec::new())
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.extra_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    pub fn not_found(what: &str, id: &str) -> Reply {
        Reply::error(404, format!("no {what} with id {id:?}"))
    }

    pub fn route_not_found(method: &str, path: &str) -> Reply {
        Reply::error(404, format!("no route for {method} {path}"))
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Reply {
        Reply::error(
            405,
            format!("{method} is not allowed on {path}; allowed: {allowed}"),
        )
    }

    /// The headers to send with this reply.
    pub fn headers(&self) -> Vec<(String, String)> {
        let content_type = (!self.body.is_empty())
            .then(|| ("content-type".to_string(), "application/json".to_string()));
        content_type
            .into_iter()
            .chain(self.extra_headers.iter().cloned())
            .collect()
    }
}

/// Handlers return `Result<Reply, Reply>` so that `?` can carry an error reply.
pub type Outcome = Result<Reply, Reply>;

/// The non-empty segments of a path: `/42/pay` → `["42", "pay"]`.
pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Parse a JSON request body into `T`; anything wrong is a 400 naming the problem
/// (malformed JSON, a missing field, a field of the wrong type, an unknown field).
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reply::error(400, "the request body must be a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| Reply::error(400, format!("invalid JSON body: {e}")))
}

/// The value of query parameter `name`, percent-decoded; `None` when absent.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

/// A non-negative integer query parameter, `default` when absent; a 400 otherwise.
pub fn query_u32(query: &str, name: &str, default: u32) -> Result<u32, Reply> {
    match query_param(query, name) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|_| {
            Reply::error(
                400,
                format!("query parameter {name} must be a non-negative integer, got {raw:?}"),
            )
        }),
    }
}

fn percent_decode(raw: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some((high, low))) => {
                out.push(high << 4 | low);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Non-empty after trimming, or a 400 naming the field.
pub fn require_text(field: &str, value: &str) -> Result<String, Reply> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err(Reply::error(400, format!("{field} must not be empty")))
    } else {
        Ok(trimmed.to_string())
    }
}

/// Turn a store counter into the next id: a short prefix names the kind of record.
pub fn make_id(prefix: &str, counter: u64) -> String {
    format!("{prefix}{counter}")
}

/// Order ids by the counter they were made from, so that listings follow creation order.
pub fn id_order(id: &str) -> (usize, &str) {
    (id.len(), id)
}

/// Lower-case Crockford base32: its characters sort in the order of their values.
const BASE32: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The last time (µs) [`unique_id`] used in this instance.
static LAST_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh id that needs no counter shared by every request: `prefix`, the
/// time in microseconds (11 base32 digits) and 60 random bits (12 digits).
/// Ids of one length sort in creation order (strictly within an instance,
/// to the microsecond across instances and hosts), and two never collide.
/// A counter (`store::next_id`) is one key every creation writes: fine for
/// rare records, a queue for frequent ones such as orders.
pub fn unique_id(prefix: &str) -> String {
    let now = wasip2::clocks::wall_clock::now();
    let micros = now.seconds * 1_000_000 + u64::from(now.nanoseconds / 1_000);
    let last = LAST_MICROS.load(std::sync::atomic::Ordering::Relaxed);
    let micros = micros.max(last + 1);
    LAST_MICROS.store(micros, std::sync::atomic::Ordering::Relaxed);
    make_unique_id(prefix, micros, wasip2::random::random::get_random_u64())
}

fn make_unique_id(prefix: &str, micros: u64, random: u64) -> String {
    let digits = |value: u64, n: u32| {
        (0..n)
            .rev()
            .map(move |i| BASE32[((value >> (5 * i)) & 31) as usize] as char)
    };
    let mut id = String::with_capacity(prefix.len() + 23);
    id.push_str(prefix);
    id.extend(digits(micros, 11));
    id.extend(digits(random >> 4, 12));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_and_decoded() {
        assert_eq!(
            query_param("a=1&user_id=u%201", "user_id").as_deref(),
            Some("u 1")
        );
        assert_eq!(query_param("a=1", "b"), None);
        assert_eq!(query_param("flag", "flag").as_deref(), Some(""));
        assert_eq!(query_param("x=%zz%4", "x").as_deref(), Some("%zz%4"));
    }

    #[test]
    fn unique_ids_sort_by_time_and_keep_their_length() {
        let a = make_unique_id("o", 1_733_300_000_000_000, u64::MAX);
        let b = make_unique_id("o", 1_733_300_000_000_001, 0);
        let c = make_unique_id("o", 1_733_300_000_000_001, 1 << 4);
        assert_eq!(a.len(), 24);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(id_order(&a).0, id_order(&b).0);
        assert!(b.chars().skip(1).all(|c| BASE32.contains(&(c as u8))));
    }

    #[test]
    fn ids_sort_in_creation_order() {
        let mut ids = vec![make_id("g", 10), make_id("g", 9), make_id("g", 100)];
        ids.sort_by(|a, b| id_order(a).cmp(&id_order(b)));
        assert_eq!(ids, ["g9", "g10", "g100"]);
    }
}
