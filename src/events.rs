//! Kubernetes Events about requests and held changes.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};

/// Publishes Events. Every Event signoff publishes is about its own object and
/// moment, so nothing is gained from kube's Recorder aggregating them into
/// series, and its series cache is scanned in full, under a lock, on every
/// publish: with 10,000 pending requests that scan was a fifth of signoff's CPU
/// and serialized every publish. A fresh Recorder per Event keeps that cache at
/// one entry.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
}

impl Events {
    pub fn new(client: kube::Client, reporter: Reporter) -> Events {
        Events { client, reporter }
    }

    pub async fn publish(&self, event: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        let event = Event {
            type_: event.type_,
            reason: event.reason.clone(),
            note: event.note.as_deref().map(fit_note),
            action: event.action.clone(),
            secondary: event.secondary.clone(),
        };
        Recorder::new(self.client.clone(), self.reporter.clone()).publish(&event, reference).await
    }
}

/// The API server refuses an Event whose note is longer than this, in bytes.
const NOTE_LIMIT: usize = 1024;

/// `note` cut to what the API server accepts, ending in `…` when cut: an
/// escalation's note names everyone told and skipped, and a refused Event
/// would say nothing at all.
fn fit_note(note: &str) -> String {
    if note.len() <= NOTE_LIMIT {
        return note.to_string();
    }
    let mut end = NOTE_LIMIT - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_cut_to_the_api_servers_limit_in_bytes() {
        assert_eq!(fit_note("tier 2 reached"), "tier 2 reached");
        let exact = "a".repeat(NOTE_LIMIT);
        assert_eq!(fit_note(&exact), exact);
        // Two-byte characters: the cut falls on a character boundary.
        let long = "é".repeat(NOTE_LIMIT);
        let cut = fit_note(&long);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…') && cut.len() > NOTE_LIMIT - 5, "{}", cut.len());
    }
}
