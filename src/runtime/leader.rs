//! Leader election on a coordination.k8s.io Lease: only the leader escalates.
//! The webhook runs on every replica; escalation needs exactly one writer.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// The Lease replicas compete for, in signoff's namespace.
pub const LEASE_NAME: &str = "signoff-leader";

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

/// How long a leader keeps leading without a successful renewal: two thirds of
/// the lease, as client-go's renewDeadline. The last third is the margin that
/// keeps an old leader from overlapping the next one: others may take the Lease
/// only once a whole lease has passed since its last renewal.
pub fn renew_deadline(lease: Duration) -> Duration {
    lease * 2 / 3
}

/// Whether this replica leads at `now`, given when its last successful renewal
/// started (the time it wrote into the Lease).
pub fn leads(last_renewal: Option<Instant>, lease: Duration, now: Instant) -> bool {
    last_renewal.is_some_and(|started| now < started + renew_deadline(lease))
}

/// One try to take or renew the Lease: Ok(true) when this replica holds it now.
async fn try_hold(api: &Api<Lease>, namespace: &str, name: &str, me: &str, duration: Duration) -> kube::Result<bool> {
    let now = Timestamp::now();
    match api.get_opt(name).await? {
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            if !may_take(Some(&spec), me, now) {
                return Ok(false);
            }
            let taking_over = spec.holder_identity.as_deref() != Some(me);
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(taking_over);
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(me.to_string()),
                lease_duration_seconds: Some(duration.as_secs() as i32),
                acquire_time: if taking_over { Some(MicroTime(now)) } else { spec.acquire_time },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(transitions),
                ..spec
            });
            // resourceVersion makes this a compare-and-swap: two candidates
            // cannot both win.
            api.replace(name, &PostParams::default(), &lease).await.map(|_| true)
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(namespace.to_string()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.to_string()),
                    lease_duration_seconds: Some(duration.as_secs() as i32),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| true)
        }
    }
}

/// Give the Lease up if this replica holds it, so another may take it at once.
/// Call only once this replica has stopped escalating. Ok(true) when released.
pub async fn release(api: &Api<Lease>, name: &str, me: &str) -> kube::Result<bool> {
    let Some(mut lease) = api.get_opt(name).await? else { return Ok(false) };
    let Some(spec) = lease.spec.as_mut() else { return Ok(false) };
    if spec.holder_identity.as_deref() != Some(me) {
        return Ok(false);
    }
    // An empty holder is free (may_take); resourceVersion keeps this a
    // compare-and-swap with a concurrent taker.
    spec.holder_identity = None;
    api.replace(name, &PostParams::default(), &lease).await.map(|_| true)
}

/// Keeps trying to hold the lease; publishes whether this replica leads. A leader
/// that cannot renew (slow or unreachable API server) stops leading at the renew
/// deadline, before anyone else may take the Lease: a hung request is cut off
/// there, not when it returns.
pub async fn run(
    client: kube::Client,
    namespace: String,
    name: String,
    me: String,
    duration: Duration,
    leading: watch::Sender<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    // Several tries fit in the renew deadline, so one slow request does not end
    // a leadership.
    let retry = (duration / 6).max(Duration::from_millis(100));
    let mut last_renewal: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let budget = match last_renewal {
            Some(renewed) if leads(last_renewal, duration, started) => {
                (renewed + renew_deadline(duration)).saturating_duration_since(started)
            }
            _ => duration / 3,
        };
        match tokio::time::timeout(budget, try_hold(&api, &namespace, &name, &me, duration)).await {
            Ok(Ok(true)) => last_renewal = Some(started),
            // Someone else holds it, or won the compare-and-swap.
            Ok(Ok(false)) => last_renewal = None,
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => last_renewal = None,
            Ok(Err(e)) => warn!(error = %e, "leader election: lease not renewed"),
            Err(_) => warn!(after = ?budget, "leader election: lease renewal timed out"),
        }
        let lead = leads(last_renewal, duration, Instant::now());
        if *leading.borrow() != lead {
            info!(identity = %me, leading = lead, "leader election changed");
        }
        let _ = leading.send(lead);
        // Wake at the next try, or at the deadline if that comes first, so that
        // leadership ends on time even when every try fails fast.
        let mut next = started + retry;
        if let Some(renewed) = last_renewal.filter(|_| lead) {
            next = next.min(renewed + renew_deadline(duration));
        }
        tokio::time::sleep_until(next.into()).await;
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

    #[test]
    fn a_leader_that_cannot_renew_stops_before_anyone_may_take_over() {
        let lease = Duration::from_secs(3);
        let t0 = Instant::now();
        assert!(!leads(None, lease, t0), "never renewed");
        assert!(leads(Some(t0), lease, t0));
        assert!(leads(Some(t0), lease, t0 + Duration::from_millis(1999)));
        assert!(!leads(Some(t0), lease, t0 + Duration::from_secs(2)), "renew deadline: two thirds of the lease");
        // Others may take the Lease a whole lease after the renewal: a third of it
        // separates the old leader's last act from the new leader's first.
        assert!(t0 + renew_deadline(lease) + lease / 3 <= t0 + lease);
    }
}
