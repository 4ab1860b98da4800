//! One trace across two buses, metrics and probes: a shop asks checkout (orders bus) about an
//! order, checkout asks the warehouse (stock bus) and answers. Every hop is an OpenTelemetry
//! span in one trace, exported over OTLP; Prometheus's text is at
//! http://127.0.0.1:9464/metrics and the probes at http://127.0.0.1:8080/health/live and
//! /health/ready. Runs until Ctrl-C.
//!
//! ```sh
//! # in-process, no broker (spans go to OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4318):
//! cargo run --example observability --features otlp
//! # across Kafka and MQTT:
//! ORDERS_BUS=kafka://127.0.0.1:9092 STOCK_BUS=mqtt://127.0.0.1:1883 \
//!   OTEL_SERVICE_NAME=shop-demo cargo run --example observability --features otlp
//! curl -s 127.0.0.1:9464/metrics | grep -E 'messaging_|spa_'
//! curl -si 127.0.0.1:8080/health/ready
//! ```
//! (`SPA_DAT_METRICS_ADDR` / `SPA_DAT_HEALTH_ADDR` move the endpoints.)

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use spa_dat::config::SocketProviderFactory;
use spa_dat::{Application, Config, DistributedApplication, Socket, SpaMessage, State, Stopped};
use tracing::Instrument;

/// Checkout's way to the stock bus: the socket of an application on that bus.
#[derive(Default)]
struct StockBus(OnceLock<Socket>);

fn main() -> spa_dat::Result<Stopped> {
    // OTLP spans from the OTEL_* variables, log lines by RUST_LOG; kept until main returns.
    let _telemetry = spa_dat::telemetry::init()?;
    let bus = |name: &str| {
        let url = std::env::var(name).unwrap_or_else(|_| "memory://demo".to_owned());
        SocketProviderFactory::from_url(&url)
    };
    let (orders, stock) = (bus("ORDERS_BUS")?, bus("STOCK_BUS")?);
    let mut config = Config::from_env()?;
    config
        .metrics_addr
        .get_or_insert_with(|| "127.0.0.1:9464".to_owned());
    config
        .health_addr
        .get_or_insert_with(|| "127.0.0.1:8080".to_owned());
    let stock_bus = Arc::new(StockBus::default());

    let app = DistributedApplication::new()
        .without_registered_handlers()
        .config(config)
        .state_arc(Arc::clone(&stock_bus))
        .add_application(
            Application::producer("shop", |socket: Socket| async move {
                for number in 1u64.. {
                    let order = tracing::info_span!("place order", number);
                    async {
                        let trace = opentelemetry::Context::current()
                            .span()
                            .span_context()
                            .trace_id();
                        match socket.request(SpaMessage::new("orders", number.to_string())).await {
                            Ok(reply) => tracing::info!(%trace, reply = reply.payload_str().unwrap_or("?"), "order answered"),
                            Err(error) => tracing::warn!(%trace, %error, "order not answered"),
                        }
                    }
                    .instrument(order)
                    .await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
            .socket_provider(Arc::clone(&orders)),
        )
        .add_application(
            Application::consumer(
                "checkout",
                ["orders"],
                |order: SpaMessage, State(stock_bus): State<StockBus>| async move {
                    let Some(stock) = stock_bus.0.get() else {
                        return Err(spa_dat::BoxError::from("the stock bus is not up yet"));
                    };
                    let item = order.payload_str()?.to_owned();
                    let answer = stock
                        .request(SpaMessage::new(format!("stock/{item}"), item.clone()))
                        .await?;
                    Ok(SpaMessage::new("", format!("order {item}: {}", answer.payload_str()?)))
                },
            )
            .socket_provider(Arc::clone(&orders)),
        )
        .add_application(
            Application::producer("stock-link", |socket: Socket, State(stock_bus): State<StockBus>| async move {
                let _ = stock_bus.0.set(socket);
                std::future::pending::<()>().await;
            })
            .socket_provider(Arc::clone(&stock)),
        )
        .add_application(
            Application::consumer("warehouse", ["stock/+"], |request: SpaMessage| async move {
                // Every seventh item is out of stock (the handler fails: retries show).
                let item: u64 = request.payload_str()?.parse()?;
                if item.is_multiple_of(7) {
                    return Err(spa_dat::BoxError::from("out of stock"));
                }
                Ok(SpaMessage::new("", "in stock"))
            })
            .retry(spa_dat::RetryPolicy::default().skip_when_exhausted())
            .socket_provider(Arc::clone(&stock)),
        );
    let readiness = app.readiness();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(readiness.ready());
            println!("ready: metrics on /metrics, probes on /health/live and /health/ready");
        }
    });
    app.start()
}
