//! MQTT 3.1.1 on rumqttc's first client: no properties, so a publish carries its payload alone
//! and a refusal has no reason (a SUBACK's 0x80; a publish the ACL refuses is acknowledged and
//! dropped).

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, Outgoing, Packet,
    PubAck, PubRec, Publish, QoS, Request, Subscribe, SubscribeFilter, SubscribeReasonCode,
    Unsubscribe,
};

use super::config::MqttConfig;
use super::wire::{same_in_both_clients, HandOver, Received, RequestView, Wire, WireEvent};
use crate::error::Result;

/// MQTT 3.1.1.
pub(super) struct V311;

impl Wire for V311 {
    type Client = AsyncClient;
    type EventLoop = EventLoop;
    type Request = Request;
    type ConnectionError = ConnectionError;

    const VERSION: &'static str = "3.1.1";
    const HEADERS: bool = false;

    same_in_both_clients!();

    fn client(
        config: &MqttConfig,
        client_id: &str,
        _receive_maximum: u16,
        capacity: usize,
    ) -> Result<(AsyncClient, EventLoop)> {
        let options = config.build_client_config(client_id)?;
        let (client, mut eventloop) = AsyncClient::new(options, capacity);
        eventloop
            .network_options
            .set_connection_timeout((config.connect_timeout_ms / 1000).max(1));
        // Small packets (acks, requests, replies) must not wait for Nagle and delayed ACK:
        // without this a request/reply round trip on loopback takes ~88 ms instead of < 1 ms.
        eventloop.network_options.set_tcp_nodelay(true);
        Ok((client, eventloop))
    }

    fn publish(
        message: crate::socket::Outgoing,
        qos: QoS,
        retain: bool,
    ) -> std::result::Result<Request, String> {
        let mut publish = Publish::from_bytes(message.topic, qos, message.payload);
        publish.retain = retain;
        Ok(Request::Publish(publish))
    }

    fn subscribe(filters: Vec<String>, qos: QoS) -> Request {
        Request::Subscribe(Subscribe::new_many(
            filters
                .into_iter()
                .map(|path| SubscribeFilter::new(path, qos)),
        ))
    }

    fn unsubscribe(filter: String) -> Request {
        Request::Unsubscribe(Unsubscribe::new(filter))
    }

    fn view(request: &Request) -> RequestView<'_> {
        match request {
            Request::Publish(publish) => RequestView::Publish {
                pkid: publish.pkid,
                topic: &publish.topic,
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

    /// rumqttc's `try_*` take owned values, so the topic and payload are copied (the ledger
    /// keeps the request for a resend); `publish_bytes`, which takes `Bytes`, is only an
    /// await, and a caller cancelled in it leaves no trace of whether the request was sent.
    fn try_hand_over(client: &AsyncClient, request: &Request) -> HandOver {
        let handed = match request {
            Request::Publish(publish) => client.try_publish(
                publish.topic.as_str(),
                publish.qos,
                publish.retain,
                publish.payload.to_vec(),
            ),
            Request::Subscribe(subscribe) => {
                client.try_subscribe_many(subscribe.filters.iter().cloned())
            }
            Request::Unsubscribe(unsubscribe) => match unsubscribe.topics.last() {
                Some(topic) => client.try_unsubscribe(topic.as_str()),
                None => Ok(()),
            },
            _ => Ok(()),
        };
        match handed {
            Ok(()) => HandOver::Done,
            Err(rumqttc::ClientError::TryRequest(_)) => HandOver::Full,
            Err(_) => HandOver::Closed,
        }
    }

    fn try_ack(client: &AsyncClient, pkid: u16, qos: QoS) -> bool {
        // What rumqttc's `try_ack` takes: a publish carrying the packet id and QoS.
        let mut publish = Publish::new("", qos, Vec::new());
        publish.pkid = pkid;
        client.try_ack(&publish).is_ok()
    }

    fn keep_alive(eventloop: &EventLoop) -> Duration {
        eventloop.mqtt_options.keep_alive()
    }

    fn connection_timeout(eventloop: &EventLoop) -> Duration {
        Duration::from_secs(eventloop.network_options.connection_timeout())
    }

    fn describe(error: &ConnectionError) -> String {
        match error {
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
                "authentication failed: wrong user name or password (CONNACK: bad user name or password)".to_owned()
            }
            // Mosquitto answers a wrong password at MQTT 3.1.1 with "not authorized".
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
                "not authorized: wrong user name or password, or this user or client id is not allowed (CONNACK: not authorized)".to_owned()
            }
            ConnectionError::ConnectionRefused(code) => format!(
                "the broker refused the connection ({code:?}); check the credentials and client id"
            ),
            ConnectionError::Io(io) => format!("{io}"),
            ConnectionError::NetworkTimeout => "connection timed out".to_owned(),
            other => other.to_string(),
        }
    }
}

/// The acknowledgement of a message received with `pkid` at `qos`.
fn ack_packet(pkid: u16, qos: QoS) -> Packet {
    match qos {
        QoS::ExactlyOnce => Packet::PubRec(PubRec::new(pkid)),
        _ => Packet::PubAck(PubAck::new(pkid)),
    }
}

fn ping_packet() -> Packet {
    Packet::PingReq
}

fn event(event: Event) -> WireEvent {
    match event {
        Event::Incoming(Incoming::ConnAck(ack)) => WireEvent::ConnAck {
            session_present: ack.session_present,
            max_packet_size: None,
        },
        Event::Incoming(Incoming::Publish(publish)) => WireEvent::Publish(Received {
            topic: publish.topic.into(),
            payload: publish.payload,
            qos: publish.qos,
            pkid: publish.pkid,
            headers: Default::default(),
        }),
        Event::Incoming(Incoming::PubAck(ack)) => WireEvent::Acknowledged {
            pkid: ack.pkid,
            refused: None,
        },
        Event::Incoming(Incoming::PubRec(ack)) => WireEvent::Acknowledged {
            pkid: ack.pkid,
            refused: None,
        },
        Event::Incoming(Incoming::SubAck(ack)) => WireEvent::SubAck {
            pkid: ack.pkid,
            refusals: ack
                .return_codes
                .iter()
                .map(|code| match code {
                    SubscribeReasonCode::Success(_) => None,
                    SubscribeReasonCode::Failure => Some(
                        "SUBACK 0x80: its ACL does not let this user read it, or it does not support shared subscriptions"
                            .to_owned(),
                    ),
                })
                .collect(),
        },
        Event::Incoming(Incoming::UnsubAck(ack)) => WireEvent::UnsubAck { pkid: ack.pkid },
        Event::Outgoing(Outgoing::PubAck(pkid) | Outgoing::PubRec(pkid)) => WireEvent::SentAck(pkid),
        Event::Outgoing(Outgoing::Publish(pkid)) => WireEvent::SentPublish(pkid),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => WireEvent::SentSubscribe(pkid),
        Event::Outgoing(Outgoing::Unsubscribe(pkid)) => WireEvent::SentUnsubscribe(pkid),
        Event::Outgoing(Outgoing::Disconnect) => WireEvent::SentDisconnect,
        _ => WireEvent::Other,
    }
}
