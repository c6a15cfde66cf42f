//! A real Prometheus (the Debian package's `/usr/bin/prometheus`) on a free loopback port, with
//! a temporary data dir and a 1 s scrape interval, killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// Ports handed to child servers come from below Linux's ephemeral range (32768-60999 by
/// default). A port from `bind(0)` is ephemeral, and between its release and the child's bind
/// any outgoing connection on the machine (the control plane's own clients among them) may
/// take it as its local port: the API server then dies with "address already in use". Below
/// the range only another listener can collide, and the start here is random per call.
const CHILD_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port for a child server (checked by binding it, then released; the child
/// binds it right after).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u32(std::process::id());
    let span = u64::from(CHILD_PORTS.end - CHILD_PORTS.start);
    let start = h.finish() % span;
    for i in 0..span {
        let port = CHILD_PORTS.start + u16::try_from((start + i) % span).expect("span < 2^16");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {CHILD_PORTS:?}");
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
    pub async fn start(bin: &Path, targets: &[SocketAddr]) -> Self {
        Self::start_scraping(bin, targets, 1).await
    }

    /// Start Prometheus scraping `targets` every `interval_secs` seconds (linkerd-viz: 10).
    pub async fn start_scraping(bin: &Path, targets: &[SocketAddr], interval_secs: u32) -> Self {
        Self::start_in(
            bin,
            targets,
            interval_secs,
            tempfile::tempdir().expect("temp dir"),
        )
        .await
    }

    /// Start Prometheus on a history backfilled from `openmetrics` (an OpenMetrics text with
    /// timestamps) with `promtool tsdb create-blocks-from openmetrics`, scraping nothing.
    pub async fn start_backfilled(bin: &Path, openmetrics: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("history.om");
        std::fs::write(&input, openmetrics).expect("write the OpenMetrics history");
        let promtool = bin.with_file_name("promtool");
        assert!(
            promtool.is_file(),
            "no promtool beside {} (it comes with the Debian package prometheus): {INSTALL_HINT}",
            bin.display()
        );
        let out = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(dir.path().join("data"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
        assert!(
            out.status.success(),
            "promtool backfill failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self::start_in(bin, &[], 10, dir).await
    }

    async fn start_in(
        bin: &Path,
        targets: &[SocketAddr],
        interval_secs: u32,
        dir: tempfile::TempDir,
    ) -> Self {
        std::fs::write(
            dir.path().join("prometheus.yml"),
            scrape_config(targets, interval_secs),
        )
        .expect("write prometheus.yml");
        let (child, url) = start_on_free_port(
            bin,
            &dir.path().join("prometheus.log"),
            "/-/ready",
            |port| prometheus_args(dir.path(), port),
        )
        .await;
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port of the URL");
        Prometheus {
            child,
            url,
            dir,
            bin: bin.to_owned(),
            port,
        }
    }

    /// Start it again after [`Prometheus::stop`]: same port, same configuration, same data.
    pub async fn restart(&mut self) {
        self.child = launch(
            &self.bin,
            &self.dir.path().join("prometheus.log"),
            prometheus_args(self.dir.path(), self.port),
        );
        let ready = format!("{}/-/ready", self.url);
        assert!(
            wait_ready(&mut self.child, &ready, Duration::from_secs(60)).await,
            "prometheus did not start again on port {}; log:\n{}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
        );
    }

    /// The process id (for its RSS and CPU).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop it now (e.g. to test "Prometheus down").
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scrape config for `targets` every `interval_secs` (Prometheus' and VictoriaMetrics').
pub fn scrape_config(targets: &[SocketAddr], interval_secs: u32) -> String {
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "global:\n  scrape_interval: {interval_secs}s\n  scrape_timeout: {interval_secs}s\n\
         scrape_configs:\n  - job_name: linkerd-proxy\n    static_configs:\n      - targets: [{list}]\n"
    )
}

/// Prometheus' flags for the configuration and data in `dir`, listening on `port`.
fn prometheus_args(dir: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--config.file={}", dir.join("prometheus.yml").display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".into(),
    ]
}

/// Start `bin` with `args(port)` on a free loopback port, its output in `log_path`, and wait
/// (bounded) until `ready_path` answers 2xx: the child and its base URL. A port can be taken
/// between `free_port` and the bind: up to three attempts, each on another port. The child is
/// killed with the test process, however it ends (see `cluster::spawn`).
pub async fn start_on_free_port(
    bin: &Path,
    log_path: &Path,
    ready_path: &str,
    args: impl Fn(u16) -> Vec<String>,
) -> (Child, String) {
    for _attempt in 0..3 {
        let port = free_port();
        let mut child = launch(bin, log_path, args(port));
        let url = format!("http://127.0.0.1:{port}");
        if wait_ready(
            &mut child,
            &format!("{url}{ready_path}"),
            Duration::from_secs(20),
        )
        .await
        {
            return (child, url);
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "{} did not become ready on port {port}, retrying; log:\n{}",
            bin.display(),
            std::fs::read_to_string(log_path).unwrap_or_default()
        );
    }
    panic!("{} did not start after 3 attempts", bin.display());
}

/// Start `bin` with `args`, its output in `log_path` (truncated), killed with the test process
/// however it ends (see `cluster::spawn`).
fn launch(bin: &Path, log_path: &Path, args: Vec<String>) -> Child {
    let log = std::fs::File::create(log_path).expect("log file");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    super::cluster::spawn(cmd).unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

async fn wait_ready(child: &mut Child, ready_url: &str, limit: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(r) = client
            .get(ready_url)
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
