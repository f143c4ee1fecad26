//! Service-to-service calls: a component's imports of other services'
//! interfaces, forwarded at call time through the registry to whichever
//! version of the provider serves then, and through its pool.
//!
//! It owns only the forwarding; picking the provider is the registry's,
//! leasing an instance the pool's ([`crate::balance`]).

use std::sync::Weak;

use anyhow::{Context, Result, bail};
use wasmtime::component::Val;

use crate::balance::AcquireError;
use crate::registry::Registry;
use switchyard_runtime::{BoxFuture, CallError, ServiceCalls};

/// Forwards a component's calls to other services' interfaces, at call time, to
/// whichever version of the provider serves then: upgrading a provider changes
/// what its consumers call without touching them.
pub struct ServiceLinks {
    /// Weak: the registry owns the versions whose linkers hold this.
    pub registry: Weak<Registry>,
}

impl ServiceCalls for ServiceLinks {
    fn call<'a>(
        &'a self,
        depth: u32,
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
            let Some(provider) = registry.provider_of(interface) else {
                bail!("no service with a healthy version provides {interface}");
            };
            let name = format!("service {} {}", provider.service, provider.version);
            let limit = provider.pool.policy().limits.call_depth;
            if depth + 1 > limit {
                bail!(
                    "calling {name} would exceed the call depth limit of {limit}: is there a cycle?"
                );
            }
            let mut lease = match provider.pool.acquire(None).await {
                Ok(lease) => lease,
                Err(AcquireError::Instantiate(e)) => {
                    let failure = CallError::Start(e);
                    let reason = format!("{name} is unavailable: {failure}");
                    registry.report(&provider, Some(&failure));
                    bail!(reason);
                }
                Err(busy) => return Err(busy).with_context(|| format!("{name} is unavailable")),
            };
            let outcome = lease
                .call_export(depth + 1, interface, function, params, results)
                .await;
            registry.report(&provider, outcome.as_ref().err());
            outcome.with_context(|| format!("{name} failed"))
        })
    }
}
