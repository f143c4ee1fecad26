//! The components other hosts offer: a version stored by any host is
//! fetched into this host's services folder, where the watcher loads it like
//! any dropped file. It never loads or routes anything itself.

use std::sync::Weak;
use std::time::Duration;

use semver::Version;
use tokio::sync::watch;

use crate::files;
use crate::loader::{Loader, valid_service_name};

/// How often a host looks for versions other hosts offer, besides when told.
const FETCH_INTERVAL: Duration = Duration::from_secs(1);

/// Fetch the versions other hosts offer that this host's folder lacks, into
/// the folder, whenever `told` and every `FETCH_INTERVAL` (1 s). Returns when
/// the loader is gone.
pub async fn follow(loader: Weak<Loader>, mut told: watch::Receiver<u64>) {
    loop {
        if let Ok(Err(_)) = tokio::time::timeout(FETCH_INTERVAL, told.changed()).await {
            // The store is gone: nothing more will be announced.
            tokio::time::sleep(FETCH_INTERVAL).await;
        }
        let Some(loader) = loader.upgrade() else {
            return;
        };
        fetch_offered(&loader).await;
    }
}

async fn fetch_offered(loader: &Loader) {
    let offered = match loader.components.shared_components().await {
        Ok(offered) => offered,
        Err(e) => {
            // The registry says once that the store is out of reach.
            tracing::debug!("cannot list the versions other hosts offer: {e}");
            return;
        }
    };
    for shared in offered {
        let (Ok(()), Ok(version)) = (
            valid_service_name(&shared.service),
            Version::parse(&shared.version),
        ) else {
            continue;
        };
        let dir = loader.service_dir(&shared.service);
        let path = dir.join(format!("{version}.wasm"));
        if path.exists() {
            continue;
        }
        let bytes = match loader.components.component(&shared.digest).await {
            Ok(Some(bytes)) if switchyard_runtime::digest(&bytes) == shared.digest => bytes,
            Ok(_) => {
                tracing::warn!(service = %shared.service, %version, "the shared component is missing or damaged");
                continue;
            }
            Err(e) => {
                tracing::warn!(service = %shared.service, %version, "cannot fetch the shared component: {e}");
                continue;
            }
        };
        // Written aside and moved into place, so the watcher never sees half a file.
        let staged = dir.join(format!(".{version}.wasm.fetching"));
        let placed = std::fs::create_dir_all(&dir)
            .and_then(|()| files::write_new(&staged, &bytes))
            .and_then(|()| std::fs::rename(&staged, &path));
        match placed {
            Ok(()) => {
                tracing::info!(service = %shared.service, %version, "fetched from another host")
            }
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                tracing::warn!(file = %path.display(), "cannot place a fetched component: {e}");
            }
        }
    }
}
