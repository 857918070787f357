//! The pods a CA that just became effective for image pulls may unblock:
//! pods on this node whose container (or init container) waits in
//! kubelet's image-pull back-off (`ImagePullBackOff`, `ErrImagePull`) after
//! `x509: certificate signed by unknown authority`. kubelet retries such a
//! pull only when its back-off (at most 5 minutes) has run out, so to the
//! user the fix looks slow even when the node is ready; naming the pods
//! says what they are waiting for, and what they can do.
//!
//! Owns: when a CA pass is worth that look ([`judge_pass`]),
//! which pods qualify ([`judge`]) and the words for them (the Event
//! message and the one-line advice). Pure: pods in, data and text out.
//!
//! Boundary: never touches a pod (it reports them; deleting or restarting
//! one is the user's choice). The one list of the node's pods is the
//! daemon's (`daemon::waiting_pods`), the Event and the status file are
//! `ops`'.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use serde::{Deserialize, Serialize};

use crate::time::rfc3339;
use crate::trust::reconcile::Outcome;

/// What an x509 failure of a pull says (Go's `x509.UnknownAuthorityError`,
/// as containerd reports it and kubelet copies into the waiting message).
pub const UNKNOWN_AUTHORITY: &str = "certificate signed by unknown authority";

/// The waiting reasons of a failed pull: the first failure, then the
/// back-off between retries.
const PULL_WAIT_REASONS: [&str; 2] = ["ImagePullBackOff", "ErrImagePull"];

/// kubelet's longest image-pull back-off (`MaxContainerBackOff`, 300 s): by
/// this long after the check, every pod found waiting has been retried.
pub const KUBELET_MAX_BACKOFF_SECS: i64 = 300;

/// At most this many pods are named in the Event; the rest are counted.
pub const MAX_NAMED_PODS: usize = 10;

/// One container that waits for a pull retry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingPod {
    pub namespace: String,
    pub name: String,
    pub container: String,
    /// The image it waits for, as the pod names it.
    pub image: String,
}

/// What one look at the node's pods found, after a CA pass that made a CA
/// effective for pulls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingPods {
    /// When the pods were listed (Unix seconds).
    pub checked_at: i64,
    /// One entry per waiting container, sorted by namespace, pod, container.
    pub pods: Vec<WaitingPod>,
}

/// What a pass that succeeded means for the look at the waiting pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassVerdict {
    /// Look now: a CA this pass (or an earlier one) installed has just
    /// become effective for image pulls.
    pub look: bool,
    /// A CA is installed, but the runtime restart that makes it effective
    /// is still to come (deferred to its start limit or the restart
    /// spread, or the unit is stopped): look after the pass that restarts.
    pub awaiting_restart: bool,
}

/// Judges a pass that succeeded, given whether an earlier pass left an
/// installed CA waiting for its restart. A CA becomes effective for pulls
/// live (a restart avoided, or the live pull trust in place) or through a
/// restart of the runtime. A pass that only removed CAs frees no pod.
pub fn judge_pass(o: &Outcome, awaiting_restart: bool) -> PassVerdict {
    let installed = !o.installed.is_empty();
    let live = !o.restarts_avoided.is_empty() || o.pull_trust.as_ref().is_some_and(|t| t.is_live());
    let restarted = !o.restarted.is_empty();
    let look = (installed && (live || restarted)) || (awaiting_restart && restarted);
    PassVerdict {
        look,
        awaiting_restart: !look && (awaiting_restart || (installed && !live)),
    }
}

/// The containers of `pods` that wait for a pull retry after an x509
/// unknown-authority error, sorted. Pods being deleted are left out: they
/// are going away, and recreating them is already under way.
pub fn judge(pods: &[Pod], checked_at: i64) -> WaitingPods {
    let mut out = Vec::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let groups = [
            (
                status.init_container_statuses.as_deref(),
                spec.and_then(|s| s.init_containers.as_deref()),
            ),
            (
                status.container_statuses.as_deref(),
                spec.map(|s| s.containers.as_slice()),
            ),
        ];
        for (statuses, containers) in groups {
            for cs in statuses.unwrap_or_default() {
                if waits_after_unknown_authority(cs) {
                    out.push(WaitingPod {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        container: cs.name.clone(),
                        image: image_of(cs, containers.unwrap_or_default()),
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    WaitingPods {
        checked_at,
        pods: out,
    }
}

fn waits_after_unknown_authority(cs: &ContainerStatus) -> bool {
    let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
        return false;
    };
    waiting
        .reason
        .as_deref()
        .is_some_and(|r| PULL_WAIT_REASONS.contains(&r))
        && waiting
            .message
            .as_deref()
            .is_some_and(|m| m.contains(UNKNOWN_AUTHORITY))
}

/// The image as the status reports it (kubelet copies the spec's), else
/// the spec's.
fn image_of(cs: &ContainerStatus, containers: &[Container]) -> String {
    if !cs.image.is_empty() {
        return cs.image.clone();
    }
    containers
        .iter()
        .find(|c| c.name == cs.name)
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

impl WaitingPods {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The waiting pods as `namespace/name`, each once, sorted.
    pub fn pod_names(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .pods
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        names.into_iter().collect()
    }

    /// When kubelet has retried every pull found waiting (Unix seconds).
    pub fn retried_by(&self) -> i64 {
        self.checked_at.saturating_add(KUBELET_MAX_BACKOFF_SECS)
    }

    /// The pods still say something at `now`: kubelet's back-off may still
    /// hold them. Later, their pulls have been retried, and what they wait
    /// for (if anything) is no longer this CA.
    pub fn is_current(&self, now: i64) -> bool {
        !self.is_empty() && now < self.retried_by()
    }

    /// The Event's message (`None` without pods): what the user can do
    /// first, then up to [`MAX_NAMED_PODS`] pods, as many as fit in
    /// `max_bytes` (the API's limit), the rest counted.
    pub fn event_message(&self, max_bytes: usize) -> Option<String> {
        let names = self.pod_names();
        if names.is_empty() {
            return None;
        }
        let mut msg = format!(
            "{} on this node {} in image-pull back-off after x509: {UNKNOWN_AUTHORITY}, and a CA was just made effective for image pulls: kubelet retries each pull within its back-off (up to 5 minutes); to retry now, delete the pod (its controller recreates it) or recreate it. The agent never deletes or restarts a pod. Waiting: ",
            plural(names.len(), "pod"),
            if names.len() == 1 { "waits" } else { "wait" },
        );
        let mut named = 0;
        for name in names.iter().take(MAX_NAMED_PODS) {
            let rest = names.len() - named - 1;
            let tail = if rest > 0 {
                format!(" (and {rest} more)")
            } else {
                String::new()
            };
            let sep = if named == 0 { "" } else { ", " };
            if msg.len() + sep.len() + name.len() + tail.len() > max_bytes {
                break;
            }
            msg.push_str(sep);
            msg.push_str(name);
            named += 1;
        }
        let rest = names.len() - named;
        if rest > 0 {
            msg.push_str(&format!(
                "{}{} more",
                if named == 0 { "" } else { " (and " },
                rest
            ));
            if named > 0 {
                msg.push(')');
            }
        }
        Some(msg)
    }

    /// One line for `status` (`None` without pods).
    pub fn advice(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        Some(format!(
            "found waiting at {}, after x509: {UNKNOWN_AUTHORITY}; a CA is now effective for pulls, and kubelet retries each pull within its back-off (up to 5 minutes), by {} at the latest; to retry now, delete the pod (its controller recreates it) or recreate it",
            rfc3339(self.checked_at),
            rfc3339(self.retried_by()),
        ))
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;
    use crate::trust::pull_trust::{PullMode, PullTrust};
    use crate::x509::cert::CertInfo;

    /// kubelet's message after a pull from a registry signed by an unknown
    /// CA (containerd 1.7, as `kubectl describe pod` shows it).
    const X509_MESSAGE: &str = "failed to pull and unpack image \"registry.example:5000/app:1\": failed to resolve reference \"registry.example:5000/app:1\": failed to do request: Head \"https://registry.example:5000/v2/app/manifests/1\": tls: failed to verify certificate: x509: certificate signed by unknown authority";

    fn status(name: &str, reason: &str, message: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            image: format!("registry.example:5000/{name}:1"),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn pod(ns: &str, name: &str, init: Vec<ContainerStatus>, main: Vec<ContainerStatus>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                init_container_statuses: (!init.is_empty()).then_some(init),
                container_statuses: (!main.is_empty()).then_some(main),
                ..PodStatus::default()
            }),
        }
    }

    fn waiting(ns: &str, name: &str, container: &str) -> WaitingPod {
        WaitingPod {
            namespace: ns.into(),
            name: name.into(),
            container: container.into(),
            image: format!("registry.example:5000/{container}:1"),
        }
    }

    #[test]
    fn a_pull_in_back_off_after_an_unknown_authority_qualifies_in_containers_and_init_containers() {
        let pods = [
            pod(
                "shop",
                "web-1",
                vec![],
                vec![status("app", "ImagePullBackOff", X509_MESSAGE)],
            ),
            pod(
                "batch",
                "job-1",
                vec![status("setup", "ErrImagePull", X509_MESSAGE)],
                vec![status("main", "PodInitializing", "")],
            ),
        ];
        let w = judge(&pods, 1000);
        assert_eq!(
            w.pods,
            vec![
                waiting("batch", "job-1", "setup"),
                waiting("shop", "web-1", "app")
            ]
        );
        assert_eq!(w.checked_at, 1000);
        assert_eq!(w.pod_names(), vec!["batch/job-1", "shop/web-1"]);
    }

    #[test]
    fn other_waits_other_pull_errors_running_and_deleted_pods_do_not_qualify() {
        let not_found = "rpc error: code = NotFound desc = failed to pull and unpack image \"r/app:1\": not found";
        let mut running = status("app", "", "");
        running.state = Some(ContainerState {
            running: Some(Default::default()),
            ..ContainerState::default()
        });
        let mut deleted = pod(
            "shop",
            "old",
            vec![],
            vec![status("app", "ImagePullBackOff", X509_MESSAGE)],
        );
        deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let pods = [
            pod(
                "a",
                "not-found",
                vec![],
                vec![status("app", "ImagePullBackOff", not_found)],
            ),
            pod(
                "a",
                "crash",
                vec![],
                vec![status("app", "CrashLoopBackOff", X509_MESSAGE)],
            ),
            pod("a", "running", vec![], vec![running]),
            pod("a", "no-status", vec![], vec![]),
            deleted,
            Pod::default(),
        ];
        assert!(judge(&pods, 1000).is_empty());
    }

    #[test]
    fn the_image_comes_from_the_spec_when_the_status_has_none() {
        let mut cs = status("app", "ErrImagePull", X509_MESSAGE);
        cs.image = String::new();
        let mut p = pod("ns", "p", vec![], vec![cs]);
        p.spec.as_mut().unwrap().containers = vec![Container {
            name: "app".into(),
            image: Some("registry.example:5000/from-spec:2".into()),
            ..Container::default()
        }];
        assert_eq!(
            judge(&[p], 1).pods[0].image,
            "registry.example:5000/from-spec:2"
        );
    }

    fn outcome(installed: bool) -> Outcome {
        Outcome {
            installed: if installed {
                let ca = crate::x509::testpki::good_ca("Waiting");
                vec![CertInfo::from_der(&ca.cert.to_der().unwrap()).unwrap()]
            } else {
                vec![]
            },
            ..Outcome::default()
        }
    }

    #[test]
    fn only_a_pass_that_made_an_installed_ca_effective_is_worth_a_look() {
        let live = PullTrust {
            mode: PullMode::Live,
            dir: None,
            reason: None,
            path: None,
            hint: None,
        };
        let restart = PullTrust {
            mode: PullMode::Restart,
            ..live.clone()
        };
        let verdict = |f: &dyn Fn(&mut Outcome), installed: bool, awaiting: bool| {
            let mut o = outcome(installed);
            f(&mut o);
            let v = judge_pass(&o, awaiting);
            (v.look, v.awaiting_restart)
        };
        let avoided = |o: &mut Outcome| o.restarts_avoided = vec!["containerd.service".into()];
        let restarted = |o: &mut Outcome| o.restarted = vec!["containerd.service".into()];
        let live_trust = |o: &mut Outcome| o.pull_trust = Some(live.clone());
        let restart_trust = |o: &mut Outcome| o.pull_trust = Some(restart.clone());
        // Installed and effective: live, or restarted.
        assert_eq!(verdict(&avoided, true, false), (true, false));
        assert_eq!(verdict(&live_trust, true, false), (true, false));
        assert_eq!(verdict(&restarted, true, false), (true, false));
        // Installed, but the restart it needs waits (deferred, or the unit
        // is stopped): not yet; the pass that restarts looks.
        assert_eq!(verdict(&restart_trust, true, false), (false, true));
        assert_eq!(verdict(&|_| {}, true, false), (false, true));
        assert_eq!(verdict(&|_| {}, false, true), (false, true));
        assert_eq!(verdict(&restarted, false, true), (true, false));
        // Nothing added (a removal, a republish), nothing waiting.
        assert_eq!(verdict(&live_trust, false, false), (false, false));
        assert_eq!(verdict(&restarted, false, false), (false, false));
    }

    #[test]
    fn the_event_says_what_to_do_first_and_names_up_to_ten_pods() {
        let one = WaitingPods {
            checked_at: 0,
            pods: vec![
                waiting("shop", "web-1", "app"),
                waiting("shop", "web-1", "sidecar"),
            ],
        };
        let msg = one.event_message(1024).unwrap();
        assert!(msg.starts_with("1 pod on this node waits in image-pull back-off after x509: certificate signed by unknown authority"), "{msg}");
        assert!(
            msg.contains("kubelet retries each pull within its back-off (up to 5 minutes)"),
            "{msg}"
        );
        assert!(msg.contains("to retry now, delete the pod"), "{msg}");
        assert!(msg.ends_with("Waiting: shop/web-1"), "{msg}");

        let many = WaitingPods {
            checked_at: 0,
            pods: (0..13)
                .map(|i| waiting("ns", &format!("p{i:02}"), "c"))
                .collect(),
        };
        let msg = many.event_message(1024).unwrap();
        assert!(msg.starts_with("13 pods on this node wait in"), "{msg}");
        assert!(msg.ends_with("Waiting: ns/p00, ns/p01, ns/p02, ns/p03, ns/p04, ns/p05, ns/p06, ns/p07, ns/p08, ns/p09 (and 3 more)"), "{msg}");
        assert!(WaitingPods::default().event_message(1024).is_none());
    }

    #[test]
    fn long_pod_names_are_counted_instead_of_cut_to_stay_within_the_apis_limit() {
        let long = "x".repeat(250);
        let w = WaitingPods {
            checked_at: 0,
            pods: (0..5)
                .map(|i| waiting("ns", &format!("{long}{i}"), "c"))
                .collect(),
        };
        let msg = w.event_message(1024).unwrap();
        assert!(msg.len() <= 1024, "{}", msg.len());
        assert!(msg.contains(&format!("ns/{long}0")), "{msg}");
        assert!(msg.ends_with(" more)"), "{msg}");
        // Not even one name fits: only the count.
        let msg = w.event_message(400).unwrap();
        assert!(msg.ends_with("Waiting: 5 more"), "{msg}");
    }

    #[test]
    fn the_advice_names_when_kubelet_has_retried_and_goes_stale_after_the_back_off() {
        let w = WaitingPods {
            checked_at: 1_800_000_000,
            pods: vec![waiting("shop", "web-1", "app")],
        };
        let advice = w.advice().unwrap();
        assert!(
            advice.contains("found waiting at 2027-01-15T08:00:00Z"),
            "{advice}"
        );
        assert!(
            advice.contains("by 2027-01-15T08:05:00Z at the latest"),
            "{advice}"
        );
        assert!(advice.contains("delete the pod"), "{advice}");
        assert!(w.is_current(1_800_000_000 + 299));
        assert!(!w.is_current(1_800_000_000 + 300));
        assert!(WaitingPods::default().advice().is_none());
        assert!(!WaitingPods::default().is_current(0));
    }
}
