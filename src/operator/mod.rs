//! `l3 run`: the operator. Watches LatencyPolicies and keeps their TrafficSplits' weights tuned.
//!
//! Modules: [`crd`] (the LatencyPolicy API), [`trafficsplit`] (SMI TrafficSplit reading and
//! patch bodies), [`actuator`] (API writes), [`status`] (conditions), [`engine`] (the I/O-free
//! control cycle), [`controller`] (the cycle's I/O and the lifecycle controller), [`leader`] (Lease election), [`metrics`] and
//! [`server`] (`/metrics`, probes), [`telemetry`] (logs), [`testing`] (a canned source),
//! [`restore`] (`l3 restore --all`, for uninstalling).

pub mod actuator;
pub mod controller;
pub mod crd;
pub mod engine;
pub mod leader;
pub mod metrics;
pub mod restore;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod testing;
pub mod trafficsplit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::CustomResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use tracing::{error, info};

use crate::source::SignalSource;
use controller::Operator;
use crd::LatencyPolicy;
use engine::StoreLookup;
use leader::{Leadership, LeaseSettings};
use telemetry::LogFormat;

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// Finding the served TrafficSplit versions failed (is linkerd-smi installed?).
    #[error("discovering split.smi-spec.io (is linkerd-smi installed?): {0}")]
    Discovery(#[source] kube::Error),
    /// An API call took longer than the timeout.
    #[error("{0} request timed out")]
    Timeout(&'static str),
    /// A write kept hitting 409 Conflict.
    #[error("write refused with 409 Conflict {0} times in a row")]
    Conflicts(usize),
    /// A TrafficSplit l3 cannot use.
    #[error(transparent)]
    Split(#[from] trafficsplit::SplitError),
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
    /// The Prometheus source could not be set up (flags, credentials, CA file).
    #[error("prometheus source: {0}")]
    Source(#[from] crate::source::Error),
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
    /// Name of the leader-election Lease.
    #[arg(long, env = "L3_LEASE_NAME", default_value = "l3-operator")]
    pub lease_name: String,
    /// Lease duration; the leader renews every third of it and stops writing after two thirds
    /// without a renewal, e.g. `15s`.
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
    /// Timeout of every Kubernetes API write, e.g. `5s`; keep it below a third of the lease
    /// duration.
    #[arg(long, env = "L3_API_TIMEOUT", default_value = "4s")]
    pub api_timeout: String,
    /// How often a policy's status is refreshed when only its figures moved (filtered signals,
    /// DryRun weights); condition, generation and weight-write changes are written at once.
    #[arg(long, env = "L3_STATUS_INTERVAL", default_value = "30s")]
    pub status_interval: String,
}

/// How often the control loop looks for due policies.
const TICK: Duration = Duration::from_secs(1);
/// Reporter name of Events.
const CONTROLLER_NAME: &str = "l3-operator";

fn duration_flag(flag: &'static str, v: &str) -> Result<Duration> {
    crd::parse_duration(v)
        .ok()
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| Error::Flag {
            flag,
            message: format!("{v:?} is not a duration, expected e.g. 5s or 600ms"),
        })
}

/// Run the operator until a shutdown signal.
pub fn main(args: &RunArgs) -> Result<()> {
    telemetry::init(args.log_format);
    runtime()?.block_on(run(args.clone()))
}

/// The multi-threaded runtime of the subcommands that talk to the API server.
fn runtime() -> Result<tokio::runtime::Runtime> {
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
) -> Result<Arc<dyn SignalSource>> {
    use crate::source::{
        SourceConfig,
        prometheus::{PrometheusConfig, PrometheusSource},
    };
    let config = PrometheusConfig::from_args(args, SourceConfig::default())?;
    Ok(Arc::new(PrometheusSource::new(config, registry)?))
}

async fn run(args: RunArgs) -> Result<()> {
    let lease_ttl = duration_flag("lease-duration", &args.lease_duration)?;
    let api_timeout = duration_flag("api-timeout", &args.api_timeout)?;
    let status_interval = duration_flag("status-interval", &args.status_interval)?;
    let registry = prometheus::Registry::new();
    let metrics = metrics::Metrics::new(&registry)?;
    let source = signal_source(&args.prometheus, &registry)?;
    let client = kube::Client::try_default().await.map_err(Error::Kube)?;
    let version = trafficsplit::discover_version(&client).await?;
    let ar = version.api_resource();
    info!(version = version.as_str(), "using TrafficSplit version");

    let scopes: Vec<Option<String>> = if args.watch_namespaces.is_empty() {
        vec![None]
    } else {
        args.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let mut controllers = Vec::new();
    let mut policy_stores = Vec::new();
    let mut split_lookups = Vec::new();
    let mut split_watches = Vec::new();
    for scope in &scopes {
        let (papi, sapi): (Api<LatencyPolicy>, Api<DynamicObject>) = match scope {
            None => (Api::all(client.clone()), Api::all_with(client.clone(), &ar)),
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced_with(client.clone(), ns, &ar),
            ),
        };
        let controller = Controller::new(papi, watcher::Config::default().any_semantic());
        let store = controller.store();
        let mapper_store = store.clone();
        let controller = controller.watches_with(
            sapi.clone(),
            ar.clone(),
            watcher::Config::default(),
            move |split: DynamicObject| engine::policies_for_split(&mapper_store.state(), &split),
        );
        let writer = reflector::store::Writer::new(ar.clone());
        split_lookups.push(StoreLookup {
            store: writer.as_reader(),
            resource: ar.clone(),
        });
        split_watches.push(
            reflector::reflector(writer, watcher(sapi, watcher::Config::default()))
                .default_backoff()
                .applied_objects()
                .for_each(|r| async move {
                    if let Err(error) = r {
                        error!(%error, "trafficsplit watch failed");
                    }
                }),
        );
        policy_stores.push(store);
        controllers.push(controller);
    }

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
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(holder.clone()),
        },
    );
    let op = Arc::new(
        Operator::new(
            actuator::Actuator::new(client.clone(), version, metrics.clone(), api_timeout),
            source,
            metrics.clone(),
            leadership.clone(),
            policy_stores.clone(),
            Box::new(split_lookups.clone()),
            Some(recorder),
        )
        .with_status_interval(status_interval),
    );

    let ready = Arc::new(AtomicBool::new(false));
    let metrics_listener = bind(args.metrics_addr, "metrics").await?;
    let probe_listener = bind(args.probe_addr, "probe").await?;
    tokio::spawn(server::serve(
        metrics_listener,
        server::metrics_router(registry),
    ));
    tokio::spawn(server::serve(
        probe_listener,
        server::probe_router(ready.clone()),
    ));
    for w in split_watches {
        tokio::spawn(w);
    }
    if args.disable_leader_election {
        metrics.leader.set(1.0);
    } else {
        let lease_ns = args
            .lease_namespace
            .clone()
            .or_else(|| {
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| "default".into());
        tokio::spawn(leader::run(
            client.clone(),
            LeaseSettings {
                namespace: lease_ns,
                name: args.lease_name.clone(),
                holder,
                ttl: lease_ttl,
            },
            leadership,
            metrics.clone(),
        ));
    }
    for c in controllers {
        let op = op.clone();
        tokio::spawn(
            c.run(controller::reconcile, controller::error_policy, op)
                .for_each(|r| async move {
                    if let Err(error) = r {
                        tracing::debug!(%error, "controller event");
                    }
                }),
        );
    }
    let loop_op = op.clone();
    let loop_ready = ready.clone();
    let cycle = async move {
        for s in &policy_stores {
            if s.wait_until_ready().await.is_err() {
                return Err(Error::WatchEnded("LatencyPolicy"));
            }
        }
        for s in &split_lookups {
            if s.store.wait_until_ready().await.is_err() {
                return Err(Error::WatchEnded("TrafficSplit"));
            }
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            loop_op.cycle(now_secs()).await;
            loop_ready.store(
                loop_op.first_cycle_done.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    };
    info!(metrics = %args.metrics_addr, probes = %args.probe_addr, "l3 operator started");
    tokio::select! {
        r = cycle => r,
        _ = shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
    }
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
