//! The `RenewRevocation` custom resource (`certificates.microsoft.com/v1`,
//! namespaced, as the AKS hybrid documentation writes it, <https://learn.microsoft.com/en-us/azure/aks/hybrid/certificates-overview>,
//! "Certificate revocation"; the agent reads
//! the objects of one namespace, kube-system by default): its type, from
//! which the CRD shipped in
//! manifests/base/crd-renewrevocation.yaml is generated (a test holds the
//! two equal), its entries, and whether an entry revokes a certificate.
//!
//! Owns: reading RenewRevocations from the API server (one list; the raw API
//! for the daemon's watch) and turning each listed object into labelled
//! [`Revocation`] entries. A malformed object is warned about and skipped:
//! one bad object never hides the others. Matching ([`Revocation::matches`])
//! is pure.
//!
//! Boundary: never writes a RenewRevocation, never decides when to renew
//! (renewal.rs does), and builds no client (it is given one).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::k8s::failure::ApiFailure;
use crate::k8s::watch::{self, Change};
use crate::kubelet::facts::{normalize_serial, CertFacts};

// The doc comments of the CRD's types are its descriptions (kubectl explain).
/// Kubelet certificates to renew now, whatever their renewal deadline.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "certificates.microsoft.com",
    version = "v1",
    kind = "RenewRevocation",
    plural = "renewrevocations",
    namespaced,
    // The root schema is written below, around the derived spec schema.
    schema = "manual"
)]
pub struct RenewRevocationSpec {
    /// Why these certificates are revoked; logged with every renewal it causes.
    // Declared as a plain string: the CRD does not allow null here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub description: Option<String>,
    /// The entries; a certificate that any entry matches is renewed.
    // Required when decoding, as the agent has always read it (an object
    // without entries is reported as malformed), but optional in the CRD.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(default)]
    pub revocations: Vec<Revocation>,
}

/// By hand, around the derived spec schema: kube's derived root schema lists
/// `spec` as required, which would make the API server refuse an object the
/// shipped CRD accepts.
impl JsonSchema for RenewRevocation {
    fn schema_name() -> Cow<'static, str> {
        "RenewRevocation".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "Forces the renewal of matching kubelet certificates on every node running node-cert-agent (objects in the agent's revocation namespace, kube-system by default).",
            "properties": {
                "spec": generator.subschema_for::<RenewRevocationSpec>(),
            },
        })
    }
}

// One entry of a RenewRevocation object.
/// One entry: a kind and the field it names.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.kind != 'serialnumber' || has(self.serialNumber)", "message": "serialNumber is required when kind is serialnumber"},
    {"rule": "self.kind != 'Group' || has(self.group)", "message": "group is required when kind is Group"},
    {"rule": "self.kind != 'DNS' || has(self.dns)", "message": "dns is required when kind is DNS"},
    {"rule": "self.kind != 'IP' || has(self.ip)", "message": "ip is required when kind is IP"},
]))]
pub struct Revocation {
    /// What the entry matches: serialnumber, Group (subject O=), DNS or IP (a subject alt name).
    // A string, not an enum, so that an unknown kind (a newer CRD) is one
    // entry the agent reports, not an object it cannot read; the agent
    // compares it case-insensitively.
    #[schemars(extend("enum" = ["serialnumber", "Group", "DNS", "IP"]))]
    pub kind: String,
    /// Why this entry revokes; logged with every renewal it causes.
    // Read from the entry; `RenewRevocation::entries` then replaces it with
    // the entry's label for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub description: Option<String>,
    /// The serial number in hex, colons allowed (kind serialnumber).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", regex(pattern = r"^[0-9A-Fa-f]+(:[0-9A-Fa-f]+)*$"))]
    pub serial_number: Option<String>,
    /// An organization (O=) of the subject (kind Group); system:nodes matches every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(min = 1))]
    pub group: Option<String>,
    /// A DNS name (kind DNS); a leading dot matches every name ending in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(min = 1))]
    pub dns: Option<String>,
    /// An IP address (kind IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(min = 1))]
    pub ip: Option<String>,
    /// RFC 3339: only certificates issued before it are revoked; without it, all that match, ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub not_before: Option<String>,
}

/// Why a revocation entry cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("revocation kind {0:?} is unknown; use serialnumber, Group, DNS or IP")]
    UnknownKind(String),
    #[error("revocation of kind {kind} lacks its field `{field}`")]
    MissingField { kind: String, field: &'static str },
    #[error("revocation notBefore {0:?} is not an RFC 3339 time such as 2026-11-22T00:00:00Z")]
    BadTime(String),
    #[error("revocation ip {0:?} is not an IP address")]
    BadIp(String),
}

/// Why RenewRevocations could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RenewRevocationError {
    /// The list call failed (connection, HTTP status); its message is kube's.
    #[error(transparent)]
    List(#[from] kube::Error),
    #[error("RenewRevocation {}: {source}", object.as_deref().unwrap_or("(unnamed)"))]
    Decode {
        /// `metadata.name` of the object.
        object: Option<String>,
        source: serde_json::Error,
    },
}

impl RenewRevocationError {
    /// The API call's failure, when the list call failed.
    pub fn api_failure(&self) -> Option<ApiFailure> {
        match self {
            Self::List(e) => Some(ApiFailure::of(e)),
            Self::Decode { .. } => None,
        }
    }
}

impl Revocation {
    /// A short label for logs: the description, or what the entry matches.
    pub fn label(&self) -> String {
        if let Some(d) = &self.description {
            return d.clone();
        }
        format!("{} {}", self.kind, self.value().unwrap_or("?"))
    }

    /// The value the entry matches on, whichever field holds it.
    fn value(&self) -> Option<&str> {
        self.serial_number
            .as_ref()
            .or(self.group.as_ref())
            .or(self.dns.as_ref())
            .or(self.ip.as_ref())
            .map(String::as_str)
    }

    /// The entry's `notBefore` as Unix time, if it has one.
    pub fn cutoff(&self) -> Result<Option<i64>, RevocationError> {
        self.not_before
            .as_ref()
            .map(|nb| {
                crate::time::parse_rfc3339(nb).ok_or_else(|| RevocationError::BadTime(nb.clone()))
            })
            .transpose()
    }

    /// Whether this entry revokes a certificate with `facts`. With a
    /// `notBefore`, only a certificate issued before it ([`issued_at`]).
    pub fn matches(&self, facts: &CertFacts) -> Result<bool, RevocationError> {
        if let Some(cutoff) = self.cutoff()? {
            if issued_at(facts) >= cutoff {
                return Ok(false);
            }
        }
        let missing = |field| RevocationError::MissingField {
            kind: self.kind.clone(),
            field,
        };
        match self.kind.to_ascii_lowercase().as_str() {
            "serialnumber" => {
                let want = self
                    .serial_number
                    .as_deref()
                    .ok_or_else(|| missing("serialNumber"))?;
                Ok(normalize_serial(want) == normalize_serial(&facts.serial))
            }
            "group" => {
                let want = self.group.as_deref().ok_or_else(|| missing("group"))?;
                Ok(facts.organizations.iter().any(|o| o == want))
            }
            "dns" => {
                let want = self
                    .dns
                    .as_deref()
                    .ok_or_else(|| missing("dns"))?
                    .to_ascii_lowercase();
                Ok(facts.dns_names.iter().any(|d| {
                    let d = d.to_ascii_lowercase();
                    if want.starts_with('.') {
                        d.ends_with(&want)
                    } else {
                        d == want
                    }
                }))
            }
            "ip" => {
                let raw = self.ip.as_deref().ok_or_else(|| missing("ip"))?;
                let want: IpAddr = raw
                    .parse()
                    .map_err(|_| RevocationError::BadIp(raw.to_string()))?;
                Ok(facts.ips.contains(&want))
            }
            other => Err(RevocationError::UnknownKind(other.to_string())),
        }
    }
}

/// How far kube-controller-manager's signer backdates a certificate: it
/// issues every one with `NotBefore = now - 5 min`
/// (`pkg/controller/certificates/signer`: `Backdate: 5 * time.Minute`,
/// applied by `authority.PermissiveSigningPolicy` to short- and long-lived
/// certificates alike).
pub const SIGNER_BACKDATE: i64 = 300;

/// When a certificate was issued, for a revocation's `notBefore` ("only
/// certificates issued before that time are revoked"): its `notBefore` plus
/// the signer's [`SIGNER_BACKDATE`]. For kube-controller-manager's signer
/// that is the moment it signed; without the allowance, a revocation of
/// "everything issued before now" would revoke its own replacements, issued
/// moments later with a `notBefore` 5 minutes earlier. The price: a
/// certificate of a signer that does not backdate counts as issued up to 5
/// minutes later than it was.
pub fn issued_at(facts: &CertFacts) -> i64 {
    facts.not_before.saturating_add(SIGNER_BACKDATE)
}

/// A listed object, read as a RenewRevocation: only its spec is decoded,
/// so anything else the object carries cannot make it unreadable.
impl TryFrom<DynamicObject> for RenewRevocation {
    type Error = RenewRevocationError;

    fn try_from(object: DynamicObject) -> Result<Self, Self::Error> {
        let DynamicObject {
            metadata, mut data, ..
        } = object;
        let spec = data
            .get_mut("spec")
            .map(serde_json::Value::take)
            .unwrap_or_default();
        match serde_json::from_value(spec) {
            Ok(spec) => Ok(RenewRevocation { metadata, spec }),
            Err(source) => Err(RenewRevocationError::Decode {
                object: metadata.name,
                source,
            }),
        }
    }
}

impl RenewRevocation {
    /// Its entries, each labelled for logs with this object's name and a
    /// description (the entry's own, else the object's).
    pub fn entries(&self) -> Vec<Revocation> {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        self.spec
            .revocations
            .iter()
            .map(|r| {
                let what = r.value().unwrap_or("");
                let label = match r.description.as_ref().or(self.spec.description.as_ref()) {
                    Some(d) => format!("RenewRevocation {name} ({d}): {} {what}", r.kind),
                    None => format!("RenewRevocation {name}: {} {what}", r.kind),
                };
                Revocation {
                    description: Some(label),
                    ..r.clone()
                }
            })
            .collect()
    }
}

/// How the agent's view of the RenewRevocations stands.
pub use crate::k8s::source::SourceState;

/// What the agent knows of the RenewRevocations of its namespace: kept
/// current by [`watch`], read by every kubelet pass (no pass lists them).
#[derive(Debug, Default)]
pub struct RevocationCache {
    inner: std::sync::Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// Object name → its entries, as last listed or watched.
    objects: BTreeMap<String, Vec<Revocation>>,
    state: SourceState,
}

impl RevocationCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding it leaves plain data behind: still the best view.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every entry of every object.
    pub fn entries(&self) -> Vec<Revocation> {
        self.lock().objects.values().flatten().cloned().collect()
    }

    pub fn state(&self) -> SourceState {
        self.lock().state.clone()
    }

    /// Forgets the identity the view was watched with (it was renewed, or
    /// is gone); the entries stay until the next list.
    pub fn set_state(&self, state: SourceState) {
        self.lock().state = state;
    }

    fn replace(&self, objects: BTreeMap<String, Vec<Revocation>>) -> bool {
        let mut inner = self.lock();
        let changed = inner.objects != objects || inner.state != SourceState::Synced;
        inner.objects = objects;
        inner.state = SourceState::Synced;
        changed
    }

    fn apply(&self, name: String, entries: Option<Vec<Revocation>>) -> bool {
        let mut inner = self.lock();
        let before = inner.objects.get(&name).cloned();
        match entries {
            Some(e) => {
                inner.objects.insert(name, e.clone());
                before.as_ref() != Some(&e)
            }
            None => inner.objects.remove(&name).is_some(),
        }
    }

    /// Records a failure; whether the state changed.
    fn fail(&self, message: String, forbidden: bool) -> bool {
        let mut inner = self.lock();
        let state = SourceState::Failing { message, forbidden };
        let changed = inner.state != state;
        inner.state = state;
        changed
    }
}

/// Watches the RenewRevocations of `namespace` as `identity` (for messages:
/// `system:node:<name>`) with `client`, keeping `cache` current and waking
/// `wake` whenever the entries or the watch's state change. Runs until
/// dropped. One watch, re-established when the server ends it; no periodic
/// list.
pub async fn watch(
    client: kube::Client,
    namespace: String,
    identity: String,
    cache: Arc<RevocationCache>,
    wake: Arc<Notify>,
) {
    use futures_util::StreamExt;
    use kube::runtime::watcher;

    if cache.state() == SourceState::NoIdentity {
        cache.set_state(SourceState::Syncing);
    }
    let api = raw_api(client, &namespace);
    let mut changes =
        watch::changes(move || watcher(api.clone(), watcher::Config::default()).boxed()).boxed();
    while let Some(change) = changes.next().await {
        let changed = match change {
            Change::Listed { objects, recovered } => {
                if recovered {
                    info!(namespace = %namespace, "RenewRevocations can be read again");
                }
                cache.replace(objects.into_iter().filter_map(decode).collect())
            }
            Change::Applied(object) => match decode(object) {
                Some((name, entries)) => cache.apply(name, Some(entries)),
                None => false,
            },
            Change::Deleted(object) => match object.metadata.name {
                Some(name) => cache.apply(name, None),
                None => false,
            },
            Change::Failed {
                failure,
                retry_in,
                repeated,
            } => {
                let message = failure_message(&namespace, &identity, &failure);
                // Once per distinct error: a watch that fails for hours
                // says so once, not every minute.
                if !repeated {
                    error!(namespace = %namespace, retry_in_s = retry_in.as_secs(), "{message}");
                }
                cache.fail(message, failure.is_auth())
            }
        };
        if changed {
            wake.notify_one();
        }
    }
}

/// What a failed list or watch of the RenewRevocations means, with the fix.
pub fn failure_message(namespace: &str, identity: &str, failure: &ApiFailure) -> String {
    if failure.is_auth() {
        format!(
            "{identity} cannot read RenewRevocations in {namespace}: {failure}. \
             Grant it with the Role node-cert-agent:renewrevocations-reader and its \
             RoleBinding to the group system:nodes (manifests/base/rbac-renewrevocations.yaml); \
             check with `kubectl auth can-i list renewrevocations.certificates.microsoft.com \
             -n {namespace} --as {identity} --as-group system:nodes`"
        )
    } else {
        format!("cannot read RenewRevocations in {namespace}: {failure}")
    }
}

/// An object's name and entries; a malformed one is warned about and
/// skipped (`None`).
fn decode(object: DynamicObject) -> Option<(String, Vec<Revocation>)> {
    match RenewRevocation::try_from(object) {
        Ok(r) => Some((r.metadata.name.clone().unwrap_or_default(), r.entries())),
        Err(e) => {
            warn!("ignoring a malformed RenewRevocation: {e}");
            None
        }
    }
}

/// The RenewRevocations as raw objects, for the list and the daemon's
/// watch: each object is converted on its own, so one that does not decode
/// (written against another version of the CRD) cannot fail the whole list
/// or stall the watch, as a typed `Api<RenewRevocation>` would.
pub fn raw_api(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        namespace,
        &ApiResource::erase::<RenewRevocation>(&()),
    )
}

/// The entries of every RenewRevocation; malformed objects are warned about
/// and skipped.
pub async fn list_revocations(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<Revocation>, RenewRevocationError> {
    let list = raw_api(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let mut out = Vec::new();
    for object in list.items {
        match RenewRevocation::try_from(object) {
            Ok(revocation) => out.extend(revocation.entries()),
            Err(RenewRevocationError::Decode { object, source }) => {
                warn!(object = ?object, "ignoring a malformed RenewRevocation: {source}")
            }
            Err(other) => return Err(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use kube::core::CustomResourceExt;
    use serde_json::json;

    use super::*;
    use crate::time::rfc3339;

    fn facts(node: &str) -> CertFacts {
        CertFacts::example(node)
    }

    fn rev(kind: &str, field: &str, value: &str) -> Revocation {
        let json =
            format!(r#"{{"kind":"{kind}","{field}":"{value}","description":"incident 42"}}"#);
        serde_json::from_str(&json).unwrap()
    }

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_403_says_which_role_grants_the_read_in_one_line() {
        let failure = ApiFailure {
            kind: crate::k8s::failure::FailureKind::Forbidden,
            code: Some(403),
            message: "renewrevocations.certificates.microsoft.com is forbidden".into(),
            retry_after: None,
        };
        assert_eq!(
            failure_message("kube-system", "system:node:n1", &failure),
            "system:node:n1 cannot read RenewRevocations in kube-system: \
             renewrevocations.certificates.microsoft.com is forbidden (403). Grant it with the \
             Role node-cert-agent:renewrevocations-reader and its RoleBinding to the group \
             system:nodes (manifests/base/rbac-renewrevocations.yaml); check with `kubectl auth \
             can-i list renewrevocations.certificates.microsoft.com -n kube-system --as \
             system:node:n1 --as-group system:nodes`"
        );
        let down = ApiFailure {
            kind: crate::k8s::failure::FailureKind::Unreachable,
            code: None,
            message: "connection refused".into(),
            retry_after: None,
        };
        assert_eq!(
            failure_message("kube-system", "system:node:n1", &down),
            "cannot read RenewRevocations in kube-system: connection refused"
        );
    }

    #[test]
    fn revocation_resource_is_the_shipped_crd() {
        let r = ApiResource::erase::<RenewRevocation>(&());
        assert_eq!(
            (r.group.as_str(), r.version.as_str(), r.plural.as_str()),
            ("certificates.microsoft.com", "v1", "renewrevocations")
        );
        assert_eq!(r.kind, "RenewRevocation");
        assert_eq!(RenewRevocation::crd().spec.scope, "Namespaced");
    }

    /// The shipped CRD and the type can never drift: the manifest is what
    /// the type generates, compared as parsed values.
    #[test]
    fn the_shipped_crd_is_what_the_type_generates() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/base/crd-renewrevocation.yaml"
        );
        let shipped: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let generated = serde_json::to_value(RenewRevocation::crd()).unwrap();
        assert_eq!(
            shipped,
            generated,
            "manifests/base/crd-renewrevocation.yaml differs from RenewRevocation::crd(); the type generates:\n{}",
            serde_yaml::to_string(&RenewRevocation::crd()).unwrap()
        );
    }

    #[test]
    fn revocations_match_by_serial_group_dns_suffix_and_ip() {
        let f = facts("n1");
        assert!(rev("serialnumber", "serialNumber", "00:0a:1b")
            .matches(&f)
            .unwrap());
        assert!(!rev("serialnumber", "serialNumber", "0A1C")
            .matches(&f)
            .unwrap());
        assert!(rev("Group", "group", "system:nodes").matches(&f).unwrap());
        assert!(!rev("Group", "group", "system:masters").matches(&f).unwrap());
        assert!(rev("DNS", "dns", ".eu.example.com").matches(&f).unwrap());
        assert!(rev("DNS", "dns", "node1.eu.example.com")
            .matches(&f)
            .unwrap());
        assert!(
            !rev("DNS", "dns", "eu.example.com").matches(&f).unwrap(),
            "no leading dot: exact name only"
        );
        assert!(rev("IP", "ip", "10.0.0.7").matches(&f).unwrap());
        assert!(!rev("IP", "ip", "10.0.0.8").matches(&f).unwrap());
    }

    /// kube-controller-manager signs with `notBefore = now - 5 min`: a
    /// certificate counts as issued at its notBefore + 5 min.
    #[test]
    fn revocation_with_not_before_spares_certificates_issued_after_it() {
        let f = facts("n1");
        let signed = f.not_before + SIGNER_BACKDATE;
        assert_eq!(issued_at(&f), signed);
        let mut r = rev("Group", "group", "system:nodes");
        r.not_before = Some(rfc3339(signed + 1));
        assert!(r.matches(&f).unwrap(), "issued before the cutoff: revoked");
        r.not_before = Some(rfc3339(signed));
        assert!(!r.matches(&f).unwrap(), "issued at the cutoff: kept");
        r.not_before = Some(rfc3339(f.not_before + 1));
        assert!(
            !r.matches(&f).unwrap(),
            "a notBefore within the signer's backdate was signed after the cutoff: kept"
        );
    }

    /// The backdate case: a revocation of "everything issued before now",
    /// written when it was created, against the certificate a renewal got
    /// moments later from a signer that backdates by 5 minutes.
    #[test]
    fn a_revocation_of_everything_before_now_spares_the_replacement_signed_after_it() {
        let created = 1_700_000_000;
        let mut r = rev("Group", "group", "system:nodes");
        r.not_before = Some(rfc3339(created));
        let old = CertFacts {
            not_before: created - 86_400,
            not_after: created + 86_400,
            ..facts("n1")
        };
        assert!(
            r.matches(&old).unwrap(),
            "the certificate before it: revoked"
        );
        for signed in [created, created + 1, created + 60] {
            let replacement = CertFacts {
                not_before: signed - SIGNER_BACKDATE,
                not_after: signed + 86_400,
                ..facts("n1")
            };
            assert!(
                !r.matches(&replacement).unwrap(),
                "signed {}s after the revocation: kept",
                signed - created
            );
        }
    }

    #[test]
    fn listed_entries_are_labelled_with_the_object_and_its_description() {
        let rr = RenewRevocation::try_from(object(json!({
            "apiVersion": "nodecert.dev/v1alpha1",
            "kind": "RenewRevocation",
            "metadata": {"name": "incident-42"},
            "spec": {
                "description": "key leaked",
                "revocations": [
                    {"kind": "serialnumber", "serialNumber": "0A1B"},
                    {"kind": "Group", "group": "system:nodes", "description": "own"},
                    {"kind": "Color"},
                ],
            },
        })))
        .unwrap();
        let labels: Vec<String> = rr.entries().iter().map(Revocation::label).collect();
        assert_eq!(
            labels,
            [
                "RenewRevocation incident-42 (key leaked): serialnumber 0A1B",
                "RenewRevocation incident-42 (own): Group system:nodes",
                "RenewRevocation incident-42 (key leaked): Color ",
            ]
        );
        let bare = RenewRevocation::try_from(object(json!({
            "metadata": {"name": "b"},
            "spec": {"revocations": [{"kind": "IP", "ip": "10.0.0.7"}]},
        })))
        .unwrap();
        assert_eq!(bare.entries()[0].label(), "RenewRevocation b: IP 10.0.0.7");
    }

    #[test]
    fn a_malformed_object_is_an_error_naming_it() {
        for spec in [
            json!(null),
            json!({}),
            json!({"revocations": null}),
            json!({"revocations": [{"serialNumber": "0A"}]}),
            json!({"revocations": [{"kind": "IP", "ip": 7}]}),
            json!({"revocations": {"kind": "IP"}}),
        ] {
            let e = RenewRevocation::try_from(object(json!({
                "metadata": {"name": "bad"},
                "spec": spec,
            })))
            .unwrap_err();
            assert!(
                matches!(&e, RenewRevocationError::Decode { object: Some(n), .. } if n == "bad"),
                "{spec}: {e:?}"
            );
            assert!(e.to_string().starts_with("RenewRevocation bad: "), "{e}");
        }
        let e = RenewRevocation::try_from(object(json!({"metadata": {"name": "nospec"}})));
        assert!(e.is_err());
    }

    /// The fixtures (also the fuzz target's seeds), read as a listed object.
    fn fixture(name: &str) -> Result<RenewRevocation, RenewRevocationError> {
        let path = format!(
            "{}/tests/data/renewrevocation/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let object: DynamicObject = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        RenewRevocation::try_from(object)
    }

    #[test]
    fn fixtures_convert_as_a_listed_object_would() {
        let example = fixture("example.json").unwrap();
        let f = CertFacts {
            serial: "5F2A910C".into(),
            ..facts("n1")
        };
        let matched: Vec<bool> = example
            .entries()
            .iter()
            .map(|r| r.matches(&f).unwrap())
            .collect();
        assert_eq!(matched, [true, true, false, false]);

        let listed = fixture("listed-item.json").unwrap();
        assert_eq!(
            listed.entries()[0].label(),
            "RenewRevocation incident-42 (incident 42: key leaked): serialnumber 5F:2A:91:0C"
        );

        let newer = fixture("unknown-kind.json").unwrap();
        let errors: Vec<RevocationError> = newer
            .entries()
            .iter()
            .map(|r| r.matches(&facts("n1")).unwrap_err())
            .collect();
        assert_eq!(
            errors,
            [
                RevocationError::UnknownKind("cn".into()),
                RevocationError::BadIp("not-an-ip".into()),
                RevocationError::BadTime("yesterday".into()),
            ]
        );

        for (name, object) in [
            ("malformed-no-revocations.json", "empty"),
            ("malformed-wrong-type.json", "wrong-type"),
        ] {
            assert!(
                matches!(fixture(name), Err(RenewRevocationError::Decode { object: Some(o), .. }) if o == object),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_kinds_do_not_make_an_object_unreadable() {
        let rr = RenewRevocation::try_from(object(json!({
            "metadata": {"name": "newer"},
            "status": {"x": 1},
            "spec": {"future": true, "revocations": [{"kind": "CN", "cn": "x", "junk": 1}]},
        })))
        .unwrap();
        let entries = rr.entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].matches(&facts("n1")),
            Err(RevocationError::UnknownKind("cn".into()))
        );
    }
}
