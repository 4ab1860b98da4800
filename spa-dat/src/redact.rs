//! Secrets kept out of logs, errors and `Debug` output: passwords in bus URLs and in transport
//! settings (MQTT passwords, librdkafka's SASL and TLS secrets).

use std::ops::Range;

/// What is shown instead of a secret.
pub(crate) const REDACTED: &str = "***";

/// Whether a setting's name says its value is a secret (`sasl.password`,
/// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`,
/// `sasl.jaas.config`, `ssl.key.pem`, a token, a `passwd` or `pwd`, a credential, a private
/// key…).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "credential",
        "private",
        "secret",
        "token",
        "jaas",
        "oauthbearer.config",
        "key.pem",
    ]
    .iter()
    .any(|marker| key.contains(marker))
}

/// `url` with the password of its user part and the values of secret parameters replaced by
/// [`REDACTED`]. Works on the text, so a URL too broken to parse is redacted too.
///
/// A password may hold any of `/`, `?`, `#`, `@`, `:` and `&` unencoded, and then no parser
/// agrees on where it ends; so this assumes the worst: the user part runs from the first `:`
/// after the scheme to the *last* `@` of the whole text, and a secret parameter's value runs to
/// the next `&` (a `#` or `?` in it does not end it). Where that guess is wrong, more is hidden
/// than needed (`kafka://host:9092?client_id=a@b` shows as `kafka://host:***@b`), never less.
pub(crate) fn redacted_url(url: &str) -> String {
    let mut redacted = String::with_capacity(url.len());
    let mut shown_from = 0;
    for hidden in secret_ranges(url) {
        redacted.push_str(&url[shown_from..hidden.start]);
        redacted.push_str(REDACTED);
        shown_from = hidden.end;
    }
    redacted.push_str(&url[shown_from..]);
    redacted
}

/// Whether `text`, taken from `url` (a parameter's name or value), may be part of a secret
/// [`redacted_url`] hides: it overlaps a hidden part wherever it occurs in `url`, or it does
/// not occur as it is (it was percent-decoded), so where it came from is unknown.
pub(crate) fn overlaps_secret(url: &str, text: &str) -> bool {
    if text.is_empty() {
        return false;
    }
    let hidden = secret_ranges(url);
    let mut found = false;
    for (start, _) in url.match_indices(text) {
        found = true;
        let end = start + text.len();
        if hidden.iter().any(|h| h.start < end && start < h.end) {
            return true;
        }
    }
    !found
}

/// The parts of `url` that may hold a secret (see [`redacted_url`]), sorted, not overlapping.
fn secret_ranges(url: &str) -> Vec<Range<usize>> {
    let rest_start = url.find("://").map_or(0, |at| at + 3);
    let rest = &url[rest_start..];
    let mut ranges = Vec::new();
    if let Some(at) = rest.rfind('@') {
        if let Some(colon) = rest[..at].find(':') {
            ranges.push(rest_start + colon + 1..rest_start + at);
        }
    }
    for (delimiter, _) in url.match_indices(['?', '&']) {
        let after = delimiter + 1;
        let Some(key_len) = url[after..].find(['=', '&', '?']) else {
            continue;
        };
        let key = &url[after..after + key_len];
        if url[after + key_len..].starts_with('=') && is_secret_key(&decoded(key)) {
            let value = after + key_len + 1;
            let end = url[value..].find('&').map_or(url.len(), |len| value + len);
            ranges.push(value..end);
        }
    }
    ranges.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

fn decoded(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

/// `Some("***")` for a set secret, for `Debug` output.
#[cfg(feature = "mqtt")]
pub(crate) fn redacted_option(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_parameters_are_redacted() {
        assert_eq!(
            redacted_url("mqtts://user:p%40ss@host:8883/?client_id=a&password=x"),
            "mqtts://user:***@host:8883/?client_id=a&password=***"
        );
        assert_eq!(
            redacted_url("kafka://a:9092,b:9092?sasl.username=u&sasl.password=s&sasl.oauthbearer.config=principal%3Dx"),
            "kafka://a:9092,b:9092?sasl.username=u&sasl.password=***&sasl.oauthbearer.config=***"
        );
        assert_eq!(
            redacted_url("mqtt://user@host"),
            "mqtt://user@host",
            "no password"
        );
        assert_eq!(redacted_url("not a url"), "not a url");
        assert_eq!(redacted_url("user:pw@host"), "user:***@host", "no scheme");
    }

    #[test]
    fn a_password_holding_delimiters_is_hidden_to_the_last_at() {
        for (url, redacted) in [
            ("mqtt://user:pa/ss@host", "mqtt://user:***@host"),
            ("mqtt://user:pa?ss@host?qos=1", "mqtt://user:***@host?qos=1"),
            (
                "mqtt://user:p#a@s:s@host:1883/",
                "mqtt://user:***@host:1883/",
            ),
            ("mqtt://user:@host", "mqtt://user:***@host"),
            // Over-hidden rather than under: the `@` may have been the password's.
            ("kafka://host:9092?client_id=a@b", "kafka://host:***@b"),
            // A secret parameter's value runs to the next `&`.
            (
                "kafka://h?sasl.password=a#b?c&x=1",
                "kafka://h?sasl.password=***&x=1",
            ),
            (
                "kafka://h?sasl.password=p@ss",
                "kafka://h?sasl.password=***",
            ),
        ] {
            assert_eq!(redacted_url(url), redacted, "{url}");
        }
        assert!(overlaps_secret("mqtt://user:1234?ss@host", "ss@host"));
        assert!(!overlaps_secret("mqtt://user:pw@host?nope=1", "nope"));
        assert!(
            overlaps_secret("mqtt://h?x=%41", "A"),
            "decoded: origin unknown"
        );
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "sasl.password",
            "ssl.keystore.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
            "ssl.key.pem",
            "passwd",
            "db_pwd",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "sasl.username",
            "ssl.ca.location",
            "security.protocol",
            "sasl.mechanism",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
