//! `spa_dat::testing::TestRun`: an application inside a test, with no broker and no sleeps —
//! publish, request, wait until everything is finished with, read what was published.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::faults::Faults;
use spa_dat::testing::TestRun;
use spa_dat::{Application, DistributedApplication, Json, Shutdown, SpaMessage, State, Stopped};

#[derive(serde::Serialize, serde::Deserialize)]
struct Order {
    id: u32,
    total: u64,
}

#[derive(Default)]
struct Sales {
    orders: AtomicU64,
}

async fn record(Json(order): Json<Order>, sales: State<Sales>) -> spa_dat::Result<()> {
    if order.total == 0 {
        return Err(spa_dat::Error::rejected("an empty order"));
    }
    // Slower than the count below: a request published after the orders overtakes them.
    tokio::task::yield_now().await;
    sales.orders.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn count(sales: State<Sales>) -> String {
    sales.orders.load(Ordering::SeqCst).to_string()
}

fn shop() -> DistributedApplication {
    DistributedApplication::new()
        .without_registered_handlers()
        .state(Sales::default())
        .add_application(
            Application::consumer("record", ["orders"], record).dead_letter_topic("orders/dead"),
        )
        .add_consumer("count", ["orders/count"], count)
}

/// The first hour's pattern: publish 20 orders, ask for the count, stop — with `settled`
/// between the publishes and the request, the count is 20 and nothing is lost.
#[tokio::test]
async fn publish_settle_request_counts_every_order_and_the_dead_letter() {
    let run = TestRun::start(shop()).await.expect("starts");
    for id in 0..20 {
        run.publish_json("orders", &Order { id, total: 10 })
            .await
            .expect("publish");
    }
    run.publish_json("orders", &Order { id: 20, total: 0 })
        .await
        .expect("publish");
    run.settled().await.expect("settles");
    let reply = run
        .request(SpaMessage::new("orders/count", ""))
        .await
        .expect("reply");
    assert_eq!(reply.payload_str().expect("text"), "20");
    let dead = run.published("orders/dead");
    assert_eq!(dead.len(), 1, "the empty order dead-lettered");
    let order: Order = dead[0].payload_json().expect("the order, as it was");
    assert_eq!(order.id, 20);
    assert_eq!(run.published("orders").len(), 21, "what the test published");
    assert_eq!(run.stop().await.expect("stops"), Stopped::Requested);
}

#[tokio::test]
async fn an_application_that_cannot_start_is_an_error_naming_why() {
    // `count` needs the `Sales` state, which this application lacks.
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .add_consumer("count", ["orders/count"], count);
    let error = TestRun::start(app).await.expect_err("does not start");
    assert!(error.to_string().contains("Sales"), "{error}");
}

#[tokio::test]
async fn settled_fails_naming_what_is_unfinished_instead_of_hanging() {
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .add_consumer("stuck", ["jobs"], |_: SpaMessage| async {
            std::future::pending::<()>().await;
        });
    let run = TestRun::start(app).await.expect("starts");
    run.publish(SpaMessage::new("jobs", "1"))
        .await
        .expect("publish");
    let error = run
        .settled_within(Duration::from_millis(200))
        .await
        .expect_err("a hung handler never settles");
    assert!(
        error.to_string().contains("1 messages still unfinished"),
        "{error}"
    );
}

#[tokio::test]
async fn two_runs_at_once_never_see_each_others_messages() {
    let (first, second) = tokio::join!(TestRun::start(shop()), TestRun::start(shop()));
    let (first, second) = (first.expect("first"), second.expect("second"));
    first
        .publish_json("orders", &Order { id: 1, total: 5 })
        .await
        .expect("publish");
    first.settled().await.expect("settles");
    second.settled().await.expect("settles");
    async fn count(run: &TestRun) -> String {
        run.request(SpaMessage::new("orders/count", ""))
            .await
            .expect("reply")
            .payload_str()
            .expect("text")
            .to_owned()
    }
    assert_eq!(count(&first).await, "1");
    assert_eq!(count(&second).await, "0");
    assert!(second.published("orders").is_empty());
}

#[tokio::test]
async fn on_the_fault_injecting_bus_duplicates_are_settled_too() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .add_consumer("counted", ["jobs"], move |_: SpaMessage| {
            let calls = Arc::clone(&c);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
            }
        });
    let faults = Faults {
        seed: 3,
        duplicate: 0.2,
        ..Faults::default()
    };
    let run = TestRun::start_with_faults(app, faults)
        .await
        .expect("starts");
    for n in 0..200 {
        run.publish(SpaMessage::new("jobs", n.to_string()))
            .await
            .expect("publish");
    }
    run.settled().await.expect("settles");
    let duplicated = run.faults().expect("a faulty bus").duplicated();
    assert!(duplicated > 0, "faults were injected");
    assert_eq!(
        calls.load(Ordering::SeqCst) as u64,
        200 + duplicated,
        "every copy handled once settled"
    );
    run.stop().await.expect("stops");
}

#[tokio::test]
async fn a_run_a_handler_ends_is_awaited_with_stopped() {
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .add_consumer("last", ["end"], |shutdown: Shutdown| async move {
            shutdown.trigger();
        });
    let run = TestRun::start(app).await.expect("starts");
    run.publish(SpaMessage::new("end", ""))
        .await
        .expect("publish");
    assert_eq!(run.stopped().await.expect("ends"), Stopped::Requested);
}

/// `start` returns once the run is ready: a message published right after it is counted even
/// when the consumers' tasks have not run yet (the test's body on a task of its own).
#[tokio::test]
async fn settled_right_after_start_waits_for_the_handler() {
    tokio::spawn(async {
        let handled = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&handled);
        let app = DistributedApplication::new()
            .without_registered_handlers()
            .add_consumer("slow", ["jobs"], move |_: SpaMessage| {
                let handled = Arc::clone(&h);
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    handled.fetch_add(1, Ordering::SeqCst);
                }
            });
        let run = TestRun::start(app).await.expect("starts");
        run.publish(SpaMessage::new("jobs", "1"))
            .await
            .expect("publish");
        run.settled().await.expect("settles");
        assert_eq!(
            handled.load(Ordering::SeqCst),
            1,
            "settled returned before the handler finished"
        );
        run.stop().await.expect("stops");
    })
    .await
    .expect("the test's task");
}

#[tokio::test]
async fn an_application_of_producers_only_starts_and_is_awaited() {
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .add_producer("once", |socket: spa_dat::Socket| async move {
            socket.publish(SpaMessage::new("out", "done")).await
        });
    let run = TestRun::start(app)
        .await
        .expect("starts (it may have ended already)");
    assert_eq!(run.stopped().await.expect("ends"), Stopped::Finished);
}

/// Item 7 of the first hour: a dead-letter consumer reads why a message came, and a consumer
/// its key, through `Received`.
#[tokio::test]
async fn a_dead_letter_consumer_reads_why_through_received() {
    use spa_dat::socket::headers::{DEAD_LETTER_REASON, DEAD_LETTER_TOPIC};
    use spa_dat::Received;
    use std::sync::Mutex;

    type Seen = Mutex<Vec<(String, String, Option<String>)>>;
    async fn inspect(message: SpaMessage, received: Received, seen: State<Seen>) {
        let header = |name: &str| received.headers.get(name).unwrap_or("").to_owned();
        let _ = message;
        seen.lock().expect("not poisoned").push((
            header(DEAD_LETTER_TOPIC),
            header(DEAD_LETTER_REASON),
            received
                .key
                .as_ref()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
        ));
    }
    let seen = Arc::new(Seen::default());
    let app =
        shop()
            .state_arc(Arc::clone(&seen))
            .add_consumer("dead-letters", ["orders/dead"], inspect);
    let run = TestRun::start(app).await.expect("starts");
    run.publish_keyed(
        "customer-7",
        SpaMessage::json("orders", &Order { id: 7, total: 0 }).expect("JSON"),
    )
    .await
    .expect("publish");
    run.settled().await.expect("settles");
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (topic, reason, key) = &seen[0];
    assert_eq!(topic, "orders");
    assert!(
        reason.contains("an empty order"),
        "the handler's reason: {reason}"
    );
    assert_eq!(
        key.as_deref(),
        Some("customer-7"),
        "the key travels to the dead letter"
    );
    run.stop().await.expect("stops");
}

#[tokio::test]
async fn received_is_refused_at_start_up_in_a_producer_and_a_batch_consumer() {
    use spa_dat::{Batch, Received};
    async fn producer(received: Received) {
        let _ = received;
    }
    async fn batch(messages: Batch<SpaMessage>, received: Received) {
        let _ = (messages, received);
    }
    // Inside the Batch too: no element has a delivery of its own to describe.
    async fn batch_of_received(received: Batch<Received>) {
        let _ = received;
    }
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .add_producer("producer", producer)
        .add_application(
            Application::consumer("batch", ["b"], batch).batch(10, Duration::from_millis(5)),
        )
        .add_application(
            Application::consumer("batch-of-received", ["c"], batch_of_received)
                .batch(10, Duration::from_millis(5)),
        );
    let error = TestRun::start(app)
        .await
        .expect_err("does not start")
        .to_string();
    assert!(
        error.contains("a producer has no incoming message"),
        "{error}"
    );
    assert!(error.contains("a batch has many"), "{error}");
    assert!(error.contains("batch-of-received"), "{error}");
}

/// From an outside attack on `Received`: a client forges dead-letter headers on what it
/// publishes; the dead letter carries spa-dat's own, not the client's.
#[tokio::test]
async fn forged_dead_letter_headers_never_reach_the_dead_letter_consumer() {
    use spa_dat::socket::headers::{
        DEAD_LETTER_OFFSET, DEAD_LETTER_ORIGINAL_SIZE, DEAD_LETTER_PARTITION, DEAD_LETTER_REASON,
    };
    use spa_dat::socket::spi::Outgoing;
    use spa_dat::Received;
    use std::sync::Mutex;

    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let record = Arc::clone(&seen);
    let app = shop().add_consumer(
        "dead-letters",
        ["orders/dead"],
        move |received: Received| {
            let record = Arc::clone(&record);
            async move { record.lock().expect("seen").push(received) }
        },
    );
    let run = TestRun::start(app).await.expect("starts");
    let order = SpaMessage::json("orders", &Order { id: 9, total: 0 }).expect("JSON");
    let mut forged = Outgoing::new("orders", order.to_json().expect("envelope"));
    for (name, value) in [
        (DEAD_LETTER_REASON, "all is well"),
        (DEAD_LETTER_OFFSET, "99"),
        (DEAD_LETTER_PARTITION, "7"),
        (DEAD_LETTER_ORIGINAL_SIZE, "9999999"),
        ("spa-dead-letter-invented", "yes"),
    ] {
        forged.headers.append(name, value);
    }
    run.socket()
        .transport()
        .send(forged)
        .await
        .expect("published");
    run.settled().await.expect("settles");
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1, "one dead letter");
    let headers = &seen[0].headers;
    let reason = headers.get(DEAD_LETTER_REASON).unwrap_or("");
    assert!(
        reason.contains("an empty order"),
        "spa-dat's reason: {reason}"
    );
    let forged_left: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(name, value)| {
            name.starts_with("spa-dead-letter-")
                && ["all is well", "99", "7", "9999999", "yes"].contains(value)
        })
        .collect();
    assert!(
        forged_left.is_empty(),
        "forged headers kept: {forged_left:?}"
    );
    run.stop().await.expect("stops");
}

/// Two `Received` arguments both get the delivery (the second used to fail every call).
#[tokio::test]
async fn two_received_arguments_both_describe_the_delivery() {
    use spa_dat::Received;
    use std::sync::Mutex;

    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .add_consumer("twice", ["t"], move |first: Received, second: Received| {
            let record = Arc::clone(&record);
            async move {
                record
                    .lock()
                    .expect("seen")
                    .push((first.topic.to_string(), second.topic.to_string()));
            }
        });
    let run = TestRun::start(app).await.expect("starts");
    run.publish(SpaMessage::new("t", "x"))
        .await
        .expect("published");
    run.settled().await.expect("settles");
    assert_eq!(
        *seen.lock().expect("seen"),
        [("t".to_owned(), "t".to_owned())]
    );
    run.stop().await.expect("stops");
}
