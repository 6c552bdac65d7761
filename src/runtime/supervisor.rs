//! The leader-gated supervisor: every replica serves the webhook, only the
//! holder of the Lease runs `work` (the reconciler). Losing the Lease aborts
//! the work; stopping waits for it to end, then releases the Lease so the next
//! leader takes over at once (client-go's ReleaseOnCancel).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::leader;

/// The running election and the work it gates.
pub(crate) struct Supervisor {
    task: JoinHandle<()>,
    election: JoinHandle<()>,
    leases: Api<Lease>,
    identity: String,
}

/// Take part in the election for the Lease in `namespace` as `identity`; run
/// `work` while leading. `stopping` turning true ends the loop.
pub(crate) fn start<F, Fut>(
    client: kube::Client,
    namespace: &str,
    identity: &str,
    lease_duration: Duration,
    mut stopping: watch::Receiver<bool>,
    work: F,
) -> Supervisor
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (leading_tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(leader::run(
        client.clone(),
        namespace.to_string(),
        leader::LEASE_NAME.into(),
        identity.to_string(),
        lease_duration,
        leading_tx,
    ));
    let task = tokio::spawn(async move {
        let mut running: Option<JoinHandle<()>> = None;
        loop {
            let lead = *leading.borrow_and_update();
            match (lead, running.is_some()) {
                (true, false) => running = Some(tokio::spawn(work())),
                (false, true) => {
                    if let Some(task) = running.take() {
                        task.abort();
                    }
                }
                _ => {}
            }
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { break },
                _ = stopping.changed() => break,
            }
        }
        // Wait until the work has really stopped: the Lease is released after
        // this, and no two leaders may overlap.
        if let Some(task) = running {
            task.abort();
            let _ = task.await;
        }
    });
    Supervisor { task, election, leases: Api::namespaced(client, namespace), identity: identity.to_string() }
}

impl Supervisor {
    /// After `stopping` turned true: wait for the work to end, stop the
    /// election, and release the Lease (3 s at most).
    pub(crate) async fn stop(self) {
        let _ = self.task.await;
        self.election.abort();
        let _ = self.election.await;
        match tokio::time::timeout(
            Duration::from_secs(3),
            leader::release(&self.leases, leader::LEASE_NAME, &self.identity),
        )
        .await
        {
            Ok(Ok(true)) => info!(identity = %self.identity, "released the leader Lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "could not release the leader Lease; the next leader waits for it to expire")
            }
            Err(_) => warn!("releasing the leader Lease timed out; the next leader waits for it to expire"),
        }
    }
}
