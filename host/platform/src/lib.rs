//! The host side of what every service may import: key-value storage
//! (`wasi:keyvalue` plus our `keyvalue-cas` extension), configuration
//! (`wasi:config`) and logging (`wasi:logging`); and the bindings of the
//! `switchyard:platform/service` world every service targets.
//!
//! This crate owns [`Platform`], the per-instance context those imports act
//! on. It always acts in the name of the service the instance belongs to: the
//! namespace passed to the store comes from here, never from the guest. It
//! must never reach another service's data, nor know about HTTP, versions or
//! routing.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use switchyard_store::{KeyValueStore, Namespace, Quota, StoreError};
use switchyard_trace::Trace;

mod bindings {
    wasmtime::component::bindgen!({
        path: [
            "../../wit/deps/keyvalue",
            "../../wit/deps/config",
            "../../wit/deps/logging",
            "../../wit/platform",
        ],
        world: "switchyard:platform/service",
        // Key-value calls are async: the store may have to wait (for a
        // database across the network, or a writer), and must never make the
        // async worker wait with it.
        imports: {
            "wasi:keyvalue": async | trappable,
            "switchyard:platform/keyvalue-cas": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

pub use bindings::exports::switchyard::platform::handler;
pub use bindings::{Service as ServiceBindings, ServiceIndices as HandlerIndices};

use bindings::switchyard::platform::keyvalue_cas;
use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::{atomics, store};
use bindings::wasi::logging::logging;

/// The longest bucket identifier a service may open.
const MAX_BUCKET_NAME: usize = 256;

/// An open bucket, as the guest holds it.
pub struct Bucket {
    name: String,
}

/// The longest `wasi:logging` message passed on whole; longer ones are cut.
pub const MAX_LOG_MESSAGE_BYTES: usize = 4 << 10;
/// The longest `wasi:logging` context passed on whole.
pub const MAX_LOG_CONTEXT_BYTES: usize = 256;
/// How much one call may log (after cutting). Past it, messages are dropped until the next
/// call, counted in `switchyard_log_dropped_total`, with one warning: a guest
/// cannot flood the host's log or its disk.
pub const LOG_BYTES_PER_CALL: usize = 64 << 10;

/// What the platform imports of one instance act on.
pub struct Platform {
    pub service: String,
    pub version: String,
    pub store: Arc<dyn KeyValueStore>,
    /// The `[config]` table of the service's `service.toml`.
    pub config: Arc<BTreeMap<String, String>>,
    /// What the service may keep (`[storage]` of its `service.toml`).
    pub quota: Quota,
    /// Log bytes the call in progress may still write.
    log_budget: usize,
    /// Messages the call in progress could not log.
    log_dropped: u64,
    /// Whether the call in progress asked the store to change anything
    /// (whatever the answer): a call that did is not safe to repeat.
    wrote: bool,
    /// The trace the call in progress belongs to, if it is traced: its
    /// store calls are spans in it.
    trace: Option<Trace>,
}

impl Platform {
    pub fn new(
        service: String,
        version: String,
        store: Arc<dyn KeyValueStore>,
        config: Arc<BTreeMap<String, String>>,
        quota: Quota,
    ) -> Platform {
        Platform {
            service,
            version,
            store,
            config,
            quota,
            log_budget: LOG_BYTES_PER_CALL,
            log_dropped: 0,
            wrote: false,
            trace: None,
        }
    }

    /// A call begins, in `trace` if it is traced: its budgets are full again.
    pub fn begin_call(&mut self, trace: Option<Trace>) {
        self.log_budget = LOG_BYTES_PER_CALL;
        self.log_dropped = 0;
        self.wrote = false;
        self.trace = trace;
    }

    /// The call ended: nothing it was given stays with the instance.
    pub fn end_call(&mut self) {
        self.trace = None;
    }

    /// The trace the call in progress belongs to, if it is traced.
    pub fn trace(&self) -> Option<&Trace> {
        self.trace.as_ref()
    }

    /// Whether the call in progress (or the last) asked the store to change
    /// anything.
    pub fn wrote(&self) -> bool {
        self.wrote
    }
}

/// The view the generated import traits are implemented on: the platform
/// context and the instance's resource table (where buckets live).
pub struct PlatformView<'a> {
    platform: &'a mut Platform,
    table: &'a mut ResourceTable,
}

impl<'a> PlatformView<'a> {
    pub fn new(platform: &'a mut Platform, table: &'a mut ResourceTable) -> Self {
        PlatformView { platform, table }
    }

    fn namespace(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Namespace> {
        Ok(Namespace {
            service: self.platform.service.clone(),
            bucket: self.table.get(bucket)?.name.clone(),
        })
    }

    /// A span for `operation` on the store in `ns`, if the call is traced.
    fn span(&self, operation: &'static str, ns: &Namespace) -> Option<switchyard_trace::Span> {
        let platform = &*self.platform;
        let trace = platform.trace.as_ref()?;
        Some(trace.store_call(operation, &platform.service, &platform.version, &ns.bucket))
    }
}

/// The store's answer to `call`, as the guest gets it; a failure is marked
/// on `span`, which ends with this.
async fn traced<T>(
    span: Option<switchyard_trace::Span>,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, store::Error> {
    let answer = call.await;
    if let Err(e) = &answer {
        switchyard_trace::failed(span.as_ref(), e);
    }
    answer.map_err(guest_error)
}

struct HasPlatform;

impl HasData for HasPlatform {
    type Data<'a> = PlatformView<'a>;
}

/// The platform's imports, listed once: each interface's name as components
/// import it, and the bindings module whose host side this crate implements.
/// Both [`INTERFACES`] and [`add_to_linker`] come from this list, so adding
/// an import touches one place (and its `Host` impl below).
macro_rules! platform_imports {
    ($($name:literal => $module:ident),* $(,)?) => {
        /// The names of the interfaces this crate provides, as components import them.
        pub const INTERFACES: &[&str] = &[$($name),*];

        /// Define every platform import in `linker`.
        pub fn add_to_linker<T: Send + 'static>(
            linker: &mut Linker<T>,
            view: fn(&mut T) -> PlatformView<'_>,
        ) -> wasmtime::Result<()> {
            $($module::add_to_linker::<_, HasPlatform>(linker, view)?;)*
            Ok(())
        }
    };
}

platform_imports! {
    "wasi:keyvalue/store@0.2.0-draft" => store,
    "wasi:keyvalue/atomics@0.2.0-draft" => atomics,
    "switchyard:platform/keyvalue-cas@0.1.0" => keyvalue_cas,
    "wasi:config/store@0.2.0-rc.1" => config,
    "wasi:logging/logging@0.1.0-draft" => logging,
}

/// The handler interface every service must export.
pub const HANDLER_INTERFACE: &str = "switchyard:platform/handler@0.1.0";
/// The cheaper handler interface a service may export instead: the request
/// is lent to the guest, which reads what it needs.
pub const HANDLER2_INTERFACE: &str = "switchyard:platform/handler2@0.1.0";
/// The interface a service may export to finish or undo work a crash left
/// half-done (see `wit/platform/recovery.wit`).
pub const RECOVERY_INTERFACE: &str = "switchyard:platform/recovery@0.1.0";

/// Interfaces a service exports for the host to call, not for other services.
pub const ENTRY_POINTS: [&str; 3] = [HANDLER_INTERFACE, HANDLER2_INTERFACE, RECOVERY_INTERFACE];

fn guest_error(e: StoreError) -> store::Error {
    store::Error::Other(e.to_string())
}

// === impl wasi:keyvalue/store ===

impl store::Host for PlatformView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        if identifier.len() > MAX_BUCKET_NAME {
            return Ok(Err(store::Error::Other(format!(
                "bucket identifier is longer than {MAX_BUCKET_NAME} bytes"
            ))));
        }
        Ok(Ok(self.table.push(Bucket { name: identifier })?))
    }
}

impl store::HostBucket for PlatformView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let ns = self.namespace(&bucket)?;
        let span = self.span("get", &ns);
        Ok(traced(span, self.platform.store.get(&ns, &key)).await)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let ns = self.namespace(&bucket)?;
        self.platform.wrote = true;
        let span = self.span("set", &ns);
        Ok(traced(
            span,
            self.platform
                .store
                .set(&ns, &key, &value, &self.platform.quota),
        )
        .await)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let ns = self.namespace(&bucket)?;
        self.platform.wrote = true;
        let span = self.span("delete", &ns);
        Ok(traced(span, self.platform.store.delete(&ns, &key)).await)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let ns = self.namespace(&bucket)?;
        let span = self.span("exists", &ns);
        Ok(traced(span, self.platform.store.exists(&ns, &key)).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let ns = self.namespace(&bucket)?;
        let span = self.span("list-keys", &ns);
        let page = self.platform.store.list_keys(&ns, cursor.unwrap_or(0));
        Ok(traced(span, page).await.map(|page| store::KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

// === impl wasi:keyvalue/atomics ===

impl atomics::Host for PlatformView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, store::Error>> {
        let ns = self.namespace(&bucket)?;
        self.platform.wrote = true;
        let span = self.span("increment", &ns);
        Ok(traced(
            span,
            self.platform
                .store
                .increment(&ns, &key, delta, &self.platform.quota),
        )
        .await)
    }
}

// === impl switchyard:platform/keyvalue-cas ===

impl keyvalue_cas::Host for PlatformView<'_> {
    async fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let ns = self.namespace(&bucket)?;
        self.platform.wrote = true;
        let span = self.span("compare-and-swap", &ns);
        Ok(traced(
            span,
            self.platform.store.compare_and_swap(
                &ns,
                &key,
                expected.as_deref(),
                &new,
                &self.platform.quota,
            ),
        )
        .await)
    }
}

// === impl wasi:config/store ===

impl config::Host for PlatformView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, config::Error>> {
        Ok(Ok(self.platform.config.get(&key).cloned()))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config::Error>> {
        Ok(Ok(self
            .platform
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}

// === impl wasi:logging/logging ===

impl logging::Host for PlatformView<'_> {
    fn log(
        &mut self,
        level: logging::Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let platform = &mut *self.platform;
        let (service, version) = (&platform.service, &platform.version);
        let context = cut(context, MAX_LOG_CONTEXT_BYTES);
        let message = cut(message, MAX_LOG_MESSAGE_BYTES);
        let size = message.len() + context.len();
        if size > platform.log_budget {
            platform.log_budget = 0;
            platform.log_dropped += 1;
            switchyard_metrics::log_dropped(service, version);
            if platform.log_dropped == 1 {
                tracing::warn!(
                    service,
                    version,
                    "a call logged more than {LOG_BYTES_PER_CALL} bytes; \
                     its further messages are dropped"
                );
            }
            return Ok(());
        }
        platform.log_budget -= size;
        match level {
            logging::Level::Trace => tracing::trace!(service, version, context, "{message}"),
            logging::Level::Debug => tracing::debug!(service, version, context, "{message}"),
            logging::Level::Info => tracing::info!(service, version, context, "{message}"),
            logging::Level::Warn => tracing::warn!(service, version, context, "{message}"),
            logging::Level::Error | logging::Level::Critical => {
                tracing::error!(service, version, context, "{message}")
            }
        }
        Ok(())
    }
}

/// `text`, cut to at most `limit` bytes (on a character boundary) with a note
/// of how long it was.
pub fn cut(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let total = text.len();
    text.truncate(end);
    text.push_str(&format!("… ({total} bytes, cut)"));
    text
}
