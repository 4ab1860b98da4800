//! What metrics cost a consumer: throughput and CPU per message on the in-process bus with
//! spa-dat's metrics off, then on (recorded into a Prometheus recorder), in one run.
//!
//! ```text
//! cargo bench --bench observability
//! ```
//! Metrics are switched on for the rest of the process, so the "off" rounds run first.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::Outgoing;
use spa_dat::{Application, ApplicationLifeCycle, SocketOptions, SocketProvider, SpaMessage};

const MESSAGES: usize = 1_000_000;
const ROUNDS: usize = 3;

/// Messages per second and CPU µs per message of one consumer run.
async fn consume() -> (f64, f64) {
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let provider: Arc<dyn SocketProvider> = Arc::new(MemorySocketProvider::new(bus));
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let mut app = Application::consumer("observed", ["observed"], move |m: SpaMessage| {
        let h = Arc::clone(&h);
        async move {
            std::hint::black_box(m);
            h.fetch_add(1, Ordering::Relaxed);
        }
    })
    .socket_provider(Arc::clone(&provider));
    let shutdown = app.shutdown_handle();
    app.setup().await.expect("setup");
    let running = tokio::spawn(async move {
        let _ = app.run_async().await;
        let _ = app.teardown().await;
    });
    let publisher = provider
        .connect(SocketOptions::new("observed-publisher"))
        .await
        .expect("connect");
    let bytes = SpaMessage::new("observed", "x".repeat(100))
        .to_json()
        .expect("encodes");
    let (cpu, started) = (support::cpu_seconds(), Instant::now());
    for _ in 0..MESSAGES {
        publisher
            .socket
            .send(Outgoing::new("observed", bytes.clone()))
            .await
            .expect("publish");
    }
    while handled.load(Ordering::Relaxed) < MESSAGES {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let (elapsed, cpu) = (started.elapsed(), support::cpu_seconds() - cpu);
    shutdown.trigger();
    let _ = running.await;
    (
        MESSAGES as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / MESSAGES as f64,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // One core, as the memory_bus bench: publisher and consumer share it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let off: Vec<(f64, f64)> = {
            let mut runs = Vec::new();
            for _ in 0..ROUNDS {
                runs.push(consume().await);
            }
            runs
        };
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("recorder");
        spa_dat::metrics::enable();
        let mut on = Vec::new();
        for _ in 0..ROUNDS {
            on.push(consume().await);
        }
        let best = |runs: &[(f64, f64)]| runs.iter().map(|r| r.0).fold(0.0, f64::max);
        let cpu = |runs: &[(f64, f64)]| {
            support::median(&mut runs.iter().map(|r| r.1).collect::<Vec<_>>())
        };
        println!("in-process consumer, {MESSAGES} messages, best of {ROUNDS} (CPU: median)");
        println!(
            "{:<44} {:>12} {:>12} {:>7}",
            "measure", "metrics on", "metrics off", "ratio"
        );
        support::row("consumer messages/s", best(&on), best(&off));
        support::row("consumer CPU µs/message", cpu(&on), cpu(&off));
    });
}
