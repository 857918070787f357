//! Secret manifests as an input to `check`, so a pipeline can lint a Secret
//! before it is applied: a YAML file of one or more documents, of which the
//! `kind: Secret` ones are read as k8s-openapi's `Secret`.
//!
//! `data` is decoded here rather than by k8s-openapi's `ByteString`, for two
//! reasons: the API server (Go's `encoding/base64` through `encoding/json`)
//! ignores line breaks in a value, which `ByteString` refuses; and a value
//! that is not base64 is a finding on its key, not an unreadable file.
//!
//! Owns: the manifest's reading. Boundary: judges no key (the keys go
//! through `sources::validate_raw_keys`, as a mounted Secret's would) and
//! reads only the file it is given.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;

use crate::node::fsutil::read_limited;
use crate::trust::sources::RawKey;
use crate::trust::validate::{Finding, FindingKind, MAX_INPUT_BYTES};

/// One Secret of a manifest: a display name and its keys.
pub type ManifestSecret = (String, Vec<RawKey>);

/// The Secrets of the manifest at `path`. `Ok(None)` when the file holds
/// no `kind: Secret` document (or is not YAML): it is then read as a CA
/// file. Keys come from `data` (decoded from base64 once, as kubelet does)
/// and `stringData`, which wins for the same key, as in the API server.
pub fn read_secret_manifest(path: &Path) -> Result<Option<Vec<ManifestSecret>>, String> {
    let bytes = read_limited(path, 4 * MAX_INPUT_BYTES).map_err(|e| e.to_string())?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(None);
    };
    Ok(parse_secret_manifest(text, &path.display().to_string()))
}

/// The Secrets of manifest text (pure); `origin` names the file in the
/// Secrets' display names. `None` when the text is not YAML or holds no
/// `kind: Secret` document.
pub fn parse_secret_manifest(text: &str, origin: &str) -> Option<Vec<ManifestSecret>> {
    let mut secrets = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let Ok(mut value) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
            return None;
        };
        if value.get("kind").and_then(serde_yaml::Value::as_str) != Some("Secret") {
            continue;
        }
        let data = value
            .as_mapping_mut()
            .and_then(|m| m.remove("data"))
            .unwrap_or(serde_yaml::Value::Null);
        secrets.push(match serde_yaml::from_value::<Secret>(value) {
            Ok(secret) => read_secret(&secret, &data, origin),
            Err(e) => unreadable(origin, &e),
        });
    }
    (!secrets.is_empty()).then_some(secrets)
}

/// The display name and keys of one typed Secret; `data` is its raw `data`.
fn read_secret(secret: &Secret, data: &serde_yaml::Value, origin: &str) -> ManifestSecret {
    let meta = &secret.metadata;
    let name = format!(
        "{} (Secret {}/{})",
        origin,
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    );
    let mut keys: BTreeMap<String, RawKey> = BTreeMap::new();
    if let Some(data) = data.as_mapping() {
        for (k, v) in data {
            let Some(key) = k.as_str() else { continue };
            keys.insert(
                key.to_string(),
                RawKey {
                    key: key.to_string(),
                    content: decode_data(key, v),
                },
            );
        }
    }
    for (key, value) in secret.string_data.iter().flatten() {
        keys.insert(
            key.clone(),
            RawKey {
                key: key.clone(),
                content: Ok(value.as_bytes().to_vec()),
            },
        );
    }
    (name, keys.into_values().collect())
}

/// A `data` value as the API server decodes it: base64, line breaks and
/// spaces ignored.
fn decode_data(key: &str, value: &serde_yaml::Value) -> Result<Vec<u8>, Finding> {
    let Some(text) = value.as_str() else {
        return Err(Finding::error(
            FindingKind::Unparsable,
            key,
            None,
            "the value under `data` is not a string".to_string(),
            "give the base64 of the PEM as a string (`base64 -w0 ca.crt`), or put the plain PEM under `stringData:`",
        ));
    };
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| {
            Finding::error(
                FindingKind::Unparsable,
                key,
                None,
                format!("the value under `data` is not valid base64 ({e})"),
                "base64-encode the PEM exactly once (`base64 -w0 ca.crt`), or put the plain PEM under `stringData:`",
            )
        })
}

/// A `kind: Secret` document that is not a v1 Secret (say, `stringData`
/// holding a list): one finding that names it, as `kubectl apply` would
/// refuse it.
fn unreadable(origin: &str, e: &serde_yaml::Error) -> ManifestSecret {
    let key = "(manifest)";
    let finding = Finding::error(
        FindingKind::Unparsable,
        key,
        None,
        format!("a kind: Secret document is not a valid v1 Secret: {e}"),
        "fix the manifest so that `kubectl apply --dry-run=server -f` accepts it",
    );
    (
        format!("{origin} (Secret)"),
        vec![RawKey {
            key: key.to_string(),
            content: Err(finding),
        }],
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    #[test]
    fn data_with_line_breaks_decodes_as_the_api_server_decodes_it() {
        let text = "kind: Secret\nmetadata: {name: s, namespace: kube-system}\ndata:\n  a.crt: |\n    aGVs\n    bG8=\n";
        let secrets = parse_secret_manifest(text, "f.yaml").unwrap();
        assert_eq!(secrets[0].0, "f.yaml (Secret kube-system/s)");
        assert_eq!(secrets[0].1[0].key, "a.crt");
        assert_eq!(secrets[0].1[0].content.as_deref().unwrap(), b"hello");
    }

    #[test]
    fn a_value_that_is_not_base64_is_a_finding_on_its_key() {
        let text = "kind: Secret\nmetadata: {name: s}\ndata:\n  a.crt: '%%%'\n  b.crt: 7\n";
        let keys = &parse_secret_manifest(text, "f.yaml").unwrap()[0].1;
        let err = |i: usize| keys[i].content.as_ref().unwrap_err().to_string();
        assert!(err(0).contains("not valid base64"), "{}", err(0));
        assert!(err(1).contains("not a string"), "{}", err(1));
    }

    #[test]
    fn string_data_wins_over_data_for_the_same_key() {
        let text = "kind: Secret\nmetadata: {name: s}\ndata:\n  a.crt: aGVsbG8=\nstringData:\n  a.crt: plain\n";
        let keys = &parse_secret_manifest(text, "f").unwrap()[0].1;
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].content.as_deref().unwrap(), b"plain");
    }

    #[test]
    fn a_secret_that_is_not_a_v1_secret_is_one_finding_naming_it() {
        let text = "kind: Secret\nmetadata: {name: s}\nstringData: [1, 2]\n";
        let secrets = parse_secret_manifest(text, "f.yaml").unwrap();
        let finding = secrets[0].1[0].content.as_ref().unwrap_err();
        assert!(
            finding.to_string().contains("not a valid v1 Secret"),
            "{finding}"
        );
    }

    #[test]
    fn other_kinds_and_non_yaml_are_not_manifests() {
        assert!(parse_secret_manifest("kind: ConfigMap\n", "f").is_none());
        assert!(parse_secret_manifest("-----BEGIN CERTIFICATE-----\n:\n- [", "f").is_none());
    }
}
