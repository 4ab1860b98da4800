//! Shutdown: one handle to stop every application of a run.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::socket::Pending;

use tokio_util::sync::CancellationToken;

/// Asks running applications to stop: consumers take no new messages, in-flight handlers get
/// the grace period, resources are torn down, `run()` returns. On the in-process bus, which
/// never delivers a message again, consumers first finish what was published before (the
/// drain: until every inbox is empty and every handler done, within the grace period); what
/// the grace period cuts off is counted and logged at WARN. Cheap to clone; injectable into
/// handlers (a producer can end the run when its work is done).
///
/// # Examples
///
/// ```
/// use spa_dat::{Shutdown, Stopped};
///
/// let shutdown = Shutdown::new();
/// let handle = shutdown.clone(); // clones stop the same run
/// assert!(!shutdown.is_triggered());
/// handle.trigger();
/// assert!(shutdown.is_triggered());
/// assert_eq!(shutdown.reason(), Some(Stopped::Requested));
/// ```
///
/// A producer that ends the run once its work is done:
///
/// ```
/// use spa_dat::{Shutdown, Socket};
///
/// async fn import(socket: Socket, shutdown: Shutdown) -> spa_dat::Result<()> {
///     for line in ["a", "b", "c"] {
///         socket.publish_json("imported", line).await?;
///     }
///     shutdown.trigger();
///     Ok(())
/// }
/// # let _ = spa_dat::Application::producer("import", import);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    /// Set before the token is cancelled: consumers check it per message, and the token's own
    /// check takes a lock.
    triggered: Arc<AtomicBool>,
    /// What asked first.
    reason: Arc<OnceLock<Stopped>>,
    /// When it was first asked: the grace period runs from here, once for the whole run.
    at: Arc<OnceLock<Instant>>,
    /// The run's in-process deliveries not yet finished with: what shutdown drains.
    pending: Arc<Pending>,
}

/// How a run ended: what [`crate::DistributedApplication::start`] returns when it stops
/// without an error. `fn main() -> spa_dat::Result<Stopped>` exits with success.
///
/// # Examples
///
/// ```no_run
/// use spa_dat::{DistributedApplication, Stopped};
///
/// fn main() -> spa_dat::Result<Stopped> {
///     let stopped = DistributedApplication::run()?;
///     if let Stopped::Signal(signal) = stopped {
///         eprintln!("stopped by {signal}");
///     }
///     Ok(stopped)
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// A signal: `"SIGINT"` (Ctrl-C) or `"SIGTERM"`.
    Signal(&'static str),
    /// [`Shutdown::trigger`] was called: by a handler, or through a shutdown handle.
    Requested,
    /// Every application ended on its own (producers done, consumers' sockets closed).
    Finished,
    /// Nothing ran: the AsyncAPI document was written (`SPA_DAT_ASYNCAPI`).
    Documented,
    /// Nothing ran: the configuration check passed (`SPA_DAT_CHECK`).
    Checked,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopped::Signal(signal) => write!(f, "stopped by {signal}"),
            Stopped::Requested => f.write_str("stopped: shutdown requested"),
            Stopped::Finished => f.write_str("stopped: every application finished"),
            Stopped::Documented => f.write_str("stopped: the AsyncAPI document was written"),
            Stopped::Checked => f.write_str("stopped: the configuration check passed"),
        }
    }
}

impl std::process::Termination for Stopped {
    fn report(self) -> std::process::ExitCode {
        std::process::ExitCode::SUCCESS
    }
}

impl Shutdown {
    /// A handle that nothing has triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests shutdown. Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::Shutdown;
    ///
    /// let shutdown = Shutdown::new();
    /// shutdown.trigger();
    /// shutdown.trigger(); // idempotent
    /// assert!(shutdown.is_triggered());
    /// ```
    pub fn trigger(&self) {
        self.trigger_because(Stopped::Requested);
    }

    /// Requests shutdown for `reason`; the first reason given is the one kept.
    pub(crate) fn trigger_because(&self, reason: Stopped) {
        let _ = self.reason.set(reason);
        let _ = self.at.set(Instant::now());
        self.triggered.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// When a grace period of `grace` ends: `grace` after shutdown was first requested (from
    /// now if it was not).
    pub(crate) fn deadline(&self, grace: Duration) -> Instant {
        let at = self.at.get().copied().unwrap_or_else(Instant::now);
        at.checked_add(grace)
            .unwrap_or(at + Duration::from_secs(86_400 * 365))
    }

    /// The run's in-process deliveries not yet finished with (see [`Pending`]).
    pub(crate) fn pending(&self) -> &Arc<Pending> {
        &self.pending
    }

    /// Why shutdown was requested, once it was.
    pub fn reason(&self) -> Option<Stopped> {
        self.reason.get().copied()
    }

    /// Whether shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// Completes when shutdown is requested.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use spa_dat::Shutdown;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let shutdown = Shutdown::new();
    /// let waiter = shutdown.clone();
    /// let task = tokio::spawn(async move {
    ///     waiter.triggered().await; // e.g. stop a background loop
    ///     "stopped"
    /// });
    /// shutdown.trigger();
    /// let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
    /// assert_eq!(ended.expect("in time").unwrap(), "stopped");
    /// # }
    /// ```
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
    let signal = tokio::select! {
        _ = ctrl_c => "SIGINT",
        _ = terminate => "SIGTERM",
        _ = shutdown.triggered() => return,
    };
    tracing::info!(signal, "shutting down");
    shutdown.trigger_because(Stopped::Signal(signal));
}
