use spa_dat::{consumer, SpaMessage};

fn by_value(delivery: spa_dat::socket::spi::Delivery) -> Option<Vec<u8>> {
    let _ = delivery;
    None
}

#[consumer(topics = ["a"], concurrency = 2, ordering = "key", order_key = by_value)]
async fn wrong_signature(_m: SpaMessage) {}

#[consumer(topics = ["a"], order_key = "by_value")]
async fn a_string(_m: SpaMessage) {}

fn main() {}
