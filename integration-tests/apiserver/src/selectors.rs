//! Label and field selectors as apimachinery parses and matches them:
//! `labelSelector=` and `fieldSelector=` of list and watch, and the field
//! selector's requirements that request info hands the authorizers. The
//! name rules a selector's keys and values must follow are `validation`'s;
//! this module knows nothing of the served kinds (their field labels are
//! passed in).

use std::collections::BTreeMap;

use crate::validation::{valid_label_key, valid_label_value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector (`labelSelector=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<(String, LabelOp)>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = vec![];
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(format!(
                    "unable to parse requirement: found '', expected: identifier (in {s:?})"
                ));
            }
            let bad = |why: &str| Err(format!("unable to parse requirement: {why}"));
            let (key, op) = if let Some(k) = p.strip_prefix('!') {
                (k.trim().to_string(), LabelOp::NotExists)
            } else if let Some((k, v)) = p.split_once("!=") {
                (k.trim().to_string(), LabelOp::Ne(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once("==") {
                (k.trim().to_string(), LabelOp::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once('=') {
                (k.trim().to_string(), LabelOp::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once('>') {
                match v.trim().parse() {
                    Ok(n) => (k.trim().to_string(), LabelOp::Gt(n)),
                    Err(_) => {
                        return bad(&format!(
                            "for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                        ))
                    }
                }
            } else if let Some((k, v)) = p.split_once('<') {
                match v.trim().parse() {
                    Ok(n) => (k.trim().to_string(), LabelOp::Lt(n)),
                    Err(_) => {
                        return bad(&format!(
                            "for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                        ))
                    }
                }
            } else if let Some(i) = p.find(" notin ") {
                let vals = parse_set(&p[i + 7..])
                    .ok_or("unable to parse requirement: found '', expected: '('")?;
                (p[..i].trim().to_string(), LabelOp::NotIn(vals))
            } else if let Some(i) = p.find(" in ") {
                let vals = parse_set(&p[i + 4..])
                    .ok_or("unable to parse requirement: found '', expected: '('")?;
                (p[..i].trim().to_string(), LabelOp::In(vals))
            } else {
                (p.to_string(), LabelOp::Exists)
            };
            if !valid_label_key(&key) {
                return bad(&format!("key: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            let values: Vec<&String> = match &op {
                LabelOp::Eq(v) | LabelOp::Ne(v) => vec![v],
                LabelOp::In(v) | LabelOp::NotIn(v) => v.iter().collect(),
                _ => vec![],
            };
            for v in values {
                if !valid_label_value(v) {
                    return bad(&format!("values[0][{key}]: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
                }
            }
            reqs.push((key, op));
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, op)| {
            let v = labels.get(k);
            match op {
                LabelOp::Eq(x) => v == Some(x),
                LabelOp::Ne(x) => v != Some(x),
                LabelOp::In(xs) => v.is_some_and(|v| xs.contains(v)),
                LabelOp::NotIn(xs) => !v.is_some_and(|v| xs.contains(v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
                LabelOp::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                LabelOp::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

/// A parsed field selector (`fieldSelector=`): `field=value`, `field==value`,
/// `field!=value`, comma-separated, with `\` escapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks every field against `supported` (the resource's
    /// field labels): an unknown one is "field label not supported".
    pub fn parse(s: &str, supported: &[&str]) -> Result<FieldSelector, String> {
        let sel = FieldSelector::parse_any(s)?;
        if let Some((f, _, _)) = sel
            .0
            .iter()
            .find(|(f, _, _)| !supported.contains(&f.as_str()))
        {
            return Err(format!("field label not supported: {f}"));
        }
        Ok(sel)
    }

    /// `fields.ParseSelector`: the syntax only, any field.
    pub fn parse_any(s: &str) -> Result<FieldSelector, String> {
        let mut out = vec![];
        if s.is_empty() {
            return Ok(FieldSelector(out));
        }
        // Split on unescaped commas.
        let mut parts = vec![];
        let mut cur = String::new();
        let mut esc = false;
        for c in s.chars() {
            if esc {
                cur.push('\\');
                cur.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == ',' {
                parts.push(std::mem::take(&mut cur));
            } else {
                cur.push(c);
            }
        }
        parts.push(cur);
        for p in parts {
            let (field, eq, value) = if let Some((f, v)) = p.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = p.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = p.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{p}'"));
            };
            let value = unescape(value)?;
            out.push((field.to_string(), eq, value));
        }
        Ok(FieldSelector(out))
    }

    /// `RequiresExactMatch(field)`: the value of a `field=` requirement,
    /// whatever else the selector holds (request info takes the name of a
    /// list/watch from `metadata.name`).
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| f == field && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, fields: &BTreeMap<&str, String>) -> bool {
        self.0.iter().all(|(f, eq, v)| {
            let actual = fields.get(f.as_str()).map(String::as_str).unwrap_or("");
            (actual == v) == *eq
        })
    }
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ))
                }
            }
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let l: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert!(LabelSelector::parse("a=1").unwrap().matches(&l));
        assert!(LabelSelector::parse("a in (1,2),!b").unwrap().matches(&l));
        assert!(!LabelSelector::parse("a!=1").unwrap().matches(&l));
        assert!(LabelSelector::parse("a=-bad").is_err());
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("metadata.name=x\\,y", &["metadata.name"]).unwrap();
        assert_eq!(f.exact_match("metadata.name"), Some("x,y"));
        assert_eq!(
            FieldSelector::parse("spec.foo=1", &["metadata.name"]).unwrap_err(),
            "field label not supported: spec.foo"
        );
    }
}
