//! The `RenewRevocation` custom resource (`nodecert.dev/v1alpha1`,
//! cluster-scoped): its CRD, and the structural-schema validation and
//! pruning kube-apiserver applies to it.

use serde_json::Value;

use super::status::{FieldError, FieldErrorType};

/// The CustomResourceDefinition this server enforces. Ship the same in the
/// cluster so a real apiserver enforces the same rules.
pub const RENEW_REVOCATION_CRD: &str = r#"# The CRD of the type in agent/src/kubelet/revocation.rs: a test there holds
# this file equal to RenewRevocation::crd() (compared as parsed values), so
# change the two together. listKind is the API server's default,
# RenewRevocationList.
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: renewrevocations.nodecert.dev
spec:
  group: nodecert.dev
  scope: Cluster
  names:
    kind: RenewRevocation
    plural: renewrevocations
    singular: renewrevocation
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        title: RenewRevocation
        description: Forces the renewal of matching kubelet certificates on every node running node-cert-agent.
        type: object
        properties:
          spec:
            description: Kubelet certificates to renew now, whatever their renewal deadline.
            type: object
            properties:
              description:
                description: Why these certificates are revoked; logged with every renewal it causes.
                type: string
              revocations:
                description: The entries; a certificate that any entry matches is renewed.
                type: array
                items:
                  description: "One entry: a kind and the field it names."
                  type: object
                  required: ["kind"]
                  properties:
                    kind:
                      description: "What the entry matches: serialnumber, Group (subject O=), DNS or IP (a subject alt name)."
                      type: string
                      enum: ["serialnumber", "Group", "DNS", "IP"]
                    serialNumber:
                      description: The serial number in hex, colons allowed (kind serialnumber).
                      type: string
                      pattern: '^[0-9A-Fa-f]+(:[0-9A-Fa-f]+)*$'
                    group:
                      description: An organization (O=) of the subject (kind Group); system:nodes matches every node.
                      type: string
                      minLength: 1
                    dns:
                      description: A DNS name (kind DNS); a leading dot matches every name ending in it.
                      type: string
                      minLength: 1
                    ip:
                      description: An IP address (kind IP).
                      type: string
                      minLength: 1
                    notBefore:
                      description: "RFC 3339: only certificates issued before it are revoked; without it, all that match, ever."
                      type: string
                      format: date-time
                  x-kubernetes-validations:
                  - rule: "self.kind != 'serialnumber' || has(self.serialNumber)"
                    message: "serialNumber is required when kind is serialnumber"
                  - rule: "self.kind != 'Group' || has(self.group)"
                    message: "group is required when kind is Group"
                  - rule: "self.kind != 'DNS' || has(self.dns)"
                    message: "dns is required when kind is DNS"
                  - rule: "self.kind != 'IP' || has(self.ip)"
                    message: "ip is required when kind is IP"
"#;

const KINDS: &[&str] = &["serialnumber", "Group", "DNS", "IP"];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_err(path: &str, v: &Value, want: &str) -> FieldError {
    FieldError::invalid(
        path,
        format!("{:?}", type_name(v)),
        &format!("{path} in body must be of type {want}: {:?}", type_name(v)),
    )
}

fn is_rfc3339(s: &str) -> bool {
    s.parse::<k8s_openapi::jiff::Timestamp>().is_ok()
}

fn is_hex_serial(s: &str) -> bool {
    !s.is_empty()
        && s.split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Validates against the CRD schema (types, enum, pattern, formats, the
/// CEL rules) and prunes unknown fields, as a structural schema does.
pub(crate) fn validate_and_prune(obj: &mut Value) -> Vec<FieldError> {
    let mut errs = vec![];
    // Pruning at the root: only apiVersion, kind, metadata, spec survive.
    if let Some(o) = obj.as_object_mut() {
        o.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "spec"));
    }
    let Some(spec) = obj.get_mut("spec") else {
        return errs;
    };
    if spec.is_null() {
        return errs;
    }
    let Some(spec_o) = spec.as_object_mut() else {
        errs.push(type_err("spec", spec, "object"));
        return errs;
    };
    spec_o.retain(|k, _| matches!(k.as_str(), "description" | "revocations"));
    if let Some(d) = spec_o.get("description") {
        if !d.is_string() {
            errs.push(type_err("spec.description", d, "string"));
        }
    }
    let Some(revs) = spec_o.get_mut("revocations") else {
        return errs;
    };
    let Some(items) = revs.as_array_mut() else {
        errs.push(type_err("spec.revocations", revs, "array"));
        return errs;
    };
    for (i, item) in items.iter_mut().enumerate() {
        let base = format!("spec.revocations[{i}]");
        let Some(o) = item.as_object_mut() else {
            errs.push(type_err(&base, item, "object"));
            continue;
        };
        o.retain(|k, _| {
            matches!(
                k.as_str(),
                "kind" | "serialNumber" | "group" | "dns" | "ip" | "notBefore"
            )
        });
        for (k, v) in o.iter() {
            if !v.is_string() {
                errs.push(type_err(&format!("{base}.{k}"), v, "string"));
            }
        }
        let s = |k: &str| o.get(k).and_then(Value::as_str);
        match s("kind") {
            None if !o.contains_key("kind") => {
                errs.push(FieldError::required(&format!("{base}.kind"), ""))
            }
            None => {}
            Some(k) if !KINDS.contains(&k) => errs.push(FieldError {
                field: format!("{base}.kind"),
                typ: FieldErrorType::NotSupported(
                    format!("{k:?}"),
                    KINDS.iter().map(|s| s.to_string()).collect(),
                ),
                detail: String::new(),
            }),
            Some(k) => {
                let need = match k {
                    "serialnumber" => "serialNumber",
                    "Group" => "group",
                    "DNS" => "dns",
                    _ => "ip",
                };
                if !o.contains_key(need) {
                    errs.push(FieldError::invalid(
                        &base,
                        "\"object\"".into(),
                        &format!("{need} is required when kind is {k}"),
                    ));
                }
            }
        }
        if let Some(sn) = s("serialNumber") {
            if !is_hex_serial(sn) {
                errs.push(FieldError::invalid(
                    &format!("{base}.serialNumber"),
                    format!("{sn:?}"),
                    &format!(
                        "{base}.serialNumber in body should match '^[0-9A-Fa-f]+(:[0-9A-Fa-f]+)*$'"
                    ),
                ));
            }
        }
        for k in ["group", "dns", "ip"] {
            if s(k) == Some("") {
                errs.push(FieldError::invalid(
                    &format!("{base}.{k}"),
                    "\"\"".into(),
                    &format!("{base}.{k} in body should be at least 1 chars long"),
                ));
            }
        }
        if let Some(nb) = s("notBefore") {
            if !is_rfc3339(nb) {
                errs.push(FieldError::invalid(
                    &format!("{base}.notBefore"),
                    format!("{nb:?}"),
                    &format!("{base}.notBefore in body must be of type date-time: {nb:?}"),
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schema_rules() {
        let mut ok = json!({"metadata": {"name": "r"}, "junk": 1, "spec": {"revocations": [
            {"kind": "serialnumber", "serialNumber": "0A:ff", "extra": true},
            {"kind": "DNS", "dns": ".example.com", "notBefore": "2024-01-02T03:04:05Z"}
        ]}});
        assert!(validate_and_prune(&mut ok).is_empty());
        assert!(ok.get("junk").is_none());
        assert!(ok["spec"]["revocations"][0].get("extra").is_none());
        let mut bad = json!({"spec": {"revocations": [{"kind": "CN"}, {"kind": "IP"}, {"kind": "DNS", "dns": "x", "notBefore": "yesterday"}]}});
        let errs = validate_and_prune(&mut bad);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.revocations[0].kind",
                "spec.revocations[1]",
                "spec.revocations[2].notBefore"
            ]
        );
    }
}
