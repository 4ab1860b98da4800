//! Handler arguments: everything a handler can ask for implements [`FromContext`].

use std::any::type_name;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::describe::Payload;
use crate::error::BoxError;
use crate::handler::HandlerKind;
use crate::message::{MessageBuilder, SpaMessage};
use crate::runtime::{AppRuntime, Extensions, Shutdown, Socket};
use crate::socket::headers::Headers;
use crate::socket::{Delivery, Position};

/// What an application offers its handler, known before any socket connects: used to check
/// every handler argument at start-up.
#[derive(Debug)]
pub struct HandlerScope<'a> {
    /// The application's name.
    pub app: &'a str,
    /// Consumer or producer.
    pub kind: HandlerKind,
    /// Shared state available to the handler.
    pub state: &'a Extensions,
    /// Resources available to the handler.
    pub resources: &'a Extensions,
    /// A batch consumer's most messages per call (`None`: one message per call). A batch
    /// handler takes its messages as one [`crate::Batch`] argument.
    pub batch: Option<usize>,
}

/// Everything a handler call can draw its arguments from.
///
/// # Examples
///
/// ```
/// use spa_dat::{BoxError, FromContext, HandlerContext};
///
/// /// The calling application's name, as a handler argument.
/// struct AppName(String);
///
/// impl FromContext for AppName {
///     const READS_MESSAGE: bool = false;
///
///     fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
///         Ok(AppName(context.app_name().to_owned()))
///     }
/// }
///
/// async fn greet(AppName(name): AppName) {
///     println!("{name} started");
/// }
/// # let _ = spa_dat::Application::producer("greeter", greet);
/// ```
#[derive(Debug)]
pub struct HandlerContext {
    pub(crate) app: Arc<AppRuntime>,
    pub(crate) message: Option<SpaMessage>,
    /// What the transport delivered beside it, when an argument reads it
    /// ([`FromContext::READS_DELIVERY`]).
    pub(crate) received: Option<Received>,
    /// Arguments still to be extracted that read the message: the last one may take it.
    pub(crate) readers_left: usize,
    /// Arguments still to be extracted that read [`HandlerContext::received`]: the last one
    /// may take it.
    pub(crate) delivery_readers_left: usize,
    /// A batch call's messages, taken by its [`crate::Batch`] argument.
    pub(crate) batch: Option<BatchInput>,
}

impl HandlerContext {
    /// The message being handled (`None` in a producer, and in a batch call: its messages are
    /// the [`crate::Batch`] argument's).
    pub fn message(&self) -> Option<&SpaMessage> {
        self.message.as_ref()
    }

    /// What the transport delivered beside the message: set for a consumer's call when an
    /// argument's [`FromContext::READS_DELIVERY`] is `true`.
    pub fn received(&self) -> Option<&Received> {
        self.received.as_ref()
    }

    /// The application's name.
    pub fn app_name(&self) -> &str {
        &self.app.name
    }

    /// The application's socket.
    pub fn socket(&self) -> &Socket {
        &self.app.socket
    }

    /// Shared state of type `T`.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.app.state.get::<T>()
    }

    /// The resource of type `T`.
    pub fn resource<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.app.resources.get::<T>()
    }
}

/// The messages of one batch call, as the engine hands them to [`crate::Batch`]'s `from_context`.
#[derive(Debug)]
pub(crate) struct BatchInput {
    /// The batch, in the order the handler sees it.
    pub(crate) messages: Vec<SpaMessage>,
    /// The messages whose argument could not be taken (a payload that is not the `Json<T>`
    /// asked for, say), by their index in `messages`: left out of the handler's [`crate::Batch`], and
    /// read by the engine after the call.
    pub(crate) rejected: Arc<Mutex<Vec<(usize, BoxError)>>>,
}

/// A type a handler can take as an argument.
///
/// `check` runs once per application at start-up, before any socket connects, so that a
/// missing piece is reported then and not at the first message; `from_context` runs per call.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// use spa_dat::handler::{HandlerKind, HandlerScope};
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use spa_dat::{
///     BoxError, DistributedApplication, FromContext, HandlerContext, Shutdown, Socket, SpaMessage,
///     State,
/// };
///
/// /// The device a message on `devices/{id}/...` comes from.
/// struct Device(String);
///
/// impl FromContext for Device {
///     fn check(scope: &HandlerScope<'_>) -> Result<(), String> {
///         match scope.kind {
///             HandlerKind::Consumer => Ok(()),
///             HandlerKind::Producer => Err(format!("`{}` has no message to take a Device from", scope.app)),
///         }
///     }
///
///     fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
///         let topic = &context.message().ok_or("no message")?.topic;
///         let id = topic.split('/').nth(1).ok_or("not a devices/{id}/... topic")?;
///         Ok(Device(id.to_owned()))
///     }
/// }
///
/// type Seen = Mutex<Vec<String>>;
///
/// async fn record(Device(id): Device, seen: State<Seen>, shutdown: Shutdown) {
///     seen.lock().unwrap().push(id);
///     shutdown.trigger();
/// }
///
/// async fn send(socket: Socket) -> spa_dat::Result<()> {
///     socket.publish(SpaMessage::new("devices/d7/temp", "21.5")).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spa_dat::Result<()> {
/// let seen = Arc::new(Seen::default());
/// let run = DistributedApplication::new()
///     .socket_provider(Arc::new(MemorySocketProvider::new(MemoryBus::new("extract-doc"))))
///     .state_arc(Arc::clone(&seen))
///     .add_consumer("record", ["devices/+/temp"], record)
///     .add_producer("send", send)
///     .watch_signals(false)
///     .start_async();
/// tokio::time::timeout(Duration::from_secs(10), run).await.expect("in time")?;
/// assert_eq!(*seen.lock().unwrap(), ["d7"]);
/// # Ok(())
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a spa-dat handler argument",
    label = "not something spa-dat can pass to a handler",
    note = "handler arguments can be: SpaMessage, Json<T>, Received, Batch<T> (in a batch consumer), Socket, MessageBuilder, State<T>, Res<T>, Shutdown, or a type implementing FromContext"
)]
pub trait FromContext: Sized + Send + 'static {
    /// Whether `from_context` reads the message. The last argument that reads it may take it
    /// instead of cloning; leave `true` unless the type never looks at the message.
    const READS_MESSAGE: bool = true;

    /// Whether this is a batch consumer's [`crate::Batch`]: a batch handler takes exactly one,
    /// any other handler none (checked at start-up). Leave `false`.
    const TAKES_BATCH: bool = false;

    /// Whether `from_context` reads [`HandlerContext::received`]: the engine copies the
    /// delivery's headers and key for a call only when an argument says so. Leave `false`
    /// unless it does.
    const READS_DELIVERY: bool = false;

    /// Whether an application described by `scope` can provide this argument; the error text
    /// says what is missing and how to add it.
    fn check(scope: &HandlerScope<'_>) -> Result<(), String> {
        let _ = scope;
        Ok(())
    }

    /// Takes the argument for one call.
    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError>;

    /// The payload this argument decodes, for the application's AsyncAPI document; `None`
    /// (the default) when it does not read the payload.
    fn payload() -> Option<Payload> {
        None
    }
}

fn needs_message(what: &str, scope: &HandlerScope<'_>) -> Result<(), String> {
    match scope.kind {
        HandlerKind::Consumer if scope.batch.is_some() => Err(format!(
            "`{}` is a batch consumer: take its messages as `Batch<{what}>`",
            scope.app
        )),
        HandlerKind::Consumer => Ok(()),
        HandlerKind::Producer => Err(format!(
            "a producer has no incoming message: remove the `{what}` argument, or make `{}` a #[consumer]",
            scope.app
        )),
    }
}

fn message_of(context: &HandlerContext) -> Result<&SpaMessage, BoxError> {
    context
        .message
        .as_ref()
        .ok_or_else(|| "no message in a producer call".into())
}

impl FromContext for SpaMessage {
    fn payload() -> Option<Payload> {
        Some(Payload::any())
    }

    fn check(scope: &HandlerScope<'_>) -> Result<(), String> {
        needs_message("SpaMessage", scope)
    }

    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
        let message = if context.readers_left <= 1 {
            context.message.take()
        } else {
            context.message.clone()
        };
        message.ok_or_else(|| "no message in a producer call".into())
    }
}

/// What the transport delivered beside the message being handled: the topic it arrived on, its
/// headers (Kafka headers, MQTT 5 user properties, the in-process bus's; empty on MQTT 3.1.1),
/// its key and where the transport keeps it. A dead-letter consumer reads why a message came
/// from its headers ([`crate::socket::headers::DEAD_LETTER_REASON`] and the others; spa-dat
/// drops a sender's own `spa-dead-letter-*` headers when it dead-letters, but a client allowed
/// to publish to the dead-letter topic itself can write any). Not in a
/// batch consumer nor a producer (refused at start-up); copied for a call only when a handler
/// takes it.
///
/// # Examples
///
/// ```
/// use spa_dat::socket::headers::{DEAD_LETTER_REASON, DEAD_LETTER_TOPIC};
/// use spa_dat::{Application, Received, SpaMessage};
///
/// async fn inspect(message: SpaMessage, received: Received) {
///     let why = received.headers.get(DEAD_LETTER_REASON).unwrap_or("(not said)");
///     let from = received.headers.get(DEAD_LETTER_TOPIC).unwrap_or("?");
///     println!("{} bytes from {from} were dead-lettered: {why}", message.payload.len());
/// }
///
/// let app = Application::consumer("dead-letters", ["orders/dead"], inspect);
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Received {
    /// The topic the transport delivered it on (the envelope's `Topic` is what its sender
    /// wrote).
    pub topic: Arc<str>,
    /// Its headers; empty where the transport carries none.
    pub headers: Headers,
    /// The key it was published with, where the transport keeps one (Kafka).
    pub key: Option<Bytes>,
    /// Where the transport keeps it (Kafka: partition and offset).
    pub position: Option<Position>,
}

impl Received {
    pub(crate) fn of(delivery: &Delivery) -> Self {
        Received {
            topic: Arc::clone(&delivery.topic),
            headers: delivery.headers.clone(),
            key: delivery.key.clone(),
            position: delivery.position,
        }
    }
}

impl FromContext for Received {
    const READS_MESSAGE: bool = false;
    const READS_DELIVERY: bool = true;

    fn check(scope: &HandlerScope<'_>) -> Result<(), String> {
        match (scope.kind, scope.batch) {
            (HandlerKind::Consumer, None) => Ok(()),
            (HandlerKind::Consumer, Some(_)) => Err(format!(
                "`{}` is a batch consumer: a `Received` describes one message, and a batch has many",
                scope.app
            )),
            (HandlerKind::Producer, _) => Err(format!(
                "a producer has no incoming message: remove the `Received` argument, or make `{}` a #[consumer]",
                scope.app
            )),
        }
    }

    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
        let received = match context.delivery_readers_left {
            0 | 1 => context.received.take(),
            _ => context.received.clone(),
        };
        received.ok_or_else(|| "no delivery to describe".into())
    }
}

/// The message's payload decoded from JSON into `T`; as a return value, `T` encoded as a JSON
/// reply. A payload that does not decode fails the call like a handler error.
///
/// # Examples
///
/// ```
/// use spa_dat::{Application, Json};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64, quantity: u32 }
///
/// #[derive(serde::Serialize)]
/// struct Confirmation { id: u64, accepted: bool }
///
/// // Takes the payload as JSON, replies with JSON.
/// async fn confirm(Json(order): Json<Order>) -> Json<Confirmation> {
///     Json(Confirmation { id: order.id, accepted: order.quantity <= 100 })
/// }
///
/// let app = Application::consumer("confirm", ["orders"], confirm);
/// assert_eq!(app.name(), "confirm");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + Send + 'static> FromContext for Json<T> {
    fn payload() -> Option<Payload> {
        Some(Payload::json::<T>())
    }

    fn check(scope: &HandlerScope<'_>) -> Result<(), String> {
        needs_message("Json<_>", scope)
    }

    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
        Ok(Json(message_of(context)?.payload_json()?))
    }
}

impl FromContext for Socket {
    const READS_MESSAGE: bool = false;

    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
        Ok(context.app.socket.clone())
    }
}

impl FromContext for MessageBuilder {
    const READS_MESSAGE: bool = false;

    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
        Ok(context.app.socket.builder().clone())
    }
}

impl FromContext for Shutdown {
    const READS_MESSAGE: bool = false;

    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
        Ok(context.app.shutdown.clone())
    }
}

/// Shared state of type `T`, added with `DistributedApplication::state` (or an application's
/// `state`). One value shared by every handler: put a `Mutex` or atomics inside to mutate it.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use spa_dat::{DistributedApplication, State};
///
/// #[derive(Default)]
/// struct Counter {
///     calls: AtomicUsize,
/// }
///
/// async fn count(counter: State<Counter>) {
///     counter.calls.fetch_add(1, Ordering::SeqCst); // State<T> derefs to T
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spa_dat::Result<()> {
/// let counter = Arc::new(Counter::default()); // `state_arc`: keep a handle to read it after
/// DistributedApplication::new()
///     .socket_provider(Arc::new(MemorySocketProvider::new(MemoryBus::new("state-doc"))))
///     .state_arc(Arc::clone(&counter))
///     .add_producer("one", count)
///     .add_producer("two", count)
///     .watch_signals(false)
///     .start_async()
///     .await?;
/// assert_eq!(counter.calls.load(Ordering::SeqCst), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct State<T>(pub Arc<T>);

impl<T> Clone for State<T> {
    fn clone(&self) -> Self {
        State(Arc::clone(&self.0))
    }
}

impl<T> Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Send + Sync + 'static> FromContext for State<T> {
    const READS_MESSAGE: bool = false;

    fn check(scope: &HandlerScope<'_>) -> Result<(), String> {
        if scope.state.contains::<T>() {
            Ok(())
        } else {
            Err(format!(
                "no shared state of type `{}`: add it with `.state(value)` on the DistributedApplication or the application",
                type_name::<T>()
            ))
        }
    }

    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
        context
            .app
            .state
            .get::<T>()
            .map(State)
            .ok_or_else(|| format!("no shared state of type `{}`", type_name::<T>()).into())
    }
}

/// A resource of type `T`, added with `.resource(value)`: set up before the handlers start and
/// torn down after they stop (see [`crate::Resource`]).
///
/// # Examples
///
/// ```
/// use spa_dat::{Application, Res, Resource, SpaMessage};
///
/// /// A client with nothing to set up: `Resource`'s methods default to doing nothing.
/// struct Archive { bucket: String }
/// impl Resource for Archive {}
///
/// async fn archive(message: SpaMessage, archive: Res<Archive>) {
///     println!("storing {} in {}", message.topic, archive.bucket);
/// }
///
/// let app = Application::consumer("archive", ["events/#"], archive)
///     .resource(Archive { bucket: "events".into() });
/// # let _ = app;
/// ```
#[derive(Debug)]
pub struct Res<T>(pub Arc<T>);

impl<T> Clone for Res<T> {
    fn clone(&self) -> Self {
        Res(Arc::clone(&self.0))
    }
}

impl<T> Deref for Res<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Send + Sync + 'static> FromContext for Res<T> {
    const READS_MESSAGE: bool = false;

    fn check(scope: &HandlerScope<'_>) -> Result<(), String> {
        if scope.resources.contains::<T>() {
            Ok(())
        } else {
            Err(format!(
                "no resource of type `{}`: add it with `.resource(value)` on the DistributedApplication or the application",
                type_name::<T>()
            ))
        }
    }

    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
        context
            .app
            .resources
            .get::<T>()
            .map(Res)
            .ok_or_else(|| format!("no resource of type `{}`", type_name::<T>()).into())
    }
}
