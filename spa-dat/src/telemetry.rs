//! Tracing on the OpenTelemetry messaging conventions (v1.41), and one trace across services.
//!
//! spa-dat opens a `tracing` span per publish (`send {topic}`, kind producer) and per handled
//! message (`process {topic}`, kind consumer, covering its retries, reply and dead letter),
//! at DEBUG, with the conventions' attributes (`messaging.system`,
//! `messaging.destination.name`, `messaging.destination.partition.id`, `messaging.kafka.offset`,
//! `messaging.consumer.group.name`, `messaging.message.body.size`, `messaging.client.id`,
//! `messaging.message.conversation_id` for requests and replies). They go wherever the
//! program's `tracing` subscriber sends them; with nothing listening at DEBUG they cost nothing.
//!
//! With the `opentelemetry` feature and a tracing-opentelemetry layer in the subscriber (or
//! [`init`], feature `otlp`), the spans become OpenTelemetry spans and their context crosses
//! the bus as W3C trace context: [`TRACEPARENT`] / [`TRACESTATE`] in Kafka headers and, for
//! transports without headers (MQTT 3.1.1) and Python peers, as two extra keys of the envelope
//! (Python spa-dat 0.4.0 ignores keys it does not know). A consumer's `process` span is the
//! child of the producer's `send` span and links to it, so a request, its handling and its
//! reply are one trace — across Rust and Python services, Kafka and MQTT.

use std::sync::Arc;

use crate::socket::headers::{self, Headers};
use crate::socket::Delivery;

/// The W3C `traceparent` key: in Kafka headers and in the envelope.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` key: in Kafka headers and in the envelope.
pub const TRACESTATE: &str = "tracestate";

/// W3C trace context as a message carries it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-{trace id}-{parent span id}-{flags}`.
    pub traceparent: String,
    /// Vendor-specific trace state, if any.
    pub tracestate: Option<String>,
}

/// The attributes every span of one application's socket carries.
#[derive(Debug, Clone)]
pub(crate) struct SpanScope {
    inner: Arc<ScopeInner>,
}

#[derive(Debug)]
struct ScopeInner {
    app: Arc<str>,
    system: &'static str,
    client_id: Arc<str>,
    group: Option<Arc<str>>,
}

impl SpanScope {
    /// Spans for application `app` on `system`, as `client_id`, in consumer `group`.
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
            }),
        }
    }

    /// Spans of a socket used outside an application.
    pub(crate) fn detached() -> Self {
        SpanScope::new(Arc::from(""), "other", "", None)
    }

    /// The span of one publish of `size` bytes to `topic`; `conversation` is a request's or a
    /// reply's correlation id.
    pub(crate) fn send(
        &self,
        topic: &str,
        size: usize,
        conversation: Option<&str>,
    ) -> tracing::Span {
        let scope = &*self.inner;
        // DEBUG, as the process span: see there.
        tracing::debug_span!(
            "send",
            otel.name = %format_args!("send {topic}"),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            messaging.system = scope.system,
            messaging.operation.type = "send",
            messaging.operation.name = "send",
            messaging.destination.name = %topic,
            messaging.message.body.size = i64::try_from(size).unwrap_or(i64::MAX),
            messaging.message.conversation_id = conversation,
            messaging.client.id = %scope.client_id,
            spa.app = %scope.app,
        )
    }

    /// The span of handling `delivery`, the child of the span that sent it (where its trace
    /// context came along).
    pub(crate) fn process(
        &self,
        delivery: &Delivery,
        carried: Option<&TraceContext>,
    ) -> tracing::Span {
        let scope = &*self.inner;
        // DEBUG, as tower-http's request spans: an INFO span per message halves a consumer's
        // throughput under a typical `info` filter (measured on Kafka: 0.62× raw).
        let span = tracing::debug_span!(
            "process",
            otel.name = %format_args!("process {}", delivery.topic),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            messaging.system = scope.system,
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %delivery.topic,
            messaging.destination.partition.id = delivery.position.map(|p| tracing::field::display(p.partition)),
            messaging.kafka.offset = delivery.position.map(|p| p.offset),
            messaging.consumer.group.name = scope.group.as_deref(),
            messaging.message.body.size = i64::try_from(delivery.payload.len()).unwrap_or(i64::MAX),
            messaging.message.conversation_id = delivery.headers.get(headers::CORRELATION_ID),
            messaging.client.id = %scope.client_id,
            spa.app = %scope.app,
        );
        follow(&span, &delivery.headers, carried);
        span
    }
}

/// Marks `span` failed, with `reason`.
pub(crate) fn failed(span: &tracing::Span, reason: &dyn std::fmt::Display) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", tracing::field::display(reason));
}

/// The trace context of the current span, to send along with a message; `None` when there is
/// no OpenTelemetry span (no layer, the span disabled, or the feature off).
pub(crate) fn current() -> Option<TraceContext> {
    #[cfg(feature = "opentelemetry")]
    {
        otel::current()
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        None
    }
}

/// Writes `context` into `headers` (the standard place on transports that have headers).
pub(crate) fn write_headers(context: &TraceContext, headers: &mut Headers) {
    headers.insert(TRACEPARENT, context.traceparent.as_str());
    if let Some(state) = &context.tracestate {
        headers.insert(TRACESTATE, state.as_str());
    }
}

/// Makes `span` the child of the context that came with a message, in its headers or else in
/// its envelope, and links it to that context.
fn follow(span: &tracing::Span, headers: &Headers, carried: Option<&TraceContext>) {
    #[cfg(feature = "opentelemetry")]
    otel::follow(span, headers, carried);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, headers, carried);
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{Headers, TraceContext, TRACEPARENT, TRACESTATE};

    pub(super) fn current() -> Option<TraceContext> {
        let span = tracing::Span::current();
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
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

    pub(super) fn follow(span: &tracing::Span, headers: &Headers, carried: Option<&TraceContext>) {
        if span.is_disabled() {
            return;
        }
        let carrier = match headers.get(TRACEPARENT) {
            Some(traceparent) => Carrier {
                traceparent: Some(traceparent.to_owned()),
                tracestate: headers.get(TRACESTATE).map(str::to_owned),
            },
            None => match carried {
                Some(context) => Carrier {
                    traceparent: Some(context.traceparent.clone()),
                    tracestate: context.tracestate.clone(),
                },
                None => return,
            },
        };
        let parent = TraceContextPropagator::new().extract(&carrier);
        let linked = parent.span().span_context().clone();
        if !linked.is_valid() {
            // Malformed trace context is ignored, never a reason to refuse a message.
            return;
        }
        // Fails only without a tracing-opentelemetry layer: then there is nothing to join.
        let _ = span.set_parent(parent);
        span.add_link(linked);
    }

    /// The two W3C keys, as the propagator reads and writes them.
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

    impl Extractor for Carrier {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                TRACEPARENT => self.traceparent.as_deref(),
                TRACESTATE => self.tracestate.as_deref(),
                _ => None,
            }
        }

        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT, TRACESTATE]
        }
    }
}

/// What [`init`] installed: flushes and shuts the exporter down when dropped (keep it alive
/// until the program ends, e.g. `let _telemetry = spa_dat::telemetry::init()?;` in `main`).
#[cfg(feature = "otlp")]
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

/// Installs the global `tracing` subscriber: log lines on stderr, filtered by `RUST_LOG`
/// (default `info`), and spans exported over OTLP (HTTP/protobuf) — spa-dat's at DEBUG and
/// everything `RUST_LOG` lets through, filtered by `SPA_DAT_TRACE_FILTER` (default
/// `spa_dat=debug,info`).
///
/// The exporter is configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; default `http://localhost:4318`),
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`. The
/// W3C trace-context propagator becomes the global one.
///
/// Programs with a subscriber of their own add `tracing_opentelemetry::layer()` with their
/// tracer instead; spa-dat's propagation works with any such layer.
#[cfg(feature = "otlp")]
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
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let trace_filter = EnvFilter::try_from_env("SPA_DAT_TRACE_FILTER")
        .unwrap_or_else(|_| EnvFilter::new("spa_dat=debug,info"));
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
