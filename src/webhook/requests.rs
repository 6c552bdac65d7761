//! Every ApprovalRequest's requester, target and liveness, kept from a watch on
//! every replica. Flood control reads it on each hold. It used to list the
//! requester's requests from the API server instead, each in full: with
//! 10,000 pending from one requester a hold took over a second, and the API
//! server's CPU went into serving those lists.
//!
//! The watch decodes only the few fields kept (the packet is skipped), and the
//! index is a few hundred bytes per request. Until its first list is complete,
//! `of_requester` says so and the caller lists as before. A request this
//! replica creates is added at once; one created by another replica a moment
//! earlier may be missed for the watch's delay (at worst two live requests for
//! one object, both escalating, never a change admitted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::api::{Api, ApiResource};
use kube::core::Object;
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::review::{Live, Other};
use crate::crd::{ApprovalRequest, Phase};

/// (namespace, name).
type Key = (Box<str>, Box<str>);
/// A live request's requester and object (`review::object_key`), shared with `Maps::live`.
type Whose = (Arc<str>, Arc<str>);

/// The requests flood control knows.
#[derive(Clone, Default)]
pub struct Requests(Arc<Index>);

#[derive(Default)]
struct Index {
    maps: RwLock<Maps>,
    synced: AtomicBool,
}

/// Every request by (namespace, name); the live ones also by requester and
/// object, so a hold costs a lookup, not a scan of the requester's requests.
/// Compact (a few hundred bytes a request): every replica keeps one.
#[derive(Default)]
struct Maps {
    /// Whose and for what, for the live ones (None: settled).
    by_key: HashMap<Key, Option<Whose>>,
    /// Live requests by requester, then by object.
    live: HashMap<Arc<str>, HashMap<Arc<str>, Vec<Key>>>,
}

impl Maps {
    fn add(&mut self, other: Other) {
        let key: Key = (other.namespace.into(), other.name.into());
        self.take(&key);
        if !other.live {
            self.by_key.insert(key, None);
            return;
        }
        let requester: Arc<str> = match self.live.get_key_value(other.requester.as_str()) {
            Some((shared, _)) => shared.clone(),
            None => other.requester.into(),
        };
        let target: Arc<str> = other.target.into();
        let targets = self.live.entry(requester.clone()).or_default();
        targets.entry(target.clone()).or_default().push(key.clone());
        self.by_key.insert(key, Some((requester, target)));
    }

    fn take(&mut self, key: &Key) {
        let Some(Some((requester, target))) = self.by_key.remove(key) else { return };
        if let Some(targets) = self.live.get_mut(&requester) {
            if let Some(keys) = targets.get_mut(&target) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    targets.remove(&target);
                }
            }
            if targets.is_empty() {
                self.live.remove(&requester);
            }
        }
    }
}

impl Requests {
    /// Whether `new` is already known, and its requester's other live
    /// requests; None until the watch has listed every request once.
    pub fn live(&self, new: &Other) -> Option<(bool, Live)> {
        if !self.0.synced.load(Ordering::Acquire) {
            return None;
        }
        let maps = self.0.maps.read().unwrap_or_else(|e| e.into_inner());
        let key: Key = (new.namespace.as_str().into(), new.name.as_str().into());
        let known = maps.by_key.contains_key(&key);
        let Some(targets) = maps.live.get(new.requester.as_str()) else { return Some((known, Live::default())) };
        let others = |keys: &Vec<Key>| keys.iter().filter(|k| **k != key).count();
        let same_object: Vec<(String, String)> = targets
            .get(new.target.as_str())
            .map(|keys| {
                keys.iter().filter(|k| **k != key).map(|(ns, name)| (ns.to_string(), name.to_string())).collect()
            })
            .unwrap_or_default();
        Some((known, Live { count: targets.values().map(others).sum(), same_object }))
    }

    /// Add (or replace) a request, e.g. one this replica just created.
    pub fn insert(&self, other: Other) {
        self.0.maps.write().unwrap_or_else(|e| e.into_inner()).add(other);
    }

    fn remove(&self, namespace: &str, name: &str) {
        self.0.maps.write().unwrap_or_else(|e| e.into_inner()).take(&(namespace.into(), name.into()));
    }

    /// Replace everything with a complete list, and mark the index usable.
    fn replace(&self, all: Maps) {
        *self.0.maps.write().unwrap_or_else(|e| e.into_inner()) = all;
        self.0.synced.store(true, Ordering::Release);
    }
}

/// The fields of a request's spec the index reads (serde skips the rest).
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(default)]
struct Spec {
    requester: crate::crd::Requester,
    action: crate::crd::Action,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(default)]
struct Status {
    phase: Phase,
}

type Light = Object<Spec, Status>;

/// As `Other::of` reads a whole request.
fn other(light: &Light) -> Other {
    let phase = light.status.as_ref().map(|s| s.phase);
    Other::new(&light.metadata, &light.spec.requester.username, &light.spec.action, phase)
}

/// Start the watch; the index fills in the background.
pub fn watch(client: kube::Client) -> Requests {
    let requests = Requests::default();
    let index = requests.clone();
    let api: Api<Light> = Api::all_with(client, &ApiResource::erase::<ApprovalRequest>(&()));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        let mut listing = Maps::default();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(light)) => index.insert(other(&light)),
                Ok(watcher::Event::Delete(light)) => index.remove(
                    light.metadata.namespace.as_deref().unwrap_or_default(),
                    light.metadata.name.as_deref().unwrap_or_default(),
                ),
                Ok(watcher::Event::Init) => listing = Maps::default(),
                Ok(watcher::Event::InitApply(light)) => listing.add(other(&light)),
                Ok(watcher::Event::InitDone) => index.replace(std::mem::take(&mut listing)),
                Err(e) => {
                    warn!(error = %e, "watch of ApprovalRequests for flood control failed; retrying with backoff")
                }
            }
        }
    });
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn light(json: serde_json::Value) -> Light {
        serde_json::from_value(json).expect("an ApprovalRequest as the API server sends it")
    }

    fn request(name: &str, requester: &str, object: &str, phase: &str) -> Other {
        other(&light(serde_json::json!({
            "apiVersion": "signoff.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": name, "namespace": "prod"},
            "spec": {"requester": {"username": requester}, "digest": "skipped", "packet": {"big": [1, 2, 3]},
                     "action": {"operation": "CREATE", "resource": "configmaps", "version": "v1", "kind": "ConfigMap",
                                "namespace": "prod", "name": object}},
            "status": {"phase": phase},
        })))
    }

    /// The index answers what listing the requester's requests answered.
    #[test]
    fn the_index_counts_live_requests_per_requester_and_object_once_listed() {
        let requests = Requests::default();
        let all = vec![
            request("ar-1", "mallory", "limits", "Pending"),
            request("ar-2", "mallory", "quotas", "Rejected"),
            request("ar-3", "mallory", "quotas", "Pending"),
            request("ar-4", "alice", "limits", "Pending"),
        ];
        let new = request("ar-new", "mallory", "limits", "Pending");
        assert_eq!(all[0].target, "\nconfigmaps\n\nprod\nlimits", "group, resource, subresource, namespace, name");
        assert!(all[0].live && !all[1].live);
        requests.insert(all[0].clone());
        assert_eq!(requests.live(&new), None, "not listed yet: the caller lists");
        let mut listed = Maps::default();
        for o in all.clone() {
            listed.add(o);
        }
        requests.replace(listed);
        let expected = Live::among(&new, &all);
        assert_eq!(expected, Live { count: 2, same_object: vec![("prod".into(), "ar-1".into())] });
        assert_eq!(requests.live(&new), Some((false, expected)));
        // ar-1 rejected: no longer live; ar-new created: known, not counted for itself.
        requests.insert(request("ar-1", "mallory", "limits", "Rejected"));
        requests.insert(new.clone());
        assert_eq!(requests.live(&new), Some((true, Live { count: 1, same_object: vec![] })));
        requests.remove("prod", "ar-3");
        requests.remove("prod", "ar-new");
        assert_eq!(requests.live(&new), Some((false, Live::default())));
        assert_eq!(requests.live(&request("x", "alice", "limits", "Pending")).unwrap().1.count, 1);
    }
}
