//! Function types of component interfaces as plain data.
//!
//! wasmtime's types live inside one component's type tables; these are
//! detached copies that compare structurally (names included, as WIT
//! compatibility requires), print as WIT and can be built by hand, so the
//! compatibility rules are testable without compiling anything. They must
//! never carry anything that ties them to an engine or a component.

use std::fmt;

use wasmtime::component::types::{ComponentFunc, Type};

/// A WIT value type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitType {
    Bool,
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
    Char,
    String,
    List(Box<WitType>),
    FixedList(Box<WitType>, u32),
    Map(Box<WitType>, Box<WitType>),
    Record(Vec<(String, WitType)>),
    Tuple(Vec<WitType>),
    Variant(Vec<(String, Option<WitType>)>),
    Enum(Vec<String>),
    Option(Box<WitType>),
    Result {
        ok: Option<Box<WitType>>,
        err: Option<Box<WitType>>,
    },
    Flags(Vec<String>),
    /// An owned or borrowed resource handle. Resources cannot cross from one
    /// service to another, so their identity does not matter here.
    Own,
    Borrow,
    Future(Option<Box<WitType>>),
    Stream(Option<Box<WitType>>),
    ErrorContext,
}

/// A function's parameters (with names) and result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub params: Vec<(String, WitType)>,
    pub result: Option<WitType>,
}

impl Signature {
    /// Same parameter and result types; parameter names do not matter to a
    /// caller, so they are not compared.
    pub fn same_type(&self, other: &Signature) -> bool {
        self.params.len() == other.params.len()
            && self
                .params
                .iter()
                .zip(&other.params)
                .all(|((_, a), (_, b))| a == b)
            && self.result == other.result
    }
}

impl From<&ComponentFunc> for Signature {
    fn from(func: &ComponentFunc) -> Signature {
        Signature {
            params: func
                .params()
                .map(|(name, ty)| (name.to_string(), WitType::from(&ty)))
                .collect(),
            result: func.results().next().map(|ty| WitType::from(&ty)),
        }
    }
}

impl From<&Type> for WitType {
    fn from(ty: &Type) -> WitType {
        let boxed = |ty: Type| Box::new(WitType::from(&ty));
        match ty {
            Type::Bool => WitType::Bool,
            Type::S8 => WitType::S8,
            Type::U8 => WitType::U8,
            Type::S16 => WitType::S16,
            Type::U16 => WitType::U16,
            Type::S32 => WitType::S32,
            Type::U32 => WitType::U32,
            Type::S64 => WitType::S64,
            Type::U64 => WitType::U64,
            Type::Float32 => WitType::F32,
            Type::Float64 => WitType::F64,
            Type::Char => WitType::Char,
            Type::String => WitType::String,
            Type::List(list) => WitType::List(boxed(list.ty())),
            Type::FixedLengthList(list) => WitType::FixedList(boxed(list.ty()), list.len()),
            Type::Map(map) => WitType::Map(boxed(map.key()), boxed(map.value())),
            Type::Record(record) => WitType::Record(
                record
                    .fields()
                    .map(|f| (f.name.to_string(), WitType::from(&f.ty)))
                    .collect(),
            ),
            Type::Tuple(tuple) => {
                WitType::Tuple(tuple.types().map(|t| WitType::from(&t)).collect())
            }
            Type::Variant(variant) => WitType::Variant(
                variant
                    .cases()
                    .map(|c| (c.name.to_string(), c.ty.as_ref().map(WitType::from)))
                    .collect(),
            ),
            Type::Enum(e) => WitType::Enum(e.names().map(str::to_string).collect()),
            Type::Option(option) => WitType::Option(boxed(option.ty())),
            Type::Result(result) => WitType::Result {
                ok: result.ok().map(boxed),
                err: result.err().map(boxed),
            },
            Type::Flags(flags) => WitType::Flags(flags.names().map(str::to_string).collect()),
            Type::Own(_) => WitType::Own,
            Type::Borrow(_) => WitType::Borrow,
            Type::Future(future) => WitType::Future(future.ty().map(boxed)),
            Type::Stream(stream) => WitType::Stream(stream.ty().map(boxed)),
            Type::ErrorContext => WitType::ErrorContext,
        }
    }
}

/// `items` shown one after another, separated by ", ".
fn list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    mut show: impl FnMut(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        show(f, item)?;
    }
    Ok(())
}

impl fmt::Display for WitType {
    /// WIT syntax, with records, variants, enums and flags written out in
    /// place (their names belong to the interface, not to the type).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let simple = match self {
            WitType::Bool => "bool",
            WitType::S8 => "s8",
            WitType::U8 => "u8",
            WitType::S16 => "s16",
            WitType::U16 => "u16",
            WitType::S32 => "s32",
            WitType::U32 => "u32",
            WitType::S64 => "s64",
            WitType::U64 => "u64",
            WitType::F32 => "f32",
            WitType::F64 => "f64",
            WitType::Char => "char",
            WitType::String => "string",
            WitType::Own => "own",
            WitType::Borrow => "borrow",
            WitType::ErrorContext => "error-context",
            _ => "",
        };
        if !simple.is_empty() {
            return f.write_str(simple);
        }
        let optional = |f: &mut fmt::Formatter<'_>, name: &str, ty: &Option<Box<WitType>>| match ty
        {
            Some(ty) => write!(f, "{name}<{ty}>"),
            None => f.write_str(name),
        };
        match self {
            WitType::List(ty) => write!(f, "list<{ty}>"),
            WitType::FixedList(ty, len) => write!(f, "list<{ty}, {len}>"),
            WitType::Map(k, v) => write!(f, "map<{k}, {v}>"),
            WitType::Option(ty) => write!(f, "option<{ty}>"),
            WitType::Tuple(types) => {
                f.write_str("tuple<")?;
                list(f, types, |f, t| write!(f, "{t}"))?;
                f.write_str(">")
            }
            WitType::Record(fields) => {
                f.write_str("record { ")?;
                list(f, fields, |f, (n, t)| write!(f, "{n}: {t}"))?;
                f.write_str(" }")
            }
            WitType::Variant(cases) => {
                f.write_str("variant { ")?;
                list(f, cases, |f, (n, t)| match t {
                    Some(t) => write!(f, "{n}({t})"),
                    None => f.write_str(n),
                })?;
                f.write_str(" }")
            }
            WitType::Enum(names) | WitType::Flags(names) => {
                let kind = if matches!(self, WitType::Enum(_)) {
                    "enum"
                } else {
                    "flags"
                };
                write!(f, "{kind} {{ ")?;
                list(f, names, |f, n| f.write_str(n))?;
                f.write_str(" }")
            }
            WitType::Result { ok, err } => match (ok, err) {
                (None, None) => f.write_str("result"),
                (Some(ok), None) => write!(f, "result<{ok}>"),
                (None, Some(err)) => write!(f, "result<_, {err}>"),
                (Some(ok), Some(err)) => write!(f, "result<{ok}, {err}>"),
            },
            WitType::Future(ty) => optional(f, "future", ty),
            WitType::Stream(ty) => optional(f, "stream", ty),
            _ => unreachable!("simple types are written above"),
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("func(")?;
        list(f, &self.params, |f, (n, t)| write!(f, "{n}: {t}"))?;
        f.write_str(")")?;
        match &self.result {
            Some(result) => write!(f, " -> {result}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get() -> Signature {
        Signature {
            params: vec![("id".into(), WitType::String)],
            result: Some(WitType::Result {
                ok: Some(Box::new(WitType::Record(vec![
                    ("name".into(), WitType::String),
                    ("stock".into(), WitType::U32),
                ]))),
                err: Some(Box::new(WitType::Enum(vec!["not-found".into()]))),
            }),
        }
    }

    #[test]
    fn prints_as_wit() {
        assert_eq!(
            get().to_string(),
            "func(id: string) -> result<record { name: string, stock: u32 }, enum { not-found }>"
        );
    }

    #[test]
    fn parameter_names_do_not_matter_but_field_names_and_types_do() {
        let mut renamed = get();
        renamed.params[0].0 = "key".into();
        assert!(get().same_type(&renamed));

        let mut field = get();
        if let Some(WitType::Result { ok: Some(ok), .. }) = &mut field.result
            && let WitType::Record(fields) = &mut **ok
        {
            fields[1].0 = "count".into();
        }
        assert!(!get().same_type(&field));

        let mut wider = get();
        wider.params[0].1 = WitType::U64;
        assert!(!get().same_type(&wider));

        let mut extra = get();
        extra.params.push(("n".into(), WitType::U32));
        assert!(!get().same_type(&extra));
    }
}
