//! The served resources: their definitions ([`ResourceDef`]: group,
//! version, names, scope, verbs, field labels; the custom resource's from
//! the shipped CRD), their wire form ([`present`], with the field renames
//! between the core/v1 and `events.k8s.io/v1` Events that share one
//! storage) and the values of their field labels ([`fields`]).
//!
//! It describes; it handles nothing: it must not use the handlers, the
//! write pipeline or the kinds' modules (they all use it).
//!
//! Upstream files: `pkg/apis/core/v1/conversion.go` (field labels),
//! `pkg/registry/core/pod/strategy.go` (`ToSelectableFields`),
//! `pkg/apis/events/v1/conversion.go` (the Event renames).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

use crate::crd::CRD;
use crate::store::Kind;

/// One served resource.
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub kind: Kind,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind_name: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub field_labels: &'static [&'static str],
    /// Built-in types: list items carry no apiVersion/kind on the wire.
    pub builtin: bool,
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The Pod field labels of v1 (`pkg/apis/core/v1/conversion.go`), plus
/// `spec.host`, which the conversion turns into `spec.nodeName` for old
/// clients.
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
    "spec.host",
];

const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

static BUILTIN: &[ResourceDef] = &[
    ResourceDef {
        kind: Kind::Csr,
        group: "certificates.k8s.io",
        version: "v1",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        kind_name: "CertificateSigningRequest",
        namespaced: false,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["csr"],
        categories: &[],
        field_labels: &["metadata.name", "spec.signerName"],
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Node,
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind_name: "Node",
        namespaced: false,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["no"],
        categories: &[],
        field_labels: &["metadata.name", "spec.unschedulable"],
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Namespace,
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind_name: "Namespace",
        namespaced: false,
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        short_names: &["ns"],
        categories: &[],
        field_labels: &["metadata.name", "status.phase"],
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Event,
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind_name: "Event",
        namespaced: true,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["ev"],
        categories: &[],
        field_labels: EVENT_FIELDS,
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Event,
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind_name: "Event",
        namespaced: true,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["ev"],
        categories: &[],
        field_labels: EVENT_FIELDS,
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Secret,
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind_name: "Secret",
        namespaced: true,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &[],
        categories: &[],
        field_labels: &["metadata.name", "metadata.namespace", "type"],
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Pod,
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind_name: "Pod",
        namespaced: true,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["po"],
        categories: &["all"],
        field_labels: POD_FIELDS,
        builtin: true,
    },
];

/// Every served resource: the built-in ones and the shipped CRD's.
pub(crate) static DEFS: LazyLock<Vec<ResourceDef>> = LazyLock::new(|| {
    let mut defs = BUILTIN.to_vec();
    defs.push(ResourceDef {
        kind: Kind::Revocation,
        group: CRD.group,
        version: CRD.version,
        plural: CRD.plural,
        singular: CRD.singular,
        kind_name: CRD.kind,
        namespaced: CRD.namespaced,
        // What apiextensions-apiserver reports for a CRD without
        // subresources.
        verbs: &[
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "create",
            "update",
            "watch",
        ],
        short_names: CRD.short_names,
        categories: CRD.categories,
        field_labels: &["metadata.name", "metadata.namespace"],
        builtin: false,
    });
    defs
});

pub(crate) fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    DEFS.iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// The wire form of a stored object for `def`'s API.
pub(crate) fn present(def: &ResourceDef, stored: &Value, in_list: bool) -> Value {
    let mut v = if def.kind == Kind::Event && def.group == "events.k8s.io" {
        core_to_events(stored)
    } else {
        stored.clone()
    };
    if let Some(o) = v.as_object_mut() {
        if in_list && def.builtin {
            o.remove("apiVersion");
            o.remove("kind");
        } else {
            o.insert("apiVersion".into(), Value::String(def.api_version()));
            o.insert("kind".into(), Value::String(def.kind_name.into()));
        }
    }
    v
}

pub(crate) fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

/// Field-selector values of an object (stored form).
pub(crate) fn fields(def: &ResourceDef, v: &Value) -> BTreeMap<&'static str, String> {
    let mut f = BTreeMap::new();
    let s = |p: &[&str]| get_str(v, p).unwrap_or("").to_string();
    f.insert("metadata.name", s(&["metadata", "name"]));
    f.insert("metadata.namespace", s(&["metadata", "namespace"]));
    match def.kind {
        Kind::Csr => {
            f.insert("spec.signerName", s(&["spec", "signerName"]));
        }
        Kind::Node => {
            let u = v
                .get("spec")
                .and_then(|s| s.get("unschedulable"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            f.insert("spec.unschedulable", u.to_string());
        }
        Kind::Namespace => {
            f.insert("status.phase", s(&["status", "phase"]));
        }
        Kind::Event => {
            for (label, field) in [
                ("involvedObject.kind", "kind"),
                ("involvedObject.namespace", "namespace"),
                ("involvedObject.name", "name"),
                ("involvedObject.uid", "uid"),
                ("involvedObject.apiVersion", "apiVersion"),
                ("involvedObject.resourceVersion", "resourceVersion"),
                ("involvedObject.fieldPath", "fieldPath"),
            ] {
                f.insert(label, s(&["involvedObject", field]));
            }
            f.insert("reason", s(&["reason"]));
            f.insert("reportingComponent", s(&["reportingComponent"]));
            f.insert("source", s(&["source", "component"]));
            f.insert("type", s(&["type"]));
        }
        Kind::Secret => {
            f.insert("type", s(&["type"]));
        }
        Kind::Pod => {
            // `ToSelectableFields` (pkg/registry/core/pod/strategy.go).
            let node = s(&["spec", "nodeName"]);
            f.insert("spec.host", node.clone());
            f.insert("spec.nodeName", node);
            f.insert("spec.restartPolicy", s(&["spec", "restartPolicy"]));
            f.insert("spec.schedulerName", s(&["spec", "schedulerName"]));
            f.insert(
                "spec.serviceAccountName",
                s(&["spec", "serviceAccountName"]),
            );
            let host_network = v
                .get("spec")
                .and_then(|s| s.get("hostNetwork"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            f.insert("spec.hostNetwork", host_network.to_string());
            f.insert("status.phase", s(&["status", "phase"]));
            // The first of `podIPs` (v1's `podIP` is the same address).
            let ip = v
                .get("status")
                .and_then(|s| s.get("podIPs"))
                .and_then(|ips| ips.get(0))
                .and_then(|ip| ip.get("ip"))
                .and_then(Value::as_str)
                .map_or_else(|| s(&["status", "podIP"]), str::to_string);
            f.insert("status.podIP", ip);
            // Accepted as a label, but not a selectable field: it matches
            // as the empty string, as upstream's does.
            f.insert("status.podIPs", String::new());
            f.insert(
                "status.nominatedNodeName",
                s(&["status", "nominatedNodeName"]),
            );
        }
        Kind::Revocation => {}
    }
    f
}

const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// events.k8s.io/v1 → core/v1 field names.
pub(crate) fn events_to_core(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(o) = out.as_object_mut() {
        for (from, to) in EVENT_RENAMES {
            if let Some(x) = o.remove(*from) {
                o.insert((*to).into(), x);
            }
        }
    }
    out
}

/// core/v1 → events.k8s.io/v1 field names.
pub(crate) fn core_to_events(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(o) = out.as_object_mut() {
        for (to, from) in EVENT_RENAMES {
            if let Some(x) = o.remove(*from) {
                o.insert((*to).into(), x);
            }
        }
    }
    out
}
