//! The order checker of the delivery-engine tests: messages `key:seq`, each key's `seq`
//! counting from 0; the handler records violations of per-key order, duplicates and concurrency.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spa_dat::{Application, SpaMessage};

/// What a run of the checked handler saw.
#[derive(Default)]
pub struct OrderChecker {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    /// Most handlers seen running at once.
    pub max_in_flight: AtomicUsize,
    /// Messages handled (each call that finished).
    pub handled: AtomicUsize,
}

#[derive(Default)]
struct State {
    last: HashMap<u32, u32>,
    busy: HashSet<u32>,
    violations: Vec<String>,
    duplicates: usize,
}

/// `count` messages over `keys` keys, seeded: (key, seq) in publishing order.
pub fn workload(count: usize, keys: u32, seed: u64) -> Vec<(u32, u32)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next: HashMap<u32, u32> = HashMap::new();
    (0..count)
        .map(|_| {
            let key = rng.u32(..keys);
            let seq = next.entry(key).or_insert(0);
            let message = (key, *seq);
            *seq += 1;
            message
        })
        .collect()
}

/// The payload of message `key:seq`.
pub fn payload(key: u32, seq: u32) -> String {
    format!("{key}:{seq}")
}

/// The handler's work for `key:seq`: 0–`max_us` µs, the same every run.
pub fn latency(key: u32, seq: u32, max_us: u64) -> Duration {
    if max_us == 0 {
        return Duration::ZERO;
    }
    let mixed = (u64::from(key) << 32 | u64::from(seq)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Duration::from_micros((mixed >> 11) % (max_us + 1))
}

/// A consumer `name` of `topics` whose handler is `checker`'s: each message `key:seq` is checked,
/// then takes its work of 0–`max_latency_us` µs ([`latency`]). Concurrency, ordering, group and
/// provider are the caller's to add.
pub fn checked_consumer<I, S>(
    name: impl Into<String>,
    topics: I,
    checker: &Arc<OrderChecker>,
    max_latency_us: u64,
) -> Application
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let checker = Arc::clone(checker);
    Application::consumer(name, topics, move |message: SpaMessage| {
        let checker = Arc::clone(&checker);
        async move {
            checker
                .handle(message.payload_str().expect("utf-8"), max_latency_us)
                .await
        }
    })
}

impl OrderChecker {
    /// Waits until `count` messages were handled; fails the test after `limit`.
    pub async fn wait_handled(&self, count: usize, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.handled.load(Ordering::SeqCst) < count {
            if std::time::Instant::now() >= deadline {
                let state = self.state.lock().expect("state");
                let mut busy: Vec<_> = state.busy.iter().copied().collect();
                busy.sort_unstable();
                busy.truncate(20);
                panic!(
                    "timed out waiting for every message handled: {} of {count} after {limit:?}, \
                     {} running now (keys {busy:?}), {} keys seen, {} violations, {} duplicates",
                    self.handled.load(Ordering::SeqCst),
                    self.in_flight.load(Ordering::SeqCst),
                    state.last.len(),
                    state.violations.len(),
                    state.duplicates,
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that exactly `count` messages were handled, each once and in its key's order
    /// (`order` names that order in the failure, e.g. "per-key order").
    pub fn assert_each_once_in_order(&self, count: usize, order: &str) {
        assert_eq!(self.violations(), Vec::<String>::new(), "{order}");
        assert_eq!(self.duplicates(), 0, "duplicates");
        assert_eq!(self.handled.load(Ordering::SeqCst), count, "lost or extra");
    }

    /// Handles one message: checks it against its key's last, waits its latency.
    pub async fn handle(&self, payload: &str, max_latency_us: u64) {
        let (key, seq) = payload
            .split_once(':')
            .and_then(|(k, s)| Some((k.parse::<u32>().ok()?, s.parse::<u32>().ok()?)))
            .expect("key:seq");
        let running = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(running, Ordering::SeqCst);
        {
            let mut state = self.state.lock().expect("state");
            if !state.busy.insert(key) {
                state
                    .violations
                    .push(format!("key {key}: {seq} started while another ran"));
            }
            let expected = state.last.get(&key).map_or(0, |last| last + 1);
            if seq < expected {
                state.duplicates += 1;
            } else if seq > expected {
                state
                    .violations
                    .push(format!("key {key}: {seq} came when {expected} was due"));
            }
            state.last.insert(key, seq.max(expected.saturating_sub(1)));
        }
        let wait = latency(key, seq, max_latency_us);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.state.lock().expect("state").busy.remove(&key);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.handled.fetch_add(1, Ordering::SeqCst);
    }

    /// Order violations seen (first few).
    pub fn violations(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("state")
            .violations
            .iter()
            .take(10)
            .cloned()
            .collect()
    }

    /// Messages handled again.
    pub fn duplicates(&self) -> usize {
        self.state.lock().expect("state").duplicates
    }

    /// Distinct keys seen and their message counts (last seq + 1).
    pub fn per_key_counts(&self) -> HashMap<u32, u32> {
        self.state
            .lock()
            .expect("state")
            .last
            .iter()
            .map(|(k, last)| (*k, last + 1))
            .collect()
    }
}
