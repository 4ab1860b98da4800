//! The watchdog of a consumer: no progress for too long (a hung handler, a key stuck retrying)
//! and the consumer stops being ready; with metrics on, the in-flight and buffered gauges.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::consumer::Consumer;
use crate::socket::{InboxDepth, ReadySignal};

impl Consumer {
    /// Sets `progressing` false while messages are being handled and none finished for longer
    /// than `stall_after` (a hung handler, a key stuck retrying), true otherwise. Checks four
    /// times per `stall_after` (at least every 250 ms); runs until aborted.
    /// With metrics on, it also keeps the consumer's in-flight and buffered gauges (of
    /// `inbox`) current.
    pub(crate) async fn watch(
        self: Arc<Self>,
        progressing: ReadySignal,
        stall_after: Duration,
        inbox: Option<InboxDepth>,
    ) {
        let gauges = crate::metrics::enabled()
            .then(|| crate::metrics::ConsumerGauges::new(&self.runtime.name));
        let tick = (stall_after / 4).min(Duration::from_millis(250));
        let mut last_done = self.done.load(Ordering::Relaxed);
        let mut since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let (taken, done) = (
                self.taken.load(Ordering::Relaxed),
                self.done.load(Ordering::Relaxed),
            );
            if let Some(gauges) = &gauges {
                let buffered = inbox.as_ref().map_or(0, InboxDepth::queued);
                gauges.set(taken.saturating_sub(done), buffered);
            }
            if done != last_done || taken == done {
                last_done = done;
                since = tokio::time::Instant::now();
                progressing.set(true);
            } else if since.elapsed() > stall_after && progressing.is_ready() {
                tracing::warn!(app = %self.runtime.name, in_flight = taken - done, stalled_for = ?since.elapsed(), "consumer made no progress: not ready");
                progressing.set(false);
            }
        }
    }
}
