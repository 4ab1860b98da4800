//! Correlation of concurrent requests over one reply subscription.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::message::SpaMessage;

/// The default time a request waits for its reply.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Matches replies to the requests waiting for them.
///
/// A transport keeps one per socket: each request registers and gets a correlation id, the
/// transport carries the id to the responder and back (in the reply topic or a header), and
/// hands every reply to [`RequestMultiplexer::resolve`]. Transports outside this crate can use
/// it the same way.
#[derive(Debug, Default)]
pub struct RequestMultiplexer {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<SpaMessage>>>,
}

impl RequestMultiplexer {
    /// An empty multiplexer.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a request; the returned [`PendingReply`] carries its correlation id.
    /// Dropping it (e.g. on timeout or cancellation) forgets the request.
    pub fn register(self: &Arc<Self>) -> PendingReply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        PendingReply {
            id,
            receiver: Some(rx),
            owner: Arc::clone(self),
        }
    }

    /// Hands `reply` to the request with correlation id `id`. Returns false when no request
    /// waits for it (late reply after a timeout, or a stranger's reply).
    pub fn resolve(&self, id: u64, reply: SpaMessage) -> bool {
        match self.lock().remove(&id) {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        }
    }

    /// Hands `reply` to the oldest waiting request: for replies that carry no correlation
    /// (e.g. from a Python responder on a transport that correlates by header).
    pub fn resolve_oldest(&self, reply: SpaMessage) -> bool {
        let mut pending = self.lock();
        let oldest = pending.keys().min().copied();
        match oldest.and_then(|id| pending.remove(&id)) {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        }
    }

    /// Fails every waiting request with [`Error::Closed`].
    pub fn close(&self) {
        self.lock().clear();
    }

    /// How many requests are waiting.
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<SpaMessage>>> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A registered request waiting for its reply.
#[derive(Debug)]
pub struct PendingReply {
    id: u64,
    receiver: Option<oneshot::Receiver<SpaMessage>>,
    owner: Arc<RequestMultiplexer>,
}

impl PendingReply {
    /// The correlation id to carry to the responder.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the reply, at most `timeout`; `topic` names the request in the error.
    pub async fn wait(mut self, topic: &str, timeout: Duration) -> Result<SpaMessage> {
        let receiver = self.receiver.take().ok_or(Error::Closed)?;
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::RequestTimeout {
                topic: topic.to_owned(),
                timeout,
            }),
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.owner.lock().remove(&self.id);
    }
}
