//! Every transition of the state machine, on fake versions that are plain
//! data: no wasmtime, no files, no clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use semver::Version;

use super::events::{Cause, Change, Failing};
use super::machine::{Deployments, Found, HISTORY_LEN, Stored};
use super::model::{
    Activation, Deployable, FailoverPolicy, FailureWindow, Refusal, RegistryError, SplitError,
    VersionEntry, VersionState,
};
use crate::compat::{Gap, Incompatibility};
use switchyard_runtime::{FunctionUse, InterfaceUse, Signature, WitType};

const CATALOG: &str = "shop:goods/catalog@1.0.0";
const DIRECTORY: &str = "shop:users/directory@1.0.0";

struct Fake {
    service: String,
    version: Version,
    imports: Vec<InterfaceUse>,
    exports: Vec<InterfaceUse>,
}

impl Deployable for Fake {
    fn service(&self) -> &str {
        &self.service
    }
    fn version(&self) -> &Version {
        &self.version
    }
    fn imports(&self) -> &[InterfaceUse] {
        &self.imports
    }
    fn exports(&self) -> &[InterfaceUse] {
        &self.exports
    }
}

fn ver(text: &str) -> Version {
    Version::parse(text).unwrap()
}

/// `interface` with one function `name` taking `param`, returning a string.
fn interface(interface: &str, name: &str, param: WitType) -> InterfaceUse {
    InterfaceUse {
        name: interface.to_string(),
        functions: vec![FunctionUse {
            name: name.to_string(),
            signature: Signature {
                params: vec![("x".into(), param)],
                result: Some(WitType::String),
            },
        }],
        uses_resources: false,
    }
}

fn fake(service: &str, version: &str) -> Fake {
    Fake {
        service: service.into(),
        version: ver(version),
        imports: Vec::new(),
        exports: Vec::new(),
    }
}

/// goods at `version`, exporting the catalog's `get(string)`.
fn goods(version: &str) -> Arc<Fake> {
    let mut goods = fake("goods", version);
    goods.exports = vec![interface(CATALOG, "get", WitType::String)];
    Arc::new(goods)
}

/// orders at `version`, importing the catalog's `get(string)`.
fn orders(version: &str) -> Arc<Fake> {
    let mut orders = fake("orders", version);
    orders.imports = vec![interface(CATALOG, "get", WitType::String)];
    Arc::new(orders)
}

fn plain(service: &str, version: &str) -> Arc<Fake> {
    Arc::new(fake(service, version))
}

/// Deployments with `versions` offered in order, in `mode` (in manual mode,
/// each service's first version activated); events taken.
fn world(mode: Activation, versions: &[Arc<Fake>]) -> Deployments<Fake> {
    let mut world = Deployments::default();
    for v in versions {
        offer(&mut world, mode, v).unwrap();
        if active(&world, &v.service).is_none() {
            world
                .activate(1, &v.service, &v.version, Cause::Admin)
                .unwrap();
        }
    }
    world.take_events();
    world
}

fn offer(
    world: &mut Deployments<Fake>,
    mode: Activation,
    v: &Arc<Fake>,
) -> Result<VersionState, Refusal> {
    world.offer(
        1,
        &v.service,
        mode,
        v.version.clone(),
        VersionEntry::Loaded(v.clone()),
    )
}

fn active(world: &Deployments<Fake>, service: &str) -> Option<Version> {
    world
        .book(service)?
        .routing
        .primary()
        .map(|v| v.version.clone())
}

fn previous(world: &Deployments<Fake>, service: &str) -> Vec<Version> {
    world.book(service).unwrap().previous.clone()
}

fn changes(world: &mut Deployments<Fake>) -> Vec<Change> {
    world.take_events().into_iter().map(|e| e.change).collect()
}

fn failing() -> Failing {
    Failing {
        failures: 3,
        window: Duration::from_secs(10),
        last: "trap".into(),
    }
}

fn weights(pairs: &[(&str, u32)]) -> BTreeMap<Version, u32> {
    pairs.iter().map(|(v, w)| (ver(v), *w)).collect()
}

#[test]
fn auto_mode_activates_each_higher_version_and_keeps_lower_ones_on_standby() {
    let mut world = Deployments::default();
    let auto = Activation::Auto;
    assert_eq!(
        offer(&mut world, auto, &goods("1.0.0")),
        Ok(VersionState::Active)
    );
    assert_eq!(
        offer(&mut world, auto, &goods("1.1.0")),
        Ok(VersionState::Active)
    );
    assert_eq!(
        offer(&mut world, auto, &goods("0.9.0")),
        Ok(VersionState::Standby)
    );
    assert_eq!(active(&world, "goods"), Some(ver("1.1.0")));
    assert_eq!(previous(&world, "goods"), vec![ver("1.0.0")]);
    assert_eq!(
        changes(&mut world),
        vec![
            Change::Activated {
                version: ver("1.0.0"),
                cause: Cause::Auto
            },
            Change::Activated {
                version: ver("1.1.0"),
                cause: Cause::Auto
            },
            Change::Added {
                version: ver("0.9.0")
            },
        ]
    );
}

#[test]
fn manual_mode_waits_for_an_activation() {
    let mut world = world(Activation::Manual, &[goods("1.0.0")]);
    assert_eq!(
        offer(&mut world, Activation::Manual, &goods("1.1.0")),
        Ok(VersionState::Standby)
    );
    assert_eq!(active(&world, "goods"), Some(ver("1.0.0")));
    world
        .activate(2, "goods", &ver("1.1.0"), Cause::Admin)
        .unwrap();
    assert_eq!(active(&world, "goods"), Some(ver("1.1.0")));
    assert_eq!(previous(&world, "goods"), vec![ver("1.0.0")]);
    let events = world.take_events();
    let last = events.last().unwrap();
    assert_eq!(last.at_ms, 2);
    assert_eq!(last.to_string(), "activated through the admin API");
    assert!(matches!(
        world.activate(3, "goods", &ver("9.0.0"), Cause::Admin),
        Err(RegistryError::UnknownVersion { .. })
    ));
    assert!(matches!(
        world.activate(3, "nothing", &ver("1.0.0"), Cause::Admin),
        Err(RegistryError::UnknownService { .. })
    ));
}

#[test]
fn a_rebuild_of_a_serving_version_replaces_it_in_place_even_in_a_split() {
    let mut world = world(Activation::Manual, &[goods("1.0.0"), goods("1.1.0")]);
    world
        .split(1, "goods", &weights(&[("1.0.0", 80), ("1.1.0", 20)]))
        .unwrap();
    world.take_events();
    let rebuild = goods("1.1.0");
    assert_eq!(
        offer(&mut world, Activation::Manual, &rebuild),
        Ok(VersionState::Active)
    );
    let routing = &world.book("goods").unwrap().routing;
    assert!(routing.routes_to(&rebuild));
    assert_eq!(routing.weight_of(&ver("1.1.0")), Some(20));
    assert_eq!(routing.primary().unwrap().version, ver("1.0.0"));
    assert_eq!(
        changes(&mut world),
        vec![Change::Replaced {
            version: ver("1.1.0")
        }]
    );
}

#[test]
fn new_settings_replace_every_loaded_build_in_place_and_change_nothing_else() {
    let mut world = world(
        Activation::Auto,
        &[goods("1.0.0"), goods("1.1.0"), goods("1.2.0")],
    );
    world
        .split(1, "goods", &weights(&[("1.2.0", 70), ("1.1.0", 30)]))
        .unwrap();
    world.take_events();
    let history = world.book("goods").unwrap().history.clone();
    let builds = vec![goods("1.0.0"), goods("1.2.0"), goods("9.9.9")];

    assert_eq!(
        world.reconfigure("goods", Activation::Manual, builds.clone()),
        2,
        "a version it does not have is skipped"
    );
    let book = world.book("goods").unwrap();
    assert_eq!(book.mode, Activation::Manual);
    assert!(
        book.routing.routes_to(&builds[1]),
        "the serving build is replaced"
    );
    assert_eq!(book.routing.weight_of(&ver("1.2.0")), Some(70));
    assert_eq!(book.routing.weight_of(&ver("1.1.0")), Some(30));
    assert!(
        matches!(
            book.versions.get(&ver("1.0.0")),
            Some(VersionEntry::Loaded(v)) if Arc::ptr_eq(v, &builds[0])
        ),
        "the standby build is replaced"
    );
    assert_eq!(book.history, history);
    assert!(changes(&mut world).is_empty(), "no event: nothing to store");
    assert_eq!(world.reconfigure("nothing", Activation::Auto, builds), 0);
}

#[test]
fn a_refused_file_for_a_serving_version_leaves_the_old_build_serving() {
    let serving = goods("1.0.0");
    let mut world = world(Activation::Auto, std::slice::from_ref(&serving));
    let why = Refusal::Load {
        stage: crate::compat::LoadStage::Compile,
        reason: "not a component".into(),
    };
    let offered = world.offer(
        2,
        "goods",
        Activation::Auto,
        ver("1.0.0"),
        VersionEntry::Rejected(why.clone()),
    );
    assert_eq!(offered, Err(why.clone()));
    assert!(world.book("goods").unwrap().routing.routes_to(&serving));
    assert!(world.book("goods").unwrap().loaded(&ver("1.0.0")).is_some());
    assert_eq!(
        changes(&mut world),
        vec![Change::Refused {
            version: ver("1.0.0"),
            why
        }]
    );

    // The same for a rebuild that would break a consumer.
    offer(&mut world, Activation::Auto, &orders("1.0.0")).unwrap();
    let mut breaking = fake("goods", "1.0.0");
    breaking.exports = Vec::new();
    offer(&mut world, Activation::Auto, &Arc::new(breaking)).unwrap_err();
    assert!(world.book("goods").unwrap().routing.routes_to(&serving));
    assert!(matches!(
        changes(&mut world).last(),
        Some(Change::Refused { .. })
    ));
}

#[test]
fn a_provider_that_breaks_a_consumer_is_rejected_and_named() {
    let mut world = world(Activation::Auto, &[goods("1.0.0"), orders("1.0.0")]);
    let mut broken = fake("goods", "2.0.0");
    broken.exports = vec![interface(CATALOG, "get", WitType::U32)];
    let refused = offer(&mut world, Activation::Auto, &Arc::new(broken)).unwrap_err();
    assert_eq!(
        refused,
        Refusal::Incompatible {
            why: Incompatibility::BreaksConsumer {
                consumer: "orders".into(),
                version: ver("1.0.0"),
                interface: CATALOG.into(),
                gaps: vec![Gap::DifferentType {
                    function: "get".into()
                }],
            }
        }
    );
    assert_eq!(active(&world, "goods"), Some(ver("1.0.0")));
    assert!(matches!(
        world.book("goods").unwrap().versions[&ver("2.0.0")],
        VersionEntry::Rejected(_)
    ));
    assert!(matches!(
        world.activate(2, "goods", &ver("2.0.0"), Cause::Admin),
        Err(RegistryError::Rejected { .. })
    ));
}

#[test]
fn consumers_need_a_provider_and_interfaces_have_one_provider() {
    let mut world = Deployments::default();
    let refused = offer(&mut world, Activation::Auto, &orders("1.0.0")).unwrap_err();
    assert!(matches!(
        refused,
        Refusal::Incompatible {
            why: Incompatibility::NoProvider { .. }
        }
    ));
    offer(&mut world, Activation::Auto, &goods("1.0.0")).unwrap();
    let mut copycat = fake("pricing", "1.0.0");
    copycat.exports = vec![interface(CATALOG, "get", WitType::String)];
    assert!(matches!(
        offer(&mut world, Activation::Auto, &Arc::new(copycat)),
        Err(Refusal::Incompatible {
            why: Incompatibility::AlreadyProvided { .. }
        })
    ));
    let mut narcissus = fake("users", "1.0.0");
    narcissus.exports = vec![interface(DIRECTORY, "find", WitType::String)];
    narcissus.imports = vec![interface(DIRECTORY, "find", WitType::String)];
    assert!(matches!(
        offer(&mut world, Activation::Auto, &Arc::new(narcissus)),
        Err(Refusal::Incompatible {
            why: Incompatibility::ImportsItself { .. }
        })
    ));
    let mut missing = fake("orders", "2.0.0");
    missing.imports = vec![interface(CATALOG, "list", WitType::String)];
    assert!(matches!(
        offer(&mut world, Activation::Auto, &Arc::new(missing)),
        Err(Refusal::Incompatible {
            why: Incompatibility::ProviderLacks { .. }
        })
    ));
}

#[test]
fn withdrawing_the_serving_version_falls_back_to_the_previous_one() {
    let mut world = world(
        Activation::Auto,
        &[goods("1.0.0"), goods("1.1.0"), goods("1.2.0")],
    );
    world.withdraw(2, "goods", &ver("1.2.0"));
    assert_eq!(active(&world, "goods"), Some(ver("1.1.0")));
    assert_eq!(
        changes(&mut world),
        vec![
            Change::Removed {
                version: ver("1.2.0")
            },
            Change::Activated {
                version: ver("1.1.0"),
                cause: Cause::Fallback {
                    removed: ver("1.2.0")
                }
            },
        ]
    );
    // A standby version goes quietly; the last one leaves nothing serving.
    world.withdraw(3, "goods", &ver("1.0.0"));
    assert_eq!(active(&world, "goods"), Some(ver("1.1.0")));
    world.withdraw(4, "goods", &ver("1.1.0"));
    assert_eq!(active(&world, "goods"), None);
    // Withdrawing what is not there changes nothing.
    world.take_events();
    world.withdraw(5, "goods", &ver("1.1.0"));
    assert!(changes(&mut world).is_empty());
}

#[test]
fn withdrawing_one_version_of_a_split_keeps_the_rest() {
    let mut world = world(Activation::Manual, &[goods("1.0.0"), goods("1.1.0")]);
    world
        .split(1, "goods", &weights(&[("1.0.0", 50), ("1.1.0", 50)]))
        .unwrap();
    world.withdraw(2, "goods", &ver("1.0.0"));
    let routing = &world.book("goods").unwrap().routing;
    assert!(!routing.is_split());
    assert_eq!(routing.primary().unwrap().version, ver("1.1.0"));
}

#[test]
fn rollback_goes_back_past_versions_gone_or_rejected_since() {
    let mut world = world(
        Activation::Auto,
        &[
            goods("1.0.0"),
            goods("1.1.0"),
            goods("1.2.0"),
            goods("1.3.0"),
        ],
    );
    assert_eq!(
        previous(&world, "goods"),
        vec![ver("1.0.0"), ver("1.1.0"), ver("1.2.0")]
    );
    // 1.2.0's file is replaced by a broken one: it is rejected now.
    world
        .offer(
            2,
            "goods",
            Activation::Auto,
            ver("1.2.0"),
            VersionEntry::Rejected(Refusal::Load {
                stage: crate::compat::LoadStage::Compile,
                reason: "not a component".into(),
            }),
        )
        .unwrap_err();
    // 1.1.0's file is removed.
    world.withdraw(3, "goods", &ver("1.1.0"));
    world.take_events();
    assert_eq!(world.rollback(4, "goods").unwrap(), ver("1.0.0"));
    assert_eq!(active(&world, "goods"), Some(ver("1.0.0")));
    assert_eq!(
        changes(&mut world),
        vec![Change::Activated {
            version: ver("1.0.0"),
            cause: Cause::Rollback {
                from: Some(ver("1.3.0"))
            }
        }]
    );
    assert!(matches!(
        world.rollback(5, "goods"),
        Err(RegistryError::NoPrevious { .. })
    ));
}

#[test]
fn a_rollback_that_would_break_a_consumer_is_refused_and_can_be_retried() {
    let mut old = fake("goods", "1.0.0");
    old.exports = vec![interface(CATALOG, "list", WitType::String)];
    let mut world = world(Activation::Auto, &[Arc::new(old), goods("1.1.0")]);
    offer(&mut world, Activation::Auto, &orders("1.0.0")).unwrap();
    assert!(matches!(
        world.rollback(2, "goods"),
        Err(RegistryError::Incompatible { .. })
    ));
    assert_eq!(active(&world, "goods"), Some(ver("1.1.0")));
    assert_eq!(previous(&world, "goods"), vec![ver("1.0.0")]);
}

#[test]
fn a_split_is_validated_and_its_heaviest_version_is_the_primary() {
    let mut world = world(Activation::Manual, &[goods("1.0.0"), goods("1.1.0")]);
    assert!(matches!(
        world.split(1, "goods", &weights(&[("1.0.0", 0), ("1.1.0", 0)])),
        Err(RegistryError::InvalidSplit {
            why: SplitError::NothingWeighted
        })
    ));
    assert!(matches!(
        world.split(1, "goods", &weights(&[("1.0.0", 10_001)])),
        Err(RegistryError::InvalidSplit {
            why: SplitError::WeightTooLarge { weight: 10_001 }
        })
    ));
    assert!(matches!(
        world.split(1, "goods", &weights(&[("1.0.0", 1), ("7.0.0", 1)])),
        Err(RegistryError::UnknownVersion { .. })
    ));
    assert!(world.take_events().is_empty());

    world
        .split(2, "goods", &weights(&[("1.0.0", 10), ("1.1.0", 90)]))
        .unwrap();
    let routing = &world.book("goods").unwrap().routing;
    assert_eq!(routing.primary().unwrap().version, ver("1.1.0"));
    assert_eq!(previous(&world, "goods"), vec![ver("1.0.0")]);
    let events = world.take_events();
    assert_eq!(events[0].to_string(), "split: 1.1.0 90, 1.0.0 10");
    // A weight of 0 leaves the version out.
    world
        .split(3, "goods", &weights(&[("1.0.0", 0), ("1.1.0", 5)]))
        .unwrap();
    assert!(!world.book("goods").unwrap().routing.is_split());
}

#[test]
fn failover_moves_traffic_to_the_previous_version_and_activation_clears_the_mark() {
    let v10 = goods("1.0.0");
    let v11 = goods("1.1.0");
    let mut world = world(Activation::Auto, &[v10, v11.clone()]);
    world.fail_over(2, &v11, failing());
    assert_eq!(active(&world, "goods"), Some(ver("1.0.0")));
    assert!(previous(&world, "goods").is_empty());
    let book = world.book("goods").unwrap();
    assert!(book.failed.contains_key(&ver("1.1.0")));
    let events = world.take_events();
    assert_eq!(
        events[0].change,
        Change::FailedOver {
            failed: ver("1.1.0"),
            to: ver("1.0.0"),
            failure: failing()
        }
    );
    assert_eq!(
        events[0].to_string(),
        "goods 1.1.0 failed: 3 failures within 10s (the last: trap)"
    );
    // A report from a build that no longer serves changes nothing.
    world.fail_over(3, &v11, failing());
    assert!(world.take_events().is_empty());

    world
        .activate(4, "goods", &ver("1.1.0"), Cause::Admin)
        .unwrap();
    assert!(world.book("goods").unwrap().failed.is_empty());
}

#[test]
fn failover_during_a_split_moves_all_traffic_to_a_healthy_version() {
    let v11 = goods("1.1.0");
    let mut world = world(Activation::Manual, &[goods("1.0.0"), v11.clone()]);
    world
        .split(1, "goods", &weights(&[("1.0.0", 90), ("1.1.0", 10)]))
        .unwrap();
    world.fail_over(2, &v11, failing());
    let routing = &world.book("goods").unwrap().routing;
    assert!(!routing.is_split());
    assert_eq!(routing.primary().unwrap().version, ver("1.0.0"));
}

#[test]
fn failover_with_no_healthy_version_drops_it_from_a_split_or_leaves_it_serving() {
    let v10 = goods("1.0.0");
    let mut alone = world(Activation::Auto, std::slice::from_ref(&v10));
    alone.fail_over(2, &v10, failing());
    assert_eq!(active(&alone, "goods"), Some(ver("1.0.0")));
    assert_eq!(
        changes(&mut alone),
        vec![Change::NoFallback {
            failed: ver("1.0.0"),
            failure: failing()
        }]
    );

    let (v10, v11) = (goods("1.0.0"), goods("1.1.0"));
    let mut split = world(Activation::Manual, &[v10.clone(), v11.clone()]);
    split
        .split(1, "goods", &weights(&[("1.0.0", 50), ("1.1.0", 50)]))
        .unwrap();
    split.fail_over(2, &v10, failing());
    assert_eq!(active(&split, "goods"), Some(ver("1.1.0")));
    split.fail_over(3, &v11, failing());
    // Both failed: the last one keeps serving rather than nothing.
    assert_eq!(active(&split, "goods"), Some(ver("1.1.0")));
}

fn found(name: &str, mode: Activation, versions: &[Arc<Fake>]) -> Found<Fake> {
    Found {
        name: name.into(),
        mode,
        versions: versions
            .iter()
            .map(|v| (v.version.clone(), VersionEntry::Loaded(v.clone())))
            .collect(),
        refused_files: BTreeMap::new(),
    }
}

/// A fresh world started from `before`'s stored records and `found`.
fn restart(before: &Deployments<Fake>, found: Vec<Found<Fake>>) -> Deployments<Fake> {
    let saved = before
        .books()
        .map(|(name, book)| {
            let stored = Stored {
                deployment: book.record(),
                generation: 1,
            };
            (name.clone(), stored)
        })
        .collect();
    let mut after = Deployments::default();
    after.bootstrap(9, found, saved);
    after
}

#[test]
fn a_version_refused_for_not_fitting_stays_refused_after_a_restart() {
    let mut before = world(Activation::Auto, &[goods("1.0.0"), orders("1.0.0")]);
    let mut broken = fake("goods", "2.0.0");
    broken.exports = vec![interface(CATALOG, "get", WitType::U32)];
    let broken = Arc::new(broken);
    let refused = offer(&mut before, Activation::Auto, &broken).unwrap_err();
    // The record survives the store's JSON.
    let record = before.book("goods").unwrap().record();
    let text = serde_json::to_string(&record).unwrap();
    assert_eq!(
        serde_json::from_str::<super::model::Deployment>(&text).unwrap(),
        record
    );

    let after = restart(
        &before,
        vec![
            found("goods", Activation::Auto, &[goods("1.0.0"), broken]),
            found("orders", Activation::Auto, &[orders("1.0.0")]),
        ],
    );
    assert_eq!(active(&after, "goods"), Some(ver("1.0.0")));
    match &after.book("goods").unwrap().versions[&ver("2.0.0")] {
        VersionEntry::Rejected(why) => assert_eq!(why, &refused),
        VersionEntry::Loaded(_) => panic!("2.0.0 came back as a standby version"),
    }
}

#[test]
fn a_restart_after_a_failover_keeps_serving_the_fallback() {
    let v11 = goods("1.1.0");
    let mut before = world(Activation::Auto, &[goods("1.0.0"), v11.clone()]);
    before.fail_over(2, &v11, failing());
    let after = restart(
        &before,
        vec![found(
            "goods",
            Activation::Auto,
            &[goods("1.0.0"), goods("1.1.0")],
        )],
    );
    assert_eq!(active(&after, "goods"), Some(ver("1.0.0")));
    assert_eq!(
        after.book("goods").unwrap().history,
        before.book("goods").unwrap().history,
        "nothing new happened at start-up"
    );
}

#[test]
fn a_restart_restores_a_split_and_activates_versions_added_while_stopped() {
    let mut before = world(Activation::Manual, &[goods("1.0.0"), goods("1.1.0")]);
    before
        .split(1, "goods", &weights(&[("1.0.0", 70), ("1.1.0", 30)]))
        .unwrap();
    offer(&mut before, Activation::Auto, &plain("users", "1.0.0")).unwrap();
    let mut after = restart(
        &before,
        vec![
            found(
                "goods",
                Activation::Manual,
                &[goods("1.0.0"), goods("1.1.0")],
            ),
            found(
                "users",
                Activation::Auto,
                &[plain("users", "1.0.0"), plain("users", "2.0.0")],
            ),
        ],
    );
    let goods = &after.book("goods").unwrap().routing;
    assert_eq!(goods.weight_of(&ver("1.0.0")), Some(70));
    assert_eq!(goods.weight_of(&ver("1.1.0")), Some(30));
    assert_eq!(active(&after, "users"), Some(ver("2.0.0")));
    assert!(changes(&mut after).contains(&Change::Activated {
        version: ver("2.0.0"),
        cause: Cause::AutoWhileStopped
    }));
    assert!(after.book("users").unwrap().known.contains(&ver("2.0.0")));
}

#[test]
fn a_restart_rejects_a_consumer_whose_provider_is_gone_and_falls_back() {
    let mut old_orders = fake("orders", "1.0.0");
    old_orders.imports = Vec::new();
    let mut before = world(
        Activation::Auto,
        &[goods("1.0.0"), Arc::new(old_orders), orders("1.1.0")],
    );
    before.take_events();
    let mut unrelated = fake("goods", "2.0.0");
    unrelated.exports = Vec::new();
    let mut after = restart(
        &before,
        vec![
            // goods 1.0.0's file was removed while the host was stopped.
            found("goods", Activation::Auto, &[Arc::new(unrelated)]),
            found(
                "orders",
                Activation::Auto,
                &[plain("orders", "1.0.0"), orders("1.1.0")],
            ),
        ],
    );
    assert_eq!(active(&after, "orders"), Some(ver("1.0.0")));
    assert!(matches!(
        after.book("orders").unwrap().versions[&ver("1.1.0")],
        VersionEntry::Rejected(_)
    ));
    let rejected = changes(&mut after)
        .into_iter()
        .filter(|c| matches!(c, Change::Rejected { .. }))
        .count();
    assert_eq!(rejected, 1);
}

#[test]
fn history_keeps_the_latest_entries() {
    let mut world = world(Activation::Manual, &[goods("1.0.0"), goods("1.1.0")]);
    for i in 0..HISTORY_LEN as u64 + 10 {
        let version = if i % 2 == 0 { "1.0.0" } else { "1.1.0" };
        world
            .activate(100 + i, "goods", &ver(version), Cause::Admin)
            .unwrap();
    }
    let history = &world.book("goods").unwrap().history;
    assert_eq!(history.len(), HISTORY_LEN);
    assert_eq!(history.back().unwrap().at_ms, 100 + HISTORY_LEN as u64 + 9);
}

#[test]
fn the_failure_window_counts_failures_within_it_and_starts_over() {
    let policy = FailoverPolicy {
        enabled: true,
        threshold: 3,
        window: Duration::from_secs(10),
    };
    let mut window = FailureWindow::default();
    let t0 = Instant::now();
    assert!(!window.crosses(&policy, t0));
    assert!(!window.crosses(&policy, t0 + Duration::from_secs(5)));
    // The first one has left the window.
    assert!(!window.crosses(&policy, t0 + Duration::from_secs(11)));
    assert!(window.crosses(&policy, t0 + Duration::from_secs(12)));
    assert!(!window.crosses(&policy, t0 + Duration::from_secs(13)));
    let off = FailoverPolicy {
        enabled: false,
        ..policy
    };
    assert!((0..10).all(|_| !window.crosses(&off, t0)));
}

/// What `world` would store for `service`, as generation `generation`.
fn stored(world: &Deployments<Fake>, service: &str, generation: u64) -> Stored {
    Stored {
        deployment: world.book(service).unwrap().record(),
        generation,
    }
}

#[test]
fn another_hosts_change_is_taken_once_where_this_host_has_the_versions() {
    let versions = [goods("1.0.0"), goods("1.1.0")];
    let mut here = world(Activation::Manual, &versions);
    let mut there = world(Activation::Manual, &[goods("1.0.0"), goods("1.1.0")]);
    there
        .split(5, "goods", &weights(&[("1.0.0", 90), ("1.1.0", 10)]))
        .unwrap();
    assert!(here.adopt("goods", stored(&there, "goods", 2)));
    let routing = &here.book("goods").unwrap().routing;
    assert_eq!(routing.weight_of(&ver("1.1.0")), Some(10));
    assert!(routing.routes_to(&versions[1]), "this host's own builds");
    assert_eq!(
        here.book("goods").unwrap().history,
        there.book("goods").unwrap().history
    );
    assert!(here.take_events().is_empty(), "the other host logged it");
    // The same generation again, or an older one, changes nothing.
    assert!(!here.adopt("goods", stored(&there, "goods", 2)));
    assert!(!here.adopt("goods", stored(&there, "goods", 1)));
    // Nor does a service this host does not have.
    assert!(!here.adopt("users", stored(&there, "goods", 3)));
    assert!(here.book("users").is_none());
}

#[test]
fn a_host_lacking_the_version_the_cluster_serves_keeps_serving_and_says_why() {
    let mut here = world(Activation::Auto, &[goods("1.0.0")]);
    let mut there = world(Activation::Auto, &[goods("1.0.0"), goods("2.0.0")]);
    let v2 = there
        .book("goods")
        .unwrap()
        .loaded(&ver("2.0.0"))
        .unwrap()
        .clone();
    there.fail_over(3, &v2, failing());
    there
        .activate(4, "goods", &ver("2.0.0"), Cause::Admin)
        .unwrap();
    assert!(here.adopt("goods", stored(&there, "goods", 7)));
    let book = here.book("goods").unwrap();
    assert_eq!(active(&here, "goods"), Some(ver("1.0.0")));
    assert_eq!(
        book.disagreement().as_deref(),
        Some("the cluster serves 2.0.0 (not loaded here); this host serves what it has")
    );
    assert_eq!(book.generation, 7);

    // A version this host refused: the reason shows.
    let refused = Refusal::Load {
        stage: crate::compat::LoadStage::Compile,
        reason: "not a component".into(),
    };
    here.offer(
        5,
        "goods",
        Activation::Auto,
        ver("2.0.0"),
        VersionEntry::Rejected(refused),
    )
    .unwrap_err();
    assert!(here.adopt("goods", stored(&there, "goods", 8)));
    assert_eq!(
        here.book("goods").unwrap().disagreement().as_deref(),
        Some(
            "the cluster serves 2.0.0 (refused here: not a component); this host serves what it has"
        )
    );

    // Back to what it has: it agrees again.
    there
        .activate(8, "goods", &ver("1.0.0"), Cause::Admin)
        .unwrap();
    there.fail_over(9, &v2, failing());
    assert!(here.adopt("goods", stored(&there, "goods", 9)));
    let book = here.book("goods").unwrap();
    assert_eq!(book.disagreement(), None);
    assert_eq!(book.failed, there.book("goods").unwrap().failed);
}

/// A host sharing the records with others, started with `found` after
/// `there` stored its records (generation 4).
fn join(there: &Deployments<Fake>, found: Vec<Found<Fake>>) -> Deployments<Fake> {
    let saved = there
        .books()
        .map(|(name, _)| (name.clone(), stored(there, name, 4)))
        .collect();
    let mut here = Deployments::shared();
    here.bootstrap(9, found, saved);
    here.take_events();
    here
}

#[test]
fn a_host_that_starts_behind_the_cluster_serves_what_it_has_and_stores_the_clusters_choice() {
    let there = world(Activation::Auto, &[goods("1.0.0"), goods("1.1.0")]);
    let mut here = join(
        &there,
        vec![found("goods", Activation::Auto, &[goods("1.0.0")])],
    );
    let book = here.book("goods").unwrap();
    assert_eq!(active(&here, "goods"), Some(ver("1.0.0")));
    assert_eq!(
        book.history,
        there.book("goods").unwrap().history,
        "no start-up activation"
    );
    assert_eq!(
        book.record().active,
        Some(ver("1.1.0")),
        "its records keep the cluster's"
    );
    assert!(book.disagreement().is_some());

    // The missing version arrives (fetched): it serves, as the record says,
    // and nothing happens here that the record does not already say.
    assert!(!here.is_news("goods", &ver("1.1.0")));
    assert_eq!(
        offer(&mut here, Activation::Auto, &goods("1.1.0")),
        Ok(VersionState::Active)
    );
    assert_eq!(changes(&mut here), []);
    let book = here.book("goods").unwrap();
    assert_eq!(active(&here, "goods"), Some(ver("1.1.0")));
    assert_eq!((book.disagreement(), book.wanted.as_ref()), (None, None));
}

#[test]
fn a_version_the_cluster_knows_and_left_is_not_activated_by_a_host_that_fetches_it() {
    let mut there = world(Activation::Auto, &[goods("1.0.0"), goods("1.1.0")]);
    there
        .activate(3, "goods", &ver("1.0.0"), Cause::Admin)
        .unwrap();
    let mut here = join(
        &there,
        vec![found("goods", Activation::Auto, &[goods("1.0.0")])],
    );
    assert_eq!(
        offer(&mut here, Activation::Auto, &goods("1.1.0")),
        Ok(VersionState::Standby)
    );
    assert_eq!(active(&here, "goods"), Some(ver("1.0.0")));
    // A version new to the service still is news.
    assert_eq!(
        offer(&mut here, Activation::Auto, &goods("1.2.0")),
        Ok(VersionState::Active)
    );
    // And so is one removed and dropped in again.
    here.withdraw(5, "goods", &ver("1.2.0"));
    assert_eq!(active(&here, "goods"), Some(ver("1.0.0")));
    assert_eq!(
        offer(&mut here, Activation::Auto, &goods("1.2.0")),
        Ok(VersionState::Active)
    );
}

#[test]
fn a_service_that_arrives_after_start_builds_on_the_clusters_record() {
    let mut there = world(Activation::Auto, &[goods("1.0.0"), goods("1.1.0")]);
    there
        .activate(3, "goods", &ver("1.0.0"), Cause::Admin)
        .unwrap();
    let mut here = join(&world(Activation::Auto, &[]), Vec::new());
    assert!(!here.adopt("goods", stored(&there, "goods", 6)));
    assert!(
        here.book("goods").is_none(),
        "no book until a version arrives"
    );

    // Fetched newest first: 1.1.0 waits, 1.0.0 serves, as the cluster does.
    assert_eq!(
        offer(&mut here, Activation::Auto, &goods("1.1.0")),
        Ok(VersionState::Standby)
    );
    assert_eq!(active(&here, "goods"), None);
    assert_eq!(
        offer(&mut here, Activation::Auto, &goods("1.0.0")),
        Ok(VersionState::Active)
    );
    let book = here.book("goods").unwrap();
    assert_eq!(active(&here, "goods"), Some(ver("1.0.0")));
    // Its next record builds on the cluster's: same generation, same story.
    assert_eq!(book.generation, 6);
    let history = &there.book("goods").unwrap().history;
    assert!(book.history.range(..history.len()).eq(history.iter()));
}

#[test]
fn a_single_host_that_lost_its_active_version_while_stopped_serves_and_stores_the_next() {
    let before = world(Activation::Auto, &[goods("1.0.0"), goods("1.1.0")]);
    let after = restart(
        &before,
        vec![found("goods", Activation::Auto, &[goods("1.0.0")])],
    );
    let book = after.book("goods").unwrap();
    assert_eq!(active(&after, "goods"), Some(ver("1.0.0")));
    assert_eq!(book.record().active, Some(ver("1.0.0")));
    assert_eq!(book.disagreement(), None);
}

#[test]
fn a_host_following_the_cluster_falls_back_on_its_own_when_it_loses_a_file() {
    let there = world(Activation::Auto, &[goods("1.0.0"), goods("1.1.0")]);
    let mut here = join(
        &there,
        vec![found(
            "goods",
            Activation::Auto,
            &[goods("0.9.0"), goods("1.0.0")],
        )],
    );
    assert_eq!(active(&here, "goods"), Some(ver("1.0.0")));
    here.withdraw(5, "goods", &ver("1.0.0"));
    assert_eq!(active(&here, "goods"), Some(ver("0.9.0")));
    assert_eq!(
        changes(&mut here),
        [Change::Removed {
            version: ver("1.0.0")
        }]
    );
    let book = here.book("goods").unwrap();
    assert_eq!(
        book.record().active,
        Some(ver("1.1.0")),
        "still the cluster's"
    );
}

#[test]
fn a_rollback_on_a_host_following_the_cluster_goes_back_from_what_the_cluster_serves() {
    let there = world(
        Activation::Auto,
        &[goods("1.0.0"), goods("1.1.0"), goods("1.2.0")],
    );
    let mut here = join(
        &there,
        vec![found(
            "goods",
            Activation::Auto,
            &[goods("1.0.0"), goods("1.1.0")],
        )],
    );
    assert_eq!(
        active(&here, "goods"),
        Some(ver("1.1.0")),
        "the best it has"
    );
    assert_eq!(here.rollback(5, "goods").unwrap(), ver("1.1.0"));
    assert_eq!(
        changes(&mut here),
        [Change::Activated {
            version: ver("1.1.0"),
            cause: Cause::Rollback {
                from: Some(ver("1.2.0"))
            }
        }]
    );
    assert_eq!(
        here.book("goods").unwrap().record().active,
        Some(ver("1.1.0"))
    );
}
