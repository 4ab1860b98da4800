//! Middleware on the handler path: a [`Layer`] runs around every call of an application's
//! handler — before it, after it, or instead of it. Layers are applied once, when the
//! application is built ([`crate::Application::layer`]); with none, the per-message path is
//! what it was.
//!
//! A layer sees each handler call, retries included; the consumer's retries, timeout and
//! dead letters act on what the whole chain returns. To refuse a message that no retry can fix,
//! return [`crate::Error::Rejected`]: it is bad input — logged at WARN, dead-lettered if the
//! application has a dead-letter topic, never retried.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use std::future::Future;

use super::call::BoxedHandler;
use super::extract::HandlerContext;
use super::reply::CallResult;

/// Middleware around an application's handler.
///
/// ```
/// use futures_util::future::BoxFuture;
/// use spa_dat::handler::{CallResult, Layer, Next};
/// use spa_dat::HandlerContext;
///
/// /// Refuses messages without a client id: they cannot be attributed to a tenant.
/// struct RequireClientId;
///
/// impl Layer for RequireClientId {
///     fn call(&self, context: HandlerContext, next: Next) -> BoxFuture<'static, CallResult> {
///         if context.message().is_some_and(|m| m.client_id.is_none()) {
///             let refused = spa_dat::Error::Rejected { reason: "no client id".into() };
///             return Box::pin(async move { Err(refused.into()) });
///         }
///         next.run(context)
///     }
/// }
/// ```
pub trait Layer: Send + Sync + 'static {
    /// Handles one call: `next.run(context)` goes on to the next layer and the handler.
    fn call(&self, context: HandlerContext, next: Next) -> BoxFuture<'static, CallResult>;
}

/// A [`Layer`] from an async closure taking the call's context and the rest of the chain, as
/// axum's `middleware::from_fn`.
///
/// ```
/// use spa_dat::handler::layer_fn;
/// use spa_dat::{Application, SpaMessage};
///
/// let app = Application::consumer("audited", ["orders"], |_: SpaMessage| async {})
///     .layer(layer_fn(|context, next| async move {
///         let topic = context.message().map(|m| m.topic.clone());
///         let result = next.run(context).await;
///         tracing::info!(?topic, ok = result.is_ok(), "handled");
///         result
///     }));
/// # drop(app);
/// ```
pub fn layer_fn<F, Fut>(layer: F) -> impl Layer
where
    F: Fn(HandlerContext, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CallResult> + Send + 'static,
{
    LayerFn(layer)
}

/// The [`Layer`] of [`layer_fn`].
struct LayerFn<F>(F);

impl<F, Fut> Layer for LayerFn<F>
where
    F: Fn(HandlerContext, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CallResult> + Send + 'static,
{
    fn call(&self, context: HandlerContext, next: Next) -> BoxFuture<'static, CallResult> {
        Box::pin((self.0)(context, next))
    }
}

/// The rest of the chain after a layer: the next layers, then the handler.
#[derive(Debug, Clone)]
pub struct Next {
    inner: BoxedHandler,
}

impl Next {
    /// Calls the rest of the chain.
    pub fn run(self, context: HandlerContext) -> BoxFuture<'static, CallResult> {
        self.inner.call(context)
    }
}

impl BoxedHandler {
    /// `self` behind `layer`: calls go through the layer first. The argument check is the
    /// handler's.
    pub fn layered(self, layer: Arc<dyn Layer>) -> BoxedHandler {
        let next = Next {
            inner: self.clone(),
        };
        BoxedHandler {
            call: Arc::new(move |context| layer.call(context, next.clone())),
            ..self
        }
    }
}
