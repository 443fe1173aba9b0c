//! Grouping items that come in runs of equal keys (partitions in topic order, bindings in
//! resource order), as Kafka answers and requests nest partitions under their topic.

/// `items` with consecutive equal keys gathered: one `(key, values)` per run, in order.
/// A key that comes back after another starts a new run (requests keep their order).
pub(crate) fn group_runs<K: PartialEq, V>(
    items: impl IntoIterator<Item = (K, V)>,
) -> Vec<(K, Vec<V>)> {
    let mut out: Vec<(K, Vec<V>)> = Vec::new();
    for (key, value) in items {
        match out.last_mut() {
            Some((last, values)) if *last == key => values.push(value),
            _ => out.push((key, vec![value])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_equal_keys_are_gathered_in_order() {
        let got = group_runs([("a", 0), ("a", 1), ("b", 0), ("a", 2)]);
        assert_eq!(got, [("a", vec![0, 1]), ("b", vec![0]), ("a", vec![2])]);
        assert!(group_runs(Vec::<(u8, u8)>::new()).is_empty());
    }
}
