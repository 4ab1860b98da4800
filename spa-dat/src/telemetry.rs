//! Tracing on the OpenTelemetry messaging conventions (v1.41), one trace across services.
//!
//! With the `opentelemetry` feature, spa-dat makes a span per publish (`send {topic}`, kind
//! producer) and per handled message (`process {topic}`, kind consumer, covering its retries,
//! its reply and its dead letter) with the global tracer provider's tracer, carrying the
//! conventions' attributes (`messaging.system`, `messaging.destination.name`,
//! `messaging.destination.partition.id`, `messaging.kafka.offset`,
//! `messaging.consumer.group.name`, `messaging.message.body.size`, `messaging.client.id`,
//! `messaging.message.conversation_id` for requests and replies, and `spa.app`).
//!
//! Their context crosses the bus as W3C trace context: [`crate::message::TRACEPARENT`] /
//! [`crate::message::TRACESTATE`] in
//! Kafka headers and, for transports without headers (MQTT 3.1.1) and for Python peers, as
//! two extra keys of the envelope (Python spa-dat 0.4.0 ignores keys it does not know). A
//! `process` span is the child of the `send` span of the message it handles and links to it,
//! so a request, its handling and its reply are one trace — across Rust and Python services,
//! Kafka and MQTT. A handler runs with its `process` span current: its own spans (through the
//! OpenTelemetry API, or `tracing` spans bridged by tracing-opentelemetry) are its children.
//!
//! Spans are OpenTelemetry's own, not `tracing` spans, so that the sampler decides before
//! anything is built: a span it drops costs no attribute, no name, no export. Until [`enable`]
//! (or `init()`) is called, or without the feature, spa-dat makes no span and carries no
//! context — as metrics, tracing is off until switched on; the `tracing` DEBUG span per message
//! that gives log lines their `app` and `topic` stays as it was.
//!
//! `init()` (feature `otlp`) installs a provider exporting over OTLP and a `tracing`
//! subscriber, from the standard `OTEL_*` variables. A program that bridges `tracing` to
//! OpenTelemetry itself should keep `spa_dat`'s `tracing` spans out of that layer
//! (`spa_dat=off` in its filter): they are log context, and a producer's lives as long as its
//! application — bridged, it would make every message the producer sends one trace.

use std::sync::Arc;

use crate::message::{TraceContext, TRACEPARENT, TRACESTATE};
use crate::socket::headers::Headers;
use crate::socket::Delivery;

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes spa-dat's spans from now on, with the global tracer provider (install it first;
/// `init()` does both). Until then the per-message path makes no span and reads no trace
/// context: one relaxed load. Applications take the provider as it is when they start.
///
/// # Examples
///
/// ```
/// // With OpenTelemetry set up by the program itself (feature `opentelemetry`):
/// // opentelemetry::global::set_tracer_provider(my_provider);
/// spa_dat::telemetry::enable();
/// // ... then start the applications: their spans go to that provider.
/// ```
pub fn enable() {
    ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`enable`] was called (always false without the `opentelemetry` feature).
pub fn enabled() -> bool {
    cfg!(feature = "opentelemetry") && ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The attributes every span of one application's socket carries, and the tracer that makes
/// them.
#[derive(Clone)]
pub(crate) struct SpanScope {
    inner: Arc<ScopeInner>,
}

impl std::fmt::Debug for SpanScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanScope")
            .field("app", &self.inner.app)
            .field("system", &self.inner.system)
            .finish_non_exhaustive()
    }
}

// Read only by the OpenTelemetry spans.
#[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
struct ScopeInner {
    app: Arc<str>,
    system: &'static str,
    client_id: Arc<str>,
    group: Option<Arc<str>>,
    #[cfg(feature = "opentelemetry")]
    tracer: opentelemetry::global::BoxedTracer,
}

impl SpanScope {
    /// Spans for application `app` on `system`, as `client_id`, in consumer `group`, made by
    /// the global tracer provider's tracer as it is now (applications start after `main`
    /// installed one).
    pub(crate) fn new(
        app: Arc<str>,
        system: &'static str,
        client_id: &str,
        group: Option<&str>,
    ) -> Self {
        SpanScope {
            inner: Arc::new(ScopeInner {
                app,
                system,
                client_id: Arc::from(client_id),
                group: group.map(Arc::from),
                #[cfg(feature = "opentelemetry")]
                tracer: otel::tracer(),
            }),
        }
    }

    /// Spans of a socket used outside an application.
    pub(crate) fn detached() -> Self {
        SpanScope::new(Arc::from(""), "other", "", None)
    }

    /// The span of one publish of `size` bytes to `topic`, the child of the current span;
    /// `conversation` is a request's or a reply's correlation id. Encode the message inside
    /// it ([`Traced::in_scope`]): its trace context goes along.
    pub(crate) fn send(&self, topic: &str, size: usize, conversation: Option<&str>) -> Traced {
        if !enabled() {
            return Traced::default();
        }
        #[cfg(feature = "opentelemetry")]
        {
            otel::send(&self.inner, topic, size, conversation)
        }
        #[cfg(not(feature = "opentelemetry"))]
        {
            let _ = (topic, size, conversation);
            Traced {}
        }
    }

    /// The span of handling `delivery`: the child of the span that sent it, if its trace
    /// context came along (in its headers, or else `carried` in its envelope), linked to it.
    pub(crate) fn process(&self, delivery: &Delivery, carried: Option<&TraceContext>) -> Traced {
        if !enabled() {
            return Traced::default();
        }
        #[cfg(feature = "opentelemetry")]
        {
            otel::process(&self.inner, delivery, carried)
        }
        #[cfg(not(feature = "opentelemetry"))]
        {
            let _ = (delivery, carried);
            Traced {}
        }
    }
}

/// One OpenTelemetry span in flight (feature `opentelemetry`; nothing otherwise). It ends when
/// [`Traced::end`] is called or the last clone is dropped.
#[derive(Clone, Default)]
pub(crate) struct Traced {
    /// The context holding the span; `None` when there is no span (no tracer provider).
    #[cfg(feature = "opentelemetry")]
    context: Option<opentelemetry::Context>,
    /// The sampler kept the span: its status and end are recorded. An unsampled span only
    /// carries its (unsampled) trace context on.
    #[cfg(feature = "opentelemetry")]
    recording: bool,
}

impl Traced {
    /// Runs `f` with this span current: a message encoded there carries its context, spans
    /// started there are its children.
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "opentelemetry")]
        if let Some(context) = &self.context {
            let _attached = context.clone().attach();
            return f();
        }
        f()
    }

    /// `future`, with this span current whenever it is polled.
    pub(crate) fn scoped<F: std::future::Future>(
        &self,
        future: F,
    ) -> impl std::future::Future<Output = F::Output> {
        #[cfg(feature = "opentelemetry")]
        {
            use futures_util::future::Either;
            use opentelemetry::context::FutureExt;
            match &self.context {
                Some(context) => Either::Left(future.with_context(context.clone())),
                None => Either::Right(future),
            }
        }
        #[cfg(not(feature = "opentelemetry"))]
        {
            future
        }
    }

    /// Runs `operation` in this span (see [`Traced::scoped`]), marks the span failed if it
    /// fails, and ends it: a publish or a request, start to end.
    pub(crate) async fn run<T>(
        self,
        operation: impl std::future::Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        let result = self.scoped(operation).await;
        if let Err(error) = &result {
            self.failed(error);
        }
        self.end();
        result
    }

    /// Marks the span failed, with `reason`.
    pub(crate) fn failed(&self, reason: &dyn std::fmt::Display) {
        #[cfg(feature = "opentelemetry")]
        if let Some(context) = self.context.as_ref().filter(|_| self.recording) {
            use opentelemetry::trace::TraceContextExt;
            context
                .span()
                .set_status(opentelemetry::trace::Status::error(reason.to_string()));
        }
        #[cfg(not(feature = "opentelemetry"))]
        let _ = reason;
    }

    /// Ends the span now.
    pub(crate) fn end(self) {
        #[cfg(feature = "opentelemetry")]
        if let Some(context) = self.context.as_ref().filter(|_| self.recording) {
            use opentelemetry::trace::TraceContextExt;
            context.span().end();
        }
    }
}

/// The trace context to send along with a message published now: the current span's, if
/// there is one (feature `opentelemetry`).
pub(crate) fn current() -> Option<TraceContext> {
    #[cfg(feature = "opentelemetry")]
    {
        if enabled() {
            otel::current()
        } else {
            None
        }
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        None
    }
}

/// Writes `context` into `headers` (the standard place on transports that have headers), if it
/// has the W3C form: a trace context forwarded from an envelope is whatever its publisher wrote,
/// and a header of any size or character would travel (MQTT 5 refuses control characters and
/// values over 64 KiB).
pub(crate) fn write_headers(context: &TraceContext, headers: &mut Headers) {
    if !crate::message::is_traceparent(&context.traceparent) {
        return;
    }
    headers.insert_static(TRACEPARENT, context.traceparent.as_str());
    if let Some(state) = context
        .tracestate
        .as_deref()
        .filter(|s| crate::message::is_tracestate(s))
    {
        headers.insert_static(TRACESTATE, state);
    }
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::global::BoxedSpan;
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::{
        Link, Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, InstrumentationScope, KeyValue};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::{Delivery, Headers, ScopeInner, TraceContext, Traced, TRACEPARENT, TRACESTATE};
    use crate::socket::headers::CORRELATION_ID;

    /// spa-dat's tracer, from the global provider (a no-op one until a program installs one).
    pub(super) fn tracer() -> opentelemetry::global::BoxedTracer {
        opentelemetry::global::tracer_provider().tracer_with_scope(
            InstrumentationScope::builder("spa-dat")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
    }

    /// The context spans started now are children of. A `tracing` span bridged by
    /// tracing-opentelemetry is in it too: entering one makes its context current.
    fn parent() -> Context {
        Context::current()
    }

    /// The attributes every span of `scope` carries.
    fn common(scope: &ScopeInner, operation: &'static str, topic: &str) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(12);
        attributes.extend([
            KeyValue::new("messaging.system", scope.system),
            KeyValue::new("messaging.operation.type", operation),
            KeyValue::new("messaging.operation.name", operation),
            KeyValue::new("messaging.destination.name", topic.to_owned()),
            KeyValue::new("messaging.client.id", scope.client_id.to_string()),
            KeyValue::new("spa.app", scope.app.to_string()),
        ]);
        attributes
    }

    // Spans start with a static name and no attributes: a sampler that drops them costs no
    // allocation beyond the span itself. Name and attributes follow only for recorded spans.

    pub(super) fn send(
        scope: &ScopeInner,
        topic: &str,
        size: usize,
        conversation: Option<&str>,
    ) -> Traced {
        let parent = parent();
        let mut span = scope
            .tracer
            .span_builder("send")
            .with_kind(SpanKind::Producer)
            .start_with_context(&scope.tracer, &parent);
        let recording = span.is_recording();
        if recording {
            span.update_name(format!("send {topic}"));
            let mut attributes = common(scope, "send", topic);
            attributes.push(KeyValue::new(
                "messaging.message.body.size",
                i64::try_from(size).unwrap_or(i64::MAX),
            ));
            if let Some(id) = conversation {
                // A correlation id comes from outside: bounded as a label value is.
                attributes.push(KeyValue::new(
                    "messaging.message.conversation_id",
                    crate::topic::shortened_to(id, 256).to_string(),
                ));
            }
            span.set_attributes(attributes);
        }
        traced(parent, span, recording)
    }

    pub(super) fn process(
        scope: &ScopeInner,
        delivery: &Delivery,
        carried: Option<&TraceContext>,
    ) -> Traced {
        let parent = extract(&delivery.headers, carried);
        let producer = parent.span().span_context().clone();
        let mut builder = scope
            .tracer
            .span_builder("process")
            .with_kind(SpanKind::Consumer);
        if producer.is_valid() {
            builder = builder.with_links(vec![Link::with_context(producer)]);
        }
        let mut span = builder.start_with_context(&scope.tracer, &parent);
        let recording = span.is_recording();
        if recording {
            span.update_name(format!("process {}", delivery.topic));
            let mut attributes = common(scope, "process", &delivery.topic);
            attributes.push(KeyValue::new(
                "messaging.message.body.size",
                i64::try_from(delivery.payload.len()).unwrap_or(i64::MAX),
            ));
            if let Some(position) = delivery.position {
                attributes.push(KeyValue::new(
                    "messaging.destination.partition.id",
                    position.partition.to_string(),
                ));
                attributes.push(KeyValue::new("messaging.kafka.offset", position.offset));
            }
            if let Some(group) = &scope.group {
                attributes.push(KeyValue::new(
                    "messaging.consumer.group.name",
                    group.to_string(),
                ));
            }
            if let Some(id) = delivery.headers.get(CORRELATION_ID) {
                attributes.push(KeyValue::new(
                    "messaging.message.conversation_id",
                    id.to_owned(),
                ));
            }
            span.set_attributes(attributes);
        }
        traced(parent, span, recording)
    }

    /// `span` in a context of its own, unless it has no trace (a no-op tracer without a
    /// parent): then there is nothing to carry.
    fn traced(parent: Context, span: BoxedSpan, recording: bool) -> Traced {
        if !span.span_context().is_valid() {
            return Traced::default();
        }
        Traced {
            context: Some(parent.with_span(span)),
            recording,
        }
    }

    pub(super) fn current() -> Option<TraceContext> {
        let context = parent();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = Carrier::default();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        Some(TraceContext {
            traceparent: carrier.traceparent?,
            tracestate: carrier.tracestate.filter(|state| !state.is_empty()),
        })
    }

    /// The producer's context: from the headers, else from the envelope. Malformed context is
    /// ignored (a root span then), never a reason to refuse a message.
    fn extract(headers: &Headers, carried: Option<&TraceContext>) -> Context {
        // Borrowed: reading the context costs no copy of it per message.
        let incoming = match headers.get(TRACEPARENT) {
            Some(traceparent) => Incoming {
                traceparent,
                tracestate: headers.get(TRACESTATE),
            },
            None => match carried {
                Some(context) => Incoming {
                    traceparent: &context.traceparent,
                    tracestate: context.tracestate.as_deref(),
                },
                None => return Context::new(),
            },
        };
        TraceContextPropagator::new().extract(&incoming)
    }

    /// The two W3C keys of a message, as the propagator reads them.
    struct Incoming<'a> {
        traceparent: &'a str,
        tracestate: Option<&'a str>,
    }

    impl Extractor for Incoming<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                TRACEPARENT => Some(self.traceparent),
                TRACESTATE => self.tracestate,
                _ => None,
            }
        }

        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT, TRACESTATE]
        }
    }

    /// The two W3C keys, as the propagator writes them.
    #[derive(Default)]
    struct Carrier {
        traceparent: Option<String>,
        tracestate: Option<String>,
    }

    impl Injector for Carrier {
        fn set(&mut self, key: &str, value: String) {
            match key {
                TRACEPARENT => self.traceparent = Some(value),
                TRACESTATE => self.tracestate = Some(value),
                _ => {}
            }
        }
    }
}

/// What [`init`] installed: flushes and shuts the exporter down when dropped (keep it alive
/// until the program ends, e.g. `let _telemetry = spa_dat::telemetry::init()?;` in `main`).
#[cfg(feature = "otlp")]
#[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
#[must_use = "dropping it shuts the span exporter down"]
pub struct TelemetryGuard {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

#[cfg(feature = "otlp")]
impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard").finish_non_exhaustive()
    }
}

#[cfg(feature = "otlp")]
impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("spa-dat: shutting the OTLP span exporter down failed: {error}");
        }
    }
}

/// Installs OpenTelemetry for the program: a tracer provider exporting spans over OTLP
/// (HTTP/protobuf) in batches as the global provider — spa-dat's `send` and `process` spans
/// go there — with the W3C trace-context propagator, and a global `tracing` subscriber: log
/// lines on stderr filtered by `RUST_LOG` (default `info`), and the program's own `tracing`
/// spans bridged to OpenTelemetry (tracing-opentelemetry), filtered by `SPA_DAT_TRACE_FILTER`
/// (default `info,spa_dat=off`: spa-dat's spans are OpenTelemetry's own, its `tracing` spans are
/// for log lines).
///
/// The exporter is configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; default `http://localhost:4318`),
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
///
/// Call it before the applications start. Programs that set up OpenTelemetry themselves call
/// `opentelemetry::global::set_tracer_provider` and then [`enable`].
///
/// # Examples
///
/// ```no_run
/// use spa_dat::{DistributedApplication, Stopped};
///
/// fn main() -> spa_dat::Result<Stopped> {
///     // OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 OTEL_SERVICE_NAME=billing ./billing
///     let _telemetry = spa_dat::telemetry::init()?; // flushes the spans when dropped
///     DistributedApplication::run()
/// }
/// ```
#[cfg(feature = "otlp")]
#[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
pub fn init() -> crate::error::Result<TelemetryGuard> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| {
            crate::error::Error::runtime(format!("OTLP span exporter: {e}")).caused_by(e)
        })?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    opentelemetry::global::set_tracer_provider(provider.clone());
    enable();
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let trace_filter =
        // spa-dat's own `tracing` spans are log context (a producer's lives as long as the
        // application): bridged, they would make every message of a producer one trace.
        EnvFilter::try_from_env("SPA_DAT_TRACE_FILTER")
            .unwrap_or_else(|_| EnvFilter::new("info,spa_dat=off"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(log_filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("spa-dat"))
                .with_filter(trace_filter),
        )
        .try_init()
        .map_err(|e| {
            crate::error::Error::runtime(format!(
                "cannot install the tracing subscriber: {e} (one is installed already)"
            ))
        })?;
    Ok(TelemetryGuard { provider })
}
