//! Custom CA trust: read the CA inputs ([`sources`]: mounted Secrets and
//! provisioning files; [`api_secret`]: the Secret through the API;
//! [`secret_manifest`]: a Secret manifest given to `check`), judge each key ([`validate`]), decide the desired
//! set ([`plan`], pure), remember the last good state ([`state`]), write the
//! agent's own anchors ([`store`]), restart the allowlisted units that
//! need it ([`restart`]) within each unit's start limit ([`pacing`]), make the CAs effective for image pulls through
//! containerd's registry host config without a restart where it reaches
//! every registry ([`pull_trust`]) and run one pass end to end
//! ([`reconcile`]: plan, write the live pull trust and the anchors,
//! refresh, restart only where needed). After a pass that made a CA
//! effective for pulls, [`waiting_pods`] judges which of the node's pods
//! still wait in kubelet's image-pull back-off after an x509 error (pure;
//! the list is the daemon's).
//!
//! Boundary: depends only on the leaves (`x509`, `node`, `config`, `k8s`,
//! `retry`, `text`, `time`). It never
//! touches the distro's own CAs, restarts only allowlisted units, and says
//! what it did through its outcome types, never to the operator sinks.

pub mod api_secret;
pub mod check_report;
pub mod pacing;
pub mod plan;
pub mod pull_trust;
pub mod reconcile;
pub mod restart;
pub mod secret_manifest;
pub mod sources;
pub mod state;
pub mod store;
pub mod validate;
pub mod waiting_pods;
