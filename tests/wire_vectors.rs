//! The wire format against vectors written by the Python package (spa-dat 0.4.0):
//! every Python-written message decodes to its fields, and Rust writes the same bytes.

use serde::Deserialize;
use spa_dat::{QualityOfService, SpaMessage};

#[derive(Deserialize)]
struct Vector {
    case: String,
    wire: String,
    fields: Fields,
}

#[derive(Deserialize)]
struct Fields {
    payload: String,
    topic: String,
    content_type: Option<String>,
    client_id: Option<String>,
    client_name: Option<String>,
    quality_of_service: u8,
    response_topic: Option<String>,
    timestamp: i64,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("data/python-spa-dat-0.4.0-vectors.jsonl");
    let vectors: Vec<Vector> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("vector file is valid JSON lines"))
        .collect();
    assert!(vectors.len() >= 4, "vectors missing");
    vectors
}

fn expected(fields: &Fields) -> SpaMessage {
    let mut message = SpaMessage::new(fields.topic.clone(), fields.payload.clone().into_bytes())
        .with_timestamp(fields.timestamp)
        .with_qos(QualityOfService::try_from(fields.quality_of_service).expect("valid qos"));
    message.content_type = fields.content_type.clone();
    message.client_id = fields.client_id.clone();
    message.client_name = fields.client_name.clone();
    message.response_topic = fields.response_topic.clone();
    message
}

#[test]
fn python_wire_decodes_to_its_fields() {
    for vector in vectors() {
        let decoded = SpaMessage::from_json(vector.wire.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", vector.case));
        assert_eq!(decoded, expected(&vector.fields), "case {}", vector.case);
    }
}

#[test]
fn rust_writes_the_bytes_python_writes() {
    for vector in vectors() {
        let written = expected(&vector.fields).to_json().expect("encodes");
        assert_eq!(
            String::from_utf8(written).expect("utf-8"),
            vector.wire,
            "case {}",
            vector.case
        );
    }
}

#[test]
fn rust_output_decodes_to_the_same_message() {
    for vector in vectors() {
        let message = expected(&vector.fields);
        let again = SpaMessage::from_json(&message.to_json().expect("encodes")).expect("decodes");
        assert_eq!(again, message, "case {}", vector.case);
    }
}

#[test]
fn python_defaults_apply_to_sparse_objects() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let message =
        SpaMessage::from_json(br#"{"Payload":"p","Topic":"t","Extra":[1,2]}"#).expect("decodes");
    assert_eq!(message.quality_of_service, QualityOfService::ExactlyOnce);
    assert_eq!(message.content_type, None);
    assert!(
        message.timestamp >= before,
        "timestamp is taken now, not frozen"
    );
}

#[test]
fn new_messages_are_stamped_when_built() {
    let first = SpaMessage::new("t", "a").timestamp;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!((now - first).abs() <= 1);
}

#[test]
fn malformed_input_is_a_clear_error() {
    for (bytes, needle) in [
        (&b"not json"[..], "expected"),
        (br#"{"Topic":"t"}"#, "Payload"),
        (
            br#"{"Payload":1,"Topic":"t"}"#,
            "`Payload` must be a string",
        ),
        (
            br#"{"Payload":"x","Topic":"t","Timestamp":"soon"}"#,
            "`Timestamp` must be a whole number",
        ),
        (b"\xff\xfe", "not UTF-8"),
        (br#"["x","t"]"#, "a JSON object"),
    ] {
        let error = SpaMessage::from_json(bytes).expect_err("must be rejected");
        assert!(
            error.to_string().contains(needle),
            "{:?}: {error}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn non_utf8_payload_cannot_be_encoded() {
    let error = SpaMessage::new("t", vec![0x80])
        .to_json()
        .expect_err("rejected");
    assert!(error.to_string().contains("not valid UTF-8"), "{error}");
}

#[test]
fn message_builder_fills_sender_fields() {
    let builder = spa_dat::MessageBuilder::new(Some("c-1"), Some("thermo"));
    let message = builder.build("t", "x");
    assert_eq!(message.client_id.as_deref(), Some("c-1"));
    assert_eq!(message.client_name.as_deref(), Some("thermo"));
    let own = builder.stamp(SpaMessage::new("t", "x").with_client_id("mine"));
    assert_eq!(own.client_id.as_deref(), Some("mine"));
    let json = builder
        .json("t", &serde_json::json!({"v": 1}))
        .expect("encodes");
    assert_eq!(json.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        json.payload_json::<serde_json::Value>().expect("json")["v"],
        1
    );
}
