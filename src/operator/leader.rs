//! Leader election over a coordination.k8s.io Lease (kube-leader-election). Only the leader
//! writes splits and statuses; followers run the same cycles so their filters stay warm.
//!
//! Leadership is a deadline, not a flag: each successful renewal, timed from *before* the
//! request was sent, makes this replica the leader for two thirds of the lease duration. A
//! leader whose renewals fail therefore stops writing a third of a lease duration before any
//! other replica may take the lease; API writes are bounded by a timeout shorter than that.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use tracing::{info, warn};

use super::metrics::Metrics;

/// Whether this replica may write, shared by the control loop and the lease task.
#[derive(Clone, Debug)]
pub struct Leadership {
    valid_until: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    /// Never the leader until a lease is acquired.
    pub fn follower() -> Self {
        Self {
            valid_until: Arc::new(Mutex::new(None)),
        }
    }

    /// Always the leader (a single replica without election; tests).
    pub fn always() -> Self {
        let l = Self::follower();
        l.set(Some(
            Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
        ));
        l
    }

    /// True while the last renewal is fresh enough that no one else can hold the lease.
    pub fn is_leader(&self) -> bool {
        self.valid_until
            .lock()
            .map(|v| v.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    fn set(&self, until: Option<Instant>) {
        if let Ok(mut v) = self.valid_until.lock() {
            *v = until;
        }
    }
}

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name).
    pub holder: String,
    /// Lease duration.
    pub ttl: Duration,
}

/// Keep trying to acquire or renew the lease, every third of its duration, forever.
pub async fn run(
    client: kube::Client,
    settings: LeaseSettings,
    leadership: Leadership,
    metrics: Metrics,
) {
    let lock = LeaseLock::new(
        client,
        &settings.namespace,
        LeaseLockParams {
            lease_name: settings.name.clone(),
            holder_id: settings.holder.clone(),
            lease_ttl: settings.ttl,
        },
    );
    let period = settings.ttl / 3;
    let valid_for = settings.ttl * 2 / 3;
    let mut was_leader = false;
    loop {
        let started = Instant::now();
        let outcome = tokio::time::timeout(period, lock.try_acquire_or_renew()).await;
        let leading = match outcome {
            Ok(Ok(LeaseLockResult::Acquired(_))) => {
                leadership.set(Some(started + valid_for));
                true
            }
            Ok(Ok(LeaseLockResult::NotAcquired(_))) => {
                leadership.set(None);
                false
            }
            Ok(Err(error)) => {
                warn!(%error, lease = %settings.name, "lease renewal failed");
                // Keep the deadline of the last success: it already expires in time.
                leadership.is_leader()
            }
            Err(_) => {
                warn!(lease = %settings.name, "lease renewal timed out");
                leadership.is_leader()
            }
        };
        if leading != was_leader {
            info!(lease = %settings.name, holder = %settings.holder, leading, "leadership changed");
            was_leader = leading;
        }
        metrics.leader.set(if leading { 1.0 } else { 0.0 });
        tokio::time::sleep_until((started + period).into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_is_a_deadline() {
        assert!(!Leadership::follower().is_leader());
        assert!(Leadership::always().is_leader());
        let l = Leadership::follower();
        l.set(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!l.is_leader(), "an expired renewal must stop writes");
    }
}
