use spa_dat::{consumer, SpaMessage};

struct NotInjectable;

#[consumer(topics = ["a"])]
async fn handler(message: SpaMessage, thing: NotInjectable) {
    let _ = (message, thing);
}

fn main() {}
