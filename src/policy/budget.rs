//! What a CEL expression may cost (issue 23, item 6), after Kubernetes' CEL
//! model: an estimate when the policy is written, refused over a budget, and a
//! limit while it runs, so that one careless or hostile rule cannot stall the
//! gate.
//!
//! - [`estimate`]: a static upper bound of the work an expression does, in
//!   steps (one per node evaluated; a comprehension's body once per element).
//!   A list literal has its own size; any other list (from the object, say)
//!   is assumed to have [`UNKNOWN_SIZE`] elements. Over [`ESTIMATE_LIMIT`], the
//!   policy does not compile, so the webhook refuses it with the estimate.
//! - [`instrument`]: rewrites every comprehension to charge the elements it
//!   iterates to a per-evaluation budget ([`charge`]) before it starts. Over
//!   [`RUNTIME_LIMIT`] elements in one policy's evaluation, the evaluation
//!   fails with an error naming the limit; an enforcing rule that fails holds
//!   the change (High), naming the rule, and never admits it.

use std::cell::Cell;

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr};

/// Elements assumed for a list or map whose size is not known when the policy
/// is written (a list in the object, such as containers or env).
pub const UNKNOWN_SIZE: u64 = 100;

/// The most steps one expression may be estimated to take.
pub const ESTIMATE_LIMIT: u64 = 1_000_000;

/// The most elements all comprehensions of one policy's evaluation may
/// iterate, together.
pub const RUNTIME_LIMIT: u64 = 200_000;

/// Classifications estimated above this many steps run off the webhook's async
/// workers (a blocking thread, under the review's deadline). Handing a review
/// to a blocking thread costs about as much CPU as classifying an ordinary one
/// (issue 25); the largest review under this limit with the policy library
/// classifies in about 0.2 ms (`make bench`, classify: "example policies,
/// largest inline review").
pub const INLINE_LIMIT: u64 = 100_000;

/// The function the rewritten comprehensions call; `@` keeps it out of what a
/// policy author can write.
pub const CHARGE_FUNCTION: &str = "@signoff_charge";

/// The static estimate of `expr`'s steps (saturating), every list that is not
/// a literal counted as [`UNKNOWN_SIZE`] elements: what a policy is refused on.
pub fn estimate(expr: &IdedExpr) -> u64 {
    steps(expr, UNKNOWN_SIZE)
}

/// Collection sizes [`Estimates`] are computed for.
pub const SIZES: [u64; 6] = [4, 8, 16, 32, 64, 128];

/// An expression's steps when no list or map it iterates has more than
/// `SIZES[i]` elements: with the sizes of the review at hand, the webhook
/// estimates what this review costs, not what the largest object might.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimates([u64; SIZES.len()]);

impl Estimates {
    pub fn of(program: &cel::Program) -> Estimates {
        // A list split from a string can be as long as the string: not bounded
        // by the review's collections, so no size helps.
        if program.references().has_function("split") {
            return Estimates([u64::MAX; SIZES.len()]);
        }
        Estimates(SIZES.map(|size| steps(program.expression(), size)))
    }

    /// The steps when the largest collection of the review has `largest`
    /// elements; unbounded (u64::MAX) above the largest of [`SIZES`].
    pub fn at(&self, largest: u64) -> u64 {
        SIZES.iter().position(|s| *s >= largest).map_or(u64::MAX, |i| self.0[i])
    }
}

impl std::ops::Add for Estimates {
    type Output = Estimates;

    /// Saturating, size by size.
    fn add(self, other: Estimates) -> Estimates {
        Estimates(std::array::from_fn(|i| self.0[i].saturating_add(other.0[i])))
    }
}

/// The most elements of any list or map in `values`, counting nested ones:
/// what a comprehension over the review's data may iterate. A list drawn from
/// it by a helper (allContainers) or a sum can be larger: [`Estimates::at`] is
/// asked at [`COMBINED`] times this.
pub fn largest_collection<'a>(values: impl IntoIterator<Item = &'a serde_json::Value>) -> u64 {
    fn walk(value: &serde_json::Value) -> u64 {
        match value {
            serde_json::Value::Array(items) => items.iter().map(walk).fold(items.len() as u64, u64::max),
            serde_json::Value::Object(map) => map.values().map(walk).fold(map.len() as u64, u64::max),
            _ => 0,
        }
    }
    values.into_iter().map(walk).max().unwrap_or(0)
}

/// A list built from the review's data can join a few of its collections
/// (allContainers joins three; `a + b` two): estimates are taken at this many
/// times the largest.
pub const COMBINED: u64 = 3;

fn steps(expr: &IdedExpr, unknown: u64) -> u64 {
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => 1,
        Expr::Select(select) => 1 + steps(&select.operand, unknown),
        Expr::Call(call) => call
            .target
            .iter()
            .map(|t| steps(t, unknown))
            .chain(call.args.iter().map(|a| steps(a, unknown)))
            .fold(1u64, u64::saturating_add),
        Expr::List(list) => list.elements.iter().map(|e| steps(e, unknown)).fold(1, u64::saturating_add),
        Expr::Map(map) => map.entries.iter().map(|e| entry_steps(&e.expr, unknown)).fold(1, u64::saturating_add),
        Expr::Struct(s) => s.entries.iter().map(|e| entry_steps(&e.expr, unknown)).fold(1, u64::saturating_add),
        Expr::Comprehension(c) => {
            let per_element = steps(&c.loop_cond, unknown).saturating_add(steps(&c.loop_step, unknown));
            steps(&c.iter_range, unknown)
                .saturating_add(steps(&c.accu_init, unknown))
                .saturating_add(size(&c.iter_range, unknown).saturating_mul(per_element))
                .saturating_add(steps(&c.result, unknown))
        }
    }
}

fn entry_steps(entry: &EntryExpr, unknown: u64) -> u64 {
    match entry {
        EntryExpr::StructField(f) => steps(&f.value, unknown),
        EntryExpr::MapEntry(m) => steps(&m.key, unknown).saturating_add(steps(&m.value, unknown)),
    }
}

/// How many elements `expr` has, as far as the source says; `unknown` for a
/// list or map it does not say.
fn size(expr: &IdedExpr, unknown: u64) -> u64 {
    match &expr.expr {
        Expr::List(list) => list.elements.len() as u64,
        Expr::Map(map) => map.entries.len() as u64,
        // `map` and `filter` yield at most as many elements as they iterate.
        Expr::Comprehension(c) if matches!(c.accu_init.expr, Expr::List(_)) => size(&c.iter_range, unknown),
        // A list built by adding lists: the sum of their sizes.
        Expr::Call(CallExpr { func_name, args, target: None }) if func_name == "_+_" && args.len() == 2 => {
            size(&args[0], unknown).saturating_add(size(&args[1], unknown))
        }
        _ => unknown,
    }
}

/// `expr` with every comprehension's range wrapped in [`CHARGE_FUNCTION`].
pub fn instrument(expr: &IdedExpr) -> IdedExpr {
    let mut out = expr.clone();
    rewrite(&mut out);
    out
}

fn rewrite(expr: &mut IdedExpr) {
    match &mut expr.expr {
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => {}
        Expr::Select(select) => rewrite(&mut select.operand),
        Expr::Call(call) => {
            if let Some(target) = call.target.as_mut() {
                rewrite(target);
            }
            call.args.iter_mut().for_each(rewrite);
        }
        Expr::List(list) => list.elements.iter_mut().for_each(rewrite),
        Expr::Map(map) => map.entries.iter_mut().for_each(|e| rewrite_entry(&mut e.expr)),
        Expr::Struct(s) => s.entries.iter_mut().for_each(|e| rewrite_entry(&mut e.expr)),
        Expr::Comprehension(c) => {
            for part in [&mut c.iter_range, &mut c.accu_init, &mut c.loop_cond, &mut c.loop_step, &mut c.result] {
                rewrite(part);
            }
            let range = std::mem::take(&mut c.iter_range);
            c.iter_range = IdedExpr {
                id: range.id,
                expr: Expr::Call(CallExpr { func_name: CHARGE_FUNCTION.into(), target: None, args: vec![range] }),
            };
        }
    }
}

fn rewrite_entry(entry: &mut EntryExpr) {
    match entry {
        EntryExpr::StructField(f) => rewrite(&mut f.value),
        EntryExpr::MapEntry(m) => {
            rewrite(&mut m.key);
            rewrite(&mut m.value);
        }
    }
}

thread_local! {
    /// Elements the evaluation on this thread may still iterate.
    static REMAINING: Cell<u64> = const { Cell::new(RUNTIME_LIMIT) };
}

/// Starts a policy's evaluation on this thread with a full budget.
pub fn reset() {
    REMAINING.with(|r| r.set(RUNTIME_LIMIT));
}

/// Elements this thread's evaluation may still iterate.
pub fn remaining() -> u64 {
    REMAINING.with(|r| r.get())
}

/// Puts the budget back to what [`remaining`] said: an evaluation that is
/// abandoned to be run again charges once.
pub fn set_remaining(elements: u64) {
    REMAINING.with(|r| r.set(elements));
}

/// Charges `elements` to this thread's budget; an error once it is spent.
pub fn charge(elements: u64) -> Result<(), String> {
    REMAINING.with(|r| {
        let left = r.get();
        if elements > left {
            r.set(0);
            Err(format!(
                "evaluation cost over the limit: its comprehensions iterate more than {RUNTIME_LIMIT} elements \
                 in one evaluation; the change is held"
            ))
        } else {
            r.set(left - elements);
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(source: &str) -> u64 {
        estimate(cel::Program::compile(source).unwrap().expression())
    }

    #[test]
    fn nested_iteration_over_literal_lists_is_estimated_by_its_sizes() {
        let thousand = format!("[{}]", (0..1000).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        let hostile = format!("{thousand}.all(x, {thousand}.all(y, x + y >= 0))");
        assert!(cost(&hostile) > ESTIMATE_LIMIT, "a million iterations: {}", cost(&hostile));
        assert!(cost(&format!("{thousand}.all(x, x >= 0)")) < ESTIMATE_LIMIT);
        // Unknown lists (from the object) count as UNKNOWN_SIZE elements each.
        let containers = "object.spec.template.spec.containers.all(c, c.env.all(e, e.name != 'x'))";
        let estimate = cost(containers);
        assert!(estimate > UNKNOWN_SIZE * UNKNOWN_SIZE && estimate < ESTIMATE_LIMIT, "{estimate}");
        assert!(cost("object.metadata.name == 'x'") < 10);
    }

    fn estimates(source: &str) -> Estimates {
        Estimates::of(&cel::Program::compile(source).unwrap())
    }

    #[test]
    fn estimates_follow_the_size_of_the_reviews_collections() {
        let nested = estimates("object.spec.containers.all(c, c.env.all(e, e.name != 'x'))");
        let by_size: Vec<u64> = SIZES.iter().map(|s| nested.at(*s)).collect();
        assert!(by_size.windows(2).all(|w| w[0] < w[1]), "{by_size:?}");
        // Nested iteration: about the square of the size.
        assert!(nested.at(8) > 64 && nested.at(8) < 64 * 20, "{}", nested.at(8));
        assert_eq!(nested.at(5), nested.at(8), "rounded up to the next size estimated for");
        assert_eq!(nested.at(SIZES[SIZES.len() - 1] + 1), u64::MAX, "larger: unbounded");
        // A list literal keeps its own size at every size.
        let literal = estimates("[1, 2, 3].all(x, x > 0)");
        assert_eq!(literal.at(4), literal.at(128));
        // A split string is as long as the string: no size bounds it.
        assert_eq!(estimates("'a,b'.split(',').all(x, x != '')").at(4), u64::MAX);
        assert_eq!((nested + literal).at(16), nested.at(16) + literal.at(16));
    }

    #[test]
    fn the_largest_collection_counts_nested_ones() {
        let v = serde_json::json!({"a": 1, "spec": {"containers": [{"env": [1, 2, 3, 4, 5, 6, 7]}]}});
        assert_eq!(largest_collection([&v]), 7);
        assert_eq!(largest_collection([]), 0);
    }

    #[test]
    fn instrumented_comprehensions_charge_their_ranges() {
        let program = cel::Program::compile("[1, 2, 3].map(x, [1, 2].filter(y, y < x)).size() == 3").unwrap();
        let instrumented = instrument(program.expression());
        let calls = format!("{instrumented:?}").matches(CHARGE_FUNCTION).count();
        assert_eq!(calls, 2, "one charge per comprehension");
        reset();
        assert!(charge(RUNTIME_LIMIT - 1).is_ok() && charge(1).is_ok());
        assert!(charge(1).unwrap_err().contains("over the limit"));
        reset();
        assert!(charge(RUNTIME_LIMIT).is_ok());
    }
}
