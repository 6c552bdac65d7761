//! CEL views of a request's JSON that convert only what an expression reads.
//!
//! A rule such as `object.spec.replicas > 5` reads three fields of an object
//! that may have hundreds; converting the whole object (and `oldObject`, and
//! the Namespace) for every review cost more than evaluating the rules. A
//! [`JsonMap`] borrows the JSON object and makes the CEL value of a field the
//! first time it is read, keeping it for the rest of the review. Strings borrow
//! the request's text. Lists are converted one level at a time: their items are
//! lazy in turn.
//!
//! To the interpreter a `JsonMap` is a `map(string, dyn)`: indexing, `has()`,
//! `in`, `size()`, the comprehensions and `==` with it on the left work on it
//! directly. It is not the crate's built-in map type, which the interpreter
//! probes for on every field access (so a `JsonMap` must not build one there):
//! a built-in map on the left of `==` does not recognize it. A policy with a map
//! literal anywhere in its CEL is therefore evaluated on fully converted objects
//! instead (see `CompiledPolicy`), and stays correct, only slower.

use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::ExecutionError;
use cel::common::traits::{self, Container, Indexer, Iterable, Sizer, Zeroer};
use cel::common::types::{self, CelBool, CelDouble, CelInt, CelList, CelNull, CelString, Type};
use cel::common::value::{CowVal, Val};
use serde_json::{Map, Value};

/// The CEL value of `json`, borrowing it; objects stay lazy.
pub fn json_val<'v>(json: &'v Value) -> Box<dyn Val + 'v> {
    match json {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        // Integers are `int`; anything else (or beyond i64) is `double`.
        Value::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => Box::new(CelList::from(items.iter().map(json_val).collect::<Vec<_>>())),
        Value::Object(fields) => Box::new(JsonMap::new(fields)),
    }
}

/// A field's CEL value, made on first read.
type Slot<'v> = OnceLock<Box<dyn Val + 'v>>;

/// A JSON object as a CEL map, converting each field when it is first read.
pub struct JsonMap<'v> {
    fields: &'v Map<String, Value>,
    /// One slot per field, in the map's key order.
    slots: OnceLock<Box<[Slot<'v>]>>,
    /// The keys, for iteration.
    keys: OnceLock<Vec<CelString<'v>>>,
}

impl<'v> JsonMap<'v> {
    pub fn new(fields: &'v Map<String, Value>) -> Self {
        JsonMap { fields, slots: OnceLock::new(), keys: OnceLock::new() }
    }

    /// The CEL value of field `name`, converted once.
    fn field(&self, name: &str) -> Option<&(dyn Val + 'v)> {
        let (i, (_, json)) = self.fields.iter().enumerate().find(|(_, (k, _))| k.as_str() == name)?;
        let slots = self.slots.get_or_init(|| (0..self.fields.len()).map(|_| OnceLock::new()).collect());
        Some(slots[i].get_or_init(|| json_val(json)).as_ref())
    }
}

impl fmt::Debug for JsonMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonMap({})", Value::Object(self.fields.clone()))
    }
}

/// The name a key selects: JSON objects have string keys only.
fn key_name(key: &dyn Val) -> Option<&str> {
    <&str>::try_from(key).ok()
}

/// A key that is not here: a miss for the key types maps take (a JSON object has
/// only string keys), and the wrong type of key otherwise, as for a built-in map.
fn lookup_miss(key: &dyn Val) -> ExecutionError {
    let name = match cel::Value::try_from(key) {
        Ok(cel::Value::String(s)) => s.to_string(),
        Ok(cel::Value::Int(i)) => i.to_string(),
        Ok(cel::Value::UInt(u)) => u.to_string(),
        Ok(cel::Value::Float(d)) => d.to_string(),
        Ok(cel::Value::Bool(b)) => b.to_string(),
        _ => {
            return ExecutionError::UnexpectedType {
                got: key.get_type().name().to_owned(),
                want: "map key".to_owned(),
            };
        }
    };
    ExecutionError::NoSuchKey(Arc::new(name))
}

impl<'v> Val for JsonMap<'v> {
    fn get_type(&self) -> &Type {
        <Self as Val>::cel_type()
    }

    fn cel_type() -> &'static Type {
        &types::MAP_TYPE
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn into_indexer<'w>(self: Box<Self>) -> Option<Box<dyn Indexer + 'w>>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn as_iterable<'b, 'w>(&'b self) -> Option<&'b (dyn Iterable + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(self)
    }

    fn as_zeroer(&self) -> Option<&dyn Zeroer> {
        Some(self)
    }

    /// Map equality: the same keys, with equal values, whatever kind of map
    /// `other` is.
    fn equals(&self, other: &dyn Val) -> bool {
        let (Some(sizer), Some(indexer)) = (other.as_sizer(), other.as_indexer()) else { return false };
        other.get_type().name() == types::MAP_TYPE.name()
            && i64::from(sizer.size()) == self.fields.len() as i64
            && self.fields.keys().all(|k| {
                let key = CelString::from(k.as_str());
                match (self.field(k), indexer.get(&key)) {
                    (Some(mine), Ok(theirs)) => mine.equals(theirs.as_ref()),
                    _ => false,
                }
            })
    }

    fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
    where
        Self: 'w,
    {
        Box::new(JsonMap::new(self.fields))
    }
}

impl Container for JsonMap<'_> {
    fn contains(&self, key: &dyn Val) -> Result<bool, ExecutionError> {
        match key_name(key) {
            Some(name) => Ok(self.fields.contains_key(name)),
            None => match lookup_miss(key) {
                ExecutionError::NoSuchKey(_) => Ok(false),
                _ => Err(ExecutionError::UnsupportedKeyType(cel::Value::try_from(key).unwrap_or(cel::Value::Null))),
            },
        }
    }
}

impl<'v> Indexer for JsonMap<'v> {
    fn get<'b, 'w>(&'b self, key: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        match key_name(key).and_then(|name| self.field(name)) {
            Some(value) => Ok(CowVal::Borrowed(value)),
            None => Err(lookup_miss(key)),
        }
    }

    fn steal<'w>(self: Box<Self>, key: &dyn Val) -> Result<Box<dyn Val + 'w>, ExecutionError>
    where
        Self: 'w,
    {
        self.get(key).map(CowVal::into_owned)
    }
}

/// Lends the keys of a [`JsonMap`].
struct Keys<'b, 'v>(std::slice::Iter<'b, CelString<'v>>);

impl<'b, 'v: 'w, 'w> traits::Iterator<'b, 'w> for Keys<'b, 'v> {
    fn next(&mut self) -> Option<&'b (dyn Val + 'w)> {
        self.0.next().map(|k| k as &(dyn Val + 'w))
    }
}

impl<'v> Iterable for JsonMap<'v> {
    fn iter<'b, 'w>(&'b self) -> Box<dyn traits::Iterator<'b, 'w> + 'b>
    where
        Self: 'w,
    {
        let keys = self.keys.get_or_init(|| self.fields.keys().map(|k| CelString::from(k.as_str())).collect());
        Box::new(Keys(keys.iter()))
    }
}

impl Sizer for JsonMap<'_> {
    fn size(&self) -> CelInt {
        (self.fields.len() as i64).into()
    }
}

impl Zeroer for JsonMap<'_> {
    fn is_zero_value(&self) -> bool {
        self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::{Context, Program};
    use serde_json::json;

    /// Evaluates `expr` with `object` bound lazily, and again eagerly (the whole
    /// object converted first): both must agree.
    fn eval(expr: &str, object: &Value) -> cel::ResolveResult {
        let program = super::super::ENV.compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let eager = {
            let mut ctx = Context::with_env(std::sync::Arc::clone(&super::super::ENV));
            ctx.add_variable_as_val("object", super::super::celenv::json_to_val(object));
            Program::execute(&program, &ctx)
        };
        let mut ctx = Context::with_env(std::sync::Arc::clone(&super::super::ENV));
        ctx.add_variable_as_val("object", json_val(object));
        let lazy = Program::execute(&program, &ctx);
        assert_eq!(format!("{lazy:?}"), format!("{eager:?}"), "lazy and eager differ for {expr}");
        lazy
    }

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "frontend"}, "annotations": {}},
            "spec": {"replicas": 3, "paused": null, "ratio": 0.5,
                     "template": {"spec": {"containers": [
                         {"name": "web", "image": "web:1.5", "args": ["--a", "--b"],
                          "resources": {"limits": {"cpu": "2"}}},
                         {"name": "envoy", "image": "envoy:latest"}]}}}
        })
    }

    #[test]
    fn a_lazy_object_reads_like_the_converted_one() {
        let d = deployment();
        let t = cel::Value::Bool(true);
        for expr in [
            "object.spec.replicas == 3",
            "object.spec.ratio == 0.5",
            "object.spec.paused == null",
            "has(object.spec.replicas) && !has(object.spec.strategy)",
            "has(object.spec.paused)",
            "'app' in object.metadata.labels && !('x' in object.metadata.labels)",
            "size(object.metadata.labels) == 2 && object.metadata.labels.size() == 2",
            "object.metadata.labels.exists(k, k == 'tier') && object.metadata.labels.all(k, k.size() > 2)",
            "object.metadata.labels == {'app': 'web', 'tier': 'frontend'}",
            "object.metadata.labels != {'app': 'web'}",
            "object.metadata.annotations == {}",
            "object.spec.template.spec.containers.exists(c, c.image.endsWith(':latest'))",
            "object.spec.template.spec.containers[0].args.join(' ') == '--a --b'",
            "object.spec.template.spec.containers[0].args == ['--a', '--b']",
            "'--b' in object.spec.template.spec.containers[0].args",
            "object.spec.template.spec.containers.map(c, c.name) == ['web', 'envoy']",
            "object.spec.template.spec.containers.filter(c, has(c.resources)).size() == 1",
            "object.spec.template.spec.containers[0].resources.limits.cpu == '2'",
            "object.metadata == object.metadata",
            "object.metadata.labels['app'] == 'web'",
            "type(object.metadata.labels) == map && type(object.spec.template.spec.containers) == list",
        ] {
            assert_eq!(eval(expr, &d), Ok(t.clone()), "{expr}");
        }
    }

    #[test]
    fn missing_fields_and_wrong_keys_fail_as_for_a_converted_object() {
        let d = deployment();
        for expr in
            ["object.spec.strategy.type == 'x'", "object.metadata.labels['missing'] == 'x'", "object.spec[1] == 1"]
        {
            assert!(eval(expr, &d).is_err(), "{expr} must fail");
        }
    }
}
