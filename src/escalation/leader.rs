//! Leader election on a coordination.k8s.io Lease: only the leader escalates.
//! The webhook runs on every replica; escalation needs exactly one writer.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// Whether `me` may hold the lease at `now`: it is free, ours, or expired.
pub fn may_take(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == me => true,
        Some(_) => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
                Some(MicroTime(renewed)) => now >= *renewed + jiff::SignedDuration::from_secs(duration),
                None => true,
            }
        }
    }
}

/// Keeps trying to hold the lease; publishes whether this replica leads.
pub async fn run(
    client: kube::Client,
    namespace: String,
    name: String,
    me: String,
    duration: Duration,
    leading: watch::Sender<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let period = duration / 3;
    loop {
        let now = Timestamp::now();
        let result = match api.get_opt(&name).await {
            Ok(Some(mut lease)) => {
                let spec = lease.spec.clone().unwrap_or_default();
                if may_take(Some(&spec), &me, now) {
                    let taking_over = spec.holder_identity.as_deref() != Some(me.as_str());
                    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(taking_over);
                    lease.spec = Some(LeaseSpec {
                        holder_identity: Some(me.clone()),
                        lease_duration_seconds: Some(duration.as_secs() as i32),
                        acquire_time: if taking_over { Some(MicroTime(now)) } else { spec.acquire_time },
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(transitions),
                        ..spec
                    });
                    // resourceVersion makes this a compare-and-swap: two candidates
                    // cannot both win.
                    api.replace(&name, &PostParams::default(), &lease).await.map(|_| true)
                } else {
                    Ok(false)
                }
            }
            Ok(None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me.clone()),
                        lease_duration_seconds: Some(duration.as_secs() as i32),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                api.create(&PostParams::default(), &lease).await.map(|_| true)
            }
            Err(e) => Err(e),
        };
        let lead = match result {
            Ok(lead) => lead,
            Err(kube::Error::Api(e)) if e.code == 409 => false,
            Err(e) => {
                warn!(error = %e, "leader election: lease not renewed");
                false
            }
        };
        if *leading.borrow() != lead {
            info!(identity = %me, leading = lead, "leader election changed");
        }
        let _ = leading.send(lead);
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_ours_or_expired() {
        let now: Timestamp = "2026-11-22T12:00:10Z".parse().unwrap();
        assert!(may_take(None, "a", now));
        assert!(may_take(Some(&LeaseSpec::default()), "a", now));
        assert!(may_take(Some(&lease("a", "2026-11-22T12:00:09Z", 15)), "a", now));
        assert!(!may_take(Some(&lease("b", "2026-11-22T12:00:00Z", 15)), "a", now), "b renewed 10 s ago");
        assert!(may_take(Some(&lease("b", "2026-11-22T11:59:55Z", 15)), "a", now), "expired exactly now");
    }
}
