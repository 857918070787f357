//! Which Linux distribution family a node runs, and where that family keeps
//! its CA trust store.
//!
//! Pure: parses os-release(5) text handed in by the caller and maps it to a
//! [`Family`] and its [`TrustStoreLayout`]. Boundary: no file access (reading
//! `/etc/os-release` through the host root is the caller's job) and no command
//! execution (running the refresh command is the caller's job). Paths in the
//! layout are node paths, to be mapped through `hostroot::HostRoot`.

use std::path::PathBuf;

/// Name prefix of every anchor file the agent owns. In `anchors_dir` the agent
/// only ever creates, replaces or removes files named
/// `node-cert-agent-*.<anchor_extension>`; everything else belongs to the node.
/// On Debian `anchors_dir` is a subdirectory dedicated to the agent, which it
/// owns entirely.
pub const ANCHOR_FILE_PREFIX: &str = "node-cert-agent-";

/// The fields of os-release(5) the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, lowercased; "linux" when absent, as os-release(5) specifies.
    pub id: String,
    /// `ID_LIKE`, split on whitespace and lowercased, most similar first.
    pub id_like: Vec<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
}

/// Parses os-release(5) text: `KEY=value` lines, `#` comments, blank lines;
/// values unquoted, `"double"` (with `\"` `\\` `\$` `` \` `` escapes) or
/// `'single'` quoted. Tolerant: malformed lines are skipped, because a node
/// with an odd os-release should still be identified by its good lines. A key
/// given twice keeps the last value, as a shell sourcing the file would.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut id = None;
    let mut id_like = Vec::new();
    let mut version_id = None;
    let mut pretty_name = None;
    for line in text.lines() {
        let Some((key, value)) = parse_line(line) else {
            continue;
        };
        match key {
            "ID" => id = Some(value.to_ascii_lowercase()),
            "ID_LIKE" => {
                id_like = value
                    .split_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect();
            }
            "VERSION_ID" => version_id = Some(value),
            "PRETTY_NAME" => pretty_name = Some(value),
            _ => {}
        }
    }
    OsRelease {
        id: id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| "linux".to_string()),
        id_like,
        version_id,
        pretty_name,
    }
}

/// One `KEY=value` line, or `None` for comments, blank and malformed lines.
fn parse_line(line: &str) -> Option<(&str, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (key, raw) = line.split_once('=')?;
    let valid_key = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_key {
        return None;
    }
    Some((key, parse_value(raw)?))
}

fn parse_value(raw: &str) -> Option<String> {
    let mut chars = raw.chars();
    let mut out = String::new();
    match chars.next() {
        None => return Some(out),
        Some('"') => loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    c @ ('"' | '\\' | '$' | '`') => out.push(c),
                    // Inside double quotes a shell keeps other backslashes.
                    c => {
                        out.push('\\');
                        out.push(c);
                    }
                },
                c => out.push(c),
            }
        },
        Some('\'') => loop {
            match chars.next()? {
                '\'' => break,
                c => out.push(c),
            }
        },
        Some(first) => {
            let mut next = Some(first);
            while let Some(c) = next {
                match c {
                    '\\' => out.push(chars.next()?),
                    // Unquoted whitespace or quotes would be shell syntax we
                    // do not emulate; treat the line as malformed.
                    c if c.is_whitespace() || c == '"' || c == '\'' => return None,
                    c => out.push(c),
                }
                next = chars.next();
            }
            return Some(out);
        }
    }
    // Anything after the closing quote is shell syntax we do not emulate.
    if chars.as_str().trim().is_empty() {
        Some(out)
    } else {
        None
    }
}

/// Node operating systems whose trust store no file-based agent can
/// manage (read-only, API-driven), with the platform's own mechanism for
/// custom CAs: `(os-release ID, name, what to use instead)`.
pub const MANAGED_PLATFORMS: &[(&str, &str, &str)] = &[
    (
        "bottlerocket",
        "Bottlerocket",
        "its API setting settings.pki.<name> (data = the base64 PEM, trusted = true), through apiclient or the node's user data",
    ),
    (
        "talos",
        "Talos Linux",
        "a TrustedRootsConfig document in the machine config (talosctl patch machineconfig)",
    ),
];

/// The platform entry of [`MANAGED_PLATFORMS`] for `os`, if it is one.
pub fn managed_platform(os: &OsRelease) -> Option<(&'static str, &'static str)> {
    MANAGED_PLATFORMS
        .iter()
        .find(|(id, ..)| *id == os.id)
        .map(|(_, name, how)| (*name, *how))
}

/// Distribution families that differ in trust-store layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Debian,
    RedHat,
    Suse,
    Flatcar,
}

fn family_of_id(id: &str) -> Option<Family> {
    match id {
        "debian" | "ubuntu" => Some(Family::Debian),
        "rhel" | "centos" | "fedora" | "azurelinux" | "mariner" | "amzn" => Some(Family::RedHat),
        "sles" | "suse" => Some(Family::Suse),
        _ if id.starts_with("opensuse") => Some(Family::Suse),
        "flatcar" => Some(Family::Flatcar),
        _ => None,
    }
}

/// Matches `ID` first, then each `ID_LIKE` entry in order, so a derivative
/// that is known by its own ID is never misclassified by its ancestry.
/// `None` if nothing is known: guessing a trust-store layout could write
/// anchors where nothing reads them.
pub fn detect_family(os: &OsRelease) -> Option<Family> {
    std::iter::once(&os.id)
        .chain(os.id_like.iter())
        .find_map(|id| family_of_id(id))
}

/// Where a family keeps custom CA anchors and how it rebuilds its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustStoreLayout {
    pub family: Family,
    /// Absolute node path of the directory anchors are placed in.
    pub anchors_dir: PathBuf,
    /// Extension (without dot) anchor files must have to be picked up.
    pub anchor_extension: String,
    /// argv of the command that rebuilds the bundle; absolute program path first.
    pub refresh_command: Vec<String>,
    /// Absolute node path of the bundle the refresh command produces.
    pub bundle_path: PathBuf,
}

impl TrustStoreLayout {
    /// Whether `file_name` (a bare name in `anchors_dir`) is an anchor file the
    /// agent owns and may replace or remove: `node-cert-agent-<stem>.<ext>`,
    /// whatever the extension, so an anchor written under an earlier
    /// `trust-store.anchor-extension` is still the agent's to remove.
    pub fn is_owned_anchor(&self, file_name: &str) -> bool {
        is_owned_anchor_name(file_name)
    }
}

/// `node-cert-agent-<stem>.<ext>`: a non-empty stem and extension, the
/// extension without a dot (temp files of the agent's atomic writes end in
/// their own suffix and are swept, not owned).
pub fn is_owned_anchor_name(file_name: &str) -> bool {
    file_name
        .strip_prefix(ANCHOR_FILE_PREFIX)
        .and_then(|rest| rest.rsplit_once('.'))
        .is_some_and(|(stem, ext)| {
            !stem.is_empty()
                && !stem.contains('.')
                && !ext.is_empty()
                && ext.chars().all(|c| c.is_ascii_alphanumeric())
        })
}

impl TrustStoreLayout {}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_string()).collect()
}

impl Family {
    pub fn layout(self) -> TrustStoreLayout {
        let (anchors_dir, ext, refresh, bundle): (&str, &str, &[&str], &str) = match self {
            // A dedicated subdirectory: update-ca-certificates scans
            // /usr/local/share/ca-certificates recursively, and it only
            // accepts the .crt extension.
            Family::Debian => (
                "/usr/local/share/ca-certificates/node-cert-agent",
                "crt",
                &["/usr/sbin/update-ca-certificates"],
                "/etc/ssl/certs/ca-certificates.crt",
            ),
            Family::RedHat => (
                "/etc/pki/ca-trust/source/anchors",
                "pem",
                &["/usr/bin/update-ca-trust", "extract"],
                "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
            ),
            Family::Suse => (
                "/etc/pki/trust/anchors",
                "pem",
                &["/usr/sbin/update-ca-certificates"],
                "/etc/ssl/ca-bundle.pem",
            ),
            // /usr is read-only on Flatcar; its update-ca-certificates picks
            // up *.pem placed directly in /etc/ssl/certs.
            Family::Flatcar => (
                "/etc/ssl/certs",
                "pem",
                &["/usr/sbin/update-ca-certificates"],
                "/etc/ssl/certs/ca-certificates.crt",
            ),
        };
        TrustStoreLayout {
            family: self,
            anchors_dir: PathBuf::from(anchors_dir),
            anchor_extension: ext.to_string(),
            refresh_command: argv(refresh),
            bundle_path: PathBuf::from(bundle),
        }
    }

    /// Stable lowercase name for logs and metrics labels.
    /// The directory of `manifests/overlays` for this family.
    pub fn overlay(self) -> &'static str {
        match self {
            Family::Debian => "debian",
            Family::RedHat => "rhel",
            Family::Suse => "suse",
            Family::Flatcar => "flatcar",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Debian => "debian",
            Family::RedHat => "redhat",
            Family::Suse => "suse",
            Family::Flatcar => "flatcar",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::path::Path;

    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/os-release/",
                $name
            ))
        };
    }

    #[test]
    fn fixtures_detect_expected_family() {
        let cases = [
            (fixture!("debian-12"), "debian", Family::Debian),
            (fixture!("ubuntu-22.04"), "ubuntu", Family::Debian),
            (fixture!("rhel-9"), "rhel", Family::RedHat),
            (fixture!("fedora-40"), "fedora", Family::RedHat),
            (fixture!("azurelinux-3"), "azurelinux", Family::RedHat),
            (fixture!("mariner-2"), "mariner", Family::RedHat),
            (fixture!("amzn-2023"), "amzn", Family::RedHat),
            (fixture!("sles-15"), "sles", Family::Suse),
            (fixture!("opensuse-leap-15"), "opensuse-leap", Family::Suse),
            (fixture!("flatcar"), "flatcar", Family::Flatcar),
        ];
        for (text, id, family) in cases {
            let os = parse_os_release(text);
            assert_eq!(os.id, id);
            assert!(os.pretty_name.is_some(), "{id}: PRETTY_NAME missing");
            assert!(os.version_id.is_some(), "{id}: VERSION_ID missing");
            assert_eq!(detect_family(&os), Some(family), "{id}");
        }
    }

    #[test]
    fn fixture_fields_parse_exactly() {
        let os = parse_os_release(fixture!("ubuntu-22.04"));
        assert_eq!(os.id_like, vec!["debian"]);
        assert_eq!(os.version_id.as_deref(), Some("22.04"));
        assert_eq!(os.pretty_name.as_deref(), Some("Ubuntu 22.04.4 LTS"));

        let os = parse_os_release(fixture!("amzn-2023"));
        assert_eq!(os.id_like, vec!["fedora"]);

        let os = parse_os_release(fixture!("opensuse-leap-15"));
        assert_eq!(os.id_like, vec!["suse", "opensuse"]);

        let os = parse_os_release(fixture!("flatcar"));
        assert_eq!(os.id_like, vec!["coreos"]);
    }

    #[test]
    fn parse_handles_quotes_and_escapes() {
        let os = parse_os_release(concat!(
            "ID='single quoted $x'\n",
            "PRETTY_NAME=\"say \\\"hi\\\" \\\\ \\$HOME \\` \\n\"\n",
            "VERSION_ID=1.2\n",
        ));
        assert_eq!(os.id, "single quoted $x");
        assert_eq!(os.pretty_name.as_deref(), Some("say \"hi\" \\ $HOME ` \\n"));
        assert_eq!(os.version_id.as_deref(), Some("1.2"));
    }

    #[test]
    fn parse_skips_comments_blank_and_malformed_lines() {
        let os = parse_os_release(concat!(
            "# ID=commented\n",
            "\n",
            "   \n",
            "garbage without equals\n",
            "1BAD=key\n",
            "PRETTY_NAME=\"unterminated\n",
            "VERSION_ID=two words\n",
            "ID=debian\n",
        ));
        assert_eq!(os.id, "debian");
        assert_eq!(os.pretty_name, None);
        assert_eq!(os.version_id, None);
    }

    #[test]
    fn parse_missing_id_defaults_to_linux() {
        let os = parse_os_release("NAME=Something\nID_LIKE=debian\n");
        assert_eq!(os.id, "linux");
        // ID_LIKE still identifies it.
        assert_eq!(detect_family(&os), Some(Family::Debian));
    }

    #[test]
    fn parse_empty_id_defaults_to_linux() {
        assert_eq!(parse_os_release("ID=\"\"\n").id, "linux");
    }

    #[test]
    fn parse_last_assignment_wins() {
        let os = parse_os_release("ID=fedora\nID=rhel\n");
        assert_eq!(os.id, "rhel");
    }

    #[test]
    fn parse_handles_crlf_line_endings() {
        let os = parse_os_release("ID=\"ubuntu\"\r\nVERSION_ID=\"22.04\"\r\n");
        assert_eq!(os.id, "ubuntu");
        assert_eq!(os.version_id.as_deref(), Some("22.04"));
    }

    #[test]
    fn detect_unknown_distro_is_none() {
        let os = parse_os_release("ID=alpine\nVERSION_ID=3.20.0\n");
        assert_eq!(detect_family(&os), None);
        let os = parse_os_release("ID=gentoo\nID_LIKE=\"weird other\"\n");
        assert_eq!(detect_family(&os), None);
    }

    #[test]
    fn detect_prefers_id_over_id_like() {
        let os = OsRelease {
            id: "flatcar".to_string(),
            id_like: vec!["debian".to_string()],
            version_id: None,
            pretty_name: None,
        };
        assert_eq!(detect_family(&os), Some(Family::Flatcar));
    }

    #[test]
    fn detect_walks_id_like_in_order() {
        let os = parse_os_release("ID=rocky\nID_LIKE=\"unknown rhel debian\"\n");
        assert_eq!(detect_family(&os), Some(Family::RedHat));
    }

    #[test]
    fn detect_matches_any_opensuse_id() {
        let os = parse_os_release("ID=\"opensuse-tumbleweed\"\n");
        assert_eq!(detect_family(&os), Some(Family::Suse));
    }

    #[test]
    fn layouts_match_each_family() {
        let debian = Family::Debian.layout();
        assert_eq!(
            debian.anchors_dir,
            Path::new("/usr/local/share/ca-certificates/node-cert-agent")
        );
        assert_eq!(debian.anchor_extension, "crt");
        assert_eq!(
            debian.refresh_command,
            vec!["/usr/sbin/update-ca-certificates"]
        );
        assert_eq!(
            debian.bundle_path,
            Path::new("/etc/ssl/certs/ca-certificates.crt")
        );

        let redhat = Family::RedHat.layout();
        assert_eq!(
            redhat.anchors_dir,
            Path::new("/etc/pki/ca-trust/source/anchors")
        );
        assert_eq!(redhat.anchor_extension, "pem");
        assert_eq!(
            redhat.refresh_command,
            vec!["/usr/bin/update-ca-trust", "extract"]
        );
        assert_eq!(
            redhat.bundle_path,
            Path::new("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
        );

        let suse = Family::Suse.layout();
        assert_eq!(suse.anchors_dir, Path::new("/etc/pki/trust/anchors"));
        assert_eq!(suse.anchor_extension, "pem");
        assert_eq!(
            suse.refresh_command,
            vec!["/usr/sbin/update-ca-certificates"]
        );
        assert_eq!(suse.bundle_path, Path::new("/etc/ssl/ca-bundle.pem"));

        let flatcar = Family::Flatcar.layout();
        assert_eq!(flatcar.anchors_dir, Path::new("/etc/ssl/certs"));
        assert_eq!(flatcar.anchor_extension, "pem");
        assert_eq!(
            flatcar.refresh_command,
            vec!["/usr/sbin/update-ca-certificates"]
        );
        assert_eq!(
            flatcar.bundle_path,
            Path::new("/etc/ssl/certs/ca-certificates.crt")
        );

        for family in [
            Family::Debian,
            Family::RedHat,
            Family::Suse,
            Family::Flatcar,
        ] {
            let layout = family.layout();
            assert_eq!(layout.family, family);
            assert!(layout.anchors_dir.is_absolute());
            assert!(layout.bundle_path.is_absolute());
            assert!(Path::new(&layout.refresh_command[0]).is_absolute());
        }
    }

    #[test]
    fn family_names_are_stable() {
        assert_eq!(Family::Debian.name(), "debian");
        assert_eq!(Family::RedHat.name(), "redhat");
        assert_eq!(Family::Suse.name(), "suse");
        assert_eq!(Family::Flatcar.name(), "flatcar");
    }

    #[test]
    fn owned_anchor_names_are_recognised() {
        let debian = Family::Debian.layout();
        assert!(debian.is_owned_anchor("node-cert-agent-corp-root.crt"));
        // Whatever the extension: one written under an earlier
        // anchor-extension is still the agent's.
        assert!(debian.is_owned_anchor("node-cert-agent-corp-root.pem"));
        assert!(!debian.is_owned_anchor("node-cert-agent-.crt"));
        assert!(!debian.is_owned_anchor("corp-root.crt"));
        let flatcar = Family::Flatcar.layout();
        assert!(flatcar.is_owned_anchor("node-cert-agent-x.pem"));
        assert!(!flatcar.is_owned_anchor("ca-certificates.crt"));
        assert!(!flatcar.is_owned_anchor("node-cert-agent-x.pem.bak"));
    }
}
