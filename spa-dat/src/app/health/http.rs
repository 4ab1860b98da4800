//! The one HTTP server spa-dat runs, for the health probes (feature `probes`) and the
//! Prometheus endpoint (feature `prometheus`): both on one port when `health_addr` and
//! `metrics_addr` are the same, else one server each.
//!
//! Anyone who can reach the port is a client, so a client must not be able to exhaust the
//! process's file descriptors (after which MQTT and Kafka cannot reconnect either):
//! - a connection that has not sent a whole request header within `http_timeout_ms` — from
//!   its start, and again between requests when kept alive — is closed (hyper's
//!   `header_read_timeout`), and none lives longer than [`MAX_CONNECTION_LIFETIME`];
//! - at most `http_max_connections` are served at once. Over the cap the server *waits
//!   without accepting*: a waiting connection sits in the kernel's accept queue and costs no
//!   descriptor of ours, where accepting and closing it would spend one (and a syscall pair)
//!   per attempt, and would reset a kubelet's probe that a few hundred milliseconds of waiting
//!   would have answered;
//! - a failing `accept` (`EMFILE`: descriptors exhausted by something else) is retried after
//!   10 ms, doubling to 1 s, logged once per burst — hyper 0.14 and `axum::serve` sleep 1 s
//!   after such an error for the same reason; the old loop here retried at once and spun a
//!   core. Errors of one connection (reset, aborted) are retried at once, as axum does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::readiness::Readiness;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::runtime::Shutdown;

/// The longest a connection is served, however busy: a client cannot keep a slot forever by
/// sending a request every few seconds.
pub(crate) const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The first pause after a failed `accept`; it doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause after failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// What a connection may buffer: requests to these endpoints are a line and a few headers.
const MAX_BUFFER: usize = 16 * 1024;

/// What one server answers.
#[derive(Clone, Default)]
struct Endpoints {
    /// `/health/live` and `/health/ready`.
    #[cfg(feature = "probes")]
    readiness: Option<Readiness>,
    /// `/metrics`.
    #[cfg(feature = "prometheus")]
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Endpoints {
    fn paths(&self) -> Vec<&'static str> {
        let mut paths = Vec::new();
        #[cfg(feature = "probes")]
        if self.readiness.is_some() {
            paths.extend(["/health/live", "/health/ready"]);
        }
        #[cfg(feature = "prometheus")]
        if self.metrics.is_some() {
            paths.push("/metrics");
        }
        paths
    }

    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        #[cfg(feature = "probes")]
        if let Some(readiness) = &self.readiness {
            if let Some((status, body)) = super::probes::answer(path, readiness) {
                return text(status, body);
            }
        }
        #[cfg(feature = "prometheus")]
        if let (Some(metrics), "/metrics") = (&self.metrics, path) {
            let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return response;
        }
        let _ = path;
        text(StatusCode::NOT_FOUND, "not found\n".to_owned())
    }
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// How each server treats its connections (see the module documentation).
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    max_connections: usize,
}

/// Starts the servers `config` asks for (`health_addr`, `metrics_addr`), installing the
/// Prometheus recorder for the latter; they run until `shutdown`.
pub(crate) async fn serve_configured(
    config: &Config,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> Result<()> {
    let limits = Limits {
        header_timeout: Duration::from_millis(config.http_timeout_ms),
        max_connections: config.http_max_connections,
    };
    let mut servers: Vec<(SocketAddr, &str, Endpoints)> = Vec::new();
    #[cfg(feature = "probes")]
    if let Some(addr) = &config.health_addr {
        endpoints_at(&mut servers, "health_addr", addr)?.readiness = Some(readiness.clone());
    }
    #[cfg(feature = "prometheus")]
    if let Some(addr) = &config.metrics_addr {
        let endpoints = endpoints_at(&mut servers, "metrics_addr", addr)?;
        let handle = crate::metrics::install_prometheus(addr)?;
        tokio::spawn(prometheus_upkeep(handle.clone(), shutdown.clone()));
        endpoints.metrics = Some(handle);
    }
    let _ = readiness;
    for (socket, addr, endpoints) in servers {
        serve(socket, addr, endpoints, limits, shutdown.clone()).await?;
    }
    Ok(())
}

/// What would stop [`serve_configured`] from serving: an address that is not `host:port`, or
/// one it cannot bind (taken, not this machine's) — for the deployment check, which binds
/// each and lets it go at once.
pub(crate) fn check_addresses(config: &Config) -> Vec<crate::error::Error> {
    let configured = [
        ("health_addr", &config.health_addr),
        ("metrics_addr", &config.metrics_addr),
    ];
    let mut problems = Vec::new();
    let mut bound: Vec<SocketAddr> = Vec::new();
    // Held until every address was tried, as the run holds the first while binding the next.
    let mut listeners = Vec::new();
    for (key, addr) in configured {
        let Some(addr) = addr else { continue };
        match parse_addr(key, addr) {
            // One server for both when they are the same address.
            Ok(socket) if bound.contains(&socket) => {}
            Ok(socket) => match std::net::TcpListener::bind(socket) {
                Ok(listener) => {
                    listeners.push(listener);
                    bound.push(socket);
                }
                Err(e) => problems.push(Error::config(format!(
                    "{key} `{addr}` cannot be served: {e}"
                ))),
            },
            Err(error) => problems.push(error),
        }
    }
    problems
}

/// The exporter's periodic upkeep (draining histograms), every 5 s as its own listener did,
/// until `shutdown`.
#[cfg(feature = "prometheus")]
async fn prometheus_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: Shutdown,
) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.triggered() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// The endpoints to serve at `addr` (the setting `key`): one server per distinct address.
fn endpoints_at<'s, 'a>(
    servers: &'s mut Vec<(SocketAddr, &'a str, Endpoints)>,
    key: &str,
    addr: &'a str,
) -> Result<&'s mut Endpoints> {
    let socket = parse_addr(key, addr)?;
    let index = match servers.iter().position(|(known, _, _)| *known == socket) {
        Some(index) => index,
        None => {
            servers.push((socket, addr, Endpoints::default()));
            servers.len() - 1
        }
    };
    Ok(&mut servers[index].2)
}

fn parse_addr(key: &str, addr: &str) -> Result<SocketAddr> {
    addr.parse()
        .map_err(|e| Error::config(format!("{key} `{addr}` is not host:port: {e}")))
}

/// Serves `endpoints` on `socket` until `shutdown`; returns once it listens.
async fn serve(
    socket: SocketAddr,
    addr: &str,
    endpoints: Endpoints,
    limits: Limits,
    shutdown: Shutdown,
) -> Result<()> {
    let paths = endpoints.paths().join(", ");
    let listener = tokio::net::TcpListener::bind(socket)
        .await
        .map_err(|e| Error::runtime(format!("cannot serve {paths} on {addr}: {e}")).caused_by(e))?;
    let local = listener.local_addr().map_or(socket, |local| local);
    tracing::info!(addr = %local, %paths, "serving HTTP");
    let endpoints = Arc::new(endpoints);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            // A slot first: over the cap, connections wait in the kernel's queue.
            let slot = tokio::select! {
                _ = shutdown.triggered() => break,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = shutdown.triggered() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    backoff.succeeded(local);
                    stream
                }
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    let pause = backoff.failed(local, &error);
                    tokio::select! {
                        _ = shutdown.triggered() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            let endpoints = Arc::clone(&endpoints);
            tokio::spawn(async move {
                let _slot = slot;
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let response = endpoints.answer(request.uri().path());
                        async move { Ok::<_, Infallible>(response) }
                    });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .max_buf_size(MAX_BUFFER)
                    .serve_connection(TokioIo::new(stream), service);
                // Closed by the client, by the header timeout, or at the lifetime's end.
                let _ = tokio::time::timeout(MAX_CONNECTION_LIFETIME, connection).await;
            });
        }
    });
    Ok(())
}

/// An error of the one connection being accepted (it went away): try the next at once.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// The pause after failed `accept`s: 10 ms doubling to 1 s, reset by a success; logged at
/// the first failure of a burst and when accepting works again.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u64,
    pause: Duration,
}

impl AcceptBackoff {
    fn failed(&mut self, addr: SocketAddr, error: &std::io::Error) -> Duration {
        if self.failures == 0 {
            tracing::error!(%addr, %error, "cannot accept HTTP connections (out of file descriptors?); retrying after 10 ms, doubling to 1 s (logged once until it works again)");
        }
        self.failures += 1;
        self.pause = if self.pause.is_zero() {
            ACCEPT_BACKOFF_MIN
        } else {
            (self.pause * 2).min(ACCEPT_BACKOFF_MAX)
        };
        self.pause
    }

    fn succeeded(&mut self, addr: SocketAddr) {
        if self.failures > 0 {
            tracing::info!(%addr, failures = self.failures, "accepting HTTP connections again");
        }
        *self = AcceptBackoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
        let error = std::io::Error::other("EMFILE");
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<u64> = (0..9)
            .map(|_| backoff.failed(addr, &error).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded(addr);
        assert_eq!(backoff.failed(addr, &error), ACCEPT_BACKOFF_MIN);
    }
}
