//! What metrics and tracing cost a consumer: throughput and CPU per message on the in-process
//! bus (the cheapest transport, so the largest share) with everything off, then with
//! OpenTelemetry tracing sampling nothing, sampling and exporting everything, and with
//! spa-dat's metrics recorded into a Prometheus recorder — in one run.
//!
//! ```text
//! cargo bench --bench observability --features opentelemetry
//! cargo bench --bench observability --features opentelemetry -- nothing   # one section
//! ```
//! Metrics are switched on for the rest of the process, so their rounds run last.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::spi::Outgoing;
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, ApplicationLifeCycle, SpaMessage};

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

/// A span exporter that drops what it gets: the cost of exporting without a collector's.
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// Makes spa-dat's spans with a tracer provider sampling with `sampler`, exporting in
/// batches to [`Discard`] (applications built from now on use it).
fn trace_with(sampler: opentelemetry_sdk::trace::Sampler) {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_batch_exporter(Discard)
        .build();
    opentelemetry::global::set_tracer_provider(provider);
    spa_dat::telemetry::enable();
}

async fn rounds() -> Vec<(f64, f64)> {
    let mut runs = Vec::new();
    for _ in 0..ROUNDS {
        runs.push(consume().await);
    }
    runs
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
        let off = rounds().await;
        let mut results = Vec::new();
        let section = |name: &'static str| support::selected(name).then_some(name);
        if let Some(name) = section("tracing, sampler samples nothing") {
            trace_with(opentelemetry_sdk::trace::Sampler::AlwaysOff);
            results.push((name, rounds().await));
        }
        if let Some(name) = section("tracing, every span sampled and exported") {
            trace_with(opentelemetry_sdk::trace::Sampler::AlwaysOn);
            results.push((name, rounds().await));
        }
        opentelemetry::global::set_tracer_provider(
            opentelemetry::trace::noop::NoopTracerProvider::new(),
        );
        if let Some(name) = section("metrics (Prometheus recorder)") {
            // Metrics stay on for the rest of the process: last.
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("recorder");
            spa_dat::metrics::enable();
            results.push((name, rounds().await));
        }

        let best = |runs: &[(f64, f64)]| runs.iter().map(|r| r.0).fold(0.0, f64::max);
        let cpu = |runs: &[(f64, f64)]| {
            support::median(&mut runs.iter().map(|r| r.1).collect::<Vec<_>>())
        };
        println!("in-process consumer, {MESSAGES} messages, best of {ROUNDS} (CPU: median); ratio against everything off");
        println!(
            "{:<56} {:>12} {:>12} {:>7}",
            "measure", "on", "all off", "ratio"
        );
        for (name, runs) in &results {
            support::row(&format!("{name}: messages/s"), best(runs), best(&off));
            support::row(&format!("{name}: CPU µs/message"), cpu(runs), cpu(&off));
        }
    });
}
