//! WIT values as JSON and back: what `POST /rpc/...` speaks.
//!
//! | WIT | JSON |
//! |---|---|
//! | bool, integers, floats | booleans, numbers (in range, integers whole) |
//! | char, string | strings (a char is one character) |
//! | record | an object keyed by field name (a missing `option` field is none) |
//! | list, tuple | an array |
//! | option | `null` for none, else the value (so `option<option<T>>` cannot say some(none)) |
//! | result | `{"ok": value}` or `{"err": value}` (`null` where the side has no type) |
//! | variant | `{"case": payload}`, or `"case"` for a case without one |
//! | enum | the case name |
//! | flags | an array of the names that are set |
//! | map | an object when keys are strings, else an array of `[key, value]` pairs |
//!
//! Resources, futures and streams have no JSON form. Converting in, every
//! mismatch says where it is (`order.lines[2].qty`) and what was expected.
//! Pure data in, pure data out: it never touches an instance.

use serde_json::{Map, Number, Value};
use wasmtime::component::Val;

use crate::signature::{Signature, WitType};

/// Why JSON does not fit a WIT type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {problem}")]
pub struct Mismatch {
    /// Where: a parameter name, then fields and indices (`order.lines[2]`).
    pub at: String,
    pub problem: String,
}

/// The arguments of a call to a function of type `signature`, from `body`:
/// an object keyed by parameter name, or an array in parameter order.
/// `null` stands for no arguments.
pub fn arguments(signature: &Signature, body: &Value) -> Result<Vec<Val>, Mismatch> {
    let params = &signature.params;
    let expected = || {
        params
            .iter()
            .map(|(n, t)| format!("{n}: {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match body {
        Value::Null if params.is_empty() => Ok(Vec::new()),
        Value::Array(values) => {
            if values.len() != params.len() {
                return Err(Mismatch {
                    at: "arguments".into(),
                    problem: format!(
                        "expected {} ({}), got {}",
                        params.len(),
                        expected(),
                        values.len()
                    ),
                });
            }
            params
                .iter()
                .zip(values)
                .map(|((name, ty), value)| from_json(ty, value, name))
                .collect()
        }
        Value::Object(fields) => {
            if let Some(unknown) = fields.keys().find(|k| !params.iter().any(|(n, _)| n == *k)) {
                return Err(Mismatch {
                    at: unknown.clone(),
                    problem: format!("no such parameter (the parameters are {})", expected()),
                });
            }
            params
                .iter()
                .map(|(name, ty)| field(ty, fields.get(name), name, "parameter"))
                .collect()
        }
        other => Err(Mismatch {
            at: "arguments".into(),
            problem: format!(
                "expected an object keyed by parameter name or an array ({}), got {}",
                expected(),
                kind(other)
            ),
        }),
    }
}

/// The value of a record field or parameter that may be absent: an absent
/// option is none.
fn field(ty: &WitType, value: Option<&Value>, at: &str, what: &str) -> Result<Val, Mismatch> {
    match (value, ty) {
        (Some(value), _) => from_json(ty, value, at),
        (None, WitType::Option(_)) => Ok(Val::Option(None)),
        (None, _) => Err(Mismatch {
            at: at.to_string(),
            problem: format!("missing {what} of type {ty}"),
        }),
    }
}

/// `value` as a value of type `ty`; `at` says where it is, for errors.
pub fn from_json(ty: &WitType, value: &Value, at: &str) -> Result<Val, Mismatch> {
    let wrong = || Mismatch {
        at: at.to_string(),
        problem: format!("expected {ty}, got {}", shown(value)),
    };
    let integer = |min: i128, max: i128| -> Result<i128, Mismatch> {
        let n = match value {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from)),
            _ => None,
        };
        n.filter(|n| (min..=max).contains(n)).ok_or_else(wrong)
    };
    Ok(match ty {
        WitType::Bool => Val::Bool(value.as_bool().ok_or_else(wrong)?),
        WitType::S8 => Val::S8(integer(i8::MIN.into(), i8::MAX.into())? as i8),
        WitType::U8 => Val::U8(integer(0, u8::MAX.into())? as u8),
        WitType::S16 => Val::S16(integer(i16::MIN.into(), i16::MAX.into())? as i16),
        WitType::U16 => Val::U16(integer(0, u16::MAX.into())? as u16),
        WitType::S32 => Val::S32(integer(i32::MIN.into(), i32::MAX.into())? as i32),
        WitType::U32 => Val::U32(integer(0, u32::MAX.into())? as u32),
        WitType::S64 => Val::S64(integer(i64::MIN.into(), i64::MAX.into())? as i64),
        WitType::U64 => Val::U64(integer(0, u64::MAX.into())? as u64),
        WitType::F32 => Val::Float32(value.as_f64().ok_or_else(wrong)? as f32),
        WitType::F64 => Val::Float64(value.as_f64().ok_or_else(wrong)?),
        WitType::Char => {
            let text = value.as_str().ok_or_else(wrong)?;
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(wrong()),
            }
        }
        WitType::String => Val::String(value.as_str().ok_or_else(wrong)?.to_string()),
        WitType::List(item) => Val::List(elements(item, value, at).ok_or_else(wrong)??),
        WitType::FixedList(item, len) => {
            let items = elements(item, value, at).ok_or_else(wrong)??;
            if items.len() != *len as usize {
                return Err(wrong());
            }
            Val::FixedLengthList(items)
        }
        WitType::Map(key, item) => Val::Map(map(key, item, value, at).ok_or_else(wrong)??),
        WitType::Record(fields) => {
            let object = value.as_object().ok_or_else(wrong)?;
            if let Some(unknown) = object.keys().find(|k| !fields.iter().any(|(n, _)| n == *k)) {
                return Err(Mismatch {
                    at: format!("{at}.{unknown}"),
                    problem: format!("no such field in {ty}"),
                });
            }
            Val::Record(
                fields
                    .iter()
                    .map(|(name, ty)| {
                        let at = format!("{at}.{name}");
                        Ok((name.clone(), field(ty, object.get(name), &at, "field")?))
                    })
                    .collect::<Result<_, Mismatch>>()?,
            )
        }
        WitType::Tuple(types) => {
            let items = value.as_array().ok_or_else(wrong)?;
            if items.len() != types.len() {
                return Err(wrong());
            }
            Val::Tuple(
                types
                    .iter()
                    .zip(items)
                    .enumerate()
                    .map(|(i, (ty, v))| from_json(ty, v, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        WitType::Option(inner) => match value {
            Value::Null => Val::Option(None),
            value => Val::Option(Some(Box::new(from_json(inner, value, at)?))),
        },
        WitType::Result { ok, err } => {
            let (case, payload) = single_key(value).ok_or_else(wrong)?;
            let side = match case {
                "ok" => ok,
                "err" => err,
                _ => return Err(wrong()),
            };
            let payload = payload_of(side.as_deref(), payload, &format!("{at}.{case}"))?;
            Val::Result(if case == "ok" {
                Ok(payload)
            } else {
                Err(payload)
            })
        }
        WitType::Variant(cases) => {
            let (case, payload) = match value {
                Value::String(case) => (case.as_str(), &Value::Null),
                value => single_key(value).ok_or_else(wrong)?,
            };
            let Some((name, case_ty)) = cases.iter().find(|(n, _)| n == case) else {
                return Err(wrong());
            };
            let payload = payload_of(case_ty.as_ref(), payload, &format!("{at}.{case}"))?;
            Val::Variant(name.clone(), payload)
        }
        WitType::Enum(names) => {
            let name = value.as_str().ok_or_else(wrong)?;
            if !names.iter().any(|n| n == name) {
                return Err(wrong());
            }
            Val::Enum(name.to_string())
        }
        WitType::Flags(names) => {
            let set = value.as_array().ok_or_else(wrong)?;
            let mut flags = Vec::new();
            for flag in set {
                match flag.as_str() {
                    Some(flag) if names.iter().any(|n| n == flag) => {
                        if !flags.iter().any(|f| f == flag) {
                            flags.push(flag.to_string());
                        }
                    }
                    _ => return Err(wrong()),
                }
            }
            Val::Flags(flags)
        }
        WitType::Own
        | WitType::Borrow
        | WitType::Future(_)
        | WitType::Stream(_)
        | WitType::ErrorContext => {
            return Err(Mismatch {
                at: at.to_string(),
                problem: format!("a {ty} cannot be passed as JSON"),
            });
        }
    })
}

/// The payload of a result side or variant case of type `ty` (none: the
/// case carries nothing, and only `null` fits).
fn payload_of(ty: Option<&WitType>, value: &Value, at: &str) -> Result<Option<Box<Val>>, Mismatch> {
    match (ty, value) {
        (Some(ty), value) => Ok(Some(Box::new(from_json(ty, value, at)?))),
        (None, Value::Null) => Ok(None),
        (None, other) => Err(Mismatch {
            at: at.to_string(),
            problem: format!("expected null (no payload), got {}", shown(other)),
        }),
    }
}

/// The elements of a JSON array as values of type `item`; none if `value`
/// is not an array.
fn elements(item: &WitType, value: &Value, at: &str) -> Option<Result<Vec<Val>, Mismatch>> {
    let items = value.as_array()?;
    Some(
        items
            .iter()
            .enumerate()
            .map(|(i, v)| from_json(item, v, &format!("{at}[{i}]")))
            .collect(),
    )
}

/// A map from an object (string keys) or from an array of pairs.
fn map(
    key: &WitType,
    item: &WitType,
    value: &Value,
    at: &str,
) -> Option<Result<Vec<(Val, Val)>, Mismatch>> {
    let entry = |k: &Value, v: &Value, at: String| -> Result<(Val, Val), Mismatch> {
        Ok((from_json(key, k, &at)?, from_json(item, v, &at)?))
    };
    match value {
        Value::Object(object) if *key == WitType::String => Some(
            object
                .iter()
                .map(|(k, v)| entry(&Value::String(k.clone()), v, format!("{at}.{k}")))
                .collect(),
        ),
        Value::Array(pairs) => Some(
            pairs
                .iter()
                .enumerate()
                .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                    Some([k, v]) => entry(k, v, format!("{at}[{i}]")),
                    _ => Err(Mismatch {
                        at: format!("{at}[{i}]"),
                        problem: format!("expected a [key, value] pair, got {}", shown(pair)),
                    }),
                })
                .collect(),
        ),
        _ => None,
    }
}

/// The only key of a one-key object, and its value.
fn single_key(value: &Value) -> Option<(&str, &Value)> {
    let object = value.as_object()?;
    let mut entries = object.iter();
    match (entries.next(), entries.next()) {
        (Some((key, value)), None) => Some((key.as_str(), value)),
        _ => None,
    }
}

/// `value` as JSON.
pub fn to_json(value: &Val) -> Value {
    match value {
        Val::Bool(b) => Value::Bool(*b),
        Val::S8(n) => (*n).into(),
        Val::U8(n) => (*n).into(),
        Val::S16(n) => (*n).into(),
        Val::U16(n) => (*n).into(),
        Val::S32(n) => (*n).into(),
        Val::U32(n) => (*n).into(),
        Val::S64(n) => (*n).into(),
        Val::U64(n) => (*n).into(),
        // JSON has no NaN or infinity: those are null.
        Val::Float32(n) => Number::from_f64(f64::from(*n)).map_or(Value::Null, Value::Number),
        Val::Float64(n) => Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Val::Char(c) => Value::String(c.to_string()),
        Val::String(s) => Value::String(s.clone()),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        Val::Map(entries) => {
            if entries.iter().all(|(k, _)| matches!(k, Val::String(_))) {
                let mut object = Map::new();
                for (k, v) in entries {
                    if let Val::String(k) = k {
                        // Last value wins, as in the component model.
                        object.insert(k.clone(), to_json(v));
                    }
                }
                Value::Object(object)
            } else {
                Value::Array(
                    entries
                        .iter()
                        .map(|(k, v)| Value::Array(vec![to_json(k), to_json(v)]))
                        .collect(),
                )
            }
        }
        Val::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, v)| (name.clone(), to_json(v)))
                .collect(),
        ),
        Val::Variant(case, None) => Value::String(case.clone()),
        Val::Variant(case, Some(payload)) => one_key(case, to_json(payload)),
        Val::Enum(case) => Value::String(case.clone()),
        Val::Option(None) => Value::Null,
        Val::Option(Some(v)) => to_json(v),
        Val::Result(result) => {
            let (case, payload) = match result {
                Ok(payload) => ("ok", payload),
                Err(payload) => ("err", payload),
            };
            one_key(case, payload.as_deref().map_or(Value::Null, to_json))
        }
        Val::Flags(names) => Value::Array(names.iter().cloned().map(Value::String).collect()),
        // Functions that take or give these are never called over JSON.
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => Value::Null,
    }
}

fn one_key(key: &str, value: Value) -> Value {
    let mut object = Map::new();
    object.insert(key.to_string(), value);
    Value::Object(object)
}

/// Whether a function of type `signature` can be called with JSON, and if
/// not, the first type that cannot.
pub fn unsupported(signature: &Signature) -> Option<&WitType> {
    fn first(ty: &WitType) -> Option<&WitType> {
        match ty {
            WitType::Own
            | WitType::Borrow
            | WitType::Future(_)
            | WitType::Stream(_)
            | WitType::ErrorContext => Some(ty),
            WitType::List(t) | WitType::FixedList(t, _) | WitType::Option(t) => first(t),
            WitType::Map(k, v) => first(k).or_else(|| first(v)),
            WitType::Record(fields) => fields.iter().find_map(|(_, t)| first(t)),
            WitType::Tuple(types) => types.iter().find_map(first),
            WitType::Variant(cases) => cases.iter().find_map(|(_, t)| t.as_ref().and_then(first)),
            WitType::Result { ok, err } => ok
                .as_deref()
                .and_then(first)
                .or_else(|| err.as_deref().and_then(first)),
            _ => None,
        }
    }
    signature
        .params
        .iter()
        .map(|(_, t)| t)
        .chain(&signature.result)
        .find_map(first)
}

/// A short description of a JSON value for an error: its kind, and the
/// value itself when short.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 40 {
        format!("{} {text}", kind(value))
    } else {
        kind(value).to_string()
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn goods() -> WitType {
        WitType::Record(vec![
            ("id".into(), WitType::String),
            ("price-cents".into(), WitType::U64),
            ("note".into(), WitType::Option(Box::new(WitType::String))),
        ])
    }

    fn stock_error() -> WitType {
        WitType::Variant(vec![
            ("not-found".into(), Some(WitType::String)),
            ("insufficient".into(), Some(WitType::U32)),
            ("closed".into(), None),
        ])
    }

    fn reserve() -> Signature {
        Signature {
            params: vec![("id".into(), WitType::String), ("qty".into(), WitType::U32)],
            result: Some(WitType::Result {
                ok: Some(Box::new(goods())),
                err: Some(Box::new(stock_error())),
            }),
        }
    }

    /// `value` in as `ty` and out again.
    fn round_trip(ty: &WitType, value: Value) -> Value {
        to_json(&from_json(ty, &value, "x").unwrap())
    }

    #[test]
    fn arguments_by_name_or_by_position() {
        let by_name = arguments(&reserve(), &json!({"qty": 2, "id": "pen"})).unwrap();
        let by_position = arguments(&reserve(), &json!(["pen", 2])).unwrap();
        assert_eq!(by_name, vec![Val::String("pen".into()), Val::U32(2)]);
        assert_eq!(by_name, by_position);
        let none = Signature {
            params: vec![],
            result: None,
        };
        assert_eq!(arguments(&none, &Value::Null).unwrap(), vec![]);
        assert_eq!(arguments(&none, &json!({})).unwrap(), vec![]);
    }

    #[test]
    fn wrong_arguments_name_the_parameter() {
        let cases = [
            (json!({"id": "pen"}), "qty: missing parameter of type u32"),
            (
                json!({"id": "pen", "qty": -1}),
                "qty: expected u32, got a number -1",
            ),
            (
                json!({"id": "pen", "qty": "2"}),
                "qty: expected u32, got a string \"2\"",
            ),
            (
                json!({"id": "pen", "qty": 2, "colour": "red"}),
                "colour: no such parameter (the parameters are id: string, qty: u32)",
            ),
            (
                json!(["pen"]),
                "arguments: expected 2 (id: string, qty: u32), got 1",
            ),
            (
                json!("pen"),
                "arguments: expected an object keyed by parameter name or an array \
                 (id: string, qty: u32), got a string",
            ),
            (
                json!({"id": "pen", "qty": 4294967296u64}),
                "qty: expected u32, got a number 4294967296",
            ),
            (
                json!({"id": "pen", "qty": 1.5}),
                "qty: expected u32, got a number 1.5",
            ),
        ];
        for (body, expected) in cases {
            let error = arguments(&reserve(), &body).unwrap_err();
            assert_eq!(error.to_string(), expected, "{body}");
        }
    }

    #[test]
    fn records_options_results_and_variants() {
        let ok = json!({"ok": {"id": "pen", "price-cents": 150, "note": null}});
        let result = reserve().result.unwrap();
        assert_eq!(round_trip(&result, ok.clone()), ok);
        // A missing option field is none.
        let sparse = json!({"ok": {"id": "pen", "price-cents": 150}});
        assert_eq!(round_trip(&result, sparse), ok);
        let err = json!({"err": {"insufficient": 3}});
        assert_eq!(round_trip(&result, err.clone()), err);
        let bare = json!({"err": "closed"});
        assert_eq!(round_trip(&result, bare.clone()), bare);
        assert_eq!(round_trip(&result, json!({"err": {"closed": null}})), bare);

        let deep = from_json(&result, &json!({"ok": {"id": 7, "price-cents": 1}}), "r");
        assert_eq!(
            deep.unwrap_err().to_string(),
            "r.ok.id: expected string, got a number 7"
        );
        let extra = from_json(&goods(), &json!({"id": "a", "price-cents": 1, "x": 1}), "g");
        assert_eq!(extra.unwrap_err().at, "g.x");
        let both = from_json(&result, &json!({"ok": null, "err": null}), "r");
        assert!(both.is_err());
        let unknown = from_json(&stock_error(), &json!("melted"), "e");
        assert!(unknown.unwrap_err().problem.contains("variant"));
    }

    #[test]
    fn lists_tuples_enums_flags_chars_and_maps() {
        let list = WitType::List(Box::new(WitType::Tuple(vec![WitType::Char, WitType::S8])));
        let value = json!([["a", -1], ["é", 127]]);
        assert_eq!(round_trip(&list, value.clone()), value);
        let bad = from_json(&list, &json!([["a", -1], ["bc", 1]]), "l").unwrap_err();
        assert_eq!(bad.at, "l[1][0]");

        let colour = WitType::Enum(vec!["red".into(), "green".into()]);
        assert_eq!(round_trip(&colour, json!("green")), json!("green"));
        assert!(from_json(&colour, &json!("blue"), "c").is_err());

        let flags = WitType::Flags(vec!["read".into(), "write".into()]);
        assert_eq!(
            round_trip(&flags, json!(["write", "write"])),
            json!(["write"])
        );
        assert!(from_json(&flags, &json!(["exec"]), "f").is_err());

        let by_name = WitType::Map(Box::new(WitType::String), Box::new(WitType::U8));
        assert_eq!(round_trip(&by_name, json!({"a": 1})), json!({"a": 1}));
        let by_number = WitType::Map(Box::new(WitType::U8), Box::new(WitType::Bool));
        assert_eq!(
            round_trip(&by_number, json!([[1, true]])),
            json!([[1, true]])
        );

        let fixed = WitType::FixedList(Box::new(WitType::F64), 2);
        assert_eq!(round_trip(&fixed, json!([0.5, 2.0])), json!([0.5, 2.0]));
        assert!(from_json(&fixed, &json!([0.5]), "p").is_err());
        assert_eq!(to_json(&Val::Float64(f64::NAN)), Value::Null);
    }

    #[test]
    fn extreme_integers_fit_exactly() {
        assert_eq!(round_trip(&WitType::U64, json!(u64::MAX)), json!(u64::MAX));
        assert_eq!(round_trip(&WitType::S64, json!(i64::MIN)), json!(i64::MIN));
        assert!(from_json(&WitType::S64, &json!(u64::MAX), "n").is_err());
        assert!(from_json(&WitType::U8, &json!(256), "n").is_err());
    }

    #[test]
    fn resources_and_streams_have_no_json_form() {
        let takes = Signature {
            params: vec![(
                "items".into(),
                WitType::List(Box::new(WitType::Stream(Some(Box::new(WitType::U8))))),
            )],
            result: None,
        };
        assert_eq!(unsupported(&takes).unwrap().to_string(), "stream<u8>");
        assert!(unsupported(&reserve()).is_none());
        let gives = Signature {
            params: vec![],
            result: Some(WitType::Option(Box::new(WitType::Own))),
        };
        assert_eq!(unsupported(&gives), Some(&WitType::Own));
    }
}
