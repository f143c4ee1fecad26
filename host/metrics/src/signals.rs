//! A version's golden signals over the last minute, kept in the host for the
//! dashboard and `GET /admin/stats`: how many calls it answered, how many
//! failed on its side, and their latencies.
//!
//! It owns the rolling window and its arithmetic (rate, success rate,
//! quantiles); it never decides what counts as a failure (its callers say)
//! and never exports (the admin API shows a [`Summary`]).
//!
//! Recording takes no lock: the window is 60 one-second slots of atomic
//! counters, the slot of second `s` at `s % 60`. The first call of a new
//! second claims its slot and clears it; a call recorded in that slot by
//! another thread in the same instant may be cleared with it. The window is
//! for people reading a dashboard, so that loss of a count at a second's
//! edge is accepted in exchange for no lock on the request path.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How far back the window reaches, in seconds.
pub const WINDOW_SECONDS: u64 = 60;

/// Latency buckets: four per power of two of microseconds (each 19–25%
/// wide), up to 2^28 µs (4.5 minutes, beyond any deadline).
const BUCKETS: usize = 28 * 4;

/// One version's calls over the last [`WINDOW_SECONDS`].
pub struct Signals {
    slots: Box<[Slot]>,
    /// When it started counting: a version younger than the window has its
    /// rate taken over its own age.
    born: Instant,
}

struct Slot {
    /// The second (see [`second_now`]) it counts; 0 when it never counted.
    second: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    latency: [AtomicU32; BUCKETS],
}

/// A window's calls, summed: what the dashboard shows of a version, or of a
/// service (its versions merged).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub calls: u64,
    /// Calls that failed on the service's side (a 5xx, a trap, a timeout);
    /// a client's 4xx is the client's failure, not the service's.
    pub failures: u64,
    /// Seconds the window covers: the window, or less for a younger version.
    pub seconds: f64,
    latency: Vec<u64>,
}

impl Default for Signals {
    fn default() -> Signals {
        Signals::new()
    }
}

impl Signals {
    pub fn new() -> Signals {
        let slots = (0..WINDOW_SECONDS)
            .map(|_| Slot {
                second: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                latency: std::array::from_fn(|_| AtomicU32::new(0)),
            })
            .collect();
        Signals {
            slots,
            born: Instant::now(),
        }
    }

    /// A call answered now after `elapsed`; `failed` when it failed on the
    /// service's side.
    pub fn record(&self, failed: bool, elapsed: Duration) {
        self.record_at(second_now(), failed, elapsed);
    }

    fn record_at(&self, second: u64, failed: bool, elapsed: Duration) {
        let slot = &self.slots[(second % WINDOW_SECONDS) as usize];
        let counted = slot.second.load(Ordering::Acquire);
        if counted != second
            && slot
                .second
                .compare_exchange(counted, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This call claimed the slot for its second: clear the old counts.
            slot.calls.store(0, Ordering::Relaxed);
            slot.failures.store(0, Ordering::Relaxed);
            for bucket in &slot.latency {
                bucket.store(0, Ordering::Relaxed);
            }
        }
        slot.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            slot.failures.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The last minute's calls.
    pub fn summary(&self) -> Summary {
        let age = self.born.elapsed().as_secs_f64();
        self.summary_at(second_now(), age)
    }

    fn summary_at(&self, now: u64, age_seconds: f64) -> Summary {
        let mut summary = Summary::empty();
        summary.seconds = age_seconds.clamp(1.0, WINDOW_SECONDS as f64);
        for slot in self.slots.iter() {
            let second = slot.second.load(Ordering::Acquire);
            if second == 0 || second > now || now - second >= WINDOW_SECONDS {
                continue;
            }
            summary.calls += slot.calls.load(Ordering::Relaxed);
            summary.failures += slot.failures.load(Ordering::Relaxed);
            for (sum, bucket) in summary.latency.iter_mut().zip(&slot.latency) {
                *sum += u64::from(bucket.load(Ordering::Relaxed));
            }
        }
        summary
    }
}

impl Summary {
    /// No calls, over no time.
    pub fn empty() -> Summary {
        Summary {
            calls: 0,
            failures: 0,
            seconds: 0.0,
            latency: vec![0; BUCKETS],
        }
    }

    /// Calls per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.calls as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The share of calls that did not fail on the service's side; none
    /// without calls.
    pub fn success_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| (self.calls - self.failures) as f64 / self.calls as f64)
    }

    /// The latency under which a share `q` (0 to 1) of the calls answered, to
    /// the upper edge of its bucket; none without calls.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(upper_edge(index));
            }
        }
        Some(upper_edge(BUCKETS - 1))
    }

    /// Add `other`'s calls (another version of the same service). The
    /// seconds covered are the longer of the two.
    pub fn merge(&mut self, other: &Summary) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.seconds = self.seconds.max(other.seconds);
        for (sum, count) in self.latency.iter_mut().zip(&other.latency) {
            *sum += count;
        }
    }
}

/// Whole seconds since the process first asked, plus one (0 means "never").
fn second_now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_secs() + 1
}

/// The bucket of a latency: `4 × log2(µs)` plus the next two bits, so that
/// finding it costs a few integer operations.
fn bucket_of(elapsed: Duration) -> usize {
    let micros = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let exponent = 63 - micros.leading_zeros();
    let quarter = if exponent >= 2 {
        (micros >> (exponent - 2)) & 3
    } else {
        (micros << (2 - exponent)) & 3
    };
    ((exponent as usize) * 4 + quarter as usize).min(BUCKETS - 1)
}

/// The largest latency bucket `index` holds.
fn upper_edge(index: usize) -> Duration {
    let (exponent, quarter) = (index / 4, index % 4);
    let micros = f64::powi(2.0, exponent as i32) * (5 + quarter) as f64 / 4.0;
    Duration::from_secs_f64(micros / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_latency_falls_in_a_bucket_whose_upper_edge_is_at_most_a_quarter_above_it() {
        for micros in [1, 2, 3, 5, 7, 100, 999, 1_000, 1_500, 12_345, 2_000_000] {
            let latency = Duration::from_micros(micros);
            let edge = upper_edge(bucket_of(latency));
            assert!(edge >= latency, "{micros} µs → {edge:?}");
            assert!(
                edge.as_secs_f64() <= latency.as_secs_f64() * 1.25 + 1e-6,
                "{micros} µs → {edge:?}"
            );
        }
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        assert_eq!(
            bucket_of(Duration::ZERO),
            bucket_of(Duration::from_micros(1))
        );
    }

    #[test]
    fn rates_success_and_quantiles_come_from_the_last_minute() {
        let signals = Signals::new();
        for i in 0..90 {
            signals.record_at(100, false, ms(10));
            if i % 10 == 0 {
                signals.record_at(101, true, ms(900));
            }
        }
        let summary = signals.summary_at(101, 3600.0);
        assert_eq!((summary.calls, summary.failures), (99, 9));
        assert_eq!(summary.seconds, 60.0);
        assert!((summary.rate() - 99.0 / 60.0).abs() < 1e-9);
        assert!((summary.success_rate().unwrap() - 90.0 / 99.0).abs() < 1e-9);
        let p50 = summary.quantile(0.5).unwrap();
        assert!(p50 >= ms(10) && p50 <= ms(13), "{p50:?}");
        let p99 = summary.quantile(0.99).unwrap();
        assert!(p99 >= ms(900) && p99 <= ms(1125), "{p99:?}");
    }

    #[test]
    fn calls_older_than_the_window_are_forgotten_and_their_slot_reused() {
        let signals = Signals::new();
        signals.record_at(5, true, ms(1));
        assert_eq!(signals.summary_at(64, 3600.0).calls, 1);
        assert_eq!(signals.summary_at(65, 3600.0).calls, 0);
        // Second 65 lands in second 5's slot, which starts again from zero.
        signals.record_at(65, false, ms(1));
        let summary = signals.summary_at(65, 3600.0);
        assert_eq!((summary.calls, summary.failures), (1, 0));
    }

    #[test]
    fn a_young_version_has_its_rate_over_its_age_and_an_idle_one_none() {
        let signals = Signals::new();
        let idle = signals.summary_at(10, 5.0);
        assert_eq!(
            (idle.rate(), idle.success_rate(), idle.quantile(0.5)),
            (0.0, None, None)
        );
        for _ in 0..20 {
            signals.record_at(10, false, ms(2));
        }
        assert_eq!(signals.summary_at(10, 5.0).rate(), 4.0);
        assert_eq!(signals.summary_at(10, 0.2).rate(), 20.0);
    }

    #[test]
    fn versions_merge_into_their_service() {
        let (old, new) = (Signals::new(), Signals::new());
        for _ in 0..30 {
            old.record_at(50, false, ms(1));
        }
        for _ in 0..10 {
            new.record_at(50, true, ms(100));
        }
        let mut service = old.summary_at(50, 60.0);
        service.merge(&new.summary_at(50, 10.0));
        assert_eq!(
            (service.calls, service.failures, service.seconds),
            (40, 10, 60.0)
        );
        assert!(service.quantile(0.5).unwrap() < ms(2));
        assert!(service.quantile(0.99).unwrap() >= ms(100));
    }
}
