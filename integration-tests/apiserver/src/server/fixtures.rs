//! Seeding and changing objects as tests set them up: Nodes (one, many
//! under one lock, changed in place, a condition set), Secrets, Pods,
//! Namespaces and RenewRevocations. These are shortcuts past the filter
//! chain; the custom resource's go through the API's own checks (the write
//! pipeline's second half for a create, its validation for a spec
//! change). Reading objects back is `inspect.rs`'s.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use serde_json::{json, Value};

use super::{namespace_json, obj_meta};
use crate::auth::UserInfo;
use crate::crd::{self, CRD};
use crate::status::ApiError;
use crate::store::Kind;
use crate::writes::{new_uid, now_time};
use crate::{custom, defs, resources, ApiServer};

/// The message of an error response.
fn message(e: &ApiError) -> String {
    e.status_value()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Who a fixture that goes through the API's checks writes as: the
/// cluster administrator of [`ApiServer::admin_kubeconfig`], as `kubectl
/// apply` with it would.
fn fixture_user() -> UserInfo {
    UserInfo {
        name: "kubernetes-admin".into(),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

impl ApiServer {
    /// Adds a Node `name` (with a uid, hostname label, Ready condition).
    pub fn add_node(&self, name: &str) -> Node {
        let mut meta = obj_meta(name);
        meta.labels = Some(BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.to_string()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
        ]));
        let node = Node {
            metadata: meta,
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: Some("KubeletReady".into()),
                    message: Some("kubelet is posting ready status".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        let v = self
            .state()
            .store
            .create(Kind::Node, serde_json::to_value(&node).unwrap());
        serde_json::from_value(v).unwrap()
    }

    /// Test-only: stores every Node of `nodes` under one lock, as that many
    /// creates would (each its own resourceVersion and ADDED event; a uid and
    /// creationTimestamp when missing): 5,000 Nodes in milliseconds, where
    /// 5,000 POSTs would take seconds. Returns how many were stored. Panics
    /// on a Node without a name or one that exists.
    pub fn seed_nodes(&self, nodes: impl IntoIterator<Item = Node>) -> usize {
        let mut st = self.state();
        let mut n = 0;
        for mut node in nodes {
            let name = node
                .metadata
                .name
                .clone()
                .expect("a seeded Node has a name");
            assert!(
                st.store.get(Kind::Node, "", &name).is_none(),
                "seed_nodes: Node {name} exists"
            );
            let meta = obj_meta(&name);
            node.metadata.uid.get_or_insert(meta.uid.unwrap());
            node.metadata
                .creation_timestamp
                .get_or_insert(meta.creation_timestamp.unwrap());
            node.metadata.resource_version = None;
            st.store
                .create(Kind::Node, serde_json::to_value(&node).unwrap());
            n += 1;
        }
        n
    }

    /// Test-only: changes the stored Node `name` with `change`, as a write
    /// through the API would be stored (a new resourceVersion, MODIFIED to
    /// watchers). Panics when there is no such Node.
    pub fn update_node(&self, name: &str, change: impl FnOnce(&mut Node)) {
        let mut st = self.state();
        let stored = st
            .store
            .get(Kind::Node, "", name)
            .cloned()
            .unwrap_or_else(|| panic!("update_node: no Node {name}"));
        let mut node: Node = serde_json::from_value(stored).unwrap();
        change(&mut node);
        node.metadata.name = Some(name.to_string());
        st.store
            .update(Kind::Node, serde_json::to_value(&node).unwrap());
    }

    /// Creates or replaces the Opaque Secret `namespace/name` with `data`
    /// (as `kubectl apply` would store it). The namespace must exist.
    pub fn set_secret(&self, namespace: &str, name: &str, data: &BTreeMap<String, Vec<u8>>) {
        let mut st = self.state();
        assert!(
            st.store.get(Kind::Namespace, "", namespace).is_some(),
            "set_secret: no namespace {namespace}"
        );
        let existing = st.store.get(Kind::Secret, namespace, name).cloned();
        let mut meta = obj_meta(name);
        meta.namespace = Some(namespace.to_string());
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: meta,
            type_: Some("Opaque".into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        };
        let mut v = serde_json::to_value(&secret).unwrap();
        match existing {
            Some(old) => {
                v["metadata"]["uid"] = old["metadata"]["uid"].clone();
                v["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                st.store.update(Kind::Secret, v);
            }
            None => {
                st.store.create(Kind::Secret, v);
            }
        }
    }

    /// Test-only: creates or replaces Pod `pod` (by its namespace and name;
    /// the namespace must exist) in storage, spec and status as given, as
    /// the scheduler's binding and kubelet's status updates would have left
    /// it: for example a container waiting in `ImagePullBackOff`. A new
    /// resourceVersion and an ADDED or MODIFIED event to watchers; a uid
    /// and creationTimestamp are added when missing (kept on a
    /// replacement). Returns the stored Pod.
    pub fn set_pod(&self, pod: k8s_openapi::api::core::v1::Pod) -> k8s_openapi::api::core::v1::Pod {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(!name.is_empty(), "set_pod: the pod has no name");
        let mut st = self.state();
        assert!(
            st.store.get(Kind::Namespace, "", &namespace).is_some(),
            "set_pod: no namespace {namespace:?}"
        );
        let existing = st.store.get(Kind::Pod, &namespace, &name).cloned();
        let mut v = serde_json::to_value(&pod).unwrap();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let stored = match existing {
            Some(old) => {
                v["metadata"]["uid"] = old["metadata"]["uid"].clone();
                v["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                st.store.update(Kind::Pod, v)
            }
            None => {
                let fresh = obj_meta(&name);
                if v["metadata"].get("uid").is_none() {
                    v["metadata"]["uid"] = serde_json::to_value(fresh.uid).unwrap();
                }
                if v["metadata"].get("creationTimestamp").is_none() {
                    v["metadata"]["creationTimestamp"] =
                        serde_json::to_value(fresh.creation_timestamp).unwrap();
                }
                st.store.create(Kind::Pod, v)
            }
        };
        serde_json::from_value(stored).unwrap()
    }

    /// Sets `condition` on Node `name` directly in storage (replacing the
    /// condition of its type, or appending it), as another owner such as
    /// node-problem-detector would have written it. Panics when there is no
    /// such Node.
    pub fn set_node_condition(&self, name: &str, condition: NodeCondition) {
        let mut st = self.state();
        let mut v = st
            .store
            .get(Kind::Node, "", name)
            .cloned()
            .unwrap_or_else(|| panic!("ApiServer::set_node_condition: no Node {name:?}"));
        let c = serde_json::to_value(&condition).unwrap();
        let list = v["status"]["conditions"].as_array_mut();
        match list {
            Some(list) => match list.iter_mut().find(|x| x["type"] == c["type"]) {
                Some(x) => *x = c,
                None => list.push(c),
            },
            None => v["status"]["conditions"] = json!([c]),
        }
        st.store.update(Kind::Node, v);
    }

    /// Adds a Namespace.
    pub fn add_namespace(&self, name: &str) {
        self.state()
            .store
            .create(Kind::Namespace, namespace_json(name));
    }

    /// Creates a RenewRevocation in `namespace` from JSON (`metadata.name`
    /// and `spec`; apiVersion/kind optional), through the same pruning,
    /// NamespaceLifecycle and schema validation as a POST. Returns the stored
    /// object, or the error message (422 `...is invalid: ...`, 404 for a
    /// missing namespace, 409 for a taken name).
    pub fn add_revocation(&self, namespace: &str, mut obj: Value) -> Result<Value, String> {
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        obj["metadata"]["namespace"] = json!(namespace);
        obj["metadata"]["uid"] = json!(new_uid());
        obj["metadata"]["creationTimestamp"] = serde_json::to_value(now_time()).unwrap();
        crd::prune_metadata(&mut obj);
        CRD.prune(&mut obj);
        let def = defs::lookup(CRD.group, CRD.version, CRD.plural)
            .expect("the custom resource is served");
        let mut st = self.state();
        resources::create_decoded(&mut st, def, &fixture_user(), obj, false)
            .map(|(stored, _)| stored)
            .map_err(|e| message(&e))
    }

    /// Replaces the spec of RenewRevocation `namespace/name` (validated;
    /// MODIFIED event, generation bumped when it changed).
    pub fn update_revocation_spec(
        &self,
        namespace: &str,
        name: &str,
        spec: Value,
    ) -> Result<Value, String> {
        custom::replace_spec(&mut self.state(), namespace, name, spec).map_err(|e| message(&e))
    }

    /// Deletes RenewRevocation `namespace/name` (DELETED event). Returns
    /// whether it existed.
    pub fn delete_revocation(&self, namespace: &str, name: &str) -> bool {
        self.state()
            .store
            .delete(Kind::Revocation, namespace, name)
            .is_some()
    }
}
