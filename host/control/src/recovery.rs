//! Calls the recovery entry point of services that export one
//! (`switchyard:platform/recovery`): once every service serves after start-up,
//! before the gateway listens, and then every few seconds.
//!
//! A service whose work spans several steps or services (a saga) writes its
//! intent first and finishes or undoes it here, after a crash of the host or a
//! trap of an instance stopped it halfway. The host only provides the moment;
//! what to recover is the service's business. It passes a grace period, twice
//! the service's call deadline, so that work still running on another instance
//! is never mistaken for abandoned work.

use std::sync::{Arc, Weak};
use std::time::Duration;

use wasmtime::component::Val;

use crate::registry::{Deployable, LoadedVersion, Registry};
use switchyard_platform::RECOVERY_INTERFACE;

/// How often recovery runs while serving.
pub const RECOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Let every serving version that exports recovery recover.
pub async fn recover_all(registry: &Arc<Registry>) {
    for service in registry.list() {
        let Some(version) = service.routing().primary().cloned() else {
            continue;
        };
        if version.export(RECOVERY_INTERFACE).is_some() {
            recover(registry, &version).await;
        }
    }
}

/// Run [`recover_all`] every [`RECOVERY_INTERVAL`] until the registry is gone.
pub async fn run(registry: Weak<Registry>) {
    loop {
        tokio::time::sleep(RECOVERY_INTERVAL).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        recover_all(&registry).await;
    }
}

async fn recover(registry: &Arc<Registry>, version: &Arc<LoadedVersion>) {
    let grace = version.pool.policy().limits.deadline * 2;
    let mut lease = match version.pool.acquire(None).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!(service = %version.service, version = %version.version, "recovery skipped: {e}");
            return;
        }
    };
    let grace_ms = Val::U64(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
    let outcome = lease
        .call_export(0, None, RECOVERY_INTERFACE, "recover", &[grace_ms], &mut [])
        .await;
    drop(lease);
    if let Err(failure) = &outcome {
        tracing::warn!(service = %version.service, version = %version.version, "recovery failed: {failure}");
        registry.report(version, Some(failure));
    }
}
