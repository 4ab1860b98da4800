//! Hostile peers and poison under load, for every transport: what any client allowed to publish
//! can send must never take a consumer offline, and dead letters must never stall one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spa_dat::socket::headers;
use spa_dat::socket::spi::{Connection, Outgoing};
use spa_dat::{Application, MessageOrder, RetryPolicy, SpaMessage};

use super::Transport;

/// One message a hostile client sends, whether the responder's handler is called for it and
/// whether it is dead-lettered.
struct Case {
    name: &'static str,
    bytes: Bytes,
    handled: bool,
    dead_lettered: bool,
}

fn envelope(fields: serde_json::Value) -> Bytes {
    Bytes::from(fields.to_string())
}

fn cases(t: &Transport, topic: &str) -> Vec<Case> {
    let mqtt = t.provider.describe().starts_with("mqtt");
    let bad_response_topic = |name, response_topic: String| Case {
        name,
        bytes: envelope(serde_json::json!({
            "Payload": "x", "Topic": topic, "ResponseTopic": response_topic,
        })),
        handled: false,
        dead_lettered: true,
    };
    let mut cases = vec![
        bad_response_topic("empty ResponseTopic", String::new()),
        bad_response_topic("ResponseTopic #", "#".into()),
        bad_response_topic("ResponseTopic a/+", "a/+".into()),
        bad_response_topic("ResponseTopic with U+0000", "x\u{0}y".into()),
        bad_response_topic("ResponseTopic of 70,000 bytes", "r".repeat(70_000)),
        // Mosquitto drops the connection of a client publishing deeper than 200 levels.
        bad_response_topic("ResponseTopic of 202 levels", "a/".repeat(201) + "b"),
        Case {
            name: "Topic that is not the one it came on, no ResponseTopic",
            bytes: envelope(serde_json::json!({ "Payload": "x", "Topic": "elsewhere/#" })),
            handled: true,
            dead_lettered: false,
        },
        Case {
            name: "Timestamp of 550,000 digits",
            bytes: envelope(serde_json::json!({
                "Payload": "x", "Topic": topic, "Timestamp": "9".repeat(550_000),
            })),
            handled: false,
            dead_lettered: true,
        },
        Case {
            name: "QualityOfService of 100,000 bytes",
            bytes: envelope(serde_json::json!({
                "Payload": "x", "Topic": topic, "QualityOfService": "q".repeat(100_000),
            })),
            handled: false,
            dead_lettered: true,
        },
        Case {
            name: "not JSON",
            bytes: Bytes::from_static(b"\xff\x00 not json {"),
            handled: false,
            dead_lettered: true,
        },
        Case {
            name: "nested 100,000 deep",
            bytes: Bytes::from(format!(
                "{{\"Payload\":{}\"x\"{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )),
            handled: false,
            dead_lettered: true,
        },
    ];
    if t.big.is_some() {
        cases.push(Case {
            name: "2 MiB that is not JSON",
            bytes: Bytes::from(vec![b'z'; 2 << 20]),
            handled: false,
            dead_lettered: true,
        });
        cases.push(Case {
            name: "a 2 MiB request (its echo is larger than MQTT's outgoing limit)",
            bytes: envelope(serde_json::json!({
                "Payload": "p".repeat(2 << 20), "Topic": topic, "ResponseTopic": format!("{topic}{}big-reply", t.separator),
            })),
            handled: true,
            dead_lettered: mqtt,
        });
    }
    cases
}

/// A responder with a dead-letter topic gets every hostile message of `cases`, each followed
/// by ordinary requests from another client: every ordinary request is answered within 1 s
/// (3 s on Kafka, whose round trip through a broker on a loaded 2-core machine can take
/// longer: a stuck responder never answers),
/// the responder keeps its connection (at most one reconnect), and exactly the bad messages
/// reach the dead-letter topic.
pub async fn hostile_peers(t: &Transport) {
    let mqtt = t.provider.describe().starts_with("mqtt");
    let answer_limit = if t.provider.describe().starts_with("kafka") {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(1)
    };
    let topic = t.topic("hostile");
    let dead_letters = t.topic("hostile-dlq");
    let responder_id = format!(
        "hostile-responder-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handled);
    let responder = Application::consumer(
        "hostile-responder",
        [topic.as_str()],
        move |m: SpaMessage| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { m.payload }
        },
    )
    .client_id(responder_id.clone())
    .dead_letter_topic(dead_letters.clone())
    .retry(RetryPolicy::no_retries())
    .socket_provider(Arc::clone(&t.provider));
    let mut observer = t.connect(&[dead_letters.as_str()], None).await;
    let (shutdown, running) = crate::run_in_background(responder).await;
    let hostile = t
        .connect_with(t.big.as_ref().unwrap_or(&t.provider), &[])
        .await;
    let requester = t.connect(&[], None).await;
    // The first request may create topics and reply consumers: it has longer.
    ask(&requester, &topic, "warm-up", Duration::from_secs(30)).await;

    let cases = cases(t, &topic);
    for case in &cases {
        hostile
            .socket
            .publish_bytes(&topic, case.bytes.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: the hostile client could not publish: {e}", case.name));
        for i in 0..3 {
            let started = Instant::now();
            ask(
                &requester,
                &topic,
                &format!("after {} #{i}", case.name),
                answer_limit,
            )
            .await;
            assert!(started.elapsed() < answer_limit);
        }
    }

    let expected: Vec<&Case> = cases.iter().filter(|c| c.dead_lettered).collect();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        match tokio::time::timeout(t.patience, observer.inbox.recv()).await {
            Ok(Some(delivery)) => {
                received.push((delivery.payload.clone(), delivery.headers.clone()));
                delivery.ack();
            }
            _ => panic!(
                "{} of {} dead letters arrived",
                received.len(),
                expected.len()
            ),
        }
    }
    super::assert_quiet(&mut observer.inbox, Duration::from_millis(500)).await;
    // Each bad message is dead-lettered once: as it came, or — where the transport refused
    // it whole (MQTT here, over 1 MiB) — as a summary naming its size, which any spa-dat
    // consumer (Python's too) reads.
    let mut unmatched: Vec<&Case> = expected.clone();
    let mut summaries = 0;
    for (payload, headers) in &received {
        if let Some(reason) = headers.get(headers::DEAD_LETTER_REASON) {
            assert!(reason.len() <= 512, "a reason of {} bytes", reason.len());
        }
        let summary_of = SpaMessage::from_json(payload).ok().and_then(|message| {
            let body: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
            body.get("original_size")?.as_u64()
        });
        let at = match summary_of {
            Some(size) => {
                summaries += 1;
                unmatched.iter().position(|c| c.bytes.len() as u64 == size)
            }
            None => unmatched.iter().position(|c| c.bytes == *payload),
        };
        let at = at
            .unwrap_or_else(|| panic!("a dead letter of no bad message ({} bytes)", payload.len()));
        unmatched.remove(at);
    }
    let refused_whole = if mqtt { 2 } else { 0 };
    assert_eq!(summaries, refused_whole, "dead letters sent as summaries");
    let calls = 1 + 3 * cases.len() + cases.iter().filter(|c| c.handled).count();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        calls,
        "the handler is called for the ordinary requests and the accepted cases only"
    );
    if let Some(count) = &t.connections_of {
        let connections = count(&responder_id);
        assert!(
            (1..=2).contains(&connections),
            "the responder connected {connections} times (at most one reconnect allowed)"
        );
    }
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the responder stops")
        .expect("join")
        .expect("the responder ran");
    super::close(&[&observer, &hostile, &requester]).await;
}

async fn ask(requester: &Connection, topic: &str, text: &str, limit: Duration) {
    let reply = requester
        .socket
        .request(SpaMessage::new(topic, text.to_owned()), limit)
        .await
        .unwrap_or_else(|e| panic!("request `{text}` not answered: {e}"));
    assert_eq!(reply.payload_str().expect("utf-8"), text);
}

/// Poison under load (issue 19, item 0): a key-ordered consumer with 16 handlers, a retry
/// policy of 3 attempts and a dead-letter topic gets 5,000 messages over 100 keys, 1 % of
/// which always fail. Every message is handled or dead-lettered exactly once, within seconds.
pub async fn poison_under_load(t: &Transport) {
    const MESSAGES: usize = 5_000;
    const KEYS: usize = 100;
    // Kafka orders by record key; MQTT has no keys and orders by topic: one topic per key.
    let per_topic_keys = t.provider.capabilities().wildcards;
    let base = t.topic("load");
    let subscription = if per_topic_keys {
        format!("{base}/+")
    } else {
        base.clone()
    };
    let dead_letters = t.topic("load-dlq");
    let handled: Arc<Mutex<HashMap<usize, usize>>> = Arc::default();
    let seen = Arc::clone(&handled);
    let consumer =
        Application::consumer("poisoned", [subscription.as_str()], move |m: SpaMessage| {
            let seen = Arc::clone(&seen);
            async move {
                let n: usize = m.payload_str().expect("utf-8").parse().expect("a number");
                if n % 100 == 37 {
                    return Err(std::io::Error::other("poison: always fails"));
                }
                *seen.lock().expect("handled").entry(n).or_default() += 1;
                Ok(())
            }
        })
        .concurrency(16)
        .ordering(MessageOrder::Key)
        .retry(RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            skip_when_exhausted: false,
        })
        .dead_letter_topic(dead_letters.clone())
        .socket_provider(Arc::clone(&t.provider));
    let mut observer = t.connect(&[dead_letters.as_str()], None).await;
    let (shutdown, running) = crate::run_in_background(consumer).await;
    let publisher = t.connect(&[], None).await;
    let started = Instant::now();
    // Many publishes at once: the stream outpaces the consumer while a failing key retries,
    // so its inbox fills — the moment a dead letter used to wait forever for its PUBACK.
    let all: Vec<usize> = (0..MESSAGES).collect();
    for chunk in all.chunks(250) {
        let sends = chunk.iter().map(|&n| {
            let key = n % KEYS;
            let topic = if per_topic_keys {
                format!("{base}/k{key}")
            } else {
                base.clone()
            };
            let outgoing = Outgoing::message(SpaMessage::new(topic, n.to_string()))
                .expect("encodes")
                .with_key(format!("k{key}"));
            publisher.socket.send(outgoing)
        });
        for sent in futures_util::future::join_all(sends).await {
            sent.expect("publish");
        }
    }
    let poison = (0..MESSAGES).filter(|n| n % 100 == 37).count();
    let mut dead: HashMap<usize, usize> = HashMap::new();
    let limit = Duration::from_secs(60);
    while dead.values().sum::<usize>() < poison {
        let delivery = match tokio::time::timeout(limit, observer.inbox.recv()).await {
            Ok(Some(delivery)) => delivery,
            _ => panic!(
                "{} of {poison} dead letters after {:?}; {} handled",
                dead.values().sum::<usize>(),
                started.elapsed(),
                handled.lock().expect("handled").len()
            ),
        };
        let message = SpaMessage::from_json(&delivery.payload).expect("the original message");
        *dead
            .entry(message.payload_str().expect("utf-8").parse().expect("n"))
            .or_default() += 1;
        delivery.ack();
    }
    crate::wait_until("every good message handled", limit, || {
        handled.lock().expect("handled").len() >= MESSAGES - poison
    })
    .await;
    let took = started.elapsed();
    super::assert_quiet(&mut observer.inbox, Duration::from_millis(500)).await;
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the consumer stops")
        .expect("join")
        .expect("the consumer ran");
    let handled = handled.lock().expect("handled").clone();
    assert!(
        handled.values().all(|&times| times == 1),
        "a message handled twice"
    );
    assert!(
        dead.values().all(|&times| times == 1),
        "a message dead-lettered twice"
    );
    assert!(dead.keys().all(|n| n % 100 == 37) && dead.len() == poison);
    assert_eq!(handled.len(), MESSAGES - poison);
    eprintln!("{MESSAGES} messages, {poison} dead-lettered: {took:?}");
    super::close(&[&observer, &publisher]).await;
}
