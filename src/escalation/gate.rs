//! Steps that call the API server go through a gate: a bounded number at once,
//! and when more are waiting, the one due earliest goes next. kube's controller
//! bounds its reconciles too, but holds the ones beyond its limit in a hash set
//! and takes them in no particular order: with more deadlines falling due than
//! the API server could take, p50 lateness stayed under a second while some
//! requests waited 85 s. Here lateness grows evenly and the oldest goes first,
//! also for the catch-up after a restart.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Mutex;

use jiff::Timestamp;
use tokio::sync::oneshot;

pub struct Gate {
    state: Mutex<State>,
}

struct State {
    free: usize,
    waiting: BinaryHeap<Reverse<Waiting>>,
    /// Arrival order, among waiters due at the same time.
    next: u64,
}

struct Waiting {
    due: Timestamp,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// A place through the gate; given to the next waiter when dropped.
pub struct Permit<'a>(&'a Gate);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A waiter's claim: if it is dropped after a place was handed to it but
/// before it took it (the step was cancelled), the place is passed on.
struct Claim<'a> {
    gate: &'a Gate,
    taken: Option<oneshot::Receiver<()>>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.taken.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl Gate {
    pub fn new(places: usize) -> Gate {
        Gate { state: Mutex::new(State { free: places.max(1), waiting: BinaryHeap::new(), next: 0 }) }
    }

    /// Wait for a place; among waiters, the earliest `due` first.
    pub async fn enter(&self, due: Timestamp) -> Permit<'_> {
        let rx = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.free > 0 {
                state.free -= 1;
                return Permit(self);
            }
            let (wake, rx) = oneshot::channel();
            let seq = state.next;
            state.next += 1;
            state.waiting.push(Reverse(Waiting { due, seq, wake }));
            rx
        };
        let mut claim = Claim { gate: self, taken: Some(rx) };
        if let Some(rx) = claim.taken.as_mut() {
            // Only `release` sends, and it never drops a sender unsent while
            // the gate lives.
            let _ = rx.await;
        }
        claim.taken = None;
        Permit(self)
    }

    fn release(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Reverse(next)) = state.waiting.pop() {
            if next.wake.send(()).is_ok() {
                return; // handed over
            }
        }
        state.free += 1;
    }

    /// Places free now (for tests).
    #[cfg(test)]
    fn free(&self) -> usize {
        self.state.lock().unwrap().free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    #[tokio::test]
    async fn waiters_go_through_earliest_due_first_and_places_are_never_lost() {
        let gate = Arc::new(Gate::new(2));
        let a = gate.enter(at(50)).await;
        let b = gate.enter(at(60)).await;
        assert_eq!(gate.free(), 0);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        // Arrive latest-due first; must go through earliest-due first.
        for due in [40, 10, 30, 20] {
            let (gate, order) = (gate.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _permit = gate.enter(at(due)).await;
                order.lock().unwrap().push(due);
            }));
            tokio::task::yield_now().await;
        }
        // One waiter more, cancelled while waiting: its place is not lost.
        let cancelled = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.enter(at(0)).await;
                std::future::pending::<()>().await;
            })
        };
        tokio::task::yield_now().await;
        cancelled.abort();
        let _ = cancelled.await;
        drop(a);
        drop(b);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![10, 20, 30, 40]);
        assert_eq!(gate.free(), 2, "every place came back");
    }
}
