//! A layer that refuses messages without a tenant: the handler never sees them, they are not
//! retried, and they go to the dead-letter topic. Runs on the in-process bus.
//!
//! ```sh
//! cargo run --example tenant_layer
//! ```

use spa_dat::handler::{layer_fn, Layer};
use spa_dat::{Application, DistributedApplication, Error, Shutdown, Socket, SpaMessage, Stopped};

/// Refuses a message whose JSON payload has no `"tenant"`.
fn require_tenant() -> impl Layer {
    layer_fn(|context, next| async move {
        let tenant = context
            .message()
            .and_then(|m| m.payload_json::<serde_json::Value>().ok())
            .and_then(|payload| payload.get("tenant")?.as_str().map(str::to_owned));
        match tenant {
            Some(_) => next.run(context).await,
            None => Err(Error::Rejected {
                reason: "no tenant in the payload".into(),
            }
            .into()),
        }
    })
}

fn main() -> spa_dat::Result<Stopped> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spa_dat=info".into()),
        )
        .init();
    let orders = Application::consumer("orders", ["orders"], |message: SpaMessage| async move {
        println!("order accepted: {}", message.payload_str()?);
        Ok::<(), spa_dat::Error>(())
    })
    .layer(require_tenant())
    .dead_letter_topic("orders.refused");
    let refused = Application::consumer(
        "refused",
        ["orders.refused"],
        |message: SpaMessage, shutdown: Shutdown| async move {
            println!(
                "refused, dead-lettered: {}",
                message.payload_str().unwrap_or("?")
            );
            shutdown.trigger();
        },
    );
    DistributedApplication::new()
        .without_registered_handlers()
        .add_application(orders)
        .add_application(refused)
        .add_producer("shop", |socket: Socket| async move {
            socket
                .publish(SpaMessage::new(
                    "orders",
                    r#"{"tenant":"acme","item":"anvil"}"#,
                ))
                .await?;
            socket
                .publish(SpaMessage::new("orders", r#"{"item":"no tenant"}"#))
                .await
        })
        .start()
}
