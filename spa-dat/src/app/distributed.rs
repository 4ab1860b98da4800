//! [`DistributedApplication`]: every registered or added application, run together.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use tokio::task::JoinSet;

use super::application::{
    block_on_new_runtime, Application, ApplicationLifeCycle, RunDefaults, Settings,
};
use super::asyncapi::{self, ApiInfo};
use super::engine::guarded::panic_message;
use super::health::Readiness;
use super::resource::{Resource, ResourceSet};
use crate::config::{Config, SocketProviderFactory, ENV_ASYNCAPI, ENV_CHECK};
use crate::error::{Error, Result};
use crate::handler::call::Handler;
use crate::handler::registry::{self, Registration};
use crate::runtime::{on_signal, Extensions, RetryPolicy, Shutdown, Stopped};
use crate::socket::SocketProvider;

/// Runs applications together: the ones registered with `#[consumer]` / `#[producer]` and the
/// ones added with [`DistributedApplication::add_application`].
///
/// Start-up: check every handler's arguments (before any socket connects) → set up shared
/// resources → set up each application (socket, its resources) → run each as a task.
/// Shutdown (Ctrl-C, SIGTERM, [`Shutdown::trigger`], or every application done): consumers
/// take no new messages, in-flight handlers get the grace period, applications are torn
/// down in reverse order, then shared resources.
///
/// # Examples
///
/// ```no_run
/// use spa_dat::{consumer, producer, DistributedApplication, Socket, SpaMessage, Stopped};
///
/// #[producer]
/// async fn hello(socket: Socket) -> spa_dat::Result<()> {
///     socket.publish(SpaMessage::new("greetings", "hello")).await
/// }
///
/// #[consumer(topics = ["greetings"])]
/// async fn greet(message: SpaMessage) {
///     println!("{:?}", message.payload_str());
/// }
///
/// fn main() -> spa_dat::Result<Stopped> {
///     // The bus from SPA_DAT_URL (or SPA_DAT_CONFIG); until Ctrl-C or SIGTERM.
///     DistributedApplication::run()
/// }
/// ```
///
/// Built by hand, on the in-process bus, until a handler ends the run:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use spa_dat::{DistributedApplication, Shutdown, Socket, SpaMessage, Stopped};
///
/// async fn hello(socket: Socket) -> spa_dat::Result<()> {
///     socket.publish(SpaMessage::new("greetings", "hello")).await
/// }
///
/// async fn greet(message: SpaMessage, shutdown: Shutdown) {
///     assert_eq!(message.payload_str().ok(), Some("hello"));
///     shutdown.trigger();
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spa_dat::Result<()> {
/// let run = DistributedApplication::new()
///     .socket_provider(Arc::new(MemorySocketProvider::new(MemoryBus::new("dist-doc"))))
///     .add_consumer("greet", ["greetings"], greet)
///     .add_producer("hello", hello)
///     .watch_signals(false)
///     .start_async();
/// let stopped = tokio::time::timeout(Duration::from_secs(10), run).await.expect("in time")?;
/// assert_eq!(stopped, Stopped::Requested);
/// # Ok(())
/// # }
/// ```
pub struct DistributedApplication {
    config: Option<Config>,
    provider: Option<Arc<dyn SocketProvider>>,
    include_registered: bool,
    apps: Vec<Application>,
    state: Extensions,
    resources: ResourceSet,
    shutdown: Shutdown,
    readiness: Readiness,
    watch_signals: bool,
    info: ApiInfo,
}

impl std::fmt::Debug for DistributedApplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedApplication")
            .field("config", &self.config)
            .field("apps", &self.apps)
            .field("state", &self.state)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

impl Default for DistributedApplication {
    fn default() -> Self {
        Self::new()
    }
}

impl DistributedApplication {
    /// Runs every registered handler with the configuration from the environment
    /// (see [`Config::from_env`]; nothing set = the in-process bus). Blocks until shutdown.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn main() -> spa_dat::Result<spa_dat::Stopped> {
    ///     spa_dat::DistributedApplication::run()
    /// }
    /// ```
    pub fn run() -> Result<Stopped> {
        Self::new().start()
    }

    /// [`DistributedApplication::run`] on the caller's Tokio runtime.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> spa_dat::Result<spa_dat::Stopped> {
    ///     // ... other set-up on this runtime ...
    ///     spa_dat::DistributedApplication::run_async().await
    /// }
    /// ```
    pub async fn run_async() -> Result<Stopped> {
        Self::new().start_async().await
    }

    /// A distributed application with every registered handler, configured from the
    /// environment unless [`DistributedApplication::config`] says otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{DistributedApplication, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// let app = DistributedApplication::new().add_consumer("log", ["events"], handle);
    /// # let _ = app;
    /// ```
    pub fn new() -> Self {
        DistributedApplication {
            config: None,
            provider: None,
            include_registered: true,
            apps: Vec::new(),
            state: Extensions::default(),
            resources: ResourceSet::default(),
            shutdown: Shutdown::new(),
            readiness: Readiness::default(),
            watch_signals: true,
            info: ApiInfo::default(),
        }
    }

    /// Leaves out the handlers registered with `#[consumer]` / `#[producer]`: only added
    /// applications run.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{DistributedApplication, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// // In a test: only this consumer, not every #[consumer] linked into the binary.
    /// let app = DistributedApplication::new()
    ///     .without_registered_handlers()
    ///     .add_consumer("under-test", ["events"], handle);
    /// # let _ = app;
    /// ```
    pub fn without_registered_handlers(mut self) -> Self {
        self.include_registered = false;
        self
    }

    /// Uses `config` instead of the environment.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{DistributedApplication, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// use spa_dat::Config;
    ///
    /// let config = Config::from_toml("request_timeout_ms = 2000\n[bus]\ntransport = \"memory\"")?;
    /// let app = DistributedApplication::new()
    ///     .config(config)
    ///     .add_consumer("log", ["events"], handle);
    /// # let _ = app;
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// The default socket provider (instead of the one the config describes).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{DistributedApplication, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// use std::sync::Arc;
    ///
    /// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    ///
    /// let bus = MemoryBus::new("test");
    /// let app = DistributedApplication::new()
    ///     .socket_provider(Arc::new(MemorySocketProvider::new(bus)))
    ///     .add_consumer("log", ["events"], handle);
    /// # let _ = app;
    /// ```
    pub fn socket_provider(mut self, provider: Arc<dyn SocketProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Adds an application (the Python package's `add_application`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{DistributedApplication, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// use spa_dat::Application;
    ///
    /// let audit = Application::consumer("audit", ["orders/#"], handle).group("audit");
    /// let app = DistributedApplication::new().add_application(audit);
    /// # let _ = app;
    /// ```
    pub fn add_application(mut self, app: Application) -> Self {
        self.apps.push(app);
        self
    }

    /// Adds a consumer calling `handler` for every message on `topics`.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{DistributedApplication, Json};
    ///
    /// async fn total(Json(amounts): Json<Vec<f64>>) -> Json<f64> {
    ///     Json(amounts.iter().sum())
    /// }
    ///
    /// let app = DistributedApplication::new().add_consumer("total", ["totals"], total);
    /// # let _ = app;
    /// ```
    pub fn add_consumer<H, Args, I, S>(self, name: &str, topics: I, handler: H) -> Self
    where
        H: Handler<Args>,
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.add_application(Application::consumer(name, topics, handler))
    }

    /// Adds a producer calling `handler` once (the Python package's
    /// `add_producer_application`).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{DistributedApplication, Socket};
    ///
    /// async fn start(socket: Socket) -> spa_dat::Result<()> {
    ///     socket.publish_json("jobs", &["a", "b"]).await
    /// }
    ///
    /// let app = DistributedApplication::new().add_producer("start", start);
    /// # let _ = app;
    /// ```
    pub fn add_producer<H: Handler<Args>, Args>(self, name: &str, handler: H) -> Self {
        self.add_application(Application::producer(name, handler))
    }

    /// Adds state shared by every handler ([`crate::State<T>`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{DistributedApplication, SpaMessage, State};
    ///
    /// struct Settings { region: &'static str }
    ///
    /// async fn route(message: SpaMessage, settings: State<Settings>) {
    ///     println!("{} in {}", message.topic, settings.region);
    /// }
    ///
    /// let app = DistributedApplication::new()
    ///     .state(Settings { region: "eu" })
    ///     .add_consumer("route", ["orders"], route);
    /// # let _ = app;
    /// ```
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(Arc::new(value));
        self
    }

    /// Adds state the caller keeps a handle to (e.g. metrics read in `main` after the run).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{DistributedApplication, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// use std::sync::atomic::AtomicU64;
    /// use std::sync::Arc;
    ///
    /// let handled = Arc::new(AtomicU64::new(0));
    /// let app = DistributedApplication::new()
    ///     .state_arc(Arc::clone(&handled)) // handlers take State<AtomicU64>
    ///     .add_consumer("log", ["events"], handle);
    /// # let _ = app;
    /// ```
    pub fn state_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.state.insert(value);
        self
    }

    /// Adds a resource shared by every handler ([`crate::Res<T>`]): set up before any
    /// application starts, torn down after all stopped.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use spa_dat::{BoxError, DistributedApplication, Res, Resource, SpaMessage};
    ///
    /// struct Database;
    ///
    /// #[async_trait]
    /// impl Resource for Database {
    ///     async fn setup(&self) -> Result<(), BoxError> {
    ///         Ok(()) // connect
    ///     }
    /// }
    ///
    /// async fn store(message: SpaMessage, db: Res<Database>) {
    ///     let _ = (message, db);
    /// }
    ///
    /// let app = DistributedApplication::new()
    ///     .resource(Database) // one for every application
    ///     .add_consumer("store", ["orders"], store);
    /// # let _ = app;
    /// ```
    pub fn resource<T: Resource>(mut self, resource: T) -> Self {
        self.resources.add(resource);
        self
    }

    /// Whether Ctrl-C and SIGTERM trigger shutdown (default: yes).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{DistributedApplication, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// // Embedded in a program that handles signals itself: stop through the handle instead.
    /// let app = DistributedApplication::new()
    ///     .watch_signals(false)
    ///     .add_consumer("log", ["events"], handle);
    /// let shutdown = app.shutdown_handle();
    /// # let _ = (app, shutdown);
    /// ```
    pub fn watch_signals(mut self, watch: bool) -> Self {
        self.watch_signals = watch;
        self
    }

    /// A handle that stops the run.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// use spa_dat::{DistributedApplication, SpaMessage, Stopped};
    ///
    /// async fn log(message: SpaMessage) {
    ///     println!("{}", message.topic);
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// let app = DistributedApplication::new()
    ///     .socket_provider(Arc::new(MemorySocketProvider::new(MemoryBus::new("handle-doc"))))
    ///     .add_consumer("log", ["events"], log)
    ///     .watch_signals(false);
    /// let shutdown = app.shutdown_handle();
    /// let run = tokio::spawn(app.start_async());
    ///
    /// shutdown.trigger(); // e.g. on a command from an admin API
    /// let stopped = tokio::time::timeout(Duration::from_secs(10), run).await.expect("in time");
    /// assert_eq!(stopped.expect("not panicked")?, Stopped::Requested);
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The readiness of the run (take it before starting): ready once every application is
    /// set up and every socket is subscribed and connected (Kafka: its consumer assigned);
    /// not ready while a connection is lost and once the run stops.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::DistributedApplication;
    ///
    /// let app = DistributedApplication::new();
    /// let readiness = app.readiness(); // e.g. for a readiness probe of your own
    /// assert!(!readiness.is_ready()); // not started yet
    /// ```
    ///
    /// See [`Readiness`] for waiting until a run is ready.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The title and version of its AsyncAPI document (default: the executable's name,
    /// version "unversioned").
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::DistributedApplication;
    /// let app = DistributedApplication::new().api_info("order service", "1.4.0");
    /// # let _ = app;
    /// ```
    pub fn api_info(mut self, title: impl Into<String>, version: impl Into<String>) -> Self {
        self.info = ApiInfo {
            title: title.into(),
            version: version.into(),
        };
        self
    }

    /// The application's contract as an [AsyncAPI 3.0](https://www.asyncapi.com/docs/reference/specification/v3.0.0)
    /// document: a channel per topic (MQTT wildcards and `${NAME}` placeholders as
    /// parameters), a receive operation per consumer and topic (Kafka group and client id,
    /// MQTT QoS as bindings; a reply to the request's response topic when the handler
    /// returns one), send operations to dead-letter topics and to what `sends = [...]`
    /// declares, message payloads from the handlers' types (JSON Schemas of `Json<T>` with the
    /// `schemars` feature and `T: schemars::JsonSchema`, in `#[consumer]` handlers), servers
    /// from the configuration without credentials.
    ///
    /// Without code: `SPA_DAT_ASYNCAPI=asyncapi.json ./my-service` writes it there (`-`:
    /// standard output) and exits ([`Stopped::Documented`]) instead of running; no broker is
    /// needed and `${NAME}` placeholders need not be set.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{DistributedApplication, Json};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: u64 }
    ///
    /// async fn record(Json(order): Json<Order>) -> String {
    ///     format!("recorded {}", order.id)
    /// }
    ///
    /// let document = DistributedApplication::new()
    ///     .without_registered_handlers()
    ///     .config(spa_dat::Config::default())
    ///     .add_consumer("record", ["orders/${REGION}"], record)
    ///     .asyncapi()?;
    /// assert_eq!(document["asyncapi"], "3.0.0");
    /// assert_eq!(document["channels"]["orders_REGION"]["address"], "orders/{REGION}");
    /// assert_eq!(document["operations"]["record"]["action"], "receive");
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn asyncapi(&self) -> Result<serde_json::Value> {
        let environment;
        let config = match &self.config {
            Some(config) => config,
            None => {
                environment = Config::from_env()?;
                &environment
            }
        };
        let registered: Vec<Application> = match self.include_registered {
            true => registry::registrations()
                .into_iter()
                .map(from_registration)
                .collect(),
            false => Vec::new(),
        };
        let contracts: Vec<_> = registered
            .iter()
            .chain(&self.apps)
            .map(Application::contract)
            .collect();
        Ok(asyncapi::document(
            config,
            self.provider.as_ref(),
            &contracts,
            &self.info,
        ))
    }

    /// Writes the AsyncAPI document to `target` (`-`: standard output).
    fn document_to(&self, target: &std::ffi::OsStr) -> Result<Stopped> {
        let document = self.asyncapi()?;
        let mut text = serde_json::to_string_pretty(&document)
            .map_err(|error| Error::config(format!("the AsyncAPI document: {error}")))?;
        text.push('\n');
        if target == "-" {
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|error| Error::config(format!("{ENV_ASYNCAPI}=-: {error}")))?;
        } else {
            std::fs::write(target, text).map_err(|error| {
                Error::config(format!(
                    "{ENV_ASYNCAPI}: cannot write {}: {error}",
                    std::path::Path::new(&target).display()
                ))
            })?;
            tracing::info!(path = %std::path::Path::new(&target).display(), "wrote the AsyncAPI document");
        }
        Ok(Stopped::Documented)
    }

    /// Names of the handlers registered with `#[consumer]` / `#[producer]` in this binary.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{producer, DistributedApplication, Socket};
    ///
    /// #[producer(name = "starter")]
    /// async fn start(socket: Socket) -> spa_dat::Result<()> {
    ///     socket.publish_json("jobs", "go").await
    /// }
    ///
    /// assert!(DistributedApplication::registered_handlers().contains(&"starter"));
    /// ```
    pub fn registered_handlers() -> Vec<&'static str> {
        registry::registrations().iter().map(|r| r.name).collect()
    }

    /// Runs on a new multi-threaded Tokio runtime; blocks until shutdown, and says what
    /// stopped it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use spa_dat::DistributedApplication;
    ///
    /// fn main() -> spa_dat::Result<spa_dat::Stopped> {
    ///     DistributedApplication::new()
    ///         .config(spa_dat::Config::from_file("service.toml")?)
    ///         .start()
    /// }
    /// ```
    pub fn start(self) -> Result<Stopped> {
        block_on_new_runtime(self.start_async())?
    }

    /// Runs on the caller's Tokio runtime until shutdown, and says what stopped it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// use spa_dat::{DistributedApplication, Socket, Stopped};
    ///
    /// async fn once(socket: Socket) -> spa_dat::Result<()> {
    ///     socket.publish_json("jobs", "go").await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// // A run whose applications all end on their own (here one producer) stops by itself.
    /// let stopped = DistributedApplication::new()
    ///     .socket_provider(Arc::new(MemorySocketProvider::new(MemoryBus::new("once-doc"))))
    ///     .add_producer("once", once)
    ///     .watch_signals(false)
    ///     .start_async()
    ///     .await?;
    /// assert_eq!(stopped, Stopped::Finished);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_async(self) -> Result<Stopped> {
        match asked_instead_of_running()? {
            Instead::Run => {}
            Instead::Document(target) => return self.document_to(&target),
            Instead::Check => return self.check().await.map(|()| Stopped::Checked),
        }
        let Prepared {
            config,
            apps,
            defaults,
            resources,
            shutdown,
            readiness,
            watch_signals,
        } = self.prepare()?;
        #[cfg(any(feature = "probes", feature = "prometheus"))]
        super::health::http::serve_configured(&config, &readiness, &shutdown).await?;
        #[cfg(not(any(feature = "probes", feature = "prometheus")))]
        let _ = config;
        let signals = watch_signals.then(|| tokio::spawn(on_signal(shutdown.clone())));
        let result = run_apps(apps, &resources, &defaults, &readiness).await;
        readiness.stopped();
        shutdown.trigger_because(Stopped::Finished);
        if let Some(signals) = signals {
            signals.abort();
        }
        let stopped = shutdown.reason().unwrap_or(Stopped::Finished);
        match &result {
            Ok(()) => tracing::info!(%stopped, "spa-dat stopped"),
            Err(error) => tracing::info!(%stopped, %error, "spa-dat stopped with errors"),
        }
        result.map(|()| stopped)
    }

    /// Checks, for a deployment pipeline, that this application could start where it is:
    /// the configuration is valid, every `${NAME}` placeholder is set, every handler's
    /// arguments are offered, every application's socket connects to the bus and is allowed
    /// what it needs there (a consumer's subscriptions: MQTT SUBACKs, Kafka READ on its
    /// existing topics and its group), and `health_addr` / `metrics_addr` can be bound.
    /// Sockets are closed again; no handler runs, no resource is set up, nothing is published
    /// or committed. Every problem is named in one error.
    ///
    /// It takes no running instance's place (see [`SocketOptions::probe`](crate::socket::spi::SocketOptions::probe)):
    /// client ids of its own, MQTT subscriptions not kept and a group's in a share group of its
    /// own, on Kafka no group joined, no topic created, no transaction begun; an access check
    /// that cannot finish in `connect_timeout_ms` fails.
    ///
    /// Without code: `SPA_DAT_CHECK=1 ./my-service` checks instead of running, and exits 0
    /// ([`Stopped::Checked`]) or with the error. What it cannot see: a publish the broker's
    /// ACLs refuse (finding out would need a message); ACLs keyed on the service's own client
    /// id or share group (the check's differ, `…-check-{random}`: a broker limit on client id
    /// length, such as MQTT 3.1.1's 23 bytes, may refuse the check where the run passes).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// use spa_dat::{DistributedApplication, SpaMessage};
    ///
    /// async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let bus = || Arc::new(MemorySocketProvider::new(MemoryBus::new("check-doc")));
    /// let fine = DistributedApplication::new()
    ///     .without_registered_handlers()
    ///     .socket_provider(bus())
    ///     .add_consumer("orders", ["orders/${CHECK_DOC_REGION}"], handle);
    /// let error = fine.check().await.expect_err("CHECK_DOC_REGION is not set");
    /// assert!(error.to_string().contains("CHECK_DOC_REGION"), "{error}");
    /// # }
    /// ```
    pub async fn check(self) -> Result<()> {
        let (prepared, mut problems) = self.prepare_checked()?;
        let bus = prepared.defaults.provider.describe();
        // The applications whose own checks passed connect; every problem is named at once.
        let checks = prepared
            .apps
            .iter()
            .filter(|app| app.check(&prepared.defaults).is_ok())
            .map(|app| app.check_connection(&prepared.defaults));
        problems.extend(
            futures_util::future::join_all(checks)
                .await
                .into_iter()
                .filter_map(Result::err),
        );
        #[cfg(any(feature = "probes", feature = "prometheus"))]
        problems.extend(super::health::http::check_addresses(&prepared.config));
        match problems.is_empty() {
            true => {
                tracing::info!(apps = prepared.apps.len(), %bus, "configuration check passed");
                Ok(())
            }
            false => Err(Error::from_many(problems)),
        }
    }

    /// The run's configuration, applications and defaults, every application checked
    /// (handler arguments, placeholders) before any socket connects.
    fn prepare(self) -> Result<Prepared> {
        let (prepared, problems) = self.prepare_checked()?;
        match problems.is_empty() {
            true => Ok(prepared),
            false => Err(Error::from_many(problems)),
        }
    }

    /// [`DistributedApplication::prepare`], its applications' problems beside it.
    fn prepare_checked(self) -> Result<(Prepared, Vec<Error>)> {
        let DistributedApplication {
            config,
            provider,
            include_registered,
            apps: added,
            state,
            resources,
            shutdown,
            readiness,
            watch_signals,
            info: _,
        } = self;
        let config = match config {
            Some(config) => config,
            None => Config::from_env()?,
        };
        let settings = Settings::from(&config);
        let provider = match provider {
            Some(provider) => provider,
            None => SocketProviderFactory::from_config(&config.bus)?,
        };
        let mut apps: Vec<Application> = Vec::new();
        if include_registered {
            apps.extend(registry::registrations().into_iter().map(from_registration));
        }
        apps.extend(added);
        if apps.is_empty() {
            return Err(Error::config(
                "nothing to run: no #[consumer] or #[producer] is registered and no application was added",
            ));
        }
        let mut problems: Vec<Error> = check_unique_names(&apps).err().into_iter().collect();
        let defaults = RunDefaults {
            provider: Arc::clone(&provider),
            settings,
            state,
            resources: resources.by_type().clone(),
            shutdown: shutdown.clone(),
        };
        problems.extend(apps.iter().filter_map(|app| app.check(&defaults).err()));
        let prepared = Prepared {
            config,
            apps,
            defaults,
            resources,
            shutdown,
            readiness,
            watch_signals,
        };
        Ok((prepared, problems))
    }
}

/// A run, checked and ready to start.
struct Prepared {
    config: Config,
    apps: Vec<Application>,
    defaults: RunDefaults,
    resources: ResourceSet,
    shutdown: Shutdown,
    readiness: Readiness,
    watch_signals: bool,
}

/// What the environment asks for instead of a run.
#[derive(Debug, PartialEq)]
enum Instead {
    Run,
    /// `SPA_DAT_ASYNCAPI`: write the document there.
    Document(std::ffi::OsString),
    /// `SPA_DAT_CHECK`: check the deployment.
    Check,
}

/// Reads `SPA_DAT_ASYNCAPI` and `SPA_DAT_CHECK`. An empty value is unset; `SPA_DAT_CHECK`
/// takes 1/true/yes/on or 0/false/no/off, `SPA_DAT_ASYNCAPI` a file name (or `-`), not a
/// yes or no; asking for both is an error: a pipeline that meant to check must not pass
/// having only written a document.
fn asked_instead_of_running() -> Result<Instead> {
    instead_of_running(std::env::var_os(ENV_ASYNCAPI), std::env::var_os(ENV_CHECK))
}

fn instead_of_running(
    document: Option<std::ffi::OsString>,
    check: Option<std::ffi::OsString>,
) -> Result<Instead> {
    const YES: [&str; 4] = ["1", "true", "yes", "on"];
    const NO: [&str; 4] = ["0", "false", "no", "off"];
    let is = |words: &[&str], value: &str| words.iter().any(|w| w.eq_ignore_ascii_case(value));
    let document = document.filter(|value| !value.is_empty());
    if let Some(value) = document.as_ref().and_then(|value| value.to_str()) {
        if is(&YES, value.trim()) || is(&NO, value.trim()) {
            return Err(Error::config(format!(
                "{ENV_ASYNCAPI}={value}: give the file to write the AsyncAPI document to (or `-` for standard output)"
            )));
        }
    }
    let check = match check.as_ref().map(|value| value.to_string_lossy()) {
        None => false,
        Some(value) if value.trim().is_empty() || is(&NO, value.trim()) => false,
        Some(value) if is(&YES, value.trim()) => true,
        Some(value) => {
            return Err(Error::config(format!(
                "{ENV_CHECK}={value}: expected 1 (check instead of running) or 0"
            )))
        }
    };
    match (document, check) {
        (Some(_), true) => Err(Error::config(format!(
            "{ENV_ASYNCAPI} and {ENV_CHECK} are both set: ask for one (the check, or the document)"
        ))),
        (Some(target), false) => Ok(Instead::Document(target)),
        (None, true) => Ok(Instead::Check),
        (None, false) => Ok(Instead::Run),
    }
}

async fn run_apps(
    apps: Vec<Application>,
    resources: &ResourceSet,
    defaults: &RunDefaults,
    readiness: &Readiness,
) -> Result<()> {
    let mut shared = resources.setup().await?;
    let mut ready: Vec<Application> = Vec::with_capacity(apps.len());
    for mut app in apps {
        if let Err(error) = app.setup_in(defaults).await {
            tracing::error!(%error, "start-up failed; tearing down");
            log_teardown(&mut app).await;
            for app in ready.iter_mut().rev() {
                log_teardown(app).await;
            }
            if let Err(teardown) = shared.teardown().await {
                tracing::error!(error = %teardown, "shared resource teardown failed");
            }
            return Err(error);
        }
        ready.push(app);
    }
    tracing::info!(apps = ready.len(), bus = %defaults.provider.describe(), "spa-dat running");
    readiness.running(
        ready
            .iter()
            .flat_map(|app| {
                [
                    (app.name().to_owned(), app.ready_signal().clone()),
                    (
                        format!("{}: no progress", app.name()),
                        app.progress_signal().clone(),
                    ),
                ]
            })
            .collect(),
    );

    let mut tasks = JoinSet::new();
    let order: Vec<String> = ready.iter().map(|a| a.name().to_owned()).collect();
    for mut app in ready {
        tasks.spawn(async move {
            // Handlers' panics are caught where they run; this catches one from the runtime or
            // a transport, so the application is still handed back and torn down.
            let result = match AssertUnwindSafe(app.run_async()).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    let reason = panic_message(panic.as_ref());
                    tracing::error!(app = app.name(), panic = %reason, "application task panicked");
                    Err(Error::HandlerFailed {
                        handler: app.name().to_owned(),
                        source: format!("its task panicked: {reason}").into(),
                    })
                }
            };
            (app, result)
        });
    }
    let mut finished: HashMap<String, Application> = HashMap::new();
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((app, result)) => {
                tracing::debug!(app = app.name(), "application finished");
                if let Err(error) = result {
                    errors.push(error);
                }
                finished.insert(app.name().to_owned(), app);
            }
            // Only cancellation is left (panics are caught in the task): nothing to tear down.
            Err(join_error) => {
                tracing::error!(error = %join_error, "application task failed");
                errors.push(Error::Other(Box::new(join_error)));
            }
        }
    }
    for name in order.iter().rev() {
        if let Some(app) = finished.get_mut(name) {
            if let Err(error) = app.teardown().await {
                tracing::error!(app = %name, %error, "teardown failed");
                errors.push(error);
            }
        }
    }
    if let Err(error) = shared.teardown().await {
        errors.push(error);
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(Error::from_many(errors)),
    }
}

async fn log_teardown(app: &mut Application) {
    if let Err(error) = app.teardown().await {
        tracing::error!(app = app.name(), %error, "teardown failed");
    }
}

/// How long a batch of `#[consumer(batch = n)]` waits for more messages, without
/// `batch_wait_ms`.
const DEFAULT_BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

fn from_registration(registration: &'static Registration) -> Application {
    let mut app = Application::from_boxed(
        registration.name,
        registration.kind,
        registration
            .topics
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
        (registration.make_handler)(),
    );
    if let Some(group) = registration.group {
        app = app.group(group);
    }
    if let Some(client_id) = registration.client_id {
        app = app.client_id(client_id);
    }
    if let Some(client_name) = registration.client_name {
        app = app.client_name(client_name);
    }
    if let Some(topic) = registration.dead_letter_topic {
        app = app.dead_letter_topic(topic);
    }
    if let Some(limit) = registration.concurrency {
        app = app.concurrency(limit);
    }
    if let Some(key_of) = registration.order_key {
        app = app.order_key(key_of);
    }
    if let Some(order) = registration.ordering {
        app = app.ordering(order);
    }
    if let Some(attempts) = registration.attempts {
        app = app.retry(RetryPolicy::default().attempts(attempts));
    }
    if let Some(size) = registration.batch {
        let wait = registration
            .batch_wait_ms
            .map_or(DEFAULT_BATCH_WAIT, std::time::Duration::from_millis);
        app = app.batch(size, wait);
    }
    if let Some(ms) = registration.timeout_ms {
        app = app.handler_timeout(std::time::Duration::from_millis(ms));
    }
    if registration.transactional {
        app = app.transactional(true);
    }
    if !registration.sends.is_empty() {
        app = app.sends(registration.sends.iter().copied());
    }
    app
}

fn check_unique_names(apps: &[Application]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let duplicates: Vec<Error> = apps
        .iter()
        .filter(|app| !seen.insert(app.name()))
        .map(|app| Error::Handler {
            handler: app.name().to_owned(),
            reason: "two applications share this name; give one `name = \"...\"`".to_owned(),
        })
        .collect();
    match duplicates.is_empty() {
        true => Ok(()),
        false => Err(Error::from_many(duplicates)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(value: &str) -> Option<std::ffi::OsString> {
        Some(value.into())
    }

    #[test]
    fn the_environment_asks_for_one_thing_or_says_what_is_wrong() {
        assert_eq!(instead_of_running(None, None).ok(), Some(Instead::Run));
        assert_eq!(instead_of_running(os(""), os("")).ok(), Some(Instead::Run));
        assert_eq!(instead_of_running(None, os("off")).ok(), Some(Instead::Run));
        assert_eq!(
            instead_of_running(None, os("Yes")).ok(),
            Some(Instead::Check)
        );
        assert_eq!(
            instead_of_running(os("api.json"), os("0")).ok(),
            Some(Instead::Document("api.json".into()))
        );
        let both = instead_of_running(os("api.json"), os("1")).expect_err("both");
        assert!(both.to_string().contains("both set"), "{both}");
        let flag = instead_of_running(os("false"), None).expect_err("not a file");
        assert!(flag.to_string().contains("give the file"), "{flag}");
        let odd = instead_of_running(None, os("please")).expect_err("not a yes or no");
        assert!(odd.to_string().contains("expected 1"), "{odd}");
    }
}
