//! One application: a handler, its socket, its resources and state, and its life cycle.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tracing::Instrument;

use super::resource::{ActiveResources, Resource, ResourceSet};
use super::shutdown::Shutdown;
use crate::config::{Config, SocketProviderFactory};
use crate::error::{Error, Result};
use crate::handler::{
    AppRuntime, BoxedHandler, CallResult, Extensions, Handler, HandlerContext, HandlerKind,
    HandlerScope,
};
use crate::message::{MessageBuilder, SpaMessage};
use crate::socket::{
    Arrival, ArrivalHandler, Delivery, Inbox, Outgoing, Socket, SocketOptions, SocketProvider,
    SpaSocket,
};

/// The life cycle of an application, as in the Python package: `setup`, `run_async`,
/// `teardown`, and `start_async` / `start` doing all three.
#[async_trait]
pub trait ApplicationLifeCycle: Send {
    /// Checks the handler, connects the socket, sets up resources. What it did is undone by
    /// [`ApplicationLifeCycle::teardown`], also when it failed half-way.
    async fn setup(&mut self) -> Result<()>;

    /// Runs the handler: once for a producer, per message until shutdown for a consumer.
    async fn run_async(&mut self) -> Result<()>;

    /// Tears down resources in reverse order, then closes the socket. Idempotent.
    async fn teardown(&mut self) -> Result<()>;

    /// `setup`, `run_async`, `teardown`; teardown runs whatever happened before it.
    async fn start_async(&mut self) -> Result<()> {
        let result = match self.setup().await {
            Ok(()) => self.run_async().await,
            Err(error) => Err(error),
        };
        let teardown = self.teardown().await;
        result.and(teardown)
    }

    /// [`ApplicationLifeCycle::start_async`] on a new Tokio runtime; blocks until done.
    fn start(&mut self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::config(format!("cannot start the Tokio runtime: {e}")))?;
        runtime.block_on(self.start_async())
    }
}

/// Runtime settings an application takes from its [`Config`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) request_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) dead_letter_topic: Option<String>,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            request_timeout: config.request_timeout(),
            shutdown_grace: config.shutdown_grace(),
            dead_letter_topic: config.dead_letter_topic.clone(),
        }
    }
}

/// One application: a consumer (handler per message) or a producer (handler once).
///
/// Build one with [`Application::consumer`] / [`Application::producer`]; run it alone through
/// [`ApplicationLifeCycle`] or with others in a [`crate::DistributedApplication`].
pub struct Application {
    name: String,
    kind: HandlerKind,
    topics: Vec<String>,
    group: Option<String>,
    client_id: Option<String>,
    client_name: Option<String>,
    dead_letter_topic: Option<String>,
    provider: Option<Arc<dyn SocketProvider>>,
    settings: Option<Settings>,
    state: Extensions,
    resources: ResourceSet,
    shared_resources: Extensions,
    handler: BoxedHandler,
    shutdown: Shutdown,
    running: Option<Running>,
}

struct Running {
    runtime: Arc<AppRuntime>,
    transport: Arc<dyn SpaSocket>,
    inbox: Option<Inbox>,
    resources: Option<ActiveResources>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("topics", &self.topics)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Application {
    fn new(name: String, kind: HandlerKind, topics: Vec<String>, handler: BoxedHandler) -> Self {
        Application {
            name,
            kind,
            topics,
            group: None,
            client_id: None,
            client_name: None,
            dead_letter_topic: None,
            provider: None,
            settings: None,
            state: Extensions::default(),
            resources: ResourceSet::default(),
            shared_resources: Extensions::default(),
            handler,
            shutdown: Shutdown::new(),
            running: None,
        }
    }

    /// A consumer: `handler` is called for every message on `topics`.
    pub fn consumer<H, Args, I, S>(name: impl Into<String>, topics: I, handler: H) -> Self
    where
        H: Handler<Args>,
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::from_boxed(
            name,
            HandlerKind::Consumer,
            topics.into_iter().map(Into::into).collect(),
            BoxedHandler::new(handler),
        )
    }

    /// A producer: `handler` is called once when the application starts.
    pub fn producer<H: Handler<Args>, Args>(name: impl Into<String>, handler: H) -> Self {
        Self::from_boxed(
            name,
            HandlerKind::Producer,
            Vec::new(),
            BoxedHandler::new(handler),
        )
    }

    /// An application around an already erased handler.
    pub fn from_boxed(
        name: impl Into<String>,
        kind: HandlerKind,
        topics: Vec<String>,
        handler: BoxedHandler,
    ) -> Self {
        Self::new(name.into(), kind, topics, handler)
    }

    /// Consumer group: instances in one group share the messages.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Client id on the bus (default: the name plus a random suffix).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Client name stamped on published messages (default: the application's name).
    pub fn client_name(mut self, client_name: impl Into<String>) -> Self {
        self.client_name = Some(client_name.into());
        self
    }

    /// Where messages this consumer cannot decode or fails to handle are forwarded.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// The socket provider of this application (default: the distributed application's).
    pub fn socket_provider(mut self, provider: Arc<dyn SocketProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Adds state for this application's handler ([`crate::State<T>`]).
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(Arc::new(value));
        self
    }

    /// Adds state the caller keeps a handle to (e.g. metrics read in `main` after the run).
    pub fn state_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.state.insert(value);
        self
    }

    /// Adds a resource for this application ([`crate::Res<T>`]), set up after its socket
    /// connects and torn down before it closes.
    pub fn resource<T: Resource>(mut self, resource: T) -> Self {
        self.resources.add(resource);
        self
    }

    /// The shutdown handle of this application.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The application's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Consumer or producer.
    pub fn kind(&self) -> HandlerKind {
        self.kind
    }

    /// Takes the defaults of the distributed application it runs in.
    pub(crate) fn inherit(
        &mut self,
        provider: &Arc<dyn SocketProvider>,
        settings: &Settings,
        state: &Extensions,
        resources: &Extensions,
        shutdown: &Shutdown,
    ) {
        self.provider.get_or_insert_with(|| Arc::clone(provider));
        self.settings.get_or_insert_with(|| settings.clone());
        self.state.merge_missing(state);
        self.shared_resources = resources.clone();
        self.shutdown = shutdown.clone();
    }

    fn all_resources(&self) -> Extensions {
        let mut all = self.resources.by_type().clone();
        all.merge_missing(&self.shared_resources);
        all
    }

    /// Checks every handler argument against what the application offers.
    pub(crate) fn check(&self) -> Result<()> {
        let resources = self.all_resources();
        let scope = HandlerScope {
            app: &self.name,
            kind: self.kind,
            state: &self.state,
            resources: &resources,
        };
        let mut problems = Vec::new();
        if self.kind == HandlerKind::Consumer && self.topics.is_empty() {
            let defaults = self.provider.as_ref().map(|p| p.default_topics().len());
            if defaults == Some(0) {
                problems.push("a consumer needs topics: none given and the bus has no default subscription topics".to_owned());
            }
        }
        if let Err(found) = self.handler.check(&scope) {
            problems.extend(found);
        }
        match problems.len() {
            0 => Ok(()),
            _ => Err(Error::from_many(
                problems
                    .into_iter()
                    .map(|reason| Error::Handler {
                        handler: self.name.clone(),
                        reason,
                    })
                    .collect(),
            )),
        }
    }

    fn startup_error(&self, source: Error) -> Error {
        Error::Startup {
            app: self.name.clone(),
            source: Box::new(source),
        }
    }

    async fn connect(&mut self) -> Result<Running> {
        if self.settings.is_none() || self.provider.is_none() {
            let config = Config::from_env()?;
            self.settings.get_or_insert_with(|| Settings::from(&config));
            if self.provider.is_none() {
                self.provider = Some(SocketProviderFactory::from_config(&config.bus)?);
            }
        }
        let settings = self.settings();
        let Some(provider) = self.provider.clone() else {
            return Err(Error::config("no socket provider"));
        };
        self.check()?;
        let client_id = self.client_id.clone().unwrap_or_else(|| {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{}-{}", self.name, &suffix[..8])
        });
        let client_name = self
            .client_name
            .clone()
            .unwrap_or_else(|| self.name.clone());
        let stable_id = self.client_id.clone().unwrap_or_else(|| self.name.clone());
        let mut options = SocketOptions::new(client_id.clone()).stable_id(stable_id);
        options.client_name = Some(client_name.clone());
        options.group = self.group.clone();
        if self.kind == HandlerKind::Consumer {
            options.topics = self.topics.clone();
        }
        tracing::debug!(app = %self.name, bus = %provider.describe(), "connecting");
        let connection = provider.connect(options).await?;
        let builder = MessageBuilder::new(Some(&client_id), Some(&client_name));
        let socket = Socket::new(
            Arc::clone(&connection.socket),
            builder,
            settings.request_timeout,
        );
        let runtime = Arc::new(AppRuntime {
            name: Arc::from(self.name.as_str()),
            socket,
            state: self.state.clone(),
            resources: self.all_resources(),
            shutdown: self.shutdown.clone(),
        });
        Ok(Running {
            runtime,
            transport: connection.socket,
            inbox: Some(connection.inbox),
            resources: None,
        })
    }

    fn settings(&self) -> Settings {
        self.settings
            .clone()
            .unwrap_or_else(|| Settings::from(&Config::default()))
    }

    async fn consume(&self, running: &Running, mut inbox: Inbox) {
        let settings = self.settings();
        let consumer = Arc::new(Consumer {
            handler: self.handler.clone(),
            runtime: Arc::clone(&running.runtime),
            dead_letter_topic: self
                .dead_letter_topic
                .clone()
                .or(settings.dead_letter_topic.clone()),
            grace: settings.shutdown_grace,
        });
        inbox.handle_on_arrival(Arc::new(OnArrival(Arc::clone(&consumer))));
        let mut batch = Vec::with_capacity(64);
        // One shutdown watch for the whole loop: registering a new one per batch costs a lock.
        let shutdown = self.shutdown.triggered();
        tokio::pin!(shutdown);
        loop {
            let received = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                n = inbox.recv_arrivals(&mut batch, 64) => n,
            };
            if received == 0 {
                tracing::info!(app = %self.name, "socket closed; consumer stops");
                break;
            }
            for arrival in batch.drain(..) {
                match arrival {
                    Arrival::Started(rest) => rest.await,
                    Arrival::Delivery(delivery) => {
                        // Most messages finish without awaiting anything: no per-message future.
                        if let Some(unfinished) = consumer.handle_now(delivery) {
                            consumer.finish(unfinished).await;
                        }
                    }
                }
                inbox.finished();
            }
        }
        // Nothing more starts on arrival; what did start there gets its grace period. It can
        // only be first in the inbox: handling starts on arrival only when the inbox is empty.
        inbox.close();
        if let Some(Arrival::Started(rest)) = inbox.try_recv_arrival() {
            rest.await;
        }
    }

    async fn produce(&self, running: &Running) -> Result<()> {
        let context = HandlerContext {
            app: Arc::clone(&running.runtime),
            message: None,
            readers_left: 0,
        };
        let span = tracing::info_span!("producer", app = %self.name);
        let outcome = run_guarded(
            self.handler.call(context),
            span,
            &self.shutdown,
            self.settings().shutdown_grace,
        )
        .await;
        match outcome {
            Outcome::Done(Ok(_)) => Ok(()),
            Outcome::Done(Err(error)) => {
                tracing::error!(app = %self.name, %error, "producer failed");
                Err(Error::Handler {
                    handler: self.name.clone(),
                    reason: error.to_string(),
                })
            }
            Outcome::Panicked(reason) => {
                tracing::error!(app = %self.name, panic = %reason, "producer panicked");
                Err(Error::Handler {
                    handler: self.name.clone(),
                    reason: format!("panicked: {reason}"),
                })
            }
            Outcome::Cancelled => {
                tracing::warn!(app = %self.name, "producer did not finish within the shutdown grace period; cancelled");
                Ok(())
            }
        }
    }
}

#[async_trait]
impl ApplicationLifeCycle for Application {
    async fn setup(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let running = self.connect().await.map_err(|e| self.startup_error(e))?;
        let running = self.running.insert(running);
        match self.resources.setup().await {
            Ok(active) => {
                running.resources = Some(active);
                Ok(())
            }
            Err(error) => Err(Error::Startup {
                app: self.name.clone(),
                source: Box::new(error),
            }),
        }
    }

    async fn run_async(&mut self) -> Result<()> {
        let Some(running) = self.running.as_mut() else {
            return Err(Error::config(format!(
                "application `{}` must be set up before it runs",
                self.name
            )));
        };
        let inbox = running.inbox.take();
        let Some(running) = self.running.as_ref() else {
            return Ok(());
        };
        match (self.kind, inbox) {
            (HandlerKind::Producer, _) => self.produce(running).await,
            (HandlerKind::Consumer, Some(inbox)) => {
                self.consume(running, inbox).await;
                Ok(())
            }
            (HandlerKind::Consumer, None) => Err(Error::config(format!(
                "consumer `{}` already ran; set it up again",
                self.name
            ))),
        }
    }

    async fn teardown(&mut self) -> Result<()> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        let resources = match running.resources.as_mut() {
            Some(active) => active.teardown().await,
            None => Ok(()),
        };
        let socket = running.transport.close().await;
        tracing::debug!(app = %self.name, "torn down");
        resources.and(socket)
    }
}

/// How a guarded handler call ended.
enum Outcome {
    Done(CallResult),
    Panicked(String),
    Cancelled,
}

type HandlerCall = futures_util::future::BoxFuture<'static, CallResult>;
type GuardedCall = futures_util::future::CatchUnwind<AssertUnwindSafe<HandlerCall>>;

/// A handler call after its first poll.
enum FirstPoll {
    Finished(Outcome),
    /// Still running: finish it with [`run_to_end`].
    Running(GuardedCall),
}

/// Polls a handler future once, catching panics, inside `span`. Most handlers finish on their
/// first poll: they need neither the shutdown watch nor an instrumented future.
fn first_poll(call: HandlerCall, span: &tracing::Span) -> FirstPoll {
    let mut call = AssertUnwindSafe(call).catch_unwind();
    let polled = {
        let _entered = span.enter();
        (&mut call).now_or_never()
    };
    match polled {
        Some(result) => FirstPoll::Finished(outcome(result)),
        None => FirstPoll::Running(call),
    }
}

/// Runs a handler future that did not finish on its first poll, catching panics; once
/// shutdown is requested it gets `grace` more time before it is dropped. Runs inside `span`.
async fn run_to_end(
    call: GuardedCall,
    span: tracing::Span,
    shutdown: &Shutdown,
    grace: Duration,
) -> Outcome {
    let deadline = async {
        shutdown.triggered().await;
        tokio::time::sleep(grace).await;
    };
    let guarded = async {
        tokio::select! {
            result = call => Some(result),
            _ = deadline => None,
        }
    };
    match Box::pin(guarded.instrument(span)).await {
        Some(result) => outcome(result),
        None => Outcome::Cancelled,
    }
}

fn outcome(result: std::thread::Result<CallResult>) -> Outcome {
    match result {
        Ok(result) => Outcome::Done(result),
        Err(panic) => Outcome::Panicked(panic_message(&*panic)),
    }
}

/// Runs a handler future to its end: [`first_poll`], then [`run_to_end`] if needed.
async fn run_guarded(
    call: HandlerCall,
    span: tracing::Span,
    shutdown: &Shutdown,
    grace: Duration,
) -> Outcome {
    match first_poll(call, &span) {
        FirstPoll::Finished(outcome) => outcome,
        FirstPoll::Running(call) => run_to_end(call, span, shutdown, grace).await,
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}

/// A message [`Consumer::handle_now`] could not finish without awaiting.
enum Unfinished {
    /// Not a spa-dat message: dead-letter it, then acknowledge.
    Undecodable { delivery: Delivery, reason: String },
    /// The handler finished with a reply, an error or a panic.
    Finished {
        delivery: Delivery,
        response_topic: Option<String>,
        outcome: Outcome,
    },
    /// The handler is still running.
    Running {
        delivery: Delivery,
        response_topic: Option<String>,
        call: GuardedCall,
        span: tracing::Span,
    },
}

/// The per-message path of a consumer: its application's name, socket and shutdown are the
/// runtime's.
struct Consumer {
    handler: BoxedHandler,
    runtime: Arc<AppRuntime>,
    dead_letter_topic: Option<String>,
    grace: Duration,
}

/// A consumer handling messages on its transport's task, as they arrive.
struct OnArrival(Arc<Consumer>);

impl ArrivalHandler for OnArrival {
    fn handle_now(&self, delivery: Delivery) -> Option<BoxFuture<'static, ()>> {
        let unfinished = self.0.handle_now(delivery)?;
        let consumer = Arc::clone(&self.0);
        Some(Box::pin(async move { consumer.finish(unfinished).await }))
    }
}

impl Consumer {
    /// Handles `delivery` as far as it goes without awaiting: decoding, the handler's first
    /// poll, the acknowledgement. Returns what is left to await, if anything. Once shutdown is
    /// requested nothing new starts: unacknowledged, an at-least-once transport delivers the
    /// message again.
    fn handle_now(&self, delivery: Delivery) -> Option<Unfinished> {
        if self.runtime.shutdown.is_triggered() {
            return None;
        }
        let message = match SpaMessage::from_json(&delivery.payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(app = %self.runtime.name, topic = %delivery.topic, position = ?delivery.position, size = delivery.payload.len(), %error, "skipping a message that cannot be decoded");
                return Some(Unfinished::Undecodable {
                    delivery,
                    reason: format!("not a spa-dat message: {error}"),
                });
            }
        };
        let response_topic = message.response_topic.clone();
        // DEBUG, as tower-http's request spans: an INFO span per message halves a consumer's
        // throughput under a typical `info` filter (measured on Kafka: 0.62× raw).
        let span =
            tracing::debug_span!("message", app = %self.runtime.name, topic = %delivery.topic);
        let context = HandlerContext {
            app: Arc::clone(&self.runtime),
            message: Some(message),
            readers_left: 0,
        };
        match first_poll(self.handler.call(context), &span) {
            FirstPoll::Finished(Outcome::Done(Ok(None))) => {
                delivery.ack();
                None
            }
            FirstPoll::Finished(outcome) => Some(Unfinished::Finished {
                delivery,
                response_topic,
                outcome,
            }),
            FirstPoll::Running(call) => Some(Unfinished::Running {
                delivery,
                response_topic,
                call,
                span,
            }),
        }
    }

    /// Finishes what [`Consumer::handle_now`] left: the rest of the handler, the reply, the
    /// dead letter, then the acknowledgement.
    async fn finish(&self, unfinished: Unfinished) {
        let (delivery, response_topic, outcome) = match unfinished {
            Unfinished::Undecodable { delivery, reason } => {
                if self.dead_letter(&delivery, &reason).await {
                    delivery.ack();
                }
                return;
            }
            Unfinished::Finished {
                delivery,
                response_topic,
                outcome,
            } => (delivery, response_topic, outcome),
            Unfinished::Running {
                delivery,
                response_topic,
                call,
                span,
            } => {
                let outcome = run_to_end(call, span, &self.runtime.shutdown, self.grace).await;
                (delivery, response_topic, outcome)
            }
        };
        match outcome {
            Outcome::Done(Ok(None)) => {}
            Outcome::Done(Ok(Some(reply))) => self.reply(&delivery, response_topic, *reply).await,
            Outcome::Done(Err(error)) => {
                tracing::error!(app = %self.runtime.name, topic = %delivery.topic, position = ?delivery.position, %error, "handler failed");
                if !self
                    .dead_letter(&delivery, &format!("handler failed: {error}"))
                    .await
                {
                    return;
                }
            }
            Outcome::Panicked(reason) => {
                tracing::error!(app = %self.runtime.name, topic = %delivery.topic, position = ?delivery.position, panic = %reason, "handler panicked");
                if !self
                    .dead_letter(&delivery, &format!("handler panicked: {reason}"))
                    .await
                {
                    return;
                }
            }
            Outcome::Cancelled => {
                tracing::warn!(app = %self.runtime.name, topic = %delivery.topic, "handler did not finish within the shutdown grace period; cancelled, not acknowledged");
                return;
            }
        }
        delivery.ack();
    }

    async fn reply(&self, delivery: &Delivery, response_topic: Option<String>, reply: SpaMessage) {
        let Some(response_topic) = response_topic else {
            tracing::debug!(app = %self.runtime.name, topic = %delivery.topic, "handler returned a reply but the message has no response topic; dropped");
            return;
        };
        let mut reply = self.runtime.socket.builder().stamp(reply);
        reply.topic = response_topic;
        if let Err(error) = self.transport().publish_reply(&reply, delivery).await {
            tracing::error!(app = %self.runtime.name, topic = %reply.topic, %error, "publishing the reply failed");
        }
    }

    fn transport(&self) -> &Arc<dyn SpaSocket> {
        self.runtime.socket.transport()
    }

    /// Forwards `delivery` to the dead-letter topic, if there is one, retrying until the broker
    /// has it: the message may be acknowledged only then. False when shutdown came first: the
    /// message stays unacknowledged, and an at-least-once transport delivers it again. Later
    /// messages wait meanwhile, as acknowledgements go in order.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> bool {
        const FIRST_PAUSE: Duration = Duration::from_millis(100);
        const LONGEST_PAUSE: Duration = Duration::from_secs(10);
        let Some(topic) = self.dead_letter_topic.as_deref() else {
            return true;
        };
        let mut pause = FIRST_PAUSE;
        loop {
            match self
                .transport()
                .send(Outgoing::dead_letter(topic, delivery, reason))
                .await
            {
                Ok(()) => return true,
                Err(error) => {
                    tracing::error!(app = %self.runtime.name, topic, from = %delivery.topic, position = ?delivery.position, %error, retry_in = ?pause, "forwarding to the dead-letter topic failed; the message stays unacknowledged until it succeeds");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.runtime.shutdown.triggered() => {
                    tracing::warn!(app = %self.runtime.name, topic, from = %delivery.topic, position = ?delivery.position, "shutting down with a message neither handled nor dead-lettered; not acknowledged");
                    return false;
                }
            }
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}
