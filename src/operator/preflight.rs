//! What `l3 run` checks once, before it starts, so that a set-up mistake stops it at once with
//! a message naming the cause (and a non-zero exit) instead of a loop of retries: the
//! kubeconfig loads; the API server can be reached over TLS, accepts l3's credentials and lets
//! it list LatencyPolicies in every watched scope; Prometheus answers.
//!
//! What can come and go while l3 runs is not checked here: a missing CRD or write permission is
//! reported by `/readyz` and the log, an outage of the API server or Prometheus by `/readyz`
//! and the policies' conditions, and l3 keeps running through them.

use std::time::Duration;

use kube::api::{Api, ListParams};

use super::crd::LatencyPolicy;
use crate::source::PrometheusSource;

/// How long each start-up request may take.
pub const START_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Why `l3 run` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No kubeconfig (and not in a pod), or one that cannot be used.
    #[error(
        "cannot load the Kubernetes client configuration: {0}; set KUBECONFIG to a valid \
         kubeconfig file, or run l3 in a pod with a ServiceAccount"
    )]
    Kubeconfig(String),
    /// Nothing listens at the API server's address.
    #[error(
        "cannot connect to the Kubernetes API server at {server}: connection refused (is the \
         API server running, and is this the server address of the kubeconfig you meant?)"
    )]
    ApiRefused {
        /// The API server's URL.
        server: String,
    },
    /// The TLS handshake failed: usually a certificate authority that did not sign the
    /// server's certificate.
    #[error(
        "TLS handshake with the Kubernetes API server at {server} failed: {cause} (does the \
         kubeconfig's certificate-authority match the server's certificate?)"
    )]
    ApiTls {
        /// The API server's URL.
        server: String,
        /// The TLS error.
        cause: String,
    },
    /// No answer for another reason (DNS, a reset, a timeout).
    #[error("cannot reach the Kubernetes API server at {server}: {cause}")]
    ApiUnreachable {
        /// The API server's URL.
        server: String,
        /// What failed.
        cause: String,
    },
    /// 401: the credentials are not valid.
    #[error(
        "the Kubernetes API server at {server} rejected l3's credentials (401 Unauthorized): the \
         kubeconfig's token or client certificate (in a pod: the ServiceAccount token) is not \
         valid or has expired"
    )]
    ApiUnauthorized {
        /// The API server's URL.
        server: String,
    },
    /// 403: the credentials are valid, the permissions missing.
    #[error(
        "the Kubernetes API server at {server} forbids l3 to list LatencyPolicies{scope} (403 \
         Forbidden: {message}); l3 needs the RBAC the chart installs (its ClusterRole and \
         ClusterRoleBinding, or a Role and RoleBinding per --watch-namespace)"
    )]
    ApiForbidden {
        /// The API server's URL.
        server: String,
        /// ` in namespace NS`, or nothing for all namespaces.
        scope: String,
        /// The API server's message (who was denied what).
        message: String,
    },
    /// Another answer of the API server to the start-up requests.
    #[error("the Kubernetes API server at {server} answered {what} with an error: {cause}")]
    Api {
        /// The API server's URL.
        server: String,
        /// The request.
        what: &'static str,
        /// The error.
        cause: String,
    },
    /// Prometheus cannot be reached, or refused l3's credentials.
    #[error("Prometheus at {url} cannot be used: {cause} (check --prometheus-url{hint})")]
    Prometheus {
        /// `--prometheus-url`.
        url: String,
        /// What failed.
        cause: String,
        /// Further flags to check.
        hint: &'static str,
    },
}

/// The kube client from the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the in-cluster
/// ServiceAccount, and the API server's URL.
pub async fn client() -> Result<(kube::Client, String), StartError> {
    let config = match kube::Config::infer().await {
        Ok(c) => c,
        // Outside a pod the in-cluster half of kube's message is noise: say what is wrong with
        // the kubeconfig alone.
        Err(e) if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() => {
            let why = match kube::Config::from_kubeconfig(&Default::default()).await {
                Err(k) => k.to_string(),
                Ok(_) => e.to_string(),
            };
            let file = std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into());
            return Err(StartError::Kubeconfig(format!(
                "kubeconfig {file}: {why} (and not in a pod)"
            )));
        }
        Err(e) => return Err(StartError::Kubeconfig(e.to_string())),
    };
    let server = config.cluster_url.to_string();
    let client =
        kube::Client::try_from(config).map_err(|e| StartError::Kubeconfig(e.to_string()))?;
    Ok((client, server.trim_end_matches('/').to_owned()))
}

/// The API server answers (`/version`, which every authenticated user may read, so an invalid
/// credential shows as 401), and l3 may list LatencyPolicies in every scope (403 otherwise). A
/// missing LatencyPolicy CRD (404) is left to `/readyz`, which names it and the fix.
pub async fn api_server(
    client: &kube::Client,
    server: &str,
    scopes: &[Option<String>],
) -> Result<(), StartError> {
    bounded(client.apiserver_version(), server, "GET /version").await?;
    for scope in scopes {
        let api: Api<LatencyPolicy> = match scope {
            None => Api::all(client.clone()),
            Some(ns) => Api::namespaced(client.clone(), ns),
        };
        let listed = tokio::time::timeout(
            START_CHECK_TIMEOUT,
            api.list_metadata(&ListParams::default().limit(1)),
        )
        .await;
        match listed {
            // The LatencyPolicy CRD is missing: `/readyz` names it and the fix, and l3 picks it
            // up once it is installed.
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
            other => match settle(other, server, "the list of LatencyPolicies") {
                Ok(_) => {}
                Err(StartError::ApiForbidden {
                    server, message, ..
                }) => {
                    return Err(StartError::ApiForbidden {
                        server,
                        scope: scope
                            .as_ref()
                            .map(|ns| format!(" in namespace {ns}"))
                            .unwrap_or_default(),
                        message,
                    });
                }
                Err(e) => return Err(e),
            },
        }
    }
    Ok(())
}

/// `request` within [`START_CHECK_TIMEOUT`], its error classified.
async fn bounded<T>(
    request: impl Future<Output = kube::Result<T>>,
    server: &str,
    what: &'static str,
) -> Result<T, StartError> {
    settle(
        tokio::time::timeout(START_CHECK_TIMEOUT, request).await,
        server,
        what,
    )
}

/// The outcome of a start-up request bounded by [`START_CHECK_TIMEOUT`], its error classified.
fn settle<T>(
    outcome: Result<kube::Result<T>, tokio::time::error::Elapsed>,
    server: &str,
    what: &'static str,
) -> Result<T, StartError> {
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e, server, what)),
        Err(_) => Err(StartError::ApiUnreachable {
            server: server.to_owned(),
            cause: format!(
                "no answer to {what} within {}s",
                START_CHECK_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// A kube error as the cause a user can act on.
pub fn classify(e: &kube::Error, server: &str, what: &'static str) -> StartError {
    let server = server.to_owned();
    if let kube::Error::Api(status) = e {
        return match status.code {
            401 => StartError::ApiUnauthorized { server },
            403 => StartError::ApiForbidden {
                server,
                scope: String::new(),
                message: status.message.clone(),
            },
            _ => StartError::Api {
                server,
                what,
                cause: status.message.clone(),
            },
        };
    }
    if let Some(tls) = tls_cause(e) {
        return StartError::ApiTls { server, cause: tls };
    }
    if refused(e) {
        return StartError::ApiRefused { server };
    }
    if super::is_unreachable(e) {
        return StartError::ApiUnreachable {
            server,
            cause: chain(e),
        };
    }
    StartError::Api {
        server,
        what,
        cause: chain(e),
    }
}

/// Every error in `e`'s source chain, looking into I/O errors' payloads too (an `io::Error`'s
/// `source` skips the error it wraps, which is where hyper and rustls put the cause).
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        out.push(err);
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    out
}

fn refused(e: &kube::Error) -> bool {
    causes(e).iter().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

fn tls_cause(e: &kube::Error) -> Option<String> {
    causes(e)
        .iter()
        .find_map(|c| c.downcast_ref::<rustls::Error>().map(ToString::to_string))
}

/// `e` and its causes, `: `-separated, each once.
fn chain(e: &kube::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in causes(e) {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Prometheus answers a query with l3's client, credentials and headers. Only what stops every
/// query is fatal: no connection, no answer in time, unreadable credentials, 401 or 403. Any other
/// answer means Prometheus is there; the cycles report their own errors.
pub async fn prometheus(source: &PrometheusSource, url: &str) -> Result<(), StartError> {
    use crate::source::Error as E;
    let fail = |cause: String, hint: &'static str| StartError::Prometheus {
        url: url.to_owned(),
        cause,
        hint,
    };
    match source.probe().await {
        Ok(()) => Ok(()),
        Err(e @ (E::Connect(_) | E::Timeout(_))) => Err(fail(e.to_string(), "")),
        Err(e @ E::CredentialFile { .. }) => Err(fail(e.to_string(), " and its credentials")),
        Err(
            E::Http { status, message }
            | E::Prometheus {
                status, message, ..
            },
        ) if status == 401 || status == 403 => Err(fail(
            format!("it refused l3's credentials (HTTP {status}: {message})"),
            ", --prometheus-bearer-token-file, --prometheus-username/--prometheus-password-file",
        )),
        Err(error) => {
            tracing::warn!(%error, url, "Prometheus answered the start-up query with an error");
            Ok(())
        }
    }
}
