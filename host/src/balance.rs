//! Picking an instance for each call: per version, an [`InstancePool`] of live
//! instances, each serving one call at a time, handed out as a [`Lease`].
//!
//! A lease goes back to the pool only if its last call finished cleanly. An
//! instance that trapped, or whose call was abandoned halfway (the client went
//! away, a deadline passed), may hold broken state and is dropped instead.
//! [`ServiceLinks`] routes service-to-service calls through the same pools.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use anyhow::{Context, Result, anyhow};
use wasmtime::component::{ComponentExportIndex, Val};

use crate::platform::{Platform, ServiceBindingsPre, handler};
use crate::registry::Registry;
use crate::runtime::{BoxFuture, LiveInstance, Runtime, ServiceCalls, ServiceState};

/// Builds the [`Platform`] context for each new instance of one version.
pub type PlatformFactory = Box<dyn Fn() -> Platform + Send + Sync>;

/// The instances of one version.
pub struct InstancePool {
    runtime: Arc<Runtime>,
    pre: ServiceBindingsPre<ServiceState>,
    platform: PlatformFactory,
    exports: HashMap<(String, String), ComponentExportIndex>,
    idle: Mutex<Vec<LiveInstance>>,
    /// Instances alive, idle or leased.
    live: AtomicUsize,
    /// Instances leased out now.
    leased: AtomicUsize,
    /// Set while the version takes no traffic: instances coming back are
    /// dropped instead of kept, so a retired version drains to nothing.
    retired: AtomicBool,
    /// Idle instances kept for reuse; more than this are dropped when returned.
    max_idle: usize,
}

impl InstancePool {
    pub fn new(
        runtime: Arc<Runtime>,
        pre: ServiceBindingsPre<ServiceState>,
        platform: PlatformFactory,
        exports: HashMap<(String, String), ComponentExportIndex>,
        max_idle: usize,
    ) -> InstancePool {
        InstancePool {
            runtime,
            pre,
            platform,
            exports,
            idle: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            leased: AtomicUsize::new(0),
            retired: AtomicBool::new(true),
            max_idle,
        }
    }

    /// Instances alive now, idle or serving.
    pub fn instances(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Instances serving a call now.
    pub fn leased(&self) -> usize {
        self.leased.load(Ordering::Relaxed)
    }

    /// The version takes traffic (again): keep instances for reuse.
    pub fn revive(&self) {
        self.retired.store(false, Ordering::Relaxed);
    }

    /// The version takes no more new traffic: drop the idle instances now and
    /// the leased ones as their calls finish.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for instance in idle {
            self.discard(instance);
        }
    }

    /// Create one idle instance ahead of traffic, so the first request does not
    /// pay for instantiation.
    pub async fn warm(self: &Arc<Self>) -> Result<()> {
        let lease = self.acquire().await?;
        drop(lease);
        Ok(())
    }

    /// An instance for one call: an idle one, or a new one.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let instance = match idle {
            Some(instance) => instance,
            None => {
                let instance = self
                    .runtime
                    .instantiate(&self.pre, (self.platform)())
                    .await
                    .context("cannot instantiate")?;
                self.live.fetch_add(1, Ordering::Relaxed);
                instance
            }
        };
        self.leased.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            pool: self.clone(),
            instance: Some(instance),
            reusable: true,
        })
    }

    fn give_back(&self, instance: LiveInstance) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle && !self.retired.load(Ordering::Relaxed) {
            idle.push(instance);
        } else {
            drop(idle);
            self.discard(instance);
        }
    }

    fn discard(&self, instance: LiveInstance) {
        drop(instance);
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One instance, leased for one call.
pub struct Lease {
    pool: Arc<InstancePool>,
    instance: Option<LiveInstance>,
    /// False from the start of a call until it finishes cleanly.
    reusable: bool,
}

impl Lease {
    fn instance(&mut self) -> &mut LiveInstance {
        self.instance
            .as_mut()
            .expect("a lease holds its instance until dropped")
    }

    pub async fn handle(&mut self, request: &handler::Request) -> Result<handler::Response> {
        self.reusable = false;
        let response = self.instance().handle(request).await?;
        self.reusable = true;
        Ok(response)
    }

    pub async fn call_export(
        &mut self,
        interface: &str,
        function: &str,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<()> {
        let index = *self
            .pool
            .exports
            .get(&(interface.to_string(), function.to_string()))
            .ok_or_else(|| anyhow!("{interface}#{function} is not exported"))?;
        self.reusable = false;
        self.instance().call_export(&index, params, results).await?;
        self.reusable = true;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.leased.fetch_sub(1, Ordering::Relaxed);
        if let Some(instance) = self.instance.take() {
            if self.reusable {
                self.pool.give_back(instance);
            } else {
                self.pool.discard(instance);
            }
        }
    }
}

// === impl ServiceLinks ===

/// Forwards a component's calls to other services' interfaces, at call time, to
/// whichever version of the provider is active then: upgrading a provider
/// changes what its consumers call without touching them.
pub struct ServiceLinks {
    /// Weak: the registry owns the versions whose linkers hold this.
    pub registry: Weak<Registry>,
}

impl ServiceCalls for ServiceLinks {
    fn call<'a>(
        &'a self,
        interface: &'a str,
        function: &'a str,
        params: &'a [Val],
        results: &'a mut [Val],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let registry = self
                .registry
                .upgrade()
                .context("the host is shutting down")?;
            let provider = registry
                .provider_of(interface)
                .ok_or_else(|| anyhow!("no active service provides {interface}"))?;
            let mut lease = provider.pool.acquire().await.with_context(|| {
                format!(
                    "service {} {} is unavailable",
                    provider.service, provider.version
                )
            })?;
            let outcome = lease
                .call_export(interface, function, params, results)
                .await
                .with_context(|| {
                    format!("service {} {} failed", provider.service, provider.version)
                });
            provider.record(outcome.is_err());
            outcome
        })
    }
}
