//! Topic names and filters, the grammar every layer shares: MQTT-style filters (`+` matches
//! one level, `#` the rest), the checks a topic from outside must pass, and text shortened for
//! logs and errors. A foundation module: it imports nothing of the crate.

/// Whether `topic` matches the MQTT-style `filter`.
///
/// `sensors/+/temp` matches `sensors/a/temp`; `sensors/#` matches `sensors` and everything
/// below it. As in MQTT, wildcards do not match topics starting with `$` at the first level.
///
/// # Examples
///
/// ```
/// use spa_dat::socket::topic_matches;
///
/// assert!(topic_matches("sensors/+/temp", "sensors/a/temp"));
/// assert!(!topic_matches("sensors/+/temp", "sensors/a/b/temp"));
/// assert!(topic_matches("sensors/#", "sensors"));
/// assert!(!topic_matches("#", "$SYS/uptime"));
/// ```
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Checks that `filter` is a valid MQTT topic filter: `#` only as the last level, wildcards
/// only as whole levels, not empty.
///
/// # Examples
///
/// ```
/// use spa_dat::socket::validate_filter;
///
/// assert!(validate_filter("sensors/+/temp").is_ok());
/// assert!(validate_filter("sensors/#").is_ok());
/// assert!(validate_filter("sensors/#/temp").is_err()); // `#` only last
/// assert!(validate_filter("sensors/t+").is_err()); // wildcards are whole levels
/// ```
pub fn validate_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter cannot be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "`{filter}`: `#` must be a whole level and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("`{filter}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

/// The longest topic any transport of spa-dat takes, in bytes (MQTT's string length limit).
pub const MAX_TOPIC_BYTES: usize = 65_535;
/// The most levels a topic to publish to may have: brokers drop the connection of a client
/// publishing deeper (Mosquitto: 200, EMQX's default `max_topic_levels`: 128).
pub const MAX_TOPIC_LEVELS: usize = 128;

/// Checks that `topic` can be published to on every transport: not empty, no `+` or `#`
/// (wildcards are for subscriptions), no U+0000, at most [`MAX_TOPIC_BYTES`] bytes and
/// [`MAX_TOPIC_LEVELS`] levels. MQTT
/// brokers drop the connection of a client publishing to such a topic (MQTT 3.1.1 §4.7.3), so
/// a topic an outside client chose — a request's response topic — is checked with this
/// before anything uses it. Transports check their own stricter rules when they publish
/// (Kafka topic names).
///
/// # Examples
///
/// ```
/// use spa_dat::socket::validate_topic;
///
/// assert!(validate_topic("orders/eu/created").is_ok());
/// assert!(validate_topic("orders/+").is_err()); // wildcards are for subscriptions
/// assert!(validate_topic("").is_err());
/// ```
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("a topic to publish to cannot be empty".into());
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(format!(
            "a topic of {} bytes is longer than {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    // One pass over the bytes (every publish checks its topic): the checks below in order.
    let (mut separators, mut nul, mut wildcard) = (0usize, false, false);
    for byte in topic.bytes() {
        match byte {
            b'/' => separators += 1,
            b'\0' => nul = true,
            b'+' | b'#' => wildcard = true,
            _ => {}
        }
    }
    if nul {
        return Err(format!(
            "`{}` contains U+0000",
            shortened(&topic.escape_debug().to_string())
        ));
    }
    let levels = separators + 1;
    if levels > MAX_TOPIC_LEVELS {
        return Err(format!(
            "`{}` has {levels} levels, more than {MAX_TOPIC_LEVELS}",
            shortened(topic)
        ));
    }
    if wildcard {
        return Err(format!(
            "`{}` has a wildcard (`+`, `#`): one can subscribe to it, not publish to it",
            shortened(topic)
        ));
    }
    Ok(())
}

/// `text` cut to a length fit for a log line or an error.
pub(crate) fn shortened(text: &str) -> std::borrow::Cow<'_, str> {
    shortened_to(text, 256)
}

/// `text` in at most `limit` bytes: cut on a character boundary, with its full size after
/// the cut (`…(70000 bytes)`).
pub(crate) fn shortened_to(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return text.into();
    }
    let size = format!("…({} bytes)", text.len());
    let mut end = limit.saturating_sub(size.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{size}", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_an_mqtt_broker_would_drop_the_connection_for_are_refused() {
        let deep = "a/".repeat(128) + "b";
        for bad in ["", "a/#", "a/+", "#", "a\0b", &"x".repeat(70_000), &deep] {
            assert!(validate_topic(bad).is_err(), "{:?}", bad.get(..20));
        }
        let deepest = "a/".repeat(127) + "b";
        for good in ["a", "a/b", "_spa/reply/x/1", "ü/ß", "a b", &deepest] {
            assert!(validate_topic(good).is_ok(), "{good}");
        }
        assert!(matches!(
            validate_topic(&"x".repeat(70_000)),
            Err(reason) if reason.contains("70000 bytes")
        ));
    }

    #[test]
    fn wildcards() {
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/c"));
        assert!(topic_matches("a/+/c", "a/x/c"));
        assert!(!topic_matches("a/+/c", "a/x/y/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "x/y"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("a/+", "a"));
        assert!(topic_matches("+/+", "a/b"));
    }

    #[test]
    fn filter_validation() {
        assert!(validate_filter("a/#").is_ok());
        assert!(validate_filter("a/#/b").is_err());
        assert!(validate_filter("a/b#").is_err());
        assert!(validate_filter("a/+b").is_err());
        assert!(validate_filter("").is_err());
    }
}
