//! A direct evaluator for the common shapes of rules (issue 25, item 1).
//!
//! The `cel` interpreter spends most of a classification resolving qualified
//! names (`object.spec.template.spec`), boxing values and building errors it
//! then discards. Rules read a few fields of the request's JSON and compare
//! them, so this module walks the compiled expression itself and reads the
//! JSON in place: no boxing, no lazy maps, no allocation for a field read.
//!
//! It is a fast path, not a second CEL: [`eval`] answers only when its answer
//! is certainly the interpreter's. Anything it does not know (a function it
//! does not implement, a type pairing whose semantics it does not mirror, and
//! every error) is `None`, and the caller asks the interpreter, which then
//! also writes the error message. Debug builds check every answer against the
//! interpreter (see `super::evaluate_policy`), so the whole test suite is a
//! differential test; `tests.rs` compares the two over the policy library and
//! a table of edge cases.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::rc::Rc;

use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use serde_json::Value as Json;
use typed_arena::Arena;

use super::cost::Cost;
use super::quantity::Quantity;
use super::{ReviewInput, operation_str};
use super::{budget, helpers};

/// A value during fast evaluation; borrows the request and the expression.
#[derive(Clone, Debug)]
pub enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(Cow<'a, str>),
    /// A JSON array or object of the request, read in place.
    Json(&'a Json),
    /// A list the expression built (a literal, `map`, `filter`).
    List(Rc<Vec<V<'a>>>),
    /// `request` or one of its maps.
    Request(&'a ReviewInput, Part),
    /// `request.userInfo.groups`.
    Strings(&'a [String]),
    Cost(&'a Cost),
    Quantity(Quantity),
}

/// Which map of `request` a [`V::Request`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Root,
    UserInfo,
    Kind,
    Resource,
}

/// What an expression can name besides its comprehension variables.
pub struct Roots<'r, 'a> {
    pub input: &'a ReviewInput,
    /// `cost`, when the policy reads it.
    pub cost: Option<&'a Cost>,
    /// The policy's variables evaluated so far, read as `variables.<name>`.
    pub variables: &'r [(&'a str, V<'a>)],
    /// Where map literals are built, as JSON, for the rest of the classification.
    pub arena: &'a Arena<Json>,
}

/// Evaluates `expr`, or None when only the interpreter can say what it is.
/// Comprehensions charge the policy's budget as the interpreter's do; a None
/// leaves the budget as it found it, so the interpreter charges once.
pub fn eval<'a>(expr: &'a IdedExpr, roots: &Roots<'_, 'a>) -> Option<V<'a>> {
    let before = budget::remaining();
    let mut scope = Scope { roots, locals: Vec::new() };
    let out = scope.eval(expr);
    if out.is_none() {
        budget::set_remaining(before);
    }
    out
}

struct Scope<'r, 'a> {
    roots: &'r Roots<'r, 'a>,
    /// Comprehension variables, innermost last.
    locals: Vec<(&'a str, V<'a>)>,
}

/// The value of a JSON node.
pub fn from_json(json: &Json) -> V<'_> {
    match json {
        Json::Null => V::Null,
        Json::Bool(b) => V::Bool(*b),
        // As lazyjson: integers are `int`, anything else `double`.
        Json::Number(n) => match n.as_i64() {
            Some(i) => V::Int(i),
            None => V::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => V::Str(Cow::Borrowed(s)),
        Json::Array(_) | Json::Object(_) => V::Json(json),
    }
}

fn json_or_null(json: Option<&Json>) -> V<'_> {
    json.map(from_json).unwrap_or(V::Null)
}

fn text(s: &str) -> V<'_> {
    V::Str(Cow::Borrowed(s))
}

impl<'a> V<'a> {
    fn as_bool(&self) -> Option<bool> {
        match self {
            V::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `self.name`; None when absent (the interpreter's error) or not a map.
    fn field(&self, name: &str) -> Option<V<'a>> {
        match self {
            V::Json(Json::Object(fields)) => fields.get(name).map(from_json),
            V::Request(input, part) => request_field(input, *part, name),
            V::Cost(c) => match name {
                "monthlyBefore" => Some(V::Double(c.monthly_before)),
                "monthlyAfter" => Some(V::Double(c.monthly_after)),
                "monthlyDelta" => Some(V::Double(c.monthly_delta)),
                "currency" => Some(text(&c.currency)),
                _ => None,
            },
            _ => None,
        }
    }

    /// `has(self.name)`; None when self is no map.
    fn has(&self, name: &str) -> Option<bool> {
        match self {
            V::Json(Json::Object(fields)) => Some(fields.contains_key(name)),
            V::Request(input, part) => Some(request_field(input, *part, name).is_some()),
            V::Cost(_) => Some(self.field(name).is_some()),
            _ => None,
        }
    }

    /// The elements of a list, or the keys of a JSON object, as a comprehension
    /// iterates them.
    fn items(&self) -> Option<Items<'a, '_>> {
        match self {
            V::List(items) => Some(Items::List(items.iter())),
            V::Json(Json::Array(items)) => Some(Items::Array(items.iter())),
            V::Json(Json::Object(fields)) => Some(Items::Keys(fields.keys())),
            V::Strings(items) => Some(Items::Strings(items.iter())),
            _ => None,
        }
    }

    /// `size(self)`, as the interpreter's sizers count.
    fn size(&self) -> Option<i64> {
        match self {
            V::Str(s) => Some(s.chars().count() as i64),
            V::List(items) => Some(items.len() as i64),
            V::Json(Json::Array(items)) => Some(items.len() as i64),
            V::Json(Json::Object(fields)) => Some(fields.len() as i64),
            V::Strings(items) => Some(items.len() as i64),
            _ => None,
        }
    }
}

fn request_field<'a>(input: &'a ReviewInput, part: Part, name: &str) -> Option<V<'a>> {
    Some(match (part, name) {
        (Part::Root, "operation") => text(operation_str(input.operation)),
        (Part::Root, "userInfo") => V::Request(input, Part::UserInfo),
        (Part::Root, "kind") => V::Request(input, Part::Kind),
        (Part::Root, "resource") => V::Request(input, Part::Resource),
        (Part::Root, "subResource") => text(&input.sub_resource),
        (Part::Root, "namespace") => text(&input.namespace),
        (Part::Root, "name") => text(&input.name),
        (Part::Root, "dryRun") => V::Bool(input.dry_run),
        (Part::UserInfo, "username") => text(&input.user.username),
        (Part::UserInfo, "uid") => text(&input.user.uid),
        (Part::UserInfo, "groups") => V::Strings(&input.user.groups),
        (Part::Kind, "group") => text(&input.kind.group),
        (Part::Kind, "version") => text(&input.kind.version),
        (Part::Kind, "kind") => text(&input.kind.kind),
        (Part::Resource, "group") => text(&input.resource.group),
        (Part::Resource, "version") => text(&input.resource.version),
        (Part::Resource, "resource") => text(&input.resource.resource),
        _ => return None,
    })
}

enum Items<'a, 'b> {
    List(std::slice::Iter<'b, V<'a>>),
    Array(std::slice::Iter<'a, Json>),
    Keys(serde_json::map::Keys<'a>),
    Strings(std::slice::Iter<'a, String>),
}

impl<'a> Iterator for Items<'a, '_> {
    type Item = V<'a>;
    fn next(&mut self) -> Option<V<'a>> {
        match self {
            Items::List(items) => items.next().cloned(),
            Items::Array(items) => items.next().map(from_json),
            Items::Keys(keys) => keys.next().map(|k| text(k)),
            Items::Strings(items) => items.next().map(|s| text(s)),
        }
    }
}

/// `a == b` where the interpreter's answer is certain; None otherwise (mixed
/// numbers, lists the expression built).
fn equals(a: &V, b: &V) -> Option<bool> {
    if let (V::Json(a), V::Json(b)) = (a, b) {
        return json_equals(a, b);
    }
    let scalar = |v: &V| matches!(v, V::Bool(_) | V::Int(_) | V::Double(_) | V::Str(_));
    match (a, b) {
        (V::Null, V::Null) => Some(true),
        (V::Bool(x), V::Bool(y)) => Some(x == y),
        (V::Int(x), V::Int(y)) => Some(x == y),
        (V::Double(x), V::Double(y)) => Some(x == y),
        (V::Str(x), V::Str(y)) => Some(x == y),
        // Numbers of two types compare by value in the interpreter.
        (V::Int(_), V::Double(_)) | (V::Double(_), V::Int(_)) => None,
        // Null against anything else, and scalars of different types.
        (V::Null, _) | (_, V::Null) => Some(false),
        (x, y) if scalar(x) && scalar(y) => Some(false),
        _ => None,
    }
}

/// Structural equality of two JSON values as the interpreter sees them:
/// maps with the same keys and equal values, lists equal item by item. An
/// integer against a double is None (the interpreter compares them by value).
fn json_equals(a: &Json, b: &Json) -> Option<bool> {
    match (a, b) {
        (Json::Object(a), Json::Object(b)) => {
            if a.len() != b.len() {
                return Some(false);
            }
            let mut all = true;
            for (k, x) in a {
                match b.get(k) {
                    Some(y) => all &= json_equals(x, y)?,
                    None => all = false,
                }
            }
            Some(all)
        }
        (Json::Array(a), Json::Array(b)) => {
            if a.len() != b.len() {
                return Some(false);
            }
            let mut all = true;
            for (x, y) in a.iter().zip(b) {
                all &= json_equals(x, y)?;
            }
            Some(all)
        }
        (Json::Object(_) | Json::Array(_), _) | (_, Json::Object(_) | Json::Array(_)) => Some(false),
        _ => equals(&from_json(a), &from_json(b)),
    }
}

/// A value as JSON, to build a map literal; None for what JSON cannot hold as
/// the interpreter's map would (NaN, quantities, `request`).
fn to_json(v: &V) -> Option<Json> {
    Some(match v {
        V::Null => Json::Null,
        V::Bool(b) => Json::Bool(*b),
        V::Int(i) => Json::from(*i),
        V::Double(d) => Json::Number(serde_json::Number::from_f64(*d)?),
        V::Str(s) => Json::String(s.to_string()),
        V::Json(j) => (*j).clone(),
        V::List(items) => Json::Array(items.iter().map(to_json).collect::<Option<_>>()?),
        V::Request(..) | V::Strings(_) | V::Cost(_) | V::Quantity(_) => return None,
    })
}

fn compare(a: &V, b: &V) -> Option<Ordering> {
    match (a, b) {
        (V::Int(x), V::Int(y)) => Some(x.cmp(y)),
        (V::Double(x), V::Double(y)) => x.partial_cmp(y),
        (V::Str(x), V::Str(y)) => Some(x.cmp(y)),
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// `item in container`.
fn contains(container: &V, item: &V) -> Option<bool> {
    match container {
        V::Json(Json::Object(_)) | V::Request(..) | V::Cost(_) => container.has(item.as_str()?),
        _ => {
            for element in container.items()? {
                if equals(&element, item)? {
                    return Some(true);
                }
            }
            Some(false)
        }
    }
}

/// `@result + [expr]`, or `cond ? @result + [expr] : @result`: a `map` or
/// `filter` step, run by appending in place instead of copying the list.
struct Append<'a> {
    guard: Option<&'a IdedExpr>,
    items: &'a [IdedExpr],
}

impl<'a> Append<'a> {
    fn of(c: &'a ComprehensionExpr) -> Option<Append<'a>> {
        let accu = c.accu_var.as_str();
        let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == accu);
        let items_of = |e: &'a IdedExpr| match &e.expr {
            Expr::Call(CallExpr { func_name, target: None, args }) if func_name == operators::ADD => {
                match args.as_slice() {
                    [lhs, IdedExpr { expr: Expr::List(list), .. }]
                        if is_accu(lhs) && list.optional_indices.is_empty() =>
                    {
                        Some(list.elements.as_slice())
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let always = matches!(&c.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if *b.inner());
        if !is_accu(&c.result) || !always {
            return None;
        }
        match &c.loop_step.expr {
            Expr::Call(CallExpr { func_name, target: None, args }) if func_name == operators::CONDITIONAL => {
                match args.as_slice() {
                    [guard, step, otherwise] if is_accu(otherwise) => {
                        Some(Append { guard: Some(guard), items: items_of(step)? })
                    }
                    _ => None,
                }
            }
            _ => Some(Append { guard: None, items: items_of(&c.loop_step)? }),
        }
    }
}

impl<'a> Scope<'_, 'a> {
    fn eval(&mut self, expr: &'a IdedExpr) -> Option<V<'a>> {
        match &expr.expr {
            Expr::Literal(literal) => match literal {
                LiteralValue::Boolean(b) => Some(V::Bool(*b.inner())),
                LiteralValue::Int(i) => Some(V::Int(*i.inner())),
                LiteralValue::Double(d) => Some(V::Double(*d.inner())),
                LiteralValue::String(s) => Some(text(s.inner())),
                LiteralValue::Null => Some(V::Null),
                LiteralValue::UInt(_) | LiteralValue::Bytes(_) => None,
            },
            Expr::Ident(name) => self.ident(name),
            // `variables.name`: the variables are no value of their own here.
            Expr::Select(select)
                if !select.test
                    && matches!(&select.operand.expr, Expr::Ident(n) if n == "variables")
                    && !self.locals.iter().any(|(n, _)| *n == "variables") =>
            {
                let (_, v) = self.roots.variables.iter().find(|(n, _)| *n == select.field)?;
                Some(v.clone())
            }
            Expr::Select(select) => {
                let operand = self.eval(&select.operand)?;
                if select.test { operand.has(&select.field).map(V::Bool) } else { operand.field(&select.field) }
            }
            Expr::List(list) if list.optional_indices.is_empty() => {
                let items = list.elements.iter().map(|e| self.eval(e)).collect::<Option<Vec<_>>>()?;
                Some(V::List(Rc::new(items)))
            }
            Expr::Call(call) => self.call(call),
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Map(map) => {
                let mut fields = serde_json::Map::new();
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else { return None };
                    if entry.optional {
                        return None;
                    }
                    let key = self.eval(&entry.key)?;
                    let value = to_json(&self.eval(&entry.value)?)?;
                    // A duplicate key is the interpreter's to judge.
                    if fields.insert(key.as_str()?.to_string(), value).is_some() {
                        return None;
                    }
                }
                Some(V::Json(self.roots.arena.alloc(Json::Object(fields))))
            }
            Expr::List(_) | Expr::Struct(_) | Expr::Unspecified => None,
        }
    }

    fn ident(&self, name: &str) -> Option<V<'a>> {
        if let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| *n == name) {
            return Some(v.clone());
        }
        let roots = self.roots;
        match name {
            "object" => Some(json_or_null(roots.input.object.as_ref())),
            "oldObject" => Some(json_or_null(roots.input.old_object.as_ref())),
            "namespaceObject" => Some(json_or_null(roots.input.namespace_object.as_deref())),
            "request" => Some(V::Request(roots.input, Part::Root)),
            "cost" => roots.cost.map(V::Cost),
            _ => None,
        }
    }

    fn bool(&mut self, expr: &'a IdedExpr) -> Option<bool> {
        self.eval(expr)?.as_bool()
    }

    fn call(&mut self, call: &'a CallExpr) -> Option<V<'a>> {
        let name = call.func_name.as_str();
        let args = call.args.as_slice();
        if let Some(target) = &call.target {
            let this = self.eval(target)?;
            return self.method(this, name, args);
        }
        match (name, args) {
            (operators::CONDITIONAL, [cond, yes, no]) => {
                if self.bool(cond)? {
                    self.eval(yes)
                } else {
                    self.eval(no)
                }
            }
            (operators::LOGICAL_AND, [l, r]) => Some(V::Bool(self.bool(l)? && self.bool(r)?)),
            (operators::LOGICAL_OR, [l, r]) => Some(V::Bool(self.bool(l)? || self.bool(r)?)),
            (operators::LOGICAL_NOT, [x]) => Some(V::Bool(!self.bool(x)?)),
            // A value that is not a bool would be the interpreter's `true`;
            // an error would be too, and errors are its to judge.
            (operators::NOT_STRICTLY_FALSE, [x]) => self.bool(x).map(V::Bool),
            (operators::EQUALS, [l, r]) => Some(V::Bool(equals(&self.eval(l)?, &self.eval(r)?)?)),
            (operators::NOT_EQUALS, [l, r]) => Some(V::Bool(!equals(&self.eval(l)?, &self.eval(r)?)?)),
            (operators::LESS, [l, r]) => self.ordered(l, r, |o| o == Ordering::Less),
            (operators::LESS_EQUALS, [l, r]) => self.ordered(l, r, |o| o != Ordering::Greater),
            (operators::GREATER, [l, r]) => self.ordered(l, r, |o| o == Ordering::Greater),
            (operators::GREATER_EQUALS, [l, r]) => self.ordered(l, r, |o| o != Ordering::Less),
            (operators::IN, [item, container]) => {
                let item = self.eval(item)?;
                Some(V::Bool(contains(&self.eval(container)?, &item)?))
            }
            (operators::INDEX, [container, index]) => {
                let container = self.eval(container)?;
                match (container, self.eval(index)?) {
                    (container, V::Str(key)) => container.field(&key),
                    (V::List(items), V::Int(i)) => items.get(usize::try_from(i).ok()?).cloned(),
                    (V::Json(Json::Array(items)), V::Int(i)) => items.get(usize::try_from(i).ok()?).map(from_json),
                    (V::Strings(items), V::Int(i)) => items.get(usize::try_from(i).ok()?).map(|s| text(s)),
                    _ => None,
                }
            }
            (operators::ADD, [l, r]) => match (self.eval(l)?, self.eval(r)?) {
                (V::Int(x), V::Int(y)) => x.checked_add(y).map(V::Int),
                (V::Double(x), V::Double(y)) => Some(V::Double(x + y)),
                (V::Str(x), V::Str(y)) => Some(V::Str(Cow::Owned(format!("{x}{y}")))),
                (V::List(x), V::List(y)) => Some(V::List(Rc::new(x.iter().chain(y.iter()).cloned().collect()))),
                _ => None,
            },
            (operators::SUBSTRACT, [l, r]) => match (self.eval(l)?, self.eval(r)?) {
                (V::Int(x), V::Int(y)) => x.checked_sub(y).map(V::Int),
                (V::Double(x), V::Double(y)) => Some(V::Double(x - y)),
                _ => None,
            },
            (operators::MULTIPLY, [l, r]) => match (self.eval(l)?, self.eval(r)?) {
                (V::Int(x), V::Int(y)) => x.checked_mul(y).map(V::Int),
                (V::Double(x), V::Double(y)) => Some(V::Double(x * y)),
                _ => None,
            },
            (operators::DIVIDE, [l, r]) => match (self.eval(l)?, self.eval(r)?) {
                (V::Int(x), V::Int(y)) => x.checked_div(y).map(V::Int),
                (V::Double(x), V::Double(y)) if y != 0.0 => Some(V::Double(x / y)),
                _ => None,
            },
            (operators::MODULO, [l, r]) => match (self.eval(l)?, self.eval(r)?) {
                (V::Int(x), V::Int(y)) => x.checked_rem(y).map(V::Int),
                _ => None,
            },
            (operators::NEGATE, [x]) => match self.eval(x)? {
                V::Int(i) => i.checked_neg().map(V::Int),
                V::Double(d) => Some(V::Double(-d)),
                _ => None,
            },
            (budget::CHARGE_FUNCTION, [range]) => {
                let range = self.eval(range)?;
                budget::charge(range.size().unwrap_or(0).max(0) as u64).ok()?;
                Some(range)
            }
            ("size", [x]) => self.eval(x)?.size().map(V::Int),
            ("matches", [s, re]) => {
                let (s, re) = (self.eval(s)?, self.eval(re)?);
                matches(s.as_str()?, re.as_str()?)
            }
            ("string", [x]) => match self.eval(x)? {
                V::Str(s) => Some(V::Str(s)),
                V::Int(i) => Some(V::Str(Cow::Owned(i.to_string()))),
                _ => None,
            },
            ("int", [x]) => match self.eval(x)? {
                V::Int(i) => Some(V::Int(i)),
                V::Str(s) => s.parse::<i64>().ok().map(V::Int),
                _ => None,
            },
            ("podSpec", [x]) => Some(V::Json(helpers::pod_spec_or_empty(self.json(x)?))),
            ("podMetadata", [x]) => Some(V::Json(helpers::pod_metadata_or_empty(self.json(x)?))),
            ("allContainers", [x]) => {
                Some(V::List(Rc::new(helpers::all_containers(self.json(x)?).into_iter().map(from_json).collect())))
            }
            ("gpus", [x]) => Some(V::Int(helpers::gpus(self.json(x)?))),
            ("changedAt", [new, old, at]) => {
                let (new, old) = (self.json(new)?, self.json(old)?);
                Some(V::Bool(helpers::changed_at(new, old, self.eval(at)?.as_str()?)))
            }
            ("changedOutside", [new, old, ignored]) => {
                let (new, old) = (self.json(new)?, self.json(old)?);
                let ignored = self.eval(ignored)?;
                let ignored = ignored.items()?.map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()?;
                let ignored: Vec<&str> = ignored.iter().map(String::as_str).collect();
                Some(V::Bool(helpers::changed_outside(new, old, &ignored)))
            }
            ("changedLabels" | "changedAnnotations", [new, old]) => {
                let which = if name == "changedLabels" { "labels" } else { "annotations" };
                let keys = helpers::changed_keys(self.json(new)?, self.json(old)?, which);
                Some(V::List(Rc::new(keys.into_iter().map(text).collect())))
            }
            ("quantity", [x]) => Quantity::parse(self.eval(x)?.as_str()?).ok().map(V::Quantity),
            ("isQuantity", [x]) => Some(V::Bool(Quantity::parse(self.eval(x)?.as_str()?).is_ok())),
            _ => None,
        }
    }

    /// An argument the helpers read as JSON: an object or list of the request,
    /// or null.
    fn json(&mut self, expr: &'a IdedExpr) -> Option<&'a Json> {
        static NULL: Json = Json::Null;
        match self.eval(expr)? {
            V::Json(json) => Some(json),
            V::Null => Some(&NULL),
            _ => None,
        }
    }

    fn ordered(&mut self, l: &'a IdedExpr, r: &'a IdedExpr, test: fn(Ordering) -> bool) -> Option<V<'a>> {
        let (l, r) = (self.eval(l)?, self.eval(r)?);
        compare(&l, &r).map(|o| V::Bool(test(o)))
    }

    /// `this.name(args)`.
    fn method(&mut self, this: V<'a>, name: &str, args: &'a [IdedExpr]) -> Option<V<'a>> {
        let mut arg = |i: usize| -> Option<V<'a>> { self.eval(args.get(i)?) };
        match (name, args.len()) {
            ("size", 0) => this.size().map(V::Int),
            ("startsWith", 1) => Some(V::Bool(this.as_str()?.starts_with(arg(0)?.as_str()?))),
            ("endsWith", 1) => Some(V::Bool(this.as_str()?.ends_with(arg(0)?.as_str()?))),
            ("contains", 1) => Some(V::Bool(this.as_str()?.contains(arg(0)?.as_str()?))),
            ("matches", 1) => matches(this.as_str()?, arg(0)?.as_str()?),
            ("lowerAscii", 0) => Some(V::Str(Cow::Owned(this.as_str()?.to_ascii_lowercase()))),
            ("upperAscii", 0) => Some(V::Str(Cow::Owned(this.as_str()?.to_ascii_uppercase()))),
            ("join", 0 | 1) if matches!(this, V::List(_) | V::Json(Json::Array(_)) | V::Strings(_)) => {
                let separator = match args.len() {
                    0 => String::new(),
                    _ => arg(0)?.as_str()?.to_string(),
                };
                let parts = this.items()?.map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()?;
                Some(V::Str(Cow::Owned(parts.join(&separator))))
            }
            _ => {
                let V::Quantity(q) = this else { return None };
                let other = |v: V<'a>| match v {
                    V::Quantity(o) => Some(o),
                    _ => None,
                };
                match (name, args.len()) {
                    ("isGreaterThan", 1) => Some(V::Bool(q > other(arg(0)?)?)),
                    ("isLessThan", 1) => Some(V::Bool(q < other(arg(0)?)?)),
                    ("compareTo", 1) => Some(V::Int(q.cmp(&other(arg(0)?)?) as i64)),
                    ("add" | "sub", 1) => {
                        let o = match arg(0)? {
                            V::Quantity(o) => o,
                            V::Int(i) => Quantity::from_int(i),
                            _ => return None,
                        };
                        let r = if name == "add" { q.checked_add(o) } else { q.checked_sub(o) };
                        r.map(V::Quantity)
                    }
                    ("asApproximateFloat", 0) => Some(V::Double(q.as_f64())),
                    ("asInteger", 0) => q.as_i64().map(V::Int),
                    ("isInteger", 0) => Some(V::Bool(q.is_integer())),
                    ("sign", 0) => Some(V::Int(q.sign())),
                    _ => None,
                }
            }
        }
    }

    fn comprehension(&mut self, c: &'a ComprehensionExpr) -> Option<V<'a>> {
        if c.iter_var2.is_some() {
            return None;
        }
        let accu = self.eval(&c.accu_init)?;
        let range = self.eval(&c.iter_range)?;
        let items = range.items()?;
        let depth = self.locals.len();
        let out = match Append::of(c) {
            Some(append) if matches!(&accu, V::List(l) if l.is_empty()) => self.append(c, append, items),
            _ => self.fold(c, accu, items),
        };
        self.locals.truncate(depth);
        out
    }

    /// The general comprehension: `accu` folded over `items` by the loop step
    /// while the loop condition holds.
    fn fold(&mut self, c: &'a ComprehensionExpr, accu: V<'a>, items: Items<'a, '_>) -> Option<V<'a>> {
        let depth = self.locals.len();
        self.locals.push((&c.accu_var, accu));
        self.locals.push((&c.iter_var, V::Null));
        for item in items {
            // The condition sees the accumulator only (the element of the
            // previous round too, as in the interpreter; no macro reads it).
            if !self.bool(&c.loop_cond)? {
                break;
            }
            self.locals[depth + 1].1 = item;
            let next = self.eval(&c.loop_step)?;
            self.locals[depth].1 = next;
        }
        self.eval(&c.result)
    }

    fn append(&mut self, c: &'a ComprehensionExpr, step: Append<'a>, items: Items<'a, '_>) -> Option<V<'a>> {
        let mut out = Vec::new();
        let depth = self.locals.len();
        // `@result` is never read by the step but bound as the interpreter does.
        self.locals.push((&c.accu_var, V::List(Rc::new(Vec::new()))));
        self.locals.push((&c.iter_var, V::Null));
        for item in items {
            self.locals[depth + 1].1 = item;
            if let Some(guard) = step.guard
                && !self.bool(guard)?
            {
                continue;
            }
            for e in step.items {
                out.push(self.eval(e)?);
            }
        }
        Some(V::List(Rc::new(out)))
    }
}

fn matches<'a>(text: &str, pattern: &str) -> Option<V<'a>> {
    super::celenv::cached_regex(pattern).ok().map(|re| V::Bool(re.is_match(text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Operation;
    use crate::policy::{Location, Needs, compile_expr, request_scope};
    use serde_json::json;

    fn input() -> ReviewInput {
        let deployment = |image: &str, replicas: i64| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "Web-Tmp", "labels": {"app": "web", "empty": ""}},
                "spec": {"replicas": replicas, "ratio": 0.75, "nullField": null,
                    "template": {"spec": {"containers": [
                        {"name": "web", "image": image, "ports": [{"containerPort": 80}],
                         "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}},
                        {"name": "sidecar", "image": "proxy:latest", "resources": {}}]}}}})
        };
        let mut input =
            crate::policy::tests::input(Operation::Update, ("apps", "v1", "deployments"), "", "payments-prod");
        input.user.groups.push("ops".into());
        input.object = Some(deployment("web:1.5", 3));
        input.old_object = Some(deployment("web:1.4", 20));
        input
    }

    fn to_cel(v: &V) -> Option<cel::Value> {
        use std::sync::Arc;
        Some(match v {
            V::Null => cel::Value::Null,
            V::Bool(b) => cel::Value::Bool(*b),
            V::Int(i) => cel::Value::Int(*i),
            V::Double(d) => cel::Value::Float(*d),
            V::Str(s) => cel::Value::String(Arc::new(s.to_string())),
            V::Json(j) => super::super::celenv::json_to_cel(j),
            V::List(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect::<Option<Vec<_>>>()?)),
            V::Request(..) | V::Strings(_) | V::Cost(_) | V::Quantity(_) => return None,
        })
    }

    /// The fast answer (if any) and the interpreter's, for `source` on `input`.
    fn both(source: &str, input: &ReviewInput) -> (Option<cel::Value>, cel::ResolveResult) {
        let compiled = compile_expr("p", Location::Rule("r".into()), source, &mut Default::default())
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        budget::reset();
        let arena = Arena::new();
        let roots = Roots { input, cost: None, variables: &[], arena: &arena };
        let fast = eval(&compiled.run, &roots).map(|v| to_cel(&v).expect("a value the test can compare"));
        let all = Needs { request: true, object: true, old_object: true, namespace_object: true, ..Needs::default() };
        budget::reset();
        let slow = compiled.execute(&request_scope(input, all, false));
        (fast, slow)
    }

    #[test]
    fn every_fast_answer_is_the_interpreters() {
        // (expression, whether the fast path must answer it)
        let cases: &[(&str, bool)] = &[
            // The rules of the classification bench: all fast.
            ("object.spec.replicas > 50", true),
            ("object.spec.template.spec.containers.exists(c, c.image.endsWith(':latest'))", true),
            (
                "object.spec.template.spec.containers.exists(c, has(c.resources.limits) && \
                 quantity(c.resources.limits.cpu).isGreaterThan(quantity('16')))",
                true,
            ),
            ("has(object.metadata.labels) && 'forbidden' in object.metadata.labels", true),
            ("request.userInfo.username.startsWith('system:anonymous')", true),
            ("namespaceObject.metadata.labels['signoff.dev/environment'] == 'restricted'", true),
            ("object.spec.template.spec.containers.filter(c, c.name.matches('^debug-')).size() > 0", true),
            ("oldObject != null && object.spec.replicas < oldObject.spec.replicas - 10", true),
            ("object.metadata.name.lowerAscii().contains('tmp')", true),
            ("has(object.spec.template.spec.hostNetwork) && object.spec.template.spec.hostNetwork", true),
            // Presence, membership, indexing.
            ("has(object.spec.nullField)", true),
            ("has(object.spec.nope)", true),
            ("!has(object.status)", true),
            ("has(request.userInfo)", true),
            ("'app' in object.metadata.labels", true),
            ("'ops' in request.userInfo.groups", true),
            ("'x' in ['x', 'y']", true),
            ("1 in [1, 2.0]", false),
            ("object.metadata.labels['app'] == 'web'", true),
            ("object.spec.template.spec.containers[1].name", true),
            ("object.spec.template.spec.containers[5].name", false),
            ("request.userInfo.groups[0]", true),
            ("object.spec.missing == 1", false),
            ("object.nope.deeper", false),
            // Comprehensions.
            ("object.spec.template.spec.containers.all(c, has(c.resources))", true),
            ("object.spec.template.spec.containers.exists_one(c, c.name == 'web')", true),
            ("object.spec.template.spec.containers.map(c, c.name)", true),
            ("object.spec.template.spec.containers.map(c, c.name).join(',')", true),
            ("object.spec.template.spec.containers.filter(c, c.name.startsWith('s')).size()", true),
            (
                "object.spec.template.spec.containers.exists(c, has(c.ports) && c.ports.exists(p, p.containerPort == 80))",
                true,
            ),
            ("object.metadata.labels.exists(k, k == 'empty')", true),
            ("[1, 2, 3].map(x, x * 2)", true),
            ("[1, 2, 3].map(x, x > 1, x * 2)", true),
            ("object.spec.template.spec.containers.all(c, c.resources.limits.cpu == '2')", false),
            ("object.spec.template.spec.containers.exists(c, c.resources.limits.cpu == '2')", true),
            // Equality and order across types.
            ("object.metadata.name == null", true),
            ("null == object.spec.nullField", true),
            ("'a' == 1", true),
            ("true != 'true'", true),
            ("object.spec.replicas == 3.0", false),
            ("object.spec.ratio > 0.5", true),
            ("object.spec.ratio > 0", false),
            ("'abc' < 'abd'", true),
            ("object.metadata.labels == object.metadata.labels", false),
            ("[1, 2] == [1, 2]", false),
            // Arithmetic: errors are the interpreter's to report.
            ("9223372036854775807 + 1", false),
            ("1 / 0", false),
            ("7 % 3 == 1 && -(3) == -3 && 7 / 2 == 3", true),
            ("2.0 / 0.0", false),
            ("'abc' + 'def'", true),
            ("size('héllo') == 5", true),
            ("size(object.metadata.labels) == 2", true),
            // Strings, conversions, quantities, regular expressions.
            ("object.metadata.name.matches('^W.b')", true),
            ("matches(object.metadata.name, 'x')", true),
            ("object.metadata.name.upperAscii()", true),
            ("string(object.spec.replicas) == '3'", true),
            ("int('42') == 42", true),
            ("int('x')", false),
            ("quantity('1Gi').add(1).asInteger()", true),
            ("quantity('500m').compareTo(quantity('1'))", true),
            ("quantity('1.5').isInteger() || quantity('2').sign() == 1", true),
            ("quantity('1.5').asApproximateFloat()", true),
            ("isQuantity('12x')", true),
            ("quantity('12x')", false),
            // Logic: short circuits the interpreter also takes; errors beside them are its to judge.
            ("false && object.nope", true),
            ("true || object.nope", true),
            ("object.nope || true", false),
            ("object.spec.replicas > 1 ? 'many' : 'few'", true),
            ("object.spec.replicas ? 1 : 2", false),
            ("request.operation == 'UPDATE' && !request.dryRun && request.namespace.endsWith('-prod')", true),
            // Map literals and structural equality.
            ("{'a': 1}.a == 1 && {'a': [1, 'x']} == {'a': [1, 'x']}", true),
            ("{'a': 1} == {'a': 1, 'b': 2} || {'a': 1} == {'b': 1} || {'a': {'b': 1}} == {'a': {'b': 2}}", true),
            ("{'a': 1} == {'a': 1.0}", false),
            ("{'a': 1, 'a': 2}", false),
            ("object.spec.template == oldObject.spec.template", true),
            ("object.metadata == oldObject.metadata && object.metadata.labels == {'app': 'web', 'empty': ''}", true),
            ("podSpec(object) != podSpec(oldObject)", true),
            ("changedAnnotations({'metadata': podMetadata(object)}, {'metadata': {'annotations': {'x': 'y'}}})", true),
            ("(has(podSpec(object).securityContext) ? podSpec(object).securityContext : {}).size() == 0", true),
            // Not implemented: the interpreter answers.
            ("podSpec(object).containers.size() == 2 && podMetadata(object) == podMetadata(oldObject)", true),
            ("podSpec(object).containers.size() == 2 && has(podMetadata(oldObject).labels)", true),
            ("podSpec(null).size() == 0 && allContainers(object).map(c, c.name) == ['web', 'sidecar']", false),
            ("allContainers(object).exists(c, c.name == 'sidecar') && gpus(object) == 0", true),
            ("changedAt(object, oldObject, 'spec.replicas') && !changedAt(object, oldObject, 'metadata.labels')", true),
            ("changedOutside(object, oldObject, ['spec.replicas', 'spec.template'])", true),
            ("changedOutside(object, oldObject, ['spec.replicas'])", true),
            ("changedLabels(object, null).join(',') == 'app,empty'", true),
            ("changedAnnotations(object, oldObject).size() == 0", true),
            ("1u == 1u", false),
        ];
        let input = input();
        let mut wrong = Vec::new();
        for (source, must_be_fast) in cases {
            let (fast, slow) = both(source, &input);
            match (&fast, &slow) {
                (Some(f), Ok(s)) if f == s => {}
                (None, _) if !must_be_fast => {}
                _ => wrong.push(format!("{source}: fast {fast:?}, interpreter {slow:?}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn an_abandoned_fast_evaluation_leaves_the_budget_as_it_was() {
        let input = input();
        // Iterates (charges) the containers, then reads a field that is absent.
        let compiled = compile_expr(
            "p",
            Location::Rule("r".into()),
            "object.spec.template.spec.containers.map(c, c.name).size() == 2 && object.nope",
            &mut Default::default(),
        )
        .unwrap();
        budget::reset();
        assert!(
            eval(&compiled.run, &Roots { input: &input, cost: None, variables: &[], arena: &Arena::new() }).is_none()
        );
        assert_eq!(budget::remaining(), budget::RUNTIME_LIMIT);
        let counted = compile_expr(
            "p",
            Location::Rule("r".into()),
            "object.spec.template.spec.containers.all(c, true)",
            &mut Default::default(),
        )
        .unwrap();
        assert!(
            eval(&counted.run, &Roots { input: &input, cost: None, variables: &[], arena: &Arena::new() }).is_some()
        );
        assert_eq!(budget::remaining(), budget::RUNTIME_LIMIT - 2, "charged as the interpreter charges");
    }

    #[test]
    fn variables_and_cost_are_read_by_name() {
        let input = input();
        let cost = Cost { monthly_before: 10.0, monthly_after: 25.5, monthly_delta: 15.5, currency: "EUR".into() };
        let env =
            compile_expr("p", Location::Rule("r".into()), "object.metadata.labels", &mut Default::default()).unwrap();
        let arena = Arena::new();
        let labels = eval(&env.run, &Roots { input: &input, cost: None, variables: &[], arena: &arena }).unwrap();
        let variables = [("labels", labels)];
        let roots = Roots { input: &input, cost: Some(&cost), variables: &variables, arena: &arena };
        for (source, expected) in [
            ("variables.labels.app == 'web' && cost.monthlyDelta > 15.0 && cost.currency == 'EUR'", Some(true)),
            ("variables.missing == 1", None),
        ] {
            let compiled = compile_expr("p", Location::Rule("r".into()), source, &mut Default::default()).unwrap();
            assert_eq!(eval(&compiled.run, &roots).and_then(|v| v.as_bool()), expected, "{source}");
        }
    }
}
