use spa_dat::consumer;

#[consumer]
async fn handler() {}

#[consumer(topics = [])]
async fn empty() {}

fn main() {}
