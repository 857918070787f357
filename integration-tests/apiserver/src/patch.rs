//! PATCH bodies applied as kube-apiserver applies them: JSON patch
//! (RFC 6902) and JSON merge patch (RFC 7386) through the `json-patch`
//! crate, and strategic merge patch for built-in types with their patch
//! strategies (merge keys, merged primitive lists) and directives
//! (`$patch`, `$retainKeys`, `$setElementOrder/`, `$deleteFromPrimitiveList/`).
//!
//! Upstream files: `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`
//! (which patch types are served, and for what), and
//! `staging/src/k8s.io/apimachinery/pkg/util/strategicpatch/patch.go`
//! (`mergeMap`, `mergeSlice`, `normalizeElementOrder`, `mergeSortedSlice`).
//! Patch strategies are the `patchStrategy`/`patchMergeKey` tags of
//! `k8s.io/api` (listed per type in [`node_strategy`] and [`no_strategy`]).
//!
//! A leaf: it works on JSON values and uses nothing of the crate; when a
//! patch is applied, and to what, is the write pipeline's.

use serde_json::{Map, Value};

/// How a list field merges under a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// No `patchStrategy`: the patch's list replaces the object's.
    Replace,
    /// `patchStrategy=merge` with `patchMergeKey`.
    MergeByKey(&'static str),
    /// `patchStrategy=merge` on a list of scalars: a union.
    MergePrimitive,
}

/// The strategy of the list at a dotted field path (array items do not add
/// to the path).
pub(crate) type Strategies = fn(&str) -> ListStrategy;

/// The patch strategies of `core/v1` Node (`k8s.io/api/core/v1/types.go`).
pub(crate) fn node_strategy(path: &str) -> ListStrategy {
    match path {
        "metadata.finalizers" | "spec.podCIDRs" => ListStrategy::MergePrimitive,
        "metadata.ownerReferences" => ListStrategy::MergeByKey("uid"),
        "status.conditions" | "status.addresses" => ListStrategy::MergeByKey("type"),
        _ => ListStrategy::Replace,
    }
}

/// Types whose lists all replace (besides ObjectMeta's): core/v1 Event.
pub(crate) fn no_strategy(path: &str) -> ListStrategy {
    match path {
        "metadata.finalizers" => ListStrategy::MergePrimitive,
        "metadata.ownerReferences" => ListStrategy::MergeByKey("uid"),
        _ => ListStrategy::Replace,
    }
}

fn child(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// Applies a strategic merge patch to `original`.
pub(crate) fn strategic_merge(
    original: &Value,
    patch: &Value,
    strategies: Strategies,
) -> Result<Value, String> {
    let (Value::Object(o), Value::Object(p)) = (original, patch) else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    match merge_map(o.clone(), p, "", strategies)? {
        Some(m) => Ok(Value::Object(m)),
        None => Err("a strategic merge patch may not delete the whole object".into()),
    }
}

/// Strips directive keys from a value added as is.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, x)| (k.clone(), strip(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|x| x.get("$patch").is_none())
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `mergeMap`: `None` when the patch says `$patch: delete`.
fn merge_map(
    mut orig: Map<String, Value>,
    patch: &Map<String, Value>,
    path: &str,
    st: Strategies,
) -> Result<Option<Map<String, Value>>, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            return Ok(Some(
                strip(&Value::Object(patch.clone()))
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ))
        }
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other}")),
    }
    for (k, v) in patch {
        if k.starts_with('$') {
            if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                let remove = v.as_array().cloned().unwrap_or_default();
                if let Some(Value::Array(items)) = orig.get_mut(field) {
                    items.retain(|x| !remove.contains(x));
                }
            }
            continue;
        }
        let p = child(path, k);
        if v.is_null() {
            orig.remove(k);
            continue;
        }
        match (orig.remove(k), v) {
            (Some(Value::Object(o)), Value::Object(pm)) => {
                if let Some(m) = merge_map(o, pm, &p, st)? {
                    orig.insert(k.clone(), Value::Object(m));
                }
            }
            (None, Value::Object(pm)) => {
                if let Some(m) = merge_map(Map::new(), pm, &p, st)? {
                    orig.insert(k.clone(), Value::Object(m));
                }
            }
            (existing, Value::Array(pl)) => {
                let old = match existing {
                    Some(Value::Array(a)) => a,
                    _ => vec![],
                };
                let merged = merge_list(old, pl, &p, st)?;
                orig.insert(k.clone(), Value::Array(merged));
            }
            (_, other) => {
                orig.insert(k.clone(), other.clone());
            }
        }
    }
    // $setElementOrder after merging, $retainKeys last.
    for (k, order) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order = order.as_array().cloned().unwrap_or_default();
            let in_patch = patch
                .get(field)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(Value::Array(items)) = orig.get(field) {
                let key = match st(&child(path, field)) {
                    ListStrategy::MergeByKey(key) => Some(key),
                    _ => None,
                };
                let sorted = set_element_order(items, &in_patch, &order, key);
                orig.insert(field.to_string(), Value::Array(sorted));
            }
        }
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(orig))
}

fn key_of<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| m.get(key))
}

/// `mergeSlice` by the field's strategy.
fn merge_list(
    mut orig: Vec<Value>,
    patch: &[Value],
    path: &str,
    st: Strategies,
) -> Result<Vec<Value>, String> {
    let replace = patch
        .iter()
        .any(|x| x.get("$patch").and_then(Value::as_str) == Some("replace"));
    match st(path) {
        ListStrategy::Replace => Ok(patch.iter().map(strip).collect()),
        _ if replace => Ok(patch
            .iter()
            .filter(|x| x.get("$patch").is_none())
            .map(strip)
            .collect()),
        ListStrategy::MergePrimitive => {
            for x in patch {
                if !orig.contains(x) {
                    orig.push(x.clone());
                }
            }
            Ok(orig)
        }
        ListStrategy::MergeByKey(key) => {
            for x in patch {
                let Some(k) = key_of(x, key) else {
                    return Err(format!(
                        "map: {x} does not contain declared merge key: {key}"
                    ));
                };
                let pos = orig.iter().position(|o| key_of(o, key) == Some(k));
                if x.get("$patch").and_then(Value::as_str) == Some("delete") {
                    orig.retain(|o| key_of(o, key) != Some(k));
                    continue;
                }
                let pm = x.as_object().cloned().unwrap_or_default();
                match pos {
                    Some(i) => {
                        let o = orig[i].as_object().cloned().unwrap_or_default();
                        match merge_map(o, &pm, path, st)? {
                            Some(m) => orig[i] = Value::Object(m),
                            None => {
                                orig.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(Map::new(), &pm, path, st)? {
                            orig.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(orig)
        }
    }
}

/// `normalizeElementOrder`: the items the patch named sorted by the
/// `$setElementOrder` list, the server-only items in their order, merged
/// by their positions in the original (`mergeSortedSlice`).
fn set_element_order(
    merged: &[Value],
    in_patch: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => key_of(v, k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let order_ids: Vec<Value> = order.iter().map(&id).collect();
    let patch_ids: Vec<Value> = in_patch.iter().map(&id).collect();
    let (mut from_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .iter()
        .cloned()
        .partition(|v| patch_ids.contains(&id(v)) || order_ids.contains(&id(v)));
    from_patch.sort_by_key(|v| {
        order_ids
            .iter()
            .position(|o| *o == id(v))
            .unwrap_or(usize::MAX)
    });
    let original_ids: Vec<Value> = merged.iter().map(&id).collect();
    let pos = |v: &Value| original_ids.iter().position(|o| *o == id(v));
    let (mut i, mut j) = (0, 0);
    let mut out = vec![];
    while i < server_only.len() || j < from_patch.len() {
        if i >= server_only.len() {
            out.push(from_patch[j].clone());
            j += 1;
        } else if j >= from_patch.len() {
            out.push(server_only[i].clone());
            i += 1;
        } else {
            match (pos(&server_only[i]), pos(&from_patch[j])) {
                (Some(l), Some(r)) if l < r => {
                    out.push(server_only[i].clone());
                    i += 1;
                }
                _ => {
                    out.push(from_patch[j].clone());
                    j += 1;
                }
            }
        }
    }
    out
}

/// RFC 7386.
pub(crate) fn merge(original: &Value, patch: &Value) -> Value {
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// RFC 6902.
pub(crate) fn json_patch(original: &Value, patch: &Value) -> Result<Value, String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| e.to_string())?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node() -> Value {
        json!({
            "metadata": {"name": "n1", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady"}
            ]}
        })
    }

    #[test]
    fn kubelet_status_patch_merges_conditions_by_type() {
        // The shape kubelet sends (a two-way strategic merge patch).
        let p = json!({"status": {
        "$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "Ready"}, {"type": "NetworkUnavailable"}],
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
            {"type": "NetworkUnavailable", "status": "False"}
        ]}});
        let out = strategic_merge(&node(), &p, node_strategy).unwrap();
        let c = &out["status"]["conditions"];
        assert_eq!(
            c,
            &json!([
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
                {"type": "NetworkUnavailable", "status": "False"}
            ])
        );
        // Labels are a map: merged, null deletes.
        let out = strategic_merge(
            &node(),
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
            node_strategy,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    }

    #[test]
    fn lists_without_a_strategy_replace_and_directives_apply() {
        let out =
            strategic_merge(&node(), &json!({"spec": {"taints": []}}), node_strategy).unwrap();
        assert_eq!(out["spec"]["taints"], json!([]));
        let out = strategic_merge(
            &node(),
            &json!({"metadata": {"finalizers": ["y"], "$deleteFromPrimitiveList/finalizers": ["x"]}}),
            node_strategy,
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
        let out = strategic_merge(
            &node(),
            &json!({"status": {"conditions": [{"type": "Ready", "$patch": "delete"}]}}),
            node_strategy,
        )
        .unwrap();
        assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 1);
        let out = strategic_merge(
            &node(),
            &json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}}),
            node_strategy,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"z": "9"}));
        assert!(strategic_merge(
            &node(),
            &json!({"status": {"conditions": [{"status": "x"}]}}),
            node_strategy
        )
        .unwrap_err()
        .contains("does not contain declared merge key: type"));
    }

    #[test]
    fn merge_and_json_patches() {
        let out = merge(
            &node(),
            &json!({"status": {"conditions": [{"type": "Ready"}]}}),
        );
        assert_eq!(out["status"]["conditions"], json!([{"type": "Ready"}]));
        let out = json_patch(
            &node(),
            &json!([{"op": "replace", "path": "/metadata/labels/a", "value": "9"}]),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["a"], "9");
        assert!(json_patch(
            &node(),
            &json!([{"op": "test", "path": "/metadata/name", "value": "n2"}])
        )
        .is_err());
    }
}
