use spa_dat::{consumer, producer};

#[consumer(topics = ["a"], topic = "b", group = "g", group = "h")]
async fn handler() {}

#[producer(topics = ["a"])]
async fn producer_with_topics() {}

#[consumer(topics = ["a", 1])]
async fn not_a_string() {}

#[consumer(topics = ["a"], transactional = "yes")]
async fn transactional_takes_a_bool() {}

fn main() {}
