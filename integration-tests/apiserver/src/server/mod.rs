//! [`ApiServer`](crate::ApiServer)'s methods, grouped by role, one
//! `impl ApiServer` block per module: `lifecycle` (start, address, CA,
//! settings), `identities` (tokens, client certificates, kubeconfigs,
//! anonymous auth), `access` (run-time grants), `fixtures` (seeding
//! objects), `inspect` (reading them and the requests back), `controllers`
//! (the CSR controllers' knobs and manual approval) and `faults` (injected
//! failures, down and up); and the object builders they share.
//!
//! Methods act on the shared state directly or through the crate's
//! internals; nothing else in the crate uses this module.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::writes::{new_uid, now_time};

mod access;
mod controllers;
mod faults;
mod fixtures;
mod identities;
mod inspect;
mod lifecycle;

/// New metadata: the name, a fresh uid and creationTimestamp.
fn obj_meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        uid: Some(new_uid()),
        creation_timestamp: Some(now_time()),
        ..Default::default()
    }
}

/// A Namespace as kube-apiserver stores a new one (Active, with its
/// `kubernetes.io/metadata.name` label).
fn namespace_json(name: &str) -> Value {
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: {
            let mut m = obj_meta(name);
            m.labels = Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                name.to_string(),
            )]));
            m
        },
        spec: Some(k8s_openapi::api::core::v1::NamespaceSpec {
            finalizers: Some(vec!["kubernetes".into()]),
        }),
        status: Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        }),
    };
    serde_json::to_value(ns).unwrap()
}
