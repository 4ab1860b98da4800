//! The application's contract as an AsyncAPI 3.0 document, from what spa-dat knows at
//! start-up: each application's topics, group, replies and dead letters, the payload types of
//! its handler ([`crate::handler::Payload`]; JSON Schemas with the `schemars` feature) and the
//! configured bus (never its credentials). Written by `SPA_DAT_ASYNCAPI=out.json ./app`
//! ([`crate::DistributedApplication::asyncapi`]).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::placeholders;
use crate::config::{Config, SocketConfig};
use crate::handler::describe::{HandlerShape, Payload, PayloadFormat, PayloadSchema};
use crate::handler::{HandlerKind, PayloadSchemas};
use crate::socket::headers;
use crate::socket::WireFormat;

/// What the document says of one application.
pub(crate) struct AppContract<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: HandlerKind,
    pub(crate) topics: &'a [String],
    pub(crate) group: Option<&'a str>,
    pub(crate) client_id: Option<&'a str>,
    pub(crate) dead_letter_topic: Option<&'a str>,
    pub(crate) sends: &'a [String],
    pub(crate) batch: Option<usize>,
    pub(crate) shape: HandlerShape,
    pub(crate) schemas: PayloadSchemas,
}

/// The document's title and version (`info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiInfo {
    pub(crate) title: String,
    pub(crate) version: String,
}

impl Default for ApiInfo {
    /// The executable's name, version "unversioned".
    fn default() -> Self {
        let title = std::env::current_exe()
            .ok()
            .and_then(|path| {
                path.file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "spa-dat application".to_owned());
        ApiInfo {
            title,
            version: "unversioned".to_owned(),
        }
    }
}

/// The bus as the document sees it.
struct Bus {
    transport: Transport,
    wire: WireFormat,
    servers: Map<String, Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
enum Transport {
    Memory,
    Mqtt { qos: u8 },
    Kafka,
}

/// The AsyncAPI 3.0.0 document of `apps` on the bus `config` describes.
pub(crate) fn document(config: &Config, apps: &[AppContract<'_>], info: &ApiInfo) -> Value {
    let bus = bus_of(&config.bus);
    let mut doc = Document::new(bus);
    for app in apps {
        doc.add(app, config.dead_letter_topic.as_deref());
    }
    doc.finish(info)
}

fn bus_of(config: &SocketConfig) -> Bus {
    let mut servers = Map::new();
    match config {
        SocketConfig::Memory(memory) => {
            servers.insert(
                "in-process".to_owned(),
                json!({
                    "host": memory.bus,
                    "protocol": "spa-dat-memory",
                    "description": "spa-dat's in-process bus: the applications of one process, no broker",
                }),
            );
            Bus {
                transport: Transport::Memory,
                wire: WireFormat::Envelope,
                servers,
            }
        }
        #[cfg(feature = "mqtt")]
        SocketConfig::Mqtt(mqtt) => {
            let version = match mqtt.version {
                crate::socket::mqtt::MqttVersion::V5 => "5",
                _ => "3.1.1",
            };
            servers.insert(
                "mqtt".to_owned(),
                json!({
                    "host": format!("{}:{}", host_only(&mqtt.host), mqtt.port),
                    "protocol": if mqtt.tls.is_some() { "secure-mqtt" } else { "mqtt" },
                    "protocolVersion": version,
                }),
            );
            Bus {
                transport: Transport::Mqtt { qos: mqtt.qos },
                wire: mqtt.wire,
                servers,
            }
        }
        #[cfg(feature = "kafka")]
        SocketConfig::Kafka(kafka) => {
            let secure = kafka
                .properties
                .get("security.protocol")
                .is_some_and(|protocol| protocol.to_ascii_uppercase().contains("SSL"));
            let brokers = kafka
                .bootstrap_servers
                .split(',')
                .map(str::trim)
                .filter(|broker| !broker.is_empty());
            for (index, broker) in brokers.enumerate() {
                servers.insert(
                    format!("kafka-{}", index + 1),
                    json!({
                        "host": host_only(broker),
                        "protocol": if secure { "kafka-secure" } else { "kafka" },
                    }),
                );
            }
            Bus {
                transport: Transport::Kafka,
                wire: kafka.wire,
                servers,
            }
        }
    }
}

/// `host[:port]` without anything that could be a credential (`user:secret@host`).
#[cfg_attr(not(any(feature = "mqtt", feature = "kafka")), allow(dead_code))]
fn host_only(address: &str) -> String {
    let address = address.rsplit('@').next().unwrap_or(address);
    address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .to_owned()
}

/// A document being built: channels, operations and messages by their ids.
struct Document {
    bus: Bus,
    channels: BTreeMap<String, Value>,
    operations: BTreeMap<String, Value>,
    messages: BTreeMap<String, Value>,
    schemas: Map<String, Value>,
    #[cfg(feature = "schemars")]
    generator: schemars::SchemaGenerator,
}

/// The envelope's schema (`WIRE.md`): what Python spa-dat 0.4.0 writes and reads.
fn envelope_schema() -> Value {
    let text_or_null = json!({ "type": ["string", "null"] });
    json!({
        "type": "object",
        "description": "The spa-dat envelope (as Python spa-dat 0.4.0 writes it): one JSON object per message",
        "required": ["Payload", "Topic"],
        "properties": {
            "Payload": { "type": "string", "description": "The message body, as UTF-8 text" },
            "Topic": { "type": "string", "description": "The topic it was published to" },
            "ContentType": text_or_null.clone(),
            "ClientId": text_or_null.clone(),
            "ClientName": text_or_null.clone(),
            "QualityOfService": { "type": "integer", "enum": [0, 1, 2] },
            "ResponseTopic": {
                "type": ["string", "null"],
                "description": "Where a reply is expected (request/reply)",
            },
            "Timestamp": { "type": "integer", "description": "Seconds since the Unix epoch" },
        },
    })
}

impl Document {
    fn new(bus: Bus) -> Self {
        let mut schemas = Map::new();
        if bus.wire == WireFormat::Envelope {
            schemas.insert("SpaMessage".to_owned(), envelope_schema());
        }
        Document {
            bus,
            channels: BTreeMap::new(),
            operations: BTreeMap::new(),
            messages: BTreeMap::new(),
            schemas,
            #[cfg(feature = "schemars")]
            generator: schemars::generate::SchemaSettings::draft07()
                .with(|settings| settings.definitions_path = "/components/schemas".into())
                .into_generator(),
        }
    }

    fn add(&mut self, app: &AppContract<'_>, default_dead_letter: Option<&str>) {
        if app.kind == HandlerKind::Consumer {
            let message = match app.shape.takes {
                Some(payload) => self.message(payload, app.schemas.takes),
                None => self.message(Payload::any(), None),
            };
            let reply = app.shape.replies.map(|payload| {
                let message = self.message(payload, app.schemas.replies);
                self.reply(app.name, &message)
            });
            let many = app.topics.len() > 1;
            for topic in app.topics {
                let channel = self.channel(topic, &message);
                let id = match many {
                    true => format!("{}-{}", ident(app.name), channel),
                    false => ident(app.name),
                };
                let mut operation = json!({
                    "action": "receive",
                    "summary": match app.batch {
                        Some(size) => format!("`{}` handles these messages in batches of up to {size}", app.name),
                        None => format!("`{}` handles these messages", app.name),
                    },
                    "channel": { "$ref": format!("#/channels/{channel}") },
                    "messages": [{ "$ref": format!("#/channels/{channel}/messages/{message}") }],
                });
                if let Some(bindings) = self.receive_bindings(app) {
                    operation["bindings"] = bindings;
                }
                if let Some(reply) = &reply {
                    operation["reply"] = reply.clone();
                }
                self.operations
                    .insert(unique(&self.operations, id), operation);
            }
            if let Some(topic) = app.dead_letter_topic.or(default_dead_letter) {
                let dead = self.message_named("DeadLetter", dead_letter_message);
                let channel = self.channel(topic, &dead);
                let id = format!("{}-dead-letters", ident(app.name));
                self.operations.insert(
                    unique(&self.operations, id),
                    json!({
                        "action": "send",
                        "summary": format!("`{}` forwards here what it cannot handle", app.name),
                        "channel": { "$ref": format!("#/channels/{channel}") },
                        "messages": [{ "$ref": format!("#/channels/{channel}/messages/{dead}") }],
                    }),
                );
            }
        }
        for topic in app.sends {
            let message = self.message(Payload::any(), None);
            let channel = self.channel(topic, &message);
            let id = format!("{}-sends-{channel}", ident(app.name));
            self.operations.insert(
                unique(&self.operations, id),
                json!({
                    "action": "send",
                    "summary": format!("`{}` publishes here", app.name),
                    "channel": { "$ref": format!("#/channels/{channel}") },
                    "messages": [{ "$ref": format!("#/channels/{channel}/messages/{message}") }],
                }),
            );
        }
    }

    /// The operation bindings of a receiving application on this bus.
    fn receive_bindings(&self, app: &AppContract<'_>) -> Option<Value> {
        match self.bus.transport {
            Transport::Memory => None,
            Transport::Mqtt { qos } => {
                Some(json!({ "mqtt": { "qos": qos, "bindingVersion": "0.2.0" } }))
            }
            Transport::Kafka => {
                let mut kafka = Map::new();
                if let Some(group) = app.group {
                    kafka.insert("groupId".to_owned(), constant(group));
                }
                if let Some(client_id) = app.client_id {
                    kafka.insert("clientId".to_owned(), constant(client_id));
                }
                kafka.insert("bindingVersion".to_owned(), json!("0.5.0"));
                Some(json!({ "kafka": kafka }))
            }
        }
    }

    /// The reply of a request handled by `app`: to the topic the request names.
    fn reply(&mut self, app: &str, message: &str) -> Value {
        let channel = unique(&self.channels, format!("{}-reply", ident(app)));
        self.channels.insert(
            channel.clone(),
            json!({
                "address": null,
                "description": format!("The reply of `{app}`: published to the topic its request names"),
                "messages": { message: { "$ref": format!("#/components/messages/{message}") } },
            }),
        );
        let location = match self.bus.wire {
            WireFormat::Envelope => "$message.payload#/ResponseTopic".to_owned(),
            WireFormat::Raw => format!("$message.header#/{}", headers::RESPONSE_TOPIC),
        };
        json!({
            "address": {
                "description": "The request's response topic",
                "location": location,
            },
            "channel": { "$ref": format!("#/channels/{channel}") },
            "messages": [{ "$ref": format!("#/channels/{channel}/messages/{message}") }],
        })
    }

    /// The id of the channel of `topic`, with `message` among its messages.
    fn channel(&mut self, topic: &str, message: &str) -> String {
        let (address, parameters) = address_of(topic);
        let existing = self
            .channels
            .iter()
            .find(|(_, channel)| channel["address"] == json!(address))
            .map(|(id, _)| id.clone());
        let id = match existing {
            Some(id) => id,
            None => {
                let id = unique(&self.channels, ident(&address));
                let mut channel = json!({ "address": address, "messages": {} });
                if topic != address {
                    channel["description"] = json!(format!("Topic `{topic}`"));
                }
                if !parameters.is_empty() {
                    channel["parameters"] = Value::Object(parameters);
                }
                self.channels.insert(id.clone(), channel);
                id
            }
        };
        if let Some(Value::Object(messages)) = self
            .channels
            .get_mut(&id)
            .and_then(|channel| channel.get_mut("messages"))
        {
            messages.insert(
                message.to_owned(),
                json!({ "$ref": format!("#/components/messages/{message}") }),
            );
        }
        id
    }

    /// The id of the message carrying `payload` (added once).
    fn message(&mut self, payload: Payload, schema: Option<PayloadSchema>) -> String {
        let id = ident(payload.name);
        if self.messages.contains_key(&id) {
            return id;
        }
        let body = self.body_schema(payload, schema);
        let mut message = Map::new();
        message.insert("name".to_owned(), json!(payload.name));
        if let Some(content_type) = content_type(payload.format) {
            message.insert("contentType".to_owned(), json!(content_type));
        }
        let wire_payload = match self.bus.wire {
            WireFormat::Envelope => {
                let description = match payload.format {
                    PayloadFormat::Any => "The message body: any payload".to_owned(),
                    _ => format!("{} as text", payload.name),
                };
                let mut inner = json!({ "type": "string", "description": description });
                if let (Some(media), Some(body)) = (content_type(payload.format), &body) {
                    inner["contentMediaType"] = json!(media);
                    inner["contentSchema"] = body.clone();
                }
                json!({
                    "allOf": [{ "$ref": "#/components/schemas/SpaMessage" }],
                    "properties": { "Payload": inner },
                })
            }
            WireFormat::Raw => {
                message.insert("headers".to_owned(), raw_headers());
                body.unwrap_or_else(|| json!({}))
            }
        };
        message.insert("payload".to_owned(), wire_payload);
        if self.bus.transport == Transport::Kafka {
            message.insert(
                "bindings".to_owned(),
                json!({ "kafka": {
                    "key": { "type": "string", "description": "The ordering key, when the publisher gives one" },
                    "bindingVersion": "0.5.0",
                } }),
            );
        }
        self.messages.insert(id.clone(), Value::Object(message));
        id
    }

    /// A message of spa-dat's own, made once.
    fn message_named(&mut self, id: &str, make: fn(WireFormat) -> Value) -> String {
        if !self.messages.contains_key(id) {
            let message = make(self.bus.wire);
            self.messages.insert(id.to_owned(), message);
        }
        id.to_owned()
    }

    /// The JSON Schema of the payload's body (not its envelope), where known.
    fn body_schema(&mut self, payload: Payload, schema: Option<PayloadSchema>) -> Option<Value> {
        match payload.format {
            PayloadFormat::Text => return Some(json!({ "type": "string" })),
            PayloadFormat::Bytes | PayloadFormat::Any => return None,
            PayloadFormat::Json => {}
        }
        #[cfg(feature = "schemars")]
        if let Some(schema) = schema {
            return Some((schema.make)(&mut self.generator).to_value());
        }
        #[cfg(not(feature = "schemars"))]
        let _ = schema;
        Some(json!({
            "description": format!(
                "JSON of the Rust type `{}` (its schema needs spa-dat's `schemars` feature and `#[derive(JsonSchema)]`)",
                payload.name
            ),
        }))
    }

    fn finish(self, info: &ApiInfo) -> Value {
        let Document {
            bus,
            channels,
            operations,
            messages,
            schemas,
            #[cfg(feature = "schemars")]
            mut generator,
        } = self;
        #[cfg(feature = "schemars")]
        let schemas = {
            let mut schemas = schemas;
            for (name, schema) in generator.take_definitions(true) {
                schemas.entry(name).or_insert(schema);
            }
            schemas
        };
        let mut components = Map::new();
        components.insert("messages".to_owned(), json!(messages));
        if !schemas.is_empty() {
            components.insert("schemas".to_owned(), Value::Object(schemas));
        }
        json!({
            "asyncapi": "3.0.0",
            "info": {
                "title": info.title,
                "version": info.version,
                "description": "Generated by spa-dat from the application's handlers and configuration.",
            },
            "defaultContentType": "application/json",
            "servers": bus.servers,
            "channels": channels,
            "operations": operations,
            "components": components,
        })
    }
}

/// The dead-letter message: the original, as it arrived, with why in headers.
fn dead_letter_message(wire: WireFormat) -> Value {
    let reason = |text: &str| json!({ "type": "string", "description": text });
    let _ = wire;
    json!({
        "name": "DeadLetter",
        "summary": "A message its consumer could not handle, forwarded as it arrived",
        "description": "On transports with headers (Kafka, MQTT 5, the in-process bus) the headers say why; on MQTT 3.1.1 the message is forwarded alone.",
        "headers": {
            "type": "object",
            "properties": {
                (headers::DEAD_LETTER_REASON): reason("Why it was not handled"),
                (headers::DEAD_LETTER_ATTEMPTS): reason("How many times the handler was called"),
                (headers::DEAD_LETTER_TOPIC): reason("The topic it came from"),
                (headers::DEAD_LETTER_PARTITION): reason("Kafka: the partition it came from"),
                (headers::DEAD_LETTER_OFFSET): reason("Kafka: its offset"),
                (headers::DEAD_LETTER_ORIGINAL_SIZE): reason("Its size, when only a summary fits"),
            },
        },
        "payload": {},
    })
}

/// The headers of a bare payload (`WireFormat::Raw`).
fn raw_headers() -> Value {
    let text = |description: &str| json!({ "type": "string", "description": description });
    json!({
        "type": "object",
        "properties": {
            (headers::CONTENT_TYPE): text("The payload's content type"),
            (headers::RESPONSE_TOPIC): text("Where a reply is expected (request/reply)"),
            (headers::CORRELATION_ID): text("Pairs a reply with its request"),
        },
    })
}

fn content_type(format: PayloadFormat) -> Option<&'static str> {
    match format {
        PayloadFormat::Json => Some("application/json"),
        PayloadFormat::Text => Some("text/plain"),
        PayloadFormat::Bytes => Some("application/octet-stream"),
        PayloadFormat::Any => None,
    }
}

/// A schema of one string value.
fn constant(value: &str) -> Value {
    json!({ "type": "string", "enum": [value] })
}

/// `topic` as a channel address: MQTT wildcards and `${NAME}` placeholders become parameters
/// (`plant/+/temp` → `plant/{level2}/temp`, `orders/${SITE}` → `orders/{SITE}`).
fn address_of(topic: &str) -> (String, Map<String, Value>) {
    let mut parameters = Map::new();
    let levels: Vec<String> = topic
        .split('/')
        .enumerate()
        .map(|(index, level)| match level {
            "+" => {
                let name = format!("level{}", index + 1);
                parameters.insert(
                    name.clone(),
                    json!({ "description": format!("MQTT wildcard `+`: any one topic level (level {})", index + 1) }),
                );
                format!("{{{name}}}")
            }
            "#" => {
                parameters.insert(
                    "rest".to_owned(),
                    json!({ "description": "MQTT wildcard `#`: any number of further topic levels" }),
                );
                "{rest}".to_owned()
            }
            level => {
                let found = std::cell::RefCell::new(Vec::new());
                let written = placeholders::expand_with(level, |name| {
                    found.borrow_mut().push(name.to_owned());
                    Some(format!("{{{}}}", ident(name)))
                });
                for name in found.into_inner() {
                    parameters.insert(
                        ident(&name),
                        json!({ "description": format!("The environment variable `{name}` at start-up") }),
                    );
                }
                written.unwrap_or_else(|_| level.to_owned())
            }
        })
        .collect();
    (levels.join("/"), parameters)
}

/// `text` as an id of the document: letters, digits, `_` and `-`.
fn ident(text: &str) -> String {
    let mut id = String::with_capacity(text.len());
    for c in text.chars() {
        match c.is_ascii_alphanumeric() || c == '-' {
            true => id.push(c),
            // Any run of other characters is one `_`.
            false if !id.is_empty() && !id.ends_with('_') => id.push('_'),
            false => {}
        }
    }
    let id = id.trim_end_matches('_');
    match id.is_empty() {
        true => "root".to_owned(),
        false => id.to_owned(),
    }
}

/// `id`, or `id-2`, `id-3`, … when taken.
fn unique(taken: &BTreeMap<String, Value>, id: String) -> String {
    if !taken.contains_key(&id) {
        return id;
    }
    (2..)
        .map(|n| format!("{id}-{n}"))
        .find(|candidate| !taken.contains_key(candidate))
        .unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_placeholders_become_parameters() {
        let (address, parameters) = address_of("plant/${SITE}/+/temp/#");
        assert_eq!(address, "plant/{SITE}/{level3}/temp/{rest}");
        let names: Vec<&String> = parameters.keys().collect();
        assert_eq!(names, ["SITE", "level3", "rest"]);
        assert_eq!(address_of("orders.eu").0, "orders.eu");
    }

    #[test]
    fn ids_are_letters_digits_and_dashes() {
        assert_eq!(ident("plant/{SITE}/temp"), "plant_SITE_temp");
        assert_eq!(ident("_a__b_"), "a_b");
        assert_eq!(ident("///"), "root");
        let mut taken = BTreeMap::new();
        taken.insert("a".to_owned(), Value::Null);
        taken.insert("a-2".to_owned(), Value::Null);
        assert_eq!(unique(&taken, "a".to_owned()), "a-3");
    }

    #[test]
    fn server_addresses_never_carry_credentials() {
        assert_eq!(host_only("user:secret@broker:9092"), "broker:9092");
        assert_eq!(host_only("broker:9092"), "broker:9092");
    }
}
