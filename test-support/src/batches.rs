//! The batch-handler workload, run on every transport: `key:seq` messages handled by a batch
//! consumer whose handler fails some elements for good (they must be dead-lettered, once) and
//! some once (they must be retried and handled); the ledger records what the handler saw.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use spa_dat::socket::spi::{Outgoing, SocketProvider};
use spa_dat::{Application, Batch, BatchResult, Config, MessageOrder, RetryPolicy, SpaMessage};

use crate::ordering;

/// What a batch workload runs.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Messages published.
    pub messages: usize,
    /// Keys they are spread over.
    pub keys: u32,
    /// Most messages per batch.
    pub size: usize,
    /// Longest a batch waits.
    pub wait: Duration,
    /// Batches at once.
    pub concurrency: usize,
}

/// Whether message `key:seq` fails in the handler: for good (`Some(true)`), on its first
/// call only (`Some(false)`), or never. About 1 % each way, the same every run.
pub fn fate(key: u32, seq: u32) -> Option<bool> {
    let mixed = (u64::from(key) << 32 | u64::from(seq)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    match (mixed >> 17) % 100 {
        0 => Some(true),
        1 => Some(false),
        _ => None,
    }
}

/// What the batch handler saw.
#[derive(Default)]
pub struct Ledger {
    state: Mutex<LedgerState>,
    /// Handler calls.
    pub calls: AtomicUsize,
    /// Largest batch handed to the handler.
    pub largest: AtomicUsize,
}

#[derive(Default)]
struct LedgerState {
    /// Per key, the next seq it should first see.
    next: HashMap<u32, u32>,
    /// Messages seen at least once.
    seen: HashSet<(u32, u32)>,
    /// Handled (the handler said so).
    handled: HashSet<(u32, u32)>,
    /// Keys in a running call.
    busy: HashSet<u32>,
    violations: Vec<String>,
    dead: Vec<(u32, u32)>,
}

fn key_seq(message: &SpaMessage) -> (u32, u32) {
    let text = message.payload_str().expect("utf-8");
    let (key, seq) = text.split_once(':').expect("key:seq");
    (key.parse().expect("key"), seq.parse().expect("seq"))
}

impl Ledger {
    /// The handler's work for one batch.
    pub fn handle(&self, batch: &Batch<SpaMessage>) -> BatchResult {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.largest.fetch_max(batch.len(), Ordering::Relaxed);
        let mut result = BatchResult::new();
        let elements: Vec<(u32, u32)> = batch.iter().map(key_seq).collect();
        let mut guard = self.state.lock().expect("ledger");
        let state = &mut *guard;
        let keys: HashSet<u32> = elements.iter().map(|(key, _)| *key).collect();
        for key in &keys {
            if !state.busy.insert(*key) {
                state
                    .violations
                    .push(format!("key {key} in two batches at once"));
            }
        }
        for (index, &(key, seq)) in elements.iter().enumerate() {
            let first_time = state.seen.insert((key, seq));
            if first_time {
                let next = state.next.entry(key).or_insert(0);
                if seq != *next {
                    let expected = *next;
                    state
                        .violations
                        .push(format!("key {key}: saw {seq} first, expected {expected}"));
                }
                *next = seq + 1;
            }
            match fate(key, seq) {
                Some(true) => result.fail(index, format!("poison {key}:{seq}")),
                Some(false) if first_time => result.fail(index, format!("flaky {key}:{seq}")),
                _ => {
                    if !state.handled.insert((key, seq)) {
                        state.violations.push(format!("{key}:{seq} handled twice"));
                    }
                }
            }
        }
        for key in &keys {
            state.busy.remove(key);
        }
        result
    }

    fn dead_lettered(&self, message: &SpaMessage) {
        let mut state = self.state.lock().expect("ledger");
        state.dead.push(key_seq(message));
    }

    /// Handled plus dead-lettered.
    pub fn settled(&self) -> usize {
        let state = self.state.lock().expect("ledger");
        state.handled.len() + state.dead.len()
    }

    /// Checks the run of `work`: every message handled or dead-lettered exactly as its fate
    /// says, once, each key's messages first seen in order, no key in two calls at once.
    pub fn assert_as_fated(&self, work: &[(u32, u32)]) {
        let state = self.state.lock().expect("ledger");
        assert!(
            state.violations.is_empty(),
            "{} violations, the first: {:?}",
            state.violations.len(),
            &state.violations[..state.violations.len().min(5)]
        );
        let poison: HashSet<(u32, u32)> = work
            .iter()
            .copied()
            .filter(|&(k, s)| fate(k, s) == Some(true))
            .collect();
        let mut dead = state.dead.clone();
        dead.sort_unstable();
        let mut expected_dead: Vec<(u32, u32)> = poison.iter().copied().collect();
        expected_dead.sort_unstable();
        assert_eq!(
            dead, expected_dead,
            "the poison ones dead-lettered, once each"
        );
        let expected_handled: HashSet<(u32, u32)> = work
            .iter()
            .copied()
            .filter(|m| !poison.contains(m))
            .collect();
        let missing = expected_handled.difference(&state.handled).count();
        let extra = state.handled.difference(&expected_handled).count();
        assert_eq!((missing, extra), (0, 0), "handled: (missing, not expected)");
    }
}

/// A batch consumer `name` on `topics` with the ledger's handler, dead letters to `dead`.
pub fn batch_consumer(
    name: &str,
    topics: &[String],
    dead: &str,
    ledger: &Arc<Ledger>,
    workload: Workload,
) -> Application {
    let ledger = Arc::clone(ledger);
    Application::consumer(name, topics.to_vec(), move |batch: Batch<SpaMessage>| {
        let ledger = Arc::clone(&ledger);
        async move { ledger.handle(&batch) }
    })
    .batch(workload.size, workload.wait)
    .concurrency(workload.concurrency)
    .ordering(MessageOrder::Key)
    .dead_letter_topic(dead)
    .retry(
        RetryPolicy::default()
            .attempts(2)
            .delays(Duration::from_millis(10), Duration::from_millis(20)),
    )
}

/// A consumer recording the dead letters on `dead` in `ledger`.
pub fn dead_letter_reader(name: &str, dead: &str, ledger: &Arc<Ledger>) -> Application {
    let ledger = Arc::clone(ledger);
    Application::consumer(name, [dead.to_owned()], move |message: SpaMessage| {
        let ledger = Arc::clone(&ledger);
        async move { ledger.dead_lettered(&message) }
    })
}

/// Runs `workload` through a batch consumer on `provider`: `route` gives each key its topic
/// and transport key; the consumer subscribes to `topics`, dead-letters to `dead`. Returns
/// the ledger once every message is settled (fails the test after `patience`).
pub async fn run(
    provider: &Arc<dyn SocketProvider>,
    topics: &[String],
    dead: &str,
    group: Option<&str>,
    route: impl Fn(u32) -> (String, Option<String>),
    workload: Workload,
    patience: Duration,
) -> Arc<Ledger> {
    let ledger = Arc::new(Ledger::default());
    let mut consumer = batch_consumer("batcher", topics, dead, &ledger, workload)
        .socket_provider(Arc::clone(provider));
    let mut reader =
        dead_letter_reader("dead-reader", dead, &ledger).socket_provider(Arc::clone(provider));
    if let Some(group) = group {
        consumer = consumer.group(format!("{group}-batcher"));
        reader = reader.group(format!("{group}-dead"));
    }
    let app = crate::test_app(Config::default())
        .add_application(consumer)
        .add_application(reader);
    let (shutdown, run) = crate::start_ready(app).await;
    let work = ordering::workload(workload.messages, workload.keys, 5);
    let publisher = crate::connect_publisher(provider, "batch-publisher").await;
    let sends = futures_util::stream::iter(work.iter().map(|&(key, seq)| {
        let (topic, transport_key) = route(key);
        let message = SpaMessage::new(topic, ordering::payload(key, seq));
        let mut outgoing = Outgoing::message(message).expect("encodes");
        if let Some(transport_key) = transport_key {
            outgoing = outgoing.with_key(transport_key);
        }
        let socket = Arc::clone(&publisher.socket);
        async move { socket.send(outgoing).await }
    }))
    .buffered(256)
    .collect::<Vec<_>>()
    .await;
    assert!(sends.iter().all(Result::is_ok), "every message published");
    let settled = Arc::clone(&ledger);
    let waited = tokio::time::timeout(
        patience,
        crate::wait_until("every message settled", patience, || {
            settled.settled() >= workload.messages
        }),
    )
    .await;
    assert!(
        waited.is_ok(),
        "{} of {} messages settled within {patience:?}, in {} handler calls",
        ledger.settled(),
        workload.messages,
        ledger.calls.load(Ordering::Relaxed)
    );
    shutdown.trigger();
    crate::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
    publisher.socket.close().await.expect("close");
    ledger.assert_as_fated(&work);
    ledger
}
