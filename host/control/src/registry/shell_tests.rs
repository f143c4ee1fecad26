//! The registry's shell (deciding, publishing, persisting in order) against
//! a fake deployment store: what reaches the store, and what happens when
//! another host saved first. Versions are refused ones, which need no
//! component: the shell persists and adopts them as any other.

use std::collections::BTreeMap;
use std::sync::Mutex;

use semver::Version;
use switchyard_store::{DeploymentStore, StoreError, StoredDeployment};

use super::*;
use crate::compat::Refusal;

/// Records by service, each with its generation, as a shared store keeps
/// them; `saves` counts every attempt, lost ones too.
#[derive(Default)]
struct FakeStore {
    records: Mutex<BTreeMap<String, (u64, String)>>,
    saves: Mutex<Vec<(String, u64)>>,
}

impl FakeStore {
    fn record(&self, service: &str) -> (u64, model::Deployment) {
        let records = self.records.lock().unwrap();
        let (generation, text) = records.get(service).expect("a stored record");
        (*generation, serde_json::from_str(text).unwrap())
    }

    /// Another host saves `deployment` as the next generation.
    fn saved_elsewhere(&self, service: &str, deployment: &model::Deployment) {
        let mut records = self.records.lock().unwrap();
        let generation = records.get(service).map_or(0, |(g, _)| *g) + 1;
        let text = serde_json::to_string(deployment).unwrap();
        records.insert(service.to_string(), (generation, text));
    }
}

#[async_trait::async_trait]
impl DeploymentStore for FakeStore {
    async fn load_deployments(&self) -> Result<Vec<StoredDeployment>, StoreError> {
        let records = self.records.lock().unwrap();
        Ok(records
            .iter()
            .map(|(service, (generation, record))| StoredDeployment {
                service: service.clone(),
                record: record.clone(),
                generation: *generation,
            })
            .collect())
    }

    async fn save_deployment(
        &self,
        service: &str,
        record: &str,
        based_on: u64,
    ) -> Result<u64, StoreError> {
        self.saves
            .lock()
            .unwrap()
            .push((service.to_string(), based_on));
        let mut records = self.records.lock().unwrap();
        let stored = records.get(service).map_or(0, |(g, _)| *g);
        if stored != based_on {
            return Err(StoreError::Conflict(service.to_string()));
        }
        records.insert(service.to_string(), (stored + 1, record.to_string()));
        Ok(stored + 1)
    }
}

fn ver(text: &str) -> Version {
    Version::parse(text).unwrap()
}

fn refused(reason: &str) -> VersionEntry {
    VersionEntry::Rejected(Refusal::Load {
        stage: crate::compat::LoadStage::Compile,
        reason: reason.to_string(),
    })
}

async fn offer_refused(registry: &Registry, version: &str) {
    let refusal = registry
        .offer("ratings", Activation::Auto, ver(version), refused("broken"))
        .await;
    assert!(refusal.is_err(), "a refused version is refused");
}

#[tokio::test]
async fn each_change_is_stored_on_top_of_the_last_and_survives_a_restart() {
    let store = Arc::new(FakeStore::default());
    let registry = Registry::new(store.clone());
    registry.bootstrap(Vec::new()).await;
    offer_refused(&registry, "1.0.0").await;
    offer_refused(&registry, "1.1.0").await;

    let (generation, record) = store.record("ratings");
    assert_eq!(generation, 2);
    assert_eq!(record.known, [ver("1.0.0"), ver("1.1.0")].into());
    let saves = store.saves.lock().unwrap().clone();
    assert_eq!(saves, [("ratings".into(), 0), ("ratings".into(), 1)]);

    // A host started again on the same store, with the same files, knows
    // both and goes on from that generation.
    let restarted = Registry::new(store.clone());
    let files = Found {
        name: "ratings".into(),
        mode: Activation::Auto,
        versions: [ver("1.0.0"), ver("1.1.0")]
            .into_iter()
            .map(|v| (v, refused("broken")))
            .collect(),
        refused_files: BTreeMap::new(),
    };
    restarted.bootstrap(vec![files]).await;
    let generation = restarted.read_book("ratings", |b| b.generation);
    assert_eq!(generation, Some(3), "start-up stores every record once");
    offer_refused(&restarted, "1.2.0").await;
    let (generation, record) = store.record("ratings");
    assert_eq!(generation, 4, "stored on top of the last, not lost");
    assert_eq!(record.known.len(), 3, "{:?}", record.known);
}

#[tokio::test]
async fn a_change_another_host_saved_first_is_taken_and_the_next_goes_on_top() {
    let store = Arc::new(FakeStore::default());
    let registry = Registry::new(store.clone());
    registry.bootstrap(Vec::new()).await;
    offer_refused(&registry, "1.0.0").await;

    // Another host saves first: it knows 2.0.0, and logged that it saw it.
    let (_, mut theirs) = store.record("ratings");
    theirs.known.insert(ver("2.0.0"));
    theirs.history.push_back(HistoryEntry {
        at_ms: 1,
        action: Action::Added,
        version: Some("2.0.0".into()),
        reason: "dropped in on the other host".into(),
    });
    store.saved_elsewhere("ratings", &theirs);

    // This host's next change was based on generation 1: it loses, and the
    // other host's record becomes this host's.
    offer_refused(&registry, "1.1.0").await;
    let (generation, stored) = store.record("ratings");
    assert_eq!(generation, 2, "the lost save wrote nothing");
    assert!(!stored.known.contains(&ver("1.1.0")));
    let (taken, known, history) = registry
        .read_book("ratings", |b| {
            (b.generation, b.known.clone(), b.history.clone())
        })
        .unwrap();
    assert_eq!(taken, 2);
    assert!(
        known.contains(&ver("2.0.0")) && known.contains(&ver("1.1.0")),
        "{known:?}"
    );
    assert!(
        history
            .iter()
            .any(|h| h.reason == "dropped in on the other host"),
        "{history:?}"
    );

    // The next change goes on top of the other host's, and keeps what both
    // hosts know: nothing is lost.
    offer_refused(&registry, "1.2.0").await;
    let (generation, stored) = store.record("ratings");
    assert_eq!(generation, 3);
    for version in ["1.0.0", "1.1.0", "1.2.0", "2.0.0"] {
        assert!(
            stored.known.contains(&ver(version)),
            "{version}: {:?}",
            stored.known
        );
    }
    assert!(
        stored
            .history
            .iter()
            .any(|h| h.reason == "dropped in on the other host"),
        "{:?}",
        stored.history
    );
}
