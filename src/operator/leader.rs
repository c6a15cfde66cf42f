//! Leader election over a coordination.k8s.io Lease. Only the leader writes splits, statuses
//! and finalizers; followers run the same cycles so their filters stay warm. This module owns
//! the lease loop, the local leadership deadline every write checks, the lease flags'
//! validation and the release of the lease on shutdown.
//!
//! kube-leader-election renews the lease and creates it when it is missing, but its writes are
//! merge patches without a resourceVersion and it judges expiry by the local wall clock against
//! the holder's `renewTime`, so on its own two candidates can both "acquire" and a renew that
//! lands after a takeover still reports success. l3 wraps it:
//!
//! - l3 reads the Lease first and hands it to the crate only to renew a lease l3 already holds
//!   or to create a missing one (a create is atomic: the loser gets 409). Taking over someone
//!   else's lease is l3's own merge patch guarded by the resourceVersion of the read that
//!   showed it expired or released, so of two racing candidates exactly one wins.
//! - Expiry is judged like client-go does, on the local monotonic clock: another holder's
//!   lease has expired once its record (resourceVersion) has not changed for its
//!   `leaseDurationSeconds` since this replica first saw it. Wall clocks are never compared.
//! - Every acquire and renew is confirmed: the write's answer and a fresh read must both name
//!   this replica as holder, or leadership is dropped at once.
//! - Leadership is a deadline, not a flag: a confirmed round, timed from *before* its first
//!   request, makes this replica the leader for two thirds of the lease duration
//!   ([`VALID_FRACTION`]). Others can take over only a full lease duration after our write
//!   changed the record, so the last third is the margin for a request already on the wire.
//!   The actuator checks [`Leadership::write_permit`] before every write and every retry and
//!   bounds each request by the time left.
//!
//! Residual window: a renew via the crate is a blind patch of `renewTime` after the crate's own
//! read showed us as holder. If another replica took the lease in between (which it may do only
//! after our record stood still for a whole lease duration, i.e. long after our deadline), the
//! renew leaves that holder in place; its answer names the other holder and l3 stops. What no
//! client can rule out is a request the API server applies after the client gave up on it:
//! the third of a lease duration between our deadline and the earliest takeover covers that.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use serde_json::json;
use tracing::{info, warn};

use super::metrics::Metrics;

/// Shortest lease duration: the Lease stores whole seconds (`leaseDurationSeconds`).
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(1);
/// Longest pause between two looks at the lease by a follower, or by a leader whose last
/// renewal failed: after a release the next holder takes over within about this long.
pub const MAX_RETRY_PERIOD: Duration = Duration::from_secs(1);
/// Share of the lease duration a confirmed renewal lets this replica write for.
pub const VALID_FRACTION: (u32, u32) = (2, 3);
/// `leaseDurationSeconds` of a released lease, as kube-leader-election's `step_down` writes it,
/// so that candidates that only know the crate's wall-clock rule also take over within a second.
const RELEASED_LEASE_SECS: i32 = 1;
/// How often shutdown checks whether the writes still in flight have finished.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Errors of the lease loop; they never stop it, they are logged and the next round retries.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Reading or writing the Lease failed.
    #[error("lease API call: {0}")]
    Kube(#[from] kube::Error),
    /// kube-leader-election's renew or create failed.
    #[error("kube-leader-election: {0}")]
    Lock(#[from] kube_leader_election::Error),
    /// A round took longer than allowed.
    #[error("lease round took longer than {0:?}")]
    Timeout(Duration),
}

/// Invalid lease timing flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The lease duration is below [`MIN_LEASE_DURATION`].
    #[error(
        "--lease-duration {} is too short: the Lease stores whole seconds, use at least 1s (e.g. 15s)",
        show(*.0)
    )]
    LeaseTooShort(Duration),
    /// The lease duration has a fraction of a second the Lease cannot store.
    #[error(
        "--lease-duration {} is not a whole number of seconds: the Lease stores whole seconds (e.g. 15s)",
        show(*.0)
    )]
    LeaseFraction(Duration),
    /// A write could outlive the renewal cadence.
    #[error(
        "--api-timeout {} must be shorter than a third of --lease-duration {} (the leader \
         renews every third of the lease and a write must fit in what is left of it): lower \
         --api-timeout below {} or raise --lease-duration",
        show(*.api_timeout), show(*.lease), show(*.limit)
    )]
    ApiTimeoutTooLong {
        /// `--api-timeout`.
        api_timeout: Duration,
        /// `--lease-duration`.
        lease: Duration,
        /// A third of the lease.
        limit: Duration,
    },
}

/// A duration the way the flags spell it: `0s`, `500ms`, `15s`, `1.5s`.
pub fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Check the lease duration on its own (also without leader election it must be sane).
pub fn validate_lease(ttl: Duration) -> Result<(), TimingError> {
    if ttl < MIN_LEASE_DURATION {
        return Err(TimingError::LeaseTooShort(ttl));
    }
    if ttl.subsec_nanos() != 0 {
        return Err(TimingError::LeaseFraction(ttl));
    }
    Ok(())
}

/// Check the lease duration and the API timeout against each other.
pub fn validate_timing(ttl: Duration, api_timeout: Duration) -> Result<(), TimingError> {
    validate_lease(ttl)?;
    let limit = ttl / 3;
    if api_timeout >= limit {
        return Err(TimingError::ApiTimeoutTooLong {
            api_timeout,
            lease: ttl,
            limit,
        });
    }
    Ok(())
}

#[derive(Debug, Default)]
struct State {
    /// When this replica stops being the leader; `None` when it is not.
    valid_until: Option<Instant>,
    /// Set on shutdown: never the leader again.
    resigned: bool,
}

/// Whether this replica may write, shared by the control loop, the actuator and the lease task.
#[derive(Clone, Debug, Default)]
pub struct Leadership {
    state: Arc<Mutex<State>>,
    in_flight: Arc<AtomicUsize>,
}

/// Leave to run one write, taken right before it starts; the write must finish within
/// [`WritePermit::remaining`]. Shutdown waits until every permit is dropped before it releases
/// the lease.
#[derive(Debug)]
pub struct WritePermit {
    remaining: Duration,
    in_flight: Arc<AtomicUsize>,
}

impl WritePermit {
    /// Time left before the leadership deadline.
    pub fn remaining(&self) -> Duration {
        self.remaining
    }
}

impl Drop for WritePermit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Leadership {
    /// Never the leader until a lease is acquired.
    pub fn follower() -> Self {
        Self::default()
    }

    /// Always the leader (a single replica without election; tests).
    pub fn always() -> Self {
        let l = Self::follower();
        l.set(Some(
            Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
        ));
        l
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain fields; a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time left before this replica must stop writing; `None` when it is not the leader.
    pub fn remaining(&self) -> Option<Duration> {
        let s = self.lock();
        let until = s.valid_until.filter(|_| !s.resigned)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// True while the last confirmed renewal is fresh enough that no one else can hold the lease.
    pub fn is_leader(&self) -> bool {
        self.remaining().is_some()
    }

    /// Leave to start one write now, or `None` when this replica may not write.
    pub fn write_permit(&self) -> Option<WritePermit> {
        // Count first, then check: shutdown resigns, then waits for the count to reach zero,
        // so a write either sees the resignation or is waited for.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut permit = WritePermit {
            remaining: Duration::ZERO,
            in_flight: self.in_flight.clone(),
        };
        // On refusal the permit is dropped here, which uncounts it.
        permit.remaining = self.remaining()?;
        Some(permit)
    }

    /// Lead until `until` (what a confirmed lease round does; tests).
    pub fn lead_until(&self, until: Instant) {
        self.set(Some(until));
    }

    /// Stop writing for good (shutdown); the lease task then releases the lease.
    pub fn resign(&self) {
        let mut s = self.lock();
        s.resigned = true;
        s.valid_until = None;
    }

    /// Wait until no write holds a permit.
    pub async fn drained(&self) {
        while self.in_flight.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    fn set(&self, until: Option<Instant>) {
        let mut s = self.lock();
        if !s.resigned {
            s.valid_until = until;
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
    /// Lease duration (whole seconds, see [`validate_lease`]).
    pub ttl: Duration,
}

impl LeaseSettings {
    /// How long a confirmed renewal lets this replica write.
    pub fn valid_for(&self) -> Duration {
        self.ttl * VALID_FRACTION.0 / VALID_FRACTION.1
    }

    /// Pause between renewals of a healthy leader: three tries per lease duration.
    pub fn renew_period(&self) -> Duration {
        self.ttl / 3
    }

    /// Pause between looks of a follower, or of a leader whose renewal failed: at most
    /// [`MAX_RETRY_PERIOD`], so a released lease is taken over within about a second and a
    /// dead leader's within a lease duration plus two looks.
    pub fn retry_period(&self) -> Duration {
        self.renew_period().min(MAX_RETRY_PERIOD)
    }
}

/// The holder a Lease names, `None` when it names nobody (released or never held).
fn holder_of(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

fn lease_secs(lease: &Lease) -> Option<i32> {
    lease.spec.as_ref().and_then(|s| s.lease_duration_seconds)
}

/// Another holder's record as this replica first saw it: expiry is measured from then on the
/// local monotonic clock.
#[derive(Debug)]
struct Observed {
    resource_version: Option<String>,
    since: Instant,
}

/// What one round found.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// This replica holds the lease, confirmed by a read.
    Leading,
    /// Someone else holds it (or holds on to it) and it has not expired.
    Following(Option<String>),
}

/// The lease loop of one replica.
struct Elector {
    api: Api<Lease>,
    lock: LeaseLock,
    settings: LeaseSettings,
    observed: Option<Observed>,
}

impl Elector {
    fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        let lock = LeaseLock::new(
            client.clone(),
            &settings.namespace,
            LeaseLockParams {
                lease_name: settings.name.clone(),
                holder_id: settings.holder.clone(),
                lease_ttl: settings.ttl,
            },
        );
        Self {
            api: Api::namespaced(client, &settings.namespace),
            lock,
            settings,
            observed: None,
        }
    }

    fn me(&self) -> &str {
        &self.settings.holder
    }

    /// One look at the lease: renew, create, take over or follow; every acquire and renew is
    /// confirmed by a fresh read.
    async fn round(&mut self) -> Result<Round, LeaseError> {
        let current = self.api.get_opt(&self.settings.name).await?;
        let written = match &current {
            // Ours: renew through the crate (its read shows us too, so it renews).
            Some(l) if holder_of(l) == Some(self.me()) => self.through_crate().await?,
            // Missing: the crate creates it, atomically.
            None => self.through_crate().await?,
            Some(l) => {
                if !self.expired(l) {
                    return Ok(Round::Following(holder_of(l).map(str::to_owned)));
                }
                match self.take_over(l).await? {
                    Some(l) => l,
                    None => return Ok(Round::Following(None)),
                }
            }
        };
        self.confirm(written).await
    }

    /// Renew or create through kube-leader-election.
    async fn through_crate(&self) -> Result<Lease, LeaseError> {
        match self.lock.try_acquire_or_renew().await? {
            LeaseLockResult::Acquired(l) | LeaseLockResult::NotAcquired(l) => Ok(l),
        }
    }

    /// Whether another holder's lease may be taken: released, or its record unchanged for its
    /// whole duration on our monotonic clock.
    fn expired(&mut self, lease: &Lease) -> bool {
        if holder_of(lease).is_none() {
            return true;
        }
        let rv = lease.metadata.resource_version.clone();
        let now = Instant::now();
        let since = match &self.observed {
            Some(o) if o.resource_version == rv => o.since,
            _ => {
                self.observed = Some(Observed {
                    resource_version: rv,
                    since: now,
                });
                now
            }
        };
        // A Lease without a duration is read as ours would be.
        let ttl = lease_secs(lease)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.ttl, Duration::from_secs);
        now.duration_since(since) >= ttl
    }

    /// Take the lease with a merge patch guarded by the resourceVersion we judged it by; `None`
    /// when another candidate changed it first (409).
    async fn take_over(&self, lease: &Lease) -> Result<Option<Lease>, LeaseError> {
        let now = MicroTime(jiff_now());
        let transitions = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        let patch = json!({
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {
                "holderIdentity": self.me(),
                "acquireTime": now,
                "renewTime": now,
                "leaseDurationSeconds": whole_secs(self.settings.ttl),
                "leaseTransitions": transitions.saturating_add(1),
            },
        });
        self.guarded_patch(&patch).await
    }

    /// Give the lease up if we still hold it, guarded like a takeover so that a lease that has
    /// meanwhile passed to someone else is left alone.
    async fn release(&self) -> Result<bool, LeaseError> {
        let Some(lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(false);
        };
        if holder_of(&lease) != Some(self.me()) {
            return Ok(false);
        }
        let now = MicroTime(jiff_now());
        let patch = json!({
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {
                "holderIdentity": "",
                "renewTime": now,
                "leaseDurationSeconds": RELEASED_LEASE_SECS,
            },
        });
        Ok(self.guarded_patch(&patch).await?.is_some())
    }

    async fn guarded_patch(&self, patch: &serde_json::Value) -> Result<Option<Lease>, LeaseError> {
        let pp = PatchParams::apply(self.me());
        match self
            .api
            .patch(&self.settings.name, &pp, &Patch::Merge(patch))
            .await
        {
            Ok(l) => Ok(Some(l)),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Confirm a write that should have made us the holder: its answer and a fresh read must
    /// both name us. A read showing another holder (the record changed after our write) means
    /// the lease is lost.
    async fn confirm(&self, written: Lease) -> Result<Round, LeaseError> {
        if holder_of(&written) != Some(self.me()) {
            return Ok(Round::Following(holder_of(&written).map(str::to_owned)));
        }
        let read = self.api.get(&self.settings.name).await?;
        if holder_of(&read) == Some(self.me()) {
            return Ok(Round::Leading);
        }
        warn!(
            lease = %self.settings.name,
            holder = ?holder_of(&read),
            written_version = ?written.metadata.resource_version,
            read_version = ?read.metadata.resource_version,
            "lease changed hands right after our write; not leading"
        );
        Ok(Round::Following(holder_of(&read).map(str::to_owned)))
    }
}

fn whole_secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Keep acquiring or renewing the lease until `shutdown` resolves, then stop writing, wait for
/// the writes in flight and release the lease so that a follower takes over within about
/// [`MAX_RETRY_PERIOD`].
pub async fn run(
    client: kube::Client,
    settings: LeaseSettings,
    leadership: Leadership,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut elector = Elector::new(client, settings.clone());
    let lease = settings.name.clone();
    let me = settings.holder.clone();
    let mut was_leader = false;
    let mut last_holder: Option<String> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let started = Instant::now();
        // A round may not outlast the renewal period: its deadline would be stale anyway.
        let limit = settings.renew_period();
        let outcome = tokio::time::timeout(limit, elector.round())
            .await
            .unwrap_or(Err(LeaseError::Timeout(limit)));
        let confirmed = matches!(outcome, Ok(Round::Leading));
        let (leading, holder) = match outcome {
            Ok(Round::Leading) => {
                leadership.set(Some(started + settings.valid_for()));
                (leadership.is_leader(), Some(me.clone()))
            }
            Ok(Round::Following(holder)) => {
                leadership.set(None);
                (false, holder)
            }
            Err(error) => {
                warn!(%error, %lease, "lease round failed");
                // Keep the deadline of the last confirmed round: it already expires in time.
                (leadership.is_leader(), last_holder.clone())
            }
        };
        if leading != was_leader || holder != last_holder {
            info!(%lease, holder = holder.as_deref().unwrap_or(""), me = %me, leading, "leadership changed");
        }
        was_leader = leading;
        last_holder = holder;
        metrics.leader.set(if leading { 1.0 } else { 0.0 });
        // A leader whose renewal failed tries again soon: its deadline is running out.
        let pause = if confirmed {
            settings.renew_period()
        } else {
            settings.retry_period()
        };
        tokio::select! {
            () = tokio::time::sleep_until((started + pause).into()) => {}
            () = &mut shutdown => break,
        }
    }
    leadership.resign();
    metrics.leader.set(0.0);
    if was_leader {
        info!(%lease, holder = %me, leading = false, "leadership changed");
    }
    // Writes in flight are bounded by the deadline; wait for them so that no write of ours can
    // land after the next leader's first.
    leadership.drained().await;
    match tokio::time::timeout(settings.renew_period(), elector.release()).await {
        Ok(Ok(true)) => info!(%lease, holder = %me, "lease released"),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => {
            warn!(%error, %lease, "releasing the lease failed; it expires on its own")
        }
        Err(_) => warn!(%lease, "releasing the lease timed out; it expires on its own"),
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
        assert!(l.remaining().is_none());
        assert!(l.write_permit().is_none());
    }

    #[test]
    fn a_resigned_replica_never_leads_again() {
        let l = Leadership::always();
        l.resign();
        assert!(!l.is_leader());
        l.set(Some(Instant::now() + Duration::from_secs(10)));
        assert!(
            !l.is_leader(),
            "a round finishing after shutdown must not revive writes"
        );
    }

    #[test]
    fn permits_bound_writes_by_the_deadline_and_are_counted() {
        let l = Leadership::follower();
        l.set(Some(Instant::now() + Duration::from_secs(2)));
        let p = l.write_permit().expect("leader");
        assert!(p.remaining() <= Duration::from_secs(2));
        assert!(p.remaining() > Duration::from_secs(1));
        assert_eq!(l.in_flight.load(Ordering::Acquire), 1);
        drop(p);
        assert_eq!(l.in_flight.load(Ordering::Acquire), 0);
        l.set(None);
        assert!(l.write_permit().is_none());
        assert_eq!(
            l.in_flight.load(Ordering::Acquire),
            0,
            "a refusal holds nothing"
        );
    }

    #[test]
    fn lease_timing_is_validated() {
        let s = Duration::from_secs;
        assert_eq!(validate_timing(s(15), s(4)), Ok(()));
        assert_eq!(
            validate_timing(Duration::ZERO, s(1)),
            Err(TimingError::LeaseTooShort(Duration::ZERO))
        );
        assert_eq!(
            validate_timing(Duration::from_millis(500), s(1)),
            Err(TimingError::LeaseTooShort(Duration::from_millis(500)))
        );
        assert_eq!(
            validate_timing(Duration::from_millis(1500), Duration::from_millis(100)),
            Err(TimingError::LeaseFraction(Duration::from_millis(1500)))
        );
        assert_eq!(
            validate_timing(Duration::ZERO, s(1))
                .unwrap_err()
                .to_string(),
            "--lease-duration 0s is too short: the Lease stores whole seconds, use at least 1s (e.g. 15s)"
        );
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show(Duration::from_millis(300)), "300ms");
        let e = validate_timing(s(15), s(5)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--api-timeout 5s") && msg.contains("--lease-duration 15s"),
            "{msg}"
        );
    }

    #[test]
    fn followers_look_at_least_every_second() {
        let s = |ttl| LeaseSettings {
            namespace: "n".into(),
            name: "l".into(),
            holder: "a".into(),
            ttl,
        };
        assert_eq!(s(Duration::from_secs(15)).retry_period(), MAX_RETRY_PERIOD);
        assert_eq!(
            s(Duration::from_secs(15)).renew_period(),
            Duration::from_secs(5)
        );
        assert_eq!(
            s(Duration::from_secs(15)).valid_for(),
            Duration::from_secs(10)
        );
        assert_eq!(
            s(Duration::from_secs(1)).retry_period(),
            Duration::from_secs(1) / 3
        );
    }
}
