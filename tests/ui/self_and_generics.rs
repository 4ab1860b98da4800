use spa_dat::producer;

struct App;

impl App {
    #[producer]
    async fn method(&self) {}
}

#[producer]
async fn generic<T>() {}

fn main() {}
