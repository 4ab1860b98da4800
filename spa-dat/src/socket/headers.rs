//! Metadata carried beside a payload, transport-neutral: Kafka carries it as record headers,
//! MQTT 5 as properties (the correlation id, response topic, content type and message expiry
//! as MQTT 5's own, the others as user properties), the in-process bus as it is; MQTT 3.1.1 has
//! no place for it ([`super::Capabilities::headers`]).
//!
//! The runtime decides what goes in: the names below are the ones spa-dat writes and reads.

use std::borrow::Cow;
use std::fmt;

/// The correlation id of a request, echoed on its reply.
pub const CORRELATION_ID: &str = "spa-correlation-id";
/// Where the reply to a request goes: MQTT 5 carries it as the response topic property.
pub const RESPONSE_TOPIC: &str = "spa-response-topic";
/// The payload's media type (`application/json`, `text/plain`, …): MQTT 5 carries it as the
/// content type property.
pub const CONTENT_TYPE: &str = "spa-content-type";
/// How many seconds the broker may keep the message for subscribers that have not received it
/// yet (decimal): MQTT 5 carries it as the message expiry interval; elsewhere it is a header.
pub const MESSAGE_EXPIRY_SECS: &str = "spa-message-expiry-secs";
/// Why a dead letter could not be handled.
pub const DEAD_LETTER_REASON: &str = "spa-dead-letter-reason";
/// How many times the handler was called for a dead letter (0: it could not be decoded).
pub const DEAD_LETTER_ATTEMPTS: &str = "spa-dead-letter-attempts";
/// The topic a dead letter was read from.
pub const DEAD_LETTER_TOPIC: &str = "spa-dead-letter-topic";
/// The partition a dead letter was read from (decimal), where the transport has partitions.
pub const DEAD_LETTER_PARTITION: &str = "spa-dead-letter-partition";
/// The offset a dead letter was read at (decimal), where the transport has offsets.
pub const DEAD_LETTER_OFFSET: &str = "spa-dead-letter-offset";
/// On a dead letter too large to forward whole: the original's size in bytes (decimal). The
/// dead letter is then a summary (see [`super::Outgoing::dead_letter_summary`]).
pub const DEAD_LETTER_ORIGINAL_SIZE: &str = "spa-dead-letter-original-size";
/// What every dead-letter header's name starts with: only spa-dat writes them.
pub const DEAD_LETTER_PREFIX: &str = "spa-dead-letter-";

/// Name–value pairs in the order they were added. A name may occur more than once (Kafka
/// allows it); [`Headers::get`] returns the first.
///
/// # Examples
///
/// ```
/// use spa_dat::socket::headers::{Headers, CORRELATION_ID};
///
/// let mut headers = Headers::new();
/// headers.insert(CORRELATION_ID, "42");
/// headers.append("tag", "a");
/// headers.append("tag", "b");
/// assert_eq!(headers.get("tag"), Some("a"));
/// assert_eq!(headers.len(), 3);
///
/// let same: Headers = [(CORRELATION_ID, "42"), ("tag", "a"), ("tag", "b")].into_iter().collect();
/// assert_eq!(headers, same);
/// ```
///
/// Empty headers allocate nothing and take one word in a [`super::Delivery`], so messages
/// without metadata cost nothing extra.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    // Boxed on purpose: one word instead of a Vec's three in every delivery (measured: the
    // in-process consumer lost ~5 % of its throughput to a larger `Delivery`).
    #[allow(clippy::box_collection)]
    // A name spa-dat sets is one of its constants: borrowed, not copied per message.
    entries: Option<Box<Vec<Pair>>>,
}

/// A header: its name (spa-dat's own names borrowed) and its value.
type Pair = (Cow<'static, str>, String);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers::default()
    }

    /// Sets `name` to `value`, replacing any values it had.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.set(Cow::Owned(name.into()), value.into());
    }

    /// Adds `name` = `value`, keeping the values `name` already has.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.add(Cow::Owned(name.into()), value.into());
    }

    /// [`Headers::insert`] of a name spa-dat defines (no copy of it).
    pub(crate) fn insert_static(&mut self, name: &'static str, value: impl Into<String>) {
        self.set(Cow::Borrowed(name), value.into());
    }

    /// [`Headers::append`] of a name spa-dat defines (no copy of it).
    #[cfg(feature = "kafka")]
    pub(crate) fn append_static(&mut self, name: &'static str, value: impl Into<String>) {
        self.add(Cow::Borrowed(name), value.into());
    }

    /// Removes every header whose name starts with `prefix`.
    pub(crate) fn remove_prefixed(&mut self, prefix: &str) {
        if let Some(entries) = self.entries.as_mut() {
            entries.retain(|(name, _)| !name.starts_with(prefix));
        }
    }

    fn set(&mut self, name: Cow<'static, str>, value: String) {
        let entries = self.entries.get_or_insert_with(Box::default);
        entries.retain(|(existing, _)| *existing != name);
        entries.push((name, value));
    }

    fn add(&mut self, name: Cow<'static, str>, value: String) {
        self.entries
            .get_or_insert_with(Box::default)
            .push((name, value));
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs()
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every name–value pair, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.pairs().iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    fn pairs(&self) -> &[Pair] {
        self.entries.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        let entries: Vec<Pair> = pairs
            .into_iter()
            .map(|(n, v)| (Cow::Owned(n.into()), v.into()))
            .collect();
        Headers {
            entries: (!entries.is_empty()).then(|| Box::new(entries)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_append_keeps() {
        let mut headers = Headers::new();
        headers.append("a", "1");
        headers.append("a", "2");
        assert_eq!(headers.get("a"), Some("1"));
        assert_eq!(headers.len(), 2);
        headers.insert("a", "3");
        assert_eq!(headers.iter().collect::<Vec<_>>(), vec![("a", "3")]);
        assert_eq!(headers.get("missing"), None);
    }
}
