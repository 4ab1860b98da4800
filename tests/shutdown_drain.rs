//! Shutdown on the in-process bus, which never delivers a message again: consumers first
//! finish what was published before shutdown (the drain), within the grace period, and what
//! the grace period cuts off is counted and logged at WARN — never dropped in silence.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spa_dat::socket::faults::{Faults, FaultyProvider};
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, Config, DistributedApplication, Shutdown, Socket, SpaMessage};
use tokio::time::Instant;

const ORDERS: usize = 20;

/// An application on `provider`'s bus, with `grace_ms` of grace.
fn on(provider: Arc<dyn SocketProvider>, grace_ms: u64) -> DistributedApplication {
    DistributedApplication::new()
        .without_registered_handlers()
        .watch_signals(false)
        .config(Config {
            shutdown_grace_ms: grace_ms,
            ..Config::default()
        })
        .socket_provider(provider)
}

fn fresh_bus() -> MemoryBus {
    MemoryBus::new(uuid::Uuid::new_v4().to_string())
}

/// An application on a bus of its own, with `grace_ms` of grace.
fn on_a_fresh_bus(grace_ms: u64) -> DistributedApplication {
    on(Arc::new(MemorySocketProvider::new(fresh_bus())), grace_ms)
}

async fn run_bounded(app: DistributedApplication) {
    tokio::time::timeout(Duration::from_secs(30), app.start_async())
        .await
        .expect("the run ends")
        .expect("a clean run");
}

/// A producer that publishes `ORDERS` orders and then ends the run at once.
async fn publish_orders_then_stop(socket: Socket, shutdown: Shutdown) -> spa_dat::Result<()> {
    publish_then_stop(&socket, &shutdown, ORDERS).await
}

async fn publish_then_stop(
    socket: &Socket,
    shutdown: &Shutdown,
    orders: usize,
) -> spa_dat::Result<()> {
    for n in 0..orders {
        socket
            .publish(SpaMessage::new("orders", n.to_string()))
            .await?;
    }
    shutdown.trigger();
    Ok(())
}

/// Records each order after a pause; the order `refused` is rejected (never retried).
fn recorder(
    recorded: &Arc<AtomicUsize>,
    pause: Duration,
    refused: &'static str,
) -> impl Fn(SpaMessage) -> futures_util::future::BoxFuture<'static, spa_dat::Result<()>>
       + Clone
       + Send
       + Sync
       + 'static {
    let recorded = Arc::clone(recorded);
    move |order: SpaMessage| {
        let recorded = Arc::clone(&recorded);
        Box::pin(async move {
            tokio::time::sleep(pause).await;
            if order.payload_str()? == refused {
                return Err(spa_dat::Error::Rejected {
                    reason: format!("order {refused} is refused"),
                });
            }
            recorded.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// A handler that counts the messages it gets in `count`.
fn counting(
    count: &Arc<AtomicUsize>,
) -> impl Fn(SpaMessage) -> std::future::Ready<()> + Clone + Send + Sync + 'static {
    let count = Arc::clone(count);
    move |_: SpaMessage| {
        count.fetch_add(1, Ordering::SeqCst);
        std::future::ready(())
    }
}

/// Every order recorded but order 7, which was refused and dead-lettered once.
fn assert_every_order_but_the_refused_one(recorded: &AtomicUsize, dead: &AtomicUsize) {
    assert_eq!(
        recorded.load(Ordering::SeqCst),
        ORDERS - 1,
        "orders recorded"
    );
    assert_eq!(
        dead.load(Ordering::SeqCst),
        1,
        "the refused order's dead letter"
    );
}

/// The first hour's report: publish 20 orders, stop → every order recorded, the failing one
/// dead-lettered and its dead letter handled too — for each engine.
async fn nothing_published_before_shutdown_is_lost(shape: impl Fn(Application) -> Application) {
    let provider = Arc::new(MemorySocketProvider::new(fresh_bus()));
    nothing_published_before_shutdown_is_lost_on(provider, shape).await;
}

async fn nothing_published_before_shutdown_is_lost_on(
    provider: Arc<dyn SocketProvider>,
    shape: impl Fn(Application) -> Application,
) {
    let recorded = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicUsize::new(0));
    let app = on(provider, 10_000)
        .add_application(shape(
            Application::consumer(
                "record",
                ["orders"],
                recorder(&recorded, Duration::from_millis(5), "7"),
            )
            .dead_letter_topic("orders/dead"),
        ))
        .add_consumer("dead", ["orders/dead"], counting(&dead))
        .add_producer("orders", publish_orders_then_stop);
    run_bounded(app).await;
    assert_every_order_but_the_refused_one(&recorded, &dead);
}

#[tokio::test]
async fn one_at_a_time_nothing_published_before_shutdown_is_lost() {
    nothing_published_before_shutdown_is_lost(|app| app).await;
}

#[tokio::test]
async fn concurrently_nothing_published_before_shutdown_is_lost() {
    nothing_published_before_shutdown_is_lost(|app| app.concurrency(4)).await;
}

#[tokio::test]
async fn in_batches_nothing_published_before_shutdown_is_lost() {
    let recorded = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&recorded);
    let started = Instant::now();
    // A batch that would wait a minute for more is cut at once while draining.
    let app = on_a_fresh_bus(10_000)
        .add_application(
            Application::consumer(
                "record",
                ["orders"],
                move |batch: spa_dat::Batch<SpaMessage>| {
                    let recorded = Arc::clone(&r);
                    async move {
                        let mut result = spa_dat::BatchResult::new();
                        for (index, order) in batch.iter().enumerate() {
                            if order.payload_str().ok() == Some("7") {
                                result = result.failed(index, "order 7 is refused");
                            } else {
                                recorded.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        result
                    }
                },
            )
            .batch(100, Duration::from_secs(60))
            .retry(spa_dat::RetryPolicy::no_retries())
            .dead_letter_topic("orders/dead"),
        )
        .add_consumer("dead", ["orders/dead"], counting(&dead))
        .add_producer("orders", publish_orders_then_stop);
    run_bounded(app).await;
    assert_every_order_but_the_refused_one(&recorded, &dead);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn on_the_fault_injecting_bus_nothing_published_before_shutdown_is_lost() {
    // Copies the faulty bus makes are drained too; none here, to count exactly.
    let faulty = FaultyProvider::new(
        Arc::new(MemorySocketProvider::new(fresh_bus())),
        Faults::default(),
    );
    nothing_published_before_shutdown_is_lost_on(Arc::new(faulty), |app| app.concurrency(2)).await;
}

#[tokio::test]
async fn a_socket_that_never_reads_does_not_hold_up_the_drain() {
    let bus = fresh_bus();
    let provider: Arc<dyn SocketProvider> = Arc::new(MemorySocketProvider::new(bus));
    let mut options = SocketOptions::new("watcher");
    options.topics = vec!["orders".into()];
    let watcher = provider.connect(options).await.expect("connects");
    let recorded = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let app = on(Arc::clone(&provider), 10_000)
        .add_application(Application::consumer(
            "record",
            ["orders"],
            recorder(&recorded, Duration::ZERO, "none"),
        ))
        .add_producer("orders", publish_orders_then_stop);
    run_bounded(app).await;
    assert_eq!(recorded.load(Ordering::SeqCst), ORDERS);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the run's drain waited for a socket outside it: {:?}",
        started.elapsed()
    );
    drop(watcher);
}

#[tokio::test]
async fn a_request_made_while_draining_is_answered() {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let a = Arc::clone(&answers);
    let app = on_a_fresh_bus(10_000)
        .add_consumer("ask", ["questions"], move |socket: Socket| {
            let answers = Arc::clone(&a);
            async move {
                let reply = socket
                    .request_with_timeout(SpaMessage::new("answers", "?"), Duration::from_secs(5))
                    .await
                    .map(|reply| reply.payload_str().map(str::to_owned));
                answers.lock().expect("lock").push(format!("{reply:?}"));
            }
        })
        .add_consumer("answer", ["answers"], || async { "42" })
        .add_producer(
            "questions",
            |socket: Socket, shutdown: Shutdown| async move {
                for _ in 0..3 {
                    socket.publish(SpaMessage::new("questions", "")).await?;
                }
                shutdown.trigger();
                Ok::<(), spa_dat::Error>(())
            },
        );
    run_bounded(app).await;
    assert_eq!(
        *answers.lock().expect("lock"),
        vec![r#"Ok(Ok("42"))"#; 3],
        "each question asked during the drain answered"
    );
}

/// A subscriber that keeps what spa-dat logs at WARN and above, for the test's thread.
fn capture_warnings() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::util::SubscriberInitExt;
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    let guard = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(move || Sink(Arc::clone(&sink)))
        .finish()
        .set_default();
    (logs, guard)
}

/// The numbers after `discarded=` in the WARN lines about the shutdown's discards, added up
/// (the application's inbox, and what a fault-injecting bus held for it).
fn discarded_in(logs: &str) -> usize {
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("shutdown discarded in-process messages"))
        .collect();
    assert!(
        !lines.is_empty(),
        "no WARN about discarded messages in:\n{logs}"
    );
    lines
        .iter()
        .map(|line| {
            assert!(line.contains("WARN"), "{line}");
            line.split("discarded=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no count in {line}"))
        })
        .sum()
}

/// More than a consumer takes from its inbox at once (64).
const MANY: usize = 200;

async fn what_the_grace_period_cuts_off_is_counted_at_warn(concurrency: usize) {
    let bus = Arc::new(MemorySocketProvider::new(fresh_bus()));
    what_the_grace_period_cuts_off_is_counted_at_warn_on(bus, concurrency, MANY).await;
}

async fn what_the_grace_period_cuts_off_is_counted_at_warn_on(
    provider: Arc<dyn SocketProvider>,
    concurrency: usize,
    many: usize,
) {
    let (logs, _guard) = capture_warnings();
    let recorded = Arc::new(AtomicUsize::new(0));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let triggered = Arc::new(Mutex::new(None));
    let (r, s, t) = (
        Arc::clone(&recorded),
        Arc::clone(&starts),
        Arc::clone(&triggered),
    );
    // 200 orders of 60 ms each take 12 s one at a time; the grace period is 200 ms.
    let app = on(provider, 200)
        .add_application(
            Application::consumer("record", ["orders"], move |_: SpaMessage| {
                let (recorded, starts) = (Arc::clone(&r), Arc::clone(&s));
                async move {
                    starts.lock().expect("lock").push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    recorded.fetch_add(1, Ordering::SeqCst);
                }
            })
            .concurrency(concurrency),
        )
        .add_producer("orders", move |socket: Socket, shutdown: Shutdown| {
            let triggered = Arc::clone(&t);
            async move {
                for n in 0..many {
                    socket
                        .publish(SpaMessage::new("orders", n.to_string()))
                        .await?;
                }
                *triggered.lock().expect("lock") = Some(Instant::now());
                shutdown.trigger();
                Ok::<(), spa_dat::Error>(())
            }
        });
    let started = Instant::now();
    run_bounded(app).await;
    let elapsed = started.elapsed();
    let logs = String::from_utf8_lossy(&logs.lock().expect("lock")).into_owned();
    let recorded = recorded.load(Ordering::SeqCst);
    let discarded = discarded_in(&logs);
    assert!(recorded < many, "the grace period cut the drain short");
    assert_eq!(
        recorded + discarded,
        many,
        "every order handled or counted as discarded ({recorded} + {discarded}):\n{logs}"
    );
    let deadline = triggered.lock().expect("lock").expect("triggered") + Duration::from_millis(200);
    let late = starts
        .lock()
        .expect("lock")
        .iter()
        .filter(|start| **start > deadline + Duration::from_millis(20))
        .count();
    assert_eq!(late, 0, "handlers started after the grace period ended");
    assert!(
        elapsed < Duration::from_secs(5),
        "one grace period for the whole drain, not one per message: {elapsed:?}"
    );
}

#[tokio::test]
async fn one_at_a_time_what_the_grace_period_cuts_off_is_counted_at_warn() {
    what_the_grace_period_cuts_off_is_counted_at_warn(1).await;
}

/// The fault-injecting bus's pump holds what does not fit in the application's inbox
/// (1,024): at the end of the grace period that is discarded and counted too.
#[tokio::test]
async fn on_the_fault_injecting_bus_what_the_grace_period_cuts_off_is_counted_at_warn() {
    let faulty = FaultyProvider::new(
        Arc::new(MemorySocketProvider::new(fresh_bus())),
        Faults::default(),
    );
    what_the_grace_period_cuts_off_is_counted_at_warn_on(Arc::new(faulty), 2, 2_000).await;
}

#[tokio::test]
async fn concurrently_what_the_grace_period_cuts_off_is_counted_at_warn() {
    what_the_grace_period_cuts_off_is_counted_at_warn(2).await;
}

#[tokio::test]
async fn in_batches_what_the_grace_period_cuts_off_is_counted_at_warn() {
    let (logs, _guard) = capture_warnings();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    // Batches of 10, each taking 150 ms; the grace period of 200 ms ends the second.
    let app = on_a_fresh_bus(200)
        .add_application(
            Application::consumer(
                "record",
                ["orders"],
                move |batch: spa_dat::Batch<SpaMessage>| {
                    let handled = Arc::clone(&h);
                    async move {
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        handled.fetch_add(batch.len(), Ordering::SeqCst);
                    }
                },
            )
            .batch(10, Duration::from_secs(60)),
        )
        .add_producer("orders", |socket: Socket, shutdown: Shutdown| async move {
            publish_then_stop(&socket, &shutdown, 100).await
        });
    run_bounded(app).await;
    let logs = String::from_utf8_lossy(&logs.lock().expect("lock")).into_owned();
    let handled = handled.load(Ordering::SeqCst);
    assert!(handled < 100, "the grace period cut the drain short");
    assert_eq!(handled + discarded_in(&logs), 100, "{logs}");
}

/// A dead letter to a topic whose only subscriber never reads waits for room in its inbox;
/// at shutdown that wait ends with the grace period (the message is counted as left behind),
/// and the run ends — it used to wait forever.
#[tokio::test]
async fn a_dead_letter_waiting_for_room_ends_with_the_grace_period() {
    let bus = fresh_bus();
    let provider: Arc<dyn SocketProvider> = Arc::new(MemorySocketProvider::new(bus));
    let mut options = SocketOptions::new("never-reads");
    options.topics = vec!["orders/dead".into()];
    options.inbox_capacity = 1;
    let watcher = provider.connect(options).await.expect("connects");
    let (logs, _guard) = capture_warnings();
    let app = on(Arc::clone(&provider), 300)
        .add_application(
            Application::consumer("refuse", ["orders"], |_: SpaMessage| async {
                Err::<(), _>(spa_dat::Error::rejected("never"))
            })
            .dead_letter_topic("orders/dead"),
        )
        .add_producer("orders", |socket: Socket, shutdown: Shutdown| async move {
            publish_then_stop(&socket, &shutdown, 3).await
        });
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.start_async())
        .await
        .expect("the run ends although a dead letter waits for room")
        .expect("a clean run");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the run outlasted its grace period: {:?}",
        started.elapsed()
    );
    let logs = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(
        logs.contains("dead letter was not confirmed within the grace period"),
        "the message left behind is said at WARN:\n{logs}"
    );
    drop(watcher);
}

/// The same for a reply: a request whose response topic's only subscriber never reads. The
/// reply waiting for room ends with the grace period, said at WARN, and the run ends.
#[tokio::test]
async fn a_reply_waiting_for_room_ends_with_the_grace_period() {
    let bus = fresh_bus();
    let provider: Arc<dyn SocketProvider> = Arc::new(MemorySocketProvider::new(bus));
    let mut options = SocketOptions::new("never-reads");
    options.topics = vec!["replies/stuck".into()];
    options.inbox_capacity = 1;
    let watcher = provider.connect(options).await.expect("connects");
    let (logs, _guard) = capture_warnings();
    let app = on(Arc::clone(&provider), 300)
        .add_consumer("answer", ["questions"], |_: SpaMessage| async {
            "an answer"
        })
        .add_producer("ask", |socket: Socket, shutdown: Shutdown| async move {
            for n in 0..3 {
                let mut question = SpaMessage::new("questions", n.to_string());
                question.response_topic = Some("replies/stuck".into());
                socket.publish(question).await?;
            }
            shutdown.trigger();
            Ok::<(), spa_dat::Error>(())
        });
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.start_async())
        .await
        .expect("the run ends although a reply waits for room")
        .expect("a clean run");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the run outlasted its grace period: {:?}",
        started.elapsed()
    );
    let logs = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(
        logs.contains("reply not confirmed within the grace period"),
        "the request left behind is said at WARN:\n{logs}"
    );
    drop(watcher);
}
