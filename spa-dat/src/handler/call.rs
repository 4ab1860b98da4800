//! Handlers with their argument types erased: [`Handler`] is implemented for async functions
//! whose arguments implement [`FromContext`]; [`BoxedHandler`] is what applications store and
//! call.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::describe::{HandlerShape, Payload, PayloadSchemas};
use super::extract::{FromContext, HandlerContext, HandlerScope};
use super::reply::{CallResult, IntoReply, Reply};

/// An async function usable as a handler: implemented for every `Fn(A, B, ...) -> impl Future`
/// whose arguments implement [`FromContext`] (up to 12) and whose output implements
/// [`IntoReply`].
///
/// # Examples
///
/// ```
/// use spa_dat::{Application, SpaMessage};
///
/// // An async fn is a handler...
/// async fn log(message: SpaMessage) {
///     println!("{}", message.topic);
/// }
/// let logger = Application::consumer("log", ["events/#"], log);
///
/// // ...and so is a closure returning a future, e.g. to capture configuration.
/// let prefix = String::from("seen: ");
/// let echo = Application::consumer("echo", ["echo"], move |message: SpaMessage| {
///     let prefix = prefix.clone();
///     async move { format!("{prefix}{}", message.payload_str().unwrap_or("?")) }
/// });
/// # let _ = (logger, echo);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a spa-dat handler",
    note = "a handler is an async fn whose arguments implement FromContext and whose output implements IntoReply"
)]
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    /// Checks every argument against what the application offers; all problems at once.
    fn check(scope: &HandlerScope<'_>) -> Result<(), Vec<String>>;

    /// Extracts the arguments and runs the handler.
    fn call(&self, context: HandlerContext) -> BoxFuture<'static, CallResult>;

    /// Whether an argument reads what the transport delivered beside the message
    /// ([`crate::Received`]): only then does the engine copy it for the call.
    fn reads_delivery() -> bool {
        false
    }

    /// The payload of the messages it takes: its first argument's that reads one.
    fn takes() -> Option<Payload> {
        None
    }

    /// The payload of its replies: its return type's.
    fn replies() -> Option<Payload> {
        None
    }
}

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        #[diagnostic::do_not_recommend]
        impl<F, Fut, Out, $($arg,)*> Handler<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Out> + Send + 'static,
            Out: IntoReply,
            $($arg: FromContext,)*
        {
            #[allow(unused_mut)]
            fn check(scope: &HandlerScope<'_>) -> Result<(), Vec<String>> {
                let mut problems: Vec<String> = Vec::new();
                $(
                    if let Err(problem) = $arg::check(scope) {
                        problems.push(problem);
                    }
                )*
                let batches = 0 $(+ <$arg as FromContext>::TAKES_BATCH as usize)*;
                if let Some(problem) = batch_arguments(scope, batches) {
                    problems.push(problem);
                }
                if problems.is_empty() { Ok(()) } else { Err(problems) }
            }

            fn reads_delivery() -> bool {
                false $(|| <$arg as FromContext>::READS_DELIVERY)*
            }

            fn takes() -> Option<Payload> {
                None $(.or_else(<$arg as FromContext>::payload))*
            }

            fn replies() -> Option<Payload> {
                Out::reply_payload()
            }

            #[allow(non_snake_case, unused_variables)]
            fn call(&self, context: HandlerContext) -> BoxFuture<'static, CallResult> {
                let handler = self.clone();
                Box::pin(async move {
                    let mut context = context;
                    context.readers_left = 0 $(+ <$arg as FromContext>::READS_MESSAGE as usize)*;
                    context.delivery_readers_left =
                        0 $(+ <$arg as FromContext>::READS_DELIVERY as usize)*;
                    $(
                        let $arg = <$arg as FromContext>::from_context(&mut context)?;
                        context.readers_left -= <$arg as FromContext>::READS_MESSAGE as usize;
                        context.delivery_readers_left -=
                            <$arg as FromContext>::READS_DELIVERY as usize;
                    )*
                    drop(context);
                    let reply = handler($($arg),*).await.into_reply()?;
                    Ok(reply.map(Reply::new))
                })
            }
        }
    };
}

/// What is wrong with a handler taking `batches` [`crate::Batch`] arguments in `scope` (a
/// Batch outside a batch consumer is refused by its own check).
fn batch_arguments(scope: &HandlerScope<'_>, batches: usize) -> Option<String> {
    match (scope.batch, batches) {
        (Some(_), 0) => Some(format!(
            "`{}` is a batch consumer: it takes its messages as one `Batch<...>` argument",
            scope.app
        )),
        (Some(_), 2..) => Some(format!(
            "`{}` takes {batches} Batch arguments: a batch handler takes its messages as one",
            scope.app
        )),
        _ => None,
    }
}

impl_handler!();
impl_handler!(A1);
impl_handler!(A1, A2);
impl_handler!(A1, A2, A3);
impl_handler!(A1, A2, A3, A4);
impl_handler!(A1, A2, A3, A4, A5);
impl_handler!(A1, A2, A3, A4, A5, A6);
impl_handler!(A1, A2, A3, A4, A5, A6, A7);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12);

type CallFn = dyn Fn(HandlerContext) -> BoxFuture<'static, CallResult> + Send + Sync;
type CheckFn = fn(&HandlerScope<'_>) -> Result<(), Vec<String>>;

/// A handler with its argument types erased: what applications store and call.
#[derive(Clone)]
pub struct BoxedHandler {
    pub(super) call: Arc<CallFn>,
    pub(super) check: CheckFn,
    pub(super) reads_delivery: bool,
    pub(super) shape: HandlerShape,
    pub(super) schemas: PayloadSchemas,
}

impl fmt::Debug for BoxedHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedHandler").finish_non_exhaustive()
    }
}

impl BoxedHandler {
    /// Erases `handler`'s argument types.
    pub fn new<H: Handler<Args>, Args>(handler: H) -> Self {
        BoxedHandler {
            call: Arc::new(move |context| handler.call(context)),
            check: H::check,
            reads_delivery: H::reads_delivery(),
            shape: HandlerShape {
                takes: H::takes(),
                replies: H::replies(),
            },
            schemas: PayloadSchemas::default(),
        }
    }

    /// The same handler with its payloads' JSON Schemas (what `#[consumer]` finds with the
    /// `schemars` feature).
    pub fn with_schemas(self, schemas: PayloadSchemas) -> Self {
        BoxedHandler { schemas, ..self }
    }

    /// Whether a call needs the delivery's [`crate::Received`].
    pub(crate) fn reads_delivery(&self) -> bool {
        self.reads_delivery
    }

    /// What its types say about its messages.
    pub(crate) fn shape(&self) -> HandlerShape {
        self.shape
    }

    /// Its payloads' JSON Schemas, where known.
    pub(crate) fn schemas(&self) -> PayloadSchemas {
        self.schemas
    }

    /// Checks the handler's arguments against `scope`.
    pub fn check(&self, scope: &HandlerScope<'_>) -> Result<(), Vec<String>> {
        (self.check)(scope)
    }

    /// Calls the handler.
    pub fn call(&self, context: HandlerContext) -> BoxFuture<'static, CallResult> {
        (self.call)(context)
    }
}
