//! Attribute macros of spa-dat. Use them through the `spa-dat` crate (`spa_dat::consumer`,
//! `spa_dat::producer`); they only validate and register, all logic lives in `spa-dat`.

mod args;
mod expand;

use proc_macro::TokenStream;

/// Registers an async fn as a consumer. See `spa_dat::consumer`.
#[proc_macro_attribute]
pub fn consumer(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler(expand::Kind::Consumer, attr.into(), item.into()).into()
}

/// Registers an async fn as a producer. See `spa_dat::producer`.
#[proc_macro_attribute]
pub fn producer(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler(expand::Kind::Producer, attr.into(), item.into()).into()
}
