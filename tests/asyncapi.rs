//! The AsyncAPI document of an application (`DistributedApplication::asyncapi`,
//! `SPA_DAT_ASYNCAPI`): what it says of handlers, topics and buses, that it never carries a
//! credential, and that the real AsyncAPI parser (`@asyncapi/parser`, run by
//! `scripts/asyncapi.sh` with Node.js) accepts every one of them without a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use spa_dat::config::SocketConfig;
use spa_dat::{
    consumer, producer, Config, DistributedApplication, Json, Socket, SpaMessage, Stopped,
};

/// An order, as the billing consumer takes it.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Order {
    /// The order's number.
    id: u64,
    lines: Vec<Line>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Line {
    sku: String,
    quantity: u32,
}

/// What billing answers.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Invoice {
    order: u64,
    total_cents: u64,
}

#[consumer(topics = ["orders/${REGION}/+"], group = "billing", dead_letter = "orders/dead")]
async fn bill(Json(order): Json<Order>) -> spa_dat::Result<Json<Invoice>> {
    Ok(Json(Invoice {
        order: order.id,
        total_cents: 100,
    }))
}

#[producer(sends = ["orders/eu/new"])]
async fn shop(socket: Socket) -> spa_dat::Result<()> {
    let _ = socket;
    Ok(())
}

/// A consumer added with the builder: its payload has a name but no schema.
async fn audit(message: SpaMessage) -> String {
    message.topic
}

const SECRET: &str = "hunter2-not-in-any-document";

/// The buses every document is made for: each transport and wire format, with credentials.
fn buses() -> Vec<(&'static str, Config)> {
    let url = |url: String| Config {
        bus: SocketConfig::from_url(&url).expect("a valid bus URL"),
        ..Config::default()
    };
    vec![
        ("memory", Config::default()),
        (
            "mqtt311-envelope",
            url(format!("mqtt://svc:{SECRET}@broker.example:1883")),
        ),
        (
            "mqtt5-raw",
            url(format!("mqtts://svc:{SECRET}@broker.example:8883?version=5&wire=raw")),
        ),
        (
            "kafka-envelope",
            url(format!(
                "kafka://k1.example:9092,k2.example:9092?security.protocol=SASL_SSL&sasl.mechanism=PLAIN&sasl.username=svc&sasl.password={SECRET}"
            )),
        ),
        ("kafka-raw", url("kafka://k1.example:9092?wire=raw".to_owned())),
    ]
}

fn document(config: Config) -> Value {
    let mut config = config;
    config.dead_letter_topic = Some("dead/${REGION}".to_owned());
    DistributedApplication::new()
        .config(config)
        .api_info("orders", "2.1.0")
        .add_consumer("audit", ["audit/#", "${AUDIT_TOPICS}"], audit)
        .asyncapi()
        .expect("a document")
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("asyncapi");
    std::fs::create_dir_all(&dir).expect("a directory for the documents");
    dir
}

/// Runs the AsyncAPI parser on `files`: whether it accepts them with no error and no
/// warning, and what it said.
fn run_parser(files: &[PathBuf]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/asyncapi.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args(["validate", "--strict"])
        .args(files)
        .output()
        .expect("bash runs scripts/asyncapi.sh (it needs Node.js and npm)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn every_bus_gives_a_document_the_asyncapi_parser_accepts_and_none_holds_a_credential() {
    let dir = out_dir();
    let mut files = Vec::new();
    for (name, config) in buses() {
        let text = serde_json::to_string_pretty(&document(config)).expect("JSON");
        assert!(
            !text.contains(SECRET),
            "{name}: a credential in the document:\n{text}"
        );
        assert!(
            !text.contains("svc"),
            "{name}: a user name in the document:\n{text}"
        );
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, text).expect("written");
        files.push(path);
    }
    let (accepted, said) = run_parser(&files);
    assert!(accepted, "the AsyncAPI parser refused:\n{said}");
}

#[test]
fn the_parser_check_is_real_a_broken_document_is_refused() {
    let mut broken = document(Config::default());
    broken["operations"]["bill"]["channel"]["$ref"] = "#/channels/nowhere".into();
    let path = out_dir().join("broken.json");
    std::fs::write(&path, broken.to_string()).expect("written");
    let (accepted, said) = run_parser(std::slice::from_ref(&path));
    assert!(
        !accepted,
        "the parser accepted a reference to no channel:\n{said}"
    );
    assert!(
        said.contains("broken.json"),
        "the parser's report names no file:\n{said}"
    );
}

#[test]
fn the_document_says_what_each_handler_takes_replies_and_forwards() {
    let doc = document(Config::default());
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "orders");
    assert_eq!(doc["info"]["version"], "2.1.0");
    assert_eq!(doc["servers"]["in-process"]["host"], "default");

    // A placeholder and a wildcard are the channel's parameters.
    let orders = &doc["channels"]["orders_REGION_level3"];
    assert_eq!(orders["address"], "orders/{REGION}/{level3}");
    assert!(orders["parameters"]["REGION"]["description"]
        .as_str()
        .is_some_and(|text| text.contains("environment variable `REGION`")));
    assert!(orders["parameters"]["level3"].is_object());
    assert_eq!(doc["channels"]["AUDIT_TOPICS"]["address"], "{AUDIT_TOPICS}");
    assert_eq!(doc["channels"]["audit_rest"]["address"], "audit/{rest}");

    // The consumer receives Orders and replies with an Invoice to the request's topic.
    let bill = &doc["operations"]["bill"];
    assert_eq!(bill["action"], "receive");
    assert_eq!(bill["channel"]["$ref"], "#/channels/orders_REGION_level3");
    assert_eq!(
        bill["messages"][0]["$ref"],
        "#/channels/orders_REGION_level3/messages/Order"
    );
    assert_eq!(
        bill["reply"]["address"]["location"],
        "$message.payload#/ResponseTopic"
    );
    let reply_channel = bill["reply"]["channel"]["$ref"]
        .as_str()
        .expect("a reply channel");
    let reply_channel = &doc["channels"][reply_channel.trim_start_matches("#/channels/")];
    assert!(reply_channel["address"].is_null(), "{reply_channel}");
    assert!(reply_channel["messages"]["Invoice"].is_object());

    // Payload schemas from the types: the envelope's Payload text holds an Order.
    let order = &doc["components"]["messages"]["Order"];
    assert_eq!(order["contentType"], "application/json");
    assert_eq!(
        order["payload"]["allOf"][0]["$ref"],
        "#/components/schemas/SpaMessage"
    );
    assert_eq!(
        order["payload"]["properties"]["Payload"]["contentSchema"]["$ref"],
        "#/components/schemas/Order"
    );
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["Order"]["properties"]["id"].is_object(),
        "{schemas}"
    );
    assert_eq!(
        schemas["Order"]["properties"]["lines"]["items"]["$ref"],
        "#/components/schemas/Line"
    );
    assert!(schemas["Invoice"]["properties"]["total_cents"].is_object());
    assert_eq!(
        schemas["SpaMessage"]["required"],
        serde_json::json!(["Payload", "Topic"])
    );
    // A builder-added consumer of SpaMessage takes any payload; its String reply is text.
    assert!(doc["components"]["messages"]["SpaMessage"].is_object());
    assert_eq!(
        doc["components"]["messages"]["Text"]["contentType"],
        "text/plain"
    );

    // Dead letters: the consumer's own topic, else the configuration's.
    let dead = &doc["operations"]["bill-dead-letters"];
    assert_eq!(dead["action"], "send");
    assert_eq!(dead["channel"]["$ref"], "#/channels/orders_dead");
    assert_eq!(
        doc["operations"]["audit-dead-letters"]["channel"]["$ref"],
        "#/channels/dead_REGION"
    );

    // What a producer declares it sends.
    let shop = &doc["operations"]["shop-sends-orders_eu_new"];
    assert_eq!(shop["action"], "send");
    assert_eq!(doc["channels"]["orders_eu_new"]["address"], "orders/eu/new");
}

#[test]
fn bindings_and_wire_formats_follow_the_bus() {
    let docs: Vec<(&str, Value)> = buses()
        .into_iter()
        .map(|(name, config)| (name, document(config)))
        .collect();
    let doc = |wanted: &str| {
        &docs
            .iter()
            .find(|(name, _)| *name == wanted)
            .expect("a bus")
            .1
    };

    let kafka = doc("kafka-envelope");
    assert_eq!(kafka["servers"]["kafka-1"]["host"], "k1.example:9092");
    assert_eq!(kafka["servers"]["kafka-2"]["protocol"], "kafka-secure");
    let bindings = &kafka["operations"]["bill"]["bindings"]["kafka"];
    assert_eq!(bindings["groupId"]["enum"], serde_json::json!(["billing"]));
    assert!(kafka["components"]["messages"]["Order"]["bindings"]["kafka"]["key"].is_object());

    let mqtt = doc("mqtt311-envelope");
    assert_eq!(mqtt["servers"]["mqtt"]["host"], "broker.example:1883");
    assert_eq!(mqtt["servers"]["mqtt"]["protocolVersion"], "3.1.1");
    assert_eq!(mqtt["operations"]["bill"]["bindings"]["mqtt"]["qos"], 1);

    // A bare payload: the type's schema is the message's payload, the reply topic a header.
    let raw = doc("mqtt5-raw");
    assert_eq!(raw["servers"]["mqtt"]["protocol"], "secure-mqtt");
    assert_eq!(
        raw["components"]["messages"]["Order"]["payload"]["$ref"],
        "#/components/schemas/Order"
    );
    assert_eq!(
        raw["operations"]["bill"]["reply"]["address"]["location"],
        "$message.header#/spa-response-topic"
    );
    assert!(raw["components"]["schemas"].get("SpaMessage").is_none());
}

const CHILD_ENV: &str = "SPA_DAT_TEST_ASYNCAPI_CHILD";

/// Run by `spa_dat_asyncapi_writes_the_document_and_exits_without_running`, in a process of
/// its own (the environment variable is the process's).
#[test]
#[ignore = "run by its parent test"]
fn child_documenting_instead_of_running() {
    let Ok(bus) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config = Config {
        bus: SocketConfig::from_url(&bus).expect("a bus URL"),
        ..Config::default()
    };
    let stopped = DistributedApplication::new()
        .config(config)
        .watch_signals(false)
        .start()
        .expect("documented");
    assert_eq!(stopped, Stopped::Documented);
}

#[test]
fn spa_dat_asyncapi_writes_the_document_and_exits_without_running() {
    let path = out_dir().join("from-environment.json");
    let _ = std::fs::remove_file(&path);
    // Nothing listens on port 1 and REGION is not set: a run would fail at once, so only
    // documenting instead of running passes.
    let status = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--ignored",
            "--exact",
            "child_documenting_instead_of_running",
        ])
        .env(CHILD_ENV, "mqtt://127.0.0.1:1")
        .env("SPA_DAT_ASYNCAPI", &path)
        .env_remove("REGION")
        .status()
        .expect("the child runs");
    assert!(status.success(), "the child failed: {status}");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("the document was written"))
            .expect("JSON");
    assert_eq!(doc["operations"]["bill"]["action"], "receive");
    assert_eq!(doc["servers"]["mqtt"]["host"], "127.0.0.1:1");

    // A file that cannot be written is an error naming it, not a silent run (the child's
    // output is kept: its failure is the expected outcome, not one to show in the log).
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--ignored",
            "--exact",
            "child_documenting_instead_of_running",
            "--nocapture",
        ])
        .env(CHILD_ENV, "mqtt://127.0.0.1:1")
        .env("SPA_DAT_ASYNCAPI", "/nonexistent-dir/asyncapi.json")
        .output()
        .expect("the child runs");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "documenting to a missing directory succeeded"
    );
    assert!(
        said.contains("/nonexistent-dir/asyncapi.json"),
        "names the file: {said}"
    );
}
