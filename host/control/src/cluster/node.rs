//! This host as a node of a cluster: its name and address, and the
//! heartbeat through which the other nodes see what it serves.
//!
//! It must never decide anything about deployments: it reports what the
//! registry says.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;

use crate::outage::Outage;
use crate::registry::{Registry, VersionEntry};
use switchyard_store::NodeStore;

/// How often a node reports itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long counts as gone.
pub const GONE_AFTER: Duration = Duration::from_secs(5);

/// This host's identity in the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// `--node-id`; by default the host name and port.
    pub id: String,
    /// Where it listens.
    pub address: String,
}

/// One node as `GET /admin/nodes` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub id: String,
    pub address: String,
    /// When its last heartbeat arrived, in ms since the Unix epoch.
    pub last_heartbeat_ms: u64,
    /// How long ago, in ms.
    pub age_ms: u64,
    /// Heard from within the last few seconds.
    pub alive: bool,
    /// This is the node answering.
    pub this_node: bool,
    /// Per service: what it serves, whether it loaded every version.
    pub services: BTreeMap<String, ServiceReport>,
}

/// Report `node` to `store` every [`HEARTBEAT`], until the registry is gone.
pub async fn beat(node: Node, registry: Weak<Registry>, store: Arc<dyn NodeStore>) {
    let mut outage = Outage::new("send the heartbeat");
    loop {
        let Some(report) = registry.upgrade().map(|r| report(&r)) else {
            return;
        };
        let report = serde_json::to_string(&report).expect("a report serialises");
        outage.note(store.heartbeat(&node.id, &node.address, &report).await);
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Every node the store has heard from, and this one as it is now.
pub async fn nodes(
    this: &Node,
    registry: &Registry,
    store: &dyn NodeStore,
) -> Result<Vec<NodeView>, switchyard_store::StoreError> {
    let mut views: Vec<NodeView> = store
        .nodes()
        .await?
        .into_iter()
        .filter(|beat| beat.node != this.id)
        .map(|beat| NodeView {
            services: serde_json::from_str(&beat.report).unwrap_or_default(),
            alive: beat.age_ms < GONE_AFTER.as_millis() as u64,
            this_node: false,
            id: beat.node,
            address: beat.address,
            last_heartbeat_ms: beat.at_ms,
            age_ms: beat.age_ms,
        })
        .collect();
    views.push(NodeView {
        id: this.id.clone(),
        address: this.address.clone(),
        last_heartbeat_ms: crate::registry::now_ms(),
        age_ms: 0,
        alive: true,
        this_node: true,
        services: report(registry),
    });
    views.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(views)
}

/// What this host serves of each service, for its heartbeat.
pub fn report(registry: &Registry) -> BTreeMap<String, ServiceReport> {
    registry
        .read_books(|name, book| {
            let rejected: BTreeMap<String, String> = book
                .versions
                .iter()
                .filter_map(|(v, e)| match e {
                    VersionEntry::Rejected(why) => Some((v.to_string(), why.to_string())),
                    VersionEntry::Loaded(_) => None,
                })
                .collect();
            let report = ServiceReport {
                serving: book
                    .routing
                    .weights()
                    .map(|(v, w)| (v.to_string(), w))
                    .collect(),
                generation: book.generation,
                loaded_all: rejected.is_empty(),
                rejected,
                disagreement: book.disagreement(),
            };
            (name.to_string(), report)
        })
        .into_iter()
        .collect()
}

/// What a host serves of one service, as its heartbeat reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ServiceReport {
    /// Version → weight.
    pub serving: BTreeMap<String, u32>,
    /// The generation of the stored record it serves by.
    pub generation: u64,
    /// Whether it could load every version it has.
    pub loaded_all: bool,
    /// The versions it could not load, and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<String, String>,
    /// Why it cannot serve as the stored record says, if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<String>,
}
