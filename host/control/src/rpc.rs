//! How a service's exported functions are addressed over HTTP:
//! `/rpc/<service>/<interface>/<function>`, where `<interface>` is the WIT
//! interface's short name (`catalog` for `switchyard:shop/catalog@1.0.0`),
//! or its full name percent-encoded when two exports share a short name.
//!
//! Naming only: it never calls anything, and knows nothing of JSON (that is
//! `switchyard_runtime::json`) or of HTTP (the gateway).

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use switchyard_runtime::{FunctionUse, InterfaceUse, Provider};

/// The route prefix (a reserved service name).
pub const RPC_PREFIX: &str = "rpc";

/// `switchyard:shop/catalog@1.0.0` → `catalog`.
pub fn short_name(interface: &str) -> &str {
    let name = interface.rsplit_once('/').map_or(interface, |(_, n)| n);
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// The interfaces of `exports` that can be called: other services'
/// interfaces, not the platform's entry points or a toolchain's leftovers.
pub fn callable(exports: &[InterfaceUse]) -> impl Iterator<Item = &InterfaceUse> {
    exports.iter().filter(|e| e.provider() == Provider::Service)
}

/// Why a path names no function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFound {
    #[error("exports no interfaces that can be called")]
    NoInterfaces,
    #[error("exports no interface named {asked:?}; it exports {known}")]
    Interface { asked: String, known: String },
    #[error(
        "exports several interfaces named {asked:?} ({known}): name one in full, \
         percent-encoded, as in /rpc/<service>/{example}/<function>"
    )]
    Ambiguous {
        asked: String,
        known: String,
        example: String,
    },
    #[error("{interface} has no function named {asked:?}; it has {known}")]
    Function {
        interface: String,
        asked: String,
        known: String,
    },
}

/// The exported function that `interface` (a path segment, still
/// percent-encoded) and `function` name among `exports`.
pub fn resolve<'a>(
    exports: &'a [InterfaceUse],
    interface: &str,
    function: &str,
) -> Result<(&'a InterfaceUse, &'a FunctionUse), NotFound> {
    let asked = percent_decode_str(interface).decode_utf8_lossy();
    let known = || {
        callable(exports)
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if callable(exports).next().is_none() {
        return Err(NotFound::NoInterfaces);
    }
    // A full name, with or without its version, is exact; a short name may
    // be shared.
    let exact = callable(exports)
        .find(|e| e.name == asked || e.name.split_once('@').is_some_and(|(n, _)| n == asked));
    let found = match exact {
        Some(found) => found,
        None => {
            let mut named = callable(exports).filter(|e| short_name(&e.name) == asked);
            match (named.next(), named.next()) {
                (Some(found), None) => found,
                (Some(first), Some(_)) => {
                    let known = callable(exports)
                        .filter(|e| short_name(&e.name) == asked)
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(NotFound::Ambiguous {
                        asked: asked.into_owned(),
                        known,
                        example: encode(&first.name),
                    });
                }
                (None, _) => {
                    return Err(NotFound::Interface {
                        asked: asked.into_owned(),
                        known: known(),
                    });
                }
            }
        }
    };
    let function = found
        .functions
        .iter()
        .find(|f| f.name == function)
        .ok_or_else(|| NotFound::Function {
            interface: found.name.clone(),
            asked: function.to_string(),
            known: found
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok((found, function))
}

/// The path that calls `function` of `interface` on `service`: the short
/// name where it is unique among `exports`, else the full name.
pub fn path_of(service: &str, exports: &[InterfaceUse], interface: &str, function: &str) -> String {
    let short = short_name(interface);
    let shared = callable(exports)
        .filter(|e| short_name(&e.name) == short)
        .count()
        > 1;
    let segment = if shared {
        encode(interface)
    } else {
        short.to_string()
    };
    format!("/{RPC_PREFIX}/{service}/{segment}/{function}")
}

fn encode(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_runtime::{Signature, WitType};

    fn interface(name: &str, functions: &[&str]) -> InterfaceUse {
        InterfaceUse {
            name: name.to_string(),
            functions: functions
                .iter()
                .map(|f| FunctionUse {
                    name: f.to_string(),
                    signature: Signature {
                        params: vec![("id".into(), WitType::String)],
                        result: None,
                    },
                })
                .collect(),
            uses_resources: false,
        }
    }

    fn exports() -> Vec<InterfaceUse> {
        vec![
            interface("switchyard:platform/handler@0.1.0", &["handle"]),
            interface("init", &[]),
            interface("switchyard:shop/catalog@1.0.0", &["get", "list"]),
            interface("acme:tax/rates@2.0.0", &["rate"]),
            interface("acme:vat/rates@1.0.0", &["rate"]),
        ]
    }

    #[test]
    fn a_short_name_finds_an_interface_and_its_function() {
        let exports = exports();
        let (found, function) = resolve(&exports, "catalog", "get").unwrap();
        assert_eq!(found.name, "switchyard:shop/catalog@1.0.0");
        assert_eq!(function.name, "get");
        assert_eq!(
            path_of("goods", &exports, &found.name, "get"),
            "/rpc/goods/catalog/get"
        );
    }

    #[test]
    fn a_shared_short_name_must_be_given_in_full() {
        let exports = exports();
        let Err(NotFound::Ambiguous { known, example, .. }) = resolve(&exports, "rates", "rate")
        else {
            panic!("a shared short name is ambiguous");
        };
        assert_eq!(known, "acme:tax/rates@2.0.0, acme:vat/rates@1.0.0");
        let path = path_of("money", &exports, "acme:vat/rates@1.0.0", "rate");
        assert_eq!(
            path,
            format!("/rpc/money/{}/rate", encode("acme:vat/rates@1.0.0"))
        );
        assert!(!example.contains('/'), "{example}");
        // The encoded full name, or the name without its version, is exact.
        let (found, _) = resolve(&exports, "acme%3Avat%2Frates%401.0.0", "rate").unwrap();
        assert_eq!(found.name, "acme:vat/rates@1.0.0");
        let (found, _) = resolve(&exports, "acme%3Atax%2Frates", "rate").unwrap();
        assert_eq!(found.name, "acme:tax/rates@2.0.0");
    }

    #[test]
    fn entry_points_and_toolchain_exports_cannot_be_called() {
        let exports = exports();
        for (interface, function) in [("handler", "handle"), ("init", "init")] {
            let Err(NotFound::Interface { known, .. }) = resolve(&exports, interface, function)
            else {
                panic!("{interface} must not be callable");
            };
            assert!(
                !known.contains("handler") && !known.contains("init"),
                "{known}"
            );
        }
        let none = vec![interface("switchyard:platform/handler@0.1.0", &["handle"])];
        assert_eq!(
            resolve(&none, "handler", "handle").unwrap_err(),
            NotFound::NoInterfaces
        );
    }

    #[test]
    fn an_unknown_function_lists_the_known_ones() {
        let exports = exports();
        let error = resolve(&exports, "catalog", "delete").unwrap_err();
        assert_eq!(
            error.to_string(),
            "switchyard:shop/catalog@1.0.0 has no function named \"delete\"; it has get, list"
        );
    }
}
