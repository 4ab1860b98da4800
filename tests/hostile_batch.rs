//! Hostile input and badly timed events against publish_batch, MQTT's close, the broker's
//! maximum packet size and message expiry, found by a second outside review (of 3a5a3a1): each
//! test failed there. Every wait is bounded.

use spa_dat_test_support as support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider, MqttVersion};
use spa_dat::socket::spi::{Connection, SocketOptions, SocketProvider};
use spa_dat::socket::WireFormat;
use spa_dat::{Error, MessageBuilder, Socket, SpaMessage};
use support::mosquitto::Mosquitto;

fn config(port: u16, version: MqttVersion) -> MqttConfig {
    MqttConfig {
        version,
        wire: WireFormat::Envelope,
        reconnect_max_ms: 300,
        ..MqttConfig::new("127.0.0.1", port)
    }
}

fn provider(config: MqttConfig) -> Arc<dyn SocketProvider> {
    Arc::new(MqttSocketProvider::new(config).expect("valid config"))
}

fn unique(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn connect_as(provider: &Arc<dyn SocketProvider>, id: &str, topics: &[&str]) -> Connection {
    tokio::time::timeout(
        Duration::from_secs(10),
        provider.connect(SocketOptions::new(id).topics(topics.iter().copied())),
    )
    .await
    .expect("connects in time")
    .expect("connects")
}

fn runtime_socket(connection: &Connection, publish_timeout: Duration) -> Socket {
    Socket::new(
        Arc::clone(&connection.socket),
        MessageBuilder::new(Some("rev2"), None),
        publish_timeout,
    )
}

// -------------------------------------------------------------------------------------------
// Message expiry: Duration::MAX ("never") overflows the rounding in Outgoing::traced.
// -------------------------------------------------------------------------------------------

/// `Outgoing::traced` rounds up with `expiry.as_secs() + u64::from(subsec_nanos > 0)`:
/// `Duration::MAX` (as_secs = u64::MAX, 999_999_999 ns) overflows — a panic in a debug build,
/// and in release it wraps to 0 and `.max(1)` makes "keep it forever" expire after ONE second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_of_duration_max_is_sent_as_a_long_expiry_not_a_panic_or_one_second() {
    let provider = MemorySocketProvider::new(MemoryBus::new(unique("expiry-max")));
    let mut reader = provider
        .connect(SocketOptions::new("reader").topics(["exp"]))
        .await
        .expect("reader");
    let writer = provider
        .connect(SocketOptions::new("writer"))
        .await
        .expect("writer");
    let socket = runtime_socket(&writer, Duration::from_secs(5));
    let publishing = tokio::spawn(async move {
        socket
            .publish(SpaMessage::new("exp", "forever").with_expiry(Duration::MAX))
            .await
    });
    let published = tokio::time::timeout(Duration::from_secs(10), publishing)
        .await
        .expect("publish ends");
    let published = match published {
        Ok(result) => result,
        Err(join) => panic!("publishing with expiry Duration::MAX panicked: {join}"),
    };
    published.expect("published");
    let delivery = tokio::time::timeout(Duration::from_secs(5), reader.inbox.recv())
        .await
        .expect("delivered in time")
        .expect("delivered");
    let secs: u64 = delivery
        .headers
        .get(spa_dat::socket::headers::MESSAGE_EXPIRY_SECS)
        .expect("expiry header")
        .parse()
        .expect("numeric");
    assert!(
        secs >= u64::from(u32::MAX),
        "Duration::MAX sent as an expiry of {secs} s"
    );
}

// -------------------------------------------------------------------------------------------
// publish_batch on MQTT: a large batch is refused (timed out), a batch during close.
// -------------------------------------------------------------------------------------------

fn describe(results: &[spa_dat::Result<()>]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for result in results {
        let key = match result {
            Ok(()) => "ok".to_owned(),
            Err(error) => error.to_string(),
        };
        *kinds.entry(key).or_insert(0) += 1;
    }
    kinds
}

/// The doc of `Socket::publish_batch` says: "a large batch waits for room, it is not
/// refused". But every message's `publish_timeout` (waiting for the order lock and for room in
/// rumqttc's channel included) starts when join_all first polls it — all at once — so the
/// tail of a batch larger than the broker takes in `publish_timeout` fails "not sent: no room".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_mqtt_batch_waits_for_room_and_is_not_refused() {
    const N: usize = 100_000;
    let broker = Mosquitto::start();
    let mqtt = provider(MqttConfig {
        publish_timeout_ms: 1_000,
        ..config(broker.port, MqttVersion::V311)
    });
    let writer = connect_as(&mqtt, &unique("batcher"), &[]).await;
    let socket = runtime_socket(&writer, Duration::from_secs(5));
    let batch = (0..N).map(|i| SpaMessage::new("batch/large", i.to_string()));
    let started = Instant::now();
    let results = tokio::time::timeout(Duration::from_secs(120), socket.publish_batch(batch))
        .await
        .expect("the batch ends");
    let took = started.elapsed();
    let kinds = describe(&results);
    let first_failed = results.iter().position(Result::is_err);
    let _ = writer.socket.close().await;
    assert!(
        results.iter().all(Result::is_ok),
        "a batch of {N} (publish_timeout 1 s) took {took:?}; first failure at index \
         {first_failed:?}; outcomes: {kinds:?}"
    );
}

/// Publishes a batch of `n` QoS 1 messages on `version`, closes the socket once a subscriber
/// has seen `seen_before_close` of them, and returns the batch's results and which messages
/// the subscriber received.
async fn batch_closed_midway(
    version: MqttVersion,
    n: usize,
    seen_before_close: usize,
) -> (Vec<spa_dat::Result<()>>, HashSet<usize>, Duration) {
    let broker = Mosquitto::start();
    let mqtt = provider(config(broker.port, version));
    let mut reader = connect_as(&mqtt, &unique("reader"), &["batch/close"]).await;
    let writer = connect_as(&mqtt, &unique("closer"), &[]).await;
    let closing = Arc::clone(&writer.socket);
    let socket = runtime_socket(&writer, Duration::from_secs(5));
    let batch = tokio::spawn(async move {
        socket
            .publish_batch((0..n).map(|i| SpaMessage::new("batch/close", i.to_string())))
            .await
    });
    let mut received = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.len() < seen_before_close && Instant::now() < deadline {
        if let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_millis(200), reader.inbox.recv()).await
        {
            let message = SpaMessage::from_json(&delivery.payload).expect("envelope");
            received.insert(support::seq_of(&message));
            delivery.ack();
        }
    }
    assert!(
        received.len() >= seen_before_close,
        "the batch got under way"
    );
    let close_started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), closing.close())
        .await
        .expect("close ends")
        .expect("closed");
    let results = tokio::time::timeout(Duration::from_secs(30), batch)
        .await
        .expect("the batch ends after close")
        .expect("no panic");
    let batch_done = close_started.elapsed();
    // Whatever the broker still delivers.
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(2), reader.inbox.recv()).await
    {
        let message = SpaMessage::from_json(&delivery.payload).expect("envelope");
        received.insert(support::seq_of(&message));
        delivery.ack();
    }
    let _ = reader.socket.close().await;
    (results, received, batch_done)
}

/// close() during a batch: every message not acknowledged should fail with `Error::Closed`
/// ("the socket was closed"). Messages still waiting for the order lock when close() ran get
/// the lock after it, are handed to a channel whose receiver is gone, and fail as
/// "not sent: no room in the connection's queue within 10s" — a transport error that blames a
/// full queue (and that a retry policy treats as transient) on a socket closed on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_by_close_fails_its_unsent_messages_as_closed() {
    let (results, received, took) = batch_closed_midway(MqttVersion::V5, 20_000, 50).await;
    let wrong: BTreeMap<String, usize> = describe(&results)
        .into_iter()
        // A publish written and not acknowledged when the connection closed says so: it may
        // have been delivered.
        .filter(|(kind, _)| {
            kind != "ok"
                && kind != &Error::Closed.to_string()
                && !kind.ends_with("the socket closed before the broker acknowledged it; it may have been delivered")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "after close() (the batch ended {took:?} after it began; subscriber got {}): \
         results other than Ok / Closed: {wrong:?}; all outcomes: {:?}",
        received.len(),
        describe(&results)
    );
}

/// The reverse at close: a message the broker took (the subscriber got it) reported to the
/// publisher as `Closed`, an error that says nothing about delivery (unlike the timeout's
/// "it may still be delivered") — a caller that publishes again duplicates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_message_delivered_at_close_is_not_reported_as_closed() {
    let (results, received, _) = batch_closed_midway(MqttVersion::V311, 20_000, 50).await;
    let delivered_but_failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(i, r)| r.is_err() && received.contains(i))
        .map(|(i, _)| i)
        .collect();
    let mut errors_of: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &delivered_but_failed {
        if let Err(error) = &results[i] {
            *errors_of.entry(error.to_string()).or_insert(0) += 1;
        }
    }
    assert!(
        delivered_but_failed.is_empty(),
        "{} messages the subscriber received were reported failed ({errors_of:?}); first \
         few: {:?}",
        delivered_but_failed.len(),
        &delivered_but_failed[..delivered_but_failed.len().min(10)]
    );
}

// -------------------------------------------------------------------------------------------
// MQTT 5: the broker's maximum packet size shrinks on a reconnect.
// -------------------------------------------------------------------------------------------

/// A TCP proxy whose target can be switched; `gate` false refuses (drops) new connections,
/// `cut` drops the current ones.
struct Proxy {
    port: u16,
    target: Arc<AtomicU16>,
    open: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let target = Arc::new(AtomicU16::new(target));
        let open = Arc::new(AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (t, o, g) = (
            Arc::clone(&target),
            Arc::clone(&open),
            Arc::clone(&generation),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let port = t.load(Ordering::SeqCst);
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            target,
            open,
            generation,
            task,
        }
    }

    fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// The broker's limit is checked when a publish is submitted, against the limit of the
/// connection then. A publish submitted during an outage (held for the next connection) that
/// is larger than what the broker announces on reconnect is handed to rumqttc, whose encoder
/// fails it with OutgoingPacketTooLarge — dropping the new connection, reconnecting, sending
/// it again... Expected: refused at once, the new connection kept (as
/// hostile_wire's a_publish_over_the_brokers_maximum_packet_size_fails_at_once_and_loses_nothing).
#[ignore = "known defect, not fixed yet: a publish held over an outage is checked only against the limit of the connection it was submitted on (issue 21 closing note)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_held_over_a_reconnect_to_a_smaller_limit_does_not_drop_the_connection() {
    let roomy = Mosquitto::start();
    let strict = Mosquitto::start_with("allow_anonymous true\nmax_packet_size 2048\n");
    let proxy = Proxy::start(roomy.port).await;
    let mqtt = provider(config(proxy.port, MqttVersion::V5));
    let id = unique("shrunk");
    let writer = connect_as(&mqtt, &id, &[]).await;
    // An outage: the connection cut, reconnects refused while the publish is submitted.
    proxy.open.store(false, Ordering::SeqCst);
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the driver notice the cut
    let socket = Arc::clone(&writer.socket);
    let big = tokio::spawn(async move {
        socket
            .publish(&SpaMessage::new("big/held", "x".repeat(10_000)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.target.store(strict.port, Ordering::SeqCst);
    proxy.open.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(40), big)
        .await
        .expect("the big publish ends")
        .expect("no panic");
    let took = started.elapsed();
    // A small publish afterwards.
    let small = tokio::time::timeout(
        Duration::from_secs(15),
        writer.socket.publish(&SpaMessage::new("small/after", "ok")),
    )
    .await;
    let connections = strict.log().matches(&format!("as {id}")).count();
    let _ = writer.socket.close().await;
    assert!(
        connections == 1 && result.is_err(),
        "the held 10 kB publish ended after {took:?} with {result:?}; the socket connected \
         {connections} times to the broker that takes 2048 bytes; a small publish after: \
         {small:?}"
    );
}

/// Found while testing batch handlers: on the in-process bus, a publish waiting for room in a
/// full inbox was overtaken by a later one of the same batch (failed before the bus gave each
/// socket's publishes a first-come-first-served turn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_batch_keeps_its_order_while_the_consumers_inbox_is_full() {
    let provider: Arc<dyn SocketProvider> = Arc::new(MemorySocketProvider::new(MemoryBus::new(
        uuid::Uuid::new_v4().to_string(),
    )));
    let mut options = SocketOptions::new("reader").topics(["rows"]);
    options.inbox_capacity = 1;
    let mut reader = provider.connect(options).await.expect("connect");
    let publisher = support::connect_publisher(&provider, "publisher").await;
    let socket = Socket::new(
        Arc::clone(&publisher.socket),
        MessageBuilder::new(Some("p"), None),
        Duration::from_secs(30),
    );
    const ROWS: usize = 2_000;
    let rows = (0..ROWS).map(|i| SpaMessage::new("rows", i.to_string()));
    let publishing = tokio::spawn(async move { socket.publish_batch(rows).await });
    let mut received = Vec::with_capacity(ROWS);
    while received.len() < ROWS {
        let delivery = tokio::time::timeout(Duration::from_secs(10), reader.inbox.recv())
            .await
            .expect("delivered in time")
            .expect("open");
        let message = SpaMessage::from_json(&delivery.payload).expect("a spa-dat message");
        received.push(support::seq_of(&message));
        // A reader slower than the publisher now and then: sends wait for room.
        if received.len() % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let results = tokio::time::timeout(Duration::from_secs(30), publishing)
        .await
        .expect("publish_batch finishes")
        .expect("no panic");
    assert!(results.iter().all(Result::is_ok));
    let first_out_of_order = received.iter().enumerate().position(|(i, &n)| i != n);
    assert_eq!(first_out_of_order, None, "delivered in the batch's order");
}

// -------------------------------------------------------------------------------------------
// Found by an outside attack on batch handlers (2f5bf4b): a QoS 0 flood ahead of a dead
// letter's PUBACK stalled the consumer for good.
// -------------------------------------------------------------------------------------------

/// A plain rumqttc 3.1.1 client (an outside publisher), polled on its own task; the count of
/// PUBACKs it received.
fn plain_publisher(port: u16) -> (rumqttc::AsyncClient, Arc<std::sync::atomic::AtomicUsize>) {
    let mut options = rumqttc::MqttOptions::new(unique("attacker"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(1000);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 4096);
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&acked);
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (client, acked)
}

fn envelope(topic: &str, payload: &str) -> Vec<u8> {
    SpaMessage::new(topic, payload.to_owned())
        .to_json()
        .expect("encodes")
}

/// An outside client floods a batch consumer's topic at QoS 0 (no broker window bounds it)
/// while the consumer is busy; then one element fails and is dead-lettered, its PUBACK behind
/// the whole flood. The socket read on for that PUBACK only up to its reading limit, then
/// waited for room only the consumer could make — and the consumer waited for the dead
/// letter: every retry timed out, for good (failed here: the sentinel never came). Past the
/// limit a QoS 0 delivery is now dropped (at most once is what it was sent with) and reading
/// goes on: the dead letter settles and the consumer moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_flood_ahead_of_a_dead_letters_acknowledgement_does_not_stall_the_consumer() {
    const FLOOD: usize = 40_000;
    let broker = Mosquitto::start_with("allow_anonymous true\n");
    let topic = unique("flood");
    let dead = format!("{topic}-dead");
    let provider = provider(MqttConfig {
        publish_timeout_ms: 2_000,
        ..config(broker.port, MqttVersion::V311)
    });
    let mut watcher = connect_as(&provider, &unique("dead-watcher"), &[dead.as_str()]).await;
    let seen = Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let entered = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (s, e, g) = (Arc::clone(&seen), Arc::clone(&entered), Arc::clone(&gate));
    let app = support::test_app(spa_dat::Config::default()).add_application(
        spa_dat::Application::consumer(
            "flooded",
            [topic.clone()],
            move |batch: spa_dat::Batch<SpaMessage>| {
                let (s, e, g) = (Arc::clone(&s), Arc::clone(&e), Arc::clone(&g));
                async move {
                    let mut result = spa_dat::BatchResult::new();
                    for (index, message) in batch.iter().enumerate() {
                        let payload = message.payload_str().unwrap_or("?").to_owned();
                        if payload == "poison" {
                            e.store(true, Ordering::SeqCst);
                            // Busy until the flood is queued for us.
                            g.acquire().await.expect("gate").forget();
                            result.fail(index, "poison");
                        }
                        s.lock().expect("seen").insert(payload);
                    }
                    result
                }
            },
        )
        .batch(10, Duration::from_millis(10))
        .dead_letter_topic(dead.clone())
        .retry(spa_dat::RetryPolicy::default().attempts(1))
        .socket_provider(Arc::clone(&provider)),
    );
    let (shutdown, run) = support::start_ready(app).await;
    let (attacker, acked) = plain_publisher(broker.port);
    attacker
        .publish(
            &topic,
            rumqttc::QoS::AtLeastOnce,
            false,
            envelope(&topic, "poison"),
        )
        .await
        .expect("queued");
    support::wait_until(
        "the handler holds the poison",
        Duration::from_secs(10),
        || entered.load(Ordering::SeqCst),
    )
    .await;
    let one = envelope(&topic, "n");
    for _ in 0..FLOOD {
        attacker
            .publish(&topic, rumqttc::QoS::AtMostOnce, false, one.clone())
            .await
            .expect("queued");
    }
    // The broker routes in order: once it acknowledged this marker, the flood is queued for
    // the consumer ahead of anything it is sent later.
    attacker
        .publish(
            format!("{topic}-marker"),
            rumqttc::QoS::AtLeastOnce,
            false,
            "m",
        )
        .await
        .expect("queued");
    support::wait_until("the broker took the flood", Duration::from_secs(30), || {
        acked.load(Ordering::SeqCst) >= 2
    })
    .await;
    // The poison fails now: its dead letter's PUBACK is behind the flood.
    gate.add_permits(1);
    let dead_letter = tokio::time::timeout(Duration::from_secs(10), watcher.inbox.recv())
        .await
        .expect("the dead letter arrives")
        .expect("open");
    // A message after the flood is handled: the consumer moved on.
    attacker
        .publish(
            &topic,
            rumqttc::QoS::AtLeastOnce,
            false,
            envelope(&topic, "sentinel"),
        )
        .await
        .expect("queued");
    let s = Arc::clone(&seen);
    support::wait_until(
        "the sentinel after the flood",
        Duration::from_secs(30),
        || s.lock().expect("seen").contains("sentinel"),
    )
    .await;
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
    let dead_message = SpaMessage::from_json(&dead_letter.payload).expect("envelope");
    assert_eq!(dead_message.payload_str().ok(), Some("poison"));
    assert!(
        seen.lock().expect("seen").contains("n"),
        "flood messages before the limit are handled"
    );
}
