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
        Recorder::new(self.client.clone(), self.reporter.clone()).publish(event, reference).await
    }
}
