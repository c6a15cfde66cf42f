//! The process-wide TLS crypto provider.
//!
//! kube-client enables rustls' `ring` provider and reqwest enables `aws-lc-rs`; with both
//! compiled in, rustls cannot pick a default by itself and the first TLS client (the Kubernetes
//! client, or the Prometheus client) panics. Installing one explicitly, before any client is
//! built, makes the choice ours: aws-lc-rs, rustls' own default.

/// Install aws-lc-rs as the process default; a no-op when a default is already installed.
pub fn install_crypto_provider() {
    // `Err` only means a provider is already installed (e.g. by a test), which is fine.
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
