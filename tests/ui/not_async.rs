use spa_dat::consumer;

#[consumer(topics = ["a"])]
fn handler() {}

fn main() {}
