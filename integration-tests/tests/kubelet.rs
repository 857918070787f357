//! Kubelet certificate lifecycle, end to end: the agent (pod mode, node root
//! under --host-root) against a real node (systemd, D-Bus, a stand-in
//! `kubelet.service`) and the Kubernetes API test server (CSR API with the
//! real validation, auth, approval and signing rules).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::process::Command;
use std::time::{Duration, SystemTime};

use integration_tests::agent::{agent_binary, render_tail, PodModeAgent};
use integration_tests::kubelet_node::{
    chains_to, csr_requesters, serial, subject, KubeletFixture, CLIENT_LINK, PKI, TOKEN_ID,
    TOKEN_SECRET,
};
use integration_tests::wait_until;
use openssl::x509::X509;
use serde_json::json;

/// The agent's log without the revocation watch's retry lines.
fn log_tail(agent: &PodModeAgent<'_>) -> String {
    let logs: Vec<_> = agent
        .logs()
        .into_iter()
        .filter(|e| {
            !e.message.contains("RenewRevocation watch")
                && !e.message.starts_with("failed with error")
        })
        .collect();
    render_tail(&logs, 40)
}

#[test]
fn fresh_bootstrap_from_a_bootstrap_token_lands_in_the_node_and_restarts_kubelet_once() {
    let fx = KubeletFixture::new("kb-bootstrap");
    let kubelet_before = fx.kubelet_pid();
    let agent = fx.start_agent("");
    let cert = fx.wait_for_client_cert(&agent, "the bootstrapped client certificate", |_| true);

    assert_eq!(subject(&cert), "O=system:nodes, CN=system:node:n1");
    assert!(
        chains_to(&cert, &fx.server.cluster_ca_pem()),
        "the certificate is not signed by the cluster CA"
    );
    assert_eq!(
        csr_requesters(&fx.server),
        vec![format!("system:bootstrap:{TOKEN_ID}")]
    );
    // Kubelet's layout: a relative link to a timestamped 0600 file in the node's pki dir.
    let target = fx.node.read_link(CLIENT_LINK).unwrap();
    assert!(
        target.starts_with("kubelet-client-20") && target.ends_with(".pem"),
        "{target}"
    );
    let mode = fx
        .node
        .exec_ok(&["stat", "-c", "%a", &format!("{PKI}/{target}")]);
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "600");
    // The configured unit was restarted exactly once.
    wait_until(Duration::from_secs(10), "kubelet restart", || {
        fx.kubelet_pid() != kubelet_before
    });
    let after = fx.kubelet_pid();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        fx.kubelet_pid(),
        after,
        "kubelet was restarted more than once"
    );
    let restarts = agent
        .logs()
        .iter()
        .filter(|e| e.message.contains("so it uses the new certificate"))
        .count();
    assert_eq!(restarts, 1, "{}", render_tail(&agent.logs(), 30));
}

#[test]
fn renewal_happens_at_the_nodes_fraction_of_a_short_lifetime_with_the_nodes_own_identity() {
    let fx = KubeletFixture::new("kb-renew");
    fx.server.set_cert_lifetime(Duration::from_secs(30));
    // No backdating, so the fraction is measured over the real 30 s lifetime.
    fx.server.set_backdate(Duration::ZERO);
    let agent = fx.start_agent("");
    let first = fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    let first_serial = serial(&first);
    let second = fx.wait_for_client_cert(&agent, "the renewed certificate", |c| {
        serial(c) != first_serial
    });
    let renewed_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // notBefore/notAfter of the first certificate, as Unix seconds.
    let epoch = openssl::asn1::Asn1Time::from_unix(0).unwrap();
    let secs = |t: &openssl::asn1::Asn1TimeRef| {
        let d = epoch.diff(t).unwrap();
        i64::from(d.days) * 86_400 + i64::from(d.secs)
    };
    let (nb, na) = (secs(first.not_before()), secs(first.not_after()));
    let lifetime = na - nb;
    let earliest = nb + lifetime * 70 / 100;
    let latest = nb + lifetime * 80 / 100;
    assert!(
        renewed_at >= earliest && renewed_at <= latest + 5,
        "renewed at {renewed_at}, expected within [{earliest}, {latest}] (+5 s for the CSR round trip)"
    );
    assert_eq!(subject(&second), "O=system:nodes, CN=system:node:n1");
    let requesters = csr_requesters(&fx.server);
    assert_eq!(requesters.len(), 2, "{requesters:?}");
    assert_eq!(
        requesters[1], "system:node:n1",
        "renewal must use the current client certificate"
    );
}

#[test]
fn expired_client_certificate_is_rebootstrapped_with_the_bootstrap_token() {
    let fx = KubeletFixture::new("kb-expired");
    let now = SystemTime::now();
    let (cert, key) = fx.server.issue_client_cert(
        "system:node:n1",
        &["system:nodes"],
        now - Duration::from_secs(7200),
        now - Duration::from_secs(60),
    );
    fx.node.write_file(
        &format!("{PKI}/kubelet-client-2020-01-01-00-00-00.pem"),
        format!("{cert}{key}").as_bytes(),
        0o600,
    );
    fx.node.exec_ok(&[
        "ln",
        "-s",
        "kubelet-client-2020-01-01-00-00-00.pem",
        CLIENT_LINK,
    ]);
    let old_serial = serial(&fx.client_cert().unwrap());
    let agent = fx.start_agent("");
    let new = fx.wait_for_client_cert(&agent, "a re-bootstrapped certificate", |c| {
        serial(c) != old_serial
    });
    assert!(chains_to(&new, &fx.server.cluster_ca_pem()));
    assert_eq!(
        csr_requesters(&fx.server),
        vec![format!("system:bootstrap:{TOKEN_ID}")]
    );
    assert!(
        agent
            .logs()
            .iter()
            .any(|e| e.message.contains("has expired")),
        "{}",
        render_tail(&agent.logs(), 30)
    );
}

#[test]
fn api_outage_keeps_the_old_certificate_and_the_agent_recovers_by_itself() {
    let fx = KubeletFixture::new("kb-outage");
    fx.server.set_cert_lifetime(Duration::from_secs(20));
    fx.server.set_backdate(Duration::ZERO);
    let agent = fx.start_agent("");
    let first = fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    let first_serial = serial(&first);
    let first_target = fx.node.read_link(CLIENT_LINK).unwrap();
    fx.server.down();
    // Past the renewal deadline (at most 80 % of 20 s) with the API down.
    wait_until(Duration::from_secs(40), "a failed renewal attempt", || {
        agent
            .logs()
            .iter()
            .any(|e| e.error && e.message.contains("kubelet certificate pass failed"))
    });
    assert_eq!(
        fx.node.read_link(CLIENT_LINK).unwrap(),
        first_target,
        "the old certificate must stay in place"
    );
    assert_eq!(serial(&fx.client_cert().unwrap()), first_serial);
    fx.server.up();
    let second = fx.wait_for_client_cert(&agent, "renewal after the API returned", |c| {
        serial(c) != first_serial
    });
    assert!(chains_to(&second, &fx.server.cluster_ca_pem()));
}

#[test]
fn denied_csr_and_a_wrong_certificate_are_rejected_and_never_installed() {
    let fx = KubeletFixture::new("kb-denied");
    fx.server
        .deny_all_csrs(Some(("PolicyViolation", "node n1 is quarantined")));
    let agent = fx.start_agent("");
    wait_until(
        Duration::from_secs(30),
        "the denial in the agent's log",
        || {
            agent.logs().iter().any(|e| {
                e.error
                    && e.message.contains("PolicyViolation")
                    && e.message.contains("node n1 is quarantined")
            })
        },
    );
    assert!(
        fx.client_cert().is_none(),
        "a denied CSR installed something"
    );

    // Next: the signer issues a certificate for a different key.
    fx.server.deny_all_csrs(None);
    fx.server.issue_wrong_key(1);
    wait_until(Duration::from_secs(60), "the wrong-key rejection", || {
        agent
            .logs()
            .iter()
            .any(|e| e.error && e.message.contains("different key"))
    });
    // The retry after that gets a proper certificate, which matches its key.
    let cert =
        fx.wait_for_client_cert(&agent, "a proper certificate after the rejection", |_| true);
    let pem = fx.node.read_file(CLIENT_LINK);
    let key = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
    assert!(
        cert.public_key().unwrap().public_eq(&key),
        "the installed certificate does not match the installed key"
    );
}

#[test]
fn revocation_of_the_current_serial_triggers_renewal() {
    let fx = KubeletFixture::new("kb-revoke");
    let agent = fx.start_agent("");
    let first = fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    let first_serial = serial(&first);
    // Give the agent time to start its RenewRevocation watch with the new identity.
    wait_until(Duration::from_secs(30), "the revocation watch", || {
        fx.server
            .requests()
            .iter()
            .any(|r| r.resource == "renewrevocations" && r.verb == "watch")
    });
    fx.server
        .add_revocation("kube-system", json!({
            "metadata": {"name": "incident-42"},
            "spec": {"description": "incident 42: key leaked", "revocations": [{"kind": "serialnumber", "serialNumber": first_serial}]}
        }))
        .unwrap();
    let second = fx.wait_for_client_cert(&agent, "renewal after the revocation", |c| {
        serial(c) != first_serial
    });
    assert_ne!(serial(&second), first_serial);
    assert!(
        agent
            .logs()
            .iter()
            .any(|e| e.message.contains("incident 42: key leaked")),
        "the revocation's description is not logged:\n{}",
        log_tail(&agent)
    );
}

#[test]
fn kubelet_self_rotation_is_detected_and_the_agent_only_monitors() {
    let fx = KubeletFixture::new("kb-selfrot");
    fx.node.write_file(
        "/var/lib/kubelet/config.yaml",
        b"apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nrotateCertificates: true\n",
        0o644,
    );
    let agent = fx.start_agent("");
    wait_until(Duration::from_secs(30), "the monitor-only message", || {
        agent
            .logs()
            .iter()
            .any(|e| e.message.contains("only monitors"))
    });
    assert!(
        fx.server.csrs().is_empty(),
        "the agent created a CSR although kubelet rotates its own certificate"
    );
    assert!(fx.client_cert().is_none());
}

#[test]
fn serving_certificate_is_issued_when_opted_in() {
    let fx = KubeletFixture::new("kb-serving");
    let agent = fx.start_agent(
        "  serving:\n    enabled: true\n    dns: [n1.nodes.test]\n    ips: [10.0.0.7]\n",
    );
    fx.wait_for_client_cert(&agent, "the client certificate", |_| true);
    // kubelet-serving CSRs are never auto-approved: approve it as an admin would.
    wait_until(Duration::from_secs(30), "the serving CSR", || {
        fx.server
            .csrs()
            .iter()
            .any(|c| c.spec.signer_name == "kubernetes.io/kubelet-serving")
    });
    let name = fx
        .server
        .csrs()
        .into_iter()
        .find(|c| c.spec.signer_name == "kubernetes.io/kubelet-serving")
        .and_then(|c| c.metadata.name)
        .unwrap();
    assert!(fx.server.approve(&name));
    let link = "/var/lib/kubelet/pki/kubelet-server-current.pem";
    wait_until(
        Duration::from_secs(30),
        "kubelet-server-current.pem",
        || fx.node.exists(link),
    );
    let cert = X509::stack_from_pem(&fx.node.read_file(link))
        .unwrap()
        .remove(0);
    assert_eq!(subject(&cert), "O=system:nodes, CN=system:node:n1");
    let sans: Vec<String> = cert
        .subject_alt_names()
        .unwrap()
        .iter()
        .map(|n| {
            n.dnsname()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{:?}", n.ipaddress().unwrap()))
        })
        .collect();
    assert!(sans.contains(&"n1.nodes.test".to_string()), "{sans:?}");
    assert!(sans.contains(&format!("{:?}", [10u8, 0, 0, 7])), "{sans:?}");
}

#[test]
fn renew_force_replaces_a_healthy_certificate_from_a_node_shell() {
    let fx = KubeletFixture::new("kb-force");
    let agent = fx.start_agent("");
    let first = fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    let first_serial = serial(&first);
    drop(agent);
    let cfg = fx.config_path("");
    let out = Command::new(agent_binary())
        .args(["renew", "--force", "--log-target", "stdout", "--config"])
        .arg(&cfg)
        .arg("--host-root")
        .arg(fx.node.root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "renew --force failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("renewed the kubelet client certificate"),
        "{stdout}"
    );
    let second = fx.client_cert().unwrap();
    assert_ne!(serial(&second), first_serial);
    assert_eq!(csr_requesters(&fx.server).last().unwrap(), "system:node:n1");

    // Without --force a healthy certificate is left alone.
    let out = Command::new(agent_binary())
        .args(["renew", "--log-target", "stdout", "--config"])
        .arg(&cfg)
        .arg("--host-root")
        .arg(fx.node.root())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing renewed"));
    assert_eq!(serial(&fx.client_cert().unwrap()), serial(&second));
}

#[test]
fn missing_bootstrap_kubeconfig_says_what_to_provide() {
    let fx = KubeletFixture::new("kb-nobootstrap");
    fx.node.remove_file("/var/lib/kubelet/bootstrap-kubeconfig");
    let agent = fx.start_agent("");
    wait_until(Duration::from_secs(30), "the bootstrap error", || {
        agent.logs().iter().any(|e| {
            e.error
                && e.message.contains(
                    "Provide a bootstrap kubeconfig at /var/lib/kubelet/bootstrap-kubeconfig",
                )
        })
    });
    assert!(fx.server.csrs().is_empty());

    // Providing it heals the node without restarting the agent.
    fx.node.write_file(
        "/var/lib/kubelet/bootstrap-kubeconfig",
        fx.server
            .bootstrap_kubeconfig(TOKEN_ID, TOKEN_SECRET)
            .as_bytes(),
        0o600,
    );
    let cert = fx.wait_for_client_cert(&agent, "bootstrap after the kubeconfig appeared", |_| true);
    assert_eq!(subject(&cert), "O=system:nodes, CN=system:node:n1");
}

#[test]
fn node_events_arrive_at_the_api_and_an_unreachable_api_never_blocks_the_work() {
    let fx = KubeletFixture::new("kb-events");
    let agent = fx.start_agent("");
    fx.wait_for_client_cert(&agent, "the client certificate", |_| true);
    let has_event = |reason: &str| {
        fx.server.events().iter().any(|e| {
            e.event.reason.as_deref() == Some(reason)
                && e.event.involved_object.kind.as_deref() == Some("Node")
                && e.event.involved_object.name.as_deref() == Some("n1")
        })
    };
    wait_until(
        Duration::from_secs(30),
        "a KubeletCertificateRenewed event",
        || has_event("KubeletCertificateRenewed"),
    );
    wait_until(Duration::from_secs(30), "an UnitRestarted event", || {
        has_event("UnitRestarted")
    });

    // A CA published in the Secret: a CATrustChanged event, posted as the node.
    let ca = integration_tests::pki::TestCa::new("nca events CA");
    let mut data = std::collections::BTreeMap::new();
    data.insert("ca1.crt".to_string(), ca.cert_pem().into_bytes());
    agent.secret().publish(&data);
    wait_until(Duration::from_secs(30), "a CATrustChanged event", || {
        has_event("CATrustChanged")
    });
    let posted_by: Vec<String> = fx
        .server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "events" && r.verb == "create")
        .map(|r| r.user)
        .collect();
    assert!(
        posted_by.iter().all(|u| u == "system:node:n1"),
        "{posted_by:?}"
    );

    // With the API down, the next CA change still lands in the node's bundle.
    fx.server.down();
    let ca2 = integration_tests::pki::TestCa::new("nca events CA 2");
    data.insert("ca2.crt".to_string(), ca2.cert_pem().into_bytes());
    agent.secret().publish(&data);
    let body = ca2.cert_pem().lines().nth(1).unwrap().to_string();
    wait_until(
        Duration::from_secs(30),
        "CA 2 in the bundle while the API is down",
        || {
            String::from_utf8_lossy(&fx.node.read_file("/etc/ssl/certs/ca-certificates.crt"))
                .contains(&body)
        },
    );
}

#[test]
fn throttled_csr_create_waits_for_retry_after_then_succeeds() {
    use nca_test_apiserver::Throttle;
    for (style, name) in [
        (Throttle::Status, "kb-throttle-st"),
        (Throttle::Apf, "kb-throttle-apf"),
    ] {
        let fx = KubeletFixture::new(name);
        // The next authenticated request, the CSR create, gets a 429 with
        // Retry-After: 3 (as a Status, and as API Priority and Fairness's
        // plain-text answer).
        fx.server.throttle_next(1, 3, style);
        let started = std::time::Instant::now();
        let agent = fx.start_agent("");
        let cert = fx.wait_for_client_cert(&agent, "the certificate after the 429", |_| true);
        let elapsed = started.elapsed();
        assert_eq!(subject(&cert), "O=system:nodes, CN=system:node:n1");
        let creates: Vec<u16> = fx
            .server
            .requests()
            .into_iter()
            .filter(|r| r.resource == "certificatesigningrequests" && r.verb == "create")
            .map(|r| r.code)
            .collect();
        assert_eq!(
            creates,
            [429, 201],
            "the create was throttled once, then retried"
        );
        assert!(
            elapsed >= Duration::from_secs(3),
            "the retry did not wait for Retry-After: {elapsed:?}"
        );
    }
}

#[test]
fn revocation_matching_every_future_certificate_renews_once_and_never_storms() {
    let fx = KubeletFixture::new("kb-storm");
    let agent = fx.start_agent("");
    fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    wait_until(Duration::from_secs(30), "the revocation watch", || {
        fx.server
            .requests()
            .iter()
            .any(|r| r.resource == "renewrevocations" && r.verb == "watch")
    });
    // No notBefore: every node certificate, present and future, matches.
    fx.server
        .add_revocation("kube-system", json!({
            "metadata": {"name": "all-nodes"},
            "spec": {"description": "rotate every node", "revocations": [{"kind": "Group", "group": "system:nodes"}]}
        }))
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the unfixable-revocation error",
        || {
            agent
                .logs()
                .iter()
                .any(|e| e.error && e.message.contains("so renewing again cannot help"))
        },
    );
    let after_error = fx.server.csrs().len();
    assert_eq!(
        after_error, 2,
        "one bootstrap and exactly one renewal for the revocation"
    );
    // Several loop periods later, still no new CSR.
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        fx.server.csrs().len(),
        after_error,
        "the agent kept renewing:\n{}",
        log_tail(&agent)
    );
    // `status` shows the revocation that matched (the daemon's view).
    let out = Command::new(agent_binary())
        .args([
            "status",
            "--output",
            "json",
            "--node-name",
            "n1",
            "--host-root",
        ])
        .arg(fx.node.root())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let matches = report["agent"]["revocationMatches"].to_string();
    assert!(matches.contains("all-nodes"), "{matches}");
}

#[test]
fn a_hostname_that_differs_from_the_node_name_only_in_case_renews_for_the_node_name() {
    let fx = KubeletFixture::new("kb-case");
    // kubelet's node (and its certificate) is n1; the node's hostname file says N1.
    fx.node.write_file("/etc/hostname", b"N1\n", 0o644);
    let agent = fx.start_agent("");
    let first = fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    drop(agent);
    // No node name configured: the agent must take kubelet's, not /etc/hostname's.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "kubelet:\n  mode: on\n  csr-timeout-seconds: 60\n").unwrap();
    let out = Command::new(agent_binary())
        .args(["renew", "--force", "--log-target", "stdout", "--config"])
        .arg(&cfg)
        .arg("--host-root")
        .arg(fx.node.root())
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "renew --force failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = fx.client_cert().unwrap();
    assert_ne!(serial(&second), serial(&first));
    assert_eq!(subject(&second), "O=system:nodes, CN=system:node:n1");
    assert_eq!(csr_requesters(&fx.server).last().unwrap(), "system:node:n1");
}

/// The AKS hybrid documentation's example RenewRevocation, verbatim (its
/// `kind: Group, group: system:nodes` entry has no notBefore: it revokes
/// every node certificate, present and future).
const AKS_DOCUMENTATION_EXAMPLE: &str = r#"apiVersion: certificates.microsoft.com/v1
kind: RenewRevocation
metadata:
  name: my-renew-revocation
  namespace: kube-system
spec:
  description: My list of renew revocations
  revocations:
  - description: Revoked certificates by serial number
    kind: serialnumber
    notBefore: "2020-04-17T17:22:05Z"
    serialNumber: 77fdf4b1033b387aaace6ce1c18710c2
  - description: Revoked certificates by group
    group: system:nodes
    kind: Group
  - description: Revoked certificates by DNS
    dns: kubernetes.default.svc.
    kind: DNS
  - description: Revoked certificates by DNS Suffix
    dns: .cluster.local
    kind: DNS
  - description: Revoked certificates by IP
    ip: 170.63.128.124
    kind: IP
"#;

/// utime + stime of process `pid`, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The AKS scenario: the documentation's example applied verbatim with
/// kubectl, on a node whose client certificate lives 60 s and crosses its
/// renewal point. The agent renews once for the revocation, finds that no
/// certificate can satisfy it, says so once (log, `status`), and then
/// renews only at each certificate's normal deadline, before it expires:
/// no busy loop, one CSR per renewal.
#[test]
fn the_documented_example_on_a_short_lived_certificate_neither_spins_nor_storms() {
    let fx = KubeletFixture::new("kb-docspin");
    fx.server.set_cert_lifetime(Duration::from_secs(60));
    fx.server.set_backdate(Duration::ZERO);
    let agent = fx.start_agent("");
    fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    wait_until(Duration::from_secs(30), "the revocation watch", || {
        fx.server
            .requests()
            .iter()
            .any(|r| r.resource == "renewrevocations" && r.verb == "watch")
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), AKS_DOCUMENTATION_EXAMPLE).unwrap();
    let applied = fx.kubectl_admin(&["apply", "-f", file.path().to_str().unwrap()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let pid = agent.pid().unwrap();
    let ticks_before = cpu_ticks(pid);
    let started = std::time::Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the unsatisfiable revocation",
        || {
            agent
                .logs()
                .iter()
                .any(|e| e.message.contains("so renewing again cannot help"))
        },
    );
    // Past the renewal point of the certificate the revocation renewal
    // issued (70-80 % of 60 s), and of the next one.
    let revoked_renewal = fx.client_cert().unwrap();
    let after_deadline = fx.wait_for_client_cert(&agent, "the renewal at the deadline", |c| {
        serial(c) != serial(&revoked_renewal)
    });
    let renewed_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let epoch = openssl::asn1::Asn1Time::from_unix(0).unwrap();
    let not_after = {
        let d = epoch.diff(revoked_renewal.not_after()).unwrap();
        i64::from(d.days) * 86_400 + i64::from(d.secs)
    };
    assert!(
        renewed_at < not_after,
        "renewed at {renewed_at}, after the certificate expired at {not_after}"
    );
    assert_ne!(serial(&after_deadline), serial(&revoked_renewal));
    std::thread::sleep(Duration::from_secs(10));
    let elapsed = started.elapsed();
    let cpu = Duration::from_millis((cpu_ticks(pid) - ticks_before) * 10);
    // The busy loop this replaces burned a core (32 s of CPU in 164 s).
    assert!(
        cpu < elapsed / 10,
        "the agent used {cpu:?} of CPU in {elapsed:?}:\n{}",
        log_tail(&agent)
    );
    // One CSR per renewal: the bootstrap, the revocation, then one per
    // deadline; every CSR gave a certificate.
    let csrs = fx.server.csrs();
    let signed = csrs
        .iter()
        .filter(|c| c.status.as_ref().is_some_and(|s| s.certificate.is_some()))
        .count();
    assert_eq!(signed, csrs.len(), "a CSR without its certificate");
    let renewals = (elapsed.as_secs() / 40) as usize + 3;
    assert!(
        csrs.len() <= renewals,
        "{} CSRs in {elapsed:?}: more than one per renewal",
        csrs.len()
    );
    // Said once, not on every pass.
    let said = agent
        .logs()
        .iter()
        .filter(|e| e.message.contains("so renewing again cannot help"))
        .count();
    assert_eq!(said, 1, "{}", log_tail(&agent));
    // `status` names the revocation no renewal can satisfy.
    let out = Command::new(agent_binary())
        .args(["status", "--output", "json", "--host-root"])
        .arg(fx.node.root())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report.to_string();
    assert!(
        text.contains("my-renew-revocation") && text.contains("Group system:nodes"),
        "{text}"
    );
}
