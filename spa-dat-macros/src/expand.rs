//! Expansion: the function unchanged, one compile-time check per argument (spanned on it),
//! and an `inventory` registration.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, ReturnType};

use crate::args::{self, Options};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Consumer,
    Producer,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Consumer => "consumer",
            Kind::Producer => "producer",
        }
    }
}

pub(crate) fn handler(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        // Keep the item so the IDE and the rest of the crate still see it.
        Err(error) => {
            let error = error.to_compile_error();
            return quote! { #item #error };
        }
    };
    let options = args::parse(kind, attr);
    let signature = check_signature(kind, &function);
    let (options, ()) = match (options, signature) {
        (Ok(options), Ok(())) => (options, ()),
        (Err(mut a), Err(b)) => {
            a.combine(b);
            return with_error(&function, a);
        }
        (Err(error), _) | (_, Err(error)) => return with_error(&function, error),
    };
    let registration = register(kind, &function, &options);
    quote! {
        #function
        #registration
    }
}

fn with_error(function: &ItemFn, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote! { #function #error }
}

fn check_signature(kind: Kind, function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    let mut errors: Vec<syn::Error> = Vec::new();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!("#[{}] handlers must be `async fn`", kind.name()),
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!("#[{}] handlers cannot be generic", kind.name()),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "handlers cannot be variadic",
        ));
    }
    for input in &sig.inputs {
        if let FnArg::Receiver(receiver) = input {
            errors.push(syn::Error::new_spanned(
                receiver,
                format!(
                    "#[{}] handlers are free functions; `self` cannot be passed",
                    kind.name()
                ),
            ));
        }
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(mut first) => {
            for error in errors {
                first.combine(error);
            }
            Err(first)
        }
    }
}

fn optional(value: &Option<LitStr>) -> TokenStream {
    match value {
        Some(value) => quote! { ::core::option::Option::Some(#value) },
        None => quote! { ::core::option::Option::None },
    }
}

/// Whether `ty` can be written in a turbofish outside the function: not an `impl Trait`, not
/// `Self`.
fn names_a_concrete_type(ty: &syn::Type) -> bool {
    fn clean(tokens: TokenStream) -> bool {
        tokens.into_iter().all(|token| match token {
            proc_macro2::TokenTree::Ident(ident) => ident != "impl" && ident != "Self",
            proc_macro2::TokenTree::Group(group) => clean(group.stream()),
            _ => true,
        })
    }
    clean(quote! { #ty })
}

fn register(kind: Kind, function: &ItemFn, options: &Options) -> TokenStream {
    let ident = &function.sig.ident;
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let krate = match &options.krate {
        Some(path) => quote! { #path },
        None => quote! { ::spa_dat },
    };
    let kind_path = match kind {
        Kind::Consumer => quote! { #krate::__private::HandlerKind::Consumer },
        Kind::Producer => quote! { #krate::__private::HandlerKind::Producer },
    };
    let topics = options.topics.clone().unwrap_or_default();
    let sends = options.sends.clone().unwrap_or_default();
    let group = optional(&options.group);
    let client_id = optional(&options.client_id);
    let client_name = optional(&options.client_name);
    let dead_letter = optional(&options.dead_letter);
    let number = |value: &Option<syn::LitInt>| match value {
        Some(value) => quote! { ::core::option::Option::Some(#value) },
        None => quote! { ::core::option::Option::None },
    };
    let concurrency = number(&options.concurrency);
    let attempts = number(&options.attempts);
    let timeout_ms = number(&options.timeout_ms);
    let batch = number(&options.batch);
    let batch_wait_ms = number(&options.batch_wait_ms);
    let transactional = options
        .transactional
        .as_ref()
        .is_some_and(syn::LitBool::value);
    let ordering = match options.ordering.as_ref().map(LitStr::value).as_deref() {
        Some("key") => {
            quote! { ::core::option::Option::Some(#krate::__private::MessageOrder::Key) }
        }
        Some("partition") => {
            quote! { ::core::option::Option::Some(#krate::__private::MessageOrder::Partition) }
        }
        Some("key-else-none") => quote! {
            ::core::option::Option::Some(#krate::__private::MessageOrder::KeyElseUnordered)
        },
        Some(_) => {
            quote! { ::core::option::Option::Some(#krate::__private::MessageOrder::Unordered) }
        }
        None => quote! { ::core::option::Option::None },
    };

    let order_key = match &options.order_key {
        // A binding, not a cast: a function of another signature is a type mismatch on its
        // name.
        Some(path) => quote_spanned! {path.span()=>
            ::core::option::Option::Some({
                let order_key: #krate::__private::OrderKeyFn = #path;
                order_key
            })
        },
        None => quote! { ::core::option::Option::None },
    };

    let arg_types: Vec<&syn::Type> = function
        .sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) => Some(&*typed.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let arg_checks = arg_types.iter().map(|ty| {
        quote_spanned! {ty.span()=>
            const _: () = #krate::__private::assert_from_context::<#ty>();
        }
    });
    let return_check = match &function.sig.output {
        ReturnType::Default => quote! {},
        ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
            const _: () = #krate::__private::assert_into_reply::<#ty>();
        },
    };
    // Each payload type's JSON Schema, where the `schemars` feature finds one (the probe's
    // docs in spa-dat's __private); a type the probe cannot name has none.
    let probe = |ty: &syn::Type| match names_a_concrete_type(ty) {
        true => quote! { (&#krate::__private::Probe::<#ty>::NEW).__spa_dat_payload_schema() },
        false => quote! { ::core::option::Option::None },
    };
    // The schema of the argument the payload is taken from, not of another `Json<_>`.
    let takes_probes: Vec<TokenStream> = arg_types
        .iter()
        .map(|ty| match names_a_concrete_type(ty) {
            true => {
                let schema = probe(ty);
                quote! { ((&#krate::__private::Probe::<#ty>::NEW).__spa_dat_reads_payload(), #schema) }
            }
            false => quote! { (false, ::core::option::Option::None) },
        })
        .collect();
    let reply_probe = match &function.sig.output {
        ReturnType::Default => quote! { ::core::option::Option::None },
        ReturnType::Type(_, ty) => probe(ty),
    };
    let arg_names: Vec<_> = (0..arg_types.len())
        .map(|i| format_ident!("__spa_arg{}", i, span = Span::mixed_site()))
        .collect();
    let send_check = quote_spanned! {ident.span()=>
        #[allow(unused)]
        fn __spa_assert_send() {
            let _ = |#(#arg_names: #arg_types),*| {
                #krate::__private::assert_send_future(&#ident(#(#arg_names),*));
            };
        }
    };
    quote! {
        #[doc(hidden)]
        const _: () = {
            #(#arg_checks)*
            #return_check
            #send_check
            #krate::__private::inventory::submit! {
                #krate::__private::Registration {
                    kind: #kind_path,
                    name: #name,
                    module: ::core::module_path!(),
                    topics: &[#(#topics),*],
                    group: #group,
                    client_id: #client_id,
                    client_name: #client_name,
                    dead_letter_topic: #dead_letter,
                    concurrency: #concurrency,
                    ordering: #ordering,
                    order_key: #order_key,
                    attempts: #attempts,
                    timeout_ms: #timeout_ms,
                    batch: #batch,
                    batch_wait_ms: #batch_wait_ms,
                    transactional: #transactional,
                    sends: &[#(#sends),*],
                    make_handler: {
                        fn __spa_make_handler() -> #krate::__private::BoxedHandler {
                            #[allow(unused_imports)]
                            use #krate::__private::{
                                NoPayloadSchema as _, ReadsNoPayload as _, ReadsPayload as _,
                                SchemaOfPayload as _,
                            };
                            #krate::__private::BoxedHandler::new(#ident).with_schemas(
                                #krate::__private::PayloadSchemas {
                                    takes: #krate::__private::schema_of_payload_argument([#(#takes_probes),*]),
                                    replies: #reply_probe,
                                },
                            )
                        }
                        __spa_make_handler
                    },
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    //! Snapshots of the expansion: a change in generated code shows in review
    //! (`cargo insta review`, or `INSTA_UPDATE=always cargo test -p spa-dat-macros`).

    use super::*;

    fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> String {
        let expanded = handler(kind, attr, item);
        match syn::parse2::<syn::File>(expanded.clone()) {
            Ok(file) => prettyplease::unparse(&file),
            Err(_) => expanded.to_string(),
        }
    }

    #[test]
    fn consumer_with_every_option() {
        insta::assert_snapshot!(expand(
            Kind::Consumer,
            quote! {
                topics = ["sensors/+/temp", "sensors/${SITE}/humidity"], name = "averager",
                group = "averagers", client_id = "avg-1", client_name = "Averager",
                dead_letter = "dead-letters", concurrency = 64, ordering = "key",
                order_key = keys::by_sensor, attempts = 5, timeout_ms = 2000, batch = 500,
                batch_wait_ms = 20
            },
            quote! {
                async fn average(message: SpaMessage, state: State<Readings>) -> Option<SpaMessage> {
                    state.add(message).await
                }
            },
        ));
    }

    #[test]
    fn consumer_with_one_topic_and_no_arguments() {
        insta::assert_snapshot!(expand(
            Kind::Consumer,
            quote! { topics = "ticks" },
            quote! { async fn tick() {} },
        ));
    }

    #[test]
    fn producer_through_a_re_exported_crate() {
        insta::assert_snapshot!(expand(
            Kind::Producer,
            quote! { crate = "my_platform::spa_dat", name = "starter" },
            quote! {
                async fn start(socket: Socket) -> Result<(), Error> {
                    socket.publish(SpaMessage::new("go", "")).await
                }
            },
        ));
    }

    #[test]
    fn errors_keep_the_function_and_name_each_problem() {
        insta::assert_snapshot!(expand(
            Kind::Consumer,
            quote! { topics = [], colour = "blue", concurrency = 0, ordering = "random", batch_wait_ms = 5 },
            quote! { fn not_async(self) {} },
        ));
    }
}
