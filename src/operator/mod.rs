//! `l3 run`: the operator. Watches LatencyPolicies and keeps their targets' weights tuned
//! (SMI TrafficSplits, and the backendRefs of one rule of HTTPRoutes and GRPCRoutes).
//!
//! Modules: [`crd`] (the LatencyPolicy API), [`target`] (the target kinds, a policy's
//! resolved target, discovery), [`trafficsplit`] (SMI TrafficSplit reading and patch bodies,
//! shared by every kind), [`route`] (Gateway API and Linkerd routes), [`actuator`] (API writes), [`status`] (conditions), [`engine`] (the I/O-free
//! control cycle), [`controller`] (the cycle's I/O and the lifecycle controller), [`leader`]
//! (Lease election and the write deadline), [`health`] (what `/readyz` reports), [`metrics`] and
//! [`server`] (`/metrics`, probes), [`telemetry`] (logs), [`testing`] (a canned source),
//! [`restore`] (`l3 restore --all`, for uninstalling), [`preflight`] (the start-up checks).
//!
//! This module owns the wiring: flags, the discovery of the enabled target kinds (and running
//! without a missing one until it appears), one watch per resource and scope, and shutdown.

pub mod actuator;
pub mod controller;
pub mod crd;
pub mod engine;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod preflight;
pub mod restore;
pub mod route;
pub mod server;
pub mod status;
pub mod target;
pub mod telemetry;
pub mod testing;
pub mod trafficsplit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::CustomResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use tracing::{info, warn};

use crate::source::SignalSource;
use controller::Operator;
use crd::LatencyPolicy;
use engine::StoreLookup;
use health::Readiness;
use leader::{Leadership, LeaseSettings};
use target::{Kind, Resources};
use telemetry::LogFormat;

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The API server could not be reached at all (connection refused, DNS, TLS, timeout).
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(#[source] kube::Error),
    /// The API server answered the discovery of a target's API group with an error.
    #[error("discovering the target kinds' API groups: {0}")]
    Discovery(#[source] kube::Error),
    /// An API call took longer than the timeout.
    #[error("{0} request timed out")]
    Timeout(&'static str),
    /// A write was not started: this replica is not the leader, or its lease deadline passed.
    #[error("{0} write not started: this replica does not hold the lease")]
    NotLeader(&'static str),
    /// A write was cut off at the leadership deadline.
    #[error("{0} write cut off: the lease deadline passed before the API server answered")]
    LeaseDeadline(&'static str),
    /// A write kept hitting 409 Conflict.
    #[error("write refused with 409 Conflict {0} times in a row")]
    Conflicts(usize),
    /// A target l3 cannot use.
    #[error(transparent)]
    Split(#[from] trafficsplit::SplitError),
    /// The target's kind is not enabled, or the cluster does not serve it.
    #[error("{0}")]
    TargetUnavailable(String),
    /// Registering metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Binding a listener, starting the runtime.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A flag value that cannot be used.
    #[error("--{flag}: {message}")]
    Flag {
        /// The flag, without dashes.
        flag: &'static str,
        /// What was expected.
        message: String,
    },
    /// Rendering the CRD.
    #[error("rendering the CRD as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A watch stopped before listing its objects once.
    #[error("the {0} watch ended before its first list")]
    WatchEnded(&'static str),
    /// The lease flags do not fit together.
    #[error(transparent)]
    Timing(#[from] leader::TimingError),
    /// The Prometheus source could not be set up (flags, credentials, CA file).
    #[error("prometheus source: {0}")]
    Source(#[from] crate::source::Error),
    /// A start-up check failed: kubeconfig, API server, permissions or Prometheus.
    #[error(transparent)]
    Start(#[from] preflight::StartError),
}

impl Error {
    /// `e` as [`Error::Unreachable`] when the request never got an answer from the API server,
    /// else as `answered`.
    pub fn from_api(e: kube::Error, answered: fn(kube::Error) -> Self) -> Self {
        if is_unreachable(&e) {
            Self::Unreachable(e)
        } else {
            answered(e)
        }
    }
}

/// Whether a request failed before the API server answered it (transport, not API, errors).
pub fn is_unreachable(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

/// Result of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Arguments of `l3 run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Prometheus connection.
    #[command(flatten)]
    pub prometheus: crate::source::prometheus::PrometheusArgs,
    /// Namespace of the leader-election Lease (default: the operator's own namespace).
    #[arg(long, env = "L3_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader-election Lease (the chart's default too).
    #[arg(long, env = "L3_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// Lease duration in whole seconds, at least `1s`, e.g. `15s`; the leader renews every third
    /// of it and writes only until two thirds of it after its last confirmed renewal.
    #[arg(long, env = "L3_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,
    /// Run without leader election (a single replica only).
    #[arg(long, env = "L3_DISABLE_LEADER_ELECTION")]
    pub disable_leader_election: bool,
    /// Identity in the Lease (default: $POD_NAME, else $HOSTNAME).
    #[arg(long, env = "L3_HOLDER_ID")]
    pub holder_id: Option<String>,
    /// Address of the /metrics endpoint.
    #[arg(long, env = "L3_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, env = "L3_PROBE_ADDR", default_value = "0.0.0.0:8081")]
    pub probe_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "L3_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Namespace to watch (repeatable, or comma-separated in the env var; default: all).
    #[arg(
        long = "watch-namespace",
        env = "L3_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,
    /// Timeout of every Kubernetes API write, e.g. `4s`; must be below a third of the lease
    /// duration (refused otherwise). A write is also cut off when leadership runs out.
    #[arg(long, env = "L3_API_TIMEOUT", default_value = "4s")]
    pub api_timeout: String,
    /// How often a policy's status is refreshed when only its figures moved (filtered signals,
    /// DryRun weights); condition, generation and weight-write changes are written at once.
    #[arg(long, env = "L3_STATUS_INTERVAL", default_value = "30s")]
    pub status_interval: String,
    /// Kinds l3 tunes (repeatable, or comma-separated): `TrafficSplit`, `HTTPRoute`
    /// (gateway.networking.k8s.io), `GRPCRoute`, `HTTPRoute.policy.linkerd.io`. Only these are
    /// watched, and RBAC need only grant them.
    #[arg(
        long = "target-kinds",
        env = "L3_TARGET_KINDS",
        value_delimiter = ',',
        default_value = "TrafficSplit"
    )]
    pub target_kinds: Vec<String>,
}

/// The leader-election Lease's name unless `--lease-name` says otherwise; the chart's
/// `leaderElection.leaseName` defaults to the same, so the binary and the chart agree.
pub const DEFAULT_LEASE_NAME: &str = "l3-leader";
/// How often the control loop looks for due policies.
const TICK: Duration = Duration::from_secs(1);
/// Reporter name of Events.
const CONTROLLER_NAME: &str = "l3-operator";
/// How often l3 looks again for a missing TrafficSplit CRD, and re-checks its own CRD and
/// permissions for `/readyz`.
pub const RECHECK: Duration = Duration::from_secs(30);
/// Pause before asking again while the API server cannot be reached.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(5);
/// Longest wait at shutdown for the lease task to let the writes in flight finish and release
/// the lease, on top of the lease duration they are bounded by.
const RELEASE_GRACE: Duration = Duration::from_secs(2);

/// A duration flag; `0s` parses (the caller says why it is too short).
fn duration_flag(flag: &'static str, v: &str) -> Result<Duration> {
    crd::parse_duration(v)
        .ok()
        .filter(|s| *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| Error::Flag {
            flag,
            message: format!("{v:?} is not a duration, expected e.g. 5s or 600ms"),
        })
}

/// `--lease-duration` and `--api-timeout`, checked on their own and against each other.
pub fn timing_flags(args: &RunArgs) -> Result<(Duration, Duration)> {
    let lease_ttl = duration_flag("lease-duration", &args.lease_duration)?;
    let api_timeout = duration_flag("api-timeout", &args.api_timeout)?;
    if api_timeout.is_zero() {
        return Err(Error::Flag {
            flag: "api-timeout",
            message: format!(
                "{:?} leaves no time for any API call, expected e.g. 4s",
                args.api_timeout
            ),
        });
    }
    if args.disable_leader_election {
        leader::validate_lease(lease_ttl)?;
    } else {
        leader::validate_timing(lease_ttl, api_timeout)?;
    }
    Ok((lease_ttl, api_timeout))
}

/// `--status-interval`: how often noise-only status changes may be written; zero would write
/// them every cycle, which the interval exists to prevent.
fn status_interval_flag(v: &str) -> Result<Duration> {
    let d = duration_flag("status-interval", v)?;
    if d.is_zero() {
        return Err(Error::Flag {
            flag: "status-interval",
            message: format!(
                "{v:?} would rewrite every policy's status on every cycle, expected at least 1s \
                 (e.g. 30s)"
            ),
        });
    }
    Ok(d)
}

/// Run the operator until a shutdown signal.
pub fn main(args: &RunArgs) -> Result<()> {
    telemetry::init(args.log_format);
    runtime()?.block_on(run(args.clone()))
}

/// The multi-threaded runtime of the subcommands that talk to the API server.
fn runtime() -> Result<tokio::runtime::Runtime> {
    crate::tls::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the runtime".into(),
            source,
        })
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            context: format!("binding the {what} address {addr}"),
            source,
        })
}

/// Build the production signal source.
fn signal_source(
    args: &crate::source::prometheus::PrometheusArgs,
    registry: &prometheus::Registry,
) -> Result<crate::source::PrometheusSource> {
    use crate::source::prometheus::{PrometheusConfig, PrometheusSource};
    let config = PrometheusConfig::from_args(args)?;
    Ok(PrometheusSource::new(config, registry)?)
}

/// What every phase of the operator shares.
struct Shared {
    client: kube::Client,
    kinds: Vec<Kind>,
    scopes: Vec<Option<String>>,
    source: Arc<dyn SignalSource>,
    metrics: metrics::Metrics,
    leadership: Leadership,
    holder: String,
    api_timeout: Duration,
    status_interval: Duration,
    readiness: Arc<Readiness>,
}

/// Ask which enabled kinds are served (and in which version) until the API server answers.
async fn discover(shared: &Shared) -> Resources {
    loop {
        match target::discover(&shared.client, &shared.kinds).await {
            Ok(v) => {
                shared.readiness.report("discovery", None);
                return v;
            }
            Err(error) => {
                let pause = if matches!(error, Error::Unreachable(_)) {
                    UNREACHABLE_RETRY
                } else {
                    RECHECK
                };
                shared
                    .readiness
                    .report("discovery", Some(error.to_string()));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// How often [`store_ready`] looks again.
const STORE_READY_POLL: Duration = Duration::from_millis(200);

/// Wait until a reflector store has listed once.
///
/// `Store::wait_until_ready` wakes only the waiter that polled last: readiness sits behind a
/// oneshot channel, which keeps a single waker. The kube-runtime Controller waits on its own
/// store too, so a second waiter on that store can sleep forever (seen against a real API server:
/// the loop never started). Asking again every 200 ms registers this waiter anew each time.
async fn store_ready<K>(store: &reflector::Store<K>) -> Result<(), reflector::store::WriterDropped>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(STORE_READY_POLL, store.wait_until_ready()).await {
            Ok(r) => return r,
            Err(_) => continue,
        }
    }
}

/// The operator for one set of served kinds. Returns only when a missing CRD of an enabled
/// kind appears (the caller starts again with it) or a watch ends. One LatencyPolicy
/// controller per scope, and one watch per served kind and scope: each reflector fills the
/// store the cycle reads and, through the same stream, triggers the controller.
async fn phase(shared: &Shared, resources: Resources) -> Result<()> {
    let mut controllers = Vec::new();
    let mut policy_stores = Vec::new();
    let mut split_lookups = Vec::new();
    for scope in &shared.scopes {
        let client = shared.client.clone();
        let papi: Api<LatencyPolicy> = match scope {
            None => Api::all(client.clone()),
            Some(ns) => Api::namespaced(client.clone(), ns),
        };
        let mut controller = Controller::new(papi, watcher::Config::default().any_semantic());
        let store = controller.store();
        for (kind, ar) in resources.served() {
            let ar = ar.clone();
            let sapi: Api<DynamicObject> = match scope {
                None => Api::all_with(client.clone(), &ar),
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            };
            let writer = reflector::store::Writer::new(ar.clone());
            split_lookups.push(StoreLookup {
                store: writer.as_reader(),
                resource: ar.clone(),
                kind,
            });
            let splits = reflector::reflector(writer, watcher(sapi, watcher::Config::default()))
                .default_backoff()
                .touched_objects();
            let mapper_store = store.clone();
            controller = controller.watches_stream_with(
                splits,
                move |split: DynamicObject| {
                    engine::policies_for_split(&mapper_store.state(), kind, &split)
                },
                ar,
            );
        }
        policy_stores.push(store);
        controllers.push(controller);
    }
    let lookup: Box<dyn engine::SplitLookup> = Box::new(engine::Lookups {
        stores: split_lookups.clone(),
        resources: resources.clone(),
    });
    let recorder = Recorder::new(
        shared.client.clone(),
        Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(shared.holder.clone()),
        },
    );
    // A kind without its CRD is never read or written: the engine refuses its policies and
    // the actuator refuses to write it, naming the missing CRD.
    let actuator = actuator::Actuator::for_kinds(
        shared.client.clone(),
        resources.clone(),
        shared.metrics.clone(),
        shared.api_timeout,
    );
    let op = Arc::new(
        Operator::new(
            actuator,
            shared.source.clone(),
            shared.metrics.clone(),
            shared.leadership.clone(),
            policy_stores.clone(),
            lookup,
            Some(recorder),
        )
        .with_status_interval(shared.status_interval),
    );
    // Dropping the set (a new phase, or shutdown) stops every controller of this phase.
    let mut tasks = tokio::task::JoinSet::new();
    for c in controllers {
        tasks.spawn(
            c.run(controller::reconcile, controller::error_policy, op.clone())
                .for_each(|r| async move {
                    match r {
                        Ok(_) => {}
                        // error_policy has logged it, with the retry.
                        Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                        Err(error) => warn!(%error, "LatencyPolicy controller or watch failed"),
                    }
                }),
        );
    }
    let cycle = async {
        for s in &policy_stores {
            store_ready(s)
                .await
                .map_err(|_| Error::WatchEnded("LatencyPolicy"))?;
        }
        for s in &split_lookups {
            store_ready(&s.store)
                .await
                .map_err(|_| Error::WatchEnded(s.kind.kind()))?;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            op.cycle(now_secs()).await;
            shared.readiness.cycle_done();
        }
    };
    let rediscover = async {
        let missing = resources.missing();
        if missing.is_empty() {
            return std::future::pending().await;
        }
        loop {
            for kind in &missing {
                warn!(
                    recheck_secs = RECHECK.as_secs(),
                    kind = %kind.qualified(),
                    "{}; policies on it report TargetFound=False, l3 looks again periodically",
                    kind.missing()
                );
            }
            tokio::time::sleep(RECHECK).await;
            let now = discover(shared).await;
            if now != resources {
                info!(served = ?now.served().map(|(k, _)| k.qualified()).collect::<Vec<_>>(), "a target CRD is now served");
                return Ok(());
            }
        }
    };
    tokio::select! {
        r = cycle => r,
        r = rediscover => r,
    }
}

/// Check every [`RECHECK`] what `/readyz` reports: the LatencyPolicy CRD and the permissions in
/// each scope, and the Lease's.
async fn check_forever(
    client: kube::Client,
    scopes: Vec<Option<String>>,
    kinds: Vec<Kind>,
    lease: Option<(String, String)>,
    readiness: Arc<Readiness>,
) {
    let needs = health::scope_needs(&kinds);
    loop {
        for scope in &scopes {
            let ns = scope.as_deref();
            let at = ns.unwrap_or("*");
            readiness.report(
                &format!("latencypolicies {at}"),
                health::check_policies(&client, ns).await,
            );
            readiness.report(
                &format!("permissions {at}"),
                health::check_access(&client, ns, None, &needs).await,
            );
        }
        if let Some((ns, name)) = &lease {
            readiness.report("lease", health::check_lease(&client, ns, name).await);
            readiness.report(
                "lease permissions",
                health::check_access(&client, Some(ns), Some(name), health::LEASE_NEEDS).await,
            );
        }
        tokio::time::sleep(RECHECK).await;
    }
}

async fn run(args: RunArgs) -> Result<()> {
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "l3 starting: checking the flags, the Kubernetes API server and Prometheus"
    );
    let (lease_ttl, api_timeout) = timing_flags(&args)?;
    let status_interval = status_interval_flag(&args.status_interval)?;
    let kinds = target::parse_kinds(&args.target_kinds).map_err(|message| Error::Flag {
        flag: "target-kinds",
        message,
    })?;
    let registry = prometheus::Registry::new();
    let metrics = metrics::Metrics::new(&registry)?;
    let prometheus_source = signal_source(&args.prometheus, &registry)?;
    let scopes: Vec<Option<String>> = if args.watch_namespaces.is_empty() {
        vec![None]
    } else {
        args.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let (client, server) = preflight::client().await?;
    preflight::api_server(&client, &server, &scopes).await?;
    preflight::prometheus(&prometheus_source, &args.prometheus.prometheus_url).await?;
    let source: Arc<dyn SignalSource> = Arc::new(prometheus_source);
    let leadership = if args.disable_leader_election {
        Leadership::always()
    } else {
        Leadership::follower()
    };
    let holder = args
        .holder_id
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("l3-{}", std::process::id()));
    let lease = (!args.disable_leader_election).then(|| {
        let ns = args
            .lease_namespace
            .clone()
            .or_else(|| {
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| "default".into());
        (ns, args.lease_name.clone())
    });

    let readiness = Arc::new(Readiness::default());
    let metrics_listener = bind(args.metrics_addr, "metrics").await?;
    let probe_listener = bind(args.probe_addr, "probe").await?;
    tokio::spawn(server::serve(
        metrics_listener,
        server::metrics_router(registry),
    ));
    tokio::spawn(server::serve(
        probe_listener,
        server::probe_router(readiness.clone()),
    ));
    tokio::spawn(check_forever(
        client.clone(),
        scopes.clone(),
        kinds.clone(),
        lease.clone(),
        readiness.clone(),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let election = match &lease {
        None => {
            metrics.leader.set(1.0);
            None
        }
        Some((namespace, name)) => {
            let mut stopped = stopped.clone();
            Some(tokio::spawn(leader::run(
                client.clone(),
                LeaseSettings {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    holder: holder.clone(),
                    ttl: lease_ttl,
                },
                leadership.clone(),
                metrics.clone(),
                async move {
                    // An error means the sender is gone, i.e. shutdown too.
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )))
        }
    };
    let shared = Shared {
        client,
        kinds,
        scopes,
        source,
        metrics,
        leadership: leadership.clone(),
        holder,
        api_timeout,
        status_interval,
        readiness,
    };
    let work = async {
        loop {
            let resources = discover(&shared).await;
            for (kind, ar) in resources.served() {
                info!(kind = %kind.qualified(), version = %ar.version, "tuning this target kind");
            }
            for kind in resources.missing() {
                warn!(kind = %kind.qualified(), "{}", kind.missing());
            }
            phase(&shared, resources).await?;
        }
    };
    info!(metrics = %args.metrics_addr, probes = %args.probe_addr, "l3 operator started");
    let mut work = std::pin::pin!(work);
    tokio::select! {
        r = &mut work => return r,
        () = shutdown_signal() => info!("shutting down: no new writes, releasing the lease"),
    }
    // Stop writing at once. The loop keeps running (it writes nothing now) so that the writes
    // in flight finish rather than being dropped half-sent; the lease task waits for them,
    // then releases the lease.
    leadership.resign();
    let _ = stop.send(true);
    if let Some(task) = election {
        let release = tokio::time::timeout(lease_ttl + RELEASE_GRACE, task);
        tokio::select! {
            r = release => match r {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(%error, "the lease task failed"),
                Err(_) => warn!("the lease task did not finish; the lease expires on its own"),
            },
            r = &mut work => return r,
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The LatencyPolicy CRD as YAML.
pub fn crd_yaml() -> Result<String> {
    Ok(serde_yaml::to_string(&LatencyPolicy::crd())?)
}

/// Print the LatencyPolicy CRD as YAML.
pub fn crdgen() -> Result<()> {
    print!("{}", crd_yaml()?);
    Ok(())
}
