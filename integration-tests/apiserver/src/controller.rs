//! kube-controller-manager's CSR controllers: `csrapproving` (auto-approval
//! after a SubjectAccessReview) and `csrsigning` (the built-in signers), plus
//! the test's deny knobs. The decisions are `csr.rs`'s and the signing
//! `ca.rs`'s; this module runs them on the stored CSRs. It must not use the
//! request pipeline (`handler.rs`, `resources.rs`): the controllers see
//! only storage, as kube-controller-manager sees only the API.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;

use crate::ca::{parse_csr, IssueDeviation};
use crate::csr::{auto_approval, has_condition, signer_check, signing_duration};
use crate::store::{meta_str, Kind};
use crate::writes::now_time;
use crate::{Shared, State, Verdict};

pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        // Wake on a change, and resync every second like an informer would.
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.controller.notified()).await;
        let delay = shared.state.lock().unwrap().csr.controller_delay;
        tokio::time::sleep(delay).await;
        let approved_any = approve_pass(&mut shared.state.lock().unwrap());
        if approved_any {
            tokio::time::sleep(delay).await;
        }
        sign_pass(&shared, &mut shared.state.lock().unwrap());
    }
}

fn now() -> Time {
    now_time()
}

fn add_condition(csr: &mut CertificateSigningRequest, typ: &str, reason: &str, message: &str) {
    let status = csr
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: typ.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_update_time: Some(now()),
            last_transition_time: Some(now()),
        });
}

pub(crate) fn load(state: &State, name: &str) -> Option<CertificateSigningRequest> {
    state
        .store
        .get(Kind::Csr, "", name)
        .map(|v| serde_json::from_value(v.clone()).unwrap())
}

pub(crate) fn save(state: &mut State, csr: &CertificateSigningRequest) {
    state
        .store
        .update(Kind::Csr, serde_json::to_value(csr).unwrap());
}

/// Adds `Approved` (or `Denied`) to a pending CSR. Returns false when it is
/// not pending.
pub(crate) fn set_decision(
    state: &mut State,
    name: &str,
    approve: bool,
    reason: &str,
    message: &str,
) -> bool {
    let Some(mut csr) = load(state, name) else {
        return false;
    };
    if has_condition(&csr, "Approved") || has_condition(&csr, "Denied") {
        return false;
    }
    add_condition(
        &mut csr,
        if approve { "Approved" } else { "Denied" },
        reason,
        message,
    );
    save(state, &csr);
    true
}

fn approve_pass(state: &mut State) -> bool {
    let names: Vec<String> = state
        .store
        .list(Kind::Csr)
        .map(|v| meta_str(v, "name").to_string())
        .collect();
    let mut changed = false;
    for name in names {
        let Some(csr) = load(state, &name) else {
            continue;
        };
        let cert_set = csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some_and(|c| !c.0.is_empty());
        if cert_set || has_condition(&csr, "Approved") || has_condition(&csr, "Denied") {
            state.verdicts.remove(&name);
            continue;
        }
        if let Some(Verdict::Deny(reason, message)) = state.verdicts.remove(&name) {
            changed |= set_decision(state, &name, false, &reason, &message);
            continue;
        }
        if !state.csr.auto_approve {
            continue;
        }
        let Ok(parsed) = parse_csr(&csr.spec.request.0) else {
            continue;
        };
        if let Some(msg) = auto_approval(&csr, &parsed, &state.rbac) {
            changed |= set_decision(state, &name, true, "AutoApproved", msg);
        }
    }
    changed
}

fn take(n: &mut u32) -> bool {
    if *n == 0 {
        return false;
    }
    if *n != u32::MAX {
        *n -= 1;
    }
    true
}

fn sign_pass(shared: &Shared, state: &mut State) {
    let names: Vec<String> = state
        .store
        .list(Kind::Csr)
        .map(|v| meta_str(v, "name").to_string())
        .collect();
    for name in names {
        let Some(mut csr) = load(state, &name) else {
            continue;
        };
        let cert_set = csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some_and(|c| !c.0.is_empty());
        if !has_condition(&csr, "Approved") || has_condition(&csr, "Failed") || cert_set {
            continue;
        }
        let Ok(parsed) = parse_csr(&csr.spec.request.0) else {
            continue;
        };
        let usages = csr.spec.usages.clone().unwrap_or_default();
        match signer_check(&csr.spec.signer_name, &parsed, &usages) {
            Ok(false) => continue,
            Err(msg) => {
                add_condition(&mut csr, "Failed", "SignerValidationFailure", &msg);
                save(state, &csr);
                continue;
            }
            Ok(true) => {}
        }
        let deviation = if take(&mut state.csr.wrong_key) {
            IssueDeviation::WrongKey
        } else if take(&mut state.csr.wrong_subject) {
            IssueDeviation::WrongSubject
        } else {
            IssueDeviation::None
        };
        let ttl = signing_duration(state.csr.max_lifetime, csr.spec.expiration_seconds);
        match shared
            .ca
            .sign(&parsed, &usages, ttl, state.csr.backdate, deviation)
        {
            Ok(cert) => {
                csr.status
                    .get_or_insert_with(CertificateSigningRequestStatus::default)
                    .certificate = Some(ByteString(cert.to_pem().unwrap()));
                save(state, &csr);
            }
            Err(e) => {
                // The real controller retries with backoff and logs; the CSR
                // stays approved without a certificate.
                eprintln!("test apiserver: signing {name} failed: {e}");
            }
        }
    }
}
