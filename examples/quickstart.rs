//! The quick start: a sensor publishes readings, a thermostat records them and answers a
//! request for their average — all on the in-process bus, no broker needed.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//! Set `SPA_DAT_URL=mqtt://localhost:1883` to run the same code on an MQTT broker (Kafka topics
//! cannot contain `/` or wildcards, so this example is for memory and MQTT).

use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use spa_dat::{
    consumer, producer, DistributedApplication, Json, Shutdown, Socket, SpaMessage, State, Stopped,
};

// With the `schemars` feature, the AsyncAPI document carries the payloads' JSON Schemas
// (`SPA_DAT_ASYNCAPI=asyncapi.json cargo run --example quickstart --features schemars`).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
struct Reading {
    sensor: String,
    celsius: f64,
}

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
struct Summary {
    readings: usize,
    average_celsius: f64,
}

/// State shared by the handlers: every temperature seen so far.
#[derive(Default)]
struct Temperatures {
    seen: Mutex<Vec<f64>>,
}

/// Called once at start: publishes a stream of readings, then asks for their average.
#[producer(sends = ["sensors/kitchen/temperature", "thermostat/average"])]
async fn kitchen_sensor(socket: Socket, shutdown: Shutdown) -> spa_dat::Result<()> {
    for celsius in [20.5, 21.0, 21.5, 22.25, 23.0] {
        let reading = Reading {
            sensor: "kitchen".into(),
            celsius,
        };
        socket
            .publish_json("sensors/kitchen/temperature", &reading)
            .await?;
        println!("sensor     → published {celsius} °C");
    }
    let reply = socket
        .request(SpaMessage::new("thermostat/average", "{}"))
        .await?;
    let summary: Summary = reply.payload_json()?;
    println!(
        "sensor     ← average of {} readings: {:.2} °C (reply from {})",
        summary.readings,
        summary.average_celsius,
        reply.client_name.as_deref().unwrap_or("?")
    );
    shutdown.trigger();
    Ok(())
}

/// Called for every message on its topics: records readings, answers average requests.
#[consumer(topics = ["sensors/+/temperature", "thermostat/average"])]
async fn thermostat(
    message: SpaMessage,
    temperatures: State<Temperatures>,
) -> spa_dat::Result<Option<Json<Summary>>> {
    let mut seen = temperatures
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if message.topic == "thermostat/average" {
        let average = seen.iter().sum::<f64>() / seen.len().max(1) as f64;
        println!("thermostat → answering: {average:.2} °C");
        return Ok(Some(Json(Summary {
            readings: seen.len(),
            average_celsius: average,
        })));
    }
    let reading: Reading = message.payload_json()?;
    println!(
        "thermostat ← {} reads {} °C",
        reading.sensor, reading.celsius
    );
    seen.push(reading.celsius);
    Ok(None)
}

fn main() -> spa_dat::Result<Stopped> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spa_dat=info".into()),
        )
        .init();
    DistributedApplication::new()
        .api_info("spa-dat quick start", env!("CARGO_PKG_VERSION"))
        .state(Temperatures::default())
        .start()
}
