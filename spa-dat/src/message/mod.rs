//! [`SpaMessage`], the envelope every spa-dat service puts on the bus, and its wire format.
//!
//! The wire format is the Python package's (spa-dat 0.4.0), byte for byte: one compact JSON
//! object with PascalCase keys in a fixed order. See `WIRE.md` in the repository's test data.

mod decode;
pub(crate) mod envelope;
pub(crate) mod qos;
mod trace;

pub(crate) use envelope::{MessageBuilder, SpaMessage};
pub(crate) use trace::{is_traceparent, is_tracestate};
pub use trace::{TraceContext, TRACEPARENT, TRACESTATE};

/// The content type spa-dat sets for JSON payloads.
pub const CONTENT_TYPE_JSON: &str = "application/json";

#[cfg(test)]
mod tests {
    use super::envelope::*;
    use super::qos::QualityOfService;
    use super::*;
    use crate::error::Error;

    #[test]
    fn non_utf8_payload_is_an_encode_error() {
        let message = SpaMessage::new("t", vec![0xff, 0xfe]);
        let err = message.to_json().expect_err("must not encode");
        assert!(
            matches!(err, Error::Encode { ref topic, .. } if topic == "t"),
            "{err}"
        );
    }

    #[test]
    fn missing_topic_is_a_decode_error() {
        let err = SpaMessage::from_json(br#"{"Payload":"x"}"#).expect_err("must fail");
        assert!(err.to_string().contains("Topic"), "{err}");
    }

    #[test]
    fn bad_qos_is_a_decode_error() {
        let err = SpaMessage::from_json(br#"{"Payload":"x","Topic":"t","QualityOfService":7}"#)
            .expect_err("must fail");
        assert!(err.to_string().contains("QualityOfService"), "{err}");
    }

    #[test]
    fn trace_context_rides_in_two_extra_keys_and_is_never_a_reason_to_refuse() {
        let plain = SpaMessage::new("t", "x").with_timestamp(1);
        let plain_json = String::from_utf8(plain.to_json().expect("encodes")).expect("utf-8");
        assert!(
            !plain_json.contains("trace"),
            "no keys without context: {plain_json}"
        );

        let mut traced = plain.clone();
        traced.trace_context = Some(TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: Some("vendor=1".into()),
        });
        let json = traced.to_json().expect("encodes");
        assert!(json.ends_with(br#","Timestamp":1,"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"vendor=1"}"#));
        assert_eq!(SpaMessage::from_json(&json).expect("decodes"), traced);

        for odd in [r#"7"#, r#"null"#, r#"["x"]"#, r#"{"a":1}"#] {
            let text =
                format!(r#"{{"Payload":"x","Topic":"t","traceparent":{odd},"tracestate":{odd}}}"#);
            let message = SpaMessage::from_json(text.as_bytes()).expect("still a message");
            assert_eq!(message.trace_context, None, "{text}");
        }
    }

    #[test]
    fn escaped_strings_decode() {
        let m =
            SpaMessage::from_json(br#"{"Payload":"a\"b\u00fc","Topic":"t\/x"}"#).expect("decodes");
        assert_eq!(&m.payload[..], "a\"bü".as_bytes());
        assert_eq!(m.topic, "t/x");
        assert_eq!(m.quality_of_service, QualityOfService::ExactlyOnce);
    }
}
