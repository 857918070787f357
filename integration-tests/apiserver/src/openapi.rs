//! `/openapi/v3`: the index of group-version documents and the document of
//! the custom resource's group-version, as kube-apiserver's
//! apiextensions-apiserver builds it from the CRD (paths with their
//! operations, the `x-kubernetes-group-version-kind` and
//! `x-kubernetes-action` extensions, the query parameters, and the CR's
//! schema). kubectl reads it to learn that PATCH of the kind accepts
//! `fieldValidation` (so it validates on the server) and which patch types
//! it accepts (no strategic merge patch for a custom resource: kubectl
//! sends a JSON merge patch).
//!
//! Upstream files: `staging/src/k8s.io/apiextensions-apiserver/pkg/controller/openapi/builder/builder.go`,
//! `staging/src/k8s.io/apiserver/pkg/endpoints/installer.go` (parameters
//! per verb), `staging/src/k8s.io/kube-openapi/pkg/handler3/handler.go`
//! (the index and `?hash=`), and kubectl's readers:
//! `staging/src/k8s.io/cli-runtime/pkg/resource/query_param_verifier_v3.go`,
//! `staging/src/k8s.io/kubectl/pkg/cmd/apply/patcher.go`.
//!
//! Only the custom resource's group-version is listed; the built-in types'
//! documents (thousands of schemas) are not served, and the meta schemas
//! the CR document references (ObjectMeta, Status, ...) are abbreviated.
//!
//! `/openapi/v2` (protobuf, as older kubectl reads it, or JSON) holds only
//! the custom resource's PATCH operation with its query parameters and
//! kind: enough for kubectl before v1.26 to see that the kind takes
//! `dryRun` (its dry-run verifier) and to skip client-side validation of a
//! kind without a definition, as it does for any kind the document lacks.
//! Upstream's v2 document also has every path and definition.
//!
//! It builds documents from the CRD (`crd.rs`) only; serving them is
//! `discovery.rs`'s and `handler.rs`'s.

use serde_json::{json, Value};

use super::crd::CRD;

fn sha512_hex(b: &[u8]) -> String {
    openssl::sha::sha512(b)
        .iter()
        .map(|x| format!("{x:02X}"))
        .collect()
}

/// The path of the CR's group-version document, without the query.
pub(crate) fn gv_path() -> String {
    format!("/openapi/v3/apis/{}/{}", CRD.group, CRD.version)
}

/// `GET /openapi/v3`.
pub(crate) fn index() -> Value {
    let doc = serde_json::to_vec(&gv_document()).unwrap();
    json!({"paths": {
        format!("apis/{}/{}", CRD.group, CRD.version): {
            "serverRelativeURL": format!("{}?hash={}", gv_path(), sha512_hex(&doc))
        }
    }})
}

/// The schema name of a kind in a group (`com.microsoft.certificates.v1.RenewRevocation`).
fn schema_name(kind: &str) -> String {
    let mut parts: Vec<&str> = CRD.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{kind}", parts.join("."), CRD.version)
}

fn meta_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.{name}")})
}

fn query(name: &str, description: &str, typ: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": typ, "uniqueItems": true}})
}

fn dry_run() -> Value {
    query("dryRun", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed", "string")
}

fn field_manager() -> Value {
    query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.", "string")
}

fn field_validation() -> Value {
    query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.", "string")
}

fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\".", "boolean"),
        query("continue", "The continue option should be set when retrieving more results from the server.", "string"),
        query("fieldSelector", "A selector to restrict the list of returned objects by their fields. Defaults to everything.", "string"),
        query("labelSelector", "A selector to restrict the list of returned objects by their labels. Defaults to everything.", "string"),
        query("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
        query("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from.", "string"),
        query("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is applied to list calls.", "string"),
        query("sendInitialEvents", "`sendInitialEvents=true` may be set together with `watch=true`.", "boolean"),
        query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
        query("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.", "boolean"),
    ]
}

fn content(schema: &Value) -> Value {
    json!({
        "application/json": {"schema": schema},
        "application/yaml": {"schema": schema},
    })
}

fn op(action: &str, id: &str, params: Vec<Value>, ok: &Value, code: &str) -> Value {
    let mut responses = json!({"401": {"description": "Unauthorized"}});
    responses[code] = json!({"description": "OK", "content": content(ok)});
    json!({
        "tags": [format!("{}_{}", CRD.group.replace('.', "_"), CRD.version)],
        "description": format!("{action} {}", CRD.kind),
        "operationId": format!("{action}{}", CRD.kind),
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": id,
        "x-kubernetes-group-version-kind": {"group": CRD.group, "version": CRD.version, "kind": CRD.kind},
    })
}

fn with_body(mut o: Value, schema: &Value) -> Value {
    o["requestBody"] = json!({"content": {"*/*": {"schema": schema}}, "required": true});
    o
}

/// The CR's group-version document.
pub(crate) fn gv_document() -> Value {
    let kind_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(CRD.kind))});
    let list_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(CRD.list_kind))});
    let status_ref = meta_ref("Status");
    let base = format!("/apis/{}/{}", CRD.group, CRD.version);
    let scoped = if CRD.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", CRD.plural)
    } else {
        format!("{base}/{}", CRD.plural)
    };
    let path_param = |name: &str, what: &str| json!({"name": name, "in": "path", "description": what, "required": true, "schema": {"type": "string", "uniqueItems": true}});
    let mut scope_params = vec![];
    if CRD.namespaced {
        scope_params.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    scope_params.push(query(
        "pretty",
        "If 'true', then the output is pretty printed.",
        "string",
    ));
    let mut item_params = vec![path_param("name", &format!("name of the {}", CRD.kind))];
    item_params.extend(scope_params.clone());

    let mut patch = op(
        "patch",
        "patch",
        vec![
            dry_run(),
            field_manager(),
            field_validation(),
            query(
                "force",
                "Force is going to \"force\" Apply requests.",
                "boolean",
            ),
        ],
        &kind_ref,
        "200",
    );
    // A custom resource takes no strategic merge patch.
    patch["requestBody"] = json!({"content": {
        "application/apply-patch+yaml": {"schema": meta_ref("Patch")},
        "application/json-patch+json": {"schema": meta_ref("Patch")},
        "application/merge-patch+json": {"schema": meta_ref("Patch")},
    }, "required": true});
    let mut paths = serde_json::Map::new();
    paths.insert(
        scoped.clone(),
        json!({
            "get": op("list", "list", list_params(), &list_ref, "200"),
            "post": with_body(op("create", "post", vec![dry_run(), field_manager(), field_validation()], &kind_ref, "201"), &kind_ref),
            "delete": op("deletecollection", "deletecollection", list_params(), &status_ref, "200"),
            "parameters": scope_params,
        }),
    );
    paths.insert(
        format!("{scoped}/{{name}}"),
        json!({
            "get": op("read", "get", vec![query("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from.", "string")], &kind_ref, "200"),
            "put": with_body(op("replace", "put", vec![dry_run(), field_manager(), field_validation()], &kind_ref, "200"), &kind_ref),
            "delete": op("delete", "delete", vec![dry_run()], &status_ref, "200"),
            "patch": patch,
            "parameters": item_params,
        }),
    );
    if CRD.namespaced {
        paths.insert(
            format!("{base}/{}", CRD.plural),
            json!({
                "get": op("listForAllNamespaces", "list", list_params(), &list_ref, "200"),
                "parameters": [query("pretty", "If 'true', then the output is pretty printed.", "string")],
            }),
        );
    }

    let gvk = json!([{"group": CRD.group, "version": CRD.version, "kind": CRD.kind}]);
    let mut kind_schema = CRD.open_api_schema.clone();
    let props = kind_schema["properties"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut all = serde_json::Map::new();
    all.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
    all.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
    all.insert(
        "metadata".into(),
        json!({"allOf": [meta_ref("ObjectMeta")], "description": "Standard object's metadata."}),
    );
    all.extend(props);
    kind_schema["properties"] = Value::Object(all);
    kind_schema["x-kubernetes-group-version-kind"] = gvk;
    let list_schema = json!({
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {"type": "array", "items": kind_ref},
            "kind": {"type": "string"},
            "metadata": {"allOf": [meta_ref("ListMeta")]},
        },
        "x-kubernetes-group-version-kind": [{"group": CRD.group, "version": CRD.version, "kind": CRD.list_kind}],
    });
    let abbreviated = |d: &str| json!({"type": "object", "description": d});
    let mut schemas = serde_json::Map::new();
    schemas.insert(schema_name(CRD.kind), kind_schema);
    schemas.insert(schema_name(CRD.list_kind), list_schema);
    for (n, d) in [
        ("ObjectMeta", "ObjectMeta is metadata that all persisted resources must have (abbreviated by the test API server)."),
        ("ListMeta", "ListMeta describes metadata that synthetic resources must have (abbreviated)."),
        ("Status", "Status is a return value for calls that don't return other objects (abbreviated)."),
        ("Patch", "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."),
    ] {
        schemas.insert(format!("io.k8s.apimachinery.pkg.apis.meta.v1.{n}"), abbreviated(d));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The PATCH operation of a CR item path in OpenAPI v2 terms:
/// (path, operationId, query parameters).
fn v2_patch() -> (String, String, [&'static str; 4]) {
    let base = format!("/apis/{}/{}", CRD.group, CRD.version);
    let path = if CRD.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", CRD.plural)
    } else {
        format!("{base}/{}/{{name}}", CRD.plural)
    };
    let id = format!("patch{}", CRD.kind);
    (
        path,
        id,
        ["dryRun", "fieldManager", "fieldValidation", "force"],
    )
}

fn gvk_yaml() -> String {
    format!(
        "group: {}\nkind: {}\nversion: {}\n",
        CRD.group, CRD.kind, CRD.version
    )
}

/// `/openapi/v2` as JSON.
pub(crate) fn v2_json() -> Value {
    let (path, id, params) = v2_patch();
    let params: Vec<Value> = params
        .iter()
        .map(|n| json!({"name": n, "in": "query", "type": "string", "uniqueItems": true}))
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {path: {"patch": {
            "operationId": id,
            "parameters": params,
            "x-kubernetes-group-version-kind": {"group": CRD.group, "version": CRD.version, "kind": CRD.kind},
        }}},
    })
}

/// Protocol buffers, just what gnostic's `openapi_v2.Document` needs here.
mod pb {
    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// A length-delimited field (strings and messages).
    pub fn bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    pub fn boolean(field: u64, v: bool, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(u64::from(v), out);
    }
}

/// `/openapi/v2` as gnostic's `openapi_v2.Document` (field numbers of
/// `openapiv2/OpenAPIv2.proto`).
pub(crate) fn v2_protobuf() -> Vec<u8> {
    let (path, id, params) = v2_patch();
    let mut op = vec![];
    pb::bytes(5, id.as_bytes(), &mut op); // Operation.operation_id
    for n in params {
        let mut q = vec![]; // QueryParameterSubSchema
        pb::bytes(2, b"query", &mut q);
        pb::bytes(4, n.as_bytes(), &mut q);
        pb::bytes(6, b"string", &mut q);
        pb::boolean(20, true, &mut q);
        let mut nbp = vec![]; // NonBodyParameter.query_parameter_sub_schema
        pb::bytes(3, &q, &mut nbp);
        let mut param = vec![]; // Parameter.non_body_parameter
        pb::bytes(2, &nbp, &mut param);
        let mut item = vec![]; // ParametersItem.parameter
        pb::bytes(1, &param, &mut item);
        pb::bytes(8, &item, &mut op); // Operation.parameters
    }
    let mut any = vec![]; // Any.yaml
    pb::bytes(2, gvk_yaml().as_bytes(), &mut any);
    let mut ext = vec![]; // NamedAny
    pb::bytes(1, b"x-kubernetes-group-version-kind", &mut ext);
    pb::bytes(2, &any, &mut ext);
    pb::bytes(13, &ext, &mut op); // Operation.vendor_extension
    let mut item = vec![]; // PathItem.patch
    pb::bytes(8, &op, &mut item);
    let mut named = vec![]; // NamedPathItem
    pb::bytes(1, path.as_bytes(), &mut named);
    pb::bytes(2, &item, &mut named);
    let mut paths = vec![]; // Paths.path
    pb::bytes(2, &named, &mut paths);
    let mut info = vec![];
    pb::bytes(1, b"Kubernetes", &mut info);
    pb::bytes(2, b"v1.33.0", &mut info);
    let mut doc = vec![];
    pb::bytes(1, b"2.0", &mut doc); // Document.swagger
    pb::bytes(2, &info, &mut doc); // Document.info
    pb::bytes(8, &paths, &mut doc); // Document.paths
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_of_the_kind_takes_field_validation_and_no_strategic_merge() {
        let doc = gv_document();
        let item =
            "/apis/certificates.microsoft.com/v1/namespaces/{namespace}/renewrevocations/{name}";
        let patch = &doc["paths"][item]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "RenewRevocation"
        );
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
        assert!(patch["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_none());
        let idx = index();
        let url = idx["paths"]["apis/certificates.microsoft.com/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/certificates.microsoft.com/v1?hash="));
        assert!(
            doc["components"]["schemas"]["com.microsoft.certificates.v1.RenewRevocation"]
                ["properties"]["spec"]
                .is_object()
        );
    }
}
