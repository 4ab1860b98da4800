//! Resources: things set up before an application's handlers run and torn down after they
//! stop, in reverse order (the Python package's context managers).

use std::any::type_name;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{BoxError, Error, Result};
use crate::runtime::Extensions;

/// A resource handlers can take as [`crate::Res<T>`]: a database pool, a file, a client.
///
/// `setup` runs before any handler of the application starts, `teardown` after every handler
/// stopped — also when start-up failed half-way or a handler failed. Both take `&self`: keep
/// what `setup` creates in a `OnceLock`/`Mutex` field.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::{Arc, Mutex};
///
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use async_trait::async_trait;
/// use spa_dat::{BoxError, DistributedApplication, Res, Resource};
///
/// /// A connection pool stand-in: opened in `setup`, closed in `teardown`.
/// #[derive(Default)]
/// struct Pool {
///     open: Mutex<Option<String>>,
///     closed: Arc<AtomicBool>,
/// }
///
/// #[async_trait]
/// impl Resource for Pool {
///     async fn setup(&self) -> Result<(), BoxError> {
///         *self.open.lock().unwrap() = Some("postgres://db/app".into());
///         Ok(())
///     }
///     async fn teardown(&self) -> Result<(), BoxError> {
///         self.open.lock().unwrap().take();
///         self.closed.store(true, Ordering::SeqCst);
///         Ok(())
///     }
/// }
///
/// async fn report(pool: Res<Pool>) {
///     assert!(pool.open.lock().unwrap().is_some()); // set up before any handler runs
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spa_dat::Result<()> {
/// let pool = Pool::default();
/// let closed = Arc::clone(&pool.closed);
/// DistributedApplication::new()
///     .socket_provider(Arc::new(MemorySocketProvider::new(MemoryBus::new("resource-doc"))))
///     .resource(pool)
///     .add_producer("report", report)
///     .watch_signals(false)
///     .start_async()
///     .await?; // the producer is done: the run ends, the pool is torn down
/// assert!(closed.load(Ordering::SeqCst));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Resource: Send + Sync + 'static {
    /// Acquires the resource.
    async fn setup(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Releases the resource.
    async fn teardown(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

#[derive(Clone)]
struct Entry {
    name: &'static str,
    resource: Arc<dyn Resource>,
}

/// Resources in the order they were added.
#[derive(Clone, Default)]
pub(crate) struct ResourceSet {
    entries: Vec<Entry>,
    by_type: Extensions,
}

impl std::fmt::Debug for ResourceSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.name))
            .finish()
    }
}

impl ResourceSet {
    pub(crate) fn add<T: Resource>(&mut self, resource: T) {
        let resource = Arc::new(resource);
        self.by_type.insert(Arc::clone(&resource));
        self.entries.push(Entry {
            name: type_name::<T>(),
            resource,
        });
    }

    pub(crate) fn by_type(&self) -> &Extensions {
        &self.by_type
    }

    /// Sets up every resource in order. On failure, tears down the ones already set up
    /// (reverse order) and returns the failure.
    pub(crate) async fn setup(&self) -> Result<ActiveResources> {
        let mut active = ActiveResources::default();
        for entry in &self.entries {
            tracing::debug!(resource = entry.name, "setting up resource");
            if let Err(source) = entry.resource.setup().await {
                let error = Error::Resource {
                    resource: entry.name,
                    stage: "set up",
                    source,
                };
                if let Err(teardown_error) = active.teardown().await {
                    tracing::error!(error = %teardown_error, "teardown after failed set-up also failed");
                }
                return Err(error);
            }
            active.entries.push(entry.clone());
        }
        Ok(active)
    }
}

/// Resources that are set up and must be torn down.
#[derive(Default)]
pub(crate) struct ActiveResources {
    entries: Vec<Entry>,
}

impl ActiveResources {
    /// Tears everything down in reverse order; every resource gets its teardown even if an
    /// earlier one failed. Returns the first failure.
    pub(crate) async fn teardown(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(entry) = self.entries.pop() {
            tracing::debug!(resource = entry.name, "tearing down resource");
            if let Err(source) = entry.resource.teardown().await {
                let error = Error::Resource {
                    resource: entry.name,
                    stage: "tear down",
                    source,
                };
                tracing::error!(%error, "resource teardown failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
