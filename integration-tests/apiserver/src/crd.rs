//! The `RenewRevocation` custom resource as kube-apiserver's
//! apiextensions-apiserver serves it, taken from the shipped CRD
//! (`manifests/base/crd-renewrevocation.yaml`, compiled in) so the two never
//! drift: its names and scope, and its structural schema applied as
//! upstream applies it: pruning of unknown fields (reported by
//! `fieldValidation=Strict`), dropping non-nullable nulls, OpenAPI
//! validation, then the `x-kubernetes-validations` CEL rules unless a
//! blocking error came first.
//!
//! Upstream files: `staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning/algorithm.go`,
//! `.../schema/defaulting/prunenulls.go`,
//! `.../pkg/apiserver/validation/validation.go` (`ValidateCustomResource`),
//! `.../schema/cel/validation.go` (rule errors), and
//! `.../pkg/registry/customresource/strategy.go` (`hasBlockingErr`).
//!
//! The schema may only use the keywords this module enforces; the CRD is
//! parsed at first use and anything else panics with the keyword and its
//! path, so a new keyword in the manifest cannot be silently ignored.
//!
//! It defines and checks; it uses only `cel` and `status`, never the
//! request pipeline or the kinds' writes (`custom.rs` is those).

use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize as _;
use serde_json::Value;

use super::cel;
use super::status::{FieldError, FieldErrorType};

/// The shipped CustomResourceDefinition, verbatim.
pub const RENEW_REVOCATION_CRD: &str =
    include_str!("../../../manifests/base/crd-renewrevocation.yaml");

/// One CEL rule of `x-kubernetes-validations`.
#[derive(Debug)]
struct Rule {
    rule: String,
    message: String,
    expr: cel::Expr,
}

/// A structural schema node.
#[derive(Debug, Default)]
pub(crate) struct Schema {
    typ: String,
    properties: Vec<(String, Schema)>,
    required: Vec<String>,
    items: Option<Box<Schema>>,
    enumeration: Vec<Value>,
    pattern: Option<(String, Regex)>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    format: Option<String>,
    nullable: bool,
    rules: Vec<Rule>,
}

/// The keywords enforced here, plus the documentation-only ones.
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "items",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "format",
    "nullable",
    "x-kubernetes-validations",
    "description",
    "title",
    "example",
];

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

impl Schema {
    fn parse(v: &Value, path: &str) -> Result<Schema, String> {
        let o = v
            .as_object()
            .ok_or_else(|| format!("{path}: a schema must be an object"))?;
        for k in o.keys() {
            if !KEYWORDS.contains(&k.as_str()) {
                return Err(format!(
                    "{path}: the schema keyword {k:?} is not enforced by the test API server (crd.rs)"
                ));
            }
        }
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        let mut out = Schema {
            typ: s("type").ok_or_else(|| format!("{path}: a structural schema needs a type"))?,
            nullable: o.get("nullable").and_then(Value::as_bool).unwrap_or(false),
            format: s("format"),
            ..Default::default()
        };
        if let Some(f) = &out.format {
            if f != "date-time" {
                return Err(format!("{path}: format {f:?} is not enforced here"));
            }
        }
        if let Some(p) = o.get("properties").and_then(Value::as_object) {
            for (name, sub) in p {
                out.properties
                    .push((name.clone(), Schema::parse(sub, &child(path, name))?));
            }
        }
        if let Some(r) = o.get("required").and_then(Value::as_array) {
            out.required = r
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
        }
        if let Some(i) = o.get("items") {
            out.items = Some(Box::new(Schema::parse(i, &format!("{path}[*]"))?));
        }
        if let Some(e) = o.get("enum").and_then(Value::as_array) {
            out.enumeration = e.clone();
        }
        if let Some(p) = s("pattern") {
            let re = Regex::new(&p).map_err(|e| format!("{path}: pattern {p:?}: {e}"))?;
            out.pattern = Some((p, re));
        }
        let len = |k: &str| o.get(k).and_then(Value::as_u64).map(|n| n as usize);
        out.min_length = len("minLength");
        out.max_length = len("maxLength");
        if let Some(rules) = o.get("x-kubernetes-validations").and_then(Value::as_array) {
            for r in rules {
                let ro = r.as_object().ok_or("a validation rule must be an object")?;
                for k in ro.keys() {
                    if !matches!(k.as_str(), "rule" | "message") {
                        return Err(format!(
                            "{path}: the validation rule field {k:?} is not enforced here"
                        ));
                    }
                }
                let rule = ro
                    .get("rule")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let expr = cel::parse(&rule).map_err(|e| format!("{path}: rule {rule:?}: {e}"))?;
                out.rules.push(Rule {
                    message: ro
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    rule,
                    expr,
                });
            }
        }
        Ok(out)
    }

    fn property(&self, name: &str) -> Option<&Schema> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// Pruning (unknown fields, recorded by path) and
    /// `PruneNonNullableNullsWithoutDefaults`.
    fn prune(&self, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
        match v {
            Value::Object(m) if self.typ == "object" => {
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    match self.property(&k) {
                        None => {
                            m.remove(&k);
                            unknown.push(child(path, &k));
                        }
                        Some(sub) => {
                            if m[&k].is_null() && !sub.nullable {
                                m.remove(&k);
                            } else if let Some(x) = m.get_mut(&k) {
                                sub.prune(x, &child(path, &k), unknown);
                            }
                        }
                    }
                }
            }
            Value::Array(items) => {
                if let Some(sub) = &self.items {
                    for (i, x) in items.iter_mut().enumerate() {
                        sub.prune(x, &format!("{path}[{i}]"), unknown);
                    }
                }
            }
            _ => {}
        }
    }

    fn type_matches(&self, v: &Value) -> bool {
        match (self.typ.as_str(), v) {
            ("object", Value::Object(_))
            | ("array", Value::Array(_))
            | ("string", Value::String(_))
            | ("boolean", Value::Bool(_)) => true,
            ("number", Value::Number(_)) => true,
            ("integer", Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }

    /// OpenAPI validation (`ValidateCustomResource`).
    fn validate(&self, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
        if v.is_null() && self.nullable {
            return;
        }
        if !self.type_matches(v) {
            let actual = json_type(v);
            errs.push(FieldError {
                field: path.to_string(),
                typ: FieldErrorType::TypeInvalid(format!("{actual:?}")),
                detail: format!("{path} in body must be of type {}: {actual:?}", self.typ),
            });
            return;
        }
        if !self.enumeration.is_empty() && !self.enumeration.contains(v) {
            errs.push(FieldError {
                field: path.to_string(),
                typ: FieldErrorType::NotSupported(
                    render(v),
                    self.enumeration
                        .iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                        .collect(),
                ),
                detail: String::new(),
            });
        }
        match v {
            Value::String(s) => {
                if let Some(max) = self.max_length {
                    if s.chars().count() > max {
                        errs.push(FieldError {
                            field: path.to_string(),
                            typ: FieldErrorType::TooLong(max),
                            detail: String::new(),
                        });
                    }
                }
                if let Some(min) = self.min_length {
                    if s.chars().count() < min {
                        errs.push(FieldError::invalid(
                            path,
                            format!("{s:?}"),
                            &format!("{path} in body should be at least {min} chars long"),
                        ));
                    }
                }
                if let Some((p, re)) = &self.pattern {
                    if !re.is_match(s) {
                        errs.push(FieldError::invalid(
                            path,
                            format!("{s:?}"),
                            &format!("{path} in body should match '{p}'"),
                        ));
                    }
                }
                if self.format.as_deref() == Some("date-time")
                    && s.parse::<k8s_openapi::jiff::Timestamp>().is_err()
                {
                    errs.push(FieldError::invalid(
                        path,
                        format!("{s:?}"),
                        &format!("{path} in body must be of type date-time: {s:?}"),
                    ));
                }
            }
            Value::Object(m) => {
                for r in &self.required {
                    if !m.contains_key(r) {
                        errs.push(FieldError::required(&child(path, r), ""));
                    }
                }
                for (name, sub) in &self.properties {
                    if let Some(x) = m.get(name) {
                        sub.validate(x, &child(path, name), errs);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(sub) = &self.items {
                    for (i, x) in items.iter().enumerate() {
                        sub.validate(x, &format!("{path}[{i}]"), errs);
                    }
                }
            }
            _ => {}
        }
    }

    /// The CEL rules, on every value that has some.
    fn check_rules(&self, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
        if v.is_null() {
            return;
        }
        for r in &self.rules {
            let msg = match cel::eval(&r.expr, v) {
                Ok(Value::Bool(true)) => continue,
                Ok(Value::Bool(false)) if r.message.is_empty() => {
                    format!("failed rule: {}", r.rule.trim())
                }
                Ok(Value::Bool(false)) => r.message.clone(),
                Ok(other) => format!("rule {:?} evaluated to {other}, not a bool", r.rule),
                Err(e) => format!("{e} evaluating rule: {}", r.rule.trim()),
            };
            errs.push(FieldError::invalid(path, format!("{:?}", self.typ), &msg));
        }
        match v {
            Value::Object(m) => {
                for (name, sub) in &self.properties {
                    if let Some(x) = m.get(name) {
                        sub.check_rules(x, &child(path, name), errs);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(sub) = &self.items {
                    for (i, x) in items.iter().enumerate() {
                        sub.check_rules(x, &format!("{path}[{i}]"), errs);
                    }
                }
            }
            _ => {}
        }
    }
}

fn json_type(v: &Value) -> &'static str {
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

/// A bad value as `field.Error` prints it (`%q` for strings, `%v` else).
fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The served custom resource.
#[derive(Debug)]
pub(crate) struct Crd {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// The root of `openAPIV3Schema`.
    schema: Schema,
    /// `openAPIV3Schema` as written (for the OpenAPI documents).
    pub open_api_schema: Value,
}

fn leak(s: &str) -> &'static str {
    // One CRD per process, parsed once: the leak is bounded.
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(v: Option<&Value>) -> &'static [&'static str] {
    let list: Vec<&'static str> = v
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(leak).collect())
        .unwrap_or_default();
    Box::leak(list.into_boxed_slice())
}

impl Crd {
    fn parse(text: &str) -> Result<Crd, String> {
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let [crd] = docs.as_slice() else {
            return Err(format!("expected one document, found {}", docs.len()));
        };
        let spec = &crd["spec"];
        let str_at = |v: &Value, k: &str| -> Result<&'static str, String> {
            v.get(k)
                .and_then(Value::as_str)
                .map(leak)
                .ok_or_else(|| format!("spec: {k} is missing"))
        };
        let names = &spec["names"];
        let versions = spec["versions"]
            .as_array()
            .ok_or("spec.versions is missing")?;
        let [version] = versions.as_slice() else {
            return Err("more than one version: conversion is not served here".into());
        };
        if version.get("subresources").is_some() {
            return Err("subresources are not served here".into());
        }
        if version["served"] != Value::Bool(true) || version["storage"] != Value::Bool(true) {
            return Err("the one version must be served and the storage version".into());
        }
        let open_api_schema = version["schema"]["openAPIV3Schema"].clone();
        let schema = Schema::parse(&open_api_schema, "")?;
        let kind = str_at(names, "kind")?;
        Ok(Crd {
            group: str_at(spec, "group")?,
            version: str_at(version, "name")?,
            plural: str_at(names, "plural")?,
            singular: names
                .get("singular")
                .and_then(Value::as_str)
                .map_or_else(|| leak(&kind.to_lowercase()), leak),
            kind,
            list_kind: names
                .get("listKind")
                .and_then(Value::as_str)
                .map_or_else(|| leak(&format!("{kind}List")), leak),
            short_names: leak_list(names.get("shortNames")),
            categories: leak_list(names.get("categories")),
            namespaced: match spec["scope"].as_str() {
                Some("Namespaced") => true,
                Some("Cluster") => false,
                other => return Err(format!("spec.scope {other:?}")),
            },
            schema,
            open_api_schema,
        })
    }

    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// Prunes what the schema does not declare and drops non-nullable
    /// nulls. The root keeps `apiVersion`, `kind` and `metadata` (handled
    /// as ObjectMeta by the caller). Returns the pruned paths, sorted.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut unknown = vec![];
        if let Some(m) = obj.as_object_mut() {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match self.schema.property(&k) {
                    None => {
                        m.remove(&k);
                        unknown.push(k);
                    }
                    Some(sub) => {
                        if m[&k].is_null() && !sub.nullable {
                            m.remove(&k);
                        } else if let Some(x) = m.get_mut(&k) {
                            sub.prune(x, &k, &mut unknown);
                        }
                    }
                }
            }
        }
        unknown.sort();
        unknown
    }

    /// Schema validation, then the CEL rules unless a blocking error (type,
    /// required, enum, too long) came first, in which case upstream's
    /// "some validation rules were not checked" error is added instead.
    pub fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = vec![];
        let mut body = obj.clone();
        if let Some(m) = body.as_object_mut() {
            for k in ["apiVersion", "kind", "metadata"] {
                m.remove(k);
            }
        }
        self.schema.validate(&body, "", &mut errs);
        let blocking = errs.iter().any(|e| {
            matches!(
                e.typ,
                FieldErrorType::NotSupported(..)
                    | FieldErrorType::Required
                    | FieldErrorType::TooLong(_)
                    | FieldErrorType::TypeInvalid(_)
            )
        });
        if blocking {
            errs.push(FieldError::invalid(
                "<nil>",
                "\"null\"".into(),
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
        } else {
            self.schema.check_rules(&body, "", &mut errs);
        }
        errs
    }
}

/// The CRD (parsed on first use; a CRD this server cannot enforce panics
/// with the reason).
pub(crate) static CRD: LazyLock<Crd> = LazyLock::new(|| {
    Crd::parse(RENEW_REVOCATION_CRD).unwrap_or_else(|e| {
        panic!(
            "manifests/base/crd-renewrevocation.yaml cannot be served by the test API server: {e}"
        )
    })
});

/// ObjectMeta's JSON fields: what a custom resource's `metadata` keeps
/// (`schemaobjectmeta.Coerce`); the rest is pruned.
pub(crate) const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Prunes unknown `metadata` fields of a custom resource; returns their
/// paths (`metadata.<field>`).
pub(crate) fn prune_metadata(obj: &mut Value) -> Vec<String> {
    let mut unknown = vec![];
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in keys {
            if !OBJECT_META_FIELDS.contains(&k.as_str()) {
                m.remove(&k);
                unknown.push(format!("metadata.{k}"));
            }
        }
    }
    unknown
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn the_shipped_crd_is_served_as_written() {
        let c = &*CRD;
        assert_eq!(
            (
                c.group,
                c.version,
                c.plural,
                c.kind,
                c.list_kind,
                c.namespaced
            ),
            (
                "certificates.microsoft.com",
                "v1",
                "renewrevocations",
                "RenewRevocation",
                "RenewRevocationList",
                true
            )
        );
    }

    #[test]
    fn pruning_keeps_the_documented_fields_and_reports_the_rest() {
        let mut o = json!({"apiVersion": "certificates.microsoft.com/v1", "kind": "RenewRevocation",
        "metadata": {"name": "r"}, "junk": 1, "status": {},
        "spec": {"description": "d", "revocations": [
            {"kind": "serialnumber", "description": "why", "serialNumber": "0A:ff", "extra": true},
            {"kind": "DNS", "dns": ".example.com", "notBefore": "2024-01-02T03:04:05Z", "ip": null}
        ]}});
        let unknown = CRD.prune(&mut o);
        assert_eq!(unknown, ["junk", "spec.revocations[0].extra", "status"]);
        assert_eq!(o["spec"]["revocations"][0]["description"], "why");
        assert!(
            o["spec"]["revocations"][1].get("ip").is_none(),
            "a null is dropped"
        );
        assert!(CRD.validate(&o).is_empty(), "{:?}", CRD.validate(&o));
    }

    #[test]
    fn schema_errors_block_the_cel_rules_as_upstream_does() {
        let bad = json!({"spec": {"revocations": [{"kind": "CN"}, {"kind": "IP"}, {"kind": "DNS", "dns": "x", "notBefore": "yesterday"}]}});
        let errs = CRD.validate(&bad);
        assert_eq!(
            fields(&errs),
            [
                "spec.revocations[0].kind",
                "spec.revocations[2].notBefore",
                "<nil>"
            ]
        );
        // Without a blocking error the rules run: entry 1 lacks its ip.
        let rules = json!({"spec": {"revocations": [{"kind": "IP"}, {"kind": "serialnumber", "serialNumber": "zz"}]}});
        let errs = CRD.validate(&rules);
        assert_eq!(
            fields(&errs),
            ["spec.revocations[1].serialNumber", "spec.revocations[0]"]
        );
        let messages: Vec<String> = errs.iter().map(|e| format!("{e:?}")).collect();
        assert!(
            messages[1].contains("ip is required when kind is IP"),
            "{messages:?}"
        );
        // A wrong type is blocking too.
        let errs = CRD.validate(&json!({"spec": {"revocations": [{"kind": 3}]}}));
        assert!(matches!(errs[0].typ, FieldErrorType::TypeInvalid(_)));
        assert_eq!(
            errs[0].detail,
            "spec.revocations[0].kind in body must be of type string: \"integer\""
        );
    }

    #[test]
    fn unknown_schema_keywords_are_refused() {
        let text = RENEW_REVOCATION_CRD.replace("minLength: 1", "maxItems: 3");
        let e = Crd::parse(&text).unwrap_err();
        assert!(e.contains("\"maxItems\""), "{e}");
        let text = RENEW_REVOCATION_CRD.replace("has(self.ip)", "has(oldSelf.ip)");
        assert!(Crd::parse(&text).is_err());
    }
}
