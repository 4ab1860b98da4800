//! Whether a run is ready: every application set up and every socket ready as its transport
//! sees it (subscribed and connected; on Kafka, the consumer assigned its partitions). For
//! programs and tests that must wait for "subscribed" instead of sleeping, and for
//! orchestrators' readiness probes.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::socket::ReadySignal;

/// The readiness of a [`crate::DistributedApplication`]'s run: cheap to clone; get it with
/// [`crate::DistributedApplication::readiness`] before the run starts.
///
/// # Examples
///
/// Wait until the consumers are subscribed instead of sleeping:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use spa_dat::{DistributedApplication, SpaMessage};
///
/// async fn log(message: SpaMessage) {
///     println!("{}", message.topic);
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spa_dat::Result<()> {
/// let app = DistributedApplication::new()
///     .socket_provider(Arc::new(MemorySocketProvider::new(MemoryBus::new("ready-doc"))))
///     .add_consumer("log", ["events"], log)
///     .watch_signals(false);
/// let readiness = app.readiness();
/// let shutdown = app.shutdown_handle();
/// assert!(!readiness.is_ready());
/// let run = tokio::spawn(app.start_async());
///
/// tokio::time::timeout(Duration::from_secs(10), readiness.ready()).await.expect("ready in time");
/// assert!(readiness.is_ready() && readiness.not_ready().is_empty());
///
/// shutdown.trigger();
/// run.await.expect("not panicked")?;
/// assert!(!readiness.is_ready());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    /// Every application was set up, and the run has not ended.
    running: bool,
    apps: Vec<(String, ReadySignal)>,
}

impl Readiness {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every application is set up and every socket ready.
    pub fn is_ready(&self) -> bool {
        let state = self.lock();
        state.running && state.apps.iter().all(|(_, signal)| signal.is_ready())
    }

    /// What keeps the run from being ready: `"not running"` (starting or stopped), or the
    /// applications whose sockets are not ready.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::DistributedApplication;
    ///
    /// let readiness = DistributedApplication::new().readiness();
    /// // Before the run starts:
    /// assert_eq!(readiness.not_ready(), ["not running"]);
    /// ```
    pub fn not_ready(&self) -> Vec<String> {
        let state = self.lock();
        if !state.running {
            return vec!["not running".to_owned()];
        }
        state
            .apps
            .iter()
            .filter(|(_, signal)| !signal.is_ready())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Waits until the run is ready.
    pub async fn ready(&self) {
        loop {
            // Registered before checking, so a change in between is not missed.
            let started = self.changed.notified();
            let receivers: Vec<_> = self
                .lock()
                .apps
                .iter()
                .map(|(_, signal)| signal.subscribe())
                .collect();
            if self.is_ready() {
                return;
            }
            let mut changes: Vec<_> = receivers
                .into_iter()
                .map(|mut receiver| Box::pin(async move { receiver.changed().await }))
                .collect();
            if changes.is_empty() {
                started.await;
                continue;
            }
            tokio::select! {
                _ = started => {}
                _ = futures_util::future::select_all(changes.iter_mut()) => {}
            }
        }
    }

    /// The run set up every application: from now on their sockets decide.
    pub(crate) fn running(&self, apps: Vec<(String, ReadySignal)>) {
        {
            let mut state = self.lock();
            state.apps = apps;
            state.running = true;
        }
        self.changed.notify_waiters();
    }

    /// The run is stopping.
    pub(crate) fn stopped(&self) {
        self.lock().running = false;
        self.changed.notify_waiters();
    }
}
