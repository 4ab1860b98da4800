//! `${NAME}` in an application's topics, group and dead-letter topic: taken from the
//! environment when the application starts, so one binary serves several deployments
//! (`#[consumer(topics = ["plant/${SITE}/temp"])]`). A variable that is not set fails the
//! start, naming it — never a subscription to a literal `${SITE}`.

/// `text` with every `${NAME}` replaced by the environment variable `NAME`.
pub(crate) fn expand(text: &str) -> Result<String, String> {
    expand_with(text, |name| std::env::var(name).ok())
}

/// Topics with their placeholders expanded; a topic that is one placeholder alone may name
/// several, comma-separated (`topics = ["${ORDER_TOPICS}"]` with `ORDER_TOPICS=a,b`).
pub(crate) fn expand_topics(topics: &[String]) -> Result<Vec<String>, String> {
    expand_topics_with(topics, |name| std::env::var(name).ok())
}

fn expand_topics_with(
    topics: &[String],
    lookup: impl Fn(&str) -> Option<String> + Copy,
) -> Result<Vec<String>, String> {
    let mut expanded = Vec::with_capacity(topics.len());
    for topic in topics {
        let value = expand_with(topic, lookup)?;
        let alone =
            topic.starts_with("${") && topic.ends_with('}') && topic.matches("${").count() == 1;
        if alone {
            expanded.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        } else {
            expanded.push(value);
        }
    }
    Ok(expanded)
}

pub(crate) fn expand_with(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("`{text}`: `${{` without a closing `}}`"));
        };
        let name = &after[..end];
        if name.is_empty() {
            return Err(format!("`{text}`: `${{}}` names no variable"));
        }
        match lookup(name).filter(|value| !value.trim().is_empty()) {
            Some(value) => out.push_str(&value),
            None => {
                return Err(format!(
                    "`{text}` takes `{name}` from the environment, and it is not set"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SITE" => Some("berlin".into()),
            "TOPICS" => Some("a, b/+".into()),
            "EMPTY" => Some(" ".into()),
            _ => None,
        }
    }

    #[test]
    fn placeholders_come_from_the_environment_and_a_missing_one_is_named() {
        assert_eq!(
            expand_with("plant/${SITE}/temp", env).as_deref(),
            Ok("plant/berlin/temp")
        );
        assert_eq!(
            expand_with("no placeholder", env).as_deref(),
            Ok("no placeholder")
        );
        let missing = expand_with("plant/${REGION}", env).expect_err("not set");
        assert!(missing.contains("`REGION`"), "{missing}");
        assert!(
            expand_with("x/${EMPTY}", env).is_err(),
            "blank counts as not set"
        );
        assert!(expand_with("x/${SITE", env).is_err());
        assert_eq!(
            expand_topics_with(&["${TOPICS}".into(), "p/${SITE}".into()], env),
            Ok(vec!["a".into(), "b/+".into(), "p/berlin".into()])
        );
    }
}
