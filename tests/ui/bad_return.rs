use spa_dat::consumer;

#[consumer(topics = ["a"])]
async fn handler() -> u32 {
    7
}

fn main() {}
