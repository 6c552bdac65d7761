//! Coalescing pages (issue 23, item 5): a flood of requests from one requester
//! pages each recipient a bounded number of times. Per recipient and requester,
//! the first `burst` escalation pages of a window go out as usual; the rest of
//! the window's pages are held and, when the window ends, sent as one summary
//! ("5 more requests from alice"). Pure: the caller gives `now`.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

/// When a held page's summary goes out, or that it goes out now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    Send,
    /// Held for the summary sent at this time.
    Held(Timestamp),
}

#[derive(Debug)]
struct Window<T> {
    until: Timestamp,
    sent: u32,
    held: Vec<T>,
}

/// Open windows per (recipient, requester), each holding what it coalesced.
#[derive(Debug)]
pub struct Coalescer<T> {
    window: SignedDuration,
    burst: u32,
    open: HashMap<(String, String), Window<T>>,
}

impl<T> Coalescer<T> {
    /// `window` zero turns coalescing off (everything is sent).
    pub fn new(window: SignedDuration, burst: u32) -> Coalescer<T> {
        Coalescer { window, burst: burst.max(1), open: HashMap::new() }
    }

    /// A page to `recipient` about a request of `requester`: send it, or hold it
    /// (with `item`) for the window's summary.
    pub fn offer(&mut self, recipient: &str, requester: &str, item: T, now: Timestamp) -> Offer {
        if self.window.is_zero() {
            return Offer::Send;
        }
        let key = (recipient.to_string(), requester.to_string());
        let window = self.open.entry(key).or_insert_with(|| Window { until: now + self.window, sent: 0, held: vec![] });
        if window.until <= now {
            // The window ended unflushed (no tick since): this page opens a new one.
            if !window.held.is_empty() {
                window.held.push(item);
                return Offer::Held(window.until);
            }
            *window = Window { until: now + self.window, sent: 0, held: vec![] };
        }
        if window.sent < self.burst {
            window.sent += 1;
            Offer::Send
        } else {
            window.held.push(item);
            Offer::Held(window.until)
        }
    }

    /// Windows that ended by `now` and held something: (recipient, requester,
    /// what they held), for one summary each. Ended windows are closed.
    pub fn due(&mut self, now: Timestamp) -> Vec<(String, String, Vec<T>)> {
        let ended: Vec<(String, String)> =
            self.open.iter().filter(|(_, w)| w.until <= now).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::new();
        for key in ended {
            if let Some(window) = self.open.remove(&key)
                && !window.held.is_empty()
            {
                out.push((key.0, key.1, window.held));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn a_flood_pages_a_recipient_burst_times_then_once_per_window() {
        let mut c = Coalescer::new(SignedDuration::from_secs(60), 2);
        let offers: Vec<Offer> = (0..5).map(|i| c.offer("user/bob", "mallory", i, at(i))).collect();
        assert_eq!(offers, [Offer::Send, Offer::Send, Offer::Held(at(60)), Offer::Held(at(60)), Offer::Held(at(60))]);
        // Others are not held back by mallory's flood.
        assert_eq!(c.offer("user/bob", "alice", 9, at(5)), Offer::Send);
        assert_eq!(c.offer("user/carol", "mallory", 9, at(5)), Offer::Send);
        assert!(c.due(at(59)).is_empty());
        assert_eq!(c.due(at(60)), vec![("user/bob".to_string(), "mallory".to_string(), vec![2, 3, 4])]);
        assert!(c.due(at(61)).is_empty(), "a window's summary goes out once");
        // After the window, a new one starts.
        assert_eq!(c.offer("user/bob", "mallory", 5, at(61)), Offer::Send);
    }

    #[test]
    fn a_zero_window_sends_everything() {
        let mut c = Coalescer::new(SignedDuration::ZERO, 1);
        assert!((0..10).all(|i| c.offer("user/bob", "mallory", i, at(i)) == Offer::Send));
        assert!(c.due(at(100)).is_empty());
    }
}
