//! Lenient decoding of the host's JSON, straight into our types.
//!
//! The host's serializer is not consistent across triggers and versions: keys arrive in any
//! casing, `Query` is an object or (older hosts) a query string, header values are arrays or
//! single scalars, `Body` is a string, absent, or already-parsed JSON. Decoding into a
//! `serde_json::Value` tree first and picking it apart cost a String per key and a map per
//! object, Metadata included, for every invocation; these visitors read each field once, into
//! its final shape, and leave what a function may never ask for (other bindings, Metadata) as
//! raw JSON text.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{
    DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    value::MapAccessDeserializer,
};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Headers, HttpRequest};

/// The visits of a visitor that reads objects only: for an array (skipped through) or any
/// scalar, its value is `$empty`. The `but_str` form leaves `visit_str` to the visitor.
macro_rules! not_this_shape {
    ($de:lifetime, $empty:expr) => {
        not_this_shape!($de, but_str, $empty);
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($empty)
        }
    };
    ($de:lifetime, but_str, $empty:expr) => {
        fn visit_seq<A: SeqAccess<$de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            skip_seq(seq).map(|()| $empty)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($empty)
        }
    };
}

/// Reads an object key as its position in `names` (matched case-insensitively), or `None` for
/// any other key, without allocating it.
struct KeyIn(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyIn {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIn {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self
            .0
            .iter()
            .position(|name| name.eq_ignore_ascii_case(key)))
    }
}

/// A JSON object's members with their values still raw.
#[derive(Debug, Default)]
pub(super) struct RawObject(pub(super) Vec<(String, Box<RawValue>)>);

impl RawObject {
    /// A member by name: exact first (the last of repeated ones, as a JSON object keeps it),
    /// then case-insensitive.
    pub(super) fn get(&self, name: &str) -> Option<&RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .or_else(|| self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| &**v)
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Members)
    }
}

/// Reads an object's members, raw.
struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = RawObject;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
            members.push(member);
        }
        Ok(RawObject(members))
    }
}

/// An object whose shape is only informational (Metadata): anything else reads as empty.
pub(super) struct Informational(pub(super) RawObject);

impl<'de> Deserialize<'de> for Informational {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyShape;
        impl<'de> Visitor<'de> for AnyShape {
            type Value = Informational;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Informational, A::Error> {
                Members.visit_map(map).map(Informational)
            }
            not_this_shape!('de, Informational(RawObject::default()));
        }
        deserializer.deserialize_any(AnyShape)
    }
}

/// The envelope's two sections, raw; other top-level members are skipped. `Data` may be null or
/// absent (no bindings) but nothing else than an object; `Metadata` may be anything.
#[derive(Debug, Default)]
pub(super) struct Envelope {
    pub(super) data: RawObject,
    /// Kept whole: most functions never look at it, and it repeats much of the request.
    pub(super) metadata: Option<Box<RawValue>>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Sections;
        impl<'de> Visitor<'de> for Sections {
            type Value = Envelope;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an invocation object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut envelope = Envelope::default();
                while let Some(key) = map.next_key_seed(KeyIn(&["Data", "Metadata"]))? {
                    match key {
                        Some(0) => {
                            envelope.data =
                                map.next_value::<Option<RawObject>>()?.unwrap_or_default();
                        }
                        Some(_) => envelope.metadata = Some(map.next_value()?),
                        None => drop(map.next_value::<IgnoredAny>()?),
                    }
                }
                Ok(envelope)
            }
        }
        deserializer.deserialize_map(Sections)
    }
}

/// `Data.<binding>` of an HTTP trigger, decoded straight into [`HttpRequest`]; the error says
/// why it is not a request, without failing the JSON parse.
pub(super) struct WireRequest(pub(super) Result<HttpRequest, &'static str>);

impl<'de> Deserialize<'de> for WireRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Request;
        impl<'de> Visitor<'de> for Request {
            type Value = WireRequest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP request object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireRequest, A::Error> {
                let mut method = None;
                let mut request = HttpRequest::default();
                const FIELDS: &[&str] = &["Method", "Url", "Query", "Headers", "Params", "Body"];
                while let Some(field) = map.next_key_seed(KeyIn(FIELDS))? {
                    match field.map(|i| FIELDS[i]) {
                        Some("Method") => {
                            method = match map.next_value::<Value>()? {
                                Value::String(m) if m.bytes().any(|b| b.is_ascii_lowercase()) => {
                                    Some(m.to_ascii_uppercase())
                                }
                                Value::String(m) => Some(m),
                                _ => None,
                            };
                        }
                        Some("Url") => {
                            request.url = match map.next_value::<Value>()? {
                                Value::String(url) => url,
                                _ => String::new(),
                            };
                        }
                        Some("Query") => request.query = map.next_value::<Query>()?.0,
                        Some("Headers") => request.headers = map.next_value::<WireHeaders>()?.0,
                        Some("Params") => request.params = map.next_value::<Params>()?.0,
                        Some("Body") => {
                            request.body = match map.next_value::<Value>()? {
                                Value::Null => None,
                                Value::String(text) => Some(text),
                                // Some host versions hand over a JSON body already parsed.
                                other => Some(other.to_string()),
                            };
                        }
                        _ => drop(map.next_value::<IgnoredAny>()?),
                    }
                }
                Ok(WireRequest(match method {
                    Some(method) => {
                        request.method = method;
                        Ok(request)
                    }
                    None => Err("it has no Method"),
                }))
            }
            not_this_shape!('de, WireRequest(Err("it is not an object")));
        }
        deserializer.deserialize_any(Request)
    }
}

/// The visits of a visitor that turns any value but an array into text (strings as they are,
/// null empty, anything else its JSON) and then evaluates `$finish` with `$this` (the visitor)
/// and `$text` bound.
macro_rules! text_of_non_arrays {
    ($de:lifetime, |$this:ident, $text:ident| $finish:expr) => {
        fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
            let ($this, $text) = (self, value.to_owned());
            Ok($finish)
        }
        fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
            let ($this, $text) = (self, value);
            Ok($finish)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            let ($this, $text) = (self, String::new());
            Ok($finish)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            let ($this, $text) = (self, String::new());
            Ok($finish)
        }
        fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
            let ($this, $text) = (self, value.to_string());
            Ok($finish)
        }
        fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
            let ($this, $text) = (self, value.to_string());
            Ok($finish)
        }
        fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
            let ($this, $text) = (self, value.to_string());
            Ok($finish)
        }
        fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
            let ($this, $text) = (self, Value::from(value).to_string());
            Ok($finish)
        }
        fn visit_map<A: MapAccess<$de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let object = Value::deserialize(MapAccessDeserializer::new(map))?;
            let ($this, $text) = (self, object.to_string());
            Ok($finish)
        }
    };
}

/// A JSON value as text: strings as they are, null empty, arrays comma-joined, anything else
/// its JSON.
pub(super) struct Text(pub(super) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl<'de> Visitor<'de> for Scalar {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                let mut parts = Vec::new();
                while let Some(Text(part)) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(Text(parts.join(",")))
            }
            text_of_non_arrays!('de, |_scalar, text| Text(text));
        }
        deserializer.deserialize_any(Scalar)
    }
}

/// One header's values, an array of scalars (what the host sends) or one scalar, each pushed
/// as a (name, value) pair.
struct ValuesOf<'a> {
    name: String,
    into: &'a mut Vec<(String, String)>,
}

impl<'de> DeserializeSeed<'de> for ValuesOf<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValuesOf<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("header values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(Text(value)) = seq.next_element()? {
            self.into.push((self.name.clone(), value));
        }
        Ok(())
    }
    text_of_non_arrays!('de, |this, text| this.into.push((this.name, text)));
}

/// `Headers`: an object of name → values; anything else reads as no headers.
struct WireHeaders(Headers);

impl<'de> Deserialize<'de> for WireHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = WireHeaders;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("request headers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireHeaders, A::Error> {
                let mut headers = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(name) = map.next_key::<String>()? {
                    map.next_value_seed(ValuesOf {
                        name,
                        into: &mut headers,
                    })?;
                }
                Ok(WireHeaders(Headers(headers)))
            }
            not_this_shape!('de, WireHeaders(Headers::default()));
        }
        deserializer.deserialize_any(Names)
    }
}

/// `Query`: an object of scalars, or (older hosts) a query string; anything else is empty.
struct Query(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Query {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Query;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a query")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Query, A::Error> {
                let mut pairs = BTreeMap::new();
                while let Some((name, Text(value))) = map.next_entry::<String, Text>()? {
                    pairs.insert(name, value);
                }
                Ok(Query(pairs))
            }
            fn visit_str<E>(self, query: &str) -> Result<Query, E> {
                Ok(Query(
                    url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect(),
                ))
            }
            not_this_shape!('de, but_str, Query(BTreeMap::new()));
        }
        deserializer.deserialize_any(Pairs)
    }
}

/// `Params`: route parameters; null ones (an optional segment left out) are dropped.
struct Params(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("route parameters")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut pairs = BTreeMap::new();
                while let Some((name, value)) = map.next_entry::<String, Option<Text>>()? {
                    if let Some(Text(text)) = value {
                        pairs.insert(name, text);
                    }
                }
                Ok(Params(pairs))
            }
            not_this_shape!('de, Params(BTreeMap::new()));
        }
        deserializer.deserialize_any(Pairs)
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}
