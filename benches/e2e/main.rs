//! `make bench`: signoff measured against baselines in the same run, on a real
//! kube-apiserver and etcd on loopback (issue 11). Prints one table.
//!
//! Sections (SIGNOFF_BENCH=apiserver,webhook,scale; default all):
//! - apiserver: creates and updates through the API server, three groups
//!   interleaved in one run: no webhook, the do-nothing webhook
//!   (signoff-noop-webhook, same axum/rustls stack), signoff with the example
//!   policies. At 100 writes/s (open loop) and at the highest rate the machine
//!   sustains (closed loop). With SIGNOFF_BENCH_KYVERNO=<binary>, Kyverno is a
//!   fourth group (`make bench-peers`).
//! - webhook: AdmissionReviews straight to the webhook over TLS keep-alive at a
//!   constant rate, latency from each request's scheduled send time; signoff vs
//!   the do-nothing webhook at 500, 1,000 and 2,000 reviews/s; the hold path.
//! - scale: 10,000 pending ApprovalRequests and 1,000 policies: memory, relist
//!   peak, escalation lateness, hold-to-first-notification, restart, and the
//!   API server's CPU per request of an escalation step beside a minimal
//!   custom resource's status write (writes.rs).
//!
//! The groups differ by namespace, not by kind: every group writes the same
//! ConfigMaps and Deployments, so the API server's own per-kind cost is the
//! same in each and the ratio is the webhook's alone.

#![forbid(unsafe_code)]

mod apiserver;
mod env;
mod scale;
mod stats;
mod webhook;
mod writes;

use env::Env;
use stats::{Table, classification_rows};

fn main() {
    // `cargo test --all-targets` (make test) runs bench targets without
    // `--bench`, in a debug build: the bench is for `cargo bench` (make bench).
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/e2e: a benchmark; run it with `make bench` (cargo bench --bench e2e)");
        return;
    }
    let sections = std::env::var("SIGNOFF_BENCH").unwrap_or_else(|_| "apiserver,webhook,scale".into());
    let sections: Vec<&str> = sections.split(',').map(str::trim).collect();
    let kyverno = std::env::var("SIGNOFF_BENCH_KYVERNO").ok().filter(|s| !s.is_empty());
    let mut table = Table::default();
    let started = std::time::Instant::now();
    let env = match Env::start(kyverno.as_deref()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    };
    let mut env = env;
    if sections.contains(&"scale")
        && let Err(e) = scale::idle(&env, &mut table)
    {
        eprintln!("bench: {e}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let result = runtime.block_on(async {
        if sections.contains(&"apiserver") {
            apiserver::run(&env, &mut table).await?;
        }
        if sections.contains(&"webhook") {
            webhook::run(&env, &mut table).await?;
        }
        if sections.contains(&"scale") {
            scale::run(&mut env, &mut table).await?;
        }
        Ok::<(), String>(())
    });
    classification_rows(&mut table);
    table.print(started.elapsed());
    if let Err(e) = result {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}
