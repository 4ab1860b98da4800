//! Health: whether an application is ready ([`Readiness`], from its sockets' ready signals and
//! its consumers' progress), the HTTP probes that report it, the HTTP server of the probes and
//! the Prometheus metrics, and the connection gauge that follows a socket's ready signal.

#[cfg(any(feature = "probes", feature = "prometheus"))]
pub(crate) mod http;
#[cfg(feature = "probes")]
mod probes;
mod readiness;

pub use readiness::Readiness;

/// Keeps the connection gauge of application `app` on `system` at what `ready` says, until
/// aborted.
pub(crate) async fn follow_connection(
    app: &str,
    system: &'static str,
    ready: crate::socket::ReadySignal,
) {
    let gauge = crate::metrics::ConnectionGauge::new(app, system);
    let mut changes = ready.subscribe();
    loop {
        gauge.set(*changes.borrow_and_update());
        if changes.changed().await.is_err() {
            return;
        }
    }
}
