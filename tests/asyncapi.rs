//! The AsyncAPI document of an application (`DistributedApplication::asyncapi`,
//! `SPA_DAT_ASYNCAPI`): what it says of handlers, topics and buses, that it never carries a
//! credential, and that the real AsyncAPI parser (`@asyncapi/parser`, run by
//! `scripts/asyncapi.sh` with Node.js) accepts every one of them without a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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
    spa_dat_test_support::outcome(&output)
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
        "#/components/schemas/spa-dat.Envelope"
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
        schemas["spa-dat.Envelope"]["required"],
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
    assert_eq!(kafka["servers"]["kafka"]["host"], "k1.example:9092");
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
    assert!(raw["components"]["schemas"]
        .get("spa-dat.Envelope")
        .is_none());
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

// --- From an outside attack: names that collide, braces, renamed schemas, other buses ---

mod billing {
    /// Billing's order: another type of the same short name.
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    pub(super) struct Order {
        pub(super) invoice_number: String,
    }
}

/// A user type named like spa-dat's own dead-letter message.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct DeadLetter {
    why: String,
}

/// A schema name a component may not have (`^[a-zA-Z0-9.\-_]+$`).
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(rename = "order created/v1")]
struct OrderCreated {
    id: u64,
}

/// A reply type of the user's own: it may reply.
struct Ack;

impl spa_dat::IntoReply for Ack {
    fn into_reply(self) -> spa_dat::handler::HandlerResult {
        Ok(Some(SpaMessage::new("", "ack")))
    }
}

#[consumer(topics = ["billing/orders"], dead_letter = "billing/dead")]
async fn take_billing_order(Json(order): Json<billing::Order>) {
    let _ = order.invoice_number;
}

#[consumer(topics = ["audit/dead"])]
async fn take_user_dead_letter(Json(letter): Json<DeadLetter>) -> Ack {
    let _ = letter.why;
    Ack
}

#[consumer(topics = ["devices/{id}/state", "created"])]
async fn take_created(first: Json<OrderCreated>, second: Json<Invoice>) {
    let _ = (first.0.id, second.0.order);
}

/// The document of every handler of this binary on `config`, validated by the parser.
fn validated(name: &str, app: DistributedApplication) -> Value {
    let doc = app.asyncapi().expect("a document");
    let path = out_dir().join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("JSON")).expect("written");
    let (accepted, said) = run_parser(&[path]);
    assert!(accepted, "{name}: the AsyncAPI parser refused:\n{said}");
    doc
}

#[test]
fn colliding_names_braces_and_renamed_schemas_give_a_valid_and_true_document() {
    let doc = validated(
        "collisions",
        DistributedApplication::new().config(Config::default()),
    );
    let messages = &doc["components"]["messages"];
    // Two types named Order: two messages, each with its own schema.
    let bill = &doc["operations"]["bill"]["messages"][0]["$ref"];
    let billing = &doc["operations"]["take_billing_order"]["messages"][0]["$ref"];
    assert_ne!(bill, billing, "two Order types share a message");
    let id = |reference: &Value| {
        reference
            .as_str()
            .and_then(|r| r.rsplit('/').next())
            .expect("a reference")
            .to_owned()
    };
    let schema_of = |message: &str| {
        messages[message]["payload"]["properties"]["Payload"]["contentSchema"]["$ref"].clone()
    };
    assert_ne!(schema_of(&id(bill)), schema_of(&id(billing)), "{messages}");
    // The user's DeadLetter and spa-dat's are two messages; spa-dat's keeps its headers.
    let dead = id(&doc["operations"]["take_billing_order-dead-letters"]["messages"][0]["$ref"]);
    assert!(messages[&dead]["headers"]["properties"]["spa-dead-letter-reason"].is_object());
    let user = id(&doc["operations"]["take_user_dead_letter"]["messages"][0]["$ref"]);
    assert_ne!(dead, user);
    // A reply type of the user's own may reply: the operation says so.
    assert!(doc["operations"]["take_user_dead_letter"]["reply"].is_object());
    // A topic's own braces are not parameters.
    let created = &doc["channels"];
    assert!(
        created
            .as_object()
            .expect("channels")
            .values()
            .any(|channel| channel["address"] == "devices/%7Bid%7D/state"),
        "{created}"
    );
    // The schema is the payload argument's (the first Json), under a valid key.
    let first = id(&doc["operations"]["take_created-created"]["messages"][0]["$ref"]);
    let reference = schema_of(&first);
    let key = reference
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .expect("a schema reference");
    assert!(
        key.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "{key}"
    );
    assert!(
        doc["components"]["schemas"][key]["properties"]["id"].is_object(),
        "the first argument's schema: {}",
        doc["components"]["schemas"]
    );
}

#[test]
fn a_bus_given_as_a_provider_and_default_topics_are_what_the_document_describes() {
    use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
    let mut config = KafkaConfig::new("k1.example:9092");
    config.default_subscription_topics = vec!["defaults.a".into()];
    config.group_id = Some("bus-group".into());
    let provider = std::sync::Arc::new(KafkaSocketProvider::new(config).expect("config"));
    let doc = validated(
        "provider",
        DistributedApplication::new()
            .without_registered_handlers()
            .config(Config::default())
            .socket_provider(provider)
            .add_application(
                spa_dat::Application::consumer("defaults", Vec::<String>::new(), audit)
                    .group("g-${REGION}"),
            ),
    );
    assert_eq!(
        doc["servers"]["kafka"]["host"], "k1.example:9092",
        "{}",
        doc["servers"]
    );
    assert!(
        doc["servers"].get("in-process").is_none(),
        "{}",
        doc["servers"]
    );
    let operation = &doc["operations"]["defaults"];
    assert_eq!(operation["channel"]["$ref"], "#/channels/defaults_a");
    let group = &operation["bindings"]["kafka"]["groupId"];
    assert!(
        group.get("enum").is_none(),
        "a placeholder is not a value: {group}"
    );
}

#[test]
fn mqtt_3_1_1_with_bare_payloads_promises_no_reply_header() {
    let doc = validated(
        "mqtt311-raw",
        DistributedApplication::new()
            .without_registered_handlers()
            .config(Config {
                bus: SocketConfig::from_url("mqtt://broker.example:1883?wire=raw").expect("URL"),
                ..Config::default()
            })
            .add_consumer("audit", ["audit/#"], audit),
    );
    let audit = &doc["operations"]["audit"];
    assert!(
        audit.get("reply").is_none(),
        "no reply where none can be sent: {audit}"
    );
}

/// A trait of the user's with a method named like the macro's old probe, in scope of a
/// `#[consumer]`: the handler still compiles (the probe's method name is spa-dat's own).
mod user_trait_in_scope {
    use spa_dat::{consumer, Json};

    #[allow(dead_code)]
    pub(super) trait Describe {
        fn payload_schema(&self) -> Option<()> {
            None
        }
    }

    impl<T> Describe for T {}

    #[consumer(topics = ["scoped"])]
    async fn scoped(Json(order): Json<super::Order>) {
        let _ = order.id;
    }
}

// --- From a second outside review ---

/// A serde rename a reference must percent-encode (a space), kept valid.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(rename = "Order (v1)")]
struct OrderV1 {
    id: u64,
}

/// A payload of the user's own, named in the document.
struct Reading(String);

impl spa_dat::FromContext for Reading {
    fn from_context(context: &mut spa_dat::HandlerContext) -> Result<Self, spa_dat::BoxError> {
        Ok(Reading(
            context
                .message()
                .ok_or("no message")?
                .payload_str()?
                .to_owned(),
        ))
    }

    fn payload() -> Option<spa_dat::handler::Payload> {
        Some(spa_dat::handler::Payload::text().named("Reading"))
    }
}

async fn take_v1(Json(order): Json<OrderV1>) {
    let _ = order.id;
}

async fn read(Reading(text): Reading) -> String {
    text
}

/// A provider that says more than a host in its description.
struct Talkative;

#[async_trait::async_trait]
impl spa_dat::socket::spi::SocketProvider for Talkative {
    async fn connect(
        &self,
        _options: spa_dat::socket::spi::SocketOptions,
    ) -> spa_dat::Result<spa_dat::socket::spi::Connection> {
        Err(spa_dat::Error::Closed)
    }

    fn rebuild(
        &self,
        _topics: Vec<String>,
    ) -> std::sync::Arc<dyn spa_dat::socket::spi::SocketProvider> {
        std::sync::Arc::new(Talkative)
    }

    fn default_topics(&self) -> &[String] {
        &[]
    }

    fn capabilities(&self) -> spa_dat::socket::spi::Capabilities {
        spa_dat::socket::memory::MemorySocketProvider::new(spa_dat::socket::memory::MemoryBus::new(
            "caps",
        ))
        .capabilities()
    }

    fn describe(&self) -> String {
        format!("amqp://svc:pa)ss-{SECRET}@mq.example:5672/vhost")
    }
}

#[test]
fn encoded_references_named_payloads_placeholders_and_chatty_providers_stay_valid() {
    use spa_dat::socket::spi::SocketProvider as _;
    let _ = Talkative.capabilities();
    let doc = validated(
        "second-review",
        DistributedApplication::new()
            .without_registered_handlers()
            .config(Config::default())
            .add_consumer("v1", ["orders/${REGION}${SITE"], take_v1)
            .add_consumer("reader", ["readings/${A.B}/${A_B}"], read)
            .add_application(
                spa_dat::Application::consumer("elsewhere", ["amqp/in"], audit)
                    .socket_provider(std::sync::Arc::new(Talkative)),
            ),
    );
    let text = doc.to_string();
    assert!(
        !text.contains(SECRET) && !text.contains("svc"),
        "a credential: {}",
        doc["servers"]
    );
    // A named payload is its own message, not the String reply's "Text".
    let reader = &doc["operations"]["reader"];
    let taken = reader["messages"][0]["$ref"].as_str().expect("a reference");
    assert!(taken.ends_with("/Reading"), "{taken}");
    let replied = reader["reply"]["messages"][0]["$ref"]
        .as_str()
        .expect("a reference");
    assert!(replied.ends_with("/Text"), "{replied}");
    // Two variables that read alike are two parameters.
    let channel = reader["channel"]["$ref"].as_str().expect("a channel");
    let parameters = &doc["channels"][channel.trim_start_matches("#/channels/")]["parameters"];
    assert_eq!(
        parameters.as_object().map(Map::len),
        Some(2),
        "{parameters}"
    );
}

#[test]
fn a_provider_described_bus_says_only_what_it_knows() {
    use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
    use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
    let mut kafka = KafkaConfig::new("k1.example:9092");
    kafka.group_id = Some("bus-group".into());
    let kafka = std::sync::Arc::new(KafkaSocketProvider::new(kafka).expect("config"));
    let mqtt = MqttConfig::from_url("mqtt://broker.example:1883?wire=raw").expect("URL");
    let mqtt = std::sync::Arc::new(MqttSocketProvider::new(mqtt).expect("config"));
    let doc = validated(
        "provider-knowledge",
        DistributedApplication::new()
            .without_registered_handlers()
            .config(Config::default())
            .add_application(
                spa_dat::Application::consumer("k", ["k.in"], audit).socket_provider(kafka),
            )
            .add_application(
                spa_dat::Application::consumer("m", ["m/in"], audit).socket_provider(mqtt),
            ),
    );
    // The provider may set its own group: no group is promised.
    let kafka_binding = &doc["operations"]["k"]["bindings"]["kafka"];
    assert!(kafka_binding.get("groupId").is_none(), "{kafka_binding}");
    // MQTT 3.1.1 with bare payloads: no headers, no reply.
    let m = &doc["operations"]["m"];
    assert!(m.get("reply").is_none(), "{m}");
    let message = m["messages"][0]["$ref"].as_str().expect("a reference");
    let id = message.rsplit('/').next().expect("an id");
    assert!(
        doc["components"]["messages"][id].get("headers").is_none(),
        "{}",
        doc["components"]["messages"][id]
    );
}
