//! Whether a socket works, as its transport sees it: subscribed and connected (MQTT), its
//! consumer assigned its partitions and its brokers reachable (Kafka). Transports set it; the
//! application's [`crate::app::Readiness`] reads it.

use std::sync::Arc;

use tokio::sync::watch;

/// A socket's readiness, set by its transport. Cheap to clone; starts not ready.
#[derive(Debug, Clone)]
pub struct ReadySignal {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for ReadySignal {
    fn default() -> Self {
        ReadySignal {
            sender: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl ReadySignal {
    /// Sets the socket ready or not (a transport calls this as its connection changes).
    pub fn set(&self, ready: bool) {
        self.sender.send_if_modified(|current| {
            let changed = *current != ready;
            *current = ready;
            changed
        });
    }

    /// Whether the socket is ready now.
    pub fn is_ready(&self) -> bool {
        *self.sender.borrow()
    }

    /// Follows changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.sender.subscribe()
    }
}
