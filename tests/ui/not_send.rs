use std::rc::Rc;

use spa_dat::consumer;

#[consumer(topics = ["a"])]
async fn handler() {
    let local = Rc::new(1);
    tokio::task::yield_now().await;
    let _ = local;
}

fn main() {}
