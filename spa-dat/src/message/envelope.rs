//! The envelope: [`SpaMessage`], its delivery guarantee and the builder that stamps the
//! sender's fields. Its types are at the crate root.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

use super::qos::QualityOfService;
use super::{decode, TraceContext, CONTENT_TYPE_JSON};

/// One message on the bus, field for field the Python package's `SpaMessage`.
///
/// Build one with [`SpaMessage::new`] and the `with_*` methods, or with an application's
/// [`MessageBuilder`], which fills in the sender's `client_id` and `client_name`.
///
/// # Examples
///
/// ```
/// use spa_dat::SpaMessage;
///
/// let message = SpaMessage::new("greetings", "hello")
///     .with_client_name("greeter")
///     .with_response_topic("greetings/replies");
/// assert_eq!(message.payload_str()?, "hello");
///
/// // The wire format (the Python package's): JSON with PascalCase keys, both ways.
/// let wire = message.to_json()?;
/// let decoded = SpaMessage::from_json(&wire)?;
/// assert_eq!(decoded.response_topic.as_deref(), Some("greetings/replies"));
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SpaMessage {
    /// The message body. On the wire it is a UTF-8 string; see [`SpaMessage::to_json`].
    pub payload: Bytes,
    /// Topic the message is published to.
    pub topic: String,
    /// e.g. `application/json`.
    pub content_type: Option<String>,
    /// Sender's client id.
    pub client_id: Option<String>,
    /// Sender's human-readable name.
    pub client_name: Option<String>,
    /// Delivery guarantee requested by the sender.
    pub quality_of_service: QualityOfService,
    /// Where the sender expects a reply (request/reply).
    pub response_topic: Option<String>,
    /// Seconds since the Unix epoch at which the message was built.
    pub timestamp: i64,
    /// The trace it belongs to (W3C trace context), set by spa-dat when it publishes inside an
    /// OpenTelemetry span; on the wire as the extra keys `traceparent` and `tracestate`, which
    /// Python spa-dat ignores. See [`crate::telemetry`].
    pub trace_context: Option<TraceContext>,
    /// How long the broker may keep the message for subscribers that have not received it
    /// (MQTT 5's message expiry interval; whole seconds, at least one). Not in the envelope:
    /// it travels beside it, where the transport can carry it (see
    /// [`crate::socket::headers::MESSAGE_EXPIRY_SECS`]); ignored by MQTT 3.1.1.
    pub expiry: Option<std::time::Duration>,
}

impl fmt::Debug for SpaMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let payload: Cow<'_, str> = String::from_utf8_lossy(&self.payload);
        f.debug_struct("SpaMessage")
            .field("topic", &self.topic)
            .field("payload", &payload)
            .field("content_type", &self.content_type)
            .field("client_id", &self.client_id)
            .field("client_name", &self.client_name)
            .field("quality_of_service", &self.quality_of_service)
            .field("response_topic", &self.response_topic)
            .field("timestamp", &self.timestamp)
            .field("trace_context", &self.trace_context)
            .field("expiry", &self.expiry)
            .finish()
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SpaMessage {
    /// A message for `topic`, stamped with the current time, QoS 2 as in the Python package.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{QualityOfService, SpaMessage};
    ///
    /// let message = SpaMessage::new("jobs", "resize photo 42");
    /// assert_eq!(message.topic, "jobs");
    /// assert_eq!(&message.payload[..], b"resize photo 42");
    /// assert_eq!(message.quality_of_service, QualityOfService::ExactlyOnce);
    /// assert!(message.timestamp > 0);
    /// ```
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        SpaMessage {
            payload: payload.into(),
            topic: topic.into(),
            content_type: None,
            client_id: None,
            client_name: None,
            quality_of_service: QualityOfService::default(),
            response_topic: None,
            timestamp: unix_now(),
            trace_context: None,
            expiry: None,
        }
    }

    /// A message whose payload is `value` as JSON, with content type `application/json`.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::SpaMessage;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Reading { sensor: &'static str, celsius: f64 }
    ///
    /// let message = SpaMessage::json("readings", &Reading { sensor: "s1", celsius: 21.5 })?;
    /// assert_eq!(message.payload_str()?, r#"{"sensor":"s1","celsius":21.5}"#);
    /// assert_eq!(message.content_type.as_deref(), Some("application/json"));
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(topic: impl Into<String>, value: &T) -> Result<Self> {
        let topic = topic.into();
        let payload = serde_json::to_vec(value).map_err(|e| {
            Error::Encode {
                topic: topic.clone(),
                reason: e.to_string(),
                source: None,
            }
            .caused_by(e)
        })?;
        Ok(SpaMessage::new(topic, payload).with_content_type(CONTENT_TYPE_JSON))
    }

    /// Sets the content type.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::SpaMessage;
    ///
    /// let message = SpaMessage::new("pages", "<h1>hi</h1>").with_content_type("text/html");
    /// assert_eq!(message.content_type.as_deref(), Some("text/html"));
    /// ```
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets how long the broker may keep the message for subscribers that have not received
    /// it (see [`SpaMessage::expiry`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use spa_dat::SpaMessage;
    ///
    /// let reading = SpaMessage::new("readings", "21.5").with_expiry(Duration::from_secs(60));
    /// assert_eq!(reading.expiry, Some(Duration::from_secs(60)));
    /// ```
    pub fn with_expiry(mut self, expiry: std::time::Duration) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// Sets the sender's client id.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::SpaMessage;
    ///
    /// let message = SpaMessage::new("jobs", "go").with_client_id("worker-7");
    /// assert_eq!(message.client_id.as_deref(), Some("worker-7"));
    /// ```
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Sets the sender's name.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::SpaMessage;
    ///
    /// let message = SpaMessage::new("jobs", "go").with_client_name("scheduler");
    /// assert_eq!(message.client_name.as_deref(), Some("scheduler"));
    /// ```
    pub fn with_client_name(mut self, client_name: impl Into<String>) -> Self {
        self.client_name = Some(client_name.into());
        self
    }

    /// Sets the quality of service.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{QualityOfService, SpaMessage};
    ///
    /// let message = SpaMessage::new("metrics", "cpu=0.4").with_qos(QualityOfService::AtLeastOnce);
    /// assert_eq!(message.quality_of_service, QualityOfService::AtLeastOnce);
    /// ```
    pub fn with_qos(mut self, qos: QualityOfService) -> Self {
        self.quality_of_service = qos;
        self
    }

    /// Sets the topic a reply is expected on.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::SpaMessage;
    ///
    /// // `Socket::request` sets it for you; set it yourself to ask for a reply elsewhere.
    /// let message = SpaMessage::new("quotes", "EUR").with_response_topic("quotes/answers");
    /// assert_eq!(message.response_topic.as_deref(), Some("quotes/answers"));
    /// ```
    pub fn with_response_topic(mut self, response_topic: impl Into<String>) -> Self {
        self.response_topic = Some(response_topic.into());
        self
    }

    /// Sets the timestamp (seconds since the Unix epoch).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::SpaMessage;
    ///
    /// let message = SpaMessage::new("replay", "old event").with_timestamp(1_700_000_000);
    /// assert_eq!(message.timestamp, 1_700_000_000);
    /// ```
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The payload as text, if it is valid UTF-8.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::SpaMessage;
    ///
    /// assert_eq!(SpaMessage::new("t", "héllo").payload_str()?, "héllo");
    /// assert!(SpaMessage::new("t", vec![0xff, 0xfe]).payload_str().is_err());
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn payload_str(&self) -> Result<&str> {
        std::str::from_utf8(&self.payload).map_err(|e| {
            Error::Payload {
                topic: self.topic.clone(),
                type_name: "str",
                reason: e.to_string(),
                source: None,
            }
            .caused_by(e)
        })
    }

    /// Decodes the payload as JSON into `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::SpaMessage;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Reading { celsius: f64 }
    ///
    /// let message = SpaMessage::new("readings", r#"{"celsius": 21.5}"#);
    /// assert_eq!(message.payload_json::<Reading>()?.celsius, 21.5);
    /// assert!(message.payload_json::<Vec<u8>>().is_err());
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            Error::Payload {
                topic: self.topic.clone(),
                type_name: std::any::type_name::<T>(),
                reason: e.to_string(),
                source: None,
            }
            .caused_by(e)
        })
    }

    /// Encodes the message as the Python package does: compact JSON, PascalCase keys.
    ///
    /// Fails with [`Error::Encode`] if the payload is not valid UTF-8: the wire format carries
    /// the payload as a JSON string, and a lossy conversion would corrupt it silently.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{Error, SpaMessage};
    ///
    /// let wire = SpaMessage::new("jobs", "go").with_client_id("c1").to_json()?;
    /// let text = std::str::from_utf8(&wire).unwrap();
    /// assert!(text.starts_with(r#"{"Payload":"go","Topic":"jobs""#));
    ///
    /// // Binary payloads cannot travel in this format.
    /// let binary = SpaMessage::new("blobs", vec![0xff]);
    /// assert!(matches!(binary.to_json(), Err(Error::Encode { .. })));
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn to_json(&self) -> Result<Vec<u8>> {
        self.to_wire(self.trace_context.as_ref())
    }

    /// [`SpaMessage::to_json`] with `trace` as the message's trace context.
    pub(crate) fn to_wire(&self, trace: Option<&TraceContext>) -> Result<Vec<u8>> {
        let payload = std::str::from_utf8(&self.payload).map_err(|e| {
            Error::Encode {
                topic: self.topic.clone(),
                reason: format!("payload is not valid UTF-8 ({e}); the wire format carries text"),
                source: None,
            }
            .caused_by(e)
        })?;
        let wire = WireRef {
            payload,
            topic: &self.topic,
            content_type: self.content_type.as_deref(),
            client_id: self.client_id.as_deref(),
            client_name: self.client_name.as_deref(),
            quality_of_service: self.quality_of_service,
            response_topic: self.response_topic.as_deref(),
            timestamp: self.timestamp,
            traceparent: trace.map(|t| t.traceparent.as_str()),
            tracestate: trace.and_then(|t| t.tracestate.as_deref()),
        };
        let mut out = Vec::with_capacity(128 + self.payload.len() + self.topic.len());
        serde_json::to_writer(&mut out, &wire).map_err(|e| {
            Error::Encode {
                topic: self.topic.clone(),
                reason: e.to_string(),
                source: None,
            }
            .caused_by(e)
        })?;
        Ok(out)
    }

    /// Decodes a message from its wire form, accepting exactly what Python spa-dat 0.4.0
    /// accepts (see the `decode` module); the error names the field at fault.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::SpaMessage;
    ///
    /// // As a Python spa-dat service publishes it.
    /// let wire = br#"{"Payload":"21.5","Topic":"readings","ClientName":"sensor","QualityOfService":1}"#;
    /// let message = SpaMessage::from_json(wire)?;
    /// assert_eq!(message.payload_str()?, "21.5");
    /// assert_eq!(message.client_name.as_deref(), Some("sensor"));
    ///
    /// assert!(SpaMessage::from_json(br#"{"Topic":"readings"}"#).is_err()); // no Payload
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let wire = decode::envelope(bytes).map_err(Error::decode)?;
        Ok(SpaMessage {
            payload: Bytes::from(wire.payload.into_owned()),
            topic: wire.topic.into_owned(),
            content_type: wire.content_type.map(Cow::into_owned),
            client_id: wire.client_id.map(Cow::into_owned),
            client_name: wire.client_name.map(Cow::into_owned),
            quality_of_service: wire.quality_of_service.unwrap_or_default(),
            response_topic: wire.response_topic.map(Cow::into_owned),
            timestamp: wire.timestamp.unwrap_or_else(unix_now),
            trace_context: wire.traceparent.map(|traceparent| TraceContext {
                traceparent: traceparent.into_owned(),
                tracestate: wire.tracestate.map(Cow::into_owned),
            }),
            expiry: None,
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireRef<'a> {
    payload: &'a str,
    topic: &'a str,
    content_type: Option<&'a str>,
    client_id: Option<&'a str>,
    client_name: Option<&'a str>,
    quality_of_service: QualityOfService,
    response_topic: Option<&'a str>,
    timestamp: i64,
    // Only when the message carries trace context: otherwise the bytes are Python's exactly.
    #[serde(rename = "traceparent", skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    #[serde(rename = "tracestate", skip_serializing_if = "Option::is_none")]
    tracestate: Option<&'a str>,
}

/// Builds messages on behalf of one application: fills in its `client_id` and `client_name`
/// (the Python package's `message_builder`). Cheap to clone; injectable into handlers.
///
/// # Examples
///
/// ```
/// use spa_dat::{MessageBuilder, SpaMessage};
///
/// let builder = MessageBuilder::new(Some("billing-1"), Some("billing"));
/// let message = builder.build("invoices", "INV-42");
/// assert_eq!(message.client_id.as_deref(), Some("billing-1"));
/// assert_eq!(message.client_name.as_deref(), Some("billing"));
///
/// // In a handler, take the application's builder as an argument:
/// async fn bill(builder: MessageBuilder) -> spa_dat::Result<SpaMessage> {
///     builder.json("invoices", &42)
/// }
/// # let _ = spa_dat::Application::producer("bill", bill);
/// ```
#[derive(Clone, Debug, Default)]
pub struct MessageBuilder {
    client_id: Option<Arc<str>>,
    client_name: Option<Arc<str>>,
}

impl MessageBuilder {
    /// A builder stamping messages with these sender fields.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::MessageBuilder;
    ///
    /// let builder = MessageBuilder::new(Some("svc-1"), None);
    /// assert_eq!(builder.client_id(), Some("svc-1"));
    /// assert_eq!(builder.client_name(), None);
    /// ```
    pub fn new(client_id: Option<&str>, client_name: Option<&str>) -> Self {
        MessageBuilder {
            client_id: client_id.map(Arc::from),
            client_name: client_name.map(Arc::from),
        }
    }

    /// The client id this builder stamps.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The client name this builder stamps.
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }

    /// A message for `topic` carrying `payload`, stamped with this application's sender fields.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::MessageBuilder;
    ///
    /// let message = MessageBuilder::new(Some("svc-1"), Some("svc")).build("jobs", "go");
    /// assert_eq!(message.client_id.as_deref(), Some("svc-1"));
    /// ```
    pub fn build(&self, topic: impl Into<String>, payload: impl Into<Bytes>) -> SpaMessage {
        self.stamp(SpaMessage::new(topic, payload))
    }

    /// A JSON message for `topic`, stamped with this application's sender fields.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::MessageBuilder;
    ///
    /// let builder = MessageBuilder::new(Some("svc-1"), Some("svc"));
    /// let message = builder.json("totals", &[1, 2, 3])?;
    /// assert_eq!(message.payload_str()?, "[1,2,3]");
    /// assert_eq!(message.client_name.as_deref(), Some("svc"));
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(
        &self,
        topic: impl Into<String>,
        value: &T,
    ) -> Result<SpaMessage> {
        Ok(self.stamp(SpaMessage::json(topic, value)?))
    }

    /// Fills in the sender fields that `message` leaves empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{MessageBuilder, SpaMessage};
    ///
    /// let builder = MessageBuilder::new(Some("svc-1"), Some("svc"));
    /// let message = builder.stamp(SpaMessage::new("jobs", "go").with_client_name("custom"));
    /// assert_eq!(message.client_id.as_deref(), Some("svc-1")); // filled in
    /// assert_eq!(message.client_name.as_deref(), Some("custom")); // kept
    /// ```
    pub fn stamp(&self, mut message: SpaMessage) -> SpaMessage {
        if message.client_id.is_none() {
            message.client_id = self.client_id.as_deref().map(str::to_owned);
        }
        if message.client_name.is_none() {
            message.client_name = self.client_name.as_deref().map(str::to_owned);
        }
        message
    }
}
