//! Kafka request/reply when the responder does not echo the correlation header, as every
//! Python spa-dat 0.4.0 responder does: each reply reaches its own requester or none — never a
//! stranger, never a later request, never a request of a later run.

use spa_dat_test_support as support;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::SpaMessage;
use support::python;

fn provider() -> Arc<dyn SocketProvider> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Arc::new(
        KafkaSocketProvider::new(KafkaConfig::new(support::kafka::bootstrap()))
            .expect("valid config"),
    )
}

fn unique(name: &str) -> String {
    format!(
        "{name}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn reversed(text: &str) -> String {
    text.chars().rev().collect()
}

/// A responder written with raw rdkafka that answers like Python spa-dat 0.4.0: a new message to
/// the request's `ResponseTopic`, the payload reversed, no headers. It waits `delays[i]` before
/// answering the i-th request (then no delay). Ready once it has its partitions.
async fn start_plain_responder(topic: &str, delays: Vec<Duration>) -> tokio::task::JoinHandle<()> {
    let bootstrap = support::kafka::bootstrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", unique("plain-responder"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    tokio::spawn(async move {
        let mut delays = delays.into_iter();
        loop {
            let Ok(record) = consumer.recv().await else {
                continue;
            };
            let request =
                SpaMessage::from_json(rdkafka::Message::payload(&record).unwrap_or_default())
                    .expect("a spa-dat request");
            let delay = delays.next().unwrap_or_default();
            let producer = producer.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let topic = request.response_topic.clone().expect("a response topic");
                let reply = SpaMessage::new(
                    topic.as_str(),
                    reversed(request.payload_str().expect("utf-8")),
                )
                .to_json()
                .expect("encodes");
                producer
                    .send(
                        FutureRecord::<(), [u8]>::to(&topic).payload(&reply),
                        Duration::from_secs(10),
                    )
                    .await
                    .expect("reply sent");
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_answered_by_python_each_get_their_own_reply() {
    const REQUESTS: usize = 40;
    let topic = unique("py.reverse");
    support::kafka::create_topic(&provider(), &topic).await;
    let child = python::start_ready(
        "kafka_responder.py",
        vec![
            support::kafka::bootstrap(),
            topic.clone(),
            REQUESTS.to_string(),
        ],
    )
    .await;
    let requester = provider()
        .connect(SocketOptions::new(unique("rust-requester")))
        .await
        .expect("connects");
    let requests = (0..REQUESTS).map(|seq| {
        let (socket, topic) = (Arc::clone(&requester.socket), topic.clone());
        async move {
            let body = format!("request-{seq:03}");
            let reply = socket
                .request(
                    SpaMessage::new(topic, body.clone()),
                    Duration::from_secs(60),
                )
                .await
                .expect("python answered");
            (body, reply.payload_str().expect("utf-8").to_owned())
        }
    });
    let answered = futures_util::future::join_all(requests).await;
    let wrong: Vec<_> = answered
        .iter()
        .filter(|(body, reply)| *reply != reversed(body))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {REQUESTS} replies reached the wrong request: {wrong:?}",
        wrong.len()
    );
    // Python first: closing the requester deletes the reply topics Python's producer knows,
    // and aiokafka can then hang on their metadata as it closes (seen in CI).
    python::finish(child).await;
    requester.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_without_correlation_answered_out_of_order_reach_their_own_requests() {
    const REQUESTS: u32 = 10;
    let topic = unique("unordered.reverse");
    support::kafka::create_topic(&provider(), &topic).await;
    // The first request is answered last, the last first.
    let delays = (0..REQUESTS)
        .map(|i| Duration::from_millis(200 * u64::from(REQUESTS - i)))
        .collect();
    let responder = start_plain_responder(&topic, delays).await;
    let requester = provider()
        .connect(SocketOptions::new(unique("rust-requester")))
        .await
        .expect("connects");
    let mut answered = Vec::new();
    let mut waiting = Vec::new();
    for seq in 0..REQUESTS {
        let (socket, topic) = (Arc::clone(&requester.socket), topic.clone());
        let body = format!("request-{seq:02}");
        // In order, so the responder sees them in order.
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.push(tokio::spawn(async move {
            let reply = socket
                .request(
                    SpaMessage::new(topic, body.clone()),
                    Duration::from_secs(30),
                )
                .await
                .expect("answered");
            (body, reply.payload_str().expect("utf-8").to_owned())
        }));
    }
    for request in waiting {
        answered.push(support::joined("a request", Duration::from_secs(40), request).await);
    }
    let wrong: Vec<_> = answered
        .iter()
        .filter(|(body, reply)| *reply != reversed(body))
        .collect();
    assert!(
        wrong.is_empty(),
        "replies reached the wrong request: {wrong:?}"
    );
    requester.socket.close().await.expect("close");
    responder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_without_correlation_never_answers_a_later_request() {
    let topic = unique("slow.reverse");
    support::kafka::create_topic(&provider(), &topic).await;
    // The first reply comes after its request timed out, while the second request waits.
    let responder =
        start_plain_responder(&topic, vec![Duration::from_secs(3), Duration::from_secs(4)]).await;
    let requester = provider()
        .connect(SocketOptions::new(unique("rust-requester")))
        .await
        .expect("connects");
    let first = requester
        .socket
        .request(
            SpaMessage::new(topic.as_str(), "first"),
            Duration::from_secs(1),
        )
        .await;
    assert!(first.is_err(), "the first request times out: {first:?}");
    let second = requester
        .socket
        .request(
            SpaMessage::new(topic.as_str(), "second"),
            Duration::from_secs(20),
        )
        .await
        .expect("the second request is answered");
    assert_eq!(second.payload_str().expect("utf-8"), "dnoces");
    requester.socket.close().await.expect("close");
    responder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_left_in_the_reply_topic_by_an_earlier_run_are_ignored() {
    let topic = unique("rerun.reverse");
    support::kafka::create_topic(&provider(), &topic).await;
    let client_id = unique("fixed-id");
    // An earlier run with the same client id: it left a reply nobody read in its reply topic.
    let earlier = provider()
        .connect(SocketOptions::new(client_id.clone()))
        .await
        .expect("connects");
    let reply_topic = format!("{client_id}_request_response");
    earlier
        .socket
        .publish(&SpaMessage::new(reply_topic.as_str(), "stale"))
        .await
        .expect("a stale reply");
    // The earlier run's socket is gone without deleting its reply topic (a crash).
    drop(earlier);

    let responder = start_plain_responder(&topic, Vec::new()).await;
    let requester = provider()
        .connect(SocketOptions::new(client_id))
        .await
        .expect("connects");
    let reply = requester
        .socket
        .request(
            SpaMessage::new(topic.as_str(), "fresh"),
            Duration::from_secs(20),
        )
        .await
        .expect("answered");
    assert_eq!(reply.payload_str().expect("utf-8"), "hserf");
    requester.socket.close().await.expect("close");
    responder.abort();
}
