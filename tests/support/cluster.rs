//! A real Kubernetes control plane on loopback, the way controller-runtime's envtest runs one:
//! etcd, kube-apiserver (RBAC, an audit log of every request at `Metadata` level, a
//! service-account issuer so that TokenRequest works) and kube-controller-manager (namespace
//! finalisation, garbage collection), from the pinned binaries `make testenv` builds.
//!
//! One control plane per test binary ([`ControlPlane::shared`]); each test takes its own
//! namespace. Every child process is started with `PR_SET_PDEATHSIG` from a thread that lives
//! as long as the test process, so the control plane dies with the test binary even when a test
//! panics or the binary is killed. Its files live in a directory under the cargo target
//! directory; directories of earlier runs whose process is gone are removed at start.
//!
//! When the binaries are missing the test FAILS, naming `make testenv`.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::Value;

use super::prometheus::free_port;

/// How to get the binaries, printed when they are missing.
const TESTENV_HINT: &str = "build them once with `make testenv` (Go 1.25+; it prints the \
    directory), or point L3_TESTENV_DIR at a directory holding etcd, kube-apiserver and \
    kube-controller-manager";

/// The token of the admin identity (group `system:masters`) in the static token file.
const ADMIN_TOKEN: &str = "l3-test-admin-token";
/// Its user name, as the audit log shows it.
pub const ADMIN_USER: &str = "l3-test-admin";

/// The audit policy: one event per request (only the `ResponseComplete` stage, or `Panic`), at
/// `Metadata` level (user, verb, resource, name, response code, timestamps; no bodies).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\n\
omitStages: [RequestReceived, ResponseStarted]\nrules:\n  - level: Metadata\n";

/// Where the pinned binaries are: `$L3_TESTENV_DIR`, else the newest build `make testenv` made
/// for the current `testenv/go.mod` (the same rule `scripts/testenv.sh` uses).
pub fn binaries() -> PathBuf {
    let names = ["etcd", "kube-apiserver", "kube-controller-manager"];
    let dir = match std::env::var_os("L3_TESTENV_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = Command::new("bash")
                .arg(repo().join("scripts/testenv.sh"))
                .arg("--print-dir")
                .output()
                .unwrap_or_else(|e| panic!("cannot run scripts/testenv.sh: {e}; {TESTENV_HINT}"));
            assert!(
                out.status.success(),
                "scripts/testenv.sh --print-dir failed: {}; {TESTENV_HINT}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    for n in names {
        assert!(
            dir.join(n).is_file(),
            "control-plane binary {} is missing: {TESTENV_HINT}",
            dir.join(n).display()
        );
    }
    dir
}

/// Where `make testenv` copied the pinned Gateway API CRDs (`scripts/testenv.sh
/// --print-gateway-crds`); fails naming `make testenv` when they are not there.
pub fn gateway_crds() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/testenv.sh"))
        .arg("--print-gateway-crds")
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/testenv.sh: {e}; {TESTENV_HINT}"));
    assert!(
        out.status.success(),
        "scripts/testenv.sh --print-gateway-crds failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        dir.join("gateway.networking.k8s.io_httproutes.yaml")
            .is_file(),
        "the Gateway API CRDs are missing from {}: run `make testenv` (it copies them from the \
         Go module sigs.k8s.io/gateway-api pinned in testenv/gateway-api/go.mod)",
        dir.display()
    );
    dir
}

/// Install the route CRDs: the Gateway API's standard HTTPRoute and GRPCRoute (from the pinned
/// module) and Linkerd's policy.linkerd.io HTTPRoute (tests/fixtures/).
pub async fn install_route_crds(client: &kube::Client) {
    let gw = gateway_crds();
    for f in [
        "gateway.networking.k8s.io_httproutes.yaml",
        "gateway.networking.k8s.io_grpcroutes.yaml",
    ] {
        install_crd(client, &gw.join(f)).await;
    }
    install_crd(
        client,
        &repo().join("tests/fixtures/linkerd-httproute-crd.yaml"),
    )
    .await;
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Start `cmd` so that it is killed when the test process ends (however it ends).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so every child is
/// forked by one thread that lives as long as the process.
pub fn spawn(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    // SAFETY: the closure runs in the forked child before exec and calls only prctl, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // Keep the thread (the children's parent) alive until the process ends.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((cmd, reply))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

/// Send `signal` to a child (e.g. `libc::SIGTERM`).
pub fn signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("pid fits in i32");
    // SAFETY: kill(2) on a pid we spawned.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The processes of a control plane.
struct Procs {
    etcd: Child,
    apiserver: Child,
    /// Started once the API server is ready: it gives up (and exits) when the API server is not
    /// healthy within its own start-up wait, which a loaded machine can exceed.
    controller_manager: Option<Child>,
}

/// A running control plane.
pub struct ControlPlane {
    /// Its working directory (certificates, kubeconfigs, logs, etcd data).
    pub dir: PathBuf,
    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub url: String,
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
    /// The admin kubeconfig (group `system:masters`).
    pub admin_kubeconfig: PathBuf,
    /// The audit log (JSON lines).
    pub audit_log: PathBuf,
    /// etcd's client URL.
    pub etcd_url: String,
    bin: PathBuf,
    apiserver_args: Vec<String>,
    procs: Mutex<Procs>,
}

impl ControlPlane {
    /// The control plane of this test binary, started on first use (its start-up time is
    /// printed).
    pub fn shared() -> &'static ControlPlane {
        static CP: OnceLock<ControlPlane> = OnceLock::new();
        CP.get_or_init(|| {
            // Started on a plain thread with its own runtime: the caller may be inside a test's
            // tokio runtime, which cannot block on another future.
            std::thread::spawn(ControlPlane::start)
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    fn start() -> ControlPlane {
        let started = Instant::now();
        l3::tls::install_crypto_provider();
        let bin = binaries();
        let dir = run_dir();
        let certs = Certs::generate(&dir);
        let etcd_port = free_port();
        let peer_port = free_port();
        let api_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let audit_log = dir.join("audit.log");
        std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).expect("audit policy");
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},{ADMIN_USER},l3-test-admin-uid,\"system:masters\"\n"),
        )
        .expect("token file");
        let url = format!("https://127.0.0.1:{api_port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&admin_kubeconfig, &url, &dir.join("ca.crt"), ADMIN_TOKEN);

        let etcd = start_etcd(&bin, &dir, etcd_port, peer_port);
        let d = |p: &str| dir.join(p).display().to_string();
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", d("serving.crt")),
            format!("--tls-private-key-file={}", d("serving.key")),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            format!("--audit-policy-file={}", d("audit-policy.yaml")),
            format!("--audit-log-path={}", audit_log.display()),
            "--audit-log-format=json".into(),
            "--audit-log-mode=blocking".into(),
            // Fewer moving parts on a 2-core machine; nothing under test depends on them.
            "--enable-priority-and-fairness=false".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--v=1".into(),
        ];
        let apiserver = start_apiserver(&bin, &dir, &apiserver_args);
        let mut kcm = logged(
            &dir,
            "kube-controller-manager.log",
            bin.join("kube-controller-manager"),
        );
        kcm.arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--controllers=namespace,garbagecollector")
            .arg("--secure-port=0")
            .arg("--use-service-account-credentials=false")
            .arg("--v=1");
        let cp = ControlPlane {
            dir,
            url,
            ca_pem: certs.ca_pem,
            admin_kubeconfig,
            audit_log,
            etcd_url,
            bin,
            apiserver_args,
            procs: Mutex::new(Procs {
                etcd,
                apiserver,
                controller_manager: None,
            }),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            cp.wait_ready(Duration::from_secs(60)).await;
            cp.procs().controller_manager =
                Some(spawn(kcm).expect("start kube-controller-manager"));
            let client = cp.client().await;
            install_crd(&client, &repo().join("crds/latencypolicies.l3.dev.yaml")).await;
            install_crd(
                &client,
                &repo().join("tests/fixtures/trafficsplit-crd.yaml"),
            )
            .await;
        });
        eprintln!(
            "control plane ready at {} in {:.1} s (dir {})",
            cp.url,
            started.elapsed().as_secs_f64(),
            cp.dir.display()
        );
        cp
    }

    /// An admin client (a new one per call: a client belongs to the runtime it was made in).
    pub async fn client(&self) -> kube::Client {
        client_from(&self.admin_kubeconfig).await
    }

    /// Wait until `/readyz` answers 200, or fail with the API server's log.
    pub async fn wait_ready(&self, limit: Duration) {
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM"),
            )
            .build()
            .expect("http client");
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.procs().apiserver.try_wait().ok().flatten() {
                panic!(
                    "kube-apiserver exited with {status}; log:\n{}",
                    self.log_tail("kube-apiserver.log")
                );
            }
            match http
                .get(format!("{}/readyz", self.url))
                .bearer_auth(ADMIN_TOKEN)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "kube-apiserver not ready within {limit:?} (last answer: {last}); log:\n{}",
            self.log_tail("kube-apiserver.log")
        );
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, Procs> {
        self.procs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// kill -9 the API server, then start it again on the same port with the same etcd data,
    /// and wait until it is ready.
    pub async fn restart_apiserver_hard(&self) {
        {
            let mut p = self.procs();
            let _ = p.apiserver.kill();
            let _ = p.apiserver.wait();
            p.apiserver = start_apiserver(&self.bin, &self.dir, &self.apiserver_args);
        }
        self.wait_ready(Duration::from_secs(60)).await;
    }

    /// Compact etcd up to its current revision (what the API server does every 5 minutes), so
    /// that every watch resuming from an older resourceVersion gets 410 Gone.
    pub async fn compact_etcd(&self) -> i64 {
        let http = reqwest::Client::new();
        // etcd's JSON gateway: a range over an empty key answers with the current revision.
        let head: Value = http
            .post(format!("{}/v3/kv/range", self.etcd_url))
            .json(&serde_json::json!({"key": "AA=="}))
            .send()
            .await
            .expect("etcd range")
            .json()
            .await
            .expect("etcd range answer");
        let rev: i64 = head["header"]["revision"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no revision in etcd's answer: {head}"));
        let r = http
            .post(format!("{}/v3/kv/compaction", self.etcd_url))
            .json(&serde_json::json!({"revision": rev.to_string(), "physical": true}))
            .send()
            .await
            .expect("etcd compaction");
        assert!(r.status().is_success(), "etcd compaction: {}", r.status());
        rev
    }

    /// The last lines of one of the control plane's logs.
    pub fn log_tail(&self, name: &str) -> String {
        tail(&self.dir.join(name), 60)
    }

    /// Every audit event so far, oldest first. The API server rotates its log at 100 MB
    /// (`audit-<time>.log` beside `audit.log`), which a long run reaches: rotated files are read
    /// too, in name (= time) order, before the current one.
    pub fn audit(&self) -> Vec<AuditEvent> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".log"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.push(self.audit_log.clone());
        files
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter_map(|v| AuditEvent::from_json(&v))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A kube client from a kubeconfig file.
pub async fn client_from(path: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// Write a kubeconfig for `url` that trusts the CA in the file `ca` and authenticates with
/// `token`.
pub fn write_kubeconfig(path: &Path, url: &str, ca: &Path, token: &str) {
    let ca = ca.display();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
         certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n\
         current-context: test\n"
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

/// A fresh directory for this process's control plane, under the target directory; stale
/// directories of finished runs are removed.
fn run_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("controlplane");
    std::fs::create_dir_all(&root).expect("create control-plane root");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok();
            // SAFETY: kill with signal 0 only checks whether the pid exists.
            let alive = pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
            if !alive {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create control-plane dir");
    dir
}

/// A command whose stdout and stderr go to `dir/log`.
pub fn logged(dir: &Path, log: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .expect("log file");
    let mut c = Command::new(program);
    c.stdin(Stdio::null())
        .stdout(f.try_clone().expect("log file"))
        .stderr(f);
    c
}

fn start_etcd(bin: &Path, dir: &Path, port: u16, peer: u16) -> Child {
    let mut cmd = logged(dir, "etcd.log", bin.join("etcd"));
    cmd.arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
        // Test data: durability across a machine crash does not matter, speed does.
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    // The API server retries its etcd connection, so there is no need to wait here.
    spawn(cmd).expect("start etcd")
}

fn start_apiserver(bin: &Path, dir: &Path, args: &[String]) -> Child {
    let mut cmd = logged(dir, "kube-apiserver.log", bin.join("kube-apiserver"));
    cmd.args(args);
    spawn(cmd).expect("start kube-apiserver")
}

/// Create a CRD from a YAML file and wait until it is Established.
pub async fn install_crd(client: &kube::Client, path: &Path) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().expect("CRD name");
    match api.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create CRD {name}: {e}"),
    }
    super::eventually(Duration::from_secs(30), Duration::from_millis(100), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let crd = api.get(&name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                Ok(())
            } else {
                Err(format!("CRD {name} not Established yet"))
            }
        }
    })
    .await;
}

/// Serving certificate (CA-signed, for 127.0.0.1 and localhost) and the service-account
/// signing key, generated per control plane.
struct Certs {
    ca_pem: String,
}

impl Certs {
    fn generate(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "l3 test control plane CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("serving key");
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("serving params");
        p.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &issuer).expect("serving certificate");
        let sa_key = KeyPair::generate().expect("service-account key");
        std::fs::write(dir.join("serving.crt"), cert.pem()).expect("write serving.crt");
        std::fs::write(dir.join("serving.key"), key.serialize_pem()).expect("write serving.key");
        std::fs::write(dir.join("sa.key"), sa_key.serialize_pem()).expect("write sa.key");
        std::fs::write(dir.join("sa.pub"), sa_key.public_key_pem()).expect("write sa.pub");
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).expect("write ca.crt");
        Certs {
            ca_pem: ca_cert.pem(),
        }
    }
}

/// One request as the audit log records it.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// The user name, e.g. `system:serviceaccount:ns:l3`.
    pub user: String,
    /// The pod a service-account token was bound to (`authentication.kubernetes.io/pod-name`).
    pub pod: Option<String>,
    /// The resource, e.g. `trafficsplits`.
    pub resource: String,
    /// The subresource, e.g. `status`.
    pub subresource: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// HTTP status of the answer.
    pub code: i64,
    /// When the request was received, seconds since the epoch.
    pub at: f64,
}

impl AuditEvent {
    fn from_json(v: &Value) -> Option<Self> {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let at = v
            .get("requestReceivedTimestamp")
            .and_then(Value::as_str)?
            .parse::<k8s_openapi::jiff::Timestamp>()
            .ok()?;
        Some(AuditEvent {
            verb: s("/verb"),
            user: s("/user/username"),
            pod: v
                .pointer("/user/extra/authentication.kubernetes.io~1pod-name/0")
                .and_then(Value::as_str)
                .map(str::to_owned),
            resource: s("/objectRef/resource"),
            subresource: s("/objectRef/subresource"),
            namespace: s("/objectRef/namespace"),
            name: s("/objectRef/name"),
            code: v
                .pointer("/responseStatus/code")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            at: at.as_millisecond() as f64 / 1000.0,
        })
    }

    /// Whether it changed something (and succeeded).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) && (200..300).contains(&self.code)
    }

    /// `resource` or `resource/subresource`.
    pub fn what(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Requests per `verb resource[/subresource]`, sorted.
pub fn count_by_verb_resource<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(format!("{} {}", e.verb, e.what())).or_insert(0) += 1;
    }
    m
}

/// Seconds since the epoch, now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
