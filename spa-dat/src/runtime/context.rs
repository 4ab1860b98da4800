//! What a running application holds for its handlers: its state and resources by type
//! ([`Extensions`]), and the runtime handlers draw their arguments from ([`AppRuntime`]).

use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::shutdown::Shutdown;
use super::Socket;

/// Values stored by type: the applications' shared state and resources.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// use spa_dat::Extensions;
///
/// let mut values = Extensions::default();
/// values.insert(Arc::new(42u32));
/// assert_eq!(values.get::<u32>().as_deref(), Some(&42));
/// assert!(!values.contains::<String>());
///
/// let mut other = Extensions::default();
/// other.insert(Arc::new(7u32));
/// other.insert(Arc::new("name".to_owned()));
/// values.merge_missing(&other); // keeps its own u32, takes the String
/// assert_eq!(values.get::<u32>().as_deref(), Some(&42));
/// assert!(values.contains::<String>());
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    values: HashMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>)>,
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.values.values().map(|(name, _)| name))
            .finish()
    }
}

impl Extensions {
    /// Stores `value`, replacing a value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.values
            .insert(TypeId::of::<T>(), (type_name::<T>(), value));
    }

    /// The value of type `T`, if stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let (_, value) = self.values.get(&TypeId::of::<T>())?;
        Arc::clone(value).downcast::<T>().ok()
    }

    /// Whether a value of type `T` is stored.
    pub fn contains<T: 'static>(&self) -> bool {
        self.values.contains_key(&TypeId::of::<T>())
    }

    /// Adds every value of `other` that `self` lacks.
    pub fn merge_missing(&mut self, other: &Extensions) {
        for (id, value) in &other.values {
            self.values.entry(*id).or_insert_with(|| value.clone());
        }
    }
}

/// The parts of a running application that handlers can take.
#[derive(Debug)]
pub(crate) struct AppRuntime {
    pub(crate) name: Arc<str>,
    /// The application's metric handles.
    pub(crate) metrics: Arc<crate::metrics::AppMetrics>,
    pub(crate) socket: Socket,
    pub(crate) state: Extensions,
    pub(crate) resources: Extensions,
    pub(crate) shutdown: Shutdown,
}
