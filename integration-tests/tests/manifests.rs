//! The shipped Kubernetes manifests (manifests/): every object parses
//! strictly into its k8s-openapi type (an unknown or misplaced field fails),
//! `kubectl kustomize` renders the base, the example overlay and the overlay
//! of every distro family, every path the agent's config uses is mounted in
//! the DaemonSet, each family's overlay mounts exactly that family's anchors
//! directory (as the trust-store table of docs/configuration.md and the
//! agent's own detection for that family's os-release say), the families
//! with SELinux-enforcing releases (rhel, suse) and no other run the pod as
//! spc_t (rendered only: no SELinux node runs here), the mixed-pools example
//! renders one DaemonSet per family on its AKS OS SKUs and the shared
//! objects once, and the ClusterRole grants exactly the API calls the agent
//! makes against the test API server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration_tests::agent::{render_tail, workspace_dir, PodModeAgent};
use integration_tests::Node;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount, Volume};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use nca_test_apiserver::{ApiServer, Profile, RENEW_REVOCATION_CRD};
use node_cert_agent::config::{self, Flags, Settings, SYSTEM_BUS_SOCKET};
use node_cert_agent::node::distro::{self, Family};
use node_cert_agent::trust::sources::SourceSpec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The journald native socket, at the same path in the pod and on the node.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The Secret the DaemonSet mounts.
const SECRET_NAME: &str = "custom-ca-trust-secret";
/// The agent's drain of a pass in flight on SIGTERM.
const AGENT_DRAIN_SECONDS: i64 = 20;

fn manifests_dir() -> PathBuf {
    workspace_dir().join("manifests")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Parses `doc` as `T` and fails on anything `T` does not carry: the typed
/// object is serialised again and must equal the input, so an unknown field,
/// a misspelt one or one at the wrong level (all silently dropped by serde)
/// shows up as a difference.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value, what: &str) -> Result<T, String> {
    let typed: T =
        serde_json::from_value(doc.clone()).map_err(|e| format!("{what}: does not parse: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("{what}: {e}"))?;
    let mut diffs = Vec::new();
    diff("", doc, &back, &mut diffs);
    if diffs.is_empty() {
        Ok(typed)
    } else {
        Err(format!(
            "{what}: fields the type does not know (unknown, misspelt or misplaced): {}",
            diffs.join(", ")
        ))
    }
}

fn diff(path: &str, input: &Value, typed: &Value, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => diff(&p, v, w, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (a, b) if a == b => {}
        // k8s-openapi keeps numbers as i64/f64; 1 and 1.0 are the same value.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        _ => out.push(format!("{path} (value {input} became {typed})")),
    }
}

/// A kustomization file: only the fields these manifests use, strictly.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code, reason = "parsed only to reject unknown fields")]
struct Kustomization {
    api_version: String,
    kind: String,
    #[serde(default)]
    bases: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
    #[serde(default)]
    patches_strategic_merge: Vec<String>,
    name_suffix: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code, reason = "parsed only to reject unknown fields")]
struct KustomizeImage {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
}

/// Checks one Kubernetes object strictly against its type.
fn check_object(doc: &Value, what: &str) -> Result<(), String> {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(doc, what).map(drop),
        ("v1", "ConfigMap") => strict::<ConfigMap>(doc, what).map(drop),
        ("v1", "Secret") => strict::<Secret>(doc, what).map(drop),
        ("apps/v1", "DaemonSet") => strict::<DaemonSet>(doc, what).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            strict::<ClusterRole>(doc, what).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict::<ClusterRoleBinding>(doc, what).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(doc, what).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            strict::<RoleBinding>(doc, what).map(drop)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            strict::<CustomResourceDefinition>(doc, what).map(drop)
        }
        // The Prometheus Operator's rules (examples only; promtool tests
        // their content: tests/alerts.rs).
        ("monitoring.coreos.com/v1", "PrometheusRule") => {
            strict::<integration_tests::prometheus_rule::PrometheusRule>(doc, what).map(drop)
        }
        // A custom resource: checked against its CRD by the test API server.
        ("certificates.microsoft.com/v1", "RenewRevocation") => {
            let server = ApiServer::start();
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
            server
                .add_revocation(ns, doc.clone())
                .map(drop)
                .map_err(|e| format!("{what}: rejected by the CRD's schema: {e}"))
        }
        _ => Err(format!("{what}: unexpected object {api} {kind}")),
    }
}

/// The distro-family overlays under manifests/overlays, and the
/// os-release fixtures (agent/tests/data/os-release) of the nodes each is for.
const FAMILY_OVERLAYS: [(&str, &[&str]); 4] = [
    ("debian", &["debian-12", "ubuntu-22.04"]),
    (
        "rhel",
        &[
            "rhel-9",
            "fedora-40",
            "azurelinux-3",
            "mariner-2",
            "amzn-2023",
        ],
    ),
    ("suse", &["opensuse-leap-15", "sles-15"]),
    ("flatcar", &["flatcar"]),
];

/// Every kustomization directory: the base, the example, each family overlay.
fn kustomize_dirs() -> Vec<String> {
    let mut dirs = vec!["base".to_owned(), "examples".to_owned()];
    dirs.extend(FAMILY_OVERLAYS.iter().map(|(o, _)| format!("overlays/{o}")));
    dirs.extend(OTHER_OVERLAYS.iter().map(|o| format!("overlays/{o}")));
    dirs
}

/// Overlays that are not a distro family's.
const OTHER_OVERLAYS: &[&str] = &["secret-volume"];

/// The family overlays whose pod runs as the SELinux type spc_t: families
/// with SELinux-enforcing releases (RHEL, CentOS, Fedora; SLE Micro, Leap
/// Micro). Not Debian (AppArmor) nor Flatcar (permissive by default; its
/// kustomization says why). Rendered only: no SELinux node runs here.
const SELINUX_SPC_OVERLAYS: &[&str] = &["rhel", "suse"];

/// The mixed-pools example (manifests/examples/mixed-pools): per family
/// directory, its overlay and the AKS OS SKUs
/// (`kubernetes.azure.com/os-sku`) its DaemonSet runs on.
const MIXED_POOLS: &str = "examples/mixed-pools";
const MIXED_POOLS_FAMILIES: [(&str, &[&str]); 2] = [
    ("debian", &["Ubuntu", "Ubuntu2204", "Ubuntu2404"]),
    (
        "rhel",
        &["AzureLinux", "AzureLinux3", "CBLMariner", "Mariner"],
    ),
];
const OS_SKU_LABEL: &str = "kubernetes.azure.com/os-sku";
const FAMILY_LABEL: &str = "node-cert-agent.dev/family";

/// The kustomization directories of the mixed-pools example: its own, the
/// shared objects' and each family's.
fn mixed_pools_dirs() -> Vec<String> {
    let mut dirs = vec![MIXED_POOLS.to_owned(), format!("{MIXED_POOLS}/shared")];
    dirs.extend(
        MIXED_POOLS_FAMILIES
            .iter()
            .map(|(f, _)| format!("{MIXED_POOLS}/{f}")),
    );
    dirs
}

/// Every kustomization directory shipped, the mixed-pools example's included.
fn all_kustomization_dirs() -> Vec<String> {
    let mut dirs = kustomize_dirs();
    dirs.extend(mixed_pools_dirs());
    dirs
}

fn all_yaml_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in all_kustomization_dirs() {
        let d = manifests_dir().join(dir);
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// The strategic-merge patches the kustomizations name: partial objects,
/// checked through what `kubectl kustomize` renders from them.
fn patch_files() -> BTreeSet<PathBuf> {
    let mut patches = BTreeSet::new();
    for dir in all_kustomization_dirs() {
        let d = manifests_dir().join(dir);
        for doc in yaml_docs(&d.join("kustomization.yaml")) {
            let k: Kustomization = serde_json::from_value(doc).unwrap();
            patches.extend(k.patches_strategic_merge.iter().map(|p| d.join(p)));
        }
    }
    patches
}

/// containerd's registry host directory as AKS configures it: the agent
/// writes its `_default` there (agent/src/trust/pull_trust.rs).
const CONTAINERD_CERTS_D: &str = "/etc/containerd/certs.d";
#[test]
fn the_overlays_directory_holds_one_overlay_per_family() {
    let mut shipped: Vec<String> = std::fs::read_dir(manifests_dir().join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|o| !OTHER_OVERLAYS.contains(&o.as_str()))
        .collect();
    shipped.sort();
    let mut want: Vec<String> = FAMILY_OVERLAYS
        .iter()
        .map(|(o, _)| (*o).to_owned())
        .collect();
    want.sort();
    assert_eq!(shipped, want);
    // Every os-release fixture is some overlay's.
    let mut fixtures: Vec<String> =
        std::fs::read_dir(workspace_dir().join("agent/tests/data/os-release"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    fixtures.sort();
    let mut covered: Vec<String> = FAMILY_OVERLAYS
        .iter()
        .flat_map(|(_, f)| f.iter().map(|s| (*s).to_owned()))
        .collect();
    covered.sort();
    assert_eq!(
        fixtures, covered,
        "an os-release fixture without an overlay (or the reverse)"
    );
}

fn load<T: DeserializeOwned + Serialize>(rel: &str) -> T {
    let path = manifests_dir().join(rel);
    let docs = yaml_docs(&path);
    assert_eq!(docs.len(), 1, "{rel}: one object expected");
    strict(&docs[0], rel).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_manifest_parses_strictly_into_its_type() {
    let files = all_yaml_files();
    assert!(files.len() >= 17, "manifests missing: {files:?}");
    let patches = patch_files();
    // The overlays' 6, the mixed-pools example's 5.
    assert_eq!(patches.len(), 11, "{patches:?}");
    for path in files {
        if patches.contains(&path) {
            continue;
        }
        let name = path
            .strip_prefix(manifests_dir())
            .unwrap()
            .display()
            .to_string();
        for doc in yaml_docs(&path) {
            if name.ends_with("kustomization.yaml") {
                let k: Kustomization = serde_json::from_value(doc)
                    .unwrap_or_else(|e| panic!("{name}: not a kustomization we ship: {e}"));
                assert_eq!(k.kind, "Kustomization", "{name}");
                continue;
            }
            check_object(&doc, &name).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn an_unknown_or_misplaced_field_fails_the_strict_parse() {
    let ds: Value = serde_json::to_value(load::<DaemonSet>("base/daemonset.yaml")).unwrap();
    // A top-level typo.
    let mut bad = ds.clone();
    bad["spec"]["updateStrategyy"] = json!({"type": "OnDelete"});
    let err = check_object(&bad, "typo").unwrap_err();
    assert!(err.contains(".spec.updateStrategyy"), "{err}");
    // A real field at the wrong level (hostPath on the mount, not the volume).
    let mut bad = ds.clone();
    bad["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["hostPath"] =
        json!({"path": "/"});
    let err = check_object(&bad, "misplaced").unwrap_err();
    assert!(err.contains("volumeMounts[0].hostPath"), "{err}");
    // The same in a CRD's schema, and in RBAC.
    let mut crd: Value = serde_yaml::from_str(RENEW_REVOCATION_CRD).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["propertes"] = json!({});
    assert!(check_object(&crd, "crd").unwrap_err().contains("propertes"));
    let mut role = yaml_docs(&manifests_dir().join("base/rbac-renewrevocations.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Role")
        .unwrap();
    role["rules"][0]["verb"] = json!(["delete"]);
    assert!(check_object(&role, "role")
        .unwrap_err()
        .contains("rules[0].verb"));
    // A wrong type fails too, and an unknown custom-resource field is refused.
    let mut bad = ds;
    bad["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!("30s");
    assert!(check_object(&bad, "type")
        .unwrap_err()
        .contains("does not parse"));
    let mut rr: Value = serde_yaml::from_str(
        &std::fs::read_to_string(manifests_dir().join("examples/renewrevocation.yaml")).unwrap(),
    )
    .unwrap();
    rr["spec"]["revocations"][0]["kind"] = json!("Serial");
    assert!(check_object(&rr, "rr").is_err());
    // And the kustomization check rejects unknown keys.
    assert!(serde_json::from_value::<Kustomization>(
        json!({"apiVersion": "v1", "kind": "Kustomization", "resource": []})
    )
    .is_err());
}

#[test]
fn the_crd_is_exactly_the_one_the_test_api_server_enforces() {
    let shipped =
        std::fs::read_to_string(manifests_dir().join("base/crd-renewrevocation.yaml")).unwrap();
    assert_eq!(shipped, RENEW_REVOCATION_CRD);
}

fn kubectl_kustomize(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", &manifests_dir().join(dir).display().to_string()])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run kubectl ({e}): install it with `apt-get install kubernetes-client` (Debian 12)")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize manifests/{dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl kustomize manifests/<dir>`, parsed.
fn rendered_docs(dir: &str) -> Vec<Value> {
    let rendered = kubectl_kustomize(dir);
    serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn kubectl_kustomize_renders_the_base_the_example_and_every_family_overlay() {
    // Two Roles and their bindings: the RenewRevocations (the nodes) and
    // custom-ca-trust-secret (the agent's ServiceAccount).
    let base_kinds = [
        "CustomResourceDefinition",
        "ServiceAccount",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "ConfigMap",
        "DaemonSet",
    ];
    for dir in kustomize_dirs() {
        let docs = rendered_docs(&dir);
        let mut kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        let mut want = base_kinds.to_vec();
        if dir == "examples" {
            want.push("Secret");
        }
        kinds.sort_unstable();
        want.sort_unstable();
        assert_eq!(kinds, want, "manifests/{dir}");
        for d in &docs {
            check_object(d, &format!("rendered manifests/{dir}")).unwrap_or_else(|e| panic!("{e}"));
        }
        if dir == "examples" {
            let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
            assert_eq!(
                ds["spec"]["template"]["spec"]["containers"][0]["image"],
                "registry.example.internal/node-cert-agent:0.1.0"
            );
        }
    }
}

/// The one DaemonSet of rendered `docs`, strictly typed.
fn the_daemonset(docs: &[Value], what: &str) -> DaemonSet {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "DaemonSet").collect();
    assert_eq!(found.len(), 1, "{what}: one DaemonSet expected");
    strict(found[0], what).unwrap_or_else(|e| panic!("{e}"))
}

/// The pod's SELinux type. Only the type is set (user, role and level stay
/// the runtime's) and no container overrides the pod's options.
fn pod_selinux_type(ds: &DaemonSet, what: &str) -> Option<String> {
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    for c in &pod.containers {
        assert!(
            c.security_context
                .as_ref()
                .and_then(|s| s.se_linux_options.as_ref())
                .is_none(),
            "{what}: container {} sets its own seLinuxOptions",
            c.name
        );
    }
    let options = pod
        .security_context
        .as_ref()
        .and_then(|s| s.se_linux_options.clone())?;
    assert!(
        options.user.is_none() && options.role.is_none() && options.level.is_none(),
        "{what}: the type only: {options:?}"
    );
    options.type_
}

/// The family of a family overlay, as the agent detects it on the overlay's
/// first os-release fixture.
fn overlay_family(overlay: &str) -> Family {
    let (_, fixtures) = FAMILY_OVERLAYS
        .iter()
        .find(|(o, _)| *o == overlay)
        .unwrap_or_else(|| panic!("{overlay} is no family overlay"));
    let text = std::fs::read_to_string(
        workspace_dir()
            .join("agent/tests/data/os-release")
            .join(fixtures[0]),
    )
    .unwrap();
    distro::detect_family(&distro::parse_os_release(&text)).unwrap()
}

/// The writable trust-store directories a DaemonSet mounts (its writable
/// hostPath directories less the state, kubelet pki and containerd ones).
fn writable_anchors_dirs(ds: &DaemonSet) -> Vec<PathBuf> {
    let (settings, _) = pod_settings(&load::<DaemonSet>("base/daemonset.yaml"));
    let shared: BTreeSet<PathBuf> = [
        settings.state_dir,
        settings.kubelet.pki_dir,
        PathBuf::from(CONTAINERD_CERTS_D),
    ]
    .into();
    writable_host_dirs(ds)
        .into_iter()
        .map(|(host, _, _)| host)
        .filter(|host| !shared.contains(host))
        .collect()
}

#[test]
fn the_selinux_enforcing_families_overlays_run_the_pod_as_spc_t_and_no_other() {
    let base = load::<DaemonSet>("base/daemonset.yaml");
    let base_pod = base.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod_selinux_type(&base, "manifests/base"), None);
    for (overlay, _) in FAMILY_OVERLAYS {
        let dir = format!("overlays/{overlay}");
        let ds = the_daemonset(&rendered_docs(&dir), &dir);
        let want = SELINUX_SPC_OVERLAYS
            .contains(&overlay)
            .then(|| "spc_t".to_owned());
        assert_eq!(
            pod_selinux_type(&ds, &dir),
            want,
            "manifests/{dir}: the pod's SELinux type"
        );
        // spc_t lifts the SELinux confinement only: the pod's security
        // context holds nothing else, and the container's is the base's
        // (uid 0, no capabilities, not privileged, RuntimeDefault seccomp,
        // read-only root).
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        if let Some(sc) = &pod.security_context {
            let mut rest = sc.clone();
            rest.se_linux_options = None;
            assert_eq!(
                rest,
                Default::default(),
                "manifests/{dir}: the pod's securityContext sets more than seLinuxOptions"
            );
        }
        assert_eq!(
            pod.containers[0].security_context, base_pod.containers[0].security_context,
            "manifests/{dir}"
        );
        assert_eq!(pod.host_pid, None, "manifests/{dir}");
    }
    // Nor does any other shipped kustomization change the SELinux type.
    let mut others = vec!["base".to_owned(), "examples".to_owned()];
    others.extend(OTHER_OVERLAYS.iter().map(|o| format!("overlays/{o}")));
    for dir in others {
        let ds = the_daemonset(&rendered_docs(&dir), &dir);
        assert_eq!(pod_selinux_type(&ds, &dir), None, "manifests/{dir}");
    }
}

#[test]
fn the_mixed_pools_example_renders_one_daemonset_per_family_and_the_shared_objects_once() {
    let docs = rendered_docs(MIXED_POOLS);
    for d in &docs {
        check_object(d, &format!("rendered manifests/{MIXED_POOLS}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // No object twice: `kubectl apply` would have two of them fight.
    let mut ids = BTreeSet::new();
    for d in &docs {
        let id = (
            d["kind"].as_str().unwrap().to_owned(),
            d["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            d["metadata"]["name"].as_str().unwrap().to_owned(),
        );
        println!("{} {}/{}", id.0, id.1, id.2);
        assert!(ids.insert(id.clone()), "rendered twice: {id:?}");
    }
    // The shared objects are exactly the base's, once: the same objects,
    // then the same contents.
    let base = rendered_docs("base");
    let shared_ids = |docs: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = docs
            .iter()
            .filter(|d| d["kind"] != "DaemonSet")
            .map(|d| format!("{} {}", d["kind"], d["metadata"]["name"]))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        shared_ids(&docs),
        shared_ids(&base),
        "manifests/{MIXED_POOLS}: other shared objects than the base's"
    );
    let shared_of = |docs: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = docs
            .iter()
            .filter(|d| d["kind"] != "DaemonSet")
            .map(Value::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        shared_of(&docs),
        shared_of(&base),
        "manifests/{MIXED_POOLS}: the shared objects differ from the base's"
    );
    // Its directories: the shared objects and one per listed family.
    let dir = manifests_dir().join(MIXED_POOLS);
    let top: Kustomization =
        serde_json::from_value(yaml_docs(&dir.join("kustomization.yaml")).remove(0)).unwrap();
    let mut want_dirs = vec!["shared".to_owned()];
    want_dirs.extend(MIXED_POOLS_FAMILIES.iter().map(|(f, _)| (*f).to_owned()));
    assert_eq!(top.bases, want_dirs);
    let mut subdirs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    subdirs.sort();
    want_dirs.sort();
    assert_eq!(subdirs, want_dirs);

    let daemonsets: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "DaemonSet").collect();
    assert_eq!(
        daemonsets.len(),
        MIXED_POOLS_FAMILIES.len(),
        "one DaemonSet per family"
    );
    let name_of = |kind: &str| -> String {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .and_then(|d| d["metadata"]["name"].as_str())
            .unwrap()
            .to_owned()
    };
    let (sa, cm) = (name_of("ServiceAccount"), name_of("ConfigMap"));
    let mut skus_seen = BTreeSet::new();
    // (selector, pod labels) per DaemonSet.
    let mut selections = Vec::new();
    for (family, skus) in MIXED_POOLS_FAMILIES {
        let name = format!("node-cert-agent-{family}");
        let what = format!("manifests/{MIXED_POOLS}: DaemonSet {name}");
        let doc = daemonsets
            .iter()
            .find(|d| d["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{what}: not rendered"));
        // That family's anchors directory and SELinux type, the base's node
        // selector, the shared ServiceAccount and ConfigMap, its OS SKUs.
        let ds: DaemonSet = strict(doc, &what).unwrap();
        assert_eq!(
            writable_anchors_dirs(&ds),
            vec![overlay_family(family).layout().anchors_dir],
            "{what}: mounts its family's anchors directory, and no other"
        );
        assert_eq!(
            pod_selinux_type(&ds, &what),
            SELINUX_SPC_OVERLAYS
                .contains(&family)
                .then(|| "spc_t".to_owned()),
            "{what}"
        );
        let spec = ds.spec.as_ref().unwrap();
        let pod = spec.template.spec.as_ref().unwrap();
        let selector = pod.node_selector.clone().unwrap();
        assert_eq!(
            selector.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        assert_eq!(
            selector
                .get("node-cert-agent.dev/enabled")
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(pod.service_account_name.as_deref(), Some(sa.as_str()));
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.config_map.as_ref().is_some_and(|c| c.name == cm)),
            "{what}: the shared ConfigMap {cm}"
        );
        assert_eq!(
            doc["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            json!([{"matchExpressions": [
                {"key": OS_SKU_LABEL, "operator": "In", "values": skus}
            ]}]),
            "{what}: required on its family's OS SKUs, and nothing else"
        );
        for sku in skus {
            assert!(!sku.starts_with("Windows"), "{what}: {sku}");
            assert!(
                skus_seen.insert(*sku),
                "{what}: OS SKU {sku} is another family's too"
            );
        }
        // And all of it: the family overlay's DaemonSet with only its name,
        // the family label, the node affinity on the OS SKU and the image
        // changed.
        let overlay = format!("overlays/{family}");
        let overlay_docs = rendered_docs(&overlay);
        let mut want = overlay_docs
            .iter()
            .find(|d| d["kind"] == "DaemonSet")
            .unwrap()
            .clone();
        want["metadata"]["name"] = json!(name);
        want["metadata"]["labels"][FAMILY_LABEL] = json!(family);
        want["spec"]["selector"]["matchLabels"][FAMILY_LABEL] = json!(family);
        want["spec"]["template"]["metadata"]["labels"][FAMILY_LABEL] = json!(family);
        want["spec"]["template"]["spec"]["affinity"] = json!({
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": OS_SKU_LABEL, "operator": "In", "values": skus}
                ]}]
            }}
        });
        want["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("registry.example.internal/node-cert-agent:0.1.0");
        assert_eq!(**doc, want, "{what}");

        selections.push((
            spec.selector.match_labels.clone().unwrap(),
            spec.template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .clone()
                .unwrap(),
        ));
    }
    // The DaemonSets' selectors do not overlap: none selects another's pods.
    for (i, (selector, _)) in selections.iter().enumerate() {
        for (j, (_, labels)) in selections.iter().enumerate() {
            let selects = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
            assert_eq!(selects, i == j, "DaemonSet {i} selecting pods of {j}");
        }
    }
}

/// The trust-store table of docs/configuration.md ("Trust store
/// detection"): (os-release IDs of the row, anchors directory) per row.
fn documented_trust_store_table() -> Vec<(Vec<String>, PathBuf)> {
    let doc = workspace_dir().join("docs/configuration.md");
    let text = std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("| family | anchors (agent-owned files) |"))
        .skip(2);
    let mut rows = Vec::new();
    for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let ids = cells[1].split(',').map(|id| id.trim().to_owned()).collect();
        let anchor = Path::new(cells[2].trim_matches('`'));
        let file = anchor.file_name().unwrap().to_string_lossy();
        assert!(
            file.starts_with("node-cert-agent-<sha256>."),
            "docs/configuration.md trust-store row {line:?}: the anchors cell names the agent's files"
        );
        rows.push((ids, anchor.parent().unwrap().to_owned()));
    }
    assert_eq!(
        rows.len(),
        4,
        "the trust-store table of docs/configuration.md has a row per family"
    );
    rows
}

/// The documented row's anchors directory for os-release ID `id`.
fn documented_anchors_dir(table: &[(Vec<String>, PathBuf)], id: &str) -> PathBuf {
    table
        .iter()
        .find(|(ids, _)| {
            ids.iter().any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => id.starts_with(prefix),
                None => pattern == id,
            })
        })
        .map(|(_, dir)| dir.clone())
        .unwrap_or_else(|| {
            panic!("no row of the trust-store table of docs/configuration.md names ID={id}")
        })
}

/// The writable directory hostPaths of a DaemonSet's container, each with
/// where it is mounted in the pod and its hostPath type.
fn writable_host_dirs(ds: &DaemonSet) -> Vec<(PathBuf, PathBuf, Option<String>)> {
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volumes = pod.volumes.clone().unwrap();
    pod.containers[0]
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .filter(|m| m.read_only != Some(true))
        .filter_map(|m| {
            let v = volumes.iter().find(|v| v.name == m.name).unwrap();
            let hp = v.host_path.as_ref()?;
            (hp.type_.as_deref() != Some("Socket")).then(|| {
                (
                    PathBuf::from(&hp.path),
                    PathBuf::from(&m.mount_path),
                    hp.type_.clone(),
                )
            })
        })
        .collect()
}

#[test]
fn every_family_overlay_mounts_exactly_its_anchors_dir_as_the_docs_and_the_agent_say() {
    let table = documented_trust_store_table();
    let (settings, _) = pod_settings(&load::<DaemonSet>("base/daemonset.yaml"));
    let under_host = |node: &Path| settings.host_root.join(node.strip_prefix("/").unwrap());
    let shared: BTreeSet<PathBuf> = [
        settings.state_dir.clone(),
        settings.kubelet.pki_dir.clone(),
        PathBuf::from(CONTAINERD_CERTS_D),
    ]
    .into();
    for (overlay, fixtures) in FAMILY_OVERLAYS {
        let dir = format!("overlays/{overlay}");
        let docs = rendered_docs(&dir);
        let ds: DaemonSet = strict(
            docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap(),
            &dir,
        )
        .unwrap();
        let writable = writable_host_dirs(&ds);
        let anchors: Vec<&(PathBuf, PathBuf, Option<String>)> = writable
            .iter()
            .filter(|(host, _, _)| !shared.contains(host))
            .collect();
        assert_eq!(
            anchors.len(),
            1,
            "manifests/{dir}: one writable trust-store directory, got {anchors:?}"
        );
        let (anchors_dir, mount_path, kind) = anchors[0].clone();
        assert_eq!(mount_path, under_host(&anchors_dir), "manifests/{dir}");
        assert_eq!(
            kind.as_deref(),
            Some("DirectoryOrCreate"),
            "manifests/{dir}"
        );
        for fixture in fixtures {
            let text = std::fs::read_to_string(
                workspace_dir()
                    .join("agent/tests/data/os-release")
                    .join(fixture),
            )
            .unwrap();
            let os = distro::parse_os_release(&text);
            let family = distro::detect_family(&os)
                .unwrap_or_else(|| panic!("the agent detects no family for {fixture}"));
            let layout = family.layout();
            assert_eq!(
                documented_anchors_dir(&table, &os.id),
                layout.anchors_dir,
                "{fixture}: the trust-store table of docs/configuration.md and the agent disagree"
            );
            assert_eq!(
                anchors_dir, layout.anchors_dir,
                "manifests/{dir} on a {fixture} node: the agent writes {} but the overlay mounts {}",
                layout.anchors_dir.display(),
                anchors_dir.display()
            );
            // The bundle the agent checks is read through the read-only host root.
            assert!(layout.bundle_path.is_absolute());
        }
    }
}

/// The agent's settings from the shipped ConfigMap, as the agent resolves
/// them (with the DaemonSet's flags).
fn pod_settings(ds: &DaemonSet) -> (Settings, PathBuf) {
    let container = &ds
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let args = container.args.clone().unwrap();
    assert_eq!(args[0], "run", "{args:?}");
    let i = args
        .iter()
        .position(|a| a == "--config")
        .expect("--config in the args");
    let config_path = PathBuf::from(&args[i + 1]);
    assert_eq!(args.len(), 3, "only `run --config FILE`: {args:?}");
    let cm: ConfigMap = load("base/configmap.yaml");
    let key = config_path.file_name().unwrap().to_str().unwrap();
    let text = cm
        .data
        .unwrap()
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("ConfigMap has no key {key}"));
    let file = config::parse_file(&text).unwrap_or_else(|e| panic!("the ConfigMap's {key}: {e}"));
    let settings = config::resolve(file, Flags::default())
        .unwrap_or_else(|e| panic!("the ConfigMap's {key}: {e}"));
    (settings, config_path)
}

#[test]
fn every_path_the_agent_uses_is_mounted_in_the_daemonset() {
    let ds: DaemonSet = load("base/daemonset.yaml");
    let (settings, config_path) = pod_settings(&ds);
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let mounts = c.volume_mounts.clone().unwrap();
    let volumes = pod.volumes.clone().unwrap();
    let volume = |name: &str| -> &Volume { volumes.iter().find(|v| v.name == name).unwrap() };
    // (mount path in the pod, read-only, volume)
    let mounted: Vec<(PathBuf, bool, &Volume)> = mounts
        .iter()
        .map(|m| {
            (
                PathBuf::from(&m.mount_path),
                m.read_only.unwrap_or(false),
                volume(&m.name),
            )
        })
        .collect();
    let host_path = |v: &Volume| v.host_path.as_ref().map(|h| PathBuf::from(&h.path));

    // The host root, read-only.
    let host_root = &settings.host_root;
    assert_eq!(host_root, Path::new("/host"));
    assert!(
        mounted.iter().any(|(p, ro, v)| p == host_root
            && *ro
            && host_path(v).as_deref() == Some(Path::new("/"))),
        "the node's root must be mounted read-only at {}",
        host_root.display()
    );
    let under_host = |node: &Path| host_root.join(node.strip_prefix("/").unwrap());
    // A node path the agent writes: a writable hostPath of (a parent of)
    // that node path, mounted at the matching path under the host root.
    let writable = |node: &Path, what: &str| {
        assert!(
            mounted.iter().any(|(p, ro, v)| !ro
                && host_path(v).is_some_and(|h| node.starts_with(&h) && *p == under_host(&h))),
            "{what} ({}) is not writable in the pod: mount a hostPath of it at {}",
            node.display(),
            under_host(node).display()
        );
    };
    writable(&settings.state_dir, "the state dir");
    writable(
        Path::new(CONTAINERD_CERTS_D),
        "containerd's registry host directory (the live pull trust)",
    );
    writable(
        Path::new(node_cert_agent::config::kubelet::DEFAULT_PKI_DIR),
        "the kubelet pki dir",
    );
    let pki = settings.kubelet.pki_dir.clone();
    writable(&pki, "the configured kubelet pki dir");
    // The base is for Debian and Ubuntu nodes: their anchors dir, and no
    // other family's (manifests/overlays has one overlay per family).
    writable(
        &Family::Debian.layout().anchors_dir,
        "the Debian anchors dir",
    );
    for family in [Family::RedHat, Family::Suse, Family::Flatcar] {
        let dir = family.layout().anchors_dir;
        assert!(
            !mounted.iter().any(|(_, ro, v)| !ro
                && host_path(v).is_some_and(|h| dir.starts_with(&h) && h != Path::new("/"))),
            "the base mounts the {family:?} anchors dir {} writable",
            dir.display()
        );
    }
    // Sockets: D-Bus under the host root (where the agent resolves it),
    // journald at its own path (tracing-journald's fixed path).
    let socket = |pod_path: &Path, node_path: &str| {
        assert!(
            mounted.iter().any(|(p, _, v)| p == pod_path
                && v.host_path
                    .as_ref()
                    .is_some_and(|h| h.path == node_path && h.type_.as_deref() == Some("Socket"))),
            "socket {node_path} is not mounted at {}",
            pod_path.display()
        );
    };
    socket(&under_host(Path::new(SYSTEM_BUS_SOCKET)), SYSTEM_BUS_SOCKET);
    socket(Path::new(JOURNAL_SOCKET), JOURNAL_SOCKET);
    // The Secret through the API, as the pod's ServiceAccount (its token
    // mounted); no volume of it (overlays/secret-volume has that instead).
    assert_eq!(
        settings.trust.ca_secret,
        Some(config::SecretRef::parse("kube-system/custom-ca-trust-secret").unwrap())
    );
    assert_eq!(pod.automount_service_account_token, Some(true));
    assert!(settings.trust.ca_secret_kubeconfig.is_none());
    assert!(
        !volumes.iter().any(|v| v.secret.is_some()),
        "the base reads the Secret through the API, not as a volume"
    );
    // The Secret, optional, at every configured ca-dir.
    for s in &settings.trust.sources {
        let SourceSpec::SecretDir(dir) = s else {
            panic!("only the Secret is an input in a pod: {s:?}")
        };
        assert!(
            mounted.iter().any(|(p, ro, v)| p == dir
                && *ro
                && v.secret
                    .as_ref()
                    .is_some_and(|s| s.secret_name.as_deref() == Some(SECRET_NAME)
                        && s.optional == Some(true))),
            "ca-dir {} is not the optional Secret {SECRET_NAME}",
            dir.display()
        );
    }
    // The config file itself.
    assert!(mounted
        .iter()
        .any(|(p, _, v)| Some(p.as_path()) == config_path.parent()
            && v.config_map
                .as_ref()
                .is_some_and(|c| c.name == "node-cert-agent")));
    // No other hostPath than these.
    let mut host_paths: Vec<String> = volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    host_paths.sort();
    assert_eq!(
        host_paths,
        vec![
            "/",
            CONTAINERD_CERTS_D,
            "/run/dbus/system_bus_socket",
            "/run/systemd/journal/socket",
            "/usr/local/share/ca-certificates/node-cert-agent",
            "/var/lib/kubelet/pki",
            "/var/lib/node-cert-agent",
        ]
    );

    // The rest of the pod contract.
    assert_eq!(
        pod.node_selector
            .as_ref()
            .unwrap()
            .get("kubernetes.io/os")
            .map(String::as_str),
        Some("linux")
    );
    assert_eq!(
        pod.node_selector
            .as_ref()
            .unwrap()
            .get("node-cert-agent.dev/enabled")
            .map(String::as_str),
        Some("true")
    );
    let tol = pod.tolerations.as_ref().unwrap();
    assert!(tol
        .iter()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(pod.termination_grace_period_seconds.unwrap() > AGENT_DRAIN_SECONDS);
    let ds_spec = ds.spec.as_ref().unwrap();
    let strategy = ds_spec.update_strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert!(strategy
        .rolling_update
        .as_ref()
        .unwrap()
        .max_unavailable
        .is_some());
    let env = c.env.as_ref().unwrap();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(
        node_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert!(c.resources.as_ref().unwrap().requests.is_some());
    // Probes on the agent's listener.
    let port = settings
        .ops
        .metrics_address
        .expect("the metrics listener is on in a pod")
        .port();
    let container_port = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .unwrap();
    assert_eq!(container_port.container_port, i32::from(port));
    assert!(
        !settings.ops.metrics_address.unwrap().ip().is_loopback(),
        "kubelet probes the pod IP"
    );
    for (probe, path) in [
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
    }
    // The pod runs as its own ServiceAccount; the API identity the agent
    // uses is the node's, which the shipped RBAC binds by group.
    let sa: ServiceAccount = load("base/serviceaccount.yaml");
    assert_eq!(pod.service_account_name, sa.metadata.name);
    let binding: RoleBinding = serde_json::from_value(
        yaml_docs(&manifests_dir().join("base/rbac-renewrevocations.yaml"))
            .into_iter()
            .find(|d| d["kind"] == "RoleBinding")
            .unwrap(),
    )
    .unwrap();
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("Group", "system:nodes")
    );
    assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
}

#[test]
fn the_example_secret_holds_two_real_ca_certificates() {
    let secret: Secret = load("examples/custom-ca-trust-secret.yaml");
    assert_eq!(secret.metadata.name.as_deref(), Some(SECRET_NAME));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("kube-system"));
    let data = secret.string_data.unwrap();
    assert_eq!(data.len(), 2);
    for (key, pem) in data {
        assert!(key.ends_with(".crt"));
        let cert = openssl::x509::X509::from_pem(pem.as_bytes()).unwrap();
        let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
        assert!(text.contains("CA:TRUE"), "{key} is not a CA");
    }
}

const TOKEN_ID: &str = "abcdef";
const TOKEN_SECRET: &str = "0123456789abcdef";

/// A rule of the shipped RBAC: the subject it is bound to (`User x`,
/// `Group x`, `ServiceAccount ns/x`), its namespace (`""`: cluster-wide), and
/// one (verb, group, resource).
type Grant = (String, String, String, String, String);

/// Every rule of the RBAC `manifests/base` renders to, per bound subject.
fn shipped_grants() -> BTreeSet<Grant> {
    let text = integration_tests::rbac::kustomize(&manifests_dir().join("base"));
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let rules_of = |kind: &str, name: &str, ns: &str| -> Vec<PolicyRule> {
        let doc = docs
            .iter()
            .find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && (kind == "ClusterRole" || d["metadata"]["namespace"] == ns)
            })
            .unwrap_or_else(|| panic!("the shipped RBAC has no {kind} {name}"));
        serde_json::from_value::<Vec<PolicyRule>>(doc["rules"].clone()).unwrap()
    };
    let mut out = BTreeSet::new();
    for d in &docs {
        let (ns, role) = match d["kind"].as_str() {
            Some("RoleBinding") => {
                let b: RoleBinding = serde_json::from_value(d.clone()).unwrap();
                let ns = b.metadata.namespace.clone().unwrap();
                (ns, (b.role_ref, b.subjects.unwrap_or_default()))
            }
            Some("ClusterRoleBinding") => {
                let b: ClusterRoleBinding = serde_json::from_value(d.clone()).unwrap();
                (String::new(), (b.role_ref, b.subjects.unwrap_or_default()))
            }
            _ => continue,
        };
        let (role_ref, subjects) = role;
        for rule in rules_of(&role_ref.kind, &role_ref.name, &ns) {
            assert!(rule.non_resource_urls.is_none());
            for subject in &subjects {
                let who = match subject.kind.as_str() {
                    "ServiceAccount" => format!(
                        "ServiceAccount {}/{}",
                        subject.namespace.clone().unwrap_or_default(),
                        subject.name
                    ),
                    k => format!("{k} {}", subject.name),
                };
                for g in rule.api_groups.clone().unwrap_or_default() {
                    for res in rule.resources.clone().unwrap_or_default() {
                        for v in &rule.verbs {
                            assert!(g != "*" && res != "*" && v != "*", "no wildcards");
                            out.insert((
                                who.clone(),
                                ns.clone(),
                                v.clone(),
                                g.clone(),
                                res.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Whether `subject` (as [`shipped_grants`] writes it) names the identity.
fn binds(subject: &str, user: &str, groups: &[String]) -> bool {
    match subject.split_once(' ') {
        Some(("User", name)) => name == user,
        Some(("Group", name)) => groups.iter().any(|g| g == name),
        Some(("ServiceAccount", ns_name)) => {
            user == format!("system:serviceaccount:{}", ns_name.replace('/', ":"))
        }
        _ => false,
    }
}

#[test]
fn the_secret_volume_overlay_reads_the_mounted_secret_and_mounts_no_token() {
    let docs = rendered_docs("overlays/secret-volume");
    let cm: ConfigMap = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "ConfigMap")
            .unwrap()
            .clone(),
    )
    .unwrap();
    let text = cm.data.unwrap()["config.yaml"].clone();
    let settings = config::resolve(config::parse_file(&text).unwrap(), Flags::default()).unwrap();
    assert!(
        settings.trust.ca_secret.is_none(),
        "one view of the Secret only"
    );
    assert_eq!(
        settings.trust.sources,
        vec![SourceSpec::SecretDir("/etc/node-cert-agent/secret".into())]
    );
    let ds: DaemonSet = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "DaemonSet")
            .unwrap()
            .clone(),
    )
    .unwrap();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    let vol = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "custom-ca-trust")
        .unwrap();
    let secret = vol.secret.unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some(SECRET_NAME));
    assert_eq!(secret.optional, Some(true));
    assert!(pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.name == "custom-ca-trust"
            && m.mount_path == "/etc/node-cert-agent/secret"
            && m.read_only == Some(true)));
}

#[test]
fn the_shipped_rbac_grants_each_identity_exactly_the_calls_it_makes() {
    let server = ApiServer::start_with(Profile::Kubeadm, &integration_tests::rbac::shipped_rbac());
    server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
    server.add_node("n1");
    server
        .add_revocation(
            "kube-system",
            json!({
                "apiVersion": "certificates.microsoft.com/v1",
                "kind": "RenewRevocation",
                "metadata": {"name": "nothing-matches"},
                "spec": {"revocations": [{"kind": "DNS", "dns": ".nowhere.invalid"}]}
            }),
        )
        .unwrap();
    let node = Node::boot("rbac-calls");
    node.write_file(
        "/etc/systemd/system/kubelet.service",
        b"[Unit]\nDescription=stand-in kubelet\n[Service]\nExecStart=/bin/sleep infinity\n",
        0o644,
    );
    node.systemctl(&["daemon-reload"]);
    node.exec_ok(&["systemctl", "start", "kubelet.service"]);
    node.write_file(
        "/var/lib/kubelet/bootstrap-kubeconfig",
        server
            .bootstrap_kubeconfig(TOKEN_ID, TOKEN_SECRET)
            .as_bytes(),
        0o600,
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "metrics-address: \"off\"\nfleet-publish-spread-seconds: 0\nkubelet:\n  mode: on\n  node-name: n1\n  csr-timeout-seconds: 60\n",
    )
    .unwrap();
    // The Secret through the API, as the agent's ServiceAccount.
    let sa_token = server.add_service_account_token("kube-system", "node-cert-agent");
    let sa_kubeconfig = dir.path().join("sa-kubeconfig");
    std::fs::write(&sa_kubeconfig, server.token_kubeconfig(&sa_token)).unwrap();
    let secret = tempfile::tempdir().unwrap();
    let agent = PodModeAgent::start(
        &node,
        secret.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--ca-secret",
            "kube-system/custom-ca-trust-secret",
            "--ca-secret-kubeconfig",
            sa_kubeconfig.to_str().unwrap(),
        ],
    );
    // The bootstrap (CSR create + watch), then the revocation list/watch.
    let ok = integration_tests::wait_until_or_timeout(Duration::from_secs(60), || {
        node.exists("/var/lib/kubelet/pki/kubelet-client-current.pem")
    });
    assert!(
        ok,
        "no client certificate; agent log:\n{}",
        render_tail(&agent.logs(), 30)
    );
    std::thread::sleep(Duration::from_secs(10));

    let agent_users = [
        format!("system:bootstrap:{TOKEN_ID}"),
        "system:node:n1".to_string(),
        "system:serviceaccount:kube-system:node-cert-agent".to_string(),
    ];
    let calls: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.resource_request && agent_users.contains(&r.user))
        .collect();
    assert!(!calls.is_empty());
    // 1. A real cluster allows every call the agent makes: the server's
    //    authorization is upstream's default policy and the shipped RBAC only.
    let refused: Vec<_> = calls
        .iter()
        .filter(|r| r.code == 401 || r.code == 403)
        .map(|r| (&r.user, &r.verb, &r.resource, r.code))
        .collect();
    assert!(refused.is_empty(), "refused calls: {refused:?}");
    // 2. Every shipped grant is used by the identity it binds: the manifests
    //    grant nothing the agent does not use.
    let grants = shipped_grants();
    assert!(!grants.is_empty());
    let mut used = BTreeSet::new();
    for r in &calls {
        for g in &grants {
            let (subject, ns, verb, group, resource) = g;
            if binds(subject, &r.user, &r.groups)
                && (ns.is_empty() || *ns == r.namespace)
                && *verb == r.verb
                && *group == r.group
                && *resource == r.resource
            {
                used.insert(g.clone());
            }
        }
    }
    println!("calls by the agent (user, verb, group, resource, namespace):");
    for r in &calls {
        println!(
            "  {} {} {}/{} {}",
            r.user, r.verb, r.group, r.resource, r.namespace
        );
    }
    println!("shipped grants used: {used:?}");
    // `get` of the Secret is granted on purpose and unused by the agent
    // (rbac-ca-secret.yaml says why: operators' `kubectl auth can-i` and
    // clients that read it by name); the agent itself lists and watches.
    let unused: Vec<_> = grants
        .difference(&used)
        .filter(|(subject, _, verb, _, resource)| {
            !(subject == "ServiceAccount kube-system/node-cert-agent"
                && verb == "get"
                && resource == "secrets")
        })
        .collect();
    assert!(
        unused.is_empty(),
        "the manifests grant calls the agent never makes with that identity: {unused:?}"
    );
    // 3. The RenewRevocation calls are the node's, allowed by the shipped
    //    Role (the Node authorizer covers no custom resource).
    assert!(calls.iter().any(|r| r.resource == "renewrevocations"
        && r.user == "system:node:n1"
        && r.verb == "watch"));
    drop(agent);
}
