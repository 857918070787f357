//! The OCI image from `packaging/image.sh`, checked as an archive and run as
//! a node gets it and as the shipped DaemonSet runs it.
//!
//! - The image holds one file, the agent's binary, which has no program
//!   interpreter (it is static, so the scratch base needs no libraries and
//!   no shell); it is named as the DaemonSet's `image:` resolves, and runs as
//!   uid 0 (the Containerfile says why).
//! - As a node gets it: `skopeo copy oci-archive:... docker://...` pushes it
//!   to a TLS registry whose CA the node's trust store holds from
//!   provisioning (written before the node's first boot, so containerd
//!   starts with it), and the node's containerd pulls it through CRI
//!   `PullImage`, as kubelet does.
//! - Then the DaemonSet's pod (manifests/overlays/secret-volume as `kubectl
//!   kustomize` renders it: the base's pod with the Secret as a volume,
//!   parsed into k8s-openapi types) runs from the pulled image under the node's containerd and runc:
//!   the pod spec's args, env (the node name from the downward API), volumes
//!   (hostPath from the node's root, the ConfigMap's config, the Secret
//!   volume), uid 0 with every capability dropped, no new privileges, a
//!   read-only root filesystem, a network namespace of its own, and the
//!   **RuntimeDefault** seccomp profile: the one the node's containerd
//!   generates itself (`ctr ... --seccomp`, the same `contrib/seccomp`
//!   default profile its CRI applies for `seccompProfile: RuntimeDefault`,
//!   generated for the container's empty capability set, as CRI does).
//! - The pod installs a published CA into the node's bundle with exactly one
//!   containerd restart, answers its probes on `/healthz` and `/readyz`, and
//!   stops on SIGTERM, with exit status 0, within the DaemonSet's
//!   `terminationGracePeriodSeconds`.
//! - The same image, pod spec and profile with `uninstall` as its command
//!   removes the agent's CAs from the node again, with one containerd
//!   restart.
//!
//! The archive is `$NCA_IMAGE_TAR` (test-all.sh builds it with
//! `packaging/image.sh` and sets it); without it the tests fail, saying so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::agent::{count_passes, read_json_log, render_tail, workspace_dir, LogEntry};
use integration_tests::observe::{self, ContainerdState};
use integration_tests::pki::TestCa;
use integration_tests::{cri_pull, wait_until, Node, Registry, SecretVolume};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Volume};
use serde_json::{json, Value};

/// The environment variable naming the image archive.
const IMAGE_ENV: &str = "NCA_IMAGE_TAR";
/// The agent's metrics port in the shipped config.
const METRICS_PORT: u16 = 9795;
/// How long the pod may take for a pass or to stop.
const POD_TIMEOUT: Duration = Duration::from_secs(30);

/// The image archive under test. Panics, saying how to build it, if unset.
fn image_archive() -> PathBuf {
    let path = std::env::var_os(IMAGE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "${IMAGE_ENV} is not set: build the image with `packaging/image.sh` (as root) and \
                 point ${IMAGE_ENV} at the archive it prints (test-all.sh does both)"
            )
        });
    assert!(
        path.is_file(),
        "${IMAGE_ENV}={} does not exist",
        path.display()
    );
    path
}

/// An OCI image archive (`oci-archive:` layout in a tar), read into memory.
struct OciArchive {
    /// `org.opencontainers.image.ref.name` of the one manifest.
    name: String,
    /// The image config.
    config: Value,
    /// Its digest: the image id a CRI reports for the image.
    config_digest: String,
    /// The layers, gzip'd tars, in order.
    layers: Vec<Vec<u8>>,
}

impl OciArchive {
    fn read(path: &Path) -> OciArchive {
        let mut files = BTreeMap::new();
        let mut tar = tar::Archive::new(std::fs::File::open(path).unwrap());
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.insert(name.trim_start_matches("./").to_owned(), bytes);
        }
        let file = |name: &str| -> &Vec<u8> {
            files
                .get(name)
                .unwrap_or_else(|| panic!("{}: no {name}", path.display()))
        };
        let blob = |digest: &str| -> Vec<u8> {
            let (alg, hex) = digest.split_once(':').expect("digest alg:hex");
            let bytes = file(&format!("blobs/{alg}/{hex}")).clone();
            let got = openssl::sha::sha256(&bytes);
            assert_eq!(
                got.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                hex,
                "blob {digest} does not match its digest"
            );
            bytes
        };
        let json_of = |bytes: &[u8]| -> Value { serde_json::from_slice(bytes).unwrap() };
        assert!(
            file("oci-layout").starts_with(br#"{"imageLayoutVersion""#),
            "not an OCI layout"
        );
        let index = json_of(file("index.json"));
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
        let desc = &manifests[0];
        let name = desc["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .expect("the image has a name")
            .to_owned();
        let manifest = json_of(&blob(desc["digest"].as_str().unwrap()));
        let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
        let config = json_of(&blob(&config_digest));
        let layers = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| blob(l["digest"].as_str().unwrap()))
            .collect();
        OciArchive {
            name,
            config,
            config_digest,
            layers,
        }
    }
}

/// One entry of a layer: path, tar entry type, mode, contents.
struct LayerEntry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    bytes: Vec<u8>,
}

fn layer_entries(gz: &[u8]) -> Vec<LayerEntry> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let kind = e.header().entry_type();
            let mode = e.header().mode().unwrap();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            LayerEntry {
                path: path.trim_start_matches("./").to_owned(),
                kind,
                mode,
                bytes,
            }
        })
        .collect()
}

/// Whether an ELF64 little-endian executable has a program interpreter
/// (`PT_INTERP`), i.e. needs a dynamic loader and shared libraries.
fn elf_has_interpreter(elf: &[u8]) -> bool {
    assert!(
        elf.len() > 64 && elf.starts_with(b"\x7fELF\x02\x01"),
        "not an ELF64 LE file"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

/// The shipped DaemonSet and its ConfigMap as `manifests/overlays/secret-volume`
/// renders them: the base's pod with the Secret as a mounted volume. The
/// base itself reads the Secret through the API as its ServiceAccount, which
/// needs an in-cluster API server this node does not have; that path is
/// `--test api_secret`'s (same binary, same watch, a ServiceAccount token).
fn shipped_pod() -> (PodSpec, ConfigMap) {
    let text = integration_tests::rbac::kustomize(
        &workspace_dir().join("manifests/overlays/secret-volume"),
    );
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("overlays/secret-volume renders no {kind}"))
            .clone()
    };
    let ds: DaemonSet = serde_yaml::from_value(of("DaemonSet")).unwrap();
    let cm: ConfigMap = serde_yaml::from_value(of("ConfigMap")).unwrap();
    let spec = ds.spec.unwrap().template.spec.unwrap();
    (spec, cm)
}

fn agent_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1, "one container in the DaemonSet");
    &spec.containers[0]
}

/// A Docker Hub short name as a CRI resolves it: `name:tag` becomes
/// `docker.io/library/name:tag`.
fn normalized(image: &str) -> String {
    match image.split_once('/') {
        None => format!("docker.io/library/{image}"),
        Some((host, _)) if host.contains('.') || host.contains(':') => image.to_owned(),
        Some(_) => format!("docker.io/{image}"),
    }
}

#[test]
fn the_image_is_the_static_binary_alone_named_as_the_daemonset_pulls_it() {
    let archive = OciArchive::read(&image_archive());
    let (spec, _) = shipped_pod();
    let container = agent_container(&spec);
    let image = container.image.as_deref().unwrap();

    assert_eq!(archive.name, normalized(image), "the archive's image name");
    assert_eq!(
        image.rsplit_once(':').map(|(_, tag)| tag),
        Some(env!("CARGO_PKG_VERSION")),
        "the DaemonSet's image tag is the workspace version"
    );

    assert_eq!(archive.layers.len(), 1, "one layer");
    let entries = layer_entries(&archive.layers[0]);
    let files: Vec<&LayerEntry> = entries
        .iter()
        .filter(|e| e.kind != tar::EntryType::Directory)
        .collect();
    assert_eq!(
        files
            .iter()
            .map(|e| (e.path.as_str(), e.kind))
            .collect::<Vec<_>>(),
        vec![("usr/bin/node-cert-agent", tar::EntryType::Regular)],
        "the image holds the binary and nothing else (no shell, no libraries)"
    );
    let binary = files[0];
    assert_eq!(binary.mode & 0o7777, 0o755, "the binary's mode");
    assert!(
        !elf_has_interpreter(&binary.bytes),
        "the binary needs a dynamic loader: it cannot run on a scratch base"
    );

    let config = &archive.config;
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/bin/node-cert-agent"])
    );
    assert_eq!(config["config"]["User"], "0:0", "uid 0, said explicitly");
}

/// Every Linux capability, by the names containerd's `ctr` takes: all are
/// dropped from the container the node's containerd generates the
/// RuntimeDefault profile for, as the DaemonSet drops `ALL` (the default
/// profile allows some system calls only with some capabilities).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The provisioned registry CA's anchor (a node path).
const PROVISIONED_ANCHOR: &str = "/usr/local/share/ca-certificates/provisioned-registry-ca.crt";

/// Puts `ca` into the trust store of the node root `root` before its first
/// boot, as node provisioning does: an anchor, then the node's own
/// `update-ca-certificates` (chrooted), so containerd starts trusting it.
fn provision_ca(root: &Path, ca: &TestCa) {
    let anchor = root.join(PROVISIONED_ANCHOR.trim_start_matches('/'));
    std::fs::create_dir_all(anchor.parent().unwrap()).unwrap();
    std::fs::write(&anchor, ca.cert_pem()).unwrap();
    let out = std::process::Command::new("chroot")
        .arg(root)
        .arg("update-ca-certificates")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "update-ca-certificates in the node root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A container the node's containerd made from the pulled image, with its
/// own default seccomp profile and no capability (`ctr containers create
/// --seccomp --cap-drop ...`): where the pod's RuntimeDefault profile and
/// its root filesystem (the container's snapshot of the image) come from.
/// Never started; deleted (with its snapshot) on drop.
struct ImageContainer<'n> {
    node: &'n Node,
    id: String,
}

impl<'n> ImageContainer<'n> {
    fn create(node: &'n Node, image: &str, id: &str) -> ImageContainer<'n> {
        let mut args = String::from("containers create --snapshotter native --seccomp");
        for cap in ALL_CAPABILITIES {
            args.push_str(" --cap-drop ");
            args.push_str(cap);
        }
        args.push_str(&format!(" {image} {id}"));
        ctr(node, &args);
        ImageContainer {
            node,
            id: id.to_owned(),
        }
    }

    /// The OCI spec containerd generated for it.
    fn spec(&self) -> Value {
        serde_json::from_str(&ctr(
            self.node,
            &format!("containers info --spec {}", self.id),
        ))
        .unwrap()
    }

    /// The seccomp profile containerd generated for a container without
    /// capabilities: what its CRI applies for `seccompProfile:
    /// RuntimeDefault` to the DaemonSet's container.
    fn runtime_default_profile(&self) -> Value {
        let spec = self.spec();
        let caps = &spec["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            assert!(
                caps[set].as_array().is_none_or(Vec::is_empty),
                "the profile's container kept capabilities in {set}: {caps}"
            );
        }
        let profile = spec["linux"]["seccomp"].clone();
        assert_eq!(
            profile["defaultAction"], "SCMP_ACT_ERRNO",
            "containerd's default profile refuses what it does not list: {profile}"
        );
        let allowed: Vec<&str> = profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().unwrap().iter())
            .filter_map(Value::as_str)
            .collect();
        for gated in ["mount", "unshare", "chroot", "bpf"] {
            assert!(
                !allowed.contains(&gated),
                "{gated} is allowed: not the profile of a container without capabilities"
            );
        }
        assert!(allowed.contains(&"read") && allowed.contains(&"epoll_wait"));
        profile
    }

    /// Its root filesystem: the directory of its native snapshot (what
    /// `ctr snapshots mounts` binds).
    fn rootfs(&self) -> String {
        let mounts = ctr(
            self.node,
            &format!(
                "snapshots --snapshotter native mounts /nca-unused {}",
                self.id
            ),
        );
        // `mount -t bind <source> /nca-unused -o rbind,rw`
        let words: Vec<&str> = mounts.split_whitespace().collect();
        assert!(
            words.len() >= 4 && words[..3] == ["mount", "-t", "bind"],
            "unexpected snapshot mounts: {mounts}"
        );
        words[3].to_owned()
    }
}

impl Drop for ImageContainer<'_> {
    fn drop(&mut self) {
        let _ = self
            .node
            .exec(&ctr_argv(&format!("containers rm {}", self.id)));
    }
}

/// A container run by the node's containerd from an OCI spec (`ctr run
/// --config`, which hands the spec to runc as the CRI plugin does); deleted
/// on drop.
struct PodContainer<'n> {
    node: &'n Node,
    id: String,
    /// The container's stdout and stderr, a node path.
    log: String,
}

impl<'n> PodContainer<'n> {
    /// `ctr run --detach` of the OCI spec at `spec` (node paths).
    fn start(node: &'n Node, id: &str, spec: &str, log: &str) -> PodContainer<'n> {
        ctr(
            node,
            &format!("run --detach --log-uri file://{log} --config {spec} {id}"),
        );
        PodContainer {
            node,
            id: id.to_owned(),
            log: log.to_owned(),
        }
    }

    fn logs(&self) -> Vec<LogEntry> {
        read_json_log(&self.node.host_path(&self.log))
    }

    /// The task's status as `ctr task ls` shows it (`RUNNING`, `STOPPED`).
    fn status(&self) -> String {
        ctr(self.node, "task ls")
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&self.id.as_str())).then(|| f.get(2).unwrap_or(&"").to_string())
            })
            .unwrap_or_default()
    }

    /// Removes the stopped task; its exit status (`ctr task rm` exits with it).
    fn exit_status(&self) -> i32 {
        let out = self.node.exec(&ctr_argv(&format!("task rm {}", self.id)));
        out.status.code().unwrap_or(-1)
    }

    /// The container's main process, as a pid of this (the host's) pid
    /// namespace: the `node-cert-agent` process in the container's cgroup.
    fn host_pid(&self) -> u32 {
        let cgroup = format!(":/k8s.io/{}\n", self.id);
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}"));
                read("comm").is_ok_and(|c| c.trim() == "node-cert-agent")
                    && read("cgroup").is_ok_and(|c| c.contains(&cgroup))
            })
            .unwrap_or_else(|| panic!("no node-cert-agent process in cgroup /k8s.io/{}", self.id))
    }
}

impl Drop for PodContainer<'_> {
    fn drop(&mut self) {
        for args in [
            format!("task kill -s SIGKILL {}", self.id),
            format!("task rm -f {}", self.id),
            format!("container rm {}", self.id),
        ] {
            let _ = self.node.exec(&ctr_argv(&args));
        }
    }
}

/// `ctr -n k8s.io <args>` as an argv (`args` split at spaces).
fn ctr_argv(args: &str) -> Vec<&str> {
    ["ctr", "-n", "k8s.io"]
        .into_iter()
        .chain(args.split(' '))
        .collect()
}

/// Runs `ctr -n k8s.io <args>` in the node; panics if it fails. Its stdout.
fn ctr(node: &Node, args: &str) -> String {
    String::from_utf8_lossy(&node.exec_ok(&ctr_argv(args)).stdout).into_owned()
}

/// The runtime mounts for the container's volumeMounts, made as kubelet
/// would (node paths): hostPath volumes as they are (DirectoryOrCreate ones
/// created), the ConfigMap's data as files under `work`, the Secret volume
/// at `secret`. Ordered parents first, as containerd orders a pod's mounts.
fn pod_mounts(
    node: &Node,
    spec: &PodSpec,
    container: &Container,
    cm: &ConfigMap,
    work: &str,
    secret: &str,
) -> Vec<Value> {
    let volumes: BTreeMap<&str, &Volume> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let v = volumes
            .get(m.name.as_str())
            .unwrap_or_else(|| panic!("volumeMount {} has no volume", m.name));
        let source = if let Some(hp) = &v.host_path {
            let on_host = node.host_path(&hp.path);
            match hp.type_.as_deref() {
                Some("DirectoryOrCreate") => std::fs::create_dir_all(&on_host).unwrap(),
                Some("Directory") => assert!(on_host.is_dir(), "{}: not a directory", hp.path),
                Some("Socket") => assert!(
                    std::fs::symlink_metadata(&on_host).is_ok(),
                    "{}: the node has no such socket",
                    hp.path
                ),
                other => panic!("hostPath type {other:?} of {} not handled", m.name),
            }
            hp.path.clone()
        } else if let Some(c) = &v.config_map {
            assert_eq!(c.name, cm.metadata.name.clone().unwrap());
            let dir = format!("{work}/configmap-{}", m.name);
            std::fs::create_dir_all(node.host_path(&dir)).unwrap();
            for (k, val) in cm.data.iter().flatten() {
                std::fs::write(node.host_path(&format!("{dir}/{k}")), val).unwrap();
            }
            dir
        } else if v.secret.is_some() {
            secret.to_owned()
        } else {
            panic!("volume {} of a kind this test does not make", m.name)
        };
        let ro = if m.read_only == Some(true) {
            "ro"
        } else {
            "rw"
        };
        mounts.push(json!({
            "destination": m.mount_path,
            "type": "bind",
            "source": source,
            "options": ["rbind", "rprivate", ro],
        }));
    }
    mounts.sort_by_key(|m| m["destination"].as_str().unwrap().matches('/').count());
    mounts
}

/// The OCI runtime spec for the DaemonSet's container on `node`, with
/// `seccomp` as its profile and `args` instead of the container's own (its
/// `args:`) when given.
fn runtime_spec(
    node: &Node,
    id: &str,
    (spec, cm): (&PodSpec, &ConfigMap),
    (work, secret, rootfs): (&str, &str, &str),
    (image_config, seccomp): (&Value, &Value),
    args_override: Option<&[String]>,
) -> Value {
    let c = agent_container(spec);
    let sc = c.security_context.as_ref().expect("a securityContext");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "the DaemonSet drops every capability"
    );
    assert!(caps.add.is_none(), "the DaemonSet adds no capability");
    assert_eq!(sc.privileged, Some(false));

    let mut args: Vec<String> = image_config["config"]["Entrypoint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    match args_override {
        Some(own) => args.extend(own.iter().cloned()),
        None => args.extend(c.args.iter().flatten().cloned()),
    }
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), None) => v.clone(),
            (None, Some(from)) => {
                let path = &from.field_ref.as_ref().expect("a fieldRef").field_path;
                assert_eq!(path, "spec.nodeName", "downward API field {path}");
                node.name().to_owned()
            }
            other => panic!("env {} not handled: {other:?}", e.name),
        };
        env.push(format!("{}={value}", e.name));
    }
    let no_caps: Vec<String> = Vec::new();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    mounts.extend(pod_mounts(node, spec, c, cm, work, secret));
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": sc.run_as_user.unwrap(), "gid": sc.run_as_group.unwrap()},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": no_caps, "effective": no_caps, "permitted": no_caps,
                "inheritable": no_caps, "ambient": no_caps,
            },
            "noNewPrivileges": sc.allow_privilege_escalation == Some(false),
        },
        "root": {"path": rootfs, "readonly": sc.read_only_root_filesystem == Some(true)},
        "hostname": "node-cert-agent",
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("/k8s.io/{id}"),
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"},
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "seccomp": seccomp,
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

/// An HTTP GET of `path` on the pod's own loopback (its network namespace,
/// entered by a thread of this process): the status line.
fn pod_http_get(pid: u32, path: &str) -> String {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let path = path.to_owned();
    std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT))
            .unwrap_or_else(|e| panic!("connecting to the pod's :{METRICS_PORT}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.lines().next().unwrap_or_default().to_owned()
    })
    .join()
    .unwrap()
}

/// `Name:\tvalue` of `/proc/<pid>/status`.
fn proc_status(pid: u32, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Writes the OCI spec for the DaemonSet's container (see [`runtime_spec`])
/// to `<work>/<id>.json` in the node; returns that node path.
fn write_spec(node: &Node, work: &str, id: &str, spec: &Value) -> String {
    let path = format!("{work}/{id}.json");
    std::fs::write(
        node.host_path(&path),
        serde_json::to_vec_pretty(spec).unwrap(),
    )
    .unwrap();
    path
}

#[test]
fn the_daemonset_pod_is_pulled_through_cri_and_runs_under_runtime_default() {
    let archive_path = image_archive();
    let archive = OciArchive::read(&archive_path);
    let (spec, cm) = shipped_pod();
    let image = agent_container(&spec).image.clone().unwrap();
    let grace =
        Duration::from_secs(u64::try_from(spec.termination_grace_period_seconds.unwrap()).unwrap());

    // Published as an operator does: skopeo to a TLS registry.
    let registry_ca = TestCa::new("nca image registry CA");
    let (cert, key) = registry_ca.issue_server_cert(&["registry.test", "localhost"]);
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(&cert, &key, storage.path());
    registry.push_oci_archive(&registry_ca.cert_pem(), &archive_path, &image);
    let pulled_as = registry.reference(&image);

    // Pulled as a node does: its trust store holds the registry's CA from
    // provisioning, and kubelet pulls through CRI.
    let node = Node::boot_for_containers_with("img-pod", |root| provision_ca(root, &registry_ca));
    observe::assert_trusted(&node, &registry_ca, "the provisioned registry CA");
    let pull = Instant::now();
    let image_id =
        cri_pull(&node, &pulled_as).unwrap_or_else(|e| panic!("CRI PullImage {pulled_as}: {e}"));
    let pulled_in = pull.elapsed();
    assert_eq!(
        image_id, archive.config_digest,
        "the node pulled another image than the one built"
    );

    // RuntimeDefault, as the node's containerd generates it, and the
    // pulled image's root filesystem.
    let id = format!("nca-pod-{}", node.name());
    let from_image = ImageContainer::create(&node, &pulled_as, &format!("{id}-image"));
    let profile = from_image.runtime_default_profile();
    let rootfs = from_image.rootfs();

    let work = "/var/lib/nca-image-pod";
    std::fs::create_dir_all(node.host_path(work)).unwrap();
    let secret_dir = format!("{work}/secret");
    let secret = SecretVolume::new(node.host_path(&secret_dir));
    let oci_spec = runtime_spec(
        &node,
        &id,
        (&spec, &cm),
        (work, &secret_dir, &rootfs),
        (&archive.config, &profile),
        None,
    );
    let spec_path = write_spec(&node, work, &id, &oci_spec);
    let started = Instant::now();
    let pod = PodContainer::start(&node, &id, &spec_path, &format!("{work}/pod.log"));
    let diag = || format!("--- pod log ---\n{}", render_tail(&pod.logs(), 30));
    wait_until(POD_TIMEOUT, "the pod's first pass", || {
        count_passes(&pod.logs()) >= 1
    });
    let first_pass = started.elapsed();
    assert_eq!(pod.status(), "RUNNING", "{}", diag());
    let pid = pod.host_pid();

    // uid 0, no capability at all, no new privileges, and seccomp filters
    // of its own: more than the node's own processes have (containerd's),
    // so they come from the pod's profile.
    assert!(proc_status(pid, "Uid").starts_with("0\t0\t0\t0"), "uid");
    assert_eq!(
        proc_status(pid, "CapEff"),
        "0000000000000000",
        "effective caps"
    );
    assert_eq!(
        proc_status(pid, "CapBnd"),
        "0000000000000000",
        "bounding caps"
    );
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(proc_status(pid, "Seccomp"), "2", "seccomp filter mode");
    let filters = |p: u32| -> u32 { proc_status(p, "Seccomp_filters").parse().unwrap() };
    let node_filters = filters(node.main_pid("containerd"));
    println!(
        "[image] pulled {pulled_as} as {image_id}; RuntimeDefault: {} rules, default {}; \
         seccomp filters: pod {}, node {node_filters}",
        profile["syscalls"].as_array().map_or(0, Vec::len),
        profile["defaultAction"],
        filters(pid)
    );
    assert!(
        filters(pid) > node_filters,
        "the pod has {} seccomp filters, no more than the node's own processes ({node_filters}): \
         the RuntimeDefault profile is not applied",
        filters(pid)
    );

    // The probes, on the pod's own network.
    assert!(pod_http_get(pid, "/healthz").contains(" 200"), "{}", diag());
    wait_until(POD_TIMEOUT, "/readyz to answer 200", || {
        pod_http_get(pid, "/readyz").contains(" 200")
    });
    println!(
        "[image] CRI pull {pulled_in:?}; from `ctr run` to the pod's first pass {first_pass:?}, \
         to /readyz 200 {:?}",
        started.elapsed()
    );

    // The job: a CA published in the Secret reaches the node's bundle, with
    // one containerd restart, through the node's systemd over the mounted
    // D-Bus socket. The pod outlives the restart of the containerd that
    // runs it, as pods do.
    let ca = TestCa::new("nca image pod CA");
    let before = ContainerdState::of(&node);
    let passes = count_passes(&pod.logs());
    secret.publish(&BTreeMap::from([(
        "ca1.crt".to_owned(),
        ca.cert_pem().into_bytes(),
    )]));
    wait_until(POD_TIMEOUT, "a pass after the publish", || {
        count_passes(&pod.logs()) > passes
    });
    observe::assert_trusted(&node, &ca, "CA published to the image's pod");
    let fingerprint = ca.sha256_fingerprint();
    assert!(
        pod.logs()
            .iter()
            .any(|e| e.message.starts_with("installed CA") && e.message.contains(&fingerprint)),
        "no `installed CA` line naming {fingerprint}:\n{}",
        diag()
    );
    before.assert_restarted_once(&node, "CA published to the image's pod");
    assert!(
        !pod.logs().iter().any(|e| e.error),
        "the pod logged errors (a system call refused by the profile shows up here):\n{}",
        diag()
    );
    assert_eq!(pod.host_pid(), pid, "the pod kept running");

    // SIGTERM (what kubelet sends): the pod drains and exits 0 within the
    // grace period, before kubelet would SIGKILL it.
    let term = Instant::now();
    ctr(&node, &format!("task kill -s SIGTERM {id}"));
    wait_until(grace, "the pod to exit on SIGTERM", || {
        pod.status() == "STOPPED"
    });
    let stopped_in = term.elapsed();
    assert!(stopped_in < grace, "stopped after {stopped_in:?}");
    assert_eq!(pod.exit_status(), 0, "exit status on SIGTERM\n{}", diag());
    println!("[image] the pod stopped {stopped_in:?} after SIGTERM");

    // The same image and pod spec, with `uninstall` as its command: the
    // agent's CA leaves the bundle, with one containerd restart; the
    // provisioned CA (not the agent's) stays.
    let config = agent_container(&spec)
        .args
        .clone()
        .unwrap()
        .into_iter()
        .skip_while(|a| a != "--config")
        .nth(1)
        .expect("the DaemonSet's args name its --config");
    let before = ContainerdState::of(&node);
    let uninstall_id = format!("{id}-uninstall");
    let uninstall_spec = runtime_spec(
        &node,
        &uninstall_id,
        (&spec, &cm),
        (work, &secret_dir, &rootfs),
        (&archive.config, &profile),
        Some(&["uninstall".to_owned(), "--config".to_owned(), config]),
    );
    let uninstall_path = write_spec(&node, work, &uninstall_id, &uninstall_spec);
    let uninstall = PodContainer::start(
        &node,
        &uninstall_id,
        &uninstall_path,
        &format!("{work}/uninstall.log"),
    );
    let uninstall_log =
        || std::fs::read_to_string(node.host_path(&uninstall.log)).unwrap_or_default();
    wait_until(Duration::from_secs(60), "`uninstall` to finish", || {
        uninstall.status() == "STOPPED"
    });
    assert_eq!(
        uninstall.exit_status(),
        0,
        "uninstall's exit status; its log:\n{}",
        uninstall_log()
    );
    observe::assert_not_trusted(&node, &ca, "after `uninstall` from the image");
    observe::assert_trusted(&node, &registry_ca, "the provisioned CA after `uninstall`");
    before.assert_restarted_once(&node, "`uninstall` from the image");
    assert!(
        uninstall_log().contains(&fingerprint),
        "uninstall does not name the CA it removed:\n{}",
        uninstall_log()
    );
}
