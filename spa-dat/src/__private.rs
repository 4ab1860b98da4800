//! Only for the output of `#[consumer]` / `#[producer]`; not a public API.

pub use inventory;

pub use crate::handler::call::BoxedHandler;
pub use crate::handler::registry::{OrderKeyFn, Registration};
pub use crate::handler::reply::IntoReply;
pub use crate::handler::HandlerKind;
pub use crate::runtime::MessageOrder;

/// Compile-time check, spanned on a handler argument's type.
pub const fn assert_from_context<T: crate::FromContext>() {}

/// Compile-time check, spanned on a handler's return type.
pub const fn assert_into_reply<T: crate::IntoReply>() {}

/// Compile-time check that a handler's future can run on a multi-threaded runtime.
pub fn assert_send_future<F: std::future::Future + Send>(_: &F) {}

pub use crate::handler::{PayloadSchema, PayloadSchemas};

/// The macro's probe for a payload type's JSON Schema: `(&Probe::<T>::NEW).__spa_dat_payload_schema()`
/// (a name no user trait in scope shares: a method of the same name would be ambiguous)
/// finds [`SchemaOfPayload`] when `T` is a `Json<U>` (or a batch, option or result of one)
/// with `U: JsonSchema` and the `schemars` feature is on, else [`NoPayloadSchema`] one
/// reference further (autoref specialization: a handler's types are concrete in its crate).
pub struct Probe<T: ?Sized>(core::marker::PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    /// The probe of `T`.
    pub const NEW: Self = Probe(core::marker::PhantomData);
}

/// The schema of a payload type whose JSON Schema is known.
pub trait SchemaOfPayload {
    /// `Some` schema maker.
    fn __spa_dat_payload_schema(&self) -> Option<PayloadSchema>;
}

/// Any other type: no schema.
pub trait NoPayloadSchema {
    /// `None`.
    fn __spa_dat_payload_schema(&self) -> Option<PayloadSchema> {
        None
    }
}

impl<T: ?Sized> NoPayloadSchema for &Probe<T> {}

/// Whether an argument type reads the payload (its `FromContext::payload`), found the same
/// way: a type that is no handler argument answers `false` instead of failing to compile a
/// second time (its own check names it).
pub trait ReadsPayload {
    /// `FromContext::payload().is_some()`.
    fn __spa_dat_reads_payload(&self) -> bool;
}

impl<T: crate::FromContext> ReadsPayload for Probe<T> {
    fn __spa_dat_reads_payload(&self) -> bool {
        T::payload().is_some()
    }
}

/// Any other type: no payload.
pub trait ReadsNoPayload {
    /// `false`.
    fn __spa_dat_reads_payload(&self) -> bool {
        false
    }
}

impl<T: ?Sized> ReadsNoPayload for &Probe<T> {}

/// The schema of the argument a handler takes its payload from: the first whose
/// `FromContext::payload` is `Some` (`(reads the payload, its schema)` per argument).
pub fn schema_of_payload_argument<const N: usize>(
    arguments: [(bool, Option<PayloadSchema>); N],
) -> Option<PayloadSchema> {
    arguments
        .into_iter()
        .find(|(reads_payload, _)| *reads_payload)
        .and_then(|(_, schema)| schema)
}

#[cfg(feature = "schemars")]
mod schemas {
    use super::{PayloadSchema, Probe, SchemaOfPayload};
    use crate::{Batch, Json};

    /// Where a handler's argument or return type keeps the `Json<U>` of its payload.
    pub trait JsonInside {
        /// The `U` of that `Json<U>`.
        type Inner;
    }

    impl<U> JsonInside for Json<U> {
        type Inner = U;
    }

    impl<U> JsonInside for Batch<Json<U>> {
        type Inner = U;
    }

    impl<U> JsonInside for Option<Json<U>> {
        type Inner = U;
    }

    impl<U, E> JsonInside for Result<Json<U>, E> {
        type Inner = U;
    }

    impl<U, E> JsonInside for Result<Option<Json<U>>, E> {
        type Inner = U;
    }

    impl<T: JsonInside> SchemaOfPayload for Probe<T>
    where
        T::Inner: schemars::JsonSchema,
    {
        fn __spa_dat_payload_schema(&self) -> Option<PayloadSchema> {
            Some(PayloadSchema {
                make: |generator| generator.subschema_for::<T::Inner>(),
            })
        }
    }
}
