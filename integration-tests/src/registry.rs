//! A real `docker-registry` (distribution) process serving TLS on
//! `127.0.0.1:<free port>`, and a push of a tiny test image through its HTTP API.
//!
//! Nodes reach it as `registry.test:<port>` (the node's `/etc/hosts` maps
//! `registry.test` to 127.0.0.1; containerd would speak plain HTTP to a loopback
//! IP). Several registries may share one storage directory, e.g. one with a
//! certificate from CA A and one with a certificate from CA B serving the same
//! images.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

use crate::cmd;
use crate::image::{TestImage, MANIFEST_MEDIA_TYPE};
use crate::pki::TestCa;
use crate::run::Record;

/// The host name nodes use for test registries.
pub const REGISTRY_HOST: &str = "registry.test";

/// How long [`Registry::start`] waits for the registry to accept TLS.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Makes the run record names of registries unique within the process.
static NEXT_REGISTRY: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A running registry; dropping it kills the process.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    /// Config, certificate, key and log; removed on drop.
    _dir: tempfile::TempDir,
    log: PathBuf,
    /// The run's record of the process and its directory (see
    /// [`crate::run`]); dropped after the process is stopped.
    _record: Record,
}

impl Registry {
    /// Starts `docker-registry serve` with TLS from `cert_pem`/`key_pem`, storing
    /// blobs under `storage`, on a free port of 127.0.0.1, and waits until the
    /// port completes a TLS handshake. Panics with the registry's log otherwise.
    pub fn start(cert_pem: &str, key_pem: &str, storage: &Path) -> Registry {
        std::fs::create_dir_all(storage).unwrap_or_else(|e| {
            panic!("cannot create registry storage {}: {e}", storage.display())
        });
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The port is free now; another process could take it before the
            // registry binds it, so a bind failure is retried with a new port.
            let mut reg = Registry::spawn(cert_pem, key_pem, storage, free_port());
            match reg.wait_for_tls() {
                Ok(()) => return reg,
                Err(e) => {
                    let tail = reg.log_tail(30);
                    if attempt < 3 && tail.contains("address already in use") {
                        continue;
                    }
                    panic!(
                        "registry on 127.0.0.1:{}: {e}\n--- {} ---\n{tail}",
                        reg.port,
                        reg.log.display()
                    );
                }
            }
        }
    }

    /// Writes the config, certificate and key to a fresh temp dir and starts
    /// the registry process on `port`.
    fn spawn(cert_pem: &str, key_pem: &str, storage: &Path, port: u16) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("nca-registry-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a registry temp dir: {e}"));
        let n = NEXT_REGISTRY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut record = Record::new(
            "registry",
            &format!("{}-{}-{n}", crate::run::run_id(), std::process::id()),
        );
        record.set("dir", dir.path().display());
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let config = dir.path().join("config.yml");
        let log = dir.path().join("registry.log");
        write(&cert, cert_pem.as_bytes());
        write(&key, key_pem.as_bytes());
        write(&config, config_yml(port, storage, &cert, &key).as_bytes());
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup {}: {e}", log.display()));
        let mut c = Command::new("docker-registry");
        c.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", cmd::display(&c)));
        record.set_process("main", child.id());
        Registry {
            child,
            port,
            _dir: dir,
            log,
            _record: record,
        }
    }

    fn wait_for_tls(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::from("nothing tried yet");
        while start.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("docker-registry exited: {status}"));
            }
            match tls_handshake(self.port) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no TLS handshake within {START_TIMEOUT:?}; last error: {last}"
        ))
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The host pid of the `docker-registry` process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `registry.test:<port>`.
    pub fn host(&self) -> String {
        format!("{REGISTRY_HOST}:{}", self.port)
    }

    /// `registry.test:<port>/<name_tag>`, e.g. for `"test/hello:v1"`.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.host())
    }

    /// The registry's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the registry's log.
    pub fn log_tail(&self, n: usize) -> String {
        cmd::tail_file(&self.log, n)
    }

    /// Builds a tiny one-layer image ([`TestImage`]) and pushes it as
    /// `<repo>:<tag>` through the registry HTTP API, trusting only
    /// `trust_ca_pem`. Returns the manifest digest.
    pub fn push_test_image(&self, trust_ca_pem: &str, repo: &str, tag: &str) -> String {
        let image = TestImage::new(&format!("node-cert-agent test image {repo}:{tag}\n"));
        let client = self.client(trust_ca_pem);
        let base = format!("https://{}", self.host());
        for (blob, digest) in [
            (&image.layer, &image.layer_digest),
            (&image.config, &image.config_digest),
        ] {
            push_blob(&client, &base, repo, blob, digest);
        }
        let url = format!("{base}/v2/{repo}/manifests/{tag}");
        let resp = client
            .put(&url)
            .header("Content-Type", MANIFEST_MEDIA_TYPE)
            .body(image.manifest.clone())
            .send();
        let resp = expect_status(resp, "PUT", &url, 201);
        let digest = header(&resp, "Docker-Content-Digest");
        assert_eq!(
            digest.as_deref(),
            Some(image.manifest_digest.as_str()),
            "PUT {url}: registry reports another manifest digest"
        );
        image.manifest_digest
    }

    /// Pushes the one image of the OCI archive `archive` as `<name_tag>`
    /// (e.g. `node-cert-agent:0.1.0`) with `skopeo copy`, the way an
    /// operator publishes an image built without a Docker daemon, trusting
    /// only `trust_ca_pem`. skopeo runs on the host, which has no
    /// `registry.test` name, so it reaches the registry as
    /// `localhost:<port>`: the registry's certificate must name `localhost`
    /// too (nodes pull the same repository as `registry.test:<port>`).
    /// Panics with skopeo's output if the push fails.
    pub fn push_oci_archive(&self, trust_ca_pem: &str, archive: &Path, name_tag: &str) {
        assert!(
            cmd::on_path("skopeo"),
            "`skopeo` is not on PATH: install Debian's skopeo (test-all.sh does)"
        );
        let certs = tempfile::Builder::new()
            .prefix("nca-skopeo-certs-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for skopeo's CA: {e}"));
        write(&certs.path().join("ca.crt"), trust_ca_pem.as_bytes());
        let mut c = Command::new("skopeo");
        c.args(["copy", "--quiet", "--dest-cert-dir"])
            .arg(certs.path())
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://localhost:{}/{name_tag}", self.port))
            .env("NO_PROXY", "localhost")
            .env("no_proxy", "localhost")
            .stdin(Stdio::null());
        let shown = cmd::display(&c);
        let out = cmd::run(&mut c);
        assert!(
            out.status.success(),
            "{}\n--- registry log ---\n{}",
            cmd::describe_output(&format!("`{shown}` failed"), &out),
            self.log_tail(20)
        );
    }

    /// A client that resolves `registry.test` to 127.0.0.1, trusts only
    /// `trust_ca_pem`, and ignores proxy settings.
    fn client(&self, trust_ca_pem: &str) -> reqwest::blocking::Client {
        let ca = reqwest::Certificate::from_pem(trust_ca_pem.as_bytes())
            .unwrap_or_else(|e| panic!("trust CA is not a PEM certificate ({e}):\n{trust_ca_pem}"));
        reqwest::blocking::Client::builder()
            .tls_certs_only([ca])
            .resolve(
                REGISTRY_HOST,
                SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            )
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("cannot build the registry HTTP client: {e}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Uploads one blob unless the repository already has it (monolithic upload:
/// POST to start, PUT with `?digest=`).
fn push_blob(
    client: &reqwest::blocking::Client,
    base: &str,
    repo: &str,
    blob: &[u8],
    digest: &str,
) {
    let head = format!("{base}/v2/{repo}/blobs/{digest}");
    if client
        .head(&head)
        .send()
        .is_ok_and(|r| r.status().as_u16() == 200)
    {
        return;
    }
    let start = format!("{base}/v2/{repo}/blobs/uploads/");
    let resp = expect_status(client.post(&start).send(), "POST", &start, 202);
    let location = header(&resp, "Location")
        .unwrap_or_else(|| panic!("POST {start}: 202 without a Location header"));
    let mut url = reqwest::Url::parse(base)
        .and_then(|b| b.join(&location))
        .unwrap_or_else(|e| panic!("POST {start}: bad Location {location:?}: {e}"));
    url.query_pairs_mut().append_pair("digest", digest);
    let shown = url.to_string();
    let resp = client
        .put(url)
        .header("Content-Type", "application/octet-stream")
        .body(blob.to_vec())
        .send();
    expect_status(resp, "PUT", &shown, 201);
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A TLS registry for [`REGISTRY_HOST`] with a server certificate from a test
/// CA, serving one pushed test image: what a scenario pulls to prove that
/// containerd trusts (or does not trust) that CA.
#[derive(Debug)]
pub struct TestRegistry {
    _registry: Registry,
    /// The pushed image's reference, `registry.test:<port>/<repo>:v1`.
    pub image: String,
}

impl TestRegistry {
    /// Starts the registry on `storage` (registries of one test may share
    /// it) with a certificate from `ca`, and pushes `<repo>:v1` through it.
    pub fn start(ca: &TestCa, storage: &Path, repo: &str) -> TestRegistry {
        let (cert, key) = ca.issue_server_cert(&[REGISTRY_HOST]);
        let registry = Registry::start(&cert, &key, storage);
        registry.push_test_image(&ca.cert_pem(), repo, "v1");
        let image = registry.reference(&format!("{repo}:v1"));
        TestRegistry {
            _registry: registry,
            image,
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    l.local_addr().unwrap().port()
}

fn config_yml(port: u16, storage: &Path, cert: &Path, key: &Path) -> String {
    // JSON strings are valid YAML scalars, so paths are quoted safely.
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap();
    format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: nca-integration-tests
  tls:
    certificate: {cert}
    key: {key}
health:
  storagedriver:
    enabled: false
",
        storage = q(storage),
        cert = q(cert),
        key = q(key),
    )
}

/// A TLS handshake with 127.0.0.1:`port` (no verification: liveness only).
fn tls_handshake(port: u16) -> Result<(), String> {
    let tcp = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(1),
    )
    .map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::NONE);
    b.build()
        .connect(REGISTRY_HOST, tcp)
        .map(drop)
        .map_err(|e| format!("TLS handshake: {e}"))
}

fn header(resp: &reqwest::blocking::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn expect_status(
    resp: reqwest::Result<reqwest::blocking::Response>,
    method: &str,
    url: &str,
    want: u16,
) -> reqwest::blocking::Response {
    let resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {}", error_chain(&e)));
    if resp.status().as_u16() != want {
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        panic!("{method} {url}: expected HTTP {want}, got {status}: {body}");
    }
    resp
}

/// An error with all its sources, so TLS failures show the OpenSSL reason.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_quotes_paths_and_sets_tls() {
        let y = config_yml(
            4321,
            Path::new("/tmp/st ore"),
            Path::new("/c.pem"),
            Path::new("/k.pem"),
        );
        assert!(y.contains("rootdirectory: \"/tmp/st ore\""), "{y}");
        assert!(y.contains("addr: 127.0.0.1:4321"), "{y}");
        assert!(y.contains("certificate: \"/c.pem\""), "{y}");
        assert!(!y.contains("debug"), "{y}");
    }
}
