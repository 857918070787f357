//! What tests read back: stored Nodes, RenewRevocations, CSRs and Events,
//! the recorded requests (and the Node writes among them), and the global
//! resourceVersion. It changes nothing but the request record
//! ([`ApiServer::clear_requests`]).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use crate::controller;
use crate::store::Kind;
use crate::{ApiServer, RequestRecord, StoredEvent};

impl ApiServer {
    /// The stored Node `name`, if any.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.state()
            .store
            .get(Kind::Node, "", name)
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    }

    /// The stored RenewRevocations of every namespace.
    pub fn revocations(&self) -> Vec<Value> {
        self.state().store.list(Kind::Revocation).cloned().collect()
    }

    /// CSR `name`.
    pub fn csr(&self, name: &str) -> Option<CertificateSigningRequest> {
        controller::load(&self.state(), name)
    }

    /// Every CSR, by name.
    pub fn csrs(&self) -> Vec<CertificateSigningRequest> {
        self.state()
            .store
            .list(Kind::Csr)
            .map(|v| serde_json::from_value(v.clone()).unwrap())
            .collect()
    }

    /// Every stored Event.
    pub fn events(&self) -> Vec<StoredEvent> {
        self.state()
            .store
            .list(Kind::Event)
            .map(|v| StoredEvent {
                event: serde_json::from_value(v.clone()).unwrap(),
                raw: v.clone(),
            })
            .collect()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// The write requests (update, patch, delete) made so far on
    /// `nodes/<name>` or `nodes/<name>/status`, whatever their answer: what
    /// an idle agent must never make. Counted from the recorded requests
    /// (see [`ApiServer::clear_requests`]); a create names no Node in its
    /// URL and is not counted.
    pub fn node_writes(&self, name: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| {
                r.resource == "nodes"
                    && r.name == name
                    && matches!(r.verb.as_str(), "update" | "patch" | "delete")
            })
            .count()
    }

    /// The current global resourceVersion (etcd revision).
    pub fn resource_version(&self) -> u64 {
        self.state().store.rv
    }
}
