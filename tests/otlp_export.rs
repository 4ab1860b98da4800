//! `spa_dat::telemetry::init()` exports spa-dat's spans over OTLP/HTTP to the endpoint the
//! standard `OTEL_*` variables name: a loopback listener stands in for the collector and reads
//! what arrives (protobuf, whose strings are plain UTF-8 on the wire). (One test per binary:
//! `init` installs the global subscriber and tracer provider.)

use spa_dat_test_support as support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::{Application, Config, Socket, SpaMessage};
use support::{test_app, wait_until};

/// Reads HTTP requests on `listener` and keeps their bodies, answering 200 to each.
/// The path and body of each request the collector received.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn collector(listener: TcpListener, bodies: Received) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request = Vec::new();
        let mut buffer = [0u8; 8192];
        // Read the head, then as many body bytes as Content-Length says.
        let (head, body_start) = loop {
            let Ok(n) = stream.read(&mut buffer) else {
                break (String::new(), 0);
            };
            if n == 0 {
                break (String::new(), 0);
            }
            request.extend_from_slice(&buffer[..n]);
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break (
                    String::from_utf8_lossy(&request[..end]).into_owned(),
                    end + 4,
                );
            }
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
            .unwrap_or(0);
        while request.len() < body_start + length {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let body = request[body_start.min(request.len())..].to_vec();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        bodies.lock().expect("lock").push((path, body));
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_exports_spa_dats_spans_over_otlp_http() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let bodies: Received = Arc::default();
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || collector(listener, kept));
    // The standard variables, as a deployment sets them.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_SERVICE_NAME", "otlp-export-test");
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let telemetry = spa_dat::telemetry::init().expect("installs");

    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let handled = Arc::new(AtomicBool::new(false));
    let h = Arc::clone(&handled);
    let app = test_app(Config {
        shutdown_grace_ms: 200,
        ..Config::default()
    })
    .socket_provider(Arc::new(MemorySocketProvider::new(bus)))
    .add_application(Application::consumer(
        "ledger",
        ["payments"],
        move |_: SpaMessage| {
            let handled = Arc::clone(&h);
            async move {
                handled.store(true, Ordering::SeqCst);
            }
        },
    ))
    .add_producer("till", |socket: Socket| async move {
        socket.publish(SpaMessage::new("payments", "42")).await
    });
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    wait_until("the payment handled", Duration::from_secs(10), || {
        handled.load(Ordering::SeqCst)
    })
    .await;
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("clean stop");
    // Shutting the provider down flushes what is batched.
    drop(telemetry);

    let b = Arc::clone(&bodies);
    wait_until("an OTLP export", Duration::from_secs(10), || {
        !b.lock().expect("lock").is_empty()
    })
    .await;
    let bodies = bodies.lock().expect("lock").clone();
    let traces: Vec<&Vec<u8>> = bodies
        .iter()
        .filter(|(path, _)| path == "/v1/traces")
        .map(|(_, body)| body)
        .collect();
    assert!(
        !traces.is_empty(),
        "posted to /v1/traces: {:?}",
        bodies.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    let all: Vec<u8> = traces.into_iter().flatten().copied().collect();
    let contains = |needle: &str| all.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("send payments"), "the producer's send span");
    assert!(contains("process payments"), "the consumer's process span");
    assert!(
        contains("otlp-export-test"),
        "OTEL_SERVICE_NAME names the service"
    );
    assert!(contains("messaging.system"), "the conventions' attributes");
}
