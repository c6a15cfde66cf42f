//! A real single-node VictoriaMetrics (the Debian package's `/usr/bin/victoria-metrics`) on a
//! free loopback port, scraping targets itself through `-promscrape.config` (the same scrape
//! config a Prometheus would take), with a temporary data dir, killed on drop. It runs with its
//! defaults, as a user would, so differences from Prometheus show (e.g. `-search.latencyOffset`,
//! 30 s by default: the newest 30 s of samples are hidden from queries).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;

const INSTALL_HINT: &str = "install it with `make tools` (Debian: `apt-get install -y \
     victoria-metrics`, binary /usr/bin/victoria-metrics) or point L3_VICTORIA_METRICS_BIN at a \
     victoria-metrics binary; set L3_SKIP_VICTORIA_METRICS_TESTS=1 to skip these tests deliberately";

/// The binary, or `None` when the tests are deliberately skipped. Panics (fails the test) when
/// the binary is missing and skipping was not asked for.
pub fn binary() -> Option<PathBuf> {
    if std::env::var("L3_SKIP_VICTORIA_METRICS_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: L3_SKIP_VICTORIA_METRICS_TESTS=1, VictoriaMetrics test not run");
        return None;
    }
    let p = std::env::var("L3_VICTORIA_METRICS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/victoria-metrics"));
    assert!(
        p.is_file(),
        "no VictoriaMetrics at {}: {INSTALL_HINT}",
        p.display()
    );
    Some(p)
}

/// A running VictoriaMetrics.
pub struct Victoria {
    child: Child,
    /// Base URL of its Prometheus-compatible API, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Victoria {
    /// Start it scraping `targets` every `interval_secs` seconds and wait until it is healthy.
    pub async fn start(bin: &Path, targets: &[SocketAddr], interval_secs: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("scrape.yml");
        std::fs::write(
            &config_path,
            super::prometheus::scrape_config(targets, interval_secs),
        )
        .expect("write scrape.yml");
        let data = dir.path().join("data");
        let (child, url) = super::prometheus::start_on_free_port(
            bin,
            &dir.path().join("victoria.log"),
            "/health",
            |port| {
                vec![
                    format!("-promscrape.config={}", config_path.display()),
                    format!("-storageDataPath={}", data.display()),
                    format!("-httpListenAddr=127.0.0.1:{port}"),
                    "-loggerLevel=ERROR".into(),
                ]
            },
        )
        .await;
        Victoria { child, url, dir }
    }

    /// Stop it now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("victoria.log"));
            eprintln!("victoria-metrics log:\n{}", log.unwrap_or_default());
        }
    }
}
