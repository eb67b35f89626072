//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): one replica at a
//! time writes to AWS and to Ingress status. The lease is renewed `grace` before it expires;
//! a leader that dies stops renewing and another replica takes the lease once it has expired,
//! so take-over happens within `duration` (+ one renewal attempt).

use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// Where the Lease lives and how long it lasts.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name in a cluster).
    pub identity: String,
    /// Validity of the lock after its last renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// Why leader election could not start.
#[derive(Debug, thiserror::Error)]
#[error("leader election on Lease {namespace}/{name}: {source}")]
pub struct LeaderElectionError {
    namespace: String,
    name: String,
    #[source]
    source: kube_lease_manager::LeaseManagerError,
}

/// Whether this replica leads; `true` while it holds the Lease.
pub type Leadership = watch::Receiver<bool>;

/// A leadership that is always held (no election: a single replica, or manifest mode).
pub fn always_leader() -> Leadership {
    let (tx, rx) = watch::channel(true);
    // Keep the sender alive for the program's lifetime so receivers never see it closed.
    std::mem::forget(tx);
    rx
}

/// Starts contending for the Lease in the background. Dropping every receiver releases it.
pub async fn elect(client: Client, opts: &LeaseOptions) -> Result<Leadership, LeaderElectionError> {
    let err = |source| LeaderElectionError {
        namespace: opts.namespace.clone(),
        name: opts.name.clone(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client, &opts.name)
        .with_namespace(&opts.namespace)
        .with_identity(&opts.identity)
        .with_duration(opts.duration.as_secs().max(2))
        .with_grace(opts.grace.as_secs().max(1))
        .build()
        .await
        .map_err(err)?;
    let (rx, task) = manager.watch().await;
    let identity = opts.identity.clone();
    let mut changes = rx.clone();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let leading = *changes.borrow_and_update();
            tracing::info!(identity = %identity, leading, "leadership changed");
        }
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "lease manager stopped");
        }
    });
    Ok(rx)
}
