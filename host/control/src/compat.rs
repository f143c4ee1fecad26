//! Whether versions of different services fit together.
//!
//! Services are bound to each other by interface name at call time, so a version
//! may serve only if (a) every interface it imports from another service is
//! exported, with the same function types, by every serving version of the
//! service providing it, and (b) it still exports every function, with the same
//! type, that the serving versions of other services import from its service.
//! Types are compared structurally, so separately built components of the same
//! WIT match. A refusal names the interface, the function and who depends on it.

use std::fmt;
use std::sync::Arc;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::deployable::Deployable;
use switchyard_runtime::InterfaceUse;

/// Why a version cannot serve alongside the versions of other services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Incompatibility {
    /// Another service exports the same interface.
    #[error("exports {interface}, which service {provider} already provides")]
    AlreadyProvided { interface: String, provider: String },
    /// It imports an interface it exports: calls cannot loop back through the host.
    #[error(
        "imports {interface}, which it exports itself: a service cannot call itself \
         through the host"
    )]
    ImportsItself { interface: String },
    /// Nothing serving exports an interface it imports.
    #[error("imports {interface} ({}), which no loaded service exports", functions.join(", "))]
    NoProvider {
        interface: String,
        functions: Vec<String>,
    },
    /// The service providing an interface it imports lacks what it needs.
    #[error(
        "imports {interface}, but {provider} {version} {}",
        Gaps(interface, gaps)
    )]
    ProviderLacks {
        interface: String,
        provider: String,
        version: Version,
        gaps: Vec<Gap>,
    },
    /// It no longer offers what a serving consumer imports from its service.
    #[error(
        "breaks {consumer} {version}, which imports {interface}: this version {}",
        Gaps(interface, gaps)
    )]
    BreaksConsumer {
        consumer: String,
        version: Version,
        interface: String,
        gaps: Vec<Gap>,
    },
}

/// One thing a provider lacks of an imported interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Gap {
    /// It does not export the interface at all.
    NoInterface,
    /// It does not export this function.
    Missing { function: String },
    /// It exports this function with other parameter or result types.
    DifferentType { function: String },
}

/// `gaps` of `interface` as one phrase each, joined.
struct Gaps<'a>(&'a str, &'a [Gap]);

impl fmt::Display for Gaps<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Gaps(interface, gaps) = self;
        for (i, gap) in gaps.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match gap {
                Gap::NoInterface => write!(f, "does not export {interface}")?,
                Gap::Missing { function } => write!(f, "does not export {interface}#{function}")?,
                Gap::DifferentType { function } => {
                    write!(f, "exports {interface}#{function} with a different type")?
                }
            }
        }
        Ok(())
    }
}

/// What serves now: each service's name with the versions its traffic goes to.
pub type Serving<V> = [(String, Vec<Arc<V>>)];

/// Can `candidate` serve alongside `serving`? Entries of the candidate's own
/// service in `serving` are the versions it would join or replace.
pub fn check<V: Deployable>(candidate: &V, serving: &Serving<V>) -> Result<(), Incompatibility> {
    let others = || {
        serving
            .iter()
            .filter(|(name, _)| name != candidate.service())
    };
    let provider_of = |interface: &str, except: &str| {
        others()
            .filter(|(name, _)| name != except)
            .find(|(_, versions)| versions.iter().any(|v| v.export(interface).is_some()))
    };

    for export in candidate.service_exports() {
        if let Some((name, _)) = provider_of(&export.name, "") {
            return Err(Incompatibility::AlreadyProvided {
                interface: export.name.clone(),
                provider: name.clone(),
            });
        }
    }

    for import in candidate.service_imports() {
        if candidate.export(&import.name).is_some() {
            return Err(Incompatibility::ImportsItself {
                interface: import.name.clone(),
            });
        }
        let Some((_, providers)) = provider_of(&import.name, "") else {
            return Err(Incompatibility::NoProvider {
                interface: import.name.clone(),
                functions: import.functions.iter().map(|f| f.name.clone()).collect(),
            });
        };
        for provider in providers {
            let gaps = gaps(import, &**provider);
            if !gaps.is_empty() {
                return Err(Incompatibility::ProviderLacks {
                    interface: import.name.clone(),
                    provider: provider.service().to_string(),
                    version: provider.version().clone(),
                    gaps,
                });
            }
        }
    }

    let own: Vec<&Arc<V>> = serving
        .iter()
        .filter(|(name, _)| name == candidate.service())
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
                    return Err(Incompatibility::BreaksConsumer {
                        consumer: consumer_service.clone(),
                        version: consumer.version().clone(),
                        interface: import.name.clone(),
                        gaps,
                    });
                }
            }
        }
    }
    Ok(())
}

/// What `provider` lacks of what `import` needs, one gap per function.
fn gaps<V: Deployable>(import: &InterfaceUse, provider: &V) -> Vec<Gap> {
    let Some(export) = provider.export(&import.name) else {
        return vec![Gap::NoInterface];
    };
    import
        .functions
        .iter()
        .filter_map(
            |needed| match export.functions.iter().find(|f| f.name == needed.name) {
                None => Some(Gap::Missing {
                    function: needed.name.clone(),
                }),
                Some(found) if !found.signature.same_type(&needed.signature) => {
                    Some(Gap::DifferentType {
                        function: needed.name.clone(),
                    })
                }
                Some(_) => None,
            },
        )
        .collect()
}

/// Why a version was refused: the step of loading it that failed (the file,
/// its settings, compiling, its interfaces, linking, its start-up), or how
/// it does not fit the other services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Refusal {
    #[error("{reason}")]
    Load { stage: LoadStage, reason: String },
    #[error("{why}")]
    Incompatible { why: Incompatibility },
}

/// Which step of loading a version failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadStage {
    /// Reading its file: not a regular file, too large, unreadable.
    File,
    /// Its service's `service.toml`: unreadable, invalid, out of range, or
    /// naming what the component does not have.
    Settings,
    /// Compiling it: not a WebAssembly component, or not one this host runs.
    Compile,
    /// Its interfaces: one it shares with other services uses resources.
    Interfaces,
    /// Linking it to what the host and the other services provide (an import
    /// nobody gives, the component-model async ABI...).
    Link,
    /// Starting its first instance (its start-up trapped, ran out of memory).
    Start,
    /// Taking traffic: the registry could not activate it.
    Activate,
}

impl Refusal {
    /// A loading step's failure.
    pub fn load(stage: LoadStage, error: impl std::fmt::Display) -> Refusal {
        Refusal::Load {
            stage,
            reason: format!("{error:#}"),
        }
    }
}

/// Name the loading step a failure happened in.
pub trait AtStage<T> {
    fn at(self, stage: LoadStage) -> Result<T, Refusal>;
}

impl<T, E: Into<anyhow::Error>> AtStage<T> for Result<T, E> {
    fn at(self, stage: LoadStage) -> Result<T, Refusal> {
        self.map_err(|e| Refusal::load(stage, e.into()))
    }
}

impl From<Incompatibility> for Refusal {
    fn from(why: Incompatibility) -> Refusal {
        Refusal::Incompatible { why }
    }
}
