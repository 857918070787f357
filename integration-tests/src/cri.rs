//! Image pulls through containerd's CRI, exactly as kubelet does them:
//! `runtime.v1.ImageService/PullImage` over the node's
//! `/run/containerd/containerd.sock`.
//!
//! Every call opens a new connection (containerd is restarted during tests)
//! on a small single-threaded tokio runtime, and blocks until it is done.
//! A gRPC error comes back as `Err(<the status message>)`; failing to reach
//! the socket at all, or a call outlasting [`CALL_TIMEOUT`], panics instead,
//! since that is a broken node rather than a result. The `cri_try_*` variants
//! return an unreachable socket as [`CriError::Unreachable`], for code that
//! expects containerd to be restarting.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{ImageSpec, ImageStatusRequest, PullImageRequest, RemoveImageRequest};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::node::{Node, CONTAINERD_SOCK};

/// The longest a single CRI call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// What containerd says when it does not trust a registry's certificate.
pub const UNKNOWN_AUTHORITY: &str = "x509: certificate signed by unknown authority";
/// How long a pull may be retried while it is expected to start working, or
/// while containerd is unreachable (restarting).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(30);

/// Pulls `image` (e.g. `registry.test:5000/test/hello:v1`) with
/// `ImageService/PullImage`. Returns the image ref containerd reports
/// (`sha256:...`), or the exact gRPC status message on failure.
pub fn cri_pull(node: &Node, image: &str) -> Result<String, String> {
    let sock = socket(node);
    let req = PullImageRequest {
        image: Some(spec(image)),
        auth: None,
        sandbox_config: None,
    };
    call(&sock, &format!("PullImage {image}"), |mut c| async move {
        c.pull_image(req).await.map(|r| r.into_inner().image_ref)
    })
}

/// Removes `image` with `ImageService/RemoveImage`, so that the next pull goes
/// to the registry again. Removing an absent image succeeds.
pub fn cri_remove_image(node: &Node, image: &str) -> Result<(), String> {
    let sock = socket(node);
    let req = RemoveImageRequest {
        image: Some(spec(image)),
    };
    call(&sock, &format!("RemoveImage {image}"), |mut c| async move {
        c.remove_image(req).await.map(drop)
    })
}

/// The image id containerd has for `image` (`ImageService/ImageStatus`), or
/// `None` if it has no such image.
pub fn cri_image_id(node: &Node, image: &str) -> Result<Option<String>, String> {
    let sock = socket(node);
    let req = ImageStatusRequest {
        image: Some(spec(image)),
        verbose: false,
    };
    call(&sock, &format!("ImageStatus {image}"), |mut c| async move {
        c.image_status(req)
            .await
            .map(|r| r.into_inner().image.map(|i| i.id))
    })
}

/// Why a `cri_try_*` call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriError {
    /// containerd's socket could not be reached (absent, or nobody listening:
    /// containerd is stopped or restarting).
    Unreachable(String),
    /// containerd answered with a gRPC error; this is its status message.
    Status(String),
}

impl std::fmt::Display for CriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CriError::Unreachable(m) => write!(f, "unreachable: {m}"),
            CriError::Status(m) => f.write_str(m),
        }
    }
}

/// Like [`cri_pull`], but an unreachable socket (containerd restarting) is
/// [`CriError::Unreachable`] instead of a panic, for loops that retry a pull
/// across a containerd restart.
pub fn cri_try_pull(node: &Node, image: &str) -> Result<String, CriError> {
    let sock = socket(node);
    let req = PullImageRequest {
        image: Some(spec(image)),
        auth: None,
        sandbox_config: None,
    };
    try_call(&sock, &format!("PullImage {image}"), |mut c| async move {
        c.pull_image(req).await.map(|r| r.into_inner().image_ref)
    })
}

/// Like [`cri_remove_image`], but an unreachable socket is
/// [`CriError::Unreachable`] instead of a panic.
pub fn cri_try_remove_image(node: &Node, image: &str) -> Result<(), CriError> {
    let sock = socket(node);
    let req = RemoveImageRequest {
        image: Some(spec(image)),
    };
    try_call(&sock, &format!("RemoveImage {image}"), |mut c| async move {
        c.remove_image(req).await.map(drop)
    })
}

fn socket(node: &Node) -> PathBuf {
    node.host_path(CONTAINERD_SOCK)
}

fn spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        ..ImageSpec::default()
    }
}

/// Connects to `sock`, runs `f` with an image client, and maps a gRPC error
/// to its message. Panics, naming `what` and `sock`, on connection failure
/// or timeout.
fn call<T, F, Fut>(sock: &std::path::Path, what: &str, f: F) -> Result<T, String>
where
    F: FnOnce(ImageServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    match try_call(sock, what, f) {
        Ok(v) => Ok(v),
        Err(CriError::Status(msg)) => Err(msg),
        Err(CriError::Unreachable(msg)) => panic!("{msg}"),
    }
}

/// Like [`call`], but a socket that cannot be reached is
/// [`CriError::Unreachable`] instead of a panic. Still panics on timeout.
fn try_call<T, F, Fut>(sock: &std::path::Path, what: &str, f: F) -> Result<T, CriError>
where
    F: FnOnce(ImageServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("CRI {what}: cannot build a tokio runtime: {e}"));
    rt.block_on(async {
        let path = sock.to_owned();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://[::]:50051")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| {
                CriError::Unreachable(format!(
                    "CRI {what}: cannot connect to {}: {e:?}",
                    sock.display()
                ))
            })?;
        let client = ImageServiceClient::new(channel);
        match tokio::time::timeout(CALL_TIMEOUT, f(client)).await {
            // Right after containerd (re)starts, its CRI plugin answers
            // "server is not initialized yet" for a moment: that is containerd
            // not being ready, not an answer about the pull.
            Ok(result) => result.map_err(|status| {
                let message = status.message().to_owned();
                if message.contains("server is not initialized yet") {
                    CriError::Unreachable(format!("CRI {what}: {message}"))
                } else {
                    CriError::Status(message)
                }
            }),
            Err(_) => panic!(
                "CRI {what} on {} took longer than {CALL_TIMEOUT:?}",
                sock.display()
            ),
        }
    })
}

/// Runs `f` again while containerd is unreachable (restarting), for up to
/// [`PULL_TIMEOUT`]; a gRPC error is returned as it is.
pub fn while_unreachable<T>(
    what: &str,
    mut f: impl FnMut() -> Result<T, CriError>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(CriError::Status(m)) => return Err(m),
            Err(CriError::Unreachable(m)) => {
                assert!(
                    start.elapsed() < PULL_TIMEOUT,
                    "{what}: containerd unreachable for {PULL_TIMEOUT:?}: {m}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes `image` from the node (so that the pull goes to the registry), then
/// pulls it once through CRI. Returns the image ref or the pull error.
pub fn pull_fresh(node: &Node, image: &str) -> Result<String, String> {
    while_unreachable(&format!("RemoveImage {image}"), || {
        cri_try_remove_image(node, image)
    })
    .unwrap_or_else(|e| panic!("RemoveImage {image} failed: {e}"));
    while_unreachable(&format!("PullImage {image}"), || cri_try_pull(node, image))
}

/// Panics unless a fresh pull of `image` succeeds.
pub fn assert_pull_ok(node: &Node, image: &str, context: &str) {
    if let Err(e) = pull_fresh(node, image) {
        panic!("{context}: pull of {image} failed: {e}");
    }
}

/// Panics unless a fresh pull of `image` fails with [`UNKNOWN_AUTHORITY`].
pub fn assert_pull_untrusted(node: &Node, image: &str, context: &str) {
    match pull_fresh(node, image) {
        Ok(r) => {
            panic!("{context}: pull of {image} succeeded ({r}), but its CA must not be trusted")
        }
        Err(e) => assert!(
            e.contains(UNKNOWN_AUTHORITY),
            "{context}: pull of {image} failed, but not with {UNKNOWN_AUTHORITY:?}: {e}"
        ),
    }
}
