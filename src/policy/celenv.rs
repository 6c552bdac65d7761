//! The CEL environment rules are compiled and run in: the standard library, the
//! strings extension (`lowerAscii`, `upperAscii`, `split`, `join`, ...), the
//! Kubernetes quantity library and signoff's helpers ([`super::helpers`]). Built once per [`PolicySet`](super::PolicySet).

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::types::{DYN_TYPE, INT_TYPE, STRING_TYPE, Type};
use cel::common::value::{CowVal, Val};
use cel::objects::{Key, Map, Opaque};
use cel::{Env, ExecutionError, Value};

use super::quantity::Quantity;

/// The CEL type name of a quantity, as in Kubernetes.
pub const QUANTITY_TYPE_NAME: &str = "kubernetes.Quantity";

#[derive(Debug, PartialEq, Eq)]
struct QuantityVal(Quantity);

impl Opaque for QuantityVal {
    fn runtime_type_name(&self) -> &str {
        QUANTITY_TYPE_NAME
    }
    fn json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.to_string()))
    }
}

fn quantity_type() -> Type {
    Type::new_opaque_type(QUANTITY_TYPE_NAME)
}

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Ret<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

fn to_value(v: &dyn Val) -> Result<Value, ExecutionError> {
    Value::try_from(v)
}

fn ret<'b, 'v>(v: Value) -> Ret<'b, 'v> {
    let boxed: Box<dyn Val> = v.try_into()?;
    Ok(CowVal::Owned(boxed))
}

fn string_arg(function: &str, v: &dyn Val) -> Result<Arc<String>, ExecutionError> {
    match to_value(v)? {
        Value::String(s) => Ok(s),
        other => Err(ExecutionError::function_error(function, format!("expected a string, got {other:?}"))),
    }
}

fn quantity_arg(function: &str, v: &dyn Val) -> Result<Quantity, ExecutionError> {
    match to_value(v)? {
        Value::Opaque(o) => match o.downcast_ref::<QuantityVal>() {
            Some(q) => Ok(q.0),
            None => Err(ExecutionError::function_error(function, "expected a quantity")),
        },
        Value::Int(i) => Ok(Quantity::from_int(i)),
        other => Err(ExecutionError::function_error(function, format!("expected a quantity, got {other:?}"))),
    }
}

fn quantity_value(q: Quantity) -> Value {
    Value::Opaque(Arc::new(QuantityVal(q)))
}

fn arity(args: &[CowVal], n: usize) -> Result<(), ExecutionError> {
    if args.len() == n { Ok(()) } else { Err(ExecutionError::invalid_argument_count(n, args.len())) }
}

fn f_quantity<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity(&args, 1)?;
    let s = string_arg("quantity", args[0].as_ref())?;
    let q = Quantity::parse(&s).map_err(|e| ExecutionError::function_error("quantity", e))?;
    ret(quantity_value(q))
}

/// Compiled regular expressions, by pattern. Rules use a handful of literal
/// patterns, so each is compiled once per process instead of once per call (what
/// cel's own `matches` does). Bounded: a flood of distinct patterns clears it.
pub(super) fn cached_regex(pattern: &str) -> Result<Arc<regex::Regex>, ExecutionError> {
    static CACHE: std::sync::OnceLock<std::sync::RwLock<HashMap<String, Arc<regex::Regex>>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.read().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Ok(found.clone());
    }
    let compiled = regex::Regex::new(pattern)
        .map_err(|e| ExecutionError::function_error("matches", format!("'{pattern}' not a valid regex:\n{e}")))?;
    let compiled = Arc::new(compiled);
    let mut cache = cache.write().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= 4096 {
        cache.clear();
    }
    cache.insert(pattern.to_string(), compiled.clone());
    Ok(compiled)
}

/// `s.matches(re)` and `matches(s, re)`: RE2 syntax, as in Kubernetes.
fn f_matches<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity(&args, 2)?;
    let text = string_arg("matches", args[0].as_ref())?;
    let pattern = string_arg("matches", args[1].as_ref())?;
    ret(Value::Bool(cached_regex(&pattern)?.is_match(&text)))
}

fn f_is_quantity<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity(&args, 1)?;
    let s = string_arg("isQuantity", args[0].as_ref())?;
    ret(Value::Bool(Quantity::parse(&s).is_ok()))
}

fn two_quantities(function: &str, args: &[CowVal]) -> Result<(Quantity, Quantity), ExecutionError> {
    arity(args, 2)?;
    Ok((quantity_arg(function, args[0].as_ref())?, quantity_arg(function, args[1].as_ref())?))
}

fn f_is_greater_than<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (a, b) = two_quantities("isGreaterThan", &args)?;
    ret(Value::Bool(a > b))
}

fn f_is_less_than<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (a, b) = two_quantities("isLessThan", &args)?;
    ret(Value::Bool(a < b))
}

fn f_compare_to<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (a, b) = two_quantities("compareTo", &args)?;
    ret(Value::Int(a.cmp(&b) as i64))
}

fn f_add<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (a, b) = two_quantities("add", &args)?;
    let sum = a.checked_add(b).ok_or_else(|| ExecutionError::function_error("add", "quantity overflow"))?;
    ret(quantity_value(sum))
}

fn f_sub<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (a, b) = two_quantities("sub", &args)?;
    let diff = a.checked_sub(b).ok_or_else(|| ExecutionError::function_error("sub", "quantity overflow"))?;
    ret(quantity_value(diff))
}

fn f_as_approximate_float<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity(&args, 1)?;
    ret(Value::Float(quantity_arg("asApproximateFloat", args[0].as_ref())?.as_f64()))
}

fn f_as_integer<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity(&args, 1)?;
    let q = quantity_arg("asInteger", args[0].as_ref())?;
    let i = q.as_i64().ok_or_else(|| ExecutionError::function_error("asInteger", format!("{q} is not an integer")))?;
    ret(Value::Int(i))
}

fn f_is_integer<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity(&args, 1)?;
    ret(Value::Bool(quantity_arg("isInteger", args[0].as_ref())?.is_integer()))
}

fn f_sign<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity(&args, 1)?;
    ret(Value::Int(quantity_arg("sign", args[0].as_ref())?.sign()))
}

/// Charges the elements a comprehension is about to iterate to the evaluation's
/// budget (budget::instrument puts it around every comprehension's range), and
/// passes the range on unchanged.
fn f_charge<'b, 'v>(mut args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity(&args, 1)?;
    let elements = args[0].as_sizer().map(|s| *s.size().inner()).unwrap_or(0).max(0) as u64;
    super::budget::charge(elements).map_err(|e| ExecutionError::function_error("cost", e))?;
    Ok(args.remove(0))
}

/// Builds the environment. Fails only if the cel crate rejects a declaration,
/// which is a programming error caught by the unit tests.
pub fn build_env() -> Result<Env, cel::DeclarationError> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)?;

    // cel's `regex` feature is off: its `matches` compiles the pattern on every call.
    env.add_overload("matches", "matches_string_string", vec![STRING_TYPE, STRING_TYPE], f_matches)?;
    env.add_member_overload("matches", "string_matches_string", STRING_TYPE, vec![STRING_TYPE], f_matches)?;

    env.add_overload(super::budget::CHARGE_FUNCTION, "signoff_charge_dyn", vec![DYN_TYPE], f_charge)?;
    super::helpers::register(&mut env)?;

    env.add_type(quantity_type())?;
    env.add_overload("quantity", "quantity_string", vec![STRING_TYPE], f_quantity)?;
    env.add_overload("isQuantity", "isQuantity_string", vec![STRING_TYPE], f_is_quantity)?;
    for (name, f) in [
        ("isGreaterThan", f_is_greater_than as cel::common::functions::Function),
        ("isLessThan", f_is_less_than),
        ("compareTo", f_compare_to),
        ("add", f_add),
        ("sub", f_sub),
    ] {
        env.add_member_overload(name, &format!("quantity_{name}_quantity"), quantity_type(), vec![quantity_type()], f)?;
    }
    env.add_member_overload("add", "quantity_add_int", quantity_type(), vec![INT_TYPE], f_add)?;
    env.add_member_overload("sub", "quantity_sub_int", quantity_type(), vec![INT_TYPE], f_sub)?;
    for (name, f) in [
        ("asApproximateFloat", f_as_approximate_float as cel::common::functions::Function),
        ("asInteger", f_as_integer),
        ("isInteger", f_is_integer),
        ("sign", f_sign),
    ] {
        env.add_member_overload(name, &format!("quantity_{name}"), quantity_type(), vec![], f)?;
    }
    Ok(env)
}

/// Converts JSON into a CEL value: objects to maps, integers to `int` (or
/// `double` when they do not fit), null to `null`.
pub fn json_to_cel(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        serde_json::Value::Object(fields) => Value::Map(Map {
            map: Arc::new(fields.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v))).collect()),
        }),
    }
}

/// Converts JSON straight into the interpreter's values (no intermediate
/// [`Value`]): what a request's `object`, `oldObject` and `namespaceObject` are
/// bound as.
pub fn json_to_val(json: &serde_json::Value) -> Box<dyn Val> {
    use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString};
    match json {
        serde_json::Value::Null => Box::new(CelNull),
        serde_json::Value::Bool(b) => Box::new(CelBool::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        serde_json::Value::String(s) => Box::new(CelString::from(s.clone())),
        serde_json::Value::Array(items) => Box::new(CelList::from(items.iter().map(json_to_val).collect::<Vec<_>>())),
        serde_json::Value::Object(fields) => {
            let map: HashMap<CelMapKey, Box<dyn Val>> = fields
                .iter()
                .map(|(k, v)| (CelMapKey::from(Key::String(Arc::new(k.clone()))), json_to_val(v)))
                .collect();
            Box::new(CelMap::from(map))
        }
    }
}

/// A CEL map with string keys.
pub fn cel_map<I, K>(entries: I) -> Value
where
    I: IntoIterator<Item = (K, Value)>,
    K: Into<String>,
{
    let map: HashMap<Key, Value> = entries.into_iter().map(|(k, v)| (Key::String(Arc::new(k.into())), v)).collect();
    Value::Map(Map { map: Arc::new(map) })
}

pub fn cel_str(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}
