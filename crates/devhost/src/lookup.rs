//! Case-insensitive lookup, as the host's .NET dictionaries compare header names, query keys,
//! JSON fields of configuration and answers, and app setting names (ASCII case only).

use serde_json::{Map, Value};

/// Whether two names are equal ignoring ASCII case.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether `names` holds `name`, ignoring case.
pub(crate) fn contains<S: AsRef<str>>(names: impl IntoIterator<Item = S>, name: &str) -> bool {
    names.into_iter().any(|n| same(n.as_ref(), name))
}

/// The value of the first entry whose key is `key` ignoring case (maps, or `.iter()` of pairs).
pub(crate) fn get<'a, K, V>(
    entries: impl IntoIterator<Item = (&'a K, &'a V)>,
    key: &str,
) -> Option<&'a V>
where
    K: AsRef<str> + ?Sized + 'a,
    V: ?Sized + 'a,
{
    entries
        .into_iter()
        .find(|(k, _)| same(k.as_ref(), key))
        .map(|(_, v)| v)
}

/// The value of the first pair whose key is `key` ignoring case.
pub(crate) fn get_pair<'a, K: AsRef<str>, V>(pairs: &'a [(K, V)], key: &str) -> Option<&'a V> {
    pairs
        .iter()
        .find(|(k, _)| same(k.as_ref(), key))
        .map(|(_, v)| v)
}

/// Like [`get_pair`], to change the value.
pub(crate) fn get_pair_mut<'a, K: AsRef<str>, V>(
    pairs: &'a mut [(K, V)],
    key: &str,
) -> Option<&'a mut V> {
    pairs
        .iter_mut()
        .find(|(k, _)| same(k.as_ref(), key))
        .map(|(_, v)| v)
}

/// The spelling under which `keys` already holds `key`, ignoring case.
pub(crate) fn existing_key<'a, K>(keys: impl IntoIterator<Item = &'a K>, key: &str) -> Option<&'a K>
where
    K: AsRef<str> + ?Sized + 'a,
{
    keys.into_iter().find(|k| same(k.as_ref(), key))
}

/// A key of a JSON object as .NET configuration reads it: the exact spelling, else the first
/// spelling that differs only in case.
pub(crate) fn json_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| get(map, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_are_found_in_any_case_and_the_first_wins() {
        let pairs = vec![
            ("Content-Type".to_owned(), "a".to_owned()),
            ("content-type".to_owned(), "b".to_owned()),
        ];
        assert_eq!(
            get_pair(&pairs, "CONTENT-TYPE").map(String::as_str),
            Some("a")
        );
        assert_eq!(get_pair(&pairs, "accept"), None);
    }

    #[test]
    fn a_json_field_prefers_its_exact_spelling() {
        let Value::Object(map) = json!({"Values": 1, "values": 2}) else {
            unreachable!()
        };
        assert_eq!(json_field(&map, "values"), Some(&json!(2)));
        assert_eq!(json_field(&map, "VALUES"), Some(&json!(1)));
        assert_eq!(get(&map, "values"), Some(&json!(1)));
    }

    #[test]
    fn names_are_contained_ignoring_case() {
        assert!(contains(["GET", "post"], "POST"));
        assert!(!contains(["GET"], "PUT"));
        assert_eq!(existing_key(["Http"].iter().copied(), "http"), Some("Http"));
    }
}
