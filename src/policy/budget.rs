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
/// workers (a blocking thread, under the review's deadline).
pub const INLINE_LIMIT: u64 = 10_000;

/// The function the rewritten comprehensions call; `@` keeps it out of what a
/// policy author can write.
pub const CHARGE_FUNCTION: &str = "@signoff_charge";

/// The static estimate of `expr`'s steps (saturating).
pub fn estimate(expr: &IdedExpr) -> u64 {
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => 1,
        Expr::Select(select) => 1 + estimate(&select.operand),
        Expr::Call(call) => call
            .target
            .iter()
            .map(|t| estimate(t))
            .chain(call.args.iter().map(estimate))
            .fold(1u64, u64::saturating_add),
        Expr::List(list) => list.elements.iter().map(estimate).fold(1, u64::saturating_add),
        Expr::Map(map) => map.entries.iter().map(|e| entry_estimate(&e.expr)).fold(1, u64::saturating_add),
        Expr::Struct(s) => s.entries.iter().map(|e| entry_estimate(&e.expr)).fold(1, u64::saturating_add),
        Expr::Comprehension(c) => {
            let per_element = estimate(&c.loop_cond).saturating_add(estimate(&c.loop_step));
            estimate(&c.iter_range)
                .saturating_add(estimate(&c.accu_init))
                .saturating_add(size(&c.iter_range).saturating_mul(per_element))
                .saturating_add(estimate(&c.result))
        }
    }
}

fn entry_estimate(entry: &EntryExpr) -> u64 {
    match entry {
        EntryExpr::StructField(f) => estimate(&f.value),
        EntryExpr::MapEntry(m) => estimate(&m.key).saturating_add(estimate(&m.value)),
    }
}

/// How many elements `expr` has, as far as the source says.
fn size(expr: &IdedExpr) -> u64 {
    match &expr.expr {
        Expr::List(list) => list.elements.len() as u64,
        Expr::Map(map) => map.entries.len() as u64,
        // `map` and `filter` yield at most as many elements as they iterate.
        Expr::Comprehension(c) if matches!(c.accu_init.expr, Expr::List(_)) => size(&c.iter_range),
        // A list built by adding lists: the sum of their sizes.
        Expr::Call(CallExpr { func_name, args, target: None }) if func_name == "_+_" && args.len() == 2 => {
            size(&args[0]).saturating_add(size(&args[1]))
        }
        _ => UNKNOWN_SIZE,
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
