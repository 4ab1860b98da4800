//! Helpers every transport's settings use: reading a bus URL (`scheme://...?key=value`) and
//! checking values, with errors that name the key and never show a secret.
//!
//! A leaf: it depends on `error` and `redact` only, so transports and `config` both use it and
//! dependencies run one way (error ← url ← transports ← config ← app).

use crate::error::{Error, Result};

/// The query of the bus URL `url` as key/value pairs, percent-decoded. Unlike form decoding,
/// `+` stays a plus: it is the MQTT single-level wildcard in topic lists.
pub(crate) fn query_pairs(url: &str, query: Option<&str>) -> Result<Vec<(String, String)>> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((url_decode(url, key)?, url_decode(url, value)?))
        })
        .collect()
}

/// One percent-encoded part of the bus URL `url`, decoded.
pub(crate) fn url_decode(url: &str, part: &str) -> Result<String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|e| bad_url(url, e))
}

/// A numeric URL parameter.
#[cfg(any(feature = "mqtt", feature = "kafka"))]
pub(crate) fn url_number<T: std::str::FromStr>(url: &str, key: &str, value: &str) -> Result<T> {
    value.parse().map_err(|_| {
        let (key, value) = (shown(url, key), shown(url, value));
        bad_url(
            url,
            format!("`{key}={value}` is not a number in the range `{key}` takes"),
        )
    })
}

pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn unknown_parameter(url: &str, key: &str, valid: &[&str]) -> Error {
    bad_url(
        url,
        format!(
            "unknown parameter `{}`; expected one of: {}",
            shown(url, key),
            valid.join(", ")
        ),
    )
}

/// `text` from the bus URL `url` as an error may show it: [`REDACTED`] where it may be part of
/// a password (`mqtt://user:1234?x@host` reads as port 1234 and a parameter `x@host`).
///
/// [`REDACTED`]: crate::redact::REDACTED
pub(crate) fn shown<'a>(url: &str, text: &'a str) -> &'a str {
    if crate::redact::overlaps_secret(url, text) {
        crate::redact::REDACTED
    } else {
        text
    }
}

/// A configuration error about the bus URL `url`, shown without its secrets.
pub(crate) fn bad_url(url: &str, problem: impl std::fmt::Display) -> Error {
    Error::config(format!(
        "bad bus URL `{}`: {problem}",
        crate::redact::redacted_url(url)
    ))
}

/// The longest timeout or grace period a configuration may set: a day (a larger one is a
/// mistake, and `u64::MAX` ms would overflow the clock).
pub(crate) const MAX_DURATION_MS: u64 = 24 * 60 * 60 * 1000;

/// Checks a duration setting named `key`: from `min` ms to [`MAX_DURATION_MS`].
pub(crate) fn check_duration_ms(key: &str, ms: u64, min: u64) -> Result<()> {
    if (min..=MAX_DURATION_MS).contains(&ms) {
        Ok(())
    } else {
        Err(Error::config(format!(
            "`{key}` = {ms} ms is out of range: {min} ms to {MAX_DURATION_MS} ms (a day)"
        )))
    }
}

/// A yes/no URL parameter: `true`/`1`/`yes` or `false`/`0`/`no`.
#[cfg(any(feature = "mqtt", feature = "kafka"))]
pub(crate) fn parse_bool(url: &str, key: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad_url(
            url,
            format!(
                "`{}={}` is not true or false",
                shown(url, key),
                shown(url, value)
            ),
        )),
    }
}
