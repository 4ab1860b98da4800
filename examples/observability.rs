//! Metrics and probes of a running application, on the in-process bus: Prometheus's text at
//! http://127.0.0.1:9464/metrics, the probes at http://127.0.0.1:8080/health/live and
//! /health/ready. Runs until Ctrl-C.
//!
//! ```sh
//! cargo run --example observability
//! curl -s 127.0.0.1:9464/metrics | grep messaging_
//! curl -si 127.0.0.1:8080/health/ready
//! ```
//! (`SPA_DAT_METRICS_ADDR` / `SPA_DAT_HEALTH_ADDR` move them.)

use std::time::Duration;

use spa_dat::{Application, Config, DistributedApplication, Socket, SpaMessage, Stopped};

fn main() -> spa_dat::Result<Stopped> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spa_dat=info".into()),
        )
        .init();
    let mut config = Config::from_env()?;
    config
        .metrics_addr
        .get_or_insert_with(|| "127.0.0.1:9464".to_owned());
    config
        .health_addr
        .get_or_insert_with(|| "127.0.0.1:8080".to_owned());
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .config(config)
        .add_application(
            Application::consumer("orders", ["orders"], |message: SpaMessage| async move {
                // Every tenth order fails (3 attempts, then skipped): failures and retries show.
                let number: u64 = message.payload_str()?.parse()?;
                if number.is_multiple_of(10) {
                    return Err(spa_dat::BoxError::from("the warehouse did not answer"));
                }
                tokio::time::sleep(Duration::from_millis(number % 7)).await;
                Ok(())
            })
            .retry(spa_dat::RetryPolicy::default().skip_when_exhausted()),
        )
        .add_producer("shop", |socket: Socket| async move {
            for number in 1.. {
                socket
                    .publish(SpaMessage::new("orders", number.to_string()))
                    .await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<(), spa_dat::Error>(())
        });
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
