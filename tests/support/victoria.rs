//! A real single-node VictoriaMetrics (the Debian package's `/usr/bin/victoria-metrics`) on a
//! free loopback port, scraping targets itself through `-promscrape.config` (the same scrape
//! config a Prometheus would take), with a temporary data dir, killed on drop. It runs with its
//! defaults, as a user would, so differences from Prometheus show (e.g. `-search.latencyOffset`,
//! 30 s by default: the newest 30 s of samples are hidden from queries).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    pub async fn start(bin: &PathBuf, targets: &[SocketAddr], interval_secs: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: {interval_secs}s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: linkerd-proxy\n    static_configs:\n      - targets: [{list}]\n"
        );
        let config_path = dir.path().join("scrape.yml");
        std::fs::write(&config_path, config).expect("write scrape.yml");
        let log_path = dir.path().join("victoria.log");
        for _attempt in 0..3 {
            let port = super::prometheus::free_port();
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut cmd = Command::new(bin);
            cmd.arg(format!("-promscrape.config={}", config_path.display()))
                .arg(format!(
                    "-storageDataPath={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg("-loggerLevel=ERROR")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log);
            let mut child = super::cluster::spawn(cmd)
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let url = format!("http://127.0.0.1:{port}");
            if wait_healthy(&mut child, &url, Duration::from_secs(20)).await {
                return Victoria { child, url, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "victoria-metrics did not become healthy on port {port}, retrying; log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        panic!("victoria-metrics did not start after 3 attempts");
    }

    /// Stop it now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_healthy(child: &mut Child, url: &str, limit: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(r) = client
            .get(format!("{url}/health"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
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
