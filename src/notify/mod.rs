//! Notifications: what a held change says to the people who can approve it, and
//! how it gets to them.
//!
//! - [`message`]: [`Message`], pure data built from an ApprovalRequest.
//! - [`payload`]: pure rendering per sink (generic webhook signed with
//!   HMAC-SHA256, Slack Block Kit, PagerDuty Events API v2).
//! - [`target`]: a [`Target`] resolved from a `Contact` and its Secrets.
//! - [`deliver`]: HTTP delivery with exponential backoff, a per-attempt timeout,
//!   and many targets at once; a [`DeliveryRecord`] maps to the status entry.
//!
//! Delivery can take a while when a sink is down (see [`RetryPolicy::worst_case`]):
//! the reconciler awaits it before writing the status (effects first, so a crash
//! repeats a step rather than losing a notification), with a bounded retry policy
//! so that a dead sink delays a step by seconds, not minutes.

pub mod coalesce;
pub mod deliver;
pub mod message;
pub mod payload;
pub mod target;

pub use deliver::{DeliveryRecord, DeliveryResult, Notifier, RetryPolicy};
pub use message::{ActionSummary, Message, MessageKind, Recipient, RequestRef};
pub use payload::{HttpRequest, render};
pub use target::{ResolveError, Target};

#[cfg(test)]
mod tests;
