//! Handlers registered by `#[consumer]` / `#[producer]` through `inventory`.

use super::call::BoxedHandler;
use super::HandlerKind;
use crate::runtime::MessageOrder;

/// What `order_key = function` names: a message's ordering key, from its delivery.
pub type OrderKeyFn = fn(&crate::socket::Delivery) -> Option<bytes::Bytes>;

/// One handler registered by an attribute macro. Built only by macro output (const).
#[derive(Debug)]
pub struct Registration {
    /// Consumer or producer.
    pub kind: HandlerKind,
    /// Application name (the function's name unless `name = "..."`).
    pub name: &'static str,
    /// `module_path!()` of the function: tells apart handlers of the same name.
    pub module: &'static str,
    /// Topics a consumer subscribes to.
    pub topics: &'static [&'static str],
    /// Consumer group.
    pub group: Option<&'static str>,
    /// Client id on the bus.
    pub client_id: Option<&'static str>,
    /// Client name on the bus.
    pub client_name: Option<&'static str>,
    /// Dead-letter topic for this consumer.
    pub dead_letter_topic: Option<&'static str>,
    /// Handlers at once (`concurrency = n`); `None`: 1.
    pub concurrency: Option<usize>,
    /// Which messages may run together (`ordering = "key" | "partition" | "none"`).
    pub ordering: Option<MessageOrder>,
    /// Each message's ordering key instead of the transport's (`order_key = function`; see
    /// [`crate::Application::order_key`]).
    pub order_key: Option<OrderKeyFn>,
    /// Handler calls per message, the first included (`attempts = n`).
    pub attempts: Option<u32>,
    /// Handler timeout in milliseconds (`timeout_ms = n`).
    pub timeout_ms: Option<u64>,
    /// Most messages per call of a batch handler (`batch = n`).
    pub batch: Option<usize>,
    /// Longest a batch waits for more messages, in milliseconds (`batch_wait_ms = n`).
    pub batch_wait_ms: Option<u64>,
    /// Kafka transactions (`transactional = true`; see
    /// [`crate::Application::transactional`]).
    pub transactional: bool,
    /// Topics it publishes to (`sends = [...]`), for the AsyncAPI document.
    pub sends: &'static [&'static str],
    /// Builds the handler.
    pub make_handler: fn() -> BoxedHandler,
}

inventory::collect!(Registration);

/// Every registered handler, in a stable order (module, then name): inventory's own order
/// is unspecified.
pub(crate) fn registrations() -> Vec<&'static Registration> {
    let mut all: Vec<&'static Registration> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|r| (r.module, r.name));
    all
}
