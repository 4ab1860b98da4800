//! Shutdown: one handle to stop every application of a run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Asks running applications to stop: consumers take no new messages, in-flight handlers get
/// the grace period, resources are torn down, `run()` returns. Cheap to clone; injectable into
/// handlers (a producer can end the run when its work is done).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    /// Set before the token is cancelled: consumers check it per message, and the token's own
    /// check takes a lock.
    triggered: Arc<AtomicBool>,
}

impl Shutdown {
    /// A handle that nothing has triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests shutdown. Idempotent.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// Completes when shutdown is requested.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }
}

/// Triggers `shutdown` on Ctrl-C or SIGTERM. Logs and gives up if signals cannot be watched.
pub(crate) async fn on_signal(shutdown: Shutdown) {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot watch Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = terminate => tracing::info!("SIGTERM: shutting down"),
        _ = shutdown.triggered() => return,
    }
    shutdown.trigger();
}
