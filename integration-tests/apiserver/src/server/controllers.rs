//! kube-controller-manager's CSR controllers as tests drive them:
//! approval and denial by hand (`kubectl certificate approve`/`deny`),
//! deleting a CSR, and the knobs of `csrapproving` (on or off, deny the
//! next or every CSR) and of `csrsigning` (lifetime, backdating, a pause
//! per step, a separate kubelet client signer, wrong keys and subjects).
//! The controllers themselves run in `controller.rs`.

use std::time::Duration;

use crate::controller;
use crate::store::Kind;
use crate::ApiServer;

impl ApiServer {
    /// From now on, kubelet client certificates are signed by another CA
    /// than the cluster CA (given as PEM), which the server also trusts for
    /// client auth: a cluster with its own kubelet client signer.
    pub fn sign_client_certificates_with(&self, cert_pem: &str, key_pem: &str) {
        let ca = node_cert_agent::x509::testpki::TestCa {
            cert: openssl::x509::X509::from_pem(cert_pem.as_bytes()).unwrap(),
            key: openssl::pkey::PKey::private_key_from_pem(key_pem.as_bytes()).unwrap(),
        };
        self.shared.ca.set_client_signer(ca);
    }

    /// Approves CSR `name` as `kubectl certificate approve` does (reason
    /// `KubectlApprove`); the signer then signs or fails it. Returns false
    /// when it does not exist or is already approved/denied.
    pub fn approve(&self, name: &str) -> bool {
        let ok = controller::set_decision(
            &mut self.state(),
            name,
            true,
            "KubectlApprove",
            "This CSR was approved by kubectl certificate approve.",
        );
        self.shared.controller.notify_one();
        ok
    }

    /// Denies CSR `name` with `reason` and `message`.
    pub fn deny(&self, name: &str, reason: &str, message: &str) -> bool {
        controller::set_decision(&mut self.state(), name, false, reason, message)
    }

    /// Deletes CSR `name` (as the CSR cleaner or an admin would).
    pub fn delete_csr(&self, name: &str) -> bool {
        self.state().store.delete(Kind::Csr, "", name).is_some()
    }

    /// Test-only knob: runs or stops the `csrapproving` controller (running
    /// by default; what it approves depends on the [`Profile`](crate::Profile)'s bindings).
    /// Stopped: CSRs stay pending until [`ApiServer::approve`]. To model a
    /// cluster with its own approver, prefer [`Profile::OwnApprover`](crate::Profile::OwnApprover).
    pub fn set_auto_approve(&self, on: bool) {
        self.state().csr.auto_approve = on;
    }

    /// The next CSR created is denied with `reason` and `message`.
    pub fn deny_next_csr(&self, reason: &str, message: &str) {
        self.state()
            .csr
            .deny_next
            .push_back((reason.to_string(), message.to_string()));
    }

    /// Every CSR created from now on is denied (`None` to stop).
    pub fn deny_all_csrs(&self, reason_message: Option<(&str, &str)>) {
        self.state().csr.deny_all = reason_message.map(|(r, m)| (r.to_string(), m.to_string()));
    }

    /// The signer's maximum lifetime (`--cluster-signing-duration`, default
    /// one year). Issued: min(expirationSeconds, this), at least 10 min when
    /// expirationSeconds is set and this is longer. Tests may go below 10
    /// min.
    pub fn set_cert_lifetime(&self, d: Duration) {
        self.state().csr.max_lifetime = d;
    }

    /// The signer's NotBefore backdating (5 min in kube-controller-manager).
    pub fn set_backdate(&self, d: Duration) {
        self.state().csr.backdate = d;
    }

    /// A pause before each controller step (approval, signing).
    pub fn set_controller_delay(&self, d: Duration) {
        self.state().csr.controller_delay = d;
    }

    /// The next `n` certificates are issued for a fresh key instead of the
    /// CSR's (`u32::MAX`: all).
    pub fn issue_wrong_key(&self, n: u32) {
        self.state().csr.wrong_key = n;
    }

    /// The next `n` certificates get subject
    /// `CN=system:node:wrong-subject, O=system:nodes` (`u32::MAX`: all).
    pub fn issue_wrong_subject(&self, n: u32) {
        self.state().csr.wrong_subject = n;
    }
}
