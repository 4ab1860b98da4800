//! Testing an application without a broker and without sleeps: [`TestRun`] runs a
//! [`DistributedApplication`] on an in-process bus of its own (or the fault-injecting bus over
//! it), publishes and requests into it, waits until everything published so far is finished
//! with — handled, replied to, dead-lettered, and whatever handlers published in turn — and
//! shows what the application published.
//!
//! A handler is also a plain async fn: call it with its arguments in a unit test
//! (`record(Json(order), State(Arc::new(stats))).await`). `TestRun` is for what happens
//! between handlers: routing, replies, dead letters, retries, ordering.
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use spa_dat::testing::TestRun;
//! use spa_dat::{DistributedApplication, Json, SpaMessage, State};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { total: u64 }
//!
//! #[derive(Default)]
//! struct Sales { total: AtomicU64 }
//!
//! async fn record(Json(order): Json<Order>, sales: State<Sales>) -> spa_dat::Result<()> {
//!     if order.total == 0 {
//!         return Err(spa_dat::Error::rejected("an empty order"));
//!     }
//!     sales.total.fetch_add(order.total, Ordering::Relaxed);
//!     Ok(())
//! }
//!
//! async fn total(sales: State<Sales>) -> String {
//!     sales.total.load(Ordering::Relaxed).to_string()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> spa_dat::Result<()> {
//! let app = DistributedApplication::new()
//!     .without_registered_handlers() // only what this test adds
//!     .state(Sales::default())
//!     .add_application(spa_dat::Application::consumer("record", ["orders"], record).dead_letter_topic("orders/dead"))
//!     .add_consumer("total", ["sales/total"], total);
//! let run = TestRun::start(app).await?;
//!
//! run.publish_json("orders", &serde_json::json!({ "total": 12 })).await?;
//! run.publish_json("orders", &serde_json::json!({ "total": 0 })).await?;
//! run.settled().await?; // both handled: one recorded, one dead-lettered
//!
//! let reply = run.request(SpaMessage::new("sales/total", "")).await?;
//! assert_eq!(reply.payload_str()?, "12");
//! assert_eq!(run.published("orders/dead").len(), 1);
//! run.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::app::DistributedApplication;
use crate::error::{Error, Result};
use crate::message::envelope::{MessageBuilder, SpaMessage};
use crate::runtime::{Shutdown, Socket, Stopped};
use crate::socket::faults::{FaultLog, Faults, FaultyProvider};
use crate::socket::memory::{MemoryBus, MemorySocketProvider};
use crate::socket::spi::{SocketOptions, SocketProvider};
use crate::socket::{topic_matches, Pending, WireFormat};

enum Run {
    Running(JoinHandle<Result<Stopped>>),
    Ended(Result<Stopped>),
}

/// A message the recorder saw, with the topic it was published on.
type Published = (Arc<str>, SpaMessage);

/// What a test waited for and did not get.
fn not_in_time(reason: String) -> Error {
    Error::Runtime {
        reason,
        source: None,
    }
}

/// How long [`TestRun`]'s waits last before they fail (start, settle, request, stop).
pub const TEST_LIMIT: Duration = Duration::from_secs(10);

/// A [`DistributedApplication`] running inside a test, on an in-process bus of its own.
///
/// Every wait it offers ends: with what was awaited, or with an error after [`TEST_LIMIT`]
/// saying what did not happen. See the [module docs](self).
pub struct TestRun {
    /// The run, or how it ended when it ended before it was ready (producers only).
    run: Run,
    shutdown: Shutdown,
    client: Socket,
    /// Each message with the topic it was published on (a dead letter's envelope names the
    /// topic it first came on).
    published: Arc<Mutex<Vec<Published>>>,
    pending: Arc<Pending>,
    bus: MemoryBus,
    faults: Option<Arc<FaultLog>>,
}

impl std::fmt::Debug for TestRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRun")
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

impl TestRun {
    /// Runs `app` on a new in-process bus of its own (its configured bus is replaced; signals
    /// are not watched), and returns once every application is ready (subscribed) — or has
    /// already ended, for an application of producers only. The rest of its configuration is
    /// its own: `.config(Config::default())` keeps the environment's (`SPA_DAT_*`, e.g. a
    /// health port two parallel runs would share) out of the test.
    ///
    /// `app` runs what it was given: `DistributedApplication::new()` includes every
    /// `#[consumer]` / `#[producer]` of the test binary; `.without_registered_handlers()`
    /// leaves only what the test adds.
    ///
    /// # Errors
    /// The run's own error if it fails to start (a missing state, a bad topic), or a timeout
    /// after [`TEST_LIMIT`].
    pub async fn start(app: DistributedApplication) -> Result<Self> {
        Self::start_on(app, None).await
    }

    /// [`TestRun::start`] on the fault-injecting bus over the test's own in-process bus:
    /// duplicates, redeliveries, lost and delayed acknowledgements as `faults` says (see
    /// [`crate::socket::faults`]).
    ///
    /// # Errors
    /// As [`TestRun::start`].
    pub async fn start_with_faults(app: DistributedApplication, faults: Faults) -> Result<Self> {
        Self::start_on(app, Some(faults)).await
    }

    async fn start_on(app: DistributedApplication, faults: Option<Faults>) -> Result<Self> {
        let bus = MemoryBus::new(format!("test-{}", uuid::Uuid::new_v4()));
        let memory: Arc<dyn SocketProvider> = Arc::new(MemorySocketProvider::new(bus.clone()));
        let (provider, faults): (Arc<dyn SocketProvider>, _) = match faults {
            Some(faults) => {
                let faulty = FaultyProvider::new(Arc::clone(&memory), faults);
                let log = faulty.log();
                (Arc::new(faulty), Some(log))
            }
            None => (Arc::clone(&memory), None),
        };
        let app = app.watch_signals(false).socket_provider(provider);
        let shutdown = app.shutdown_handle();
        let pending = Arc::clone(shutdown.pending());
        // What the application publishes, recorded before anything runs; counted with the
        // run's own deliveries, so that `settled` waits for the record too.
        let spy = memory
            .connect(SocketOptions::new("spa-dat-test-recorder").topics(["#"]))
            .await?;
        spy.inbox.drain_into(&pending);
        let published = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&published);
        let mut inbox = spy.inbox;
        let spy_socket = spy.socket;
        tokio::spawn(async move {
            let _open = spy_socket;
            while let Some(delivery) = inbox.recv().await {
                let message = delivery.message(WireFormat::Envelope).unwrap_or_else(|_| {
                    SpaMessage::new(delivery.topic.to_string(), delivery.payload.clone())
                });
                record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((Arc::clone(&delivery.topic), message));
            }
        });
        let client = memory
            .connect(SocketOptions::new("spa-dat-test-client"))
            .await?;
        let client = Socket::new(
            client.socket,
            MessageBuilder::new(Some("spa-dat-test-client"), Some("test")),
            TEST_LIMIT,
        );
        let readiness = app.readiness();
        let mut running = tokio::spawn(app.start_async());
        let ready = tokio::time::timeout(TEST_LIMIT, async {
            tokio::select! {
                () = readiness.ready() => Ok(None),
                // Producers only, done before anyone asked: a run, ended well.
                ended = &mut running => match ended {
                    Ok(Ok(stopped)) => Ok(Some(stopped)),
                    Ok(Err(error)) => Err(error),
                    Err(join) => Err(not_in_time(format!("the application's run panicked: {join}"))),
                },
            }
        })
        .await;
        match ready {
            Ok(Ok(ended)) => Ok(TestRun {
                run: match ended {
                    Some(stopped) => Run::Ended(Ok(stopped)),
                    None => Run::Running(running),
                },
                shutdown,
                client,
                published,
                pending,
                bus,
                faults,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => {
                shutdown.trigger();
                Err(not_in_time(format!(
                    "the application was not ready within {TEST_LIMIT:?}: {:?}",
                    readiness.not_ready()
                )))
            }
        }
    }

    /// Publishes `message` into the application, as another service would.
    ///
    /// # Errors
    /// As [`Socket::publish`].
    pub async fn publish(&self, message: SpaMessage) -> Result<()> {
        self.client.publish(message).await
    }

    /// Publishes `value` as JSON on `topic`.
    ///
    /// # Errors
    /// As [`Socket::publish_json`].
    pub async fn publish_json<T: Serialize + ?Sized>(&self, topic: &str, value: &T) -> Result<()> {
        self.client.publish_json(topic, value).await
    }

    /// Publishes `message` with a key (consumers ordering by key).
    ///
    /// # Errors
    /// As [`Socket::publish_keyed`].
    pub async fn publish_keyed(
        &self,
        key: impl Into<bytes::Bytes>,
        message: SpaMessage,
    ) -> Result<()> {
        self.client.publish_keyed(key, message).await
    }

    /// Sends `message` as a request and returns the reply.
    ///
    /// # Errors
    /// [`Error::RequestTimeout`] when no reply comes within [`TEST_LIMIT`].
    pub async fn request(&self, message: SpaMessage) -> Result<SpaMessage> {
        self.client.request_with_timeout(message, TEST_LIMIT).await
    }

    /// The test's socket on the bus, for what the other methods do not cover (a batch
    /// publish, a request with a timeout of its own). What it subscribes to is not read: to
    /// watch a topic, use [`TestRun::published`], or connect a socket of your own to
    /// [`TestRun::bus`].
    pub fn socket(&self) -> &Socket {
        &self.client
    }

    /// What the fault-injecting bus injected so far ([`TestRun::start_with_faults`]).
    pub fn faults(&self) -> Option<&FaultLog> {
        self.faults.as_deref()
    }

    /// The test's bus (to connect more sockets to it).
    pub fn bus(&self) -> &MemoryBus {
        &self.bus
    }

    /// Waits until every message published so far is finished with: handled (or dead-lettered,
    /// or dropped as bad input), with everything handlers published meanwhile — replies, dead
    /// letters, messages to other consumers — finished with too, and recorded for
    /// [`TestRun::published`]. No sleep: the bus counts what it delivered and is not yet done.
    ///
    /// What is not published yet is not waited for: a producer still running, or a task a
    /// handler spawned, may publish after `settled` returns.
    ///
    /// # Errors
    /// After [`TEST_LIMIT`], how many messages are still unfinished (a handler that hangs, a
    /// retry that waits longer).
    pub async fn settled(&self) -> Result<()> {
        self.settled_within(TEST_LIMIT).await
    }

    /// [`TestRun::settled`], failing after `limit`.
    ///
    /// # Errors
    /// After `limit`, how many messages are still unfinished.
    pub async fn settled_within(&self, limit: Duration) -> Result<()> {
        tokio::time::timeout(limit, self.pending.emptied())
            .await
            .map_err(|_| {
                not_in_time(format!(
                    "{} messages still unfinished after {limit:?}",
                    self.pending.count()
                ))
            })
    }

    /// What was published on topics matching `filter` (MQTT-style `+` and `#`), by the
    /// application or the test, in order — including replies and dead letters (a dead letter
    /// is the message as it came, its `topic` the one it came on). Call
    /// [`TestRun::settled`] first to see everything published so far.
    pub fn published(&self, filter: &str) -> Vec<SpaMessage> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(topic, _)| topic_matches(filter, topic))
            .map(|(_, message)| message.clone())
            .collect()
    }

    /// Stops the application as a shutdown would (what it holds is finished first, within the
    /// grace period) and returns how it stopped.
    ///
    /// # Errors
    /// The run's error, or a timeout after twice [`TEST_LIMIT`] (the default grace period is
    /// 10 s).
    pub async fn stop(self) -> Result<Stopped> {
        self.shutdown.trigger();
        self.join().await
    }

    /// Waits until the application stops by itself (its producers end the run, a handler
    /// triggers shutdown).
    ///
    /// # Errors
    /// As [`TestRun::stop`].
    pub async fn stopped(self) -> Result<Stopped> {
        self.join().await
    }

    async fn join(mut self) -> Result<Stopped> {
        let run = match &mut self.run {
            Run::Running(run) => run,
            Run::Ended(ended) => {
                return std::mem::replace(ended, Ok(Stopped::Finished));
            }
        };
        match tokio::time::timeout(TEST_LIMIT * 2, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(not_in_time(format!(
                "the application's run panicked: {join}"
            ))),
            Err(_) => Err(not_in_time(format!(
                "the application did not stop within {:?}",
                TEST_LIMIT * 2
            ))),
        }
    }
}

/// A run dropped without [`TestRun::stop`] (a failed assertion) is stopped, not left running
/// into the next test.
impl Drop for TestRun {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
