//! The envelope decoder against the real Python spa-dat 0.4.0: a few thousand envelopes —
//! valid ones, each field given values of every JSON type, structural damage, odd encodings,
//! deep nesting, huge values, random byte mutations — are decoded by Python's own
//! `JsonSerializer().deserialize` (tests/python/decode_envelopes.py) and by
//! `SpaMessage::from_json`. Rust must accept exactly what Python accepts, with the same field
//! values, and reject the rest naming the field Python names. Where the two differ on purpose
//! the case is in `KNOWN_DIFFERENCES`, and the test checks Rust does what that list says.

use spa_dat_test_support as support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use spa_dat::SpaMessage;

/// Cases where Rust does not do what Python does: tag, whether Rust accepts, and why (README,
/// "From the Python package").
const KNOWN_DIFFERENCES: &[(&str, bool, &str)] = &[
    (
        "non-finite",
        false,
        "NaN/Infinity are not JSON; Python's json accepts them anywhere, serde_json nowhere",
    ),
    (
        "python-limits",
        true,
        "an ignored value nested 5,000 deep or an integer of 5,000 digits: Python's json crashes \
         (RecursionError, ValueError); matching that would be copying a defect",
    ),
    (
        "huge-timestamp",
        false,
        "a Timestamp beyond 64 bits: Python ints are unbounded, Rust's is i64",
    ),
    (
        "utf16-32",
        false,
        "a document in UTF-16 or UTF-32: Python's json detects the encoding; spa-dat reads UTF-8",
    ),
];

struct Case {
    bytes: Vec<u8>,
    /// A tag of `KNOWN_DIFFERENCES`, if the case is one.
    known: Option<&'static str>,
}

fn case(bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        bytes: bytes.into(),
        known: None,
    }
}

fn known(tag: &'static str, bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        bytes: bytes.into(),
        known: Some(tag),
    }
}

const FIELDS: [&str; 8] = [
    "Payload",
    "Topic",
    "ContentType",
    "ClientId",
    "ClientName",
    "QualityOfService",
    "ResponseTopic",
    "Timestamp",
];

/// JSON values of every type and the edges of each.
const VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "1",
    "2",
    "3",
    "-1",
    "-0",
    "0.0",
    "1.0",
    "2.0",
    "1.5",
    "2.5",
    "1e3",
    "1E0",
    "1e-3",
    "1e400",
    "-1e400",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "\"\"",
    "\"x\"",
    "\"0\"",
    "\"1\"",
    "\"2\"",
    "\"123\"",
    "\" 123 \"",
    "\"1.0\"",
    "\"1.5\"",
    "\"-7\"",
    "\"1e3\"",
    "\"abc\"",
    "\"true\"",
    "\"\\u00e9t\\u00e9\"",
    "\"\\ud83d\\ude00\"",
    "\"\\u0000\"",
    "\"a\\nb\"",
    "[]",
    "[1]",
    "{}",
    "{\"a\":1}",
    "\"\\/\"",
];

fn valid_fields() -> Vec<(&'static str, String)> {
    vec![
        ("Payload", "\"hello\"".into()),
        ("Topic", "\"plant/line-1\"".into()),
        ("ContentType", "\"text/plain\"".into()),
        ("ClientId", "\"c-1\"".into()),
        ("ClientName", "\"sensor\"".into()),
        ("QualityOfService", "1".into()),
        ("ResponseTopic", "\"replies\"".into()),
        ("Timestamp", "1700000000".into()),
    ]
}

fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("\"{key}\":{value}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let valid = valid_fields();
    let valid_doc = object(&valid);
    cases.push(case(valid_doc.clone()));
    cases.push(case(object(&valid[..2])));
    // Each field: every value, and absent.
    for field in FIELDS {
        for value in VALUES {
            let fields: Vec<_> = valid
                .iter()
                .map(|(key, v)| {
                    (
                        *key,
                        if *key == field {
                            value.to_string()
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect();
            let tag = match (field, *value) {
                (
                    "Timestamp",
                    "9223372036854775808" | "-9223372036854775809" | "18446744073709551616",
                ) => Some("huge-timestamp"),
                _ => None,
            };
            cases.push(Case {
                bytes: object(&fields).into_bytes(),
                known: tag,
            });
        }
        let without: Vec<_> = valid
            .iter()
            .filter(|(key, _)| *key != field)
            .cloned()
            .collect();
        cases.push(case(object(&without)));
        // Duplicated: the later value counts in Python.
        let mut twice = valid.clone();
        twice.push((field, valid_fields()[1].1.clone()));
        cases.push(case(object(&twice)));
        let mut twice = valid.clone();
        twice.insert(0, (field, "123".into()));
        cases.push(case(object(&twice)));
        // Lower-case key: not the alias, ignored.
        let lower: Vec<_> = valid
            .iter()
            .map(|(key, v)| {
                if *key == field {
                    ("payloadish", v.clone())
                } else {
                    (*key, v.clone())
                }
            })
            .collect();
        cases.push(case(object(&lower)));
    }
    // Unknown keys with values of every kind.
    for value in VALUES {
        let mut fields = valid.clone();
        fields.push(("Extra", value.to_string()));
        cases.push(case(object(&fields)));
    }
    for literal in ["NaN", "Infinity", "-Infinity"] {
        let mut fields = valid.clone();
        fields.push(("Extra", literal.to_string()));
        cases.push(known("non-finite", object(&fields)));
        let mut fields = valid.clone();
        fields[7].1 = literal.to_string();
        cases.push(case(object(&fields)));
    }
    let mut fields = valid.clone();
    fields.push(("Extra", "\"\\ud800\"".into()));
    cases.push(case(object(&fields)));
    let mut fields = valid.clone();
    fields[0].1 = "\"\\ud800\"".into();
    cases.push(case(object(&fields)));
    for depth in [1, 10, 100, 127] {
        let mut fields = valid.clone();
        fields.push((
            "Extra",
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        ));
        cases.push(case(object(&fields)));
    }
    for (depth, tag) in [(200, None), (5_000, Some("python-limits"))] {
        let mut fields = valid.clone();
        fields.push((
            "Extra",
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        ));
        cases.push(Case {
            bytes: object(&fields).into_bytes(),
            known: tag,
        });
    }
    // Huge values.
    let mut fields = valid.clone();
    fields[0].1 = format!("\"{}\"", "x".repeat(1_000_000));
    cases.push(case(object(&fields)));
    let mut fields = valid.clone();
    fields.push(("Extra", "9".repeat(4_000)));
    cases.push(case(object(&fields)));
    let mut fields = valid.clone();
    fields.push(("Extra", "9".repeat(5_000)));
    cases.push(known("python-limits", object(&fields)));
    // Structure and encoding.
    for document in [
        "",
        " ",
        "null",
        "0",
        "\"text\"",
        "[]",
        "[\"hello\",\"t\"]",
        "{}",
        "{",
        "}",
        "{\"Payload\":\"p\",\"Topic\":\"t\"} x",
        "{\"Payload\":\"p\",\"Topic\":\"t\"}}",
        " \n\t{\"Payload\":\"p\",\"Topic\":\"t\"}\r\n",
        "{\"Payload\":\"p\",\"Topic\":\"t\",}",
        "{'Payload':'p','Topic':'t'}",
        "{\"Payload\":\"p\" \"Topic\":\"t\"}",
    ] {
        cases.push(case(document));
    }
    let mut bom = vec![0xef, 0xbb, 0xbf];
    bom.extend_from_slice(valid_doc.as_bytes());
    cases.push(case(bom));
    let utf16: Vec<u8> = valid_doc
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    cases.push(known("utf16-32", utf16));
    let mut not_utf8 = valid_doc.clone().into_bytes();
    not_utf8.insert(12, 0xff);
    cases.push(case(not_utf8));
    for cut in 0..valid_doc.len() {
        cases.push(case(&valid_doc.as_bytes()[..cut]));
    }
    // Random damage to a valid document, reproducible.
    let mut rng = fastrand::Rng::with_seed(0x5DA7_0004);
    for _ in 0..2_000 {
        let mut bytes = valid_doc.clone().into_bytes();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..bytes.len());
            match rng.u8(..3) {
                0 => bytes[at] = rng.u8(..),
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(
                    at,
                    *b"{}[]\",:0 \\e-.n".get(rng.usize(..14)).unwrap_or(&b' '),
                ),
            }
        }
        cases.push(case(bytes));
    }
    cases
}

/// Python's verdict on each case.
fn python_decodes(cases: &[Case]) -> Vec<serde_json::Value> {
    let mut child = Command::new(support::python::python())
        .arg(support::python::script("decode_envelopes.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python runs");
    let mut input = String::new();
    for case in cases {
        for byte in &case.bytes {
            input.push_str(&format!("{byte:02x}"));
        }
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("python finishes");
    writer.join().expect("join").expect("written");
    assert!(output.status.success(), "decode_envelopes.py failed");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a verdict"))
        .collect()
}

fn rust_fields(message: &SpaMessage) -> HashMap<&'static str, serde_json::Value> {
    let text = |value: &Option<String>| value.clone().map_or(serde_json::Value::Null, Into::into);
    HashMap::from([
        ("Payload", message.payload_str().expect("utf-8").into()),
        ("Topic", message.topic.clone().into()),
        ("ContentType", text(&message.content_type)),
        ("ClientId", text(&message.client_id)),
        ("ClientName", text(&message.client_name)),
        (
            "QualityOfService",
            (message.quality_of_service as u8).into(),
        ),
        ("ResponseTopic", text(&message.response_topic)),
        ("Timestamp", message.timestamp.to_string().into()),
    ])
}

fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let chars = text.chars().count();
    if chars > 160 {
        let start: String = text.chars().take(40).collect();
        let end: String = text.chars().skip(chars - 110).collect();
        format!("{start}…{end} ({} bytes)", bytes.len())
    } else {
        text.into_owned()
    }
}

#[test]
fn rust_accepts_exactly_what_python_accepts() {
    let cases = cases();
    let verdicts = python_decodes(&cases);
    assert_eq!(verdicts.len(), cases.len(), "a verdict per case");
    let mut disagreements = Vec::new();
    let mut known_seen: HashMap<&str, usize> = HashMap::new();
    for (case, python) in cases.iter().zip(&verdicts) {
        let rust = SpaMessage::from_json(&case.bytes);
        let python_ok = python["ok"].as_bool().expect("ok");
        if let Some(tag) = case.known {
            let (_, rust_accepts, _) = KNOWN_DIFFERENCES
                .iter()
                .find(|(known, _, _)| *known == tag)
                .expect("a listed difference");
            *known_seen.entry(tag).or_default() += 1;
            assert_ne!(python_ok, *rust_accepts, "{tag}: still a difference");
            assert_eq!(
                rust.is_ok(),
                *rust_accepts,
                "{tag}: Rust does as listed for `{}`",
                shown(&case.bytes)
            );
            continue;
        }
        match (&rust, python_ok) {
            (Ok(message), true) => {
                let fields = rust_fields(message);
                for field in FIELDS {
                    if field == "Timestamp" && python["timestamp_defaulted"] == true {
                        continue; // Python's default is the time it was imported
                    }
                    if fields[field] != python["fields"][field] {
                        disagreements.push(format!(
                            "{field}: Rust {} vs Python {} in `{}`",
                            fields[field],
                            python["fields"][field],
                            shown(&case.bytes)
                        ));
                    }
                }
            }
            (Err(error), false) => {
                if let Some(field) = python["field"].as_str() {
                    if !error.to_string().contains(field) {
                        disagreements.push(format!(
                            "Rust's error does not name `{field}`: {error} for `{}`",
                            shown(&case.bytes)
                        ));
                    }
                }
            }
            (Ok(_), false) => disagreements.push(format!(
                "Rust accepts what Python rejects ({}): `{}`",
                python["error"],
                shown(&case.bytes)
            )),
            (Err(error), true) => disagreements.push(format!(
                "Rust rejects what Python accepts ({error}): `{}`",
                shown(&case.bytes)
            )),
        }
    }
    println!(
        "{} cases, {} accepted by Python; known differences seen: {known_seen:?}",
        cases.len(),
        verdicts.iter().filter(|v| v["ok"] == true).count()
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
