//! Service-to-service calls: a component's imports of other services'
//! interfaces, forwarded at call time through the registry to whichever
//! version of the provider serves then, and through its pool.
//!
//! It owns only the forwarding; picking the provider is the registry's,
//! leasing an instance the pool's ([`crate::balance`]).

use std::sync::{Arc, Weak};
use std::time::Instant;

use wasmtime::component::Val;

use crate::balance::AcquireError;
use crate::registry::Registry;
use switchyard_runtime::{BoxFuture, CallError, Callee, DependencyCause, ServiceCalls};
use switchyard_trace::{Trace, failed};

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
        trace: Option<Trace>,
        interface: &'a str,
        function: &'a str,
        params: &'a [Val],
        results: &'a mut [Val],
    ) -> BoxFuture<'a, Result<(), DependencyCause>> {
        Box::pin(async move {
            let registry = self
                .registry
                .upgrade()
                .ok_or(DependencyCause::ShuttingDown)?;
            let Some(provider) = registry.provider_of(interface) else {
                return Err(DependencyCause::NoProvider {
                    interface: interface.to_string(),
                });
            };
            let callee = Callee {
                service: provider.service.clone(),
                version: provider.version_text.clone(),
            };
            let limit = provider.pool.policy().limits.call_depth;
            if depth + 1 > limit {
                return Err(DependencyCause::TooDeep { callee, limit });
            }
            // From here the call is the callee's: timed, and traced.
            let span = trace.map(|trace| {
                trace.service_call(interface, function, &callee.service, &callee.version)
            });
            let started = Instant::now();
            let mut lease = match provider.pool.acquire(None).await {
                Ok(lease) => lease,
                Err(AcquireError::Instantiate(e)) => {
                    let failure = CallError::Start(e);
                    failed(span.as_ref(), &failure);
                    registry.report(&provider, Some(&failure));
                    provider.signals.record(true, started.elapsed());
                    let reason = Arc::new(anyhow::Error::new(failure));
                    return Err(DependencyCause::Unavailable { callee, reason });
                }
                Err(busy) => {
                    failed(span.as_ref(), &busy);
                    let reason = Arc::new(anyhow::Error::new(busy));
                    return Err(DependencyCause::Unavailable { callee, reason });
                }
            };
            let trace = span.as_ref().map(|span| span.trace().clone());
            let outcome = lease
                .call_export(depth + 1, trace, interface, function, params, results)
                .await;
            if let Err(failure) = &outcome {
                failed(span.as_ref(), failure);
            }
            registry.report(&provider, outcome.as_ref().err());
            provider.signals.record(outcome.is_err(), started.elapsed());
            outcome.map_err(|failure| DependencyCause::Failed {
                callee,
                failure: Arc::new(failure),
            })
        })
    }
}
