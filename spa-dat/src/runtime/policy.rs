//! How a consumer runs its handler: how many messages at once and in which order
//! ([`MessageOrder`]), and what happens when the handler fails ([`RetryPolicy`]).

use std::time::Duration;

/// Which messages of a consumer may be handled at the same time (with a concurrency above 1);
/// messages that may not are handled one after the other, in arrival order.
///
/// # Examples
///
/// ```
/// use spa_dat::{Application, MessageOrder, SpaMessage};
///
/// async fn index(message: SpaMessage) {
///     // ...
/// #   let _ = message;
/// }
///
/// // Up to 8 messages at once, but one device's messages (same key) one after the other.
/// let app = Application::consumer("indexer", ["readings"], index)
///     .concurrency(8)
///     .ordering(MessageOrder::Key);
/// # let _ = app;
/// assert_eq!(MessageOrder::parse("key-else-none"), Some(MessageOrder::KeyElseUnordered));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MessageOrder {
    /// One message in flight per key (the Kafka record key, the key a message was published
    /// with on the in-process bus); different keys concurrently. A message without a key is
    /// ordered with its partition (Kafka) or topic (MQTT, which has no keys).
    #[default]
    Key,
    /// As `Key`, but messages without a key run unordered instead of with their partition.
    KeyElseUnordered,
    /// One message in flight per Kafka partition, per MQTT or in-process topic.
    Partition,
    /// Any message at any time: no order.
    Unordered,
}

impl MessageOrder {
    /// Parses `key`, `key-else-none`, `partition` or `none` (the macro's `ordering = "..."`).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::MessageOrder;
    ///
    /// assert_eq!(MessageOrder::parse("partition"), Some(MessageOrder::Partition));
    /// assert_eq!(MessageOrder::parse("none"), Some(MessageOrder::Unordered));
    /// assert_eq!(MessageOrder::parse("keys"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "key" => Some(MessageOrder::Key),
            "key-else-none" => Some(MessageOrder::KeyElseUnordered),
            "partition" => Some(MessageOrder::Partition),
            "none" | "unordered" => Some(MessageOrder::Unordered),
            _ => None,
        }
    }
}

/// What happens when a handler fails (returns an error, panics or runs past its timeout).
///
/// The handler is called up to `attempts` times, pausing between calls (exponential backoff
/// from `first_delay` to `max_delay`, with jitter); the message's key waits meanwhile, other
/// keys run on. After the last attempt the message goes to the dead-letter topic, if there is
/// one, and is then acknowledged. Without one it is never acknowledged silently: it is retried
/// every `max_delay`, reported each time, until it succeeds or shutdown — unless
/// [`RetryPolicy::skip_when_exhausted`] was chosen.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use spa_dat::{Application, RetryPolicy, SpaMessage};
///
/// async fn store(message: SpaMessage) -> Result<(), std::io::Error> {
///     // ... a call that may fail for a while
/// #   let _ = message;
///     Ok(())
/// }
///
/// // 5 calls per message, pausing 200 ms doubling up to 5 s; then to the dead-letter topic.
/// let policy = RetryPolicy::default()
///     .attempts(5)
///     .delays(Duration::from_millis(200), Duration::from_secs(5));
/// let app = Application::consumer("store", ["orders"], store)
///     .retry(policy)
///     .dead_letter_topic("orders.dead");
/// # let _ = app;
/// assert_eq!(policy.attempts, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls of the handler per message, the first included (1 = no retry).
    pub attempts: u32,
    /// Pause before the second call.
    pub first_delay: Duration,
    /// Longest pause between calls.
    pub max_delay: Duration,
    /// After the last attempt, with no dead-letter topic: acknowledge (lose) the message
    /// instead of retrying on.
    pub skip_when_exhausted: bool,
}

/// 3 attempts, 100 ms doubling up to 10 s, never skipping.
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            skip_when_exhausted: false,
        }
    }
}

impl RetryPolicy {
    /// One call per message; a failed message is dead-lettered if there is a topic for it,
    /// else skipped (logged): the behaviour of spa-dat before retries existed.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::RetryPolicy;
    ///
    /// let policy = RetryPolicy::no_retries();
    /// assert_eq!(policy.attempts, 1);
    /// assert!(policy.skip_when_exhausted);
    /// ```
    pub fn no_retries() -> Self {
        RetryPolicy {
            attempts: 1,
            skip_when_exhausted: true,
            ..RetryPolicy::default()
        }
    }

    /// `attempts` calls per message, the first included.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::default().attempts(10).attempts, 10);
    /// // At least one call: 0 means 1.
    /// assert_eq!(RetryPolicy::default().attempts(0).attempts, 1);
    /// ```
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Pauses from `first` doubling up to `max`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use spa_dat::RetryPolicy;
    ///
    /// let policy = RetryPolicy::default().delays(Duration::from_millis(50), Duration::from_secs(2));
    /// assert_eq!(policy.first_delay, Duration::from_millis(50));
    /// assert_eq!(policy.max_delay, Duration::from_secs(2));
    /// ```
    pub fn delays(mut self, first: Duration, max: Duration) -> Self {
        self.first_delay = first;
        self.max_delay = max.max(first);
        self
    }

    /// After the last attempt, with no dead-letter topic, skip the message (logged at ERROR).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::RetryPolicy;
    ///
    /// // Best effort: three tries, then drop the message rather than hold the queue.
    /// let policy = RetryPolicy::default().attempts(3).skip_when_exhausted();
    /// assert!(policy.skip_when_exhausted);
    /// ```
    pub fn skip_when_exhausted(mut self) -> Self {
        self.skip_when_exhausted = true;
        self
    }

    /// The pause after failed attempt `attempt` (1-based): exponential, ±50 % jitter, at most
    /// `max_delay`.
    pub(crate) fn delay_after(&self, attempt: u32) -> Duration {
        let doubled = self
            .first_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        doubled.min(self.max_delay).mul_f64(0.5 + fastrand::f64())
    }
}

/// What follows a failed attempt at a message (a handler call, or publishing its reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Try again after this pause: attempts are left.
    Retry(Duration),
    /// Attempts spent: forward it to the dead-letter topic, then acknowledge it.
    DeadLetter,
    /// Attempts spent, no dead-letter topic, and the policy skips: acknowledge it.
    Skip,
    /// Attempts spent, no dead-letter topic: never acknowledged silently — try again after
    /// this pause (`max_delay`), until it succeeds or shutdown.
    Hold(Duration),
}

impl RetryPolicy {
    /// What follows the failed `attempt` (1 = the first); a `permanent` failure has no
    /// attempts left.
    pub(crate) fn after_failure(
        &self,
        attempt: u32,
        permanent: bool,
        dead_letter_topic: bool,
    ) -> AfterFailure {
        if attempt < self.attempts && !permanent {
            AfterFailure::Retry(self.delay_after(attempt))
        } else if dead_letter_topic {
            AfterFailure::DeadLetter
        } else if self.skip_when_exhausted {
            AfterFailure::Skip
        } else {
            AfterFailure::Hold(self.max_delay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_maximum_with_jitter() {
        let policy =
            RetryPolicy::default().delays(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..100 {
            let first = policy.delay_after(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150));
            let late = policy.delay_after(30);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1500));
        }
        assert_eq!(MessageOrder::parse("none"), Some(MessageOrder::Unordered));
        assert_eq!(MessageOrder::parse("keys"), None);
    }
}
