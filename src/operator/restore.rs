//! `l3 restore --all`: put every adopted target's (TrafficSplit's or route's) original weights
//! back and release l3's
//! finalizers, without the operator. For uninstalling l3 when policies are left behind: once
//! the operator is gone, their finalizers would otherwise block every deletion of them and of
//! their namespaces. Run it after the operator has stopped (a running operator adopts the
//! splits again).

use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::actuator::{Actuator, RestoreOutcome};
use super::crd::{FINALIZER, LatencyPolicy};
use super::target::{self, Kind, Target};
use super::{Error, Result, duration_flag, metrics};

/// Arguments of `l3 restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// Restore every LatencyPolicy's split (required: there is no partial mode).
    #[arg(long)]
    pub all: bool,
    /// Only the policies of this namespace (default: every namespace).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Timeout of every Kubernetes API call, e.g. `5s`.
    #[arg(long, env = "L3_API_TIMEOUT", default_value = "4s")]
    pub api_timeout: String,
}

/// Run `l3 restore`.
pub fn main(args: &RestoreArgs) -> Result<()> {
    super::runtime()?.block_on(run(args.clone()))
}

async fn run(args: RestoreArgs) -> Result<()> {
    if !args.all {
        return Err(Error::Flag {
            flag: "all",
            message: "required: l3 restore puts back every policy's split".into(),
        });
    }
    let timeout = duration_flag("api-timeout", &args.api_timeout)?;
    // The same start-up checks as `l3 run`: a set-up mistake is named, not blamed on discovery.
    let (client, server) = super::preflight::client().await?;
    super::preflight::api_server(&client, &server, std::slice::from_ref(&args.namespace)).await?;
    // Every kind: a policy may have adopted any of them. A kind whose CRD is missing has no
    // object that could be restored.
    let resources = target::discover(&client, &Kind::ALL).await?;
    for kind in resources.missing() {
        println!("{}: nothing of this kind to restore", kind.missing());
    }
    let metrics = metrics::Metrics::new(&prometheus::Registry::new())?;
    let actuator = Actuator::for_kinds(client.clone(), resources, metrics, timeout);
    let api: Api<LatencyPolicy> = match &args.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let policies = api
        .list(&ListParams::default())
        .await
        .map_err(Error::Kube)?;
    for p in policies.items {
        if !p.finalizers().iter().any(|f| f == FINALIZER) {
            continue;
        }
        let ns = p.namespace().unwrap_or_default();
        let name = p.name_any();
        if let Some(record) = p.adopted_target() {
            let Some(split) = Target::from_record(&record) else {
                eprintln!("{ns}/{name}: adopted target {record:?} cannot be read; skipped");
                actuator.set_finalizer(&p, None).await?;
                continue;
            };
            match actuator.restore(&ns, &split).await? {
                RestoreOutcome::Restored => {
                    println!("{ns}/{name}: {split} restored");
                }
                RestoreOutcome::NotAdopted | RestoreOutcome::Gone => {
                    println!("{ns}/{name}: {split} has nothing to restore");
                }
                RestoreOutcome::Impossible { why, originals } => {
                    eprintln!(
                        "{ns}/{name}: {split} cannot be restored ({why}); \
                         original weights: {}",
                        originals.as_deref().unwrap_or("unknown")
                    );
                }
            }
        }
        actuator.set_finalizer(&p, None).await?;
        println!("{ns}/{name}: finalizer released");
    }
    Ok(())
}
