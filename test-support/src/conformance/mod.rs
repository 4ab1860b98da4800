//! The transport conformance suite: one set of tests written against `SpaSocket`, run for
//! every transport (modelled on Watermill's universal Pub/Sub tests). A transport file calls
//! `conformance_tests!(make_transport())`; capabilities a transport lacks are declared by its
//! provider and the affected tests assert that declaration instead of silently passing.

mod hostile;
pub use hostile::{hostile_peers, poison_under_load};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spa_dat::socket::headers;
use spa_dat::socket::spi::{
    Connection, Inbox, Outgoing, PendingReply, SocketOptions, SocketProvider, SpaSocket,
};
use spa_dat::{Error, QualityOfService, SpaMessage};

/// Counts a client's connections to the broker, by client id.
pub type ConnectionCount = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// A transport under test.
#[derive(Clone)]
pub struct Transport {
    /// Builds sockets.
    pub provider: Arc<dyn SocketProvider>,
    /// How long deliveries may take before a test gives up.
    pub patience: Duration,
    /// Pause after subscribing when the transport's subscribe is not synchronous.
    pub settle: Duration,
    /// Separator the transport allows in topic names (`/` for MQTT, `.` for Kafka).
    pub separator: &'static str,
    /// Keeps the broker of this test alive.
    pub guard: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// Builds sockets that may publish 2 MiB, where the broker takes that much (hostile
    /// clients); `None` where it does not (Kafka's default `message.max.bytes`).
    pub big: Option<Arc<dyn SocketProvider>>,
    /// How many times the client with this id connected to the broker (from its log), where
    /// the transport has connections to count.
    pub connections_of: Option<ConnectionCount>,
}

impl Transport {
    /// A topic no other test (or earlier run) uses.
    pub fn topic(&self, name: &str) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!(
            "conformance{sep}{name}{sep}{}",
            &id[..12],
            sep = self.separator
        )
    }

    /// A socket of `provider` (another configuration of this transport), without group.
    pub async fn connect_with(
        &self,
        provider: &Arc<dyn SocketProvider>,
        topics: &[&str],
    ) -> Connection {
        let options = SocketOptions::new(format!(
            "conformance-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))
        .topics(topics.iter().copied());
        provider.connect(options).await.expect("socket connects")
    }

    /// A socket subscribed to `topics` (in `group`, if any), past the transport's settle time.
    pub async fn connect(&self, topics: &[&str], group: Option<&str>) -> Connection {
        let mut options = SocketOptions::new(format!(
            "conformance-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))
        .topics(topics.iter().copied());
        options.group = group.map(str::to_owned);
        options.inbox_capacity = 4096;
        let connection = self
            .provider
            .connect(options)
            .await
            .expect("socket connects");
        if !topics.is_empty() {
            self.settle().await;
        }
        connection
    }

    /// Waits [`Transport::settle`] where the transport's subscribe is not synchronous.
    pub async fn settle(&self) {
        if !self.provider.capabilities().subscribe_is_synchronous {
            tokio::time::sleep(self.settle).await;
        }
    }
}

fn full_message(topic: &str, i: usize) -> SpaMessage {
    SpaMessage::new(topic, format!("{{\"i\":{i},\"text\":\"grüße ✓\"}}"))
        .with_content_type("application/json")
        .with_client_id(format!("client-{i}"))
        .with_client_name("conformance")
        .with_qos(QualityOfService::AtLeastOnce)
        .with_response_topic(format!("{topic}/reply/{i}"))
        .with_timestamp(1_700_000_000 + i as i64)
}

fn seq_message(topic: &str, publisher: usize, seq: usize) -> SpaMessage {
    SpaMessage::new(topic, format!("{publisher}:{seq}")).with_qos(QualityOfService::AtLeastOnce)
}

fn parse_seq(message: &SpaMessage) -> (usize, usize) {
    let text = message.payload_str().expect("utf-8");
    let (publisher, seq) = text.split_once(':').expect("publisher:seq");
    (
        publisher.parse().expect("publisher"),
        seq.parse().expect("seq"),
    )
}

/// Receives exactly `count` messages (acknowledging each), or panics after `patience`
/// without news.
pub async fn receive(inbox: &mut Inbox, count: usize, patience: Duration) -> Vec<SpaMessage> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        match tokio::time::timeout(patience, inbox.recv()).await {
            Ok(Some(delivery)) => {
                let message = SpaMessage::from_json(&delivery.payload).expect("decodes");
                delivery.ack();
                received.push(message);
            }
            Ok(None) => panic!("inbox closed after {} of {count}", received.len()),
            Err(_) => panic!(
                "only {} of {count} messages arrived (waited {patience:?} for the next)",
                received.len()
            ),
        }
    }
    received
}

/// Asserts nothing more arrives within `quiet`.
pub async fn assert_quiet(inbox: &mut Inbox, quiet: Duration) {
    if let Ok(Some(delivery)) = tokio::time::timeout(quiet, inbox.recv()).await {
        let message = SpaMessage::from_json(&delivery.payload);
        panic!("unexpected extra message: {message:?}");
    }
}

/// 100 messages, every field intact, in order.
pub async fn every_field_intact(t: &Transport) {
    let topic = t.topic("fields");
    let mut sub = t.connect(&[&topic], None).await;
    let publisher = t.connect(&[], None).await;
    let sent: Vec<SpaMessage> = (0..100).map(|i| full_message(&topic, i)).collect();
    for message in &sent {
        publisher.socket.publish(message).await.expect("publish");
    }
    let mut received = receive(&mut sub.inbox, 100, t.patience).await;
    if !t.provider.capabilities().ordered_per_publisher {
        // Spread over partitions: compare in sending order (timestamps are unique here).
        received.sort_by_key(|m| m.timestamp);
    }
    assert_eq!(received, sent);
    close(&[&sub, &publisher]).await;
}

/// 5,000 messages from 50 concurrent publishers reach each of 50 subscribers.
pub async fn many_publishers_many_subscribers(t: &Transport) {
    const PUBLISHERS: usize = 50;
    const PER_PUBLISHER: usize = 100;
    const SUBSCRIBERS: usize = 50;
    let topic = t.topic("fanout");
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subscribers.push(t.connect(&[&topic], None).await);
    }
    // Readers first: a transport may push back on publishers until subscribers read.
    let mut readers = Vec::new();
    for subscriber in &mut subscribers {
        let inbox = std::mem::replace(
            &mut subscriber.inbox,
            spa_dat::socket::spi::Inbox::channel(1).1,
        );
        let patience = t.patience;
        readers.push(tokio::spawn(async move {
            let mut inbox = inbox;
            receive(&mut inbox, PUBLISHERS * PER_PUBLISHER, patience).await
        }));
    }
    let publishers = publish_concurrently(t, &topic, PUBLISHERS, PER_PUBLISHER).await;
    for reader in readers {
        let received = reader.await.expect("reader");
        assert_no_loss_no_dupes(&received, PUBLISHERS, PER_PUBLISHER);
    }
    for c in subscribers.iter().chain(publishers.iter()) {
        c.socket.close().await.expect("close");
    }
}

async fn publish_concurrently(
    t: &Transport,
    topic: &str,
    publishers: usize,
    per_publisher: usize,
) -> Vec<Connection> {
    let mut connections = Vec::new();
    for _ in 0..publishers {
        connections.push(t.connect(&[], None).await);
    }
    let mut tasks = Vec::new();
    for (p, connection) in connections.iter().enumerate() {
        let socket = Arc::clone(&connection.socket);
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            for seq in 0..per_publisher {
                socket
                    .publish(&seq_message(&topic, p, seq))
                    .await
                    .expect("publish");
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    connections
}

fn assert_no_loss_no_dupes(received: &[SpaMessage], publishers: usize, per_publisher: usize) {
    let ids: HashSet<(usize, usize)> = received.iter().map(parse_seq).collect();
    assert_eq!(ids.len(), received.len(), "duplicates delivered");
    assert_eq!(ids.len(), publishers * per_publisher, "messages lost");
}

/// 20 topics × 100 messages in parallel: each subscriber sees exactly its topic's.
pub async fn topics_are_isolated(t: &Transport) {
    const TOPICS: usize = 20;
    const PER_TOPIC: usize = 100;
    let topics: Vec<String> = (0..TOPICS).map(|i| t.topic(&format!("iso{i}"))).collect();
    let mut tasks = Vec::new();
    let mut subscribers = Vec::new();
    for topic in &topics {
        subscribers.push(t.connect(&[topic], None).await);
    }
    for topic in &topics {
        let t = t.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let publisher = t.connect(&[], None).await;
            for i in 0..PER_TOPIC {
                publisher
                    .socket
                    .publish(&seq_message(&topic, 0, i))
                    .await
                    .expect("publish");
            }
            publisher.socket.close().await.expect("close");
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    for (topic, subscriber) in topics.iter().zip(subscribers.iter_mut()) {
        let received = receive(&mut subscriber.inbox, PER_TOPIC, t.patience).await;
        assert!(received.iter().all(|m| &m.topic == topic), "foreign topic");
        assert_quiet(&mut subscriber.inbox, Duration::from_millis(50)).await;
        subscriber.socket.close().await.expect("close");
    }
}

/// 10,000 messages from 20 publishers that close right after: none lost.
pub async fn publish_then_close(t: &Transport) {
    const PUBLISHERS: usize = 20;
    const PER_PUBLISHER: usize = 500;
    let topic = t.topic("close");
    let subscriber = t.connect(&[&topic], None).await;
    let Connection {
        socket: subscriber_socket,
        mut inbox,
    } = subscriber;
    let patience = t.patience;
    let reader =
        tokio::spawn(
            async move { receive(&mut inbox, PUBLISHERS * PER_PUBLISHER, patience).await },
        );
    let publishers = publish_concurrently(t, &topic, PUBLISHERS, PER_PUBLISHER).await;
    for publisher in &publishers {
        publisher.socket.close().await.expect("close");
    }
    let received = reader.await.expect("reader");
    assert_no_loss_no_dupes(&received, PUBLISHERS, PER_PUBLISHER);
    subscriber_socket.close().await.expect("close");
}

/// Subscribers closed and re-created between batches (one group, as a restarted consumer
/// would be): every batch arrives whole, and nothing of an earlier batch comes back.
pub async fn resubscribe_between_batches(t: &Transport) {
    let topic = t.topic("resub");
    let group = format!("resub{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let publisher = t.connect(&[], None).await;
    for batch in 0..3 {
        let mut subscriber = t.connect(&[&topic], Some(&group)).await;
        for seq in 0..100 {
            publisher
                .socket
                .publish(&seq_message(&topic, batch, seq))
                .await
                .expect("publish");
        }
        let received = receive(&mut subscriber.inbox, 100, t.patience).await;
        let seqs: Vec<(usize, usize)> = received.iter().map(parse_seq).collect();
        assert!(
            seqs.iter().all(|(b, _)| *b == batch),
            "stale batch delivered: {seqs:?}"
        );
        subscriber.socket.close().await.expect("close");
        assert!(
            subscriber.inbox.recv().await.is_none(),
            "closed socket's inbox ends"
        );
    }
    publisher.socket.close().await.expect("close");
}

/// Two groups each receive every message; members of one group share them.
pub async fn consumer_groups(t: &Transport) {
    const MESSAGES: usize = 1000;
    if !t.provider.capabilities().consumer_groups {
        panic!("transport declares no consumer groups; this test must not be run for it");
    }
    let topic = t.topic("groups");
    let group_a = format!("a{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let group_b = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut a1 = t.connect(&[&topic], Some(&group_a)).await;
    let mut a2 = t.connect(&[&topic], Some(&group_a)).await;
    let mut b1 = t.connect(&[&topic], Some(&group_b)).await;
    t.settle().await;
    let publishers = publish_concurrently(t, &topic, 1, MESSAGES).await;
    let all_b = receive(&mut b1.inbox, MESSAGES, t.patience).await;
    assert_no_loss_no_dupes(&all_b, 1, MESSAGES);
    let mut shared: Vec<SpaMessage> = Vec::new();
    let deadline = Instant::now() + t.patience * 4;
    let (mut from_a1, mut from_a2) = (0, 0);
    while shared.len() < MESSAGES && Instant::now() < deadline {
        tokio::select! {
            Some(d) = a1.inbox.recv() => { from_a1 += 1; shared.push(SpaMessage::from_json(&d.payload).expect("decodes")); d.ack(); }
            Some(d) = a2.inbox.recv() => { from_a2 += 1; shared.push(SpaMessage::from_json(&d.payload).expect("decodes")); d.ack(); }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    assert_no_loss_no_dupes(&shared, 1, MESSAGES);
    assert!(
        from_a1 > 0 && from_a2 > 0,
        "group members share: {from_a1} / {from_a2}"
    );
    assert_quiet(&mut a1.inbox, Duration::from_millis(200)).await;
    close(&[&a1, &a2, &b1]).await;
    close(&publishers.iter().collect::<Vec<_>>()).await;
}

/// Order kept per publisher on one topic — or, where a transport spreads a topic over
/// partitions (Kafka), per publisher on each partition.
pub async fn order_per_publisher(t: &Transport) {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 500;
    let capabilities = t.provider.capabilities();
    assert!(
        capabilities.ordered_per_publisher || capabilities.ordered_per_partition,
        "a transport declares the order it keeps"
    );
    let topic = t.topic("order");
    let mut subscriber = t.connect(&[&topic], None).await;
    let publishers = publish_concurrently(t, &topic, PUBLISHERS, PER_PUBLISHER).await;
    let partitions =
        receive_in_order_per_publisher(t, &mut subscriber, PUBLISHERS * PER_PUBLISHER).await;
    if !capabilities.ordered_per_publisher {
        eprintln!(
            "order checked per publisher on each of {} partitions",
            partitions.len()
        );
    }
    subscriber.socket.close().await.expect("close");
    close(&publishers.iter().collect::<Vec<_>>()).await;
}

/// Receives `count` messages of [`seq_message`] (acknowledging each) and checks each
/// publisher's are in order: consecutive from 0 where the transport orders per publisher, else
/// increasing on each partition. Returns the partitions seen.
async fn receive_in_order_per_publisher(
    t: &Transport,
    subscriber: &mut Connection,
    count: usize,
) -> HashSet<i32> {
    let capabilities = t.provider.capabilities();
    let mut last: HashMap<(usize, i32), usize> = HashMap::new();
    let mut partitions = HashSet::new();
    for _ in 0..count {
        let delivery = tokio::time::timeout(t.patience, subscriber.inbox.recv())
            .await
            .expect("every message arrives")
            .expect("inbox open");
        let message = SpaMessage::from_json(&delivery.payload).expect("decodes");
        let partition = delivery.position.map_or(0, |position| position.partition);
        delivery.ack();
        partitions.insert(partition);
        let (publisher, seq) = parse_seq(&message);
        let stream = if capabilities.ordered_per_publisher {
            (publisher, 0)
        } else {
            (publisher, partition)
        };
        match last.insert(stream, seq) {
            // In one stream of a publisher, consecutive; across partitions, only increasing.
            Some(previous) if capabilities.ordered_per_publisher => assert_eq!(
                seq,
                previous + 1,
                "publisher {publisher} out of order"
            ),
            Some(previous) => assert!(
                seq > previous,
                "publisher {publisher} out of order on partition {partition}: {seq} after {previous}"
            ),
            None if capabilities.ordered_per_publisher => {
                assert_eq!(seq, 0, "publisher {publisher} starts with its first")
            }
            None => {}
        }
    }
    partitions
}

/// `Socket::publish_batch`: 1,000 messages pipelined with one the transport refuses in the
/// middle — one result per message in order, the refused one alone failing, the others
/// delivered in the order given (per partition where the transport orders by partition).
pub async fn publish_batch_in_order(t: &Transport) {
    const MESSAGES: usize = 1_000;
    const REFUSED_AT: usize = 500;
    let topic = t.topic("batch");
    let mut subscriber = t.connect(&[&topic], None).await;
    let publisher = t.connect(&[], None).await;
    let socket = spa_dat::Socket::new(
        Arc::clone(&publisher.socket),
        spa_dat::MessageBuilder::new(Some("batcher"), None),
        t.patience,
    );
    let mut batch: Vec<SpaMessage> = (0..MESSAGES)
        .map(|seq| seq_message(&topic, 0, seq))
        .collect();
    // A topic no transport publishes to (a wildcard; '/' and '#' are not Kafka topic names).
    batch.insert(REFUSED_AT, SpaMessage::new("batch/#", "refused"));
    let results = socket.publish_batch(batch).await;
    assert_eq!(results.len(), MESSAGES + 1, "one result per message");
    for (index, result) in results.iter().enumerate() {
        match result {
            Err(error) if index == REFUSED_AT => {
                assert!(error.is_permanent(), "refused for good: {error}")
            }
            Err(error) => panic!("message {index} failed: {error}"),
            Ok(()) if index == REFUSED_AT => panic!("a wildcard topic was published to"),
            Ok(()) => {}
        }
    }
    receive_in_order_per_publisher(t, &mut subscriber, MESSAGES).await;
    assert_quiet(&mut subscriber.inbox, Duration::from_millis(200)).await;
    close(&[&subscriber, &publisher]).await;
}

/// A responder on `topic` that answers each request with its payload reversed.
pub async fn spawn_responder(
    t: &Transport,
    topic: &str,
) -> (Arc<dyn SpaSocket>, tokio::task::JoinHandle<()>) {
    let Connection { socket, mut inbox } = t.connect(&[topic], None).await;
    let responder = Arc::clone(&socket);
    let task = tokio::spawn(async move {
        while let Some(delivery) = inbox.recv().await {
            let request = SpaMessage::from_json(&delivery.payload).expect("decodes");
            let Some(reply_to) = request.response_topic.clone() else {
                delivery.ack();
                continue;
            };
            let body: String = request
                .payload_str()
                .expect("utf-8")
                .chars()
                .rev()
                .collect();
            let reply = SpaMessage::new(reply_to, body).with_client_name("responder");
            // The transport carries the request's correlation to the reply (Kafka: a header).
            match responder.publish_reply(&reply, &delivery).await {
                Ok(()) => delivery.ack(),
                // Closed while its last reply waited for the broker's acknowledgement (the
                // requester can have the reply first): the responder's work is over.
                Err(spa_dat::Error::Closed) => break,
                Err(error) => panic!("reply: {error}"),
            }
        }
    });
    (socket, task)
}

/// 100 concurrent requests on one socket, each answered with its own reply.
pub async fn request_reply_concurrent(t: &Transport) {
    let topic = t.topic("rpc");
    let (responder, responder_task) = spawn_responder(t, &topic).await;
    let requester = t.connect(&[], None).await;
    let socket = Arc::clone(&requester.socket);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let socket = Arc::clone(&socket);
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("request-{i:03}");
            let reply = socket
                .request(
                    SpaMessage::new(topic, body.clone()),
                    Duration::from_secs(20),
                )
                .await
                .expect("reply");
            let expected: String = body.chars().rev().collect();
            assert_eq!(reply.payload_str().expect("utf-8"), expected);
            assert_eq!(reply.client_name.as_deref(), Some("responder"));
        }));
    }
    for task in tasks {
        task.await.expect("request");
    }
    requester.socket.close().await.expect("close");
    responder.close().await.expect("close");
    responder_task.await.expect("responder ends when closed");
}

/// A decorator socket (as metrics, tracing or fault injection would be) that forwards the
/// trait's required methods and counts what it publishes.
pub struct CountingSocket {
    /// The socket it forwards to.
    pub inner: Arc<dyn SpaSocket>,
    /// Publishes passed on.
    pub published: AtomicUsize,
    /// Publishes that carried a correlation id header.
    pub correlated: AtomicUsize,
}

#[async_trait::async_trait]
impl SpaSocket for CountingSocket {
    async fn send(&self, message: Outgoing) -> spa_dat::Result<()> {
        self.published.fetch_add(1, Ordering::SeqCst);
        if message.headers.get(headers::CORRELATION_ID).is_some() {
            self.correlated.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.send(message).await
    }
    async fn subscribe(&self, topics: &[String]) -> spa_dat::Result<()> {
        self.inner.subscribe(topics).await
    }
    async fn unsubscribe(&self, topics: &[String]) -> spa_dat::Result<()> {
        self.inner.unsubscribe(topics).await
    }
    async fn reply_route(&self, destination: &str) -> spa_dat::Result<PendingReply> {
        self.inner.reply_route(destination).await
    }
    async fn close(&self) -> spa_dat::Result<()> {
        self.inner.close().await
    }

    fn wire_format(&self) -> spa_dat::socket::WireFormat {
        self.inner.wire_format()
    }
}

fn counting(connection: Connection) -> (Arc<CountingSocket>, Inbox) {
    let socket = Arc::new(CountingSocket {
        inner: connection.socket,
        published: AtomicUsize::new(0),
        correlated: AtomicUsize::new(0),
    });
    (socket, connection.inbox)
}

/// Requester and responder behind a wrapper socket that forwards only the required methods:
/// every publish passes through it, and 100 concurrent requests each get their own reply.
pub async fn wrapped_sockets_request_reply(t: &Transport) {
    const REQUESTS: usize = 100;
    let topic = t.topic("wrapped");
    let (responder, mut inbox) = counting(t.connect(&[&topic], None).await);
    let answering: Arc<dyn SpaSocket> = Arc::clone(&responder) as Arc<dyn SpaSocket>;
    let responder_task = tokio::spawn(async move {
        while let Some(delivery) = inbox.recv().await {
            let request = SpaMessage::from_json(&delivery.payload).expect("decodes");
            let reply_to = request.response_topic.clone().expect("response topic");
            let reply = SpaMessage::new(
                reply_to,
                format!("re: {}", request.payload_str().expect("utf-8")),
            );
            match answering.publish_reply(&reply, &delivery).await {
                Ok(()) => delivery.ack(),
                Err(Error::Closed) => break,
                Err(error) => panic!("reply: {error}"),
            }
        }
    });
    let (requester, _inbox) = counting(t.connect(&[], None).await);
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let (socket, topic) = (Arc::clone(&requester), topic.clone());
        tasks.push(tokio::spawn(async move {
            let socket: Arc<dyn SpaSocket> = socket;
            let reply = socket
                .request(
                    SpaMessage::new(topic, format!("{i}")),
                    Duration::from_secs(20),
                )
                .await
                .expect("reply");
            assert_eq!(
                reply.payload_str().expect("utf-8"),
                format!("re: {i}"),
                "its own reply"
            );
        }));
    }
    for task in tasks {
        task.await.expect("request");
    }
    assert_eq!(
        requester.published.load(Ordering::SeqCst),
        REQUESTS,
        "every request passed the wrapper"
    );
    assert_eq!(
        responder.published.load(Ordering::SeqCst),
        REQUESTS,
        "every reply passed the wrapper"
    );
    assert_eq!(
        requester.correlated.load(Ordering::SeqCst),
        REQUESTS,
        "the runtime adds the correlation id to every request"
    );
    let echoed = if t.provider.capabilities().headers {
        REQUESTS
    } else {
        0
    };
    assert_eq!(
        responder.correlated.load(Ordering::SeqCst),
        echoed,
        "replies echo the correlation id where the transport carries headers"
    );
    requester.close().await.expect("close");
    responder.close().await.expect("close");
    responder_task.await.expect("responder ends when closed");
}

/// A request nobody answers fails with a timeout error, in about the timeout.
pub async fn request_times_out(t: &Transport) {
    let topic = t.topic("nobody");
    let requester = t.connect(&[], None).await;
    let started = Instant::now();
    let result = requester
        .socket
        .request(
            SpaMessage::new(&topic, "hello?"),
            Duration::from_millis(300),
        )
        .await;
    let waited = started.elapsed();
    match result {
        Err(Error::RequestTimeout { topic: t2, timeout }) => {
            assert_eq!(t2, topic);
            assert_eq!(timeout, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    requester.socket.close().await.expect("close");
}

/// Unsubscribe stops delivery; raw bytes pass through untouched.
pub async fn unsubscribe_stops_delivery(t: &Transport) {
    let topic = t.topic("unsub");
    let mut subscriber = t.connect(&[&topic], None).await;
    let publisher = t.connect(&[], None).await;
    publisher
        .socket
        .publish_bytes(&topic, Bytes::from_static(b"not an envelope"))
        .await
        .expect("publish");
    let delivery = tokio::time::timeout(t.patience, subscriber.inbox.recv())
        .await
        .expect("arrives")
        .expect("open");
    assert_eq!(&delivery.payload[..], b"not an envelope");
    delivery.ack();
    subscriber
        .socket
        .unsubscribe(std::slice::from_ref(&topic))
        .await
        .expect("unsubscribe");
    t.settle().await;
    publisher
        .socket
        .publish(&SpaMessage::new(&topic, "after"))
        .await
        .expect("publish");
    assert_quiet(&mut subscriber.inbox, Duration::from_millis(500)).await;
    close(&[&subscriber, &publisher]).await;
}

/// `+` matches one level, `#` the rest (including the parent level itself); a transport
/// without wildcards must reject them instead of subscribing to a literal `+`.
pub async fn wildcard_filters(t: &Transport) {
    let base = t.topic("wild");
    let one_level = format!("{base}/+/temp");
    let all = format!("{base}/#");
    if !t.provider.capabilities().wildcards {
        let connection = t.connect(&[], None).await;
        let result = connection.socket.subscribe(&[one_level]).await;
        assert!(
            result.is_err(),
            "wildcards declared unsupported but accepted"
        );
        connection.socket.close().await.expect("close");
        return;
    }
    let mut single = t.connect(&[&one_level], None).await;
    let mut multi = t.connect(&[&all], None).await;
    let publisher = t.connect(&[], None).await;
    let topics = [
        format!("{base}/kitchen/temp"),
        format!("{base}/kitchen/humidity"),
        format!("{base}/a/b/temp"),
        base.clone(),
    ];
    for topic in &topics {
        publisher
            .socket
            .publish(&SpaMessage::new(topic.as_str(), "x"))
            .await
            .expect("publish");
    }
    let got = receive(&mut single.inbox, 1, t.patience).await;
    assert_eq!(got[0].topic, topics[0]);
    assert_quiet(&mut single.inbox, Duration::from_millis(300)).await;
    let got: Vec<String> = receive(&mut multi.inbox, 4, t.patience)
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(got, topics);
    close(&[&single, &multi, &publisher]).await;
}

/// Operations on a closed socket fail with `Closed` instead of hanging.
pub async fn closed_socket_errors(t: &Transport) {
    let topic = t.topic("closed");
    let connection = t.connect(&[], None).await;
    connection.socket.close().await.expect("close");
    connection
        .socket
        .close()
        .await
        .expect("close is idempotent");
    let result = connection
        .socket
        .publish(&SpaMessage::new(&topic, "x"))
        .await;
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
}

async fn close(connections: &[&Connection]) {
    for connection in connections {
        connection.socket.close().await.expect("close");
    }
}

/// One `#[tokio::test]` per conformance test for the transport `$make` builds.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@tests $make;
            every_field_intact, many_publishers_many_subscribers, topics_are_isolated,
            publish_then_close, resubscribe_between_batches, consumer_groups,
            order_per_publisher, request_reply_concurrent, request_times_out,
            unsubscribe_stops_delivery, closed_socket_errors, wildcard_filters,
            wrapped_sockets_request_reply, hostile_peers, poison_under_load,
            publish_batch_in_order);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let transport = $make;
                $crate::conformance::$name(&transport).await;
            }
        )*
    };
}
