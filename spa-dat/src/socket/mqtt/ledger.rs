//! Requests handed to rumqttc (publish, subscribe, unsubscribe), from the hand-over until the
//! broker acknowledged them: what a publish's caller waits for, and what is sent again after a
//! reconnect without a session.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use super::wire::Wire;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Publish,
    Subscribe,
    Unsubscribe,
}

/// A request handed to rumqttc, waiting for its packet to be sent and then acknowledged.
pub(super) struct Pending<W: Wire> {
    pub(super) kind: Kind,
    /// `None` for the transport's own requests (re-subscriptions after a reconnect).
    pub(super) waiter: Option<oneshot::Sender<Result<()>>>,
    /// What to send again if the broker lost it.
    pub(super) request: W::Request,
    /// How often the broker dropped the connection while this was the oldest publish it had
    /// not acknowledged (see the driver's `POISON_AFTER`).
    pub(super) strikes: u8,
}

impl<W: Wire> Pending<W> {
    pub(super) fn resolve(self, result: Result<()>) {
        if let Some(waiter) = self.waiter {
            let _ = waiter.send(result);
        }
    }
}

/// Where each request is: handed to rumqttc but not yet sent (`unsent`, in order), or sent
/// and waiting for the broker's acknowledgement (`unacked`, by packet id) — or, while the
/// driver reads nothing because the inbox is far behind, kept for the driver to write itself
/// (`direct`: rumqttc writes a request only in a poll, and a poll reads too).
pub(super) struct Ledger<W: Wire> {
    pub(super) unsent: VecDeque<Pending<W>>,
    pub(super) unacked: HashMap<(Kind, u16), Pending<W>>,
    /// `Some` while requests go to the driver instead of rumqttc's channel.
    pub(super) direct: Option<VecDeque<Pending<W>>>,
}

// Not derived: that would ask `W: Default`.
impl<W: Wire> Default for Ledger<W> {
    fn default() -> Self {
        Ledger {
            unsent: VecDeque::new(),
            unacked: HashMap::new(),
            direct: None,
        }
    }
}

impl<W: Wire> Ledger<W> {
    /// Whether someone waits for the broker: a request not yet sent, or one sent whose caller
    /// still waits for its acknowledgement. The connection must then be read, whatever else.
    pub(super) fn awaits_broker(&self) -> bool {
        !self.unsent.is_empty()
            || self
                .direct
                .as_ref()
                .is_some_and(|direct| !direct.is_empty())
            || self.unacked.values().any(|pending| {
                pending
                    .waiter
                    .as_ref()
                    .is_some_and(|waiter| !waiter.is_closed())
            })
    }
}
