//! The engine: wasmtime configured once for every service (the pooling
//! allocator, epoch interruption and its ticker, the profiler), the base
//! linker with the platform and WASI imports, and compiling a file into a
//! component. It never decides what a component may call: that is
//! [`crate::link`]'s.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

use crate::incoming;
use crate::state::{ServiceState, platform_view};

use switchyard_platform::{self as platform};

/// The most linear memory any instance may be given (a service's own cap,
/// `limits.memory_mib`, is at most this): the size of one pooled memory slot.
pub const MEMORY_CEILING: usize = 256 << 20;

/// Instances the pooling allocator has room for by default, across all
/// services and versions (`--pool-instances`): with the default of at most 4
/// per version, ample for dozens of services, while the virtual address space
/// it reserves stays modest.
pub const POOLED_INSTANCES: u32 = 256;

/// How often the epoch advances. Every tick, a running guest yields to the async
/// executor, so a long computation delays other requests by at most this much
/// per guest ahead of them on a worker (a yield costs about a microsecond;
/// 10 ms let four computing guests push other services' p99 to 25 ms, 2 ms
/// keeps it near 6 ms: see BENCHMARKS.md, fairness). Deadlines are checked at
/// each tick too.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// How much of a recycled memory (and table) is reset in place rather than
/// handed back to the kernel. Handing pages back (`madvise`) flushes the TLB
/// of every core running the host, with an interrupt to each; with a fresh
/// instance per request it was the largest cost of a request (`make bench`,
/// hello per request: over 50 µs of its ~150 µs, in the kernel's
/// `smp_call_function_many_cond`). With `PAGEMAP_SCAN` (Linux 6.7+) only the
/// pages a guest dirtied are reset, up to this much; a guest that dirties
/// more has the rest handed back as before. At most this much stays resident
/// per memory slot that has been used.
const KEEP_RESIDENT: usize = 256 << 10;

/// The engine and the linker every component starts from.
///
/// Instances come from wasmtime's pooling allocator: memory, tables and
/// stacks are reserved once up front and recycled, so creating an instance
/// costs tens of microseconds (see BENCHMARKS.md).
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) base_linker: Linker<ServiceState>,
}

impl Runtime {
    /// An engine with room for `instances` instances at once. With
    /// `perf_map`, the names of the guests' compiled functions are written to
    /// `/tmp/perf-<pid>.map`, where `perf` finds them: a profile of the host
    /// then names guest code too.
    pub fn new(instances: u32, perf_map: bool) -> Result<Runtime> {
        let mut pooling = PoolingAllocationConfig::new();
        // Per component instance, room for what the guest toolchains build:
        // core instances are one per core module (Rust 3, QuickJS 8,
        // componentize-py 14), memories and tables at most 2 each. Unused
        // room costs nothing for core instances, address space only for the rest.
        pooling
            .total_component_instances(instances)
            .total_core_instances(instances * 16)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memory_size(MEMORY_CEILING)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        if perf_map {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let mut base_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut base_linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut base_linker)?;
        platform::add_to_linker(&mut base_linker, platform_view)?;
        incoming::add_to_linker(&mut base_linker, |state| &mut state.table)?;
        Ok(Runtime {
            engine,
            base_linker,
        })
    }

    /// Compile `bytes`, refusing anything that is not a component.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component> {
        if bytes.is_empty() {
            bail!("the file is empty");
        }
        if !bytes.starts_with(b"\0asm") {
            bail!("not a WebAssembly file (no \\0asm header)");
        }
        if is_core_module(bytes) {
            bail!("a core WebAssembly module, not a component (build for wasm32-wasip2)");
        }
        Component::new(&self.engine, bytes).map_err(|e| {
            let detail = format!("{e:#}");
            if detail.contains("requires the component model async feature") {
                anyhow!(
                    "built for the component-model async ABI ({detail}), which this host does \
                     not run: build it for the synchronous ABI (componentize-qjs --sync, say)"
                )
            } else {
                anyhow!("not a valid component: {detail}")
            }
        })
    }
}

/// A core module's header is `\0asm` + version 1 + layer 0; a component's layer is 1.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(&[1, 0, 0, 0])
}
