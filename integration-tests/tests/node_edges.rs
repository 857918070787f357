//! Node edges, on real nodes: what the agent claims about runtime units and
//! the trust store is checked, not assumed.
//!
//! - a restart unit that does not exist on the node (`crio.service` on a
//!   containerd node), and a runtime unit that is masked: an error naming the
//!   unit and the likely right one, never "reads the new CAs when it starts";
//! - drift: an anchor deleted and the bundle rebuilt with
//!   `update-ca-certificates --fresh` under the agent: repaired within
//!   seconds, with no Secret change and no restart;
//! - a path unit that runs the distribution's refresh on every anchor
//!   write: 50 passes, every desired CA in the bundle after each;
//! - kubelet `Requires=containerd.service`: announced before the restart;
//! - two restart units, one deferred, then a revert;
//! - the shipped host units on a node of Flatcar's layout;
//! - what hooks in /etc/ca-certificates/update.d are told of a removal;
//! - a Secret changing faster than the restart spread: the restart still
//!   comes at the node's share of it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::time::Duration;

use integration_tests::agent::{render_tail, PodModeAgent, PASS_TIMEOUT};
use integration_tests::observe::{self, ContainerdState};
use integration_tests::pki::TestCa;
use integration_tests::{preflight, secret_data, wait_until, Node};

/// The daemon-status file in the node.
const DAEMON_STATUS: &str = "/var/lib/node-cert-agent/daemon-status.json";

fn last_ca_error(node: &Node) -> Option<String> {
    let bytes = std::fs::read(node.root().join(DAEMON_STATUS.trim_start_matches('/'))).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["lastCaError"].as_str().map(str::to_string)
}

#[test]
fn a_restart_unit_the_node_does_not_have_is_an_error_naming_the_likely_one() {
    preflight();
    let node = Node::boot("edges-crio");
    let volume = tempfile::tempdir().unwrap();
    let agent = PodModeAgent::start(
        &node,
        &volume.path().join("secret"),
        &["--restart-unit", "crio.service", "--kubelet", "off"],
    );
    let ca = TestCa::new("nca edges crio CA");
    let before = ContainerdState::of(&node);
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    wait_until(
        PASS_TIMEOUT,
        "the pass's error in the daemon status",
        || last_ca_error(&node).is_some_and(|e| e.contains("crio.service is not-found")),
    );
    let error = last_ca_error(&node).unwrap();
    assert!(
        error.contains("set restart-units to the unit that runs the container runtime here")
            && error.contains("containerd.service"),
        "{error}"
    );
    let logs = agent.logs();
    assert!(
        !logs
            .iter()
            .any(|e| e.message.contains("reads the new CAs when it starts")),
        "a missing unit was reported as one that reads the CAs later:\n{}",
        render_tail(&logs, 30)
    );
    assert!(
        logs.iter()
            .any(|e| e.error && e.message.contains("crio.service is not-found")),
        "no error names the unit:\n{}",
        render_tail(&logs, 30)
    );
    // The CA is in the OS store, and containerd was not touched.
    observe::assert_trusted(&node, &ca, "the anchors are written");
    before.assert_not_restarted(&node, "a missing unit restarts nothing");
}

#[test]
fn a_masked_runtime_unit_is_an_error_too() {
    preflight();
    let node = Node::boot("edges-masked");
    node.exec_ok(&["systemctl", "mask", "--runtime", observe::CONTAINERD_UNIT]);
    let volume = tempfile::tempdir().unwrap();
    let agent = PodModeAgent::start(&node, &volume.path().join("secret"), &["--kubelet", "off"]);
    let ca = TestCa::new("nca edges masked CA");
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    wait_until(PASS_TIMEOUT, "the masked unit named in the error", || {
        last_ca_error(&node).is_some_and(|e| e.contains("containerd.service is masked"))
    });
}

#[test]
fn drift_of_the_trust_store_is_repaired_within_seconds_without_a_secret_change() {
    preflight();
    let node = Node::boot("edges-drift");
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let distro_only = node.read_file(bundle);
    let volume = tempfile::tempdir().unwrap();
    let agent = PodModeAgent::start(&node, &volume.path().join("secret"), &["--kubelet", "off"]);
    let ca = TestCa::new("nca edges drift CA");
    let passes = integration_tests::agent::count_passes(&agent.logs());
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    agent.wait_for_passes(passes + 1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "the CA in the bundle", || {
        observe::bundle_has(&node, ca.cert())
    });
    // Let the restart of the change settle before counting.
    std::thread::sleep(Duration::from_secs(3));
    let before = ContainerdState::of(&node);

    // The bundle rebuilt without the agent's CA (a distro upgrade's run).
    node.write_file(bundle, &distro_only, 0o644);
    assert!(!observe::bundle_has(&node, ca.cert()), "the drift happened");
    let took = wait_until(
        Duration::from_secs(15),
        "the CA back in the rebuilt bundle with no Secret change",
        || observe::bundle_has(&node, ca.cert()),
    );
    println!("bundle drift repaired in {} ms", took.as_millis());

    // Configuration management deletes the agent's anchor.
    let anchors = "/usr/local/share/ca-certificates/node-cert-agent";
    let anchors_dir = node.root().join(anchors.trim_start_matches('/'));
    let names: Vec<_> = std::fs::read_dir(&anchors_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    node.remove_file(&format!("{anchors}/{}", names[0].to_string_lossy()));
    let took = wait_until(
        Duration::from_secs(15),
        "the anchor written again with no Secret change",
        || anchors_dir.join(&names[0]).exists(),
    );
    println!("anchor drift repaired in {} ms", took.as_millis());
    wait_until(PASS_TIMEOUT, "the CA in the bundle", || {
        observe::bundle_has(&node, ca.cert())
    });
    std::thread::sleep(Duration::from_secs(3));
    before.assert_not_restarted(&node, "the bundle is back to what containerd runs with");

    // And then the agent is quiet: no pass without a change.
    let passes = integration_tests::agent::count_passes(&agent.logs());
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        integration_tests::agent::count_passes(&agent.logs()),
        passes,
        "passes while nothing changed:\n{}",
        render_tail(&agent.logs(), 20)
    );
}

/// The distribution's own refresh on every anchor write: a path unit on the
/// agent's anchors directory that starts `update_certs.service` (AKS's
/// name) running `update-ca-certificates`, which writes the same fixed temp
/// names as the agent's run. The agent never runs its refresh beside it and
/// checks the bundle only once it is done: 50 changes, 50 passes, every
/// desired CA in the bundle after each, and no pass failed.
#[test]
fn fifty_passes_beside_a_path_unit_that_refreshes_on_every_anchor_write() {
    preflight();
    let node = Node::boot("edges-pathunit");
    let anchors = "/usr/local/share/ca-certificates/node-cert-agent";
    node.exec_ok(&["mkdir", "-p", anchors]);
    node.write_file(
        "/etc/systemd/system/update_certs.path",
        format!("[Unit]\nDescription=refresh the trust store on anchor changes (as AKS)\n[Path]\nPathChanged={anchors}\nUnit=update_certs.service\n[Install]\nWantedBy=multi-user.target\n").as_bytes(),
        0o644,
    );
    node.write_file(
        "/etc/systemd/system/update_certs.service",
        b"[Unit]\nDescription=update-ca-certificates (as AKS's update_certs)\n[Service]\nType=oneshot\nExecStart=/usr/sbin/update-ca-certificates\n",
        0o644,
    );
    node.systemctl(&["daemon-reload"]);
    node.exec_ok(&["systemctl", "start", "update_certs.path"]);
    let volume = tempfile::tempdir().unwrap();
    let agent = PodModeAgent::start(&node, &volume.path().join("secret"), &["--kubelet", "off"]);
    let cas: Vec<TestCa> = (0..4)
        .map(|i| TestCa::new(&format!("nca path unit CA {i}")))
        .collect();
    let distro_runs_before = distro_runs(&node);
    for round in 0..50 {
        // Two or three of the four CAs, a different set each round.
        let chosen: Vec<&TestCa> = cas
            .iter()
            .enumerate()
            .filter(|(i, _)| (round + i) % 4 != 0 && !(round % 3 == 0 && *i == (round % 4)))
            .map(|(_, c)| c)
            .collect();
        let pems: Vec<(String, String)> = chosen
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("ca{i}.crt"), c.cert_pem()))
            .collect();
        let data: Vec<(&str, &[u8])> = pems
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        let passes = integration_tests::agent::count_passes(&agent.logs());
        agent.secret().publish(&secret_data(&data));
        agent.wait_for_passes(passes + 1, PASS_TIMEOUT);
        for (i, c) in cas.iter().enumerate() {
            let wanted = chosen.iter().any(|x| std::ptr::eq(*x, c));
            assert_eq!(
                observe::bundle_has(&node, c.cert()),
                wanted,
                "round {round}: CA {i} {} the bundle\n{}",
                if wanted { "missing from" } else { "still in" },
                render_tail(&agent.logs(), 20)
            );
        }
    }
    let failed: Vec<_> = agent
        .logs()
        .into_iter()
        .filter(|e| e.error && e.message.contains("pass failed"))
        .collect();
    assert!(
        failed.is_empty(),
        "failed passes: {}",
        render_tail(&failed, 10)
    );
    let runs = distro_runs(&node) - distro_runs_before;
    println!("50 passes beside the path unit; the distribution's refresh ran {runs} times");
    assert!(runs > 0, "the path unit never ran: the test proves nothing");
}

/// How often `update_certs.service` has finished so far (its journal).
fn distro_runs(node: &Node) -> usize {
    let out = node.exec_ok(&[
        "journalctl",
        "-u",
        "update_certs.service",
        "-o",
        "cat",
        "--no-pager",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("Finished") || l.starts_with("Updating certificates"))
        .count()
}

/// On some node images kubelet `Requires=containerd.service`: a restart of
/// containerd restarts kubelet too. The agent reads containerd's reverse
/// dependencies over D-Bus and says so before its restart.
#[test]
fn a_containerd_restart_that_also_restarts_kubelet_is_announced() {
    preflight();
    let node = Node::boot("edges-requires");
    node.write_file(
        "/etc/systemd/system/kubelet.service",
        b"[Unit]\nDescription=stand-in kubelet that requires containerd\nRequires=containerd.service\nAfter=containerd.service\n[Service]\nExecStart=/bin/sleep infinity\n",
        0o644,
    );
    node.systemctl(&["daemon-reload"]);
    node.exec_ok(&["systemctl", "start", "kubelet.service"]);
    let kubelet_before = node.main_pid("kubelet.service");
    let volume = tempfile::tempdir().unwrap();
    let agent = PodModeAgent::start(&node, &volume.path().join("secret"), &["--kubelet", "off"]);
    let ca = TestCa::new("nca edges requires CA");
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    wait_until(PASS_TIMEOUT, "the announcement", || {
        agent.logs().iter().any(|e| {
            e.message
                .contains("restarting containerd.service also restarts kubelet.service")
        })
    });
    // It was true: systemd restarted kubelet with containerd.
    wait_until(Duration::from_secs(10), "kubelet restarted", || {
        node.main_pid("kubelet.service") != kubelet_before
    });
}

/// Two restart units, one deferred by its start limit, then the change
/// reverted: containerd, which took the added CA, is restarted again so it
/// drops it; the deferred unit never took it and is not restarted at all.
#[test]
fn a_revert_restarts_the_unit_that_took_the_change_and_not_the_deferred_one() {
    preflight();
    let node = Node::boot("edges-revert");
    let other = "other-runtime.service";
    node.write_file(
        &format!("/etc/systemd/system/{other}"),
        b"[Unit]\nDescription=a second runtime unit with a tight start limit\nStartLimitBurst=2\nStartLimitIntervalSec=3600\n[Service]\nExecStart=/bin/sleep infinity\n",
        0o644,
    );
    node.systemctl(&["daemon-reload"]);
    // Its start now is the one the agent leaves to others: the agent's
    // restart waits an hour.
    node.exec_ok(&["systemctl", "start", other]);
    let volume = tempfile::tempdir().unwrap();
    let agent = PodModeAgent::start(
        &node,
        &volume.path().join("secret"),
        &[
            "--kubelet",
            "off",
            "--restart-unit",
            "containerd.service",
            "--restart-unit",
            other,
        ],
    );
    let containerd = observe::unit_starts(&node, "containerd.service");
    let others = observe::unit_starts(&node, other);
    let ca = TestCa::new("nca edges revert CA");
    let passes = integration_tests::agent::count_passes(&agent.logs());
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    agent.wait_for_passes(passes + 1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "containerd restarted for the CA", || {
        observe::unit_starts(&node, "containerd.service") == containerd + 1
    });
    assert!(
        agent
            .logs()
            .iter()
            .any(|e| e.message.contains(&format!("restart of {other} deferred"))),
        "{}",
        render_tail(&agent.logs(), 20)
    );

    // Reverted.
    let passes = integration_tests::agent::count_passes(&agent.logs());
    agent.secret().publish(&secret_data(&[]));
    agent.wait_for_passes(passes + 1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "containerd restarted for the revert", || {
        observe::unit_starts(&node, "containerd.service") == containerd + 2
    });
    assert!(!observe::bundle_has(&node, ca.cert()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        observe::unit_starts(&node, other),
        others,
        "the deferred unit never took the change and must not be restarted:\n{}",
        render_tail(&agent.logs(), 20)
    );
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(node.root().join(DAEMON_STATUS.trim_start_matches('/'))).unwrap(),
    )
    .unwrap();
    assert!(status["lastCaError"].is_null(), "{status}");
}

/// A stand-in for Flatcar's `update-ca-certificates`: the bundle from the
/// distribution's certificates and every `*.pem` in `/etc/ssl/certs`, where
/// Flatcar keeps its local anchors (the node's own tool, not the agent's:
/// the agent runs no shell).
const FLATCAR_REFRESH: &str = "#!/bin/sh\nset -e\ncd /etc/ssl/certs\ntmp=$(mktemp /etc/ssl/certs/.bundle.XXXXXX)\ncat /usr/share/ca-certificates/mozilla/*.crt > \"$tmp\"\nfor f in /etc/ssl/certs/*.pem; do [ -f \"$f\" ] && cat \"$f\" >> \"$tmp\"; done\nchmod 0644 \"$tmp\"\nmv \"$tmp\" /etc/ssl/certs/ca-certificates.crt\n";

/// The shipped host units on a node of Flatcar's layout (`ID=flatcar`:
/// anchors in `/etc/ssl/certs`, `*.pem`): `ProtectSystem=strict` must leave
/// that directory writable, or every pass fails with EROFS. The agent, as
/// installed by the package's units, installs a CA from its Secret
/// directory into `/etc/ssl/certs`, the bundle has it, and no pass failed.
#[test]
fn the_host_units_work_on_a_node_of_flatcars_layout() {
    preflight();
    let node = Node::boot("edges-flatcar");
    node.exec_ok(&["rm", "-f", "/etc/os-release"]);
    node.write_file(
        "/etc/os-release",
        b"NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nID_LIKE=coreos\nVERSION_ID=4081.2.0\n",
        0o644,
    );
    node.write_file(
        "/usr/sbin/update-ca-certificates",
        FLATCAR_REFRESH.as_bytes(),
        0o755,
    );
    let config = format!(
        "{}metrics-address: \"off\"\n",
        integration_tests::agent::host_config(&[integration_tests::agent::HOST_SECRET_DIR], &[])
    );
    let agent = integration_tests::agent::HostModeAgent::install(&node, &config);
    let ca = TestCa::new("nca edges flatcar CA");
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let anchor = format!(
        "/etc/ssl/certs/node-cert-agent-{}.pem",
        ca.sha256_fingerprint()
    );
    wait_until(PASS_TIMEOUT, "the Flatcar anchor and the bundle", || {
        node.exists(&anchor) && observe::bundle_has(&node, ca.cert())
    });
    let logs = agent.logs();
    assert!(
        logs.iter()
            .any(|e| e.field("family").as_deref() == Some("flatcar")),
        "{}",
        render_tail(&logs, 20)
    );
    assert!(
        !logs.iter().any(|e| e.error),
        "a pass failed in the host unit's sandbox:\n{}",
        render_tail(&logs, 20)
    );
}

/// What the hooks in `/etc/ca-certificates/update.d` are told, checked on
/// the node rather than assumed (docs/design.md "Safety properties"): an
/// added anchor of the agent reaches them as a `+` line; its removal is
/// dropped from the bundle but reported to them by no `-` line, neither by
/// the agent's incremental run nor by a full `update-ca-certificates
/// --fresh`, so a full rebuild on removals would not help them.
#[test]
fn a_removed_anchor_is_not_reported_to_update_d_hooks_with_or_without_fresh() {
    preflight();
    let node = Node::boot("edges-hooks");
    let log = "/var/log/nca-hook.log";
    node.write_file(
        "/etc/ca-certificates/update.d/zz-nca-test-hook",
        format!("#!/bin/sh\n{{ cat; echo ===; }} >> {log}\n").as_bytes(),
        0o755,
    );
    let volume = tempfile::tempdir().unwrap();
    let agent = PodModeAgent::start(&node, &volume.path().join("secret"), &["--kubelet", "off"]);
    let ca = TestCa::new("nca edges hook CA");
    let anchor = format!("node-cert-agent-{}.crt", ca.sha256_fingerprint());
    let passes = integration_tests::agent::count_passes(&agent.logs());
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    agent.wait_for_passes(passes + 1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "the hook's + line", || {
        node.exists(log)
            && String::from_utf8_lossy(&node.read_file(log))
                .lines()
                .any(|l| l.starts_with('+') && l.contains("node-cert-agent"))
    });
    let added = String::from_utf8_lossy(&node.read_file(log)).into_owned();
    println!("hook input on the add:\n{added}");

    let passes = integration_tests::agent::count_passes(&agent.logs());
    agent.secret().publish(&secret_data(&[]));
    agent.wait_for_passes(passes + 1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "the CA out of the bundle", || {
        !observe::bundle_has(&node, ca.cert())
    });
    node.exec_ok(&["update-ca-certificates", "--fresh"]);
    let all = String::from_utf8_lossy(&node.read_file(log)).into_owned();
    let after_add = &all[added.len()..];
    println!("hook input after the removal and a --fresh run:\n{after_add}");
    assert!(
        !after_add.lines().any(|l| l.starts_with("-/")),
        "a hook was told of the removal after all: docs/design.md's claim is wrong:\n{after_add}"
    );
    assert!(
        !after_add.contains(&anchor),
        "the removed anchor was named to the hooks:\n{after_add}"
    );
}

/// `restart-spread-seconds` with a Secret that changes every 3 s, faster
/// than this node's share of the spread: the restart still comes at that
/// share after the first change, never pushed out by the later ones.
#[test]
fn a_secret_changing_faster_than_the_spread_still_gets_its_restart_within_the_spread() {
    preflight();
    let node = Node::boot("edges-spread");
    let window = Duration::from_secs(20);
    // A node name whose share of the window is long enough to matter.
    let name = (0..100)
        .map(|i| format!("spread-node-{i}"))
        .find(|n| {
            let o = node_cert_agent::trust::restart::spread_offset(n, window);
            o >= Duration::from_secs(9) && o <= Duration::from_secs(15)
        })
        .unwrap();
    let offset = node_cert_agent::trust::restart::spread_offset(&name, window);
    let volume = tempfile::tempdir().unwrap();
    let agent = PodModeAgent::start(
        &node,
        &volume.path().join("secret"),
        &[
            "--kubelet",
            "off",
            "--node-name",
            &name,
            "--restart-spread-seconds",
            "20",
        ],
    );
    let starts = observe::containerd_starts(&node);
    let cas: Vec<TestCa> = (0..8)
        .map(|i| TestCa::new(&format!("nca edges spread CA {i}")))
        .collect();
    let first_change = std::time::Instant::now();
    let mut restarted_at = None;
    for (i, ca) in cas.iter().enumerate() {
        agent.secret().publish(&secret_data(&[(
            &format!("ca{i}.crt"),
            ca.cert_pem().as_bytes(),
        )]));
        std::thread::sleep(Duration::from_secs(3));
        if restarted_at.is_none() && observe::containerd_starts(&node) > starts {
            restarted_at = Some(first_change.elapsed());
        }
    }
    let restarted_at = restarted_at.unwrap_or_else(|| {
        panic!(
            "no restart within {:?} of changes every 3 s (this node's share of the spread: {offset:?}):\n{}",
            first_change.elapsed(),
            render_tail(&agent.logs(), 30)
        )
    });
    println!("share {offset:?}; restarted {restarted_at:?} after the first change");
    assert!(
        restarted_at + Duration::from_secs(1) >= offset,
        "restarted at {restarted_at:?}, before this node's share {offset:?}"
    );
    assert!(
        restarted_at <= offset + Duration::from_secs(8),
        "restarted at {restarted_at:?}, long after this node's share {offset:?}: the changes pushed it out"
    );
}
