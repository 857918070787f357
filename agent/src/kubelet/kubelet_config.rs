//! kubelet's effective configuration, as far as the agent reads it: whether
//! kubelet rotates its certificates itself, and which serving certificate
//! file it serves.
//!
//! kubelet takes these from its command line (flags win), its `--config-dir`
//! drop-ins (`*.conf`, in lexical order, each over the last), and its
//! `--config` file. The command line is the kubelet unit's `ExecStart` over
//! D-Bus, expanded the way systemd expands it (`${VAR}` in place, a
//! `$VAR` word split at whitespace) with the unit's `Environment=` and
//! `EnvironmentFiles=` (files override `Environment=`). Where the command
//! line names no `--config`, the agent's `kubelet.kubelet-config` path is
//! read.
//!
//! Boundary: parsing is pure ([`expand_command_line`], [`KubeletFlags`],
//! [`parse_environment_file`], [`ConfigKeys::parse`]); reading goes through
//! the [`HostRoot`]. It never asks systemd itself: the caller passes the
//! unit's [`UnitExec`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::node::fsutil;
use crate::node::hostroot::HostRoot;
use crate::node::systemd::UnitExec;

/// A kubelet config file is a few KiB; the cap keeps a wrong path from
/// being read whole.
const MAX_KUBELET_CONFIG_BYTES: u64 = 1024 * 1024;

/// At most this many drop-ins are read from `--config-dir`.
const MAX_DROP_INS: usize = 64;

/// The latest point of a certificate's lifetime at which kubelet rotates
/// its own client certificate: client-go's certificate manager picks
/// `notBefore + lifetime × U[0.7, 0.9)` (`nextRotationDeadline`,
/// `wait.Jitter(total, 0.2) - 0.3 × total`). Only past it is a certificate
/// that kubelet rotates overdue.
pub const KUBELET_ROTATION_FRACTION_MAX: f64 = 0.90;

/// kubelet's own certificate rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelfRotation {
    /// `rotateCertificates` / `--rotate-certificates`: kubelet renews its
    /// client certificate.
    pub client: bool,
    /// `serverTLSBootstrap` / `--rotate-server-certificates`: kubelet
    /// requests its serving certificate.
    pub serving: bool,
}

impl SelfRotation {
    /// Parses one config file's text; anything unreadable is "no rotation".
    pub fn parse(text: &str) -> Self {
        let keys = ConfigKeys::parse(text);
        Self {
            client: keys.rotate_certificates == Some(true),
            serving: keys.server_tls_bootstrap == Some(true),
        }
    }

    /// Reads the config file at `node_path` alone; a missing or unreadable
    /// file is "no rotation".
    pub fn read(host: &HostRoot, node_path: &Path) -> Self {
        Self::parse(&read_text(host, node_path).unwrap_or_default())
    }
}

/// The keys the agent takes from a kubelet config file (or drop-in); `None`
/// where the file does not set one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigKeys {
    pub rotate_certificates: Option<bool>,
    pub server_tls_bootstrap: Option<bool>,
    pub tls_cert_file: Option<PathBuf>,
    /// `featureGates.ReloadKubeletServerCertificateFile`.
    pub serving_reload_gate: Option<bool>,
}

/// The feature gate with which kubelet reloads its serving certificate file.
pub const SERVING_RELOAD_GATE: &str = "ReloadKubeletServerCertificateFile";

impl ConfigKeys {
    /// Parses a KubeletConfiguration's text; what is not YAML, or not of
    /// the expected type, is unset.
    pub fn parse(text: &str) -> Self {
        let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
            return Self::default();
        };
        let flag = |k: &str| v.get(k).and_then(serde_yaml::Value::as_bool);
        Self {
            rotate_certificates: flag("rotateCertificates"),
            server_tls_bootstrap: flag("serverTLSBootstrap"),
            tls_cert_file: v
                .get("tlsCertFile")
                .and_then(serde_yaml::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            serving_reload_gate: v
                .get("featureGates")
                .and_then(|g| g.get(SERVING_RELOAD_GATE))
                .and_then(serde_yaml::Value::as_bool),
        }
    }

    /// `over`'s keys where it sets them, else these.
    fn merged(self, over: ConfigKeys) -> Self {
        Self {
            rotate_certificates: over.rotate_certificates.or(self.rotate_certificates),
            server_tls_bootstrap: over.server_tls_bootstrap.or(self.server_tls_bootstrap),
            tls_cert_file: over.tls_cert_file.or(self.tls_cert_file),
            serving_reload_gate: over.serving_reload_gate.or(self.serving_reload_gate),
        }
    }
}

/// The kubelet flags the agent reads, from an expanded command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeletFlags {
    pub config: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub rotate_certificates: Option<bool>,
    pub rotate_server_certificates: Option<bool>,
    pub tls_cert_file: Option<PathBuf>,
    /// [`SERVING_RELOAD_GATE`] in `--feature-gates`.
    pub serving_reload_gate: Option<bool>,
}

impl KubeletFlags {
    /// Parses kubelet's arguments (program name first) as pflag does:
    /// `--name=value` or `--name value`, a bool flag alone is true, `_` in
    /// a name is `-`, the last occurrence wins, and `--` ends the flags.
    pub fn parse(argv: &[String]) -> Self {
        let mut flags = Self::default();
        let mut args = argv.iter().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--" {
                break;
            }
            let Some(body) = arg.strip_prefix("--") else {
                continue;
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n.replace('_', "-"), Some(v.to_string())),
                None => (body.replace('_', "-"), None),
            };
            let mut value = |inline: Option<String>| inline.or_else(|| args.next().cloned());
            match name.as_str() {
                "config" => flags.config = value(inline).map(PathBuf::from),
                "config-dir" => flags.config_dir = value(inline).map(PathBuf::from),
                "tls-cert-file" => flags.tls_cert_file = value(inline).map(PathBuf::from),
                "rotate-certificates" => flags.rotate_certificates = parse_bool_flag(inline),
                "rotate-server-certificates" => {
                    flags.rotate_server_certificates = parse_bool_flag(inline)
                }
                "feature-gates" => {
                    // `A=true,B=false`; a later flag adds to the earlier.
                    for gate in value(inline).unwrap_or_default().split(',') {
                        if let Some((name, v)) = gate.split_once('=') {
                            if name.trim() == SERVING_RELOAD_GATE {
                                flags.serving_reload_gate = parse_bool_flag(Some(v.trim().into()));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        flags
    }
}

/// A pflag bool: alone it is true; `=value` as Go's `strconv.ParseBool`.
/// A value Go would refuse leaves the flag unset (kubelet would not start).
fn parse_bool_flag(inline: Option<String>) -> Option<bool> {
    match inline.as_deref() {
        None => Some(true),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Some(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Some(false),
        Some(_) => None,
    }
}

/// Parses a systemd environment file: `NAME=value` lines; `#` and `;`
/// start comments; a value in single or double quotes loses them (double
/// quotes keep `\"` and `\\` escapes); unquoted values lose surrounding
/// whitespace; a trailing `\` continues the line.
pub fn parse_environment_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            logical.push_str(head);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let entry = entry.trim_start();
        if entry.is_empty() || entry.starts_with('#') || entry.starts_with(';') {
            continue;
        }
        let Some((name, value)) = entry.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        out.push((name.to_string(), unquote(value.trim())));
    }
    out
}

fn unquote(value: &str) -> String {
    let quoted = |q: char| value.len() >= 2 && value.starts_with(q) && value.ends_with(q);
    if quoted('\'') {
        return value[1..value.len() - 1].to_string();
    }
    if quoted('"') {
        let inner = &value[1..value.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(n @ ('"' | '\\' | '$' | '`')) => out.push(n),
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    value.to_string()
}

/// The environment a unit's command line is expanded with:
/// `Environment=` assignments, then each environment file's over them.
pub fn unit_environment(
    exec: &UnitExec,
    file_text: impl Fn(&Path) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for assignment in &exec.environment {
        if let Some((k, v)) = assignment.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    for (file, _may_be_missing) in &exec.environment_files {
        if let Some(text) = file_text(Path::new(file)) {
            env.extend(parse_environment_file(&text));
        }
    }
    env
}

/// `argv` as systemd runs it: a word that is exactly `$NAME` becomes the
/// variable's value split at whitespace (no word if unset or empty);
/// `${NAME}` anywhere in a word is replaced in place (empty if unset); `$$`
/// is a `$`.
pub fn expand_command_line(argv: &[String], env: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for word in argv {
        if let Some(name) = word.strip_prefix('$').filter(|n| is_name(n)) {
            if let Some(v) = env.get(name) {
                out.extend(split_unquoted(v));
            }
            continue;
        }
        out.push(expand_braced(word, env));
    }
    out
}

/// A `$VAR` value split into words as systemd splits it (`EXTRACT_UNQUOTE
/// | EXTRACT_RELAX`): at whitespace outside quotes; single and double
/// quotes removed; a backslash escapes the next character.
fn split_unquoted(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                in_word = true;
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            (_, c) => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn expand_braced(word: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('{')
            .and_then(|a| a.split_once('}'))
            .filter(|(n, _)| is_name(n))
        {
            out.push_str(env.get(name).map(String::as_str).unwrap_or(""));
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What kubelet runs with, as the agent reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectiveKubelet {
    pub rotation: SelfRotation,
    /// The serving certificate file kubelet serves (`tlsCertFile` or
    /// `--tls-cert-file`); `None` when kubelet uses its own
    /// (`kubelet-server-current.pem` or a self-signed one).
    pub tls_cert_file: Option<PathBuf>,
    /// [`SERVING_RELOAD_GATE`] as set (`None`: kubelet's default).
    pub serving_reload_gate: Option<bool>,
    /// The config file read (node path); `None` when kubelet's command
    /// line is known and names none (kubelet then reads no file).
    pub config_file: Option<PathBuf>,
    /// Whether kubelet's command line was known (else only the config file
    /// counted).
    pub command_line_known: bool,
}

impl EffectiveKubelet {
    /// Reads kubelet's effective settings: `exec` is the kubelet unit's
    /// (`None` when systemd could not be asked), `default_config` the file
    /// read when the command line names none.
    pub fn read(host: &HostRoot, exec: Option<&UnitExec>, default_config: &Path) -> Self {
        // Only a command line that runs kubelet itself says kubelet's flags
        // (a wrapper, `sh -c ...`, hides them: then it is unknown).
        let flags = exec
            .filter(|e| {
                e.argv
                    .first()
                    .and_then(|p| Path::new(p).file_name())
                    .is_some_and(|n| n == "kubelet")
            })
            .map(|e| {
                let env = unit_environment(e, |p| read_text(host, p));
                KubeletFlags::parse(&expand_command_line(&e.argv, &env))
            });
        let config_file = match &flags {
            Some(f) => f.config.clone(),
            None => Some(default_config.to_path_buf()),
        };
        let mut keys = config_file
            .as_ref()
            .and_then(|c| read_text(host, c))
            .map(|t| ConfigKeys::parse(&t))
            .unwrap_or_default();
        if let Some(dir) = flags.as_ref().and_then(|f| f.config_dir.as_ref()) {
            for drop_in in drop_ins(host, dir) {
                if let Some(t) = read_text(host, &drop_in) {
                    keys = keys.merged(ConfigKeys::parse(&t));
                }
            }
        }
        let f = flags.clone().unwrap_or_default();
        Self {
            rotation: SelfRotation {
                client: f
                    .rotate_certificates
                    .or(keys.rotate_certificates)
                    .unwrap_or(false),
                serving: f
                    .rotate_server_certificates
                    .or(keys.server_tls_bootstrap)
                    .unwrap_or(false),
            },
            tls_cert_file: f.tls_cert_file.or(keys.tls_cert_file),
            serving_reload_gate: f.serving_reload_gate.or(keys.serving_reload_gate),
            config_file,
            command_line_known: flags.is_some(),
        }
    }
}

/// The `*.conf` files of drop-in directory `dir` (node path), in lexical
/// order, as kubelet reads them.
fn drop_ins(host: &HostRoot, dir: &Path) -> Vec<PathBuf> {
    let Ok(host_dir) = host.resolve(dir) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&host_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    names.sort();
    names.truncate(MAX_DROP_INS);
    names.into_iter().map(|n| dir.join(n)).collect()
}

fn read_text(host: &HostRoot, node_path: &Path) -> Option<String> {
    host.resolve(node_path)
        .ok()
        .and_then(|p| fsutil::read_limited(&p, MAX_KUBELET_CONFIG_BYTES).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn flags_are_read_and_anything_else_is_off() {
        let r = SelfRotation::parse("rotateCertificates: true\nserverTLSBootstrap: true\n");
        assert!(r.client && r.serving);
        assert_eq!(
            SelfRotation::parse("rotateCertificates: \"true\"\n"),
            SelfRotation::default()
        );
        assert_eq!(SelfRotation::parse(": not yaml ["), SelfRotation::default());
    }

    #[test]
    fn kubelet_flags_are_parsed_as_pflag_does() {
        let f = KubeletFlags::parse(&words(
            "/usr/bin/kubelet --config /etc/k/c.yaml --config-dir=/etc/k/d --rotate-certificates --rotate_server_certificates=false --tls-cert-file /x.pem --feature-gates=A=true,ReloadKubeletServerCertificateFile=false",
        ));
        assert_eq!(f.serving_reload_gate, Some(false));
        assert_eq!(f.config, Some(PathBuf::from("/etc/k/c.yaml")));
        assert_eq!(f.config_dir, Some(PathBuf::from("/etc/k/d")));
        assert_eq!(f.rotate_certificates, Some(true));
        assert_eq!(f.rotate_server_certificates, Some(false));
        assert_eq!(f.tls_cert_file, Some(PathBuf::from("/x.pem")));
        // The last occurrence wins; a bool never takes the next word.
        let f = KubeletFlags::parse(&words(
            "kubelet --rotate-certificates=false --rotate-certificates --v 2",
        ));
        assert_eq!(f.rotate_certificates, Some(true));
        let f = KubeletFlags::parse(&words("kubelet --rotate-certificates=maybe"));
        assert_eq!(f.rotate_certificates, None);
        let f = KubeletFlags::parse(&words("kubelet -- --rotate-certificates"));
        assert_eq!(f.rotate_certificates, None);
    }

    #[test]
    fn command_lines_expand_as_systemd_expands_them() {
        let env: BTreeMap<String, String> = [
            ("A", "--config=/c.yaml  --rotate-certificates"),
            ("B", "x y"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // A $VAR word is unquoted as systemd unquotes it.
        let quoted: BTreeMap<String, String> = [(
            "Q".to_string(),
            r#"--config="/etc/k/a b.yaml" '--x=1 2' --y=\"z"#.to_string(),
        )]
        .into();
        assert_eq!(
            expand_command_line(&words("kubelet $Q"), &quoted),
            vec!["kubelet", "--config=/etc/k/a b.yaml", "--x=1 2", "--y=\"z"]
        );
        let argv = words("/usr/bin/kubelet $A ${B} --p=${B}z $UNSET ${UNSET} $$A $5");
        assert_eq!(
            expand_command_line(&argv, &env),
            vec![
                "/usr/bin/kubelet",
                "--config=/c.yaml",
                "--rotate-certificates",
                "x y",
                "--p=x yz",
                "",
                "$A",
                "$5"
            ]
        );
    }

    #[test]
    fn environment_files_are_parsed_as_systemd_does() {
        let text = "# kubeadm\nKUBELET_KUBEADM_ARGS=\"--a=1 --b=\\\"q\\\"\"\n; c\n  X = 'lit $Y' \nBAD NAME=1\nLONG=a \\\nb\nnoequals\n";
        let env = parse_environment_file(text);
        assert_eq!(
            env,
            vec![
                ("KUBELET_KUBEADM_ARGS".into(), "--a=1 --b=\"q\"".into()),
                ("X".into(), "lit $Y".into()),
                ("LONG".into(), "a b".into()),
            ]
        );
    }

    #[test]
    fn flags_win_over_drop_ins_which_win_over_the_config_file() {
        let root = tempfile::tempdir().unwrap();
        let host = HostRoot::new(root.path()).unwrap();
        let w = |p: &str, t: &str| {
            let path = root.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        };
        w(
            "/etc/kubelet/config.yaml",
            "rotateCertificates: true\nserverTLSBootstrap: false\ntlsCertFile: /a.pem\n",
        );
        w("/etc/kubelet/d/20-b.conf", "serverTLSBootstrap: false\n");
        w(
            "/etc/kubelet/d/10-a.conf",
            "serverTLSBootstrap: true\nrotateCertificates: false\n",
        );
        w("/etc/kubelet/d/30-c.yaml", "tlsCertFile: /ignored.pem\n");
        w(
            "/etc/default/kubelet",
            "KUBELET_EXTRA_ARGS=--rotate-certificates\n",
        );
        let exec = UnitExec {
            argv: words("/usr/bin/kubelet $KUBELET_CONFIG_ARGS $KUBELET_EXTRA_ARGS"),
            environment: vec![
                "KUBELET_CONFIG_ARGS=--config=/etc/kubelet/config.yaml --config-dir=/etc/kubelet/d"
                    .into(),
            ],
            environment_files: vec![
                ("/etc/default/kubelet".into(), true),
                ("/missing".into(), true),
            ],
        };
        let default = Path::new("/var/lib/kubelet/config.yaml");
        let e = EffectiveKubelet::read(&host, Some(&exec), default);
        assert_eq!(
            e.config_file,
            Some(PathBuf::from("/etc/kubelet/config.yaml"))
        );
        // 10-a turns client rotation off, the flag on again; 20-b turns
        // serving off after 10-a turned it on.
        assert_eq!(
            e.rotation,
            SelfRotation {
                client: true,
                serving: false
            }
        );
        assert_eq!(e.tls_cert_file, Some(PathBuf::from("/a.pem")));
        assert!(e.command_line_known);

        // Without systemd's answer: the default config file alone.
        w("/var/lib/kubelet/config.yaml", "serverTLSBootstrap: true\n");
        let e = EffectiveKubelet::read(&host, None, default);
        assert_eq!(
            e.rotation,
            SelfRotation {
                client: false,
                serving: true
            }
        );
        assert!(!e.command_line_known);
        // kubelet without --config reads no config file: the default one
        // does not count.
        let bare = UnitExec {
            argv: words("/usr/bin/kubelet --rotate-certificates=true"),
            ..UnitExec::default()
        };
        let e = EffectiveKubelet::read(&host, Some(&bare), default);
        assert_eq!(
            e.rotation,
            SelfRotation {
                client: true,
                serving: false
            }
        );
        assert_eq!(e.config_file, None);
        // A wrapper hides kubelet's flags: unknown, the default file counts.
        let wrapped = UnitExec {
            argv: words("/bin/sh -c exec kubelet --rotate-certificates"),
            ..UnitExec::default()
        };
        let e = EffectiveKubelet::read(&host, Some(&wrapped), default);
        assert!(!e.command_line_known);
        assert_eq!(
            e.rotation,
            SelfRotation {
                client: false,
                serving: true
            }
        );
    }
}
