//! The application life cycle on the in-process bus: resources, teardown order, shutdown,
//! failing and panicking handlers, undecodable input, start-up checks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::testing::TestRun;
use spa_dat::{
    Application, ApplicationLifeCycle, BoxError, Config, DistributedApplication, Error, Json, Res,
    Resource, Shutdown, Socket, SpaMessage, State,
};

type Log = Arc<Mutex<Vec<String>>>;

fn log_of(log: &Log) -> Vec<String> {
    log.lock().expect("log").clone()
}

fn record(log: &Log, entry: impl Into<String>) {
    log.lock().expect("log").push(entry.into());
}

struct Recorded {
    name: &'static str,
    log: Log,
    fail_setup: bool,
}

#[async_trait]
impl Resource for Recorded {
    async fn setup(&self) -> Result<(), BoxError> {
        if self.fail_setup {
            return Err(format!("{} cannot start", self.name).into());
        }
        record(&self.log, format!("setup {}", self.name));
        Ok(())
    }
    async fn teardown(&self) -> Result<(), BoxError> {
        record(&self.log, format!("teardown {}", self.name));
        Ok(())
    }
}

// Distinct types so handlers can take each as `Res<T>`.
struct First(Recorded);
struct Second(Recorded);
struct Local(Recorded);

macro_rules! delegate_resource {
    ($($ty:ident),*) => {$(
        #[async_trait]
        impl Resource for $ty {
            async fn setup(&self) -> Result<(), BoxError> { self.0.setup().await }
            async fn teardown(&self) -> Result<(), BoxError> { self.0.teardown().await }
        }
    )*};
}
delegate_resource!(First, Second, Local);

fn recorded(name: &'static str, log: &Log) -> Recorded {
    Recorded {
        name,
        log: Arc::clone(log),
        fail_setup: false,
    }
}

fn fresh_bus() -> (MemoryBus, DistributedApplication) {
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .watch_signals(false)
        .config(Config {
            shutdown_grace_ms: 2_000,
            ..Config::default()
        })
        .socket_provider(Arc::new(MemorySocketProvider::new(bus.clone())));
    (bus, app)
}

async fn run_bounded(app: DistributedApplication) -> spa_dat::Result<spa_dat::Stopped> {
    tokio::time::timeout(Duration::from_secs(20), app.start_async())
        .await
        .expect("run() returns")
}

#[tokio::test]
async fn resources_set_up_before_and_torn_down_after_in_reverse() {
    let log: Log = Log::default();
    let (bus, app) = fresh_bus();
    let handler_log = Arc::clone(&log);
    let app = app
        .resource(First(recorded("first", &log)))
        .resource(Second(recorded("second", &log)))
        .add_application(
            Application::producer(
                "worker",
                move |_first: Res<First>, _second: Res<Second>, _local: Res<Local>| {
                    let log = Arc::clone(&handler_log);
                    async move { record(&log, "handler") }
                },
            )
            .resource(Local(recorded("local", &log))),
        );
    run_bounded(app).await.expect("runs");
    assert_eq!(
        log_of(&log),
        [
            "setup first",
            "setup second",
            "setup local",
            "handler",
            "teardown local",
            "teardown second",
            "teardown first"
        ]
    );
    assert_eq!(bus.subscription_count(), 0, "sockets closed");
}

#[tokio::test]
async fn failed_setup_half_way_tears_down_what_was_set_up() {
    let log: Log = Log::default();
    let (bus, app) = fresh_bus();
    let handler_log = Arc::clone(&log);
    let app = app
        .resource(First(recorded("first", &log)))
        .resource(Second(Recorded {
            fail_setup: true,
            ..recorded("second", &log)
        }))
        .add_producer("worker", move || {
            let log = Arc::clone(&handler_log);
            async move { record(&log, "handler") }
        });
    let error = run_bounded(app).await.expect_err("start-up fails");
    assert!(
        matches!(
            &error,
            Error::Resource {
                stage: "set up",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("second cannot start"), "{error}");
    assert_eq!(log_of(&log), ["setup first", "teardown first"]);
    assert_eq!(bus.subscription_count(), 0);
}

#[tokio::test]
async fn failed_app_setup_tears_down_the_apps_already_up() {
    let log: Log = Log::default();
    let (bus, app) = fresh_bus();
    let app = app
        .resource(First(recorded("shared", &log)))
        .add_application(Application::consumer("a-listener", ["x"], || async {}))
        .add_application(
            Application::consumer("b-listener", ["y"], || async {}).resource(Local(Recorded {
                fail_setup: true,
                ..recorded("local", &log)
            })),
        );
    let error = run_bounded(app).await.expect_err("start-up fails");
    assert!(error.to_string().contains("b-listener"), "{error}");
    assert_eq!(log_of(&log), ["setup shared", "teardown shared"]);
    assert_eq!(bus.subscription_count(), 0, "a-listener's socket closed");
}

#[tokio::test]
async fn missing_state_is_reported_before_any_socket_connects() {
    struct Missing;
    let (bus, app) = fresh_bus();
    let app = app
        .add_consumer("needs-state", ["t"], |_s: State<Missing>| async {})
        .add_producer("reads-message", |_m: SpaMessage| async {});
    let error = run_bounded(app).await.expect_err("rejected");
    let text = error.to_string();
    assert!(
        text.contains("needs-state") && text.contains("no shared state of type"),
        "{text}"
    );
    assert!(text.contains("Missing"), "{text}");
    assert!(
        text.contains("reads-message") && text.contains("producer has no incoming message"),
        "{text}"
    );
    assert_eq!(bus.subscription_count(), 0, "nothing connected");
}

#[tokio::test]
async fn malformed_messages_and_panicking_handlers_do_not_stop_the_consumer() {
    let (_bus, app) = fresh_bus();
    let handled = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(Mutex::new(Vec::<Bytes>::new()));
    let (h, d) = (Arc::clone(&handled), Arc::clone(&dead));
    let app = app
        .add_application(
            Application::consumer("fragile", ["work"], move |message: SpaMessage| {
                let handled = Arc::clone(&h);
                async move {
                    match message.payload_str()? {
                        "boom" => panic!("handler blew up"),
                        "fail" => Err(BoxError::from("refused")),
                        _ => {
                            handled.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        }
                    }
                }
            })
            .dead_letter_topic("dead"),
        )
        .add_consumer(
            "undertaker",
            ["dead"],
            move |socket: Socket, shutdown: Shutdown| {
                let _ = socket;
                let _ = shutdown;
                async {}
            },
        );
    let run = TestRun::start(app).await.expect("starts");
    // Watch the dead-letter topic directly on the run's bus.
    let provider = MemorySocketProvider::new(run.bus().clone());
    let mut watcher = spa_dat::socket::spi::SocketProvider::connect(
        &provider,
        spa_dat::socket::spi::SocketOptions::new("watcher").topics(["dead"]),
    )
    .await
    .expect("connects");
    let raw = run.socket().transport();
    raw.publish_bytes("work", Bytes::from_static(b"{not json"))
        .await
        .expect("published");
    raw.publish_bytes("work", Bytes::from_static(b"\xff\x00"))
        .await
        .expect("published");
    run.publish(SpaMessage::new("work", "boom"))
        .await
        .expect("published");
    run.publish(SpaMessage::new("work", "fail"))
        .await
        .expect("published");
    for _ in 0..3 {
        run.publish(SpaMessage::new("work", "ok"))
            .await
            .expect("published");
    }
    // Every message handled or dead-lettered: no polling for either.
    run.settled().await.expect("settles");
    while dead.lock().expect("dead").len() < 4 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), watcher.inbox.recv())
            .await
            .expect("dead letters arrive")
            .expect("open");
        d.lock().expect("dead").push(delivery.payload.clone());
    }
    run.stop().await.expect("run ends cleanly");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        3,
        "good messages after bad ones handled"
    );
    let dead = dead.lock().expect("dead").clone();
    assert_eq!(
        dead[0],
        Bytes::from_static(b"{not json"),
        "undecodable bytes kept as they were"
    );
    assert_eq!(dead[1], Bytes::from_static(b"\xff\x00"));
    let boom = SpaMessage::from_json(&dead[2]).expect("envelope");
    assert_eq!(boom.payload_str().expect("text"), "boom");
    let fail = SpaMessage::from_json(&dead[3]).expect("envelope");
    assert_eq!(fail.payload_str().expect("text"), "fail");
}

#[tokio::test]
async fn shutdown_lets_in_flight_handlers_finish_and_drains_the_in_process_inbox() {
    let log: Log = Log::default();
    let (_bus, app) = fresh_bus();
    let l = Arc::clone(&log);
    let app = app
        .add_consumer("slow", ["jobs"], move |shutdown: Shutdown| {
            let log = Arc::clone(&l);
            async move {
                record(&log, "started");
                shutdown.trigger();
                tokio::time::sleep(Duration::from_millis(300)).await;
                record(&log, "finished");
            }
        })
        .add_producer("submit", |socket: Socket| async move {
            socket.publish(SpaMessage::new("jobs", "1")).await?;
            socket.publish(SpaMessage::new("jobs", "2")).await
        });
    run_bounded(app).await.expect("clean");
    // The in-process bus never delivers a message again: the second job, published before
    // shutdown, is handled within the grace period instead of being lost.
    assert_eq!(
        log_of(&log),
        ["started", "finished", "started", "finished"],
        "the first job finished, the second drained"
    );
}

/// Sets its flag when dropped: put in a handler's future, it proves the future was dropped.
struct DropGuard(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn handlers_past_the_grace_period_are_cancelled() {
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = Arc::clone(&dropped);
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .watch_signals(false)
        .config(Config {
            shutdown_grace_ms: 100,
            ..Config::default()
        })
        .socket_provider(Arc::new(MemorySocketProvider::new(bus)))
        .add_consumer("stuck", ["jobs"], move |shutdown: Shutdown| {
            let guard = DropGuard(Arc::clone(&d));
            async move {
                let _guard = guard;
                shutdown.trigger();
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        })
        .add_producer("submit", |socket: Socket| async move {
            socket.publish(SpaMessage::new("jobs", "1")).await
        });
    let started = Instant::now();
    run_bounded(app).await.expect("clean");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the stuck handler's future was dropped by the time the run returned, not left running"
    );
}

#[tokio::test]
async fn run_returns_when_producers_are_done_and_no_consumer_remains() {
    let (_bus, app) = fresh_bus();
    let count = Arc::new(AtomicUsize::new(0));
    let (a, b) = (Arc::clone(&count), Arc::clone(&count));
    let app = app
        .add_producer("one", move || {
            let a = Arc::clone(&a);
            async move {
                a.fetch_add(1, Ordering::SeqCst);
            }
        })
        .add_producer("two", move || {
            let b = Arc::clone(&b);
            async move {
                b.fetch_add(1, Ordering::SeqCst);
            }
        });
    let stopped = run_bounded(app).await.expect("returns by itself");
    assert_eq!(
        stopped,
        spa_dat::Stopped::Finished,
        "nothing asked it to stop"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failing_producer_is_reported_and_does_not_stop_the_others() {
    let (_bus, app) = fresh_bus();
    let done = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&done);
    let app = app
        .add_producer("broken", || async {
            if std::hint::black_box(true) {
                panic!("producer bug")
            }
        })
        .add_producer("fine", move || {
            let d = Arc::clone(&d);
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                d.fetch_add(1, Ordering::SeqCst);
            }
        });
    let error = run_bounded(app).await.expect_err("reported");
    assert!(error.to_string().contains("producer bug"), "{error}");
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Sum {
    a: i64,
    b: i64,
}

#[tokio::test]
async fn handlers_reply_to_requests_with_typed_payloads() {
    let (_bus, app) = fresh_bus();
    let app = app.add_consumer("adder", ["math/add"], |Json(sum): Json<Sum>| async move {
        Json(serde_json::json!({ "result": sum.a + sum.b }))
    });
    let run = TestRun::start(app).await.expect("starts");
    let request = SpaMessage::json("math/add", &Sum { a: 2, b: 40 }).expect("JSON");
    let reply = run.request(request).await.expect("answered");
    run.stop().await.expect("clean");
    let value: serde_json::Value = reply.payload_json().expect("JSON");
    assert_eq!(value["result"], 42);
    assert_eq!(
        reply.client_name.as_deref(),
        Some("adder"),
        "reply stamped by the responder app"
    );
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn a_single_application_runs_its_own_life_cycle() {
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let provider = Arc::new(MemorySocketProvider::new(bus.clone()));
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    let mut app = Application::consumer("solo", ["solo/in"], move |shutdown: Shutdown| {
        let s = Arc::clone(&s);
        async move {
            if s.fetch_add(1, Ordering::SeqCst) == 1 {
                shutdown.trigger();
            }
        }
    })
    .socket_provider(provider.clone());
    app.setup().await.expect("setup");
    assert_eq!(bus.subscription_count(), 2, "topic and reply subscriptions");
    let mut publisher = spa_dat::socket::spi::SocketProvider::connect(
        &*provider,
        spa_dat::socket::spi::SocketOptions::new("p"),
    )
    .await
    .expect("connect");
    for _ in 0..2 {
        publisher
            .socket
            .publish(&SpaMessage::new("solo/in", "x"))
            .await
            .expect("publish");
    }
    tokio::time::timeout(Duration::from_secs(5), app.run_async())
        .await
        .expect("stops")
        .expect("runs");
    app.teardown().await.expect("teardown");
    app.teardown().await.expect("teardown is idempotent");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    publisher.socket.close().await.expect("close");
    assert!(publisher.inbox.recv().await.is_none());
    assert_eq!(bus.subscription_count(), 0);
}

#[test]
fn public_handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Socket>();
    assert_send_sync::<Shutdown>();
    assert_send_sync::<SpaMessage>();
    assert_send_sync::<spa_dat::MessageBuilder>();
    assert_send_sync::<MemoryBus>();
    assert_send_sync::<Error>();
}

/// A transport of a user's own (here: the in-process bus) with a bug: it panics when a reply
/// is published. The runtime must still tear the application down.
struct PanickingReplies {
    inner: Arc<dyn spa_dat::socket::spi::SocketProvider>,
    log: Log,
}

struct PanickingSocket {
    inner: Arc<dyn spa_dat::socket::spi::SpaSocket>,
    log: Log,
}

#[async_trait]
impl spa_dat::socket::spi::SpaSocket for PanickingSocket {
    async fn send(&self, message: spa_dat::socket::spi::Outgoing) -> spa_dat::Result<()> {
        // Replies on the in-process bus go to its reply topics.
        if message.topic.starts_with("_spa/reply/") {
            panic!("transport bug in publishing a reply")
        }
        self.inner.send(message).await
    }
    async fn subscribe(&self, topics: &[String]) -> spa_dat::Result<()> {
        self.inner.subscribe(topics).await
    }
    async fn unsubscribe(&self, topics: &[String]) -> spa_dat::Result<()> {
        self.inner.unsubscribe(topics).await
    }
    async fn reply_route(
        &self,
        destination: &str,
    ) -> spa_dat::Result<spa_dat::socket::spi::PendingReply> {
        self.inner.reply_route(destination).await
    }
    async fn close(&self) -> spa_dat::Result<()> {
        record(&self.log, "socket closed");
        self.inner.close().await
    }

    fn wire_format(&self) -> spa_dat::socket::WireFormat {
        self.inner.wire_format()
    }
}

#[async_trait]
impl spa_dat::socket::spi::SocketProvider for PanickingReplies {
    async fn connect(
        &self,
        options: spa_dat::socket::spi::SocketOptions,
    ) -> spa_dat::Result<spa_dat::socket::spi::Connection> {
        let connection = self.inner.connect(options).await?;
        Ok(spa_dat::socket::spi::Connection {
            socket: Arc::new(PanickingSocket {
                inner: connection.socket,
                log: Arc::clone(&self.log),
            }),
            inbox: connection.inbox,
        })
    }
    fn rebuild(&self, topics: Vec<String>) -> Arc<dyn spa_dat::socket::spi::SocketProvider> {
        self.inner.rebuild(topics)
    }
    fn default_topics(&self) -> &[String] {
        self.inner.default_topics()
    }
    fn capabilities(&self) -> spa_dat::socket::spi::Capabilities {
        self.inner.capabilities()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test]
async fn an_application_whose_task_panics_is_still_torn_down_and_reported() {
    let (bus, app) = fresh_bus();
    let log = Log::default();
    let buggy = Arc::new(PanickingReplies {
        inner: Arc::new(MemorySocketProvider::new(bus.clone())),
        log: Arc::clone(&log),
    });
    let answerer = Application::consumer("answerer", ["questions"], |_m: SpaMessage| async {
        "an answer"
    })
    .socket_provider(buggy)
    .resource(Local(recorded("local", &log)));
    let app = app.add_application(answerer).add_producer(
        "asker",
        |socket: Socket, shutdown: Shutdown| async move {
            let _ = socket
                .request_with_timeout(
                    SpaMessage::new("questions", "?"),
                    Duration::from_millis(300),
                )
                .await;
            shutdown.trigger();
        },
    );
    let error = run_bounded(app).await.expect_err("the panic is reported");
    assert!(error.to_string().contains("answerer"), "{error}");
    let log = log_of(&log);
    assert!(log.contains(&"socket closed".to_owned()), "{log:?}");
    assert!(log.contains(&"teardown local".to_owned()), "{log:?}");
}

#[tokio::test]
async fn topics_and_group_take_placeholders_from_the_environment() {
    std::env::set_var("SPA_TEST_PLACEHOLDER_SITE", "berlin");
    std::env::set_var("SPA_TEST_PLACEHOLDER_EXTRA", "plant/extra/a, plant/extra/b");
    let (bus, app) = fresh_bus();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let app = app
        .add_application(
            Application::consumer(
                "site-reader",
                [
                    "plant/${SPA_TEST_PLACEHOLDER_SITE}/temp",
                    "${SPA_TEST_PLACEHOLDER_EXTRA}",
                ],
                move |message: SpaMessage, shutdown: Shutdown| {
                    let s = Arc::clone(&s);
                    async move {
                        let mut seen = s.lock().expect("lock");
                        seen.push(message.topic);
                        if seen.len() == 3 {
                            shutdown.trigger();
                        }
                    }
                },
            )
            .group("readers-${SPA_TEST_PLACEHOLDER_SITE}"),
        )
        .add_producer("publisher", |socket: Socket| async move {
            for topic in ["plant/berlin/temp", "plant/extra/a", "plant/extra/b"] {
                socket.publish(SpaMessage::new(topic, "x")).await?;
            }
            Ok::<_, spa_dat::Error>(())
        });
    let stopped = run_bounded(app).await.expect("runs");
    assert_eq!(
        stopped,
        spa_dat::Stopped::Requested,
        "the consumer triggered it"
    );
    assert_eq!(
        *seen.lock().expect("lock"),
        ["plant/berlin/temp", "plant/extra/a", "plant/extra/b"]
    );
    drop(bus);
}

#[tokio::test]
async fn a_placeholder_without_its_variable_fails_the_start_naming_it() {
    let (bus, app) = fresh_bus();
    let app = app.add_application(Application::consumer(
        "unset-reader",
        ["plant/${SPA_TEST_PLACEHOLDER_NEVER_SET}/temp"],
        |_m: SpaMessage| async {},
    ));
    let error = run_bounded(app).await.expect_err("cannot start");
    let text = error.to_string();
    assert!(text.contains("SPA_TEST_PLACEHOLDER_NEVER_SET"), "{text}");
    assert!(text.contains("unset-reader"), "{text}");
    assert_eq!(bus.subscription_count(), 0, "nothing subscribed");
}

/// Lines logged while the returned guard lives (this thread only: a current-thread runtime).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
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
        .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with_writer(move || Sink(Arc::clone(&sink)))
        .finish()
        .set_default();
    (logs, guard)
}

#[tokio::test]
async fn bad_json_input_is_a_warning_and_an_unrequested_reply_is_reported_once() {
    #[derive(serde::Deserialize)]
    struct Reading {
        #[allow(dead_code)]
        celsius: f64,
    }
    let (logs, _guard) = capture_logs();
    let (_bus, app) = fresh_bus();
    let app = app
        .add_consumer("typed", ["typed"], |_reading: Json<Reading>| async {})
        .add_consumer("answers-anyway", ["plain"], |_m: SpaMessage| async {
            "an answer nobody asked for"
        })
        .add_consumer("last", ["last"], |shutdown: Shutdown| async move {
            shutdown.trigger();
        })
        .add_producer("inputs", |socket: Socket| async move {
            socket.publish(SpaMessage::new("typed", "not json")).await?;
            for _ in 0..3 {
                socket.publish(SpaMessage::new("plain", "x")).await?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            socket.publish(SpaMessage::new("last", "")).await
        });
    run_bounded(app).await.expect("runs");
    let logs = String::from_utf8(logs.lock().expect("lock").clone()).expect("utf-8");
    let lines = |level: &str, text: &str| {
        logs.lines()
            .filter(|l| l.contains(&format!(" {level} ")) && l.contains(text))
            .count()
    };
    assert_eq!(lines("WARN", "the handler cannot take"), 1, "{logs}");
    // It says what becomes of the message, and no `position=None` on a bus without positions.
    let line = logs
        .lines()
        .find(|l| l.contains("the handler cannot take"))
        .unwrap_or_default();
    assert!(line.contains("dropped: no dead-letter topic"), "{line}");
    assert!(
        !line.contains("position") && !line.contains("skipping"),
        "{line}"
    );
    assert_eq!(lines("ERROR", "handler failed"), 0, "{logs}");
    assert_eq!(
        lines("WARN", "without a response topic"),
        1,
        "once at WARN: {logs}"
    );
    assert_eq!(
        lines("DEBUG", "without a response topic"),
        2,
        "then at DEBUG: {logs}"
    );
}

#[tokio::test]
async fn readiness_is_false_before_the_run_true_while_it_runs_and_false_after() {
    let (_bus, app) = fresh_bus();
    let app = app.add_consumer("ready-reader", ["ready"], |_m: SpaMessage| async {});
    let readiness = app.readiness();
    let shutdown = app.shutdown_handle();
    assert!(!readiness.is_ready());
    assert_eq!(readiness.not_ready(), ["not running"]);
    let run = tokio::spawn(app.start_async());
    tokio::time::timeout(Duration::from_secs(5), readiness.ready())
        .await
        .expect("ready");
    assert!(readiness.not_ready().is_empty());
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run stops")
        .expect("join")
        .expect("runs");
    assert!(!readiness.is_ready());
}

/// `GET path` on 127.0.0.1:`port`: the status code and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_answer_live_and_ready_over_http() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .watch_signals(false)
        .config(Config {
            health_addr: Some(format!("127.0.0.1:{port}")),
            ..Config::default()
        })
        .socket_provider(Arc::new(MemorySocketProvider::new(bus)))
        .add_consumer("probed", ["probed"], |_m: SpaMessage| async {});
    let readiness = app.readiness();
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    tokio::time::timeout(Duration::from_secs(5), readiness.ready())
        .await
        .expect("ready");
    let (live, ready, missing) = tokio::task::spawn_blocking(move || {
        (
            http_get(port, "/health/live"),
            http_get(port, "/health/ready"),
            http_get(port, "/nope"),
        )
    })
    .await
    .expect("probe");
    assert_eq!(live.map(|(s, _)| s), Some(200));
    assert_eq!(ready, Some((200, "ready\n".to_owned())));
    assert_eq!(missing.map(|(s, _)| s), Some(404));
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run stops")
        .expect("join")
        .expect("runs");
    let after = tokio::task::spawn_blocking(move || http_get(port, "/health/live"))
        .await
        .expect("probe");
    assert_eq!(after, None, "the probes stop with the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stuck_on_a_message_makes_the_run_not_ready_until_it_moves_again() {
    let (_bus, app) = fresh_bus();
    let release = Arc::new(tokio::sync::Notify::new());
    let r = Arc::clone(&release);
    let app = app
        .add_application(
            Application::consumer("stuckish", ["stuck"], move |_m: SpaMessage| {
                let r = Arc::clone(&r);
                async move { r.notified().await }
            })
            .stall_after(Duration::from_millis(300)),
        )
        .add_producer("poker", |socket: Socket| async move {
            socket.publish(SpaMessage::new("stuck", "x")).await
        });
    let readiness = app.readiness();
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    tokio::time::timeout(Duration::from_secs(5), readiness.ready())
        .await
        .expect("ready at first");
    let deadline = Instant::now() + Duration::from_secs(3);
    while readiness.is_ready() {
        assert!(
            Instant::now() < deadline,
            "still ready while the handler hangs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readiness.not_ready(), ["stuckish: no progress"]);
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(3), readiness.ready())
        .await
        .expect("ready again once it finished");
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run stops")
        .expect("join")
        .expect("runs");
}
