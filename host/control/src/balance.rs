//! Picking an instance for each call.
//!
//! Each version has an [`InstancePool`] of up to `max` instances (slots),
//! created from the version's `InstancePre` by wasmtime's pooling allocator,
//! `min` of them ahead of traffic. An instance serves one call at a time, and
//! is handed out as a [`Lease`]. The service's strategy picks the slot:
//!
//! - `round-robin`: the next instance in turn;
//! - `random`: any instance, uniformly;
//! - `least-outstanding`: the instance with the fewest calls running or waiting;
//! - `consistent-hash`: the slot a request key maps to, by rendezvous
//!   (highest-random-weight) hashing (Thaler & Ravishankar, 1998): each key
//!   goes to the slot with the highest hash of (key, slot), so adding or
//!   removing a slot moves only the keys of that slot, about 1/N of them.
//!
//! When the chosen instance is busy, the first three take another idle one (or
//! create one, up to `max`); consistent hashing keeps its affinity and waits.
//! Waiting is bounded in time (`queue_timeout`) and in count; past either, the
//! caller gets [`AcquireError::Busy`]. A lease goes back to its slot only if its
//! last call finished cleanly and the service reuses instances (`pooled`
//! isolation); an instance that trapped, timed out or was abandoned halfway is
//! dropped, and its slot refilled on the next call. [`crate::links`] routes
//! service-to-service calls through the same pools.
//!
//! The pool knows instances only through [`Instances`]: how one is made and
//! what it says about its last call. [`Components`] makes a version's
//! wasmtime instances; the pool's tests use instances that are plain data.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::Deserialize;
use tokio::sync::{Mutex, OwnedMutexGuard};
use wasmtime::component::Val;

use switchyard_platform::Platform;
use switchyard_runtime::{CallError, Limits, Linked, LiveInstance, Runtime};
use switchyard_trace::Trace;

/// Builds the [`Platform`] context for each new instance of one version.
pub type PlatformFactory = Box<dyn Fn() -> Platform + Send + Sync>;

/// Whether instances are reused across requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Instances serve one call after another: fast, and a guest may keep
    /// caches in memory between calls (never data: that belongs in the store).
    #[default]
    Pooled,
    /// A fresh instance for every call: no state can leak from one request to
    /// the next, at the cost of an instantiation per call.
    PerRequest,
}

/// How a pool picks the instance for a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    RoundRobin,
    Random,
    LeastOutstanding,
    ConsistentHash,
}

/// How one version's pool behaves.
#[derive(Debug, Clone, Copy)]
pub struct PoolPolicy {
    pub isolation: Isolation,
    pub strategy: Strategy,
    pub min: usize,
    pub max: usize,
    pub queue_timeout: Duration,
    pub limits: Limits,
}

/// How many calls may wait per instance before new ones are refused outright:
/// enough for a burst of a few dozen clients per instance (the queue timeout
/// bounds how long they wait), few enough that waiting calls, each holding
/// its request, cannot pile up without end.
pub const WAITERS_PER_INSTANCE: usize = 32;

/// Why no instance could be had.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// All instances stayed busy for the queue timeout.
    #[error("all {instances} instances stayed busy for {} ms", waited.as_millis())]
    Busy { instances: usize, waited: Duration },
    /// All instances are busy and as many calls as may wait already do.
    #[error("all {0} instances are busy and {1} calls are waiting already")]
    QueueFull(usize, usize),
    #[error("cannot instantiate: {0:#}")]
    Instantiate(anyhow::Error),
}

/// How a pool makes its instances, and what it asks of one after a call.
pub trait Instances: Send + Sync + 'static {
    type Instance: Send + 'static;
    /// A fresh instance.
    fn instantiate(&self) -> impl Future<Output = Result<Self::Instance>> + Send;
    /// Whether its last call asked the store to change anything.
    fn wrote_during_call(instance: &Self::Instance) -> bool;
    /// Whether it is better replaced than kept for the next call.
    fn grew_too_large(instance: &Self::Instance) -> bool;
}

/// A version's instances: its linked component, started with a fresh
/// platform context and the version's limits.
pub struct Components {
    runtime: Arc<Runtime>,
    linked: Linked,
    platform: PlatformFactory,
    limits: Limits,
}

impl Instances for Components {
    type Instance = LiveInstance;

    fn instantiate(&self) -> impl Future<Output = Result<LiveInstance>> + Send {
        self.runtime
            .instantiate(&self.linked, (self.platform)(), self.limits)
    }

    fn wrote_during_call(instance: &LiveInstance) -> bool {
        instance.wrote_during_call()
    }

    fn grew_too_large(instance: &LiveInstance) -> bool {
        instance.grew_too_large()
    }
}

struct Slot<T> {
    instance: Arc<Mutex<Option<T>>>,
    /// Calls running on this slot or waiting for it.
    outstanding: AtomicUsize,
    populated: AtomicBool,
}

/// The instances of one version.
pub struct InstancePool<I: Instances = Components> {
    instances: I,
    policy: PoolPolicy,
    slots: Vec<Slot<I::Instance>>,
    cursor: AtomicUsize,
    waiting: AtomicUsize,
    /// Instances alive, idle or leased.
    live: AtomicUsize,
    /// Instances leased out now.
    leased: AtomicUsize,
    /// Set while the version takes no traffic: instances coming back are
    /// dropped instead of kept, so a retired version drains to nothing.
    retired: AtomicBool,
}

impl InstancePool<Components> {
    pub fn new(
        runtime: Arc<Runtime>,
        linked: Linked,
        platform: PlatformFactory,
        policy: PoolPolicy,
    ) -> InstancePool {
        let components = Components {
            runtime,
            linked,
            platform,
            limits: policy.limits,
        };
        InstancePool::of(components, policy)
    }
}

impl<I: Instances> InstancePool<I> {
    /// A pool of `instances`, none made yet.
    pub fn of(instances: I, policy: PoolPolicy) -> InstancePool<I> {
        let slots = (0..policy.max.max(1))
            .map(|_| Slot {
                instance: Arc::new(Mutex::new(None)),
                outstanding: AtomicUsize::new(0),
                populated: AtomicBool::new(false),
            })
            .collect();
        InstancePool {
            instances,
            policy,
            slots,
            cursor: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            leased: AtomicUsize::new(0),
            retired: AtomicBool::new(true),
        }
    }

    pub fn policy(&self) -> &PoolPolicy {
        &self.policy
    }

    /// Instances alive now, idle or serving.
    pub fn instances(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Instances serving a call now.
    pub fn leased(&self) -> usize {
        self.leased.load(Ordering::Relaxed)
    }

    /// Calls waiting for an instance now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The version takes traffic (again): keep instances for reuse.
    pub fn revive(&self) {
        self.retired.store(false, Ordering::Relaxed);
    }

    /// The version takes no more new traffic: drop the idle instances now and
    /// the leased ones as their calls finish.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        for slot in &self.slots {
            if let Ok(mut idle) = slot.instance.try_lock()
                && idle.take().is_some()
            {
                slot.populated.store(false, Ordering::Relaxed);
                self.live.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Start one instance and drop it: whether this version can start at all
    /// (its memory fits its limit, its start-up code runs), before it may
    /// take traffic.
    pub async fn try_start(&self) -> Result<()> {
        let instance = self.instances.instantiate().await?;
        drop(instance);
        Ok(())
    }

    /// Fill the first `min` slots ahead of traffic, so that the first requests
    /// do not pay for instantiation.
    pub async fn warm(self: &Arc<Self>) -> Result<()> {
        if self.policy.isolation == Isolation::PerRequest {
            return Ok(());
        }
        for index in 0..self.policy.min.min(self.slots.len()) {
            let guard = self.slots[index].instance.clone().lock_owned().await;
            let lease = self.lease(index, guard).await?;
            drop(lease);
        }
        Ok(())
    }

    /// An instance for one call; `key` is the request's hash key, if any.
    pub async fn acquire(self: &Arc<Self>, key: Option<u64>) -> Result<Lease<I>, AcquireError> {
        let chosen = self.choose(key);
        let affine = self.policy.strategy == Strategy::ConsistentHash && key.is_some();
        if let Ok(guard) = self.slots[chosen].instance.clone().try_lock_owned() {
            return self
                .lease(chosen, guard)
                .await
                .map_err(AcquireError::Instantiate);
        }
        if !affine {
            // Busy: any idle instance will do, else a new one in an empty slot.
            let idle =
                (0..self.slots.len()).filter(|&i| self.slots[i].populated.load(Ordering::Relaxed));
            let empty =
                (0..self.slots.len()).filter(|&i| !self.slots[i].populated.load(Ordering::Relaxed));
            for index in idle.chain(empty) {
                if let Ok(guard) = self.slots[index].instance.clone().try_lock_owned() {
                    return self
                        .lease(index, guard)
                        .await
                        .map_err(AcquireError::Instantiate);
                }
            }
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.slots.len() * WAITERS_PER_INSTANCE {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(AcquireError::QueueFull(
                self.slots.len(),
                self.slots.len() * WAITERS_PER_INSTANCE,
            ));
        }
        let slot = &self.slots[chosen];
        slot.outstanding.fetch_add(1, Ordering::Relaxed);
        let waited = tokio::time::timeout(
            self.policy.queue_timeout,
            slot.instance.clone().lock_owned(),
        )
        .await;
        slot.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match waited {
            Ok(guard) => self
                .lease(chosen, guard)
                .await
                .map_err(AcquireError::Instantiate),
            Err(_) => Err(AcquireError::Busy {
                instances: self.slots.len(),
                waited: self.policy.queue_timeout,
            }),
        }
    }

    /// The slot the strategy picks.
    fn choose(&self, key: Option<u64>) -> usize {
        let n = self.slots.len();
        if let (Strategy::ConsistentHash, Some(key)) = (self.policy.strategy, key) {
            return rendezvous(key, n);
        }
        // Among the populated slots; the first when none is.
        let populated = || (0..n).filter(|&i| self.slots[i].populated.load(Ordering::Relaxed));
        let count = populated().count();
        if count == 0 {
            return 0;
        }
        match self.policy.strategy {
            Strategy::LeastOutstanding => populated()
                .min_by_key(|&i| self.slots[i].outstanding.load(Ordering::Relaxed))
                .unwrap_or(0),
            Strategy::Random => populated().nth(fastrand::usize(..count)).unwrap_or(0),
            _ => populated()
                .nth(self.cursor.fetch_add(1, Ordering::Relaxed) % count)
                .unwrap_or(0),
        }
    }

    async fn lease(
        self: &Arc<Self>,
        index: usize,
        mut guard: OwnedMutexGuard<Option<I::Instance>>,
    ) -> Result<Lease<I>> {
        let slot = &self.slots[index];
        slot.outstanding.fetch_add(1, Ordering::Relaxed);
        if guard.is_none() {
            let created = self.instances.instantiate().await;
            match created {
                Ok(instance) => {
                    *guard = Some(instance);
                    slot.populated.store(true, Ordering::Relaxed);
                    self.live.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    slot.outstanding.fetch_sub(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        self.leased.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            pool: self.clone(),
            index,
            guard: Some(guard),
            reusable: true,
            wrote: None,
        })
    }
}

/// The slot of `n` that `key` maps to: the one with the highest hash of
/// (key, slot). Removing a slot moves only its own keys; adding one takes
/// about 1/(n+1) of the keys, from every other slot alike.
pub fn rendezvous(key: u64, n: usize) -> usize {
    (0..n)
        .max_by_key(|&slot| {
            let mut h = DefaultHasher::new();
            (key, slot).hash(&mut h);
            h.finish()
        })
        .unwrap_or(0)
}

/// Where a consistent-hash service finds a request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `header:<name>`: the value of a request header.
    Header(String),
    /// `path:<n>`: the n-th segment (from 1) of the path below the service.
    PathSegment(usize),
}

/// Why a `hash_key` setting is not one.
#[derive(Debug, thiserror::Error)]
pub enum HashKeyError {
    #[error("hash_key {text:?}: the path segment must be a number from 1")]
    BadSegment { text: String },
    #[error("hash_key {text:?} must be \"header:<name>\" or \"path:<n>\"")]
    Unknown { text: String },
}

impl HashKey {
    pub fn parse(text: &str) -> Result<HashKey, HashKeyError> {
        match text.split_once(':') {
            Some(("header", name)) if !name.is_empty() => {
                Ok(HashKey::Header(name.to_ascii_lowercase()))
            }
            Some(("path", n)) => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(HashKey::PathSegment(n)),
                _ => Err(HashKeyError::BadSegment {
                    text: text.to_string(),
                }),
            },
            _ => Err(HashKeyError::Unknown {
                text: text.to_string(),
            }),
        }
    }

    /// The hash of the key of a request for `path` (below the service),
    /// whose header of a (lower-case) name `header` gives, if it has one.
    pub fn of<'a>(
        &self,
        path: &'a str,
        header: impl FnOnce(&str) -> Option<&'a str>,
    ) -> Option<u64> {
        let value = match self {
            HashKey::Header(name) => header(name),
            HashKey::PathSegment(n) => path.split('/').filter(|s| !s.is_empty()).nth(n - 1),
        }?;
        let mut h = DefaultHasher::new();
        value.hash(&mut h);
        Some(h.finish())
    }
}

/// One instance, leased for one call.
pub struct Lease<I: Instances = Components> {
    pool: Arc<InstancePool<I>>,
    index: usize,
    guard: Option<OwnedMutexGuard<Option<I::Instance>>>,
    /// False from the start of a call until it finishes cleanly.
    reusable: bool,
    /// Whether its last call asked the store to change anything; shared,
    /// so that whoever hands the lease on can still ask. Made only when
    /// asked for (see [`Lease::writes`]): most calls are never retried.
    wrote: Option<Arc<AtomicBool>>,
}

impl<I: Instances> Lease<I> {
    /// Whether the call made on this lease asked the store to change
    /// anything, readable after the lease is gone: a failed call that did
    /// is not safe to repeat.
    pub fn writes(&mut self) -> Arc<AtomicBool> {
        self.wrote.get_or_insert_default().clone()
    }

    /// Which slot of its pool this instance sits in (reported to clients).
    pub fn slot(&self) -> usize {
        self.index
    }

    fn instance(&mut self) -> &mut I::Instance {
        self.guard
            .as_mut()
            .and_then(|g| g.as_mut())
            .expect("a lease holds its instance until dropped")
    }

    /// Make one call on the leased instance, whatever its kind (the
    /// gateway's executors: `|instance| instance.handle_http(..)`, ...):
    /// `call` has the instance for the call's length. The instance serves
    /// again only if the call ended well and its memory did not grow too
    /// large.
    pub async fn run<T>(
        &mut self,
        call: impl AsyncFnOnce(&mut I::Instance) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        self.reusable = false;
        let outcome = call(self.instance()).await;
        let wrote = I::wrote_during_call(self.instance());
        if let Some(flag) = &self.wrote {
            flag.store(wrote, Ordering::Relaxed);
        }
        let answer = outcome?;
        self.ended_well();
        Ok(answer)
    }

    /// The call ended cleanly: the instance may serve again, unless its
    /// memory grew too large (then a fresh one takes its place).
    fn ended_well(&mut self) {
        self.reusable = !I::grew_too_large(self.instance());
        if !self.reusable {
            tracing::debug!("replacing an instance whose memory grew too large");
        }
    }
}

impl Lease<Components> {
    pub async fn call_export(
        &mut self,
        depth: u32,
        trace: Option<Trace>,
        interface: &str,
        function: &str,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), CallError> {
        let Some(index) = self
            .pool
            .instances
            .linked
            .exports()
            .get(interface, function)
        else {
            return Err(CallError::Trap(
                anyhow!("{interface}#{function} is not exported").into(),
            ));
        };
        self.run(async |instance| {
            instance
                .call_export(depth, trace, &index, params, results)
                .await
        })
        .await
    }
}

impl<I: Instances> Drop for Lease<I> {
    fn drop(&mut self) {
        let pool = &self.pool;
        let slot = &pool.slots[self.index];
        let keep = self.reusable
            && pool.policy.isolation == Isolation::Pooled
            && !pool.retired.load(Ordering::Relaxed);
        if let Some(mut guard) = self.guard.take()
            && !keep
            && guard.take().is_some()
        {
            slot.populated.store(false, Ordering::Relaxed);
            pool.live.fetch_sub(1, Ordering::Relaxed);
        }
        slot.outstanding.fetch_sub(1, Ordering::Relaxed);
        pool.leased.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instances that are plain data: a number each, in the order made.
    #[derive(Default)]
    struct Fake {
        made: AtomicUsize,
        /// While set, instantiating fails.
        broken: AtomicBool,
    }

    struct FakeInstance {
        id: usize,
        wrote: bool,
        grew: bool,
    }

    impl Instances for Fake {
        type Instance = FakeInstance;

        async fn instantiate(&self) -> Result<FakeInstance> {
            if self.broken.load(Ordering::Relaxed) {
                anyhow::bail!("its start-up trapped");
            }
            let id = self.made.fetch_add(1, Ordering::Relaxed);
            Ok(FakeInstance {
                id,
                wrote: false,
                grew: false,
            })
        }

        fn wrote_during_call(instance: &FakeInstance) -> bool {
            instance.wrote
        }

        fn grew_too_large(instance: &FakeInstance) -> bool {
            instance.grew
        }
    }

    fn pool(max: usize, isolation: Isolation) -> Arc<InstancePool<Fake>> {
        let policy = PoolPolicy {
            isolation,
            strategy: Strategy::RoundRobin,
            min: 1,
            max,
            queue_timeout: Duration::from_millis(50),
            // Not the pool's business: its instances are made elsewhere.
            limits: Limits {
                memory_bytes: 1 << 20,
                retained_memory_bytes: None,
                deadline: Duration::from_secs(1),
                call_depth: 1,
            },
        };
        let pool = InstancePool::of(Fake::default(), policy);
        pool.revive();
        Arc::new(pool)
    }

    /// The id of the instance a call on a fresh lease runs on.
    async fn serve(pool: &Arc<InstancePool<Fake>>) -> usize {
        let mut lease = pool.acquire(None).await.unwrap();
        lease.run(async |i| Ok(i.id)).await.unwrap()
    }

    #[tokio::test]
    async fn an_instance_serves_call_after_call_until_a_call_fails() {
        let pool = pool(1, Isolation::Pooled);
        pool.warm().await.unwrap();
        assert_eq!(pool.instances(), 1);
        assert_eq!(serve(&pool).await, 0);
        assert_eq!(serve(&pool).await, 0, "reused");

        let mut lease = pool.acquire(None).await.unwrap();
        let failed = lease
            .run(async |_| Err::<(), _>(CallError::TooMuchData))
            .await;
        assert!(failed.is_err());
        assert_eq!(pool.leased(), 1);
        drop(lease);
        assert_eq!((pool.instances(), pool.leased()), (0, 0), "dropped");
        assert_eq!(serve(&pool).await, 1, "a fresh one took its place");
    }

    #[tokio::test]
    async fn an_instance_that_grew_too_large_or_was_abandoned_is_replaced() {
        let pool = pool(1, Isolation::Pooled);
        let mut lease = pool.acquire(None).await.unwrap();
        lease
            .run(async |i| {
                i.grew = true;
                Ok(())
            })
            .await
            .unwrap();
        drop(lease);
        assert_eq!(serve(&pool).await, 1);
        // A call abandoned halfway (its future dropped) leaves nothing reusable.
        let mut lease = pool.acquire(None).await.unwrap();
        let call = lease.run(async |_| std::future::pending::<Result<(), CallError>>().await);
        assert!(
            tokio::time::timeout(Duration::from_millis(5), call)
                .await
                .is_err()
        );
        drop(lease);
        assert_eq!(serve(&pool).await, 2);
    }

    #[tokio::test]
    async fn per_request_isolation_never_reuses_an_instance() {
        let pool = pool(2, Isolation::PerRequest);
        let ids = [serve(&pool).await, serve(&pool).await, serve(&pool).await];
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(pool.instances(), 0);
    }

    #[tokio::test]
    async fn a_full_pool_makes_callers_wait_then_answers_busy() {
        let pool = pool(2, Isolation::Pooled);
        let first = pool.acquire(None).await.unwrap();
        let second = pool.acquire(None).await.unwrap();
        assert_ne!(first.slot(), second.slot(), "a busy slot sends to another");
        assert_eq!(pool.instances(), 2);
        let started = tokio::time::Instant::now();
        match pool.acquire(None).await {
            Err(AcquireError::Busy { instances: 2, .. }) => {}
            other => panic!("expected busy, got {:?}", other.map(|l| l.slot())),
        }
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited");
        // One returning lets a waiting caller in.
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire(None).await.map(|l| l.slot()) })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let freed = first.slot();
        drop(first);
        assert_eq!(waiting.await.unwrap().unwrap(), freed);
        drop(second);
    }

    #[tokio::test]
    async fn a_failed_start_is_the_callers_error_and_leaves_the_slot_empty() {
        let pool = pool(1, Isolation::Pooled);
        pool.instances.broken.store(true, Ordering::Relaxed);
        assert!(pool.try_start().await.is_err());
        match pool.acquire(None).await {
            Err(AcquireError::Instantiate(e)) => assert!(e.to_string().contains("trapped")),
            other => panic!(
                "expected a start failure, got {:?}",
                other.map(|l| l.slot())
            ),
        }
        assert_eq!((pool.instances(), pool.leased()), (0, 0));
        pool.instances.broken.store(false, Ordering::Relaxed);
        assert_eq!(serve(&pool).await, 0, "the slot fills once it can");
    }

    #[tokio::test]
    async fn a_retired_pool_drops_idle_instances_now_and_leased_ones_on_return() {
        let pool = pool(2, Isolation::Pooled);
        let leased = pool.acquire(None).await.unwrap();
        let idle = pool.acquire(None).await.unwrap();
        drop(idle);
        assert_eq!(pool.instances(), 2);
        pool.retire();
        assert_eq!(pool.instances(), 1, "the idle one went at once");
        drop(leased);
        assert_eq!(pool.instances(), 0, "the leased one on its return");
    }

    #[tokio::test]
    async fn whether_a_call_wrote_is_readable_after_the_lease_is_gone() {
        let pool = pool(1, Isolation::Pooled);
        let mut lease = pool.acquire(None).await.unwrap();
        let wrote = lease.writes();
        lease
            .run(async |i| {
                i.wrote = true;
                Ok(())
            })
            .await
            .unwrap();
        drop(lease);
        assert!(wrote.load(Ordering::Relaxed));
    }

    #[test]
    fn adding_an_instance_moves_about_one_key_in_n_plus_one() {
        let keys = 20_000u64;
        for n in [2usize, 4, 8] {
            let moved = (0..keys)
                .filter(|&k| rendezvous(k, n) != rendezvous(k, n + 1))
                .count();
            let expected = keys as f64 / (n + 1) as f64;
            let share = moved as f64 / expected;
            assert!(
                (0.9..1.1).contains(&share),
                "{n} → {}: {moved} keys moved, expected ~{expected}",
                n + 1
            );
            // And every moved key moved to the new instance.
            assert!(
                (0..keys)
                    .all(|k| rendezvous(k, n) == rendezvous(k, n + 1) || rendezvous(k, n + 1) == n)
            );
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let mut counts = [0usize; 4];
        for key in 0..40_000u64 {
            counts[rendezvous(key, 4)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }
}
