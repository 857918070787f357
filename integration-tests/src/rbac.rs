//! The RBAC a cluster gets from this project's manifests, for the API test
//! server: `kubectl kustomize` of a kustomize directory, parsed by
//! [`Rbac::from_yaml`] (every RBAC object, validated as kube-apiserver
//! would; other kinds ignored). Start a server with it through
//! [`nca_test_apiserver::ApiServer::start_with`]. What the manifests do not
//! grant, the server refuses.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use nca_test_apiserver::Rbac;

use crate::agent::workspace_dir;

/// `kubectl kustomize <dir>`; panics naming what is missing or wrong.
pub fn kustomize(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run kubectl to render {} ({e}): install it (`apt-get install kubernetes-client` on Debian)",
                dir.display()
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap_or_else(|e| panic!("kubectl kustomize {}: not UTF-8: {e}", dir.display()))
}

/// The RBAC objects of the kustomize directory `dir` (rendered on every
/// call).
pub fn rendered(dir: impl AsRef<Path>) -> Rbac {
    let dir = dir.as_ref();
    Rbac::from_yaml(&kustomize(dir))
        .unwrap_or_else(|e| panic!("the RBAC of {} would be refused: {e}", dir.display()))
}

/// The RBAC of `manifests/base`, rendered once per process.
pub fn shipped_rbac() -> Rbac {
    static SHIPPED: OnceLock<Rbac> = OnceLock::new();
    SHIPPED
        .get_or_init(|| rendered(workspace_dir().join("manifests/base")))
        .clone()
}
