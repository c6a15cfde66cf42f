//! The container image `make image` builds (target/image/l3-<version>.oci.tar), checked the way a
//! runtime would use it, without a container engine: the archive is unpacked, every blob is
//! checked against its digest, the config is read (entrypoint, user, labels), the layers are
//! extracted into a root filesystem, and l3 runs from that filesystem alone: in a chroot as the
//! image's user when this process may chroot, else with the image's own loader and libraries.
//! That proves the image holds everything l3 needs. Without the archive the test fails and
//! names `make image` (`make test` builds it first).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The image's user, which the chart's podSecurityContext runs as.
const IMAGE_USER: &str = "65532:65532";
/// The loader the x86_64 glibc binary names as its interpreter, and its libraries' directory.
const LOADER: &str = "lib64/ld-linux-x86-64.so.2";
const LIB_DIR: &str = "lib/x86_64-linux-gnu";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} is unreadable: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The blob a descriptor points to, after checking its size and sha256 digest.
fn blob(layout: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().expect("descriptor digest");
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest} is not a sha256 digest"));
    let path = layout.join("blobs/sha256").join(hex);
    let size = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("blob {digest} is missing from the archive: {e}"))
        .len();
    assert_eq!(
        Some(size),
        descriptor["size"].as_u64(),
        "blob {digest}: size differs from its descriptor"
    );
    let sum = run(Command::new("sha256sum").arg(&path));
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(
        sum.split_whitespace().next(),
        Some(hex),
        "blob {digest}: content does not match its digest"
    );
    path
}

/// The chart's default image repository (charts/l3/values.yaml `image.repository`).
fn chart_repository() -> String {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("charts/l3/values.yaml")).expect("chart values"),
    )
    .expect("chart values are YAML");
    values["image"]["repository"]
        .as_str()
        .expect("image.repository in the chart's values")
        .to_owned()
}

/// `program` found on this process's PATH (the commands below run with an empty environment).
fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH (coreutils)"))
}

/// How l3 is started from the unpacked root filesystem.
enum Runner {
    /// `chroot --userspec=65532:65532 ROOTFS /l3 ...`: the image's own files only, as its user.
    Chroot,
    /// `ROOTFS/lib64/ld-linux-x86-64.so.2 --library-path ROOTFS/lib/x86_64-linux-gnu ROOTFS/l3`:
    /// the image's loader and libraries, without the privilege to chroot.
    Loader,
}

impl Runner {
    /// A chroot when this process may (it needs CAP_SYS_CHROOT, i.e. root here), else the loader.
    fn choose(rootfs: &Path) -> Self {
        let probe = Command::new(which("chroot"))
            .arg(format!("--userspec={IMAGE_USER}"))
            .arg(rootfs)
            .args(["/l3", "--version"])
            .env_clear()
            .output();
        match probe {
            Ok(out) if out.status.success() => Self::Chroot,
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                // Refused for want of the privilege: the loader needs none. Anything else is the
                // image's fault, and fails here rather than being hidden by the fallback.
                assert!(
                    err.contains("Operation not permitted") || err.contains("cannot change root"),
                    "chroot into the image failed for a reason other than a missing privilege \
                     ({}): {err}",
                    out.status
                );
                eprintln!(
                    "image: no privilege to chroot ({}); running l3 with the image's own loader",
                    err.trim()
                );
                Self::Loader
            }
            Err(e) => panic!("chroot (coreutils) could not start: {e}"),
        }
    }

    fn l3(&self, rootfs: &Path, args: &[&str]) -> Output {
        let mut cmd = match self {
            Self::Chroot => {
                let mut c = Command::new(which("chroot"));
                c.arg(format!("--userspec={IMAGE_USER}"))
                    .arg(rootfs)
                    .arg("/l3");
                c
            }
            Self::Loader => {
                let mut c = Command::new(rootfs.join(LOADER));
                c.arg("--library-path")
                    .arg(rootfs.join(LIB_DIR))
                    .arg(rootfs.join("l3"));
                c
            }
        };
        // Nothing from the host's environment (LD_LIBRARY_PATH, RUST_LOG, ...) leaks in.
        cmd.args(args).env_clear();
        run(&mut cmd)
    }
}

#[test]
fn the_image_archive_runs_l3_from_its_own_root_filesystem() {
    let archive = root().join(format!("target/image/l3-{VERSION}.oci.tar"));
    assert!(
        archive.is_file(),
        "{} is missing: run `make image` (make test builds it first)",
        archive.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));

    // The OCI layout and its one image, named as the chart's default image.
    let oci_layout = json(&layout.join("oci-layout"));
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let annotations = &manifests[0]["annotations"];
    // The chart's default image (repository, tag = appVersion) is this one.
    let chart: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("charts/l3/Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(VERSION),
        "the chart's appVersion (its default image tag) is the crate's version"
    );
    let name = format!("{}:{VERSION}", chart_repository());
    assert_eq!(
        annotations["io.containerd.image.name"], name,
        "the image is named as the chart's default image"
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], VERSION);

    let manifest = json(&blob(&layout, &manifests[0]));
    let config = json(&blob(&layout, &manifest["config"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/l3"]), "{c}");
    assert_eq!(c["Cmd"], serde_json::json!(["run"]), "{c}");
    assert_eq!(c["User"], IMAGE_USER, "a numeric non-root user: {c}");
    let labels: BTreeMap<String, String> =
        serde_json::from_value(c["Labels"].clone()).expect("labels");
    let label = |k: &str| {
        labels
            .get(&format!("org.opencontainers.image.{k}"))
            .cloned()
            .unwrap_or_else(|| panic!("label org.opencontainers.image.{k} is missing: {labels:?}"))
    };
    assert_eq!(label("version"), VERSION);
    assert_eq!(label("licenses"), env!("CARGO_PKG_LICENSE"));
    assert_eq!(label("source"), env!("CARGO_PKG_REPOSITORY"));
    assert_eq!(label("title"), "l3");
    let revision = label("revision");
    assert!(
        revision.len() >= 40 && revision[..40].bytes().all(|b| b.is_ascii_hexdigit()),
        "revision is a commit: {revision}"
    );
    let created = label("created");
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "created is an RFC 3339 UTC time: {created}"
    );
    assert_eq!(config["created"], created.as_str());

    // The layers, in order, into one root filesystem; every entry owned by root.
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let layers = manifest["layers"].as_array().expect("manifest layers");
    assert!(!layers.is_empty(), "the image has no layer");
    for layer in layers {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{layer}"
        );
        let path = blob(&layout, layer);
        let listing = run(Command::new("tar")
            .args(["-tvz", "--numeric-owner", "-f"])
            .arg(&path));
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            assert_eq!(
                line.split_whitespace().nth(1),
                Some("0/0"),
                "every file belongs to root, so the image user cannot change it: {line}"
            );
        }
        run(Command::new("tar")
            .args(["-xz", "--no-same-owner", "-f"])
            .arg(&path)
            .arg("-C")
            .arg(&rootfs));
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("/etc/passwd");
    assert!(passwd.contains("l3:x:65532:65532:"), "{passwd}");
    let group = std::fs::read_to_string(rootfs.join("etc/group")).expect("/etc/group");
    assert!(group.contains("l3:x:65532:"), "{group}");
    let certs = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("the CA certificates");
    assert!(
        certs.matches("BEGIN CERTIFICATE").count() > 10,
        "the CA bundle holds certificates"
    );
    assert!(rootfs.join(LOADER).is_file(), "the loader /{LOADER}");

    let runner = Runner::choose(&rootfs);
    let version = runner.l3(&rootfs, &["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("l3 {VERSION}")
    );
    let help = runner.l3(&rootfs, &["run", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--prometheus-url"));
    let sim = runner.l3(
        &rootfs,
        &[
            "simulate",
            "--scenario",
            "hotel-reservation",
            "--policy",
            "rr,l3",
            "--duration",
            "10s",
            "--format",
            "json",
        ],
    );
    let report: Value = serde_json::from_slice(&sim.stdout).expect("simulate prints JSON");
    let text = report.to_string();
    assert!(
        text.contains("\"rr\"") && text.contains("\"l3\""),
        "both policies are reported: {text}"
    );
}
