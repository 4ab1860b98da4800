//! The transport conformance suite on the in-process bus.

use spa_dat_test_support::conformance;

use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};

fn memory() -> conformance::Transport {
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let provider: Arc<dyn spa_dat::socket::spi::SocketProvider> =
        Arc::new(MemorySocketProvider::new(bus));
    conformance::Transport {
        big: Some(Arc::clone(&provider)),
        connections_of: None,
        provider,
        patience: Duration::from_secs(5),
        settle: Duration::ZERO,
        separator: "/",
        guard: None,
    }
}

spa_dat_test_support::conformance_tests!(memory());
