//! Where the replies to a socket's requests arrive, and which request each reply answers: the
//! bookkeeping; the reply consumer and the reply topics themselves are `replies`.
//!
//! A reply is matched by its `spa-correlation-id` header when the responder echoes it (spa-dat
//! in Rust does). A responder that does not (every Python spa-dat 0.4.0 responder) copies back
//! nothing but the topic: the request's `ResponseTopic`. So a request goes out with a reply
//! topic of its own — created for it, used once, deleted after — unless its destination's
//! responders are known to echo the header; then it shares the socket's reply topic
//! `{client_id}_request_response`. On the shared topic only a reply carrying a correlation id of
//! a waiting request is accepted: a reply without one cannot be matched and is dropped, never
//! handed to whichever request waits longest.
//!
//! What echoes is learned from the replies: a correlated reply marks its request's destination;
//! an uncorrelated reply on the shared topic (a destination's responders changed) forgets them
//! all. Correlation ids are unique per process run ([`RequestMultiplexer`]), and every reply
//! topic is read from its end, so replies of an earlier run never answer this one's requests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::message::SpaMessage;
use crate::socket::RequestMultiplexer;

/// The reply topic a request uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReplyRoute {
    /// The socket's reply topic, for destinations whose responders echo the correlation id.
    Shared(String),
    /// A topic for this request alone, to create before sending and delete after.
    Own(String),
}

impl ReplyRoute {
    pub(super) fn topic(&self) -> &str {
        match self {
            ReplyRoute::Shared(topic) | ReplyRoute::Own(topic) => topic,
        }
    }
}

/// The reply routes of one socket.
pub(super) struct Replies {
    shared_topic: String,
    /// Distinguishes this run's own reply topics from an earlier run's with the same client id.
    run: String,
    requests: Arc<RequestMultiplexer>,
    routes: Mutex<Routes>,
}

#[derive(Default)]
struct Routes {
    next_own: u64,
    /// Own reply topic → the request it serves.
    own: HashMap<String, u64>,
    /// Waiting request → its destination topic, to learn from its reply.
    destinations: HashMap<u64, String>,
    /// Destinations whose responders echo the correlation id.
    echoing: HashSet<String>,
}

impl Replies {
    pub(super) fn new(client_id: &str, requests: Arc<RequestMultiplexer>) -> Self {
        Replies {
            shared_topic: format!("{client_id}_request_response"),
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            requests,
            routes: Mutex::new(Routes::default()),
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // Every operation below leaves the maps consistent, even if it panicked half-way.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn shared_topic(&self) -> &str {
        &self.shared_topic
    }

    pub(super) fn requests(&self) -> &Arc<RequestMultiplexer> {
        &self.requests
    }

    /// Chooses the reply topic of request `id` to `destination`. An own topic is bound to the
    /// request at once; [`Replies::end`] releases it.
    pub(super) fn route(&self, id: u64, destination: &str) -> ReplyRoute {
        let mut routes = self.routes();
        routes.destinations.insert(id, destination.to_owned());
        if routes.echoing.contains(destination) {
            return ReplyRoute::Shared(self.shared_topic.clone());
        }
        routes.next_own += 1;
        let topic = format!("{}.{}.{}", self.shared_topic, self.run, routes.next_own);
        routes.own.insert(topic.clone(), id);
        ReplyRoute::Own(topic)
    }

    /// Request `id` ended (answered, timed out or cancelled): its own topic serves no one now.
    pub(super) fn end(&self, id: u64, route: &ReplyRoute) {
        let mut routes = self.routes();
        routes.destinations.remove(&id);
        if let ReplyRoute::Own(topic) = route {
            routes.own.remove(topic);
        }
    }

    /// The own reply topics still bound to a request (deleted when the socket closes).
    pub(super) fn own_topics(&self) -> Vec<String> {
        self.routes().own.keys().cloned().collect()
    }

    /// Hands a reply that arrived on `topic` to its request; false when no waiting request is
    /// its own (it is dropped).
    pub(super) fn deliver(&self, topic: &str, correlation: Option<u64>, reply: SpaMessage) -> bool {
        let mut routes = self.routes();
        let id = match correlation {
            Some(id) => {
                let Routes {
                    destinations,
                    echoing,
                    ..
                } = &mut *routes;
                // Known after the first reply: no copy of the name per reply.
                if let Some(destination) = destinations.get(&id) {
                    if !echoing.contains(destination) {
                        echoing.insert(destination.clone());
                    }
                }
                id
            }
            None => match routes.own.get(topic) {
                Some(&id) => id,
                None => {
                    if topic == self.shared_topic && !routes.echoing.is_empty() {
                        // A responder that does not echo answered on the shared topic: which
                        // destination it serves is unknown, so every destination has to prove
                        // again that its responders echo.
                        tracing::warn!(%topic, "a reply without spa-correlation-id on the shared reply topic cannot be matched; it is dropped and requests use their own reply topics again");
                        routes.echoing.clear();
                    }
                    return false;
                }
            },
        };
        drop(routes);
        self.requests.resolve(id, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies() -> Replies {
        Replies::new("client", RequestMultiplexer::new())
    }

    #[test]
    fn a_request_to_an_unknown_destination_gets_a_topic_of_its_own() {
        let replies = replies();
        let first = replies.route(1, "orders");
        let second = replies.route(2, "orders");
        assert!(matches!(first, ReplyRoute::Own(_)));
        assert_ne!(first, second, "one topic per request");
        assert!(first.topic().starts_with("client_request_response."));
    }

    #[test]
    fn an_uncorrelated_reply_answers_only_the_request_its_topic_serves() {
        let replies = replies();
        let pending = replies.requests().register();
        let route = replies.route(pending.id(), "orders");
        assert!(!replies.deliver(
            replies.shared_topic(),
            None,
            SpaMessage::new("x", "stranger")
        ));
        assert!(replies.deliver(route.topic(), None, SpaMessage::new("x", "mine")));
        replies.end(pending.id(), &route);
        assert!(
            !replies.deliver(route.topic(), None, SpaMessage::new("x", "late")),
            "after the request ended its topic answers no one"
        );
    }

    #[test]
    fn destinations_whose_responders_echo_share_the_reply_topic_until_one_does_not() {
        let replies = replies();
        let pending = replies.requests().register();
        let route = replies.route(pending.id(), "orders");
        assert!(replies.deliver(
            route.topic(),
            Some(pending.id()),
            SpaMessage::new("x", "ok")
        ));
        replies.end(pending.id(), &route);
        let next = replies.requests().register();
        assert_eq!(
            replies.route(next.id(), "orders"),
            ReplyRoute::Shared("client_request_response".into())
        );
        assert!(!replies.deliver(replies.shared_topic(), None, SpaMessage::new("x", "python")));
        assert!(matches!(replies.route(99, "orders"), ReplyRoute::Own(_)));
    }
}
