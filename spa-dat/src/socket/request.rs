//! Correlation of concurrent requests over one reply subscription.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
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
///
/// Correlation ids are unique within a process run and start at a random value in each run, so
/// a reply meant for another socket, or for an earlier run of the same program (same client
/// id, same reply topic), never matches a waiting request.
#[derive(Debug, Default)]
pub struct RequestMultiplexer {
    pending: Mutex<HashMap<u64, oneshot::Sender<SpaMessage>>>,
}

/// The next correlation id of this process run.
fn next_correlation_id() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        // Below 2^62: years of requests before it could wrap.
        let start = uuid::Uuid::new_v4().as_u64_pair().0 >> 2;
        AtomicU64::new(start)
    })
    .fetch_add(1, Ordering::Relaxed)
}

impl RequestMultiplexer {
    /// An empty multiplexer.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a request; the returned [`PendingReply`] carries its correlation id.
    /// Dropping it (e.g. on timeout or cancellation) forgets the request.
    pub fn register(self: &Arc<Self>) -> PendingReply {
        let id = next_correlation_id();
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        PendingReply {
            id,
            receiver: Some(rx),
            owner: Arc::clone(self),
            response_topic: String::new(),
            route: None,
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

/// A registered request waiting for its reply, with the way back a transport prepared for it
/// ([`super::SpaSocket::reply_route`]).
#[derive(Debug)]
pub struct PendingReply {
    id: u64,
    receiver: Option<oneshot::Receiver<SpaMessage>>,
    owner: Arc<RequestMultiplexer>,
    response_topic: String,
    /// Whatever the transport holds for this request's route; released with it.
    route: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl PendingReply {
    /// The correlation id to carry to the responder.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sets the topic the reply must be published to.
    pub fn with_response_topic(mut self, topic: impl Into<String>) -> Self {
        self.response_topic = topic.into();
        self
    }

    /// Keeps `route` (e.g. a guard that deletes a reply topic made for this request) until
    /// the request ends, however it ends.
    pub fn holding(mut self, route: impl Send + Sync + 'static) -> Self {
        self.route = Some(Box::new(route));
        self
    }

    /// The topic the reply must be published to.
    pub fn response_topic(&self) -> &str {
        &self.response_topic
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
