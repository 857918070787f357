//! The two writes of the publisher, on the node's own Node, with the node's
//! own identity: a JSON merge patch of `nodes/<name>` (labels,
//! annotations) and a strategic merge patch of `nodes/<name>/status`
//! (conditions, merged by `type`); and the one read, of that Node, when
//! the publisher starts.
//!
//! [`NodeWriter`] is the boundary, so the publisher's loop is tested with a
//! recording fake; [`ApiNodeWriter`] is the real one, through a
//! `kube::Client` built by `k8s` from the node's current identity.
//! Boundary: two PATCH requests and one GET; a PATCH's answer is decoded by
//! kube and not used.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use crate::k8s::failure::ApiFailure;

/// How long one write may take before it is given up (and retried).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client with the node's identity at the moment of the write (it
/// changes when the client certificate is renewed); `None` = no identity
/// yet (before the bootstrap).
pub type NodeClientSource = Arc<dyn Fn() -> Option<kube::Client> + Send + Sync>;

/// Which of the two writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `nodes/<name>`: labels and annotations.
    Metadata,
    /// `nodes/<name>/status`: conditions.
    Status,
}

impl Part {
    pub fn path(self, node: &str) -> String {
        match self {
            Self::Metadata => format!("nodes/{node}"),
            Self::Status => format!("nodes/{node}/status"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("no node identity yet (no usable kubelet client certificate): the state is published once the node has one")]
    NoIdentity,
    /// `request` is the method and path, `PATCH nodes/n1/status`.
    #[error("{request}: {failure}")]
    Api {
        request: String,
        failure: ApiFailure,
    },
    #[error("{request}: the API server did not answer within {WRITE_TIMEOUT:?}")]
    Timeout { request: String },
}

impl WriteError {
    /// How long the server asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { failure, .. } => failure.retry_after,
            _ => None,
        }
    }
}

/// Writes a patch on the node's own Node, and reads it.
pub trait NodeWriter {
    fn patch(
        &self,
        node: &str,
        part: Part,
        patch: &Value,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    fn get(&self, node: &str) -> impl Future<Output = Result<Node, WriteError>> + Send;
}

/// The real writer.
#[derive(Clone)]
pub struct ApiNodeWriter {
    client: NodeClientSource,
}

impl ApiNodeWriter {
    pub fn new(client: NodeClientSource) -> Self {
        Self { client }
    }
}

impl NodeWriter for ApiNodeWriter {
    fn patch(
        &self,
        node: &str,
        part: Part,
        patch: &Value,
    ) -> impl Future<Output = Result<(), WriteError>> + Send {
        let client = (self.client)();
        let node = node.to_string();
        let patch = patch.clone();
        async move {
            let client = client.ok_or(WriteError::NoIdentity)?;
            let api: Api<Node> = Api::all(client);
            let params = PatchParams::default();
            let call = async {
                match part {
                    Part::Metadata => api.patch(&node, &params, &Patch::Merge(&patch)).await,
                    Part::Status => {
                        api.patch_status(&node, &params, &Patch::Strategic(&patch))
                            .await
                    }
                }
            };
            let request = format!("PATCH {}", part.path(&node));
            match tokio::time::timeout(WRITE_TIMEOUT, call).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(WriteError::Api {
                    request,
                    failure: ApiFailure::of(&e),
                }),
                Err(_) => Err(WriteError::Timeout { request }),
            }
        }
    }

    fn get(&self, node: &str) -> impl Future<Output = Result<Node, WriteError>> + Send {
        let client = (self.client)();
        let node = node.to_string();
        async move {
            let client = client.ok_or(WriteError::NoIdentity)?;
            let api: Api<Node> = Api::all(client);
            let request = format!("GET nodes/{node}");
            match tokio::time::timeout(WRITE_TIMEOUT, api.get(&node)).await {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) => Err(WriteError::Api {
                    request,
                    failure: ApiFailure::of(&e),
                }),
                Err(_) => Err(WriteError::Timeout { request }),
            }
        }
    }
}
