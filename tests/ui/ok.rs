use spa_dat::{consumer, producer, Batch, BatchResult, Json, MessageBuilder, Res, Shutdown, Socket, SpaMessage, State};

struct Db;
struct Counter;

#[derive(serde::Deserialize)]
struct Reading {
    #[allow(dead_code)]
    value: f64,
}

#[consumer(topics = ["a/+", "b/#"], group = "g", client_id = "c", client_name = "n", dead_letter = "dead", name = "custom")]
async fn everything(
    _message: SpaMessage,
    _reading: Json<Reading>,
    _socket: Socket,
    _builder: MessageBuilder,
    _state: State<Counter>,
    _db: Res<Db>,
    _shutdown: Shutdown,
) -> Result<Option<String>, std::io::Error> {
    Ok(None)
}

#[consumer(topics = "single")]
async fn single_topic() {}

#[consumer(topics = ["t"], batch = 100, batch_wait_ms = 20)]
async fn h(b: Batch<SpaMessage>) {
    let _ = b;
}

#[consumer(topics = ["readings"], batch = 500, concurrency = 4, ordering = "key")]
async fn bulk(readings: Batch<Json<Reading>>, _db: Res<Db>) -> BatchResult {
    BatchResult::new().failed(readings.len().saturating_sub(1), "last one failed")
}

#[producer]
async fn plain() -> spa_dat::Result<()> {
    Ok(())
}

#[consumer(topics = ["orders"], concurrency = 16, transactional = true)]
async fn invoice(order: SpaMessage, socket: spa_dat::Socket) -> spa_dat::Result<()> {
    socket.publish(SpaMessage::new("invoices", order.payload)).await
}

#[producer(transactional = true)]
async fn related(socket: spa_dat::Socket) -> spa_dat::Result<()> {
    socket
        .transaction(async {
            socket.publish(SpaMessage::new("orders", "order 7")).await?;
            socket.publish(SpaMessage::new("order-lines", "line 1")).await
        })
        .await
}

fn device_of(delivery: &spa_dat::socket::spi::Delivery) -> Option<bytes::Bytes> {
    let device = delivery.topic.split('/').nth(1)?;
    Some(bytes::Bytes::copy_from_slice(device.as_bytes()))
}

#[consumer(topics = ["devices/+/state"], concurrency = 8, ordering = "key", order_key = device_of)]
async fn devices(_state: SpaMessage) {}

fn main() {}
