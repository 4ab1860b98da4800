//! What a handler's types say about its messages, for the application's AsyncAPI document
//! ([`crate::DistributedApplication::asyncapi`]): the payload an argument decodes
//! ([`FromContext::payload`](crate::FromContext::payload)), the payload a return value replies
//! with ([`IntoReply::reply_payload`](crate::IntoReply::reply_payload)), and, with the
//! `schemars` feature, a JSON Schema for `Json<T>` types of `#[consumer]` handlers.

/// A message payload as a handler's types describe it.
///
/// # Examples
///
/// ```
/// use spa_dat::handler::Payload;
/// use spa_dat::{FromContext, HandlerContext, BoxError};
///
/// /// A reading in the plain-text format of old sensors.
/// struct Reading(f64);
///
/// impl FromContext for Reading {
///     fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
///         let text = context.message().ok_or("no message")?.payload_str()?;
///         Ok(Reading(text.trim().parse()?))
///     }
///
///     // The AsyncAPI document names the payload "Reading", a text/plain message.
///     fn payload() -> Option<Payload> {
///         Some(Payload::text().named("Reading"))
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub(crate) name: &'static str,
    pub(crate) format: PayloadFormat,
}

/// How a payload is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadFormat {
    /// JSON of a Rust type (`Json<T>`).
    Json,
    /// UTF-8 text.
    Text,
    /// Bytes of no declared format.
    Bytes,
    /// Whatever the message carries (`SpaMessage`).
    Any,
}

impl Payload {
    /// JSON of `T` (`Json<T>`), named by `T`'s type name without its path.
    pub fn json<T: ?Sized>() -> Self {
        Payload {
            name: short_type_name(std::any::type_name::<T>()),
            format: PayloadFormat::Json,
        }
    }

    /// UTF-8 text (a `String` reply).
    pub fn text() -> Self {
        Payload {
            name: "Text",
            format: PayloadFormat::Text,
        }
    }

    /// Bytes of no declared format (a `Vec<u8>` or `Bytes` reply).
    pub fn bytes() -> Self {
        Payload {
            name: "Bytes",
            format: PayloadFormat::Bytes,
        }
    }

    /// Any payload: the handler reads the whole `SpaMessage`.
    pub fn any() -> Self {
        Payload {
            name: "SpaMessage",
            format: PayloadFormat::Any,
        }
    }

    /// The same payload under another name (the message's name in the document).
    pub fn named(self, name: &'static str) -> Self {
        Payload { name, ..self }
    }

    /// The payload's name in the document.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// `a::b::Order<c::Line>` → `Order<Line>`: a message name without module paths.
fn short_type_name(full: &'static str) -> &'static str {
    // Generic types keep their full name: cutting inside `<...>` would need an allocation,
    // and the name is only a label (the schema, when there is one, says the rest).
    match full.find('<') {
        Some(_) => full,
        None => full.rsplit("::").next().unwrap_or(full),
    }
}

/// What a handler takes and replies with, from its types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HandlerShape {
    /// The payload of the messages it consumes (the first argument that decodes one).
    pub(crate) takes: Option<Payload>,
    /// The payload of its replies (`None`: it never replies).
    pub(crate) replies: Option<Payload>,
}

/// JSON Schemas of a `#[consumer]`'s payload types, found by the macro (`schemars` feature):
/// what the handler's types alone cannot say without specialization.
#[derive(Clone, Copy, Default)]
pub struct PayloadSchemas {
    /// The schema of the consumed payload.
    pub takes: Option<PayloadSchema>,
    /// The schema of the reply.
    pub replies: Option<PayloadSchema>,
}

impl std::fmt::Debug for PayloadSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadSchemas")
            .field("takes", &self.takes.is_some())
            .field("replies", &self.replies.is_some())
            .finish()
    }
}

/// Makes one payload type's JSON Schema (feature `schemars`); without the feature, never made.
#[derive(Clone, Copy)]
pub struct PayloadSchema {
    #[cfg(feature = "schemars")]
    pub(crate) make: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_module_path_but_not_their_generics() {
        struct Order;
        assert_eq!(Payload::json::<Order>().name(), "Order");
        assert_eq!(Payload::json::<u64>().name(), "u64");
        assert!(Payload::json::<Vec<Order>>().name().contains("Vec<"));
        assert_eq!(Payload::text().named("Reading").name(), "Reading");
    }
}
