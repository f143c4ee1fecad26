//! Whether versions of different services fit together.
//!
//! Services are bound to each other by interface name at call time, so a version
//! may serve only if (a) every interface it imports from another service is
//! exported, with the same function types, by every serving version of the
//! service providing it, and (b) it still exports every function, with the same
//! type, that the serving versions of other services import from its service.
//! Types are compared structurally, so separately built components of the same
//! WIT match. A refusal names the interface, the function and who depends on it.

use std::sync::Arc;

use crate::registry::LoadedVersion;
use crate::runtime::InterfaceUse;

/// What serves now: each service's name with the versions its traffic goes to.
pub type Serving = [(String, Vec<Arc<LoadedVersion>>)];

/// Can `candidate` serve alongside `serving`? Entries of the candidate's own
/// service in `serving` are the versions it would join or replace.
pub fn check(candidate: &LoadedVersion, serving: &Serving) -> Result<(), String> {
    let others = || {
        serving
            .iter()
            .filter(|(name, _)| *name != candidate.service)
    };
    let provider_of = |interface: &str, except: &str| {
        others()
            .filter(|(name, _)| name != except)
            .find(|(_, versions)| versions.iter().any(|v| v.export(interface).is_some()))
    };

    for export in candidate.service_exports() {
        if let Some((name, _)) = provider_of(&export.name, "") {
            return Err(format!(
                "exports {}, which service {name} already provides",
                export.name
            ));
        }
    }

    for import in candidate.service_imports() {
        if candidate.export(&import.name).is_some() {
            return Err(format!(
                "imports {}, which it exports itself: a service cannot call itself \
                 through the host",
                import.name
            ));
        }
        let Some((_, providers)) = provider_of(&import.name, "") else {
            return Err(format!(
                "imports {} ({}), which no loaded service exports",
                import.name,
                function_names(import)
            ));
        };
        for provider in providers {
            let gaps = gaps(import, provider);
            if !gaps.is_empty() {
                return Err(format!(
                    "imports {}, but {} {} {}",
                    import.name,
                    provider.service,
                    provider.version,
                    gaps.join("; ")
                ));
            }
        }
    }

    let own: Vec<&Arc<LoadedVersion>> = serving
        .iter()
        .filter(|(name, _)| *name == candidate.service)
        .flat_map(|(_, versions)| versions)
        .collect();
    for (consumer_service, consumers) in others() {
        for consumer in consumers {
            for import in consumer.service_imports() {
                let ours = candidate.export(&import.name).is_some()
                    || own.iter().any(|v| v.export(&import.name).is_some());
                if !ours || provider_of(&import.name, consumer_service).is_some() {
                    continue;
                }
                let gaps = gaps(import, candidate);
                if !gaps.is_empty() {
                    return Err(format!(
                        "breaks {consumer_service} {}, which imports {}: this version {}",
                        consumer.version,
                        import.name,
                        gaps.join("; ")
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What `provider` lacks of what `import` needs, one phrase per function.
fn gaps(import: &InterfaceUse, provider: &LoadedVersion) -> Vec<String> {
    let Some(export) = provider.export(&import.name) else {
        return vec![format!("does not export {}", import.name)];
    };
    import
        .functions
        .iter()
        .filter_map(
            |needed| match export.functions.iter().find(|f| f.name == needed.name) {
                None => Some(format!("does not export {}#{}", import.name, needed.name)),
                Some(found) if !found.same_type(needed) => Some(format!(
                    "exports {}#{} with a different type",
                    import.name, needed.name
                )),
                Some(_) => None,
            },
        )
        .collect()
}

fn function_names(interface: &InterfaceUse) -> String {
    let names: Vec<&str> = interface
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    names.join(", ")
}
