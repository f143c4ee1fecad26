//! The deployments other hosts store: whenever the store announces a
//! change, and every `SYNC_INTERVAL` (0.5 s) in case a notice was lost, the
//! registry takes what others stored. It decides nothing: the registry's
//! state machine adopts a stored record or keeps its own.

use std::sync::Weak;
use std::time::Duration;

use crate::outage::Outage;
use crate::registry::Registry;

/// How often a host looks for changes other hosts stored, besides when told.
const SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// Follow what other hosts sharing the store change. Returns when the
/// registry is gone; at once when no other host can share the store.
pub async fn follow(registry: Weak<Registry>) {
    let Some(mut changes) = registry.upgrade().and_then(|r| r.announced_changes()) else {
        return;
    };
    // Said once per outage, not every half second.
    let mut outage = Outage::new("read the deployment records");
    loop {
        if let Ok(Err(_)) = tokio::time::timeout(SYNC_INTERVAL, changes.changed()).await {
            // The store is gone: nothing more will be announced.
            tokio::time::sleep(SYNC_INTERVAL).await;
        }
        let Some(registry) = registry.upgrade() else {
            return;
        };
        outage.note(registry.take_others_changes().await);
    }
}
