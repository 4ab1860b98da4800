//! MQTT 5 on rumqttc's `v5` client (patched: vendor/rumqttc/PATCHES.md): headers as
//! properties, refusals with their reason codes, the inbox's capacity as Receive Maximum,
//! session expiry for persistent sessions.
//!
//! Headers map to MQTT 5's own properties where it has one — [`headers::CORRELATION_ID`] to
//! correlation data, [`headers::RESPONSE_TOPIC`] to the response topic,
//! [`headers::CONTENT_TYPE`] to the content type, [`headers::MESSAGE_EXPIRY_SECS`] to the
//! message expiry interval — and to user properties otherwise; received properties map back
//! the same way. A received property of MQTT 5's own wins over a user property of the same
//! header name (another client chose the user property).

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, Packet, PubAck, PubAckReason, PubRec, PubRecReason, Publish,
    PublishProperties, Subscribe, SubscribeReasonCode, Unsubscribe,
};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Request};
use rumqttc::{Outgoing, QoS};

use super::config::MqttConfig;
use super::wire::{
    same_in_both_clients, HandOver, Received, Refusal, RequestView, Wire, WireEvent,
};
use crate::error::Result;
use crate::socket::headers::{self, Headers};

/// MQTT 5.
pub(super) struct V5;

fn qos5(qos: QoS) -> QoS5 {
    match qos {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn qos311(qos: QoS5) -> QoS {
    match qos {
        QoS5::AtMostOnce => QoS::AtMostOnce,
        QoS5::AtLeastOnce => QoS::AtLeastOnce,
        QoS5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The longest string MQTT 5 carries (a 16-bit length).
const MQTT_STRING_MAX: usize = u16::MAX as usize;

/// Why `value` cannot travel as an MQTT 5 UTF-8 string (§1.5.4), if it cannot: brokers drop
/// the connection over control characters (Mosquitto: "malformed UTF-8"), and a longer one
/// would go out with its length wrapped, its tail read as further properties.
fn not_mqtt_string(value: &str) -> Option<String> {
    if value.len() > MQTT_STRING_MAX {
        return Some(format!(
            "{} bytes, MQTT 5 carries at most {MQTT_STRING_MAX}",
            value.len()
        ));
    }
    value
        .chars()
        .find(|c| {
            matches!(*c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{fdd0}'..='\u{fdef}')
                || (u32::from(*c) & 0xfffe) == 0xfffe
        })
        .map(|c| {
            format!(
                "it contains U+{:04X}, which MQTT 5 does not allow",
                u32::from(c)
            )
        })
}

/// `headers` as publish properties (`None` when there are none: no bytes for them); `Err` names
/// a header that cannot travel as one.
fn properties(headers: &Headers) -> std::result::Result<Option<PublishProperties>, String> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut properties = PublishProperties::default();
    for (name, value) in headers.iter() {
        if let Some(problem) = not_mqtt_string(name).or_else(|| not_mqtt_string(value)) {
            return Err(format!(
                "the header `{}` cannot travel as an MQTT 5 property: {problem}",
                crate::topic::shortened_to(&name.escape_debug().to_string(), 64)
            ));
        }
        match name {
            headers::CORRELATION_ID if properties.correlation_data.is_none() => {
                properties.correlation_data = Some(Bytes::copy_from_slice(value.as_bytes()));
            }
            headers::RESPONSE_TOPIC if properties.response_topic.is_none() => {
                // A broker drops the connection over a response topic it may not publish to.
                crate::topic::validate_topic(value)
                    .map_err(|problem| format!("bad response topic: {problem}"))?;
                properties.response_topic = Some(value.to_owned());
            }
            headers::CONTENT_TYPE if properties.content_type.is_none() => {
                properties.content_type = Some(value.to_owned());
            }
            headers::MESSAGE_EXPIRY_SECS if properties.message_expiry_interval.is_none() => {
                match value.trim().parse::<u64>() {
                    Ok(secs) => {
                        properties.message_expiry_interval =
                            Some(u32::try_from(secs).unwrap_or(u32::MAX))
                    }
                    // Kept as it is: a user property, visible to the consumer.
                    Err(_) => properties
                        .user_properties
                        .push((name.to_owned(), value.to_owned())),
                }
            }
            _ => properties
                .user_properties
                .push((name.to_owned(), value.to_owned())),
        }
    }
    Ok(Some(properties))
}

/// The headers MQTT 5 carries as its own properties: a user property of one of these names
/// is another client's forgery (it would redirect a reply, or expire a dead letter).
const NATIVE: [&str; 4] = [
    headers::CORRELATION_ID,
    headers::RESPONSE_TOPIC,
    headers::CONTENT_TYPE,
    headers::MESSAGE_EXPIRY_SECS,
];

/// Received `properties` as headers.
fn received_headers(properties: Option<PublishProperties>) -> Headers {
    let Some(properties) = properties else {
        return Headers::new();
    };
    let mut received: Headers = properties
        .user_properties
        .into_iter()
        .filter(|(name, _)| !NATIVE.contains(&name.as_str()))
        .collect();
    if let Some(data) = properties.correlation_data {
        // Correlation data is binary in MQTT 5; spa-dat's correlation ids are text (FastStream
        // sends a UUID as text). Other bytes cannot be echoed as a header: the reply goes
        // without it, and the requester matches it by its response topic or not at all.
        match std::str::from_utf8(&data) {
            Ok(id) => received.insert_static(headers::CORRELATION_ID, id),
            Err(_) => {
                tracing::debug!(
                    size = data.len(),
                    "MQTT 5 correlation data that is not UTF-8 is not kept"
                );
            }
        }
    }
    if let Some(topic) = properties.response_topic {
        received.insert_static(headers::RESPONSE_TOPIC, topic);
    }
    if let Some(content_type) = properties.content_type {
        received.insert_static(headers::CONTENT_TYPE, content_type);
    }
    // What is left of it: a message forwarded keeps no more than its sender gave it.
    if let Some(secs) = properties.message_expiry_interval {
        received.insert_static(headers::MESSAGE_EXPIRY_SECS, secs.to_string());
    }
    received
}

/// A PUBACK's or PUBREC's reason code (the two have the same), its number and name, without
/// an allocation: every acknowledgement of a publish passes here.
macro_rules! publish_reason {
    ($kind:ident, $reason:expr) => {
        match $reason {
            $kind::Success => (0x00, "Success"),
            $kind::NoMatchingSubscribers => (0x10, "NoMatchingSubscribers"),
            $kind::UnspecifiedError => (0x80, "UnspecifiedError"),
            $kind::ImplementationSpecificError => (0x83, "ImplementationSpecificError"),
            $kind::NotAuthorized => (0x87, "NotAuthorized"),
            $kind::TopicNameInvalid => (0x90, "TopicNameInvalid"),
            $kind::PacketIdentifierInUse => (0x91, "PacketIdentifierInUse"),
            $kind::QuotaExceeded => (0x97, "QuotaExceeded"),
            $kind::PayloadFormatInvalid => (0x99, "PayloadFormatInvalid"),
        }
    };
}

/// A PUBACK's or PUBREC's reason code in words (`None`: accepted, codes below 0x80).
fn refusal(code: u8, name: &str, reason_string: Option<String>) -> Option<Refusal> {
    if code < 0x80 {
        return None;
    }
    let words = match name {
        "NotAuthorized" => "not authorised: the broker's ACL does not let this user publish there",
        "TopicNameInvalid" => "the topic name is not valid for the broker",
        "QuotaExceeded" => "a quota of the broker was exceeded",
        "PayloadFormatInvalid" => "the payload does not match its format indicator",
        "PacketIdentifierInUse" => "the packet identifier is in use",
        "ImplementationSpecificError" => "the broker refused it (implementation-specific)",
        _ => "the broker refused it (unspecified error)",
    };
    let mut text = format!("{words} (reason code 0x{code:02X} {name})");
    if let Some(reason) = reason_string.filter(|r| !r.is_empty()) {
        text.push_str(": ");
        text.push_str(&crate::topic::shortened_to(&reason, 256));
    }
    Some(Refusal {
        reason: text,
        // A quota (a rate, a queue) may have room later; the other refusals stay.
        for_good: name != "QuotaExceeded",
    })
}

fn puback_refusal(ack: PubAck) -> Option<Refusal> {
    let (code, name) = publish_reason!(PubAckReason, ack.reason);
    refusal(code, name, ack.properties.and_then(|p| p.reason_string))
}

fn pubrec_refusal(ack: PubRec) -> Option<Refusal> {
    let (code, name) = publish_reason!(PubRecReason, ack.reason);
    refusal(code, name, ack.properties.and_then(|p| p.reason_string))
}

fn subscribe_refusal(code: &SubscribeReasonCode) -> Option<String> {
    let (byte, words) = match code {
        SubscribeReasonCode::Success(_) => return None,
        SubscribeReasonCode::NotAuthorized => (
            0x87,
            "not authorised: the broker's ACL does not let this user read it",
        ),
        SubscribeReasonCode::TopicFilterInvalid => (0x8F, "the broker finds the filter invalid"),
        SubscribeReasonCode::SharedSubscriptionsNotSupported => {
            (0x9E, "the broker does not support shared subscriptions")
        }
        SubscribeReasonCode::WildcardSubscriptionsNotSupported => {
            (0xA2, "the broker does not support wildcard subscriptions")
        }
        SubscribeReasonCode::QuotaExceeded => (0x97, "a quota of the broker was exceeded"),
        SubscribeReasonCode::PkidInUse => (0x91, "the packet identifier is in use"),
        SubscribeReasonCode::SubscriptionIdNotSupported => {
            (0xA1, "the broker does not support subscription identifiers")
        }
        SubscribeReasonCode::ImplementationSpecific => {
            (0x83, "the broker refused it (implementation-specific)")
        }
        SubscribeReasonCode::Unspecified | SubscribeReasonCode::Failure => {
            (0x80, "the broker refused it (unspecified error)")
        }
    };
    Some(format!("{words}; SUBACK reason code 0x{byte:02X} {code:?}"))
}

impl Wire for V5 {
    type Client = AsyncClient;
    type EventLoop = EventLoop;
    type Request = Request;
    type ConnectionError = ConnectionError;

    const VERSION: &'static str = "5";
    const HEADERS: bool = true;

    same_in_both_clients!();

    fn client(
        config: &MqttConfig,
        client_id: &str,
        receive_maximum: u16,
        capacity: usize,
    ) -> Result<(AsyncClient, EventLoop)> {
        config.validate()?;
        let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
        let session_expiry =
            (!config.clean_session).then(|| config.session_expiry_secs.unwrap_or(u32::MAX));
        // Incoming: the largest packet MQTT allows (rumqttc's default is 10 KiB); the broker
        // is told, and its own limit bounds it.
        let max_incoming = u32::try_from(super::MQTT_MAX_PACKET_SIZE).unwrap_or(u32::MAX);
        options
            .set_keep_alive(Duration::from_secs(config.keepalive_secs))
            .set_clean_start(config.clean_session)
            .set_session_expiry_interval(session_expiry)
            .set_receive_maximum(Some(receive_maximum.max(1)))
            .set_max_packet_size(Some(max_incoming))
            .set_outgoing_inflight_upper_limit(config.inflight)
            .set_connection_timeout((config.connect_timeout_ms / 1000).max(1))
            .set_manual_acks(true);
        let mut network = options.network_options();
        // Small packets (acks, requests, replies) must not wait for Nagle and delayed ACK.
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        if let Some(username) = &config.username {
            options.set_credentials(
                username.clone(),
                config.password.clone().unwrap_or_default(),
            );
        }
        if let Some(tls) = &config.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(tls.client_config()?)),
            ));
        }
        Ok(AsyncClient::new(options, capacity))
    }

    fn publish(
        message: crate::socket::Outgoing,
        qos: QoS,
        retain: bool,
    ) -> std::result::Result<Request, String> {
        let properties = properties(&message.headers)?;
        let mut publish = Publish::new(message.topic, qos5(qos), message.payload, properties);
        publish.retain = retain;
        Ok(Request::Publish(publish))
    }

    fn subscribe(filters: Vec<String>, qos: QoS) -> Request {
        let qos = qos5(qos);
        Request::Subscribe(Subscribe::new_many(
            filters.into_iter().map(|path| Filter::new(path, qos)),
            None,
        ))
    }

    fn unsubscribe(filter: String) -> Request {
        Request::Unsubscribe(Unsubscribe::new(filter, None))
    }

    fn view(request: &Request) -> RequestView<'_> {
        match request {
            Request::Publish(publish) => RequestView::Publish {
                pkid: publish.pkid,
                // Built from a `String` (`publish` above): always UTF-8.
                topic: std::str::from_utf8(&publish.topic).unwrap_or(""),
                size: publish.size(),
            },
            Request::Subscribe(subscribe) => RequestView::Subscribe {
                filters: subscribe.filters.iter().map(|f| f.path.as_str()).collect(),
            },
            Request::Unsubscribe(_) => RequestView::Unsubscribe,
            Request::PubAck(_) | Request::PubRec(_) => RequestView::Ack,
            _ => RequestView::Other,
        }
    }

    fn try_hand_over(client: &AsyncClient, request: &Request) -> HandOver {
        let handed = match request {
            Request::Publish(publish) => {
                let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                match &publish.properties {
                    Some(properties) => client.try_publish_with_properties(
                        topic,
                        publish.qos,
                        publish.retain,
                        publish.payload.clone(),
                        properties.clone(),
                    ),
                    None => client.try_publish(
                        topic,
                        publish.qos,
                        publish.retain,
                        publish.payload.clone(),
                    ),
                }
            }
            Request::Subscribe(subscribe) => {
                client.try_subscribe_many(subscribe.filters.iter().cloned())
            }
            Request::Unsubscribe(unsubscribe) => match unsubscribe.filters.last() {
                Some(filter) => client.try_unsubscribe(filter.as_str()),
                None => Ok(()),
            },
            _ => Ok(()),
        };
        match handed {
            Ok(()) => HandOver::Done,
            Err(rumqttc::v5::ClientError::TryRequest(_)) => HandOver::Full,
            Err(_) => HandOver::Closed,
        }
    }

    fn try_ack(client: &AsyncClient, pkid: u16, qos: QoS) -> bool {
        let mut publish = Publish::new("", qos5(qos), Bytes::new(), None);
        publish.pkid = pkid;
        client.try_ack(&publish).is_ok()
    }

    fn keep_alive(eventloop: &EventLoop) -> Duration {
        eventloop.options.keep_alive()
    }

    fn connection_timeout(eventloop: &EventLoop) -> Duration {
        Duration::from_secs(eventloop.options.connection_timeout())
    }

    fn describe(error: &ConnectionError) -> String {
        match error {
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
                "authentication failed: wrong user name or password (CONNACK reason code 0x86 BadUserNamePassword)".to_owned()
            }
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
                "not authorised: wrong user name or password, or this user or client id is not allowed (CONNACK reason code 0x87 NotAuthorized)".to_owned()
            }
            ConnectionError::ConnectionRefused(code) => format!(
                "the broker refused the connection (CONNACK {code:?}); check the credentials, client id and MQTT version"
            ),
            ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
                reason_code,
                reason_string,
            }) => match reason_string {
                Some(reason) => format!(
                    "the broker closed the connection: {reason_code:?} ({})",
                    crate::topic::shortened_to(reason, 256)
                ),
                None => format!("the broker closed the connection: {reason_code:?}"),
            },
            ConnectionError::Io(io) => format!("{io}"),
            ConnectionError::Timeout(_) => "connection timed out".to_owned(),
            other => other.to_string(),
        }
    }
}

/// The acknowledgement of a message received with `pkid` at `qos`. rumqttc's state records an
/// incoming QoS 2 message until its PUBREL; the PUBREC itself carries no state.
fn ack_packet(pkid: u16, qos: QoS) -> Packet {
    match qos {
        QoS::ExactlyOnce => Packet::PubRec(PubRec::new(pkid, None)),
        _ => Packet::PubAck(PubAck::new(pkid, None)),
    }
}

fn ping_packet() -> Packet {
    Packet::PingReq(rumqttc::v5::mqttbytes::v5::PingReq)
}

fn event(event: Event) -> WireEvent {
    match event {
        Event::Incoming(Incoming::ConnAck(ack)) => WireEvent::ConnAck {
            session_present: ack.session_present,
            max_packet_size: ack.properties.and_then(|p| p.max_packet_size),
        },
        Event::Incoming(Incoming::Publish(publish)) => WireEvent::Publish(Received {
            topic: publish.topic,
            payload: publish.payload,
            qos: qos311(publish.qos),
            pkid: publish.pkid,
            headers: received_headers(publish.properties),
        }),
        Event::Incoming(Incoming::PubAck(ack)) => WireEvent::Acknowledged {
            pkid: ack.pkid,
            refused: puback_refusal(ack),
        },
        Event::Incoming(Incoming::PubRec(ack)) => WireEvent::Acknowledged {
            pkid: ack.pkid,
            refused: pubrec_refusal(ack),
        },
        Event::Incoming(Incoming::SubAck(ack)) => WireEvent::SubAck {
            pkid: ack.pkid,
            refusals: ack.return_codes.iter().map(subscribe_refusal).collect(),
        },
        Event::Incoming(Incoming::UnsubAck(ack)) => WireEvent::UnsubAck { pkid: ack.pkid },
        Event::Outgoing(Outgoing::PubAck(pkid) | Outgoing::PubRec(pkid)) => {
            WireEvent::SentAck(pkid)
        }
        Event::Outgoing(Outgoing::Publish(pkid)) => WireEvent::SentPublish(pkid),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => WireEvent::SentSubscribe(pkid),
        Event::Outgoing(Outgoing::Unsubscribe(pkid)) => WireEvent::SentUnsubscribe(pkid),
        Event::Outgoing(Outgoing::Disconnect) => WireEvent::SentDisconnect,
        _ => WireEvent::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_publish_passes_later_only_when_a_quota_was_exceeded() {
        let refused = |reason| {
            puback_refusal(PubAck {
                pkid: 1,
                reason,
                properties: None,
            })
        };
        let quota = refused(PubAckReason::QuotaExceeded).expect("a refusal");
        assert!(!quota.for_good, "{}", quota.reason);
        let acl = refused(PubAckReason::NotAuthorized).expect("a refusal");
        assert!(acl.for_good);
        assert!(
            acl.reason.contains("not authorised") && acl.reason.contains("0x87"),
            "{}",
            acl.reason
        );
        assert!(refused(PubAckReason::Success).is_none());
        assert!(refused(PubAckReason::NoMatchingSubscribers).is_none());
    }

    #[test]
    fn headers_mqtt_5_cannot_carry_are_refused_naming_them() {
        let bad: Headers = [("note", "line\nbreak")].into_iter().collect();
        let error = properties(&bad).expect_err("a control character");
        assert!(
            error.contains("`note`") && error.contains("U+000A"),
            "{error}"
        );
        let long: Headers = [("big", "x".repeat(65_536))].into_iter().collect();
        assert!(properties(&long).expect_err("too long").contains("65535"));
        let wildcard: Headers = [(headers::RESPONSE_TOPIC, "replies/#")]
            .into_iter()
            .collect();
        assert!(properties(&wildcard).is_err());
        let fine: Headers = [("note", "grüße"), (headers::CONTENT_TYPE, "text/plain")]
            .into_iter()
            .collect();
        let properties = properties(&fine).expect("valid").expect("some");
        assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            properties.user_properties,
            [("note".to_owned(), "grüße".to_owned())]
        );
    }
}
