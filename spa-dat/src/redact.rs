//! Secrets kept out of logs, errors and `Debug` output: passwords in bus URLs and in transport
//! settings (MQTT passwords, librdkafka's SASL and TLS secrets).

/// What is shown instead of a secret.
pub(crate) const REDACTED: &str = "***";

/// Whether a setting's name says its value is a secret (`sasl.password`,
/// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`,
/// `sasl.jaas.config`, `ssl.key.pem`, a token…).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
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
pub(crate) fn redacted_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let mut redacted = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{user}:{REDACTED}@{host}"),
                    None => authority.to_owned(),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => before_query.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_key(&decoded(key)) => format!("{key}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted
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
