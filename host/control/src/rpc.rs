//! How a service's exported functions are addressed over HTTP:
//! `/rpc/<service>/<interface>/<function>`, where `<interface>` is the WIT
//! interface's short name (`catalog` for `switchyard:shop/catalog@1.0.0`),
//! or its full name percent-encoded when two exports share a short name.
//!
//! It also owns what a service publishes: `[rpc] public` in its
//! `service.toml` names the functions anonymous clients may call
//! ([`publish`]); everything else is for other services, and for operators
//! holding the admin token.
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
    let found = interface_named(exports, &asked)?;
    let function = function_named(found, function)?;
    Ok((found, function))
}

/// The callable interface of `exports` that `asked` names: in full, in full
/// without its version, or by its short name where that is unique.
fn interface_named<'a>(
    exports: &'a [InterfaceUse],
    asked: &str,
) -> Result<&'a InterfaceUse, NotFound> {
    let names = |of: &mut dyn Iterator<Item = &InterfaceUse>| {
        of.map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
    };
    if callable(exports).next().is_none() {
        return Err(NotFound::NoInterfaces);
    }
    // A full name, with or without its version, is exact; a short name may
    // be shared.
    let exact = callable(exports)
        .find(|e| e.name == asked || e.name.split_once('@').is_some_and(|(n, _)| n == asked));
    if let Some(found) = exact {
        return Ok(found);
    }
    let mut named = callable(exports).filter(|e| short_name(&e.name) == asked);
    match (named.next(), named.next()) {
        (Some(found), None) => Ok(found),
        (Some(first), Some(_)) => Err(NotFound::Ambiguous {
            asked: asked.to_string(),
            known: names(&mut callable(exports).filter(|e| short_name(&e.name) == asked)),
            example: encode(&first.name),
        }),
        (None, _) => Err(NotFound::Interface {
            asked: asked.to_string(),
            known: names(&mut callable(exports)),
        }),
    }
}

/// The function of `interface` named `asked`.
fn function_named<'a>(
    interface: &'a InterfaceUse,
    asked: &str,
) -> Result<&'a FunctionUse, NotFound> {
    interface
        .functions
        .iter()
        .find(|f| f.name == asked)
        .ok_or_else(|| NotFound::Function {
            interface: interface.name.clone(),
            asked: asked.to_string(),
            known: interface
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Why `[rpc] public` cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpublishable {
    pub entry: String,
    pub why: NotFound,
}

impl std::fmt::Display for Unpublishable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Unpublishable { entry, why } = self;
        match why {
            // It names the interface itself.
            NotFound::Function { .. } => write!(f, "[rpc] public names {entry:?}, but {why}"),
            _ => write!(f, "[rpc] public names {entry:?}, but this version {why}"),
        }
    }
}

impl std::error::Error for Unpublishable {}

/// The part of `exports` that `public` (the entries of `[rpc] public`)
/// publishes: whole interfaces (`"catalog"`, `"switchyard:shop/catalog@1.0.0"`)
/// or single functions (`"catalog.get"`, `"switchyard:shop/catalog.get"`),
/// interfaces named as [`resolve`] names them. An entry that names nothing
/// this version exports is refused: a client relying on it would otherwise
/// meet a 404 only after the version took traffic.
pub fn publish(
    exports: &[InterfaceUse],
    public: &[String],
) -> Result<Vec<InterfaceUse>, Unpublishable> {
    let mut published: Vec<InterfaceUse> = Vec::new();
    for entry in public {
        let refused = |why| Unpublishable {
            entry: entry.clone(),
            why,
        };
        // A whole interface, or else `<interface>.<function>` (function names
        // have no dots; versions do, so the interface is tried whole first).
        let (interface, functions) = match interface_named(exports, entry) {
            Ok(interface) => (interface, interface.functions.clone()),
            Err(whole) => {
                // `…@1.0.0` ends in a version, not a function: the whole
                // entry was meant as an interface.
                let split = entry
                    .rsplit_once('.')
                    .filter(|(_, f)| !f.bytes().all(|b| b.is_ascii_digit()));
                let Some((name, function)) = split else {
                    return Err(refused(whole));
                };
                let interface = interface_named(exports, name).map_err(refused)?;
                let function = function_named(interface, function).map_err(refused)?;
                (interface, vec![function.clone()])
            }
        };
        let slot = match published.iter_mut().find(|p| p.name == interface.name) {
            Some(slot) => slot,
            None => {
                published.push(InterfaceUse {
                    functions: Vec::new(),
                    ..interface.clone()
                });
                published.last_mut().expect("just pushed")
            }
        };
        for function in functions {
            if !slot.functions.iter().any(|f| f.name == function.name) {
                slot.functions.push(function);
            }
        }
    }
    Ok(published)
}

/// Whether `published` (from [`publish`]) holds `function` of `interface`.
pub fn is_published(published: &[InterfaceUse], interface: &str, function: &str) -> bool {
    published
        .iter()
        .any(|p| p.name == interface && p.functions.iter().any(|f| f.name == function))
}

/// What `published` offers, for a refusal: `catalog.get, catalog.list`.
pub fn describe_published(published: &[InterfaceUse]) -> String {
    let names: Vec<String> = published
        .iter()
        .flat_map(|p| {
            p.functions
                .iter()
                .map(|f| format!("{}.{}", short_name(&p.name), f.name))
        })
        .collect();
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(", ")
    }
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

    fn published(public: &[&str]) -> Result<Vec<(String, String)>, String> {
        let public: Vec<String> = public.iter().map(|p| p.to_string()).collect();
        let published = publish(&exports(), &public).map_err(|e| e.to_string())?;
        Ok(published
            .iter()
            .flat_map(|p| p.functions.iter().map(|f| (p.name.clone(), f.name.clone())))
            .collect())
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(i, f)| (i.to_string(), f.to_string()))
            .collect()
    }

    #[test]
    fn nothing_is_published_unless_named() {
        assert_eq!(published(&[]).unwrap(), pairs(&[]));
        assert_eq!(describe_published(&[]), "nothing");
    }

    #[test]
    fn entries_publish_functions_or_whole_interfaces_by_any_of_their_names() {
        let catalog = "switchyard:shop/catalog@1.0.0";
        for entry in [
            "catalog.get",
            "switchyard:shop/catalog.get",
            "switchyard:shop/catalog@1.0.0.get",
        ] {
            assert_eq!(
                published(&[entry]).unwrap(),
                pairs(&[(catalog, "get")]),
                "{entry}"
            );
        }
        for entry in ["catalog", "switchyard:shop/catalog", catalog] {
            assert_eq!(
                published(&[entry]).unwrap(),
                pairs(&[(catalog, "get"), (catalog, "list")]),
                "{entry}"
            );
        }
        // Named twice, published once; a shared short name in full.
        let both = published(&["catalog.get", "catalog", "acme:vat/rates.rate"]).unwrap();
        assert_eq!(
            both,
            pairs(&[
                (catalog, "get"),
                (catalog, "list"),
                ("acme:vat/rates@1.0.0", "rate")
            ])
        );
        let exports = exports();
        let public = publish(&exports, &["catalog.list".to_string()]).unwrap();
        assert!(is_published(&public, catalog, "list"));
        assert!(!is_published(&public, catalog, "get"));
        assert_eq!(describe_published(&public), "catalog.list");
    }

    #[test]
    fn an_entry_naming_nothing_exported_is_refused_with_what_there_is() {
        assert_eq!(
            published(&["catalog.delete"]).unwrap_err(),
            "[rpc] public names \"catalog.delete\", but switchyard:shop/catalog@1.0.0 has no \
             function named \"delete\"; it has get, list"
        );
        assert_eq!(
            published(&["stock"]).unwrap_err(),
            "[rpc] public names \"stock\", but this version exports no interface named \
             \"stock\"; it exports switchyard:shop/catalog@1.0.0, acme:tax/rates@2.0.0, \
             acme:vat/rates@1.0.0"
        );
        let ambiguous = published(&["rates.rate"]).unwrap_err();
        assert!(
            ambiguous.contains("several interfaces named \"rates\""),
            "{ambiguous}"
        );
        // The platform's entry points are never a client's to call.
        let handler = published(&["handler.handle"]).unwrap_err();
        assert!(
            handler.contains("no interface named \"handler\""),
            "{handler}"
        );
        let typo = published(&["switchyard:shop/catalg@1.0.0"]).unwrap_err();
        assert!(
            typo.contains("no interface named \"switchyard:shop/catalg@1.0.0\""),
            "{typo}"
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
