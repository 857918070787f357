//! A small CEL subset for a CRD's `x-kubernetes-validations` rules, with
//! `self` bound to the value the rule sits on. It parses at start-up and
//! refuses (panics, naming the rule) anything outside the subset, so a rule
//! added to the shipped CRD is either enforced here or fails every test,
//! never silently skipped.
//!
//! The subset: `||`, `&&` (with CEL's commutative error absorption), `!`,
//! `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, field selection (`self.a.b`),
//! `has(self.a.b)`, `size(x)`/`x.size()`, `x.startsWith(s)`,
//! `x.endsWith(s)`, `x.contains(s)`, string/int/bool/null literals and list
//! literals. Not `oldSelf` (transition rules), macros such as `all`, or the
//! Kubernetes CEL libraries. A full CEL engine (cel-go semantics) would be
//! a larger dependency than this server's one CRD needs; extend this
//! module when the CRD needs more. A leaf: only `crd.rs` uses it, and it
//! uses nothing of the crate.

use serde_json::Value;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    SelfRef,
    Lit(Value),
    List(Vec<Expr>),
    Select(Box<Expr>, String),
    Has(Box<Expr>, String),
    Call(String, Option<Box<Expr>>, Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(Box<Expr>, String, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Op(String),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = vec![];
    let cs: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let s = i;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(cs[s..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let s = i;
            while i < cs.len() && cs[i].is_ascii_digit() {
                i += 1;
            }
            let n: String = cs[s..i].iter().collect();
            out.push(Tok::Int(n.parse().map_err(|e| format!("{n}: {e}"))?));
        } else if c == '\'' || c == '"' {
            let q = c;
            i += 1;
            let mut s = String::new();
            loop {
                match cs.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some(&ch) if ch == q => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = cs.get(i + 1).ok_or("unterminated escape")?;
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => *other,
                        });
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else {
            let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
            if ["||", "&&", "==", "!=", "<=", ">="].contains(&two.as_str()) {
                out.push(Tok::Op(two));
                i += 2;
            } else if "!<>().,[]-".contains(c) {
                out.push(Tok::Op(c.to_string()));
                i += 1;
            } else {
                return Err(format!("unexpected character {c:?}"));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if o == op)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if self.peek_op(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), String> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(format!("expected {op:?} at token {}", self.pos))
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.toks.get(self.pos) {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s.clone())
            }
            other => Err(format!("expected an identifier, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.eat_op("||") {
            l = Expr::Bin(Box::new(l), "||".into(), Box::new(self.and()?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.rel()?;
        while self.eat_op("&&") {
            l = Expr::Bin(Box::new(l), "&&".into(), Box::new(self.rel()?));
        }
        Ok(l)
    }

    fn rel(&mut self) -> Result<Expr, String> {
        let l = self.unary()?;
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat_op(op) {
                return Ok(Expr::Bin(Box::new(l), op.into(), Box::new(self.unary()?)));
            }
        }
        if matches!(self.toks.get(self.pos), Some(Tok::Ident(s)) if s == "in") {
            self.pos += 1;
            return Ok(Expr::Bin(Box::new(l), "in".into(), Box::new(self.unary()?)));
        }
        Ok(l)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_op("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_op("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.member()
    }

    fn args(&mut self) -> Result<Vec<Expr>, String> {
        let mut args = vec![];
        if self.eat_op(")") {
            return Ok(args);
        }
        loop {
            args.push(self.or()?);
            if self.eat_op(")") {
                return Ok(args);
            }
            self.expect_op(",")?;
        }
    }

    fn member(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        while self.eat_op(".") {
            let name = self.ident()?;
            if self.eat_op("(") {
                if !["size", "startsWith", "endsWith", "contains"].contains(&name.as_str()) {
                    return Err(format!(
                        "the function {name:?} is outside the supported CEL subset"
                    ));
                }
                let args = self.args()?;
                e = Expr::Call(name, Some(Box::new(e)), args);
            } else {
                e = Expr::Select(Box::new(e), name);
            }
        }
        if self.peek_op("[") {
            return Err("indexing is outside the supported CEL subset".into());
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Lit(Value::String(s)))
            }
            Some(Tok::Int(n)) => {
                self.pos += 1;
                Ok(Expr::Lit(Value::from(n)))
            }
            Some(Tok::Op(o)) if o == "(" => {
                self.pos += 1;
                let e = self.or()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Some(Tok::Op(o)) if o == "[" => {
                self.pos += 1;
                let mut items = vec![];
                if !self.eat_op("]") {
                    loop {
                        items.push(self.or()?);
                        if self.eat_op("]") {
                            break;
                        }
                        self.expect_op(",")?;
                    }
                }
                Ok(Expr::List(items))
            }
            Some(Tok::Ident(id)) => {
                self.pos += 1;
                match id.as_str() {
                    "self" => Ok(Expr::SelfRef),
                    "true" => Ok(Expr::Lit(Value::Bool(true))),
                    "false" => Ok(Expr::Lit(Value::Bool(false))),
                    "null" => Ok(Expr::Lit(Value::Null)),
                    "has" => {
                        self.expect_op("(")?;
                        let arg = self.member()?;
                        self.expect_op(")")?;
                        match arg {
                            Expr::Select(obj, field) => Ok(Expr::Has(obj, field)),
                            _ => Err("has() needs a field selection, such as has(self.x)".into()),
                        }
                    }
                    "size" if self.peek_op("(") => {
                        self.pos += 1;
                        let args = self.args()?;
                        Ok(Expr::Call("size".into(), None, args))
                    }
                    other => Err(format!(
                        "{other:?} is outside the supported CEL subset (only `self` is bound)"
                    )),
                }
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

/// Parses `rule`, or says why it is outside the subset.
pub(crate) fn parse(rule: &str) -> Result<Expr, String> {
    let toks = lex(rule)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected trailing input at token {}", p.pos));
    }
    Ok(e)
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null_type",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "double",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn no_overload(op: &str, a: &Value, b: &Value) -> String {
    format!("no such overload: {}.{op}({})", type_name(a), type_name(b))
}

fn equal(a: &Value, b: &Value) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

/// Evaluates `e` with `self` = `this`.
pub(crate) fn eval(e: &Expr, this: &Value) -> Result<Value, String> {
    match e {
        Expr::SelfRef => Ok(this.clone()),
        Expr::Lit(v) => Ok(v.clone()),
        Expr::List(items) => Ok(Value::Array(
            items
                .iter()
                .map(|i| eval(i, this))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Select(obj, f) => match eval(obj, this)? {
            Value::Object(m) => m.get(f).cloned().ok_or_else(|| format!("no such key: {f}")),
            other => Err(format!(
                "type '{}' does not support field selection",
                type_name(&other)
            )),
        },
        Expr::Has(obj, f) => match eval(obj, this)? {
            Value::Object(m) => Ok(Value::Bool(m.contains_key(f))),
            other => Err(format!(
                "invalid type for field selection: {}",
                type_name(&other)
            )),
        },
        Expr::Not(x) => match eval(x, this)? {
            Value::Bool(b) => Ok(Value::Bool(!b)),
            other => Err(format!("no such overload: !{}", type_name(&other))),
        },
        Expr::Neg(x) => match eval(x, this)? {
            Value::Number(n) if n.is_i64() => Ok(Value::from(-n.as_i64().unwrap_or(0))),
            Value::Number(n) => Ok(serde_json::json!(-n.as_f64().unwrap_or(0.0))),
            other => Err(format!("no such overload: -{}", type_name(&other))),
        },
        Expr::Call(name, target, args) => {
            let t = target.as_ref().map(|t| eval(t, this)).transpose()?;
            let a: Vec<Value> = args
                .iter()
                .map(|x| eval(x, this))
                .collect::<Result<_, _>>()?;
            let subject = match (&t, a.first()) {
                (Some(t), _) => t.clone(),
                (None, Some(x)) if name == "size" => x.clone(),
                _ => return Err(format!("{name}: missing argument")),
            };
            match name.as_str() {
                "size" => match &subject {
                    Value::String(s) => Ok(Value::from(s.chars().count() as i64)),
                    Value::Array(l) => Ok(Value::from(l.len() as i64)),
                    Value::Object(m) => Ok(Value::from(m.len() as i64)),
                    other => Err(format!("no such overload: size({})", type_name(other))),
                },
                "startsWith" | "endsWith" | "contains" => {
                    let (Value::String(s), Some(Value::String(x))) = (&subject, a.first()) else {
                        return Err(format!("no such overload: {name}"));
                    };
                    Ok(Value::Bool(match name.as_str() {
                        "startsWith" => s.starts_with(x.as_str()),
                        "endsWith" => s.ends_with(x.as_str()),
                        _ => s.contains(x.as_str()),
                    }))
                }
                other => Err(format!("unknown function {other}")),
            }
        }
        Expr::Bin(l, op, r) if op == "||" || op == "&&" => {
            let short = op == "||";
            let lv = eval(l, this);
            if lv == Ok(Value::Bool(short)) {
                return Ok(Value::Bool(short));
            }
            let rv = eval(r, this);
            if rv == Ok(Value::Bool(short)) {
                return Ok(Value::Bool(short));
            }
            match (lv?, rv?) {
                (Value::Bool(_), Value::Bool(b)) => Ok(Value::Bool(b)),
                (a, b) => Err(no_overload(op, &a, &b)),
            }
        }
        Expr::Bin(l, op, r) => {
            let a = eval(l, this)?;
            let b = eval(r, this)?;
            match op.as_str() {
                "==" => Ok(Value::Bool(equal(&a, &b))),
                "!=" => Ok(Value::Bool(!equal(&a, &b))),
                "in" => match &b {
                    Value::Array(l) => Ok(Value::Bool(l.iter().any(|x| equal(x, &a)))),
                    Value::Object(m) => match &a {
                        Value::String(k) => Ok(Value::Bool(m.contains_key(k))),
                        _ => Err(no_overload(op, &a, &b)),
                    },
                    _ => Err(no_overload(op, &a, &b)),
                },
                _ => {
                    let ord = match (&a, &b) {
                        (Value::String(x), Value::String(y)) => x.cmp(y),
                        _ if a.is_number() && b.is_number() => num(&a)
                            .zip(num(&b))
                            .and_then(|(x, y)| x.partial_cmp(&y))
                            .ok_or_else(|| no_overload(op, &a, &b))?,
                        _ => return Err(no_overload(op, &a, &b)),
                    };
                    Ok(Value::Bool(match op.as_str() {
                        "<" => ord.is_lt(),
                        "<=" => ord.is_le(),
                        ">" => ord.is_gt(),
                        _ => ord.is_ge(),
                    }))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(rule: &str, this: Value) -> Result<Value, String> {
        eval(&parse(rule).unwrap(), &this)
    }

    #[test]
    fn the_crds_rules_evaluate() {
        let r = "self.kind != 'serialnumber' || has(self.serialNumber)";
        assert_eq!(run(r, json!({"kind": "serialnumber"})), Ok(json!(false)));
        assert_eq!(
            run(r, json!({"kind": "serialnumber", "serialNumber": "0A"})),
            Ok(json!(true))
        );
        assert_eq!(run(r, json!({"kind": "DNS"})), Ok(json!(true)));
    }

    #[test]
    fn errors_are_absorbed_as_cel_does_and_reported_otherwise() {
        assert_eq!(run("self.x == 1 || true", json!({})), Ok(json!(true)));
        assert_eq!(run("true || self.x == 1", json!({})), Ok(json!(true)));
        assert_eq!(
            run("self.x == 1 || false", json!({})),
            Err("no such key: x".into())
        );
        assert_eq!(
            run(
                "size(self.a) >= 2 && self.a.startsWith('x')",
                json!({"a": "xy"})
            ),
            Ok(json!(true))
        );
        assert_eq!(run("'b' in ['a', 'b']", json!({})), Ok(json!(true)));
    }

    #[test]
    fn rules_outside_the_subset_are_refused() {
        assert!(parse("self.x == oldSelf.x").is_err());
        assert!(parse("self.items.all(i, i > 0)").is_err());
        assert!(parse("self.a[0] == 1").is_err());
    }
}
