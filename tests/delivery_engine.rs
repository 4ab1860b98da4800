//! The delivery engine on the in-process bus: concurrent handlers that keep each key's order,
//! acknowledgements in arrival order, retries, dead letters and handler timeouts.

use spa_dat_test_support as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spa_dat::socket::headers;
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::spi::Outgoing;
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, Config, MessageOrder, RetryPolicy, SpaMessage};
use support::ordering::{self, OrderChecker};
use support::{joined, start_ready, test_app, wait_until};

/// How long a run may take to stop once shut down (the default grace period is 10 s).
const STOP_LIMIT: Duration = Duration::from_secs(30);

fn bus() -> (MemoryBus, Arc<dyn SocketProvider>) {
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let provider: Arc<dyn SocketProvider> = Arc::new(MemorySocketProvider::new(bus.clone()));
    (bus, provider)
}

/// Publishes the workload on `topic`, each message with its key.
async fn publish_workload(provider: &Arc<dyn SocketProvider>, topic: &str, work: &[(u32, u32)]) {
    let publisher = provider
        .connect(SocketOptions::new("publisher"))
        .await
        .expect("connect");
    for (key, seq) in work {
        let message = SpaMessage::new(topic, ordering::payload(*key, *seq));
        let outgoing = Outgoing::message(message)
            .expect("encodes")
            .with_key(key.to_string());
        publisher.socket.send(outgoing).await.expect("publish");
    }
    publisher.socket.close().await.expect("close");
}

async fn run_order_check(messages: usize, keys: u32, max_latency_us: u64, limit: usize) {
    let (_bus, provider) = bus();
    let checker = Arc::new(OrderChecker::default());
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&provider))
        .add_application(
            ordering::checked_consumer("checked", ["work"], &checker, max_latency_us)
                .concurrency(limit)
                .ordering(MessageOrder::Key),
        );
    let (shutdown, run) = start_ready(app).await;
    let work = ordering::workload(messages, keys, 7);
    let started = Instant::now();
    publish_workload(&provider, "work", &work).await;
    checker
        .wait_handled(messages, Duration::from_secs(600))
        .await;
    let took = started.elapsed();
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("runs");
    eprintln!(
        "{messages} messages, {keys} keys, 0–{max_latency_us} µs each, concurrency {limit}: {took:?}, at most {} at once",
        checker.max_in_flight.load(Ordering::SeqCst)
    );
    checker.assert_each_once_in_order(messages, "per-key order");
    let max = checker.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= limit, "{max} handlers at once, limit {limit}");
    assert!(
        max > limit / 2,
        "only {max} handlers at once, limit {limit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_messages_over_ten_thousand_keys_keep_each_keys_order() {
    run_order_check(1_000_000, 10_000, 5_000, 64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn few_keys_run_one_at_a_time_each_and_never_together() {
    // 4 keys, 64 slots: never more than 4 at once.
    let (_bus, provider) = bus();
    let checker = Arc::new(OrderChecker::default());
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&provider))
        .add_application(
            ordering::checked_consumer("few-keys", ["work"], &checker, 2_000).concurrency(64),
        );
    let (shutdown, run) = start_ready(app).await;
    publish_workload(&provider, "work", &ordering::workload(400, 4, 3)).await;
    checker.wait_handled(400, Duration::from_secs(30)).await;
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("runs");
    assert_eq!(checker.violations(), Vec::<String>::new());
    assert_eq!(checker.max_in_flight.load(Ordering::SeqCst), 4);
}

/// A consumer whose handler fails `failures` times for `poison`, then succeeds; returns the
/// calls per payload in call order.
fn flaky_app(
    provider: &Arc<dyn SocketProvider>,
    failures: usize,
    calls: &Arc<Mutex<Vec<String>>>,
) -> Application {
    let calls = Arc::clone(calls);
    let failed = Arc::new(AtomicUsize::new(0));
    Application::consumer("flaky", ["work"], move |message: SpaMessage| {
        let (calls, failed) = (Arc::clone(&calls), Arc::clone(&failed));
        async move {
            let payload = message.payload_str()?.to_owned();
            calls.lock().expect("calls").push(payload.clone());
            if payload == "poison" && failed.fetch_add(1, Ordering::SeqCst) < failures {
                return Err(spa_dat::BoxError::from("not now"));
            }
            Ok(())
        }
    })
    .socket_provider(Arc::clone(provider))
    .retry(RetryPolicy::default().delays(Duration::from_millis(10), Duration::from_millis(40)))
}

async fn publish_plain(provider: &Arc<dyn SocketProvider>, topic: &str, payloads: &[&str]) {
    let publisher = provider
        .connect(SocketOptions::new("publisher"))
        .await
        .expect("connect");
    for payload in payloads {
        publisher
            .socket
            .publish(&SpaMessage::new(topic, payload.to_string()))
            .await
            .expect("publish");
    }
    publisher.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_and_later_messages_wait_their_turn() {
    let (_bus, provider) = bus();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = test_app(Config::default()).add_application(flaky_app(&provider, 2, &calls));
    let (shutdown, run) = start_ready(app).await;
    publish_plain(&provider, "work", &["first", "poison", "after"]).await;
    let c = Arc::clone(&calls);
    wait_until("after is handled", Duration::from_secs(10), || {
        c.lock().expect("calls").contains(&"after".to_owned())
    })
    .await;
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("runs");
    assert_eq!(
        *calls.lock().expect("calls"),
        ["first", "poison", "poison", "poison", "after"],
        "3 attempts, then the next message"
    );
}

/// On the in-process bus, which has no acknowledgements, "not dropped" can only mean this: the
/// message is tried again past the policy's attempts and the next one waits behind it. That it
/// is also never acknowledged to a broker is checked over MQTT (mqtt_transport).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_topic_an_exhausted_message_is_retried_on_and_holds_back_the_next() {
    let (_bus, provider) = bus();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = test_app(Config::default()).add_application(flaky_app(&provider, 1_000, &calls));
    let (shutdown, run) = start_ready(app).await;
    publish_plain(&provider, "work", &["poison", "after"]).await;
    let c = Arc::clone(&calls);
    wait_until(
        "attempts past the policy's 3",
        Duration::from_secs(10),
        || c.lock().expect("calls").len() >= 6,
    )
    .await;
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("runs");
    let calls = calls.lock().expect("calls");
    assert!(
        calls.iter().all(|c| c == "poison"),
        "the next message waits behind it: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_when_exhausted_moves_on_after_the_last_attempt() {
    let (_bus, provider) = bus();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = test_app(Config::default()).add_application(
        flaky_app(&provider, 1_000, &calls).retry(
            RetryPolicy::default()
                .attempts(2)
                .delays(Duration::from_millis(10), Duration::from_millis(10))
                .skip_when_exhausted(),
        ),
    );
    let (shutdown, run) = start_ready(app).await;
    publish_plain(&provider, "work", &["poison", "after"]).await;
    let c = Arc::clone(&calls);
    wait_until("after is handled", Duration::from_secs(10), || {
        c.lock().expect("calls").contains(&"after".to_owned())
    })
    .await;
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("runs");
    assert_eq!(*calls.lock().expect("calls"), ["poison", "poison", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_with_its_attempts_and_its_key_goes_on_in_order() {
    const MESSAGES: u32 = 10_000;
    let (_bus, provider) = bus();
    let mut watcher = provider
        .connect(SocketOptions::new("watcher").topics(["dead"]))
        .await
        .expect("connect");
    let handled = Arc::new(Mutex::new(Vec::<(u32, u32)>::new()));
    let h = Arc::clone(&handled);
    let app = test_app(Config::default()).add_application(
        Application::consumer("poisoned", ["work"], move |message: SpaMessage| {
            let h = Arc::clone(&h);
            async move {
                let text = message.payload_str()?.to_owned();
                let (key, seq) = text.split_once(':').expect("key:seq");
                let (key, seq): (u32, u32) = (key.parse()?, seq.parse()?);
                if key == 7 && seq == 3 {
                    return Err(spa_dat::BoxError::from("poison"));
                }
                tokio::time::sleep(ordering::latency(key, seq, 500)).await;
                h.lock().expect("handled").push((key, seq));
                Ok(())
            }
        })
        .socket_provider(Arc::clone(&provider))
        .concurrency(64)
        .dead_letter_topic("dead")
        .retry(RetryPolicy::default().delays(Duration::from_millis(20), Duration::from_millis(50))),
    );
    let (shutdown, run) = start_ready(app).await;
    let work: Vec<(u32, u32)> = ordering::workload(MESSAGES as usize, 100, 11);
    publish_workload(&provider, "work", &work).await;
    let h = Arc::clone(&handled);
    wait_until("all but the poison one", Duration::from_secs(60), || {
        h.lock().expect("handled").len() >= MESSAGES as usize - 1
    })
    .await;
    let dead = tokio::time::timeout(Duration::from_secs(5), watcher.inbox.recv())
        .await
        .expect("dead letter arrives")
        .expect("open");
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("runs");
    let dead_message = SpaMessage::from_json(&dead.payload).expect("the original bytes");
    assert_eq!(dead_message.payload_str().ok(), Some("7:3"));
    assert_eq!(dead.headers.get(headers::DEAD_LETTER_ATTEMPTS), Some("3"));
    assert_eq!(dead.key.as_deref(), Some(&b"7"[..]), "the key is kept");
    assert!(dead
        .headers
        .get(headers::DEAD_LETTER_REASON)
        .is_some_and(|r| r.contains("poison")));
    let handled = handled.lock().expect("handled");
    let sevens: Vec<u32> = handled
        .iter()
        .filter(|(k, _)| *k == 7)
        .map(|(_, s)| *s)
        .collect();
    let expected: Vec<u32> = (0..sevens.len() as u32 + 1).filter(|s| *s != 3).collect();
    assert_eq!(
        sevens, expected,
        "key 7 went on after the poison one, in order"
    );
    assert_eq!(handled.len(), MESSAGES as usize - 1);
}

/// Counts one drop: put in a handler's future, it proves the future was dropped (cancelled).
struct DropGuard(Arc<AtomicUsize>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_is_cancelled_at_its_timeout_and_counts_as_a_failed_attempt() {
    let (_bus, provider) = bus();
    let mut watcher = provider
        .connect(SocketOptions::new("watcher").topics(["dead"]))
        .await
        .expect("connect");
    let calls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (c, d) = (Arc::clone(&calls), Arc::clone(&dropped));
    let app = test_app(Config::default()).add_application(
        Application::consumer("hangs", ["work"], move |_m: SpaMessage| {
            let (c, d) = (Arc::clone(&c), Arc::clone(&d));
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                // Counts the handler's future as dropped: cancelled, not left hanging.
                let _guard = DropGuard(d);
                std::future::pending::<()>().await;
            }
        })
        .socket_provider(Arc::clone(&provider))
        .handler_timeout(Duration::from_millis(50))
        .dead_letter_topic("dead")
        .retry(
            RetryPolicy::default()
                .attempts(2)
                .delays(Duration::from_millis(10), Duration::from_millis(10)),
        ),
    );
    let (shutdown, run) = start_ready(app).await;
    publish_plain(&provider, "work", &["stuck"]).await;
    let dead = tokio::time::timeout(Duration::from_secs(5), watcher.inbox.recv())
        .await
        .expect("dead letter arrives")
        .expect("open");
    // Both attempts' futures were dropped at their timeouts, before any shutdown.
    let d = Arc::clone(&dropped);
    wait_until("both hung attempts dropped", Duration::from_secs(5), || {
        d.load(Ordering::SeqCst) == 2
    })
    .await;
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("runs");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "each attempt cancelled once"
    );
    assert!(dead
        .headers
        .get(headers::DEAD_LETTER_REASON)
        .is_some_and(|r| r.contains("timed out")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_over_a_thousand_keys_keep_each_keys_order() {
    run_order_check(10_000, 1_000, 5_000, 64).await;
}

/// Records its name around each call; rejects payloads equal to `reject`.
struct Recording {
    name: &'static str,
    reject: Option<&'static str>,
    log: Arc<Mutex<Vec<String>>>,
}

impl spa_dat::handler::Layer for Recording {
    fn call(
        &self,
        context: spa_dat::HandlerContext,
        next: spa_dat::handler::Next,
    ) -> futures_util::future::BoxFuture<'static, spa_dat::handler::CallResult> {
        let payload = context
            .message()
            .and_then(|m| m.payload_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.log
            .lock()
            .expect("log")
            .push(format!("{} {payload}", self.name));
        if self.reject == Some(payload.as_str()) {
            let refused = spa_dat::Error::Rejected {
                reason: format!("{} refuses {payload}", self.name),
            };
            return Box::pin(async move { Err(refused.into()) });
        }
        next.run(context)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_run_outermost_first_and_a_rejected_message_is_dead_lettered_without_retries() {
    let (_bus, provider) = bus();
    let mut watcher = provider
        .connect(SocketOptions::new("watcher").topics(["dead"]))
        .await
        .expect("connect");
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&log);
    let app = test_app(Config::default()).add_application(
        Application::consumer("layered", ["work"], move |message: SpaMessage| {
            let l = Arc::clone(&l);
            async move {
                l.lock()
                    .expect("log")
                    .push(format!("handler {}", message.payload_str().unwrap_or("?")));
            }
        })
        .socket_provider(Arc::clone(&provider))
        .dead_letter_topic("dead")
        .layer(Recording {
            name: "inner",
            reject: Some("bad"),
            log: Arc::clone(&log),
        })
        // The outer layer is a plain async closure (layer_fn), the inner one a Layer struct.
        .layer({
            let log = Arc::clone(&log);
            spa_dat::handler::layer_fn(move |context, next| {
                let log = Arc::clone(&log);
                async move {
                    let payload = context
                        .message()
                        .and_then(|m| m.payload_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    log.lock().expect("log").push(format!("outer {payload}"));
                    next.run(context).await
                }
            })
        }),
    );
    let (shutdown, run) = start_ready(app).await;
    publish_plain(&provider, "work", &["good", "bad"]).await;
    let dead = tokio::time::timeout(Duration::from_secs(5), watcher.inbox.recv())
        .await
        .expect("dead letter arrives")
        .expect("open");
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("runs");
    assert_eq!(
        *log.lock().expect("log"),
        [
            "outer good",
            "inner good",
            "handler good",
            "outer bad",
            "inner bad"
        ],
        "outermost first; the rejected message once, never retried, never handled"
    );
    assert!(dead
        .headers
        .get(headers::DEAD_LETTER_REASON)
        .is_some_and(|r| r.contains("inner refuses bad")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_function_orders_messages_the_transport_gave_no_key() {
    // One topic, no transport keys: by topic alone everything would run one at a time.
    let (_bus, provider) = bus();
    let checker = Arc::new(OrderChecker::default());
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&provider))
        .add_application(
            ordering::checked_consumer("keyed-by-payload", ["work"], &checker, 2_000)
                .concurrency(32)
                .order_key(|delivery| {
                    let message = SpaMessage::from_json(&delivery.payload).ok()?;
                    let key = message.payload_str().ok()?.split_once(':')?.0.to_owned();
                    Some(bytes::Bytes::from(key))
                }),
        );
    let (shutdown, run) = start_ready(app).await;
    let publisher = provider
        .connect(SocketOptions::new("plain-publisher"))
        .await
        .expect("connect");
    for (key, seq) in ordering::workload(2_000, 100, 21) {
        publisher
            .socket
            .publish(&SpaMessage::new("work", ordering::payload(key, seq)))
            .await
            .expect("publish");
    }
    checker.wait_handled(2_000, Duration::from_secs(30)).await;
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("runs");
    assert_eq!(checker.violations(), Vec::<String>::new());
    assert!(
        checker.max_in_flight.load(Ordering::SeqCst) > 8,
        "keys ran concurrently"
    );
}

/// Issue 19, item 4: handlers that publish into their own subscription, or in a cycle A → B →
/// A, never deadlock the in-process bus. A handler's publish waited for room in an inbox that
/// only its own consumer (or the consumer it was waiting for) could empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_publishing_in_a_cycle_never_deadlock_the_bus() {
    const MESSAGES: usize = 10_000;
    let (_bus, provider) = bus();
    let handled_a = Arc::new(AtomicUsize::new(0));
    let handled_b = Arc::new(AtomicUsize::new(0));
    let (a, b) = (Arc::clone(&handled_a), Arc::clone(&handled_b));
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&provider))
        .add_application(Application::consumer(
            "a",
            ["a"],
            move |m: SpaMessage, socket: spa_dat::Socket| {
                a.fetch_add(1, Ordering::SeqCst);
                async move {
                    // A fresh message goes round A → A → B → A; a returning one ends here.
                    match m.payload_str()? {
                        "fresh" => socket.publish(SpaMessage::new("a", "again")).await,
                        "again" => socket.publish(SpaMessage::new("b", "back")).await,
                        _ => Ok(()),
                    }
                }
            },
        ))
        .add_application(
            Application::consumer("b", ["b"], move |_: SpaMessage, socket: spa_dat::Socket| {
                b.fetch_add(1, Ordering::SeqCst);
                async move { socket.publish(SpaMessage::new("a", "home")).await }
            })
            .concurrency(4),
        );
    let (shutdown, run) = support::start_ready(app).await;
    let publisher = provider
        .connect(SocketOptions::new("cycle-publisher"))
        .await
        .expect("connect");
    let publishing = tokio::spawn(async move {
        for _ in 0..MESSAGES {
            publisher
                .socket
                .publish(&SpaMessage::new("a", "fresh"))
                .await
                .expect("publish");
        }
        publisher.socket.close().await.expect("close");
    });
    let (a, b) = (Arc::clone(&handled_a), Arc::clone(&handled_b));
    let finished = tokio::time::timeout(Duration::from_secs(30), async {
        while a.load(Ordering::SeqCst) < 3 * MESSAGES || b.load(Ordering::SeqCst) < MESSAGES {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        finished.is_ok(),
        "deadlocked: A handled {} of {}, B {} of {MESSAGES}",
        handled_a.load(Ordering::SeqCst),
        3 * MESSAGES,
        handled_b.load(Ordering::SeqCst)
    );
    support::joined("the publisher", Duration::from_secs(10), publishing).await;
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
}

/// The rule that keeps cycles from deadlocking the bus keeps its back-pressure everywhere
/// else: producer → A → B with B stuck stops the producer once A's and B's inboxes are full,
/// instead of A queueing without bound into B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_pipeline_keeps_back_pressure_from_its_slowest_stage() {
    const MESSAGES: usize = 10_000;
    let (_bus, provider) = bus();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handled_b = Arc::new(AtomicUsize::new(0));
    let (g, b) = (Arc::clone(&gate), Arc::clone(&handled_b));
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&provider))
        .add_application(Application::consumer(
            "a",
            ["in"],
            |m: SpaMessage, socket: spa_dat::Socket| async move {
                socket.publish(SpaMessage::new("out", m.payload)).await
            },
        ))
        .add_application(Application::consumer("b", ["out"], move |_: SpaMessage| {
            let (g, b) = (Arc::clone(&g), Arc::clone(&b));
            async move {
                g.acquire().await.expect("gate").forget();
                b.fetch_add(1, Ordering::SeqCst);
            }
        }));
    let (shutdown, run) = support::start_ready(app).await;
    let publisher = provider
        .connect(SocketOptions::new("pipeline-publisher"))
        .await
        .expect("connect");
    let published = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&published);
    let publishing = tokio::spawn(async move {
        for _ in 0..MESSAGES {
            publisher
                .socket
                .publish(&SpaMessage::new("in", "x"))
                .await
                .expect("publish");
            p.fetch_add(1, Ordering::SeqCst);
        }
    });
    // B takes nothing: the publisher must come to a stop (its count still for 300 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = usize::MAX;
    let mut still_since = Instant::now();
    loop {
        let now = published.load(Ordering::SeqCst);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_millis(300) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the publisher never stopped ({now} published)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two inboxes of 1,024, one message in each handler: nothing queued beyond them.
    assert!(
        last <= 2 * 1024 + 8,
        "{last} published while B took nothing: A queued into B without bound"
    );
    gate.add_permits(MESSAGES);
    support::joined(
        "the publisher once B moves",
        Duration::from_secs(30),
        publishing,
    )
    .await;
    let b = Arc::clone(&handled_b);
    wait_until("B handled everything", Duration::from_secs(30), || {
        b.load(Ordering::SeqCst) == MESSAGES
    })
    .await;
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
}
