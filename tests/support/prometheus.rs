//! A real Prometheus (the Debian package's `/usr/bin/prometheus`) on a free loopback port, with
//! a temporary data dir and a 1 s scrape interval (or another), killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to get the binary, printed when it is missing.
const INSTALL_HINT: &str = "install it with `make tools` (Debian: `apt-get install -y prometheus`, \
     binary /usr/bin/prometheus) or point L3_PROMETHEUS_BIN at a prometheus binary; \
     set L3_SKIP_PROMETHEUS_TESTS=1 to skip these tests deliberately";

/// The binary, or `None` when the tests are deliberately skipped. Panics (fails the test) when
/// the binary is missing and skipping was not asked for.
pub fn binary() -> Option<PathBuf> {
    if std::env::var("L3_SKIP_PROMETHEUS_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: L3_SKIP_PROMETHEUS_TESTS=1, real-Prometheus test not run");
        return None;
    }
    if let Ok(p) = std::env::var("L3_PROMETHEUS_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "L3_PROMETHEUS_BIN={} is not a file; {INSTALL_HINT}",
            p.display()
        );
        return Some(p);
    }
    let candidates = std::iter::once(PathBuf::from("/usr/bin/prometheus")).chain(
        std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("prometheus"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    for c in candidates {
        if c.is_file() {
            return Some(c);
        }
    }
    panic!("no `prometheus` binary found: {INSTALL_HINT}");
}

/// A free loopback port (bound then released; Prometheus binds it right after).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local addr").port()
}

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Prometheus {
    /// Start Prometheus scraping `targets` every second and wait until it is ready (bounded).
    pub async fn start(bin: &PathBuf, targets: &[SocketAddr]) -> Self {
        Self::start_every(bin, targets, 1.0).await
    }

    /// Start Prometheus scraping `targets` every `scrape_secs` and wait until it is ready.
    pub async fn start_every(bin: &PathBuf, targets: &[SocketAddr], scrape_secs: f64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: {scrape_secs}s\n  scrape_timeout: {scrape_secs}s\n  evaluation_interval: {scrape_secs}s\n\
             scrape_configs:\n  - job_name: linkerd-proxy\n    static_configs:\n      - targets: [{list}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
        // A port can be taken between `free_port` and the bind: retry with another one.
        for _attempt in 0..3 {
            let port = free_port();
            if let Some(child) = launch(bin, dir.path(), port).await {
                return Prometheus {
                    child,
                    url: format!("http://127.0.0.1:{port}"),
                    dir,
                    bin: bin.clone(),
                    port,
                };
            }
            eprintln!(
                "prometheus did not become ready on port {port}, retrying; log:\n{}",
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
            );
        }
        panic!("prometheus did not start after 3 attempts");
    }

    /// Stop it now (e.g. to test "Prometheus down").
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again after [`Prometheus::stop`]: same port, same configuration, same data.
    pub async fn restart(&mut self) {
        self.stop();
        self.child = launch(&self.bin, self.dir.path(), self.port)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "prometheus did not start again on port {}; log:\n{}",
                    self.port,
                    std::fs::read_to_string(self.dir.path().join("prometheus.log"))
                        .unwrap_or_default()
                )
            });
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Start `bin` with the configuration in `dir` on `port`; the child once it is ready, `None`
/// if it exits or is not ready within 20 s.
async fn launch(bin: &PathBuf, dir: &std::path::Path, port: u16) -> Option<Child> {
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    let mut cmd = Command::new(bin);
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
    .arg("--log.level=warn")
    .stdin(Stdio::null())
    .stdout(log.try_clone().expect("log file"))
    .stderr(log);
    // Killed with the test process, however it ends (see `cluster::spawn`).
    let mut child = super::cluster::spawn(cmd)
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let url = format!("http://127.0.0.1:{port}");
    if wait_ready(&mut child, &url, Duration::from_secs(20)).await {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

async fn wait_ready(child: &mut Child, url: &str, limit: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(r) = client
            .get(format!("{url}/-/ready"))
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

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"));
            eprintln!("prometheus log:\n{}", log.unwrap_or_default());
        }
    }
}
