//! What a handler returns ([`IntoReply`]) and how its reply travels through layers and the
//! runtime ([`CallResult`], [`Reply`]).

use std::ops::{Deref, DerefMut};

use bytes::Bytes;
use serde::Serialize;

use super::describe::Payload;
use super::extract::Json;
use crate::error::BoxError;
use crate::message::{SpaMessage, CONTENT_TYPE_JSON};

/// What a handler call produced: maybe a reply, or the handler's error.
pub type HandlerResult = Result<Option<SpaMessage>, BoxError>;

/// A [`HandlerResult`] as the runtime carries it out of a handler call, through every
/// [`crate::handler::Layer`]: `Ok(Some(reply))`, `Ok(None)` (no reply) or the error.
pub type CallResult = Result<Option<Reply>, BoxError>;

/// A handler's reply on its way to the request's response topic (the runtime sets its topic).
/// The message is boxed, so that the result of every call moves through the layers as two
/// words, not a message.
///
/// ```
/// use spa_dat::handler::Reply;
/// use spa_dat::SpaMessage;
///
/// let mut reply = Reply::new(SpaMessage::new("", "21.5"));
/// reply.content_type = Some("text/plain".into()); // a Reply derefs to its message
/// assert_eq!(reply.into_message().payload_str().ok(), Some("21.5"));
/// ```
#[derive(Debug, Clone)]
pub struct Reply(Box<SpaMessage>);

impl Reply {
    /// `message` as a reply.
    pub fn new(message: SpaMessage) -> Self {
        Reply(Box::new(message))
    }

    /// The reply's message.
    pub fn into_message(self) -> SpaMessage {
        *self.0
    }
}

impl From<SpaMessage> for Reply {
    fn from(message: SpaMessage) -> Self {
        Reply::new(message)
    }
}

impl Deref for Reply {
    type Target = SpaMessage;

    fn deref(&self) -> &SpaMessage {
        &self.0
    }
}

impl DerefMut for Reply {
    fn deref_mut(&mut self) -> &mut SpaMessage {
        &mut self.0
    }
}

/// A handler's return value. `()` means no reply; a payload (`String`, `Vec<u8>`, `Bytes`,
/// `Json<T>`, `SpaMessage`) is published to the request's response topic; `Option` and
/// `Result` wrap either.
///
/// # Examples
///
/// ```
/// use spa_dat::{Application, IntoReply, SpaMessage};
///
/// // A handler whose reply is text, or nothing, or an error that fails the call.
/// async fn lookup(message: SpaMessage) -> Result<Option<String>, std::io::Error> {
///     Ok(match message.payload_str() {
///         Ok("ping") => Some("pong".to_owned()),
///         _ => None,
///     })
/// }
/// # let _ = Application::consumer("lookup", ["lookups"], lookup);
///
/// let reply = "pong".to_owned().into_reply().unwrap().expect("a reply");
/// assert_eq!(reply.payload_str().unwrap(), "pong");
/// assert!(().into_reply().unwrap().is_none());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a spa-dat handler",
    note = "return (), a reply (String, Vec<u8>, Bytes, Json<T>, SpaMessage), an Option of one, or a Result of these; a batch handler returns (), or a BatchResult"
)]
pub trait IntoReply {
    /// The reply (its topic is set by the runtime) or the error.
    fn into_reply(self) -> HandlerResult;

    /// The payload of the reply, for the application's AsyncAPI document: by default any
    /// payload (a type that may reply); `None` for one that never replies.
    fn reply_payload() -> Option<Payload> {
        Some(Payload::any())
    }
}

impl IntoReply for () {
    fn reply_payload() -> Option<Payload> {
        None
    }

    fn into_reply(self) -> HandlerResult {
        Ok(None)
    }
}

impl IntoReply for SpaMessage {
    fn reply_payload() -> Option<Payload> {
        Some(Payload::any())
    }

    fn into_reply(self) -> HandlerResult {
        Ok(Some(self))
    }
}

macro_rules! payload_reply {
    ($($ty:ty: $payload:ident),*) => {$(
        impl IntoReply for $ty {
            fn reply_payload() -> Option<Payload> {
                Some(Payload::$payload())
            }

            fn into_reply(self) -> HandlerResult {
                Ok(Some(SpaMessage::new(String::new(), Bytes::from(self))))
            }
        }
    )*};
}
payload_reply!(String: text, &'static str: text, Vec<u8>: bytes, Bytes: bytes);

impl<T: Serialize> IntoReply for Json<T> {
    fn reply_payload() -> Option<Payload> {
        Some(Payload::json::<T>())
    }

    fn into_reply(self) -> HandlerResult {
        let payload = serde_json::to_vec(&self.0)?;
        Ok(Some(
            SpaMessage::new(String::new(), payload).with_content_type(CONTENT_TYPE_JSON),
        ))
    }
}

impl<T: IntoReply> IntoReply for Option<T> {
    fn reply_payload() -> Option<Payload> {
        T::reply_payload()
    }

    fn into_reply(self) -> HandlerResult {
        self.map_or(Ok(None), IntoReply::into_reply)
    }
}

impl<T: IntoReply, E: Into<BoxError>> IntoReply for Result<T, E> {
    fn reply_payload() -> Option<Payload> {
        T::reply_payload()
    }

    fn into_reply(self) -> HandlerResult {
        self.map_err(Into::into)?.into_reply()
    }
}
