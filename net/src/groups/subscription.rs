//! Consumer group subscriptions: topic names and KIP-848 regular expressions, resolved
//! against the cluster's topics.
//!
//! Kafka compiles `SubscribedTopicRegex` with RE2/J and matches whole topic names. Here
//! the `regex` crate does it (also linear-time, no backtracking), anchored at both ends,
//! over bytes with Unicode classes off, which is RE2/J's behaviour for the ASCII names
//! topics have. Where the two differ: RE2/J accepts `\Q…\E` quoting and `\C`, which this
//! rejects (INVALID_REGULAR_EXPRESSION); Rust accepts a few forms RE2/J rejects
//! (`(?<name>…)` before RE2/J 1.7, the `(?x)` verbose flag's comments, class set
//! operations such as `[a-z&&[^x]]`), which then match as Rust reads them.
//!
//! Bounded: a regex's length (`REGEX_BYTES_MAX`), its compiled size and nesting, and the
//! topic names a member may list (`SUBSCRIBED_TOPICS_MAX`).

use std::collections::BTreeMap;

use regex::bytes::{Regex, RegexBuilder};
use sluice_control::TopicId;

use crate::broker::catalog::is_internal_topic;

/// The longest regex accepted (bytes).
pub const REGEX_BYTES_MAX: usize = 4096;
/// Compiled program and lazy-DFA cache size per regex: bounds what a hostile pattern
/// (`(a{1000}){1000}`) may cost to compile and match.
const REGEX_COMPILED_BYTES_MAX: usize = 1 << 20;
/// Parenthesis / repetition nesting accepted.
const REGEX_NEST_MAX: u32 = 64;
/// Topic names one member may subscribe to by name.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// The cluster's topics as a subscription sees them.
pub trait TopicSource {
    /// Moves whenever the topics may have changed.
    fn version(&self) -> u64;
    /// A topic's id and partition count.
    fn topic(&self, name: &str) -> Option<(TopicId, i32)>;
    /// Every topic: name, id, partition count.
    fn each(&self, f: &mut dyn FnMut(&str, TopicId, i32));
}

/// Compiles a subscription regex; why not, for INVALID_REGULAR_EXPRESSION.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > REGEX_BYTES_MAX {
        return Err(format!(
            "the regular expression is {} bytes, more than {REGEX_BYTES_MAX}",
            pattern.len()
        ));
    }
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .unicode(false)
        .size_limit(REGEX_COMPILED_BYTES_MAX)
        .dfa_size_limit(REGEX_COMPILED_BYTES_MAX)
        .nest_limit(REGEX_NEST_MAX)
        .build()
        .map_err(|e| e.to_string())
}

/// Whether a member subscribing to `names` and `regex` reads topic `name`. No regex
/// subscribes to an internal topic (as Kafka's `exclude.internal.topics`).
pub fn matches(names: &[String], regex: Option<&Regex>, name: &str) -> bool {
    names.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
        || regex.is_some_and(|r| !is_internal_topic(name) && r.is_match(name.as_bytes()))
}

/// The topics some member subscribes to (names sorted, each with its regex): id →
/// (name, partition count). Each distinct regex is matched once against every topic.
pub fn resolve<'a>(
    members: impl Iterator<Item = (&'a [String], Option<&'a Regex>)>,
    topics: &dyn TopicSource,
) -> BTreeMap<TopicId, (String, i32)> {
    let mut out = BTreeMap::new();
    let mut regexes: BTreeMap<&str, &Regex> = BTreeMap::new();
    for (names, regex) in members {
        for n in names {
            if let Some((id, count)) = topics.topic(n) {
                out.insert(id, (n.clone(), count));
            }
        }
        if let Some(r) = regex {
            regexes.insert(r.as_str(), r);
        }
    }
    if !regexes.is_empty() {
        topics.each(&mut |name, id, count| {
            if !is_internal_topic(name) && regexes.values().any(|r| r.is_match(name.as_bytes())) {
                out.insert(id, (name.to_string(), count));
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<(&'static str, u128, i32)>);

    impl TopicSource for Fixed {
        fn version(&self) -> u64 {
            1
        }
        fn topic(&self, name: &str) -> Option<(TopicId, i32)> {
            self.0
                .iter()
                .find(|t| t.0 == name)
                .map(|t| (TopicId(t.1), t.2))
        }
        fn each(&self, f: &mut dyn FnMut(&str, TopicId, i32)) {
            for t in &self.0 {
                f(t.0, TopicId(t.1), t.2);
            }
        }
    }

    #[test]
    fn regexes_match_whole_names_as_librdkafka_sends_them() {
        // librdkafka joins its `^` patterns as `(^a.*)|(^b)`.
        let r = compile("(^orders-.*)|(^audit)").unwrap();
        let names = vec!["plain".to_string()];
        assert!(matches(&names, Some(&r), "orders-eu"));
        assert!(matches(&names, Some(&r), "audit"));
        assert!(!matches(&names, Some(&r), "audit-2"), "whole names only");
        assert!(matches(&names, Some(&r), "plain"));
        assert!(!matches(
            &[],
            Some(&compile(".*").unwrap()),
            OFFSETS_TOPIC_NAME
        ));
        let topics = Fixed(vec![("orders-eu", 1, 3), ("audit", 2, 1), ("other", 3, 2)]);
        let got = resolve([(names.as_slice(), Some(&r))].into_iter(), &topics);
        assert_eq!(got.len(), 2);
        assert_eq!(got[&TopicId(1)], ("orders-eu".to_string(), 3));
    }

    const OFFSETS_TOPIC_NAME: &str = super::super::OFFSETS_TOPIC;

    #[test]
    fn absurd_regexes_are_refused_not_compiled_forever() {
        assert!(compile("(").is_err());
        assert!(
            compile(r"\Qa.b\E").is_err(),
            "RE2/J quoting is not supported"
        );
        assert!(compile(&"a".repeat(REGEX_BYTES_MAX + 1)).is_err());
        assert!(
            compile("(a{1000}){1000}").is_err(),
            "compiled size is bounded"
        );
        assert!(compile(&format!("{}a{}", "(".repeat(100), ")".repeat(100))).is_err());
        assert!(compile(r"(a|b)*\d+").is_ok());
    }
}
