//! What a guest's store holds ([`ServiceState`]): its WASI context, its
//! resources, its platform view, the limits it runs under and what the host
//! tracks about the call in progress. Plain data and the views wasmtime asks
//! for; the engine, linking and instances build on it.

use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::guest_output::CallOutput;
use crate::outbound::Outbound;

use switchyard_platform::{Platform, PlatformView};

/// What a service may use, per instance and per call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// An instance whose memory grew beyond this is replaced once its call
    /// ends, so that a burst of large calls does not keep its memory
    /// resident for good; `None`: [`DEFAULT_RETAINED_FACTOR`] times the
    /// instance's initial memory, at least [`DEFAULT_RETAINED_FLOOR`].
    pub retained_memory_bytes: Option<usize>,
    /// How long one call may run.
    pub deadline: Duration,
    /// How deep a chain of service-to-service calls may go.
    pub call_depth: u32,
}

/// Without a setting, an instance may keep this many times the memory it
/// started with between calls.
pub const DEFAULT_RETAINED_FACTOR: usize = 4;
/// Without a setting, an instance may always keep this much memory between
/// calls: small guests' ordinary calls never replace their instance.
pub const DEFAULT_RETAINED_FLOOR: usize = 16 << 20;

/// What a guest's store holds: its WASI context, its resources, its platform
/// view, and what the host tracks about the call in progress.
pub struct ServiceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) outbound: Outbound,
    /// What the call in progress may still write to stdout and stderr.
    pub(crate) output: CallOutput,
    pub(crate) platform: Platform,
    pub(crate) limits: Limits,
    /// When the call in progress must end.
    pub(crate) deadline: Option<Instant>,
    /// How many service-to-service calls deep the call in progress is.
    pub(crate) depth: u32,
    pub(crate) timed_out: bool,
    pub(crate) out_of_memory: bool,
    /// The largest linear memory the instance has grown to.
    pub(crate) memory_size: usize,
    /// Its linear memory once instantiated.
    pub(crate) initial_memory: usize,
}

impl ResourceLimiter for ServiceState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.limits.memory_bytes;
        self.out_of_memory |= !allowed;
        if allowed {
            self.memory_size = self.memory_size.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for ServiceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ServiceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

pub(crate) fn platform_view(state: &mut ServiceState) -> PlatformView<'_> {
    PlatformView::new(&mut state.platform, &mut state.table)
}
