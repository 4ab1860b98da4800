//! The options of `#[consumer(...)]` and `#[producer(...)]`.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::{Expr, ExprArray, Lit, LitStr};

use crate::expand::Kind;

/// Parsed options; every string keeps its span for error messages.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) topics: Option<Vec<LitStr>>,
    pub(crate) name: Option<LitStr>,
    pub(crate) group: Option<LitStr>,
    pub(crate) client_id: Option<LitStr>,
    pub(crate) client_name: Option<LitStr>,
    pub(crate) dead_letter: Option<LitStr>,
    /// The path of the spa-dat crate, for users who re-export it (`crate = "my::spa_dat"`).
    pub(crate) krate: Option<syn::Path>,
    /// Handlers at once.
    pub(crate) concurrency: Option<syn::LitInt>,
    /// `key`, `partition` or `none`, checked here.
    pub(crate) ordering: Option<LitStr>,
    /// Handler calls per message.
    pub(crate) attempts: Option<syn::LitInt>,
    /// Handler timeout in milliseconds.
    pub(crate) timeout_ms: Option<syn::LitInt>,
    /// Most messages per call of a batch handler.
    pub(crate) batch: Option<syn::LitInt>,
    /// Longest a batch waits for more messages, in milliseconds (0: no wait).
    pub(crate) batch_wait_ms: Option<syn::LitInt>,
    /// Kafka transactions.
    pub(crate) transactional: Option<syn::LitBool>,
    /// A function giving each message its ordering key: `fn(&Delivery) -> Option<Bytes>`.
    pub(crate) order_key: Option<syn::Path>,
    /// Topics the handler publishes to, for the AsyncAPI document.
    pub(crate) sends: Option<Vec<LitStr>>,
}

/// The orderings `ordering = "..."` takes.
pub(crate) const ORDERINGS: &[&str] = &["key", "key-else-none", "partition", "none"];

/// A positive integer option.
fn positive(value: syn::LitInt, key: &str) -> syn::Result<syn::LitInt> {
    match value.base10_parse::<u64>() {
        Ok(n) if n > 0 => Ok(value),
        _ => Err(syn::Error::new_spanned(
            &value,
            format!("`{key}` takes a whole number above 0"),
        )),
    }
}

const CONSUMER_OPTIONS: &[&str] = &[
    "topics",
    "name",
    "group",
    "client_id",
    "client_name",
    "dead_letter",
    "concurrency",
    "ordering",
    "order_key",
    "attempts",
    "timeout_ms",
    "batch",
    "batch_wait_ms",
    "transactional",
    "sends",
    "crate",
];
const PRODUCER_OPTIONS: &[&str] = &[
    "name",
    "client_id",
    "client_name",
    "transactional",
    "sends",
    "crate",
];

fn set<T>(slot: &mut Option<T>, value: T, key: &syn::Path) -> syn::Result<()> {
    if slot.is_some() {
        let name = key.get_ident().map(ToString::to_string).unwrap_or_default();
        return Err(syn::Error::new_spanned(
            key,
            format!("duplicate option `{name}`"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn topics_of(expr: Expr, key: &str) -> syn::Result<Vec<LitStr>> {
    match expr {
        Expr::Lit(lit) => match lit.lit {
            Lit::Str(topic) => Ok(vec![topic]),
            other => Err(syn::Error::new_spanned(
                other,
                "expected a topic string or a list of them",
            )),
        },
        Expr::Array(ExprArray {
            elems,
            bracket_token,
            ..
        }) => {
            if elems.is_empty() {
                return Err(syn::Error::new(
                    bracket_token.span.join(),
                    match key {
                        "topics" => "`topics` cannot be empty: a consumer needs at least one topic",
                        _ => "`sends` cannot be empty: leave it out instead",
                    },
                ));
            }
            elems
                .into_iter()
                .map(|elem| match elem {
                    Expr::Lit(syn::ExprLit {
                        lit: Lit::Str(topic),
                        ..
                    }) => {
                        if topic.value().is_empty() {
                            Err(syn::Error::new_spanned(topic, "a topic cannot be empty"))
                        } else {
                            Ok(topic)
                        }
                    }
                    other => Err(syn::Error::new_spanned(other, "expected a topic string")),
                })
                .collect()
        }
        other => Err(syn::Error::new_spanned(
            other,
            "expected a list of topics: `topics = [\"a\", \"b/+\"]`",
        )),
    }
}

/// Parses the attribute's options for `kind`; every error is collected.
pub(crate) fn parse(kind: Kind, attr: TokenStream) -> syn::Result<Options> {
    let valid = match kind {
        Kind::Consumer => CONSUMER_OPTIONS,
        Kind::Producer => PRODUCER_OPTIONS,
    };
    let mut options = Options::default();
    let mut errors: Vec<syn::Error> = Vec::new();
    let parser = syn::meta::parser(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        if !valid.contains(&key.as_str()) {
            let mut message = format!(
                "unknown option `{}` for #[{}]; expected one of: {}",
                if key.is_empty() {
                    "?".to_owned()
                } else {
                    key.clone()
                },
                kind.name(),
                valid.join(", ")
            );
            if kind == Kind::Producer && CONSUMER_OPTIONS.contains(&key.as_str()) {
                message.push_str(&format!(" (`{key}` is a #[consumer] option)"));
            }
            // Skip the value so the remaining options are still checked.
            if meta.input.peek(syn::Token![=]) {
                let _: Expr = meta.value()?.parse()?;
            }
            errors.push(syn::Error::new_spanned(&meta.path, message));
            return Ok(());
        }
        let result = if key == "topics" || key == "sends" {
            let expr: Expr = meta.value()?.parse()?;
            let slot = match key.as_str() {
                "topics" => &mut options.topics,
                _ => &mut options.sends,
            };
            topics_of(expr, &key).and_then(|topics| set(slot, topics, &meta.path))
        } else if matches!(
            key.as_str(),
            "concurrency" | "attempts" | "timeout_ms" | "batch"
        ) {
            let value: syn::LitInt = meta.value()?.parse()?;
            positive(value, &key).and_then(|value| {
                let slot = match key.as_str() {
                    "concurrency" => &mut options.concurrency,
                    "attempts" => &mut options.attempts,
                    "batch" => &mut options.batch,
                    _ => &mut options.timeout_ms,
                };
                set(slot, value, &meta.path)
            })
        } else if key == "batch_wait_ms" {
            let value: syn::LitInt = meta.value()?.parse()?;
            match value.base10_parse::<u64>() {
                Ok(_) => set(&mut options.batch_wait_ms, value, &meta.path),
                Err(_) => Err(syn::Error::new_spanned(
                    &value,
                    "`batch_wait_ms` takes a whole number of milliseconds",
                )),
            }
        } else if key == "transactional" {
            match meta.value()?.parse::<Expr>()? {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Bool(value),
                    ..
                }) => set(&mut options.transactional, value, &meta.path),
                other => Err(syn::Error::new_spanned(
                    other,
                    "`transactional` takes `true` or `false`",
                )),
            }
        } else if key == "ordering" {
            let value: LitStr = meta.value()?.parse()?;
            if ORDERINGS.contains(&value.value().as_str()) {
                set(&mut options.ordering, value, &meta.path)
            } else {
                Err(syn::Error::new_spanned(
                    &value,
                    format!("`ordering` is one of: {}", ORDERINGS.join(", ")),
                ))
            }
        } else if key == "order_key" {
            match meta.value()?.parse::<Expr>()? {
                Expr::Path(path) => set(&mut options.order_key, path.path, &meta.path),
                other => Err(syn::Error::new_spanned(
                    other,
                    "`order_key` takes the name of a function `fn(&Delivery) -> Option<Bytes>`",
                )),
            }
        } else if key == "crate" {
            let value: LitStr = meta.value()?.parse()?;
            value
                .parse::<syn::Path>()
                .map_err(|_| {
                    syn::Error::new_spanned(
                        &value,
                        "`crate` takes the path spa-dat is re-exported at, e.g. `crate = \"my_lib::spa_dat\"`",
                    )
                })
                .and_then(|path| set(&mut options.krate, path, &meta.path))
        } else {
            let value: LitStr = meta.value()?.parse()?;
            if value.value().is_empty() {
                Err(syn::Error::new_spanned(
                    &value,
                    format!("`{key}` cannot be empty"),
                ))
            } else {
                let slot = match key.as_str() {
                    "name" => &mut options.name,
                    "group" => &mut options.group,
                    "client_id" => &mut options.client_id,
                    "client_name" => &mut options.client_name,
                    _ => &mut options.dead_letter,
                };
                set(slot, value, &meta.path)
            }
        };
        if let Err(error) = result {
            errors.push(error);
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(attr) {
        errors.push(error);
    }
    if kind == Kind::Consumer && options.topics.is_none() && errors.is_empty() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "#[consumer] needs the topics it handles: `#[consumer(topics = [\"sensors/+\"])]`",
        ));
    }
    if let (Some(wait), None) = (&options.batch_wait_ms, &options.batch) {
        errors.push(syn::Error::new_spanned(
            wait,
            "`batch_wait_ms` needs `batch = n`: the most messages per call",
        ));
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(options),
        Some(mut first) => {
            first.extend(errors);
            Err(first)
        }
    }
}
