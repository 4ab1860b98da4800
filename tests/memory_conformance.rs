//! The transport conformance suite on the in-process bus.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};

fn memory() -> conformance::Transport {
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    conformance::Transport {
        provider: Arc::new(MemorySocketProvider::new(bus)),
        patience: Duration::from_secs(5),
        settle: Duration::ZERO,
        separator: "/",
        guard: None,
    }
}

conformance_tests!(memory());
