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
    /// What tells payloads apart: the Rust type's full name, or spa-dat's own kind.
    pub(crate) type_name: &'static str,
    /// A name given with [`Payload::named`], instead of the type's.
    pub(crate) given_name: Option<&'static str>,
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
    /// JSON of `T` (`Json<T>`), named by `T`'s type name without module paths.
    pub fn json<T: ?Sized>() -> Self {
        Payload {
            type_name: std::any::type_name::<T>(),
            given_name: None,
            format: PayloadFormat::Json,
        }
    }

    /// UTF-8 text (a `String` reply).
    pub fn text() -> Self {
        Payload {
            type_name: "spa-dat::Text",
            given_name: Some("Text"),
            format: PayloadFormat::Text,
        }
    }

    /// Bytes of no declared format (a `Vec<u8>` or `Bytes` reply).
    pub fn bytes() -> Self {
        Payload {
            type_name: "spa-dat::Bytes",
            given_name: Some("Bytes"),
            format: PayloadFormat::Bytes,
        }
    }

    /// Any payload: the handler reads the whole `SpaMessage`.
    pub fn any() -> Self {
        Payload {
            type_name: "spa-dat::SpaMessage",
            given_name: Some("SpaMessage"),
            format: PayloadFormat::Any,
        }
    }

    /// The same payload under another name (the message's name in the document).
    pub fn named(self, name: &'static str) -> Self {
        Payload {
            given_name: Some(name),
            ..self
        }
    }

    /// The payload's name in the document: the given one, else the type's without module
    /// paths (`a::Page<b::Line>` is `Page<Line>`).
    pub fn name(&self) -> String {
        match self.given_name {
            Some(name) => name.to_owned(),
            None => without_paths(self.type_name),
        }
    }
}

/// `a::Page<b::Line, c::d::Id>` → `Page<Line, Id>`: every path cut to its last segment.
fn without_paths(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
    out
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
    fn names_lose_every_module_path() {
        struct Order;
        assert_eq!(Payload::json::<Order>().name(), "Order");
        assert_eq!(Payload::json::<u64>().name(), "u64");
        assert_eq!(Payload::json::<Vec<Order>>().name(), "Vec<Order>");
        assert_eq!(
            Payload::json::<std::collections::HashMap<String, Vec<Order>>>().name(),
            "HashMap<String, Vec<Order>>"
        );
        assert_eq!(Payload::text().named("Reading").name(), "Reading");
        assert_ne!(
            Payload::json::<Order>().type_name,
            Payload::json::<u32>().type_name
        );
    }
}
