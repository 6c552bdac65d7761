//! Watches and caches: reflectors for the resources the webhook and the
//! reconciler read, and the compiled policy set kept current.

use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{error, warn};

use crate::crd::EscalationPolicy;
use crate::policy::PolicySet;

/// Watch every `K` (with backoff), without managedFields: caches never need
/// them, and they are most of an object's size.
pub(crate) fn watch_pruned<K>(
    api: Api<K>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default()).default_backoff().modify(|o: &mut K| o.meta_mut().managed_fields = None)
}

/// Start a reflector for `K`, return its store. The task runs until shutdown.
pub(crate) fn cache<K>(api: Api<K>, on_change: Option<Arc<Notify>>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watch_pruned(api)).touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if let Some(n) = &on_change {
                        n.notify_one();
                    }
                }
                Err(e) => warn!(error = %e, "watch error; retrying with backoff"),
            }
        }
    });
    reader
}

/// The policy set compiled from the cache; invalid policies are logged (their
/// matching changes are held until fixed).
pub(crate) fn compile(store: &Store<EscalationPolicy>) -> PolicySet {
    let state = store.state();
    let set = PolicySet::new(state.iter().map(|p| &**p));
    for e in set.errors() {
        error!(policy = %e.policy, error = %e, "invalid EscalationPolicy: its matching changes are held until it is fixed");
    }
    set
}

/// Recompile `policies` on every change of `store`, then poke each of `compiled`.
pub(crate) fn recompile_on_change<const N: usize>(
    policies: Arc<ArcSwap<PolicySet>>,
    store: Store<EscalationPolicy>,
    changed: Arc<Notify>,
    compiled: [Arc<Notify>; N],
) {
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            policies.store(Arc::new(compile(&store)));
            for c in &compiled {
                c.notify_one();
            }
        }
    });
}
