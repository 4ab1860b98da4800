//! The application's contract as an AsyncAPI 3.0 document, from what spa-dat knows at
//! start-up: each application's topics, group, replies and dead letters, the payload types of
//! its handler ([`crate::handler::Payload`]; JSON Schemas with the `schemars` feature) and the
//! bus each application runs on — from the configuration, or described by the socket provider
//! it was given (never a credential). Written by `SPA_DAT_ASYNCAPI=out.json ./app`
//! ([`crate::DistributedApplication::asyncapi`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::placeholders;
use crate::config::{Config, SocketConfig};
use crate::handler::describe::{HandlerShape, Payload, PayloadFormat, PayloadSchema};
use crate::handler::{HandlerKind, PayloadSchemas};
use crate::socket::headers;
use crate::socket::{SocketProvider, WireFormat};

/// What the document says of one application.
pub(crate) struct AppContract<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: HandlerKind,
    pub(crate) topics: &'a [String],
    pub(crate) group: Option<&'a str>,
    pub(crate) client_id: Option<&'a str>,
    pub(crate) client_name: Option<&'a str>,
    pub(crate) dead_letter_topic: Option<&'a str>,
    pub(crate) sends: &'a [String],
    pub(crate) batch: Option<usize>,
    pub(crate) shape: HandlerShape,
    pub(crate) schemas: PayloadSchemas,
    /// Its own bus, when it was given one.
    pub(crate) provider: Option<&'a Arc<dyn SocketProvider>>,
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

/// The schema of the spa-dat envelope in `components/schemas`: a key no Rust type's schema
/// takes (schemars names them after the type).
const ENVELOPE_SCHEMA: &str = "spa-dat.Envelope";

/// A bus as the document sees it.
#[derive(Clone)]
struct Bus {
    transport: Transport,
    wire: WireFormat,
    /// Its servers: protocol, host and what else is known, never a credential.
    servers: Vec<Value>,
    /// What a consumer that names no topics subscribes to.
    default_topics: Vec<String>,
}

#[derive(Clone, PartialEq, Eq)]
enum Transport {
    Memory,
    Mqtt {
        /// The QoS of subscriptions, where the configuration says.
        qos: Option<u8>,
        /// MQTT 3.1.1 (no headers), where the configuration says.
        v311: bool,
    },
    Kafka {
        /// The bus-wide group (`group=`).
        group: Option<String>,
        /// The bus-wide client id prefix.
        client_id: Option<String>,
        /// Whether the two above are known (from the configuration, not a provider's
        /// description): only then are a derived group and a prefixed client id said.
        known: bool,
    },
    /// A transport spa-dat does not know, named by its scheme.
    Other,
}

/// The AsyncAPI 3.0.0 document of `apps`, run on `provider` if the run was given one, else on
/// the bus `config` describes.
pub(crate) fn document(
    config: &Config,
    provider: Option<&Arc<dyn SocketProvider>>,
    apps: &[AppContract<'_>],
    info: &ApiInfo,
) -> Value {
    let run_bus = match provider {
        Some(provider) => bus_of_provider(provider.as_ref()),
        None => bus_of_config(&config.bus),
    };
    let mut doc = Document::new();
    for app in apps {
        let bus = match app.provider {
            Some(provider) => bus_of_provider(provider.as_ref()),
            None => run_bus.clone(),
        };
        doc.add(app, &bus, config.dead_letter_topic.as_deref());
    }
    if apps.is_empty() {
        doc.add_servers(&run_bus);
    }
    doc.finish(info)
}

fn bus_of_config(config: &SocketConfig) -> Bus {
    match config {
        SocketConfig::Memory(memory) => Bus {
            transport: Transport::Memory,
            wire: WireFormat::Envelope,
            servers: vec![memory_server(&memory.bus)],
            default_topics: memory.default_subscription_topics.clone(),
        },
        #[cfg(feature = "mqtt")]
        SocketConfig::Mqtt(mqtt) => {
            let v311 = mqtt.version == crate::socket::mqtt::MqttVersion::V311;
            Bus {
                transport: Transport::Mqtt {
                    qos: Some(mqtt.qos),
                    v311,
                },
                wire: mqtt.wire,
                servers: vec![json!({
                    "host": format!("{}:{}", host_only(&mqtt.host), mqtt.port),
                    "protocol": if mqtt.tls.is_some() { "secure-mqtt" } else { "mqtt" },
                    "protocolVersion": if v311 { "3.1.1" } else { "5" },
                })],
                default_topics: mqtt.default_subscription_topics.clone(),
            }
        }
        #[cfg(feature = "kafka")]
        SocketConfig::Kafka(kafka) => {
            let secure = kafka
                .properties
                .get("security.protocol")
                .is_some_and(|protocol| protocol.to_ascii_uppercase().contains("SSL"));
            Bus {
                transport: Transport::Kafka {
                    group: kafka.group_id.clone(),
                    client_id: kafka.client_id.clone(),
                    known: true,
                },
                wire: kafka.wire,
                servers: kafka_servers(&kafka.bootstrap_servers, secure),
                default_topics: kafka.default_subscription_topics.clone(),
            }
        }
    }
}

/// A bus known only by its provider: what its description (`kafka://b1:9092,b2:9092`,
/// `faulty(memory://name)`) and its wire format say.
fn bus_of_provider(provider: &dyn SocketProvider) -> Bus {
    let described = provider.describe();
    let (scheme, rest) = match described.split_once("://") {
        Some((before, after)) => {
            // `faulty(memory` → `memory`: the letters and digits just before `://`.
            let scheme = before
                .rsplit(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or(before)
                .to_owned();
            // The authority: never what comes before an `@` (a user, a password).
            let authority = after.split(['/', '?']).next().unwrap_or(after);
            let host = authority.rsplit('@').next().unwrap_or(authority);
            (scheme, host.trim_end_matches(')').to_owned())
        }
        // A description that is no URL may hold anything: it is not written out.
        None => ("unknown".to_owned(), "unknown".to_owned()),
    };
    let (transport, servers) = match scheme.as_str() {
        "memory" => (Transport::Memory, vec![memory_server(&rest)]),
        "mqtt" | "mqtts" => (
            Transport::Mqtt {
                qos: None,
                // The description names MQTT 5 (`?version=5`); without it, 3.1.1.
                v311: !described.contains("version=5"),
            },
            vec![json!({
                "host": host_only(&rest),
                "protocol": if scheme == "mqtts" { "secure-mqtt" } else { "mqtt" },
            })],
        ),
        "kafka" => (
            Transport::Kafka {
                group: None,
                client_id: None,
                known: false,
            },
            kafka_servers(&rest, false),
        ),
        other => (
            Transport::Other,
            vec![json!({ "host": host_only(&rest), "protocol": other })],
        ),
    };
    Bus {
        transport,
        wire: provider.wire_format(),
        servers,
        default_topics: provider.default_topics().to_vec(),
    }
}

fn memory_server(bus: &str) -> Value {
    json!({
        "host": bus,
        "protocol": "spa-dat-memory",
        "description": "spa-dat's in-process bus: the applications of one process, no broker",
    })
}

fn kafka_servers(bootstrap: &str, secure: bool) -> Vec<Value> {
    bootstrap
        .split(',')
        .map(str::trim)
        .filter(|broker| !broker.is_empty())
        .map(|broker| {
            json!({
                "host": host_only(broker),
                "protocol": if secure { "kafka-secure" } else { "kafka" },
            })
        })
        .collect()
}

/// `host[:port]` without anything that could be a credential (`user:secret@host`).
fn host_only(address: &str) -> String {
    let address = address.rsplit('@').next().unwrap_or(address);
    address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .to_owned()
}

/// What a message is, for telling messages apart: the payload's type, whether it is bare (not
/// in the envelope) and whether it carries a Kafka key.
type MessageKey = (&'static str, Option<&'static str>, bool, bool);

/// A document being built: servers, channels, operations and messages by their ids.
struct Document {
    servers: Map<String, Value>,
    channels: BTreeMap<String, Value>,
    operations: BTreeMap<String, Value>,
    messages: BTreeMap<String, Value>,
    message_ids: HashMap<MessageKey, String>,
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
    fn new() -> Self {
        Document {
            servers: Map::new(),
            channels: BTreeMap::new(),
            operations: BTreeMap::new(),
            messages: BTreeMap::new(),
            message_ids: HashMap::new(),
            schemas: Map::new(),
            #[cfg(feature = "schemars")]
            generator: schemars::generate::SchemaSettings::draft07()
                .with(|settings| settings.definitions_path = "/components/schemas".into())
                .into_generator(),
        }
    }

    /// Adds `bus`'s servers, each once.
    fn add_servers(&mut self, bus: &Bus) {
        for server in &bus.servers {
            if self.servers.values().any(|known| known == server) {
                continue;
            }
            let base = match server["protocol"].as_str() {
                Some("spa-dat-memory") => "in-process".to_owned(),
                Some(protocol) => ident(
                    protocol
                        .trim_start_matches("secure-")
                        .trim_end_matches("-secure"),
                ),
                None => "server".to_owned(),
            };
            let id = unique_in(&self.servers, base);
            self.servers.insert(id, server.clone());
        }
    }

    fn add(&mut self, app: &AppContract<'_>, bus: &Bus, default_dead_letter: Option<&str>) {
        self.add_servers(bus);
        if app.kind == HandlerKind::Consumer {
            let takes = app.shape.takes.unwrap_or_else(Payload::any);
            let message = self.message(takes, app.schemas.takes, bus);
            // Bare payloads on MQTT 3.1.1 carry no response topic: no request gets a reply.
            let replies = app
                .shape
                .replies
                .filter(|_| bus.wire == WireFormat::Envelope || carries_headers(bus));
            let reply = replies.map(|payload| {
                let message = self.message(payload, app.schemas.replies, bus);
                self.reply(app.name, &message, bus)
            });
            let topics = match app.topics.is_empty() {
                true => &bus.default_topics[..],
                false => app.topics,
            };
            let many = topics.len() > 1;
            for topic in topics {
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
                if let Some(bindings) = receive_bindings(app, bus) {
                    operation["bindings"] = bindings;
                }
                if let Some(reply) = &reply {
                    operation["reply"] = reply.clone();
                }
                self.operations
                    .insert(unique(&self.operations, id), operation);
            }
            if let Some(topic) = app.dead_letter_topic.or(default_dead_letter) {
                let dead = self.dead_letter_message(bus);
                self.send(
                    format!("{}-dead-letters", ident(app.name)),
                    topic,
                    &dead,
                    format!("`{}` forwards here what it cannot handle", app.name),
                );
            }
        }
        for topic in app.sends {
            let message = self.message(Payload::any(), None, bus);
            let channel = self.channel(topic, &message);
            self.send(
                format!("{}-sends-{channel}", ident(app.name)),
                topic,
                &message,
                format!("`{}` publishes here", app.name),
            );
        }
    }

    /// A send operation of `message` to `topic`.
    fn send(&mut self, id: String, topic: &str, message: &str, summary: String) {
        let channel = self.channel(topic, message);
        self.operations.insert(
            unique(&self.operations, id),
            json!({
                "action": "send",
                "summary": summary,
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": [{ "$ref": format!("#/channels/{channel}/messages/{message}") }],
            }),
        );
    }

    /// The reply of a request handled by `app`: to the topic the request names.
    fn reply(&mut self, app: &str, message: &str, bus: &Bus) -> Value {
        let channel = unique(&self.channels, format!("{}-reply", ident(app)));
        self.channels.insert(
            channel.clone(),
            json!({
                "address": null,
                "description": format!("The reply of `{app}`: published to the topic its request names"),
                "messages": { message: { "$ref": format!("#/components/messages/{message}") } },
            }),
        );
        let location = match bus.wire {
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

    /// The id of the message carrying `payload` on `bus` (made once).
    fn message(&mut self, payload: Payload, schema: Option<PayloadSchema>, bus: &Bus) -> String {
        let kafka = matches!(bus.transport, Transport::Kafka { .. });
        let key = (
            payload.type_name,
            payload.given_name,
            bus.wire == WireFormat::Raw,
            kafka,
        );
        if let Some(id) = self.message_ids.get(&key) {
            return id.clone();
        }
        let name = payload.name();
        let body = self.body_schema(payload, &name, schema);
        let mut message = Map::new();
        message.insert("name".to_owned(), json!(name));
        if let Some(content_type) = content_type(payload.format) {
            message.insert("contentType".to_owned(), json!(content_type));
        }
        let wire_payload = match bus.wire {
            WireFormat::Envelope => {
                let description = match payload.format {
                    PayloadFormat::Any => "The message body: any payload".to_owned(),
                    _ => format!("{name} as text"),
                };
                let mut inner = json!({ "type": "string", "description": description });
                if let (Some(media), Some(body)) = (content_type(payload.format), &body) {
                    inner["contentMediaType"] = json!(media);
                    inner["contentSchema"] = body.clone();
                }
                json!({
                    "allOf": [{ "$ref": self.envelope() }],
                    "properties": { "Payload": inner },
                })
            }
            WireFormat::Raw => {
                if carries_headers(bus) {
                    message.insert("headers".to_owned(), raw_headers());
                }
                body.unwrap_or_else(|| json!({}))
            }
        };
        message.insert("payload".to_owned(), wire_payload);
        if kafka {
            message.insert("bindings".to_owned(), kafka_message_binding());
        }
        self.keep_message(key, &name, Value::Object(message))
    }

    /// The dead-letter message on `bus` (made once): the original, as it arrived, with why in
    /// headers.
    fn dead_letter_message(&mut self, bus: &Bus) -> String {
        let kafka = matches!(bus.transport, Transport::Kafka { .. });
        let key = (
            "spa-dat::DeadLetter",
            None,
            bus.wire == WireFormat::Raw,
            kafka,
        );
        if let Some(id) = self.message_ids.get(&key) {
            return id.clone();
        }
        let reason = |text: &str| json!({ "type": "string", "description": text });
        let mut message = json!({
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
        });
        if kafka {
            message["bindings"] = kafka_message_binding();
        }
        self.keep_message(key, "DeadLetter", message)
    }

    /// Keeps `message` under an id of its own, named after `name`.
    fn keep_message(&mut self, key: MessageKey, name: &str, message: Value) -> String {
        let id = unique(&self.messages, ident(name));
        self.messages.insert(id.clone(), message);
        self.message_ids.insert(key, id.clone());
        id
    }

    /// The reference to the envelope's schema, added the first time.
    fn envelope(&mut self) -> String {
        self.schemas
            .entry(ENVELOPE_SCHEMA)
            .or_insert_with(envelope_schema);
        format!("#/components/schemas/{ENVELOPE_SCHEMA}")
    }

    /// The JSON Schema of the payload's body (not its envelope), where known.
    fn body_schema(
        &mut self,
        payload: Payload,
        name: &str,
        schema: Option<PayloadSchema>,
    ) -> Option<Value> {
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
                "JSON of the Rust type `{name}` (its schema needs spa-dat's `schemars` feature and `#[derive(JsonSchema)]`)"
            ),
        }))
    }

    fn finish(self, info: &ApiInfo) -> Value {
        let Document {
            servers,
            channels,
            operations,
            messages,
            schemas,
            #[cfg(feature = "schemars")]
            mut generator,
            ..
        } = self;
        let mut components = Map::new();
        components.insert("messages".to_owned(), json!(messages));
        #[cfg(feature = "schemars")]
        let schemas = {
            let mut schemas = schemas;
            for (name, schema) in generator.take_definitions(true) {
                let key = unique_in(&schemas, name.clone());
                if key != name {
                    rename_schema(&mut components, &mut schemas, &name, &key);
                }
                schemas.insert(key, schema);
            }
            schemas
        };
        let schemas = valid_schema_keys(schemas, &mut components);
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
            "servers": servers,
            "channels": channels,
            "operations": operations,
            "components": components,
        })
    }
}

/// Whether messages on `bus` carry headers beside their payload (not MQTT 3.1.1).
fn carries_headers(bus: &Bus) -> bool {
    !matches!(bus.transport, Transport::Mqtt { v311: true, .. })
}

/// The Kafka binding of a message: its record key.
fn kafka_message_binding() -> Value {
    json!({ "kafka": {
        "key": { "type": "string", "description": "The ordering key, when the publisher gives one" },
        "bindingVersion": "0.5.0",
    } })
}

/// The operation bindings of a receiving application on `bus`.
fn receive_bindings(app: &AppContract<'_>, bus: &Bus) -> Option<Value> {
    match &bus.transport {
        Transport::Memory | Transport::Other => None,
        Transport::Mqtt { qos, .. } => {
            qos.map(|qos| json!({ "mqtt": { "qos": qos, "bindingVersion": "0.2.0" } }))
        }
        Transport::Kafka {
            group,
            client_id,
            known,
        } => {
            let mut kafka = Map::new();
            let stable = app.client_id.unwrap_or(app.name);
            let group = match known {
                true => app
                    .group
                    .map(str::to_owned)
                    .or_else(|| group.clone())
                    .or_else(|| default_group(app.client_name.unwrap_or(app.name))),
                // The provider may set a group of its own: only the application's is sure.
                false => app.group.map(str::to_owned),
            };
            if let Some(group) = group {
                kafka.insert("groupId".to_owned(), named_value(&group));
            }
            let client_id = match (client_id, app.client_id, known) {
                (Some(prefix), _, _) => Some(format!("{prefix}-{stable}")),
                (None, Some(id), true) => Some(id.to_owned()),
                // A random suffix per run, or a prefix the provider may add: nothing to say.
                _ => None,
            };
            if let Some(client_id) = client_id {
                kafka.insert("clientId".to_owned(), named_value(&client_id));
            }
            kafka.insert("bindingVersion".to_owned(), json!("0.5.0"));
            Some(json!({ "kafka": kafka }))
        }
    }
}

#[cfg(feature = "kafka")]
fn default_group(client_name: &str) -> Option<String> {
    Some(crate::socket::kafka::default_group_id(client_name))
}

#[cfg(not(feature = "kafka"))]
fn default_group(_client_name: &str) -> Option<String> {
    None
}

/// A schema of one string value; a value with `${NAME}` placeholders is known only at start-up.
fn named_value(value: &str) -> Value {
    match value.contains("${") {
        true => json!({
            "type": "string",
            "description": format!("`{value}`, its placeholders from the environment at start-up"),
        }),
        false => json!({ "type": "string", "enum": [value] }),
    }
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

/// Whether `key` may name a component (AsyncAPI: `^[a-zA-Z0-9.\-_]+$`).
fn is_component_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// `schemas` with every key a component may have (a serde rename can give a type's schema any
/// name), the references to a renamed one rewritten in `components` and `schemas`.
fn valid_schema_keys(
    schemas: Map<String, Value>,
    components: &mut Map<String, Value>,
) -> Map<String, Value> {
    let renames: Vec<(String, String)> = {
        let mut taken: Map<String, Value> = schemas
            .iter()
            .filter(|(key, _)| is_component_key(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        schemas
            .keys()
            .filter(|key| !is_component_key(key))
            .map(|key| {
                let new = unique_in(&taken, ident(key));
                taken.insert(new.clone(), Value::Null);
                (key.clone(), new)
            })
            .collect()
    };
    let mut schemas = schemas;
    for (old, new) in &renames {
        rename_schema(components, &mut schemas, old, new);
    }
    schemas
}

/// Moves schema `old` to `new` and rewrites every reference to it.
fn rename_schema(
    components: &mut Map<String, Value>,
    schemas: &mut Map<String, Value>,
    old: &str,
    new: &str,
) {
    if let Some(schema) = schemas.remove(old) {
        schemas.insert(new.to_owned(), schema);
    }
    let to = format!("#/components/schemas/{new}");
    for value in components.values_mut().chain(schemas.values_mut()) {
        rewrite_refs(value, old, &to);
    }
}

/// The schema a `#/components/schemas/...` reference names, however it is encoded (a URI
/// fragment's percent-encoding, a JSON pointer's `~1` and `~0`).
fn referenced_schema(reference: &str) -> Option<String> {
    let encoded = reference.strip_prefix("#/components/schemas/")?;
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()?;
    Some(decoded.replace("~1", "/").replace("~0", "~"))
}

fn rewrite_refs(value: &mut Value, old: &str, to: &str) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match (key.as_str(), &*inner) {
                    ("$ref", Value::String(target))
                        if referenced_schema(target).as_deref() == Some(old) =>
                    {
                        *inner = Value::String(to.to_owned());
                    }
                    _ => rewrite_refs(inner, old, to),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_refs(item, old, to)),
        _ => {}
    }
}

/// `topic` as a channel address: MQTT wildcards and `${NAME}` placeholders become parameters
/// (`plant/+/temp` → `plant/{level2}/temp`, `orders/${SITE}` → `orders/{SITE}`); braces of the
/// topic itself are percent-encoded (`%7B`, `%7D`), as they would read as parameters.
fn address_of(topic: &str) -> (String, Map<String, Value>) {
    // Placeholders first: a wildcard's generated name never takes one of theirs.
    let placeholders: Vec<String> = {
        let found = std::cell::RefCell::new(Vec::new());
        let _ = placeholders::expand_with(topic, |name| {
            found.borrow_mut().push(ident(name));
            Some(String::new())
        });
        found.into_inner()
    };
    let wildcard = |base: String| match placeholders.contains(&base) {
        true => format!("{base}_wildcard"),
        false => base,
    };
    let names = std::cell::RefCell::new(ParameterNames::default());
    let mut parameters = Map::new();
    let levels: Vec<String> = topic
        .split('/')
        .enumerate()
        .map(|(index, level)| match level {
            "+" => {
                let name = wildcard(format!("level{}", index + 1));
                parameters.insert(
                    name.clone(),
                    json!({ "description": format!("MQTT wildcard `+`: any one topic level (level {})", index + 1) }),
                );
                format!("{{{name}}}")
            }
            "#" => {
                let name = wildcard("rest".to_owned());
                parameters.insert(
                    name.clone(),
                    json!({ "description": "MQTT wildcard `#`: any number of further topic levels" }),
                );
                format!("{{{name}}}")
            }
            level => {
                // Placeholders become markers no topic holds, the topic's own braces are
                // encoded, then the markers become parameters.
                let found = std::cell::RefCell::new(Vec::new());
                let marked = placeholders::expand_with(level, |name| {
                    let parameter = names.borrow_mut().of(name);
                    found.borrow_mut().push((name.to_owned(), parameter.clone()));
                    Some(format!("\u{0}{parameter}\u{1}"))
                });
                // A level that does not read as placeholders (`${A` alone) is a literal.
                if marked.is_ok() {
                    for (name, parameter) in found.into_inner() {
                        parameters.insert(
                            parameter,
                            json!({ "description": format!("The environment variable `{name}` at start-up") }),
                        );
                    }
                }
                marked
                    .unwrap_or_else(|_| level.to_owned())
                    .replace('{', "%7B")
                    .replace('}', "%7D")
                    .replace('\u{0}', "{")
                    .replace('\u{1}', "}")
            }
        })
        .collect();
    (levels.join("/"), parameters)
}

/// Parameter names of environment variables: valid, and distinct for distinct variables
/// (`${A.B}` and `${A_B}` are `A_B` and `A_B-2`).
#[derive(Default)]
struct ParameterNames {
    given: Vec<(String, String)>,
}

impl ParameterNames {
    fn of(&mut self, variable: &str) -> String {
        if let Some((_, name)) = self.given.iter().find(|(v, _)| v == variable) {
            return name.clone();
        }
        let name = first_free(ident(variable), |candidate| {
            self.given.iter().any(|(_, taken)| taken == candidate)
        });
        self.given.push((variable.to_owned(), name.clone()));
        name
    }
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
        true => "unnamed".to_owned(),
        false => id.to_owned(),
    }
}

/// `id`, or `id-2`, `id-3`, … the first one not `taken`.
fn first_free(id: String, taken: impl Fn(&str) -> bool) -> String {
    if !taken(&id) {
        return id;
    }
    (2..)
        .map(|n| format!("{id}-{n}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or(id)
}

/// [`first_free`] among the keys of a map.
fn unique(taken: &BTreeMap<String, Value>, id: String) -> String {
    first_free(id, |candidate| taken.contains_key(candidate))
}

/// [`first_free`] among the keys of a JSON object.
fn unique_in(taken: &Map<String, Value>, id: String) -> String {
    first_free(id, |candidate| taken.contains_key(candidate))
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
    fn a_topics_own_braces_are_encoded_and_names_never_merge() {
        assert_eq!(address_of("devices/{id}/state").0, "devices/%7Bid%7D/state");
        assert_eq!(address_of("a/${B/c}").0, "a/$%7BB/c%7D");
        let (address, parameters) = address_of("a/+/${level2}");
        assert_eq!(address, "a/{level2_wildcard}/{level2}");
        assert_eq!(parameters.len(), 2);
    }

    #[test]
    fn ids_are_letters_digits_and_dashes() {
        assert_eq!(ident("plant/{SITE}/temp"), "plant_SITE_temp");
        assert_eq!(ident("_a__b_"), "a_b");
        assert_eq!(ident("()"), "unnamed");
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
