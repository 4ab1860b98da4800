//! Handlers: async functions whose arguments are extracted from the application
//! ([`FromContext`]) and whose return value may be a reply ([`IntoReply`]).

mod extract;
mod layer;
pub(crate) mod registry;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::error::BoxError;
use crate::message::{SpaMessage, CONTENT_TYPE_JSON};

pub use extract::{FromContext, HandlerContext, HandlerScope, Json, Res, State};
pub use layer::{Layer, Next};
pub use registry::Registration;

/// Whether a handler runs per message or once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// Called for every message on its topics.
    Consumer,
    /// Called once when the application starts.
    Producer,
}

impl fmt::Display for HandlerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandlerKind::Consumer => "consumer",
            HandlerKind::Producer => "producer",
        })
    }
}

/// What a handler call produced: maybe a reply, or the handler's error.
pub type HandlerResult = Result<Option<SpaMessage>, BoxError>;

/// A [`HandlerResult`] as the runtime carries it out of a handler call: the reply boxed, so that
/// the result of every call moves through the runtime's layers as two words, not a message.
pub type CallResult = Result<Option<Box<SpaMessage>>, BoxError>;

/// A handler's return value. `()` means no reply; a payload (`String`, `Vec<u8>`, `Bytes`,
/// `Json<T>`, `SpaMessage`) is published to the request's response topic; `Option` and
/// `Result` wrap either.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a spa-dat handler",
    note = "return (), a reply (String, Vec<u8>, Bytes, Json<T>, SpaMessage), an Option of one, or a Result of these"
)]
pub trait IntoReply {
    /// The reply (its topic is set by the runtime) or the error.
    fn into_reply(self) -> HandlerResult;
}

impl IntoReply for () {
    fn into_reply(self) -> HandlerResult {
        Ok(None)
    }
}

impl IntoReply for SpaMessage {
    fn into_reply(self) -> HandlerResult {
        Ok(Some(self))
    }
}

macro_rules! payload_reply {
    ($($ty:ty),*) => {$(
        impl IntoReply for $ty {
            fn into_reply(self) -> HandlerResult {
                Ok(Some(SpaMessage::new(String::new(), Bytes::from(self))))
            }
        }
    )*};
}
payload_reply!(String, &'static str, Vec<u8>, Bytes);

impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> HandlerResult {
        let payload = serde_json::to_vec(&self.0)?;
        Ok(Some(
            SpaMessage::new(String::new(), payload).with_content_type(CONTENT_TYPE_JSON),
        ))
    }
}

impl<T: IntoReply> IntoReply for Option<T> {
    fn into_reply(self) -> HandlerResult {
        self.map_or(Ok(None), IntoReply::into_reply)
    }
}

impl<T: IntoReply, E: Into<BoxError>> IntoReply for Result<T, E> {
    fn into_reply(self) -> HandlerResult {
        self.map_err(Into::into)?.into_reply()
    }
}

/// An async function usable as a handler: implemented for every `Fn(A, B, ...) -> impl Future`
/// whose arguments implement [`FromContext`] (up to 12) and whose output implements
/// [`IntoReply`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a spa-dat handler",
    note = "a handler is an async fn whose arguments implement FromContext and whose output implements IntoReply"
)]
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    /// Checks every argument against what the application offers; all problems at once.
    fn check(scope: &HandlerScope<'_>) -> Result<(), Vec<String>>;

    /// Extracts the arguments and runs the handler.
    fn call(&self, context: HandlerContext) -> BoxFuture<'static, CallResult>;
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
                let _ = scope;
                if problems.is_empty() { Ok(()) } else { Err(problems) }
            }

            #[allow(non_snake_case, unused_variables)]
            fn call(&self, context: HandlerContext) -> BoxFuture<'static, CallResult> {
                let handler = self.clone();
                Box::pin(async move {
                    let mut context = context;
                    context.readers_left = 0 $(+ <$arg as FromContext>::READS_MESSAGE as usize)*;
                    $(
                        let $arg = <$arg as FromContext>::from_context(&mut context)?;
                        context.readers_left -= <$arg as FromContext>::READS_MESSAGE as usize;
                    )*
                    drop(context);
                    let reply = handler($($arg),*).await.into_reply()?;
                    Ok(reply.map(Box::new))
                })
            }
        }
    };
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
    call: Arc<CallFn>,
    check: CheckFn,
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
        }
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
