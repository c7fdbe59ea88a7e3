//! EventBridge-style event patterns: validated when a rule is saved, matched against every
//! event the monitor records.
//!
//! A pattern is a JSON object. Each key names a field of the event; its value is either a
//! nested object (a pattern for that object) or an array of conditions, of which one must
//! match. Every key must match. Conditions, as in EventBridge:
//! - a string, number, boolean or `null`: equal to the field (a field holding an array
//!   matches when any element does);
//! - `{"prefix": "x"}`, `{"suffix": "x"}` (either may take `{"equals-ignore-case": "x"}`),
//!   `{"equals-ignore-case": "x"}`, `{"wildcard": "a*b"}`;
//! - `{"anything-but": v}` with a value, a list of values, or `{"prefix"|"suffix": "x"}`,
//!   `{"equals-ignore-case": "x" | [..]}`, `{"wildcard": "x" | [..]}` (only a present field);
//! - `{"numeric": [">", 0, "<=", 5]}` (one or two comparisons);
//! - `{"exists": true | false}`.
//!
//! `"$or": [pattern, pattern, ...]` at any level matches when one of them does.
//!
//! At the top level a pattern names the fields of the document an event is matched as
//! ([`FIELDS`]); any other name could never match, so it is refused, not stored.

use serde_json::Value;

/// The largest pattern accepted, in bytes of JSON.
pub const MAX_PATTERN_BYTES: usize = 4096;
const MAX_DEPTH: usize = 10;

/// The top-level fields of an event as rules see it (`monitor::Event::document`); only
/// `detail` holds an object.
pub const FIELDS: [&str; 7] = [
    "id",
    "source",
    "detail-type",
    "time",
    "tenant",
    "priority",
    "detail",
];
const MAX_VALUES: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(Obj);

#[derive(Debug, Clone, PartialEq)]
struct Obj {
    fields: Vec<(String, Sub)>,
    ors: Vec<Vec<Obj>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Sub {
    Obj(Obj),
    Conds(Vec<Cond>),
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Exact(Value),
    Prefix { text: String, ignore_case: bool },
    Suffix { text: String, ignore_case: bool },
    EqualsIgnoreCase(String),
    Wildcard(String),
    AnythingBut(Vec<Cond>),
    Numeric(Vec<(Op, f64)>),
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Why a pattern was refused: where (a dotted path) and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pattern{}: {why}", if .path.is_empty() { String::new() } else { format!(" at {}", .path) })]
pub struct PatternError {
    pub path: String,
    pub why: String,
}

fn err<T>(path: &str, why: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError {
        path: path.to_string(),
        why: why.into(),
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Pattern {
    /// Validates a pattern and compiles it.
    pub fn parse(v: &Value) -> Result<Self, PatternError> {
        let size = v.to_string().len();
        if size > MAX_PATTERN_BYTES {
            return err(
                "",
                format!("is {size} bytes of JSON; at most {MAX_PATTERN_BYTES}"),
            );
        }
        let Value::Object(m) = v else {
            return err(
                "",
                "must be a JSON object such as {\"detail-type\": [\"build\"]}",
            );
        };
        if m.is_empty() {
            return err(
                "",
                "an empty pattern would match every event; to mean that, say {\"source\": [{\"prefix\": \"\"}]}",
            );
        }
        let top = obj(v, "", 0)?;
        check_fields(&top)?;
        Ok(Pattern(top))
    }

    pub fn matches(&self, event: &Value) -> bool {
        self.0.matches(Some(event))
    }
}

/// The top level (and each of its `$or` alternatives) names only fields events have.
fn check_fields(top: &Obj) -> Result<(), PatternError> {
    for (name, sub) in &top.fields {
        if !FIELDS.contains(&name.as_str()) {
            return err(
                name,
                format!(
                    "no event has this field: a pattern matches {} (and what is inside detail)",
                    FIELDS.join(", ")
                ),
            );
        }
        if name != "detail" && matches!(sub, Sub::Obj(_)) {
            return err(
                name,
                "holds text, not an object: give a list of values, e.g. [\"x\"]",
            );
        }
    }
    for alts in &top.ors {
        for alt in alts {
            check_fields(alt)?;
        }
    }
    Ok(())
}

fn obj(v: &Value, path: &str, depth: usize) -> Result<Obj, PatternError> {
    if depth > MAX_DEPTH {
        return err(path, format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let Value::Object(m) = v else {
        return err(path, "must be an object");
    };
    let mut out = Obj {
        fields: Vec::new(),
        ors: Vec::new(),
    };
    for (k, sub) in m {
        let here = join(path, k);
        if k == "$or" {
            let Value::Array(alts) = sub else {
                return err(&here, "must be a list of patterns");
            };
            if alts.len() < 2 {
                return err(&here, "needs at least two patterns");
            }
            let alts = alts
                .iter()
                .enumerate()
                .map(|(i, a)| obj(a, &format!("{here}[{i}]"), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            out.ors.push(alts);
            continue;
        }
        if k.is_empty() {
            return err(path, "field names must not be empty");
        }
        let s = match sub {
            Value::Object(_) => Sub::Obj(obj(sub, &here, depth + 1)?),
            Value::Array(conds) => {
                if conds.is_empty() {
                    return err(
                        &here,
                        "an empty list matches nothing; give at least one value",
                    );
                }
                if conds.len() > MAX_VALUES {
                    return err(&here, format!("at most {MAX_VALUES} values"));
                }
                Sub::Conds(
                    conds
                        .iter()
                        .map(|c| cond(c, &here))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            _ => {
                return err(
                    &here,
                    format!("must be a list of values (e.g. [{sub}]) or a nested pattern"),
                );
            }
        };
        out.fields.push((k.clone(), s));
    }
    Ok(out)
}

fn text(v: &Value, path: &str, op: &str) -> Result<String, PatternError> {
    v.as_str().map(str::to_string).ok_or_else(|| PatternError {
        path: path.to_string(),
        why: format!("\"{op}\" takes a string"),
    })
}

/// `"x"` or `{"equals-ignore-case": "x"}` (for prefix and suffix).
fn affix(v: &Value, path: &str, op: &str) -> Result<(String, bool), PatternError> {
    match v {
        Value::String(s) => Ok((s.clone(), false)),
        Value::Object(m) if m.len() == 1 && m.contains_key("equals-ignore-case") => {
            Ok((text(&m["equals-ignore-case"], path, op)?, true))
        }
        _ => err(
            path,
            format!("\"{op}\" takes a string or {{\"equals-ignore-case\": string}}"),
        ),
    }
}

fn wildcard(s: String, path: &str) -> Result<String, PatternError> {
    if s.contains("**") {
        return err(path, "\"wildcard\" must not have two consecutive *");
    }
    Ok(s)
}

fn strings(v: &Value, path: &str, op: &str) -> Result<Vec<String>, PatternError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a.iter().map(|x| text(x, path, op)).collect(),
        _ => err(
            path,
            format!("\"{op}\" takes a string or a list of strings"),
        ),
    }
}

fn op(s: &Value, path: &str) -> Result<Op, PatternError> {
    Ok(match s.as_str() {
        Some("=") => Op::Eq,
        Some("<") => Op::Lt,
        Some("<=") => Op::Le,
        Some(">") => Op::Gt,
        Some(">=") => Op::Ge,
        _ => return err(path, format!("{s} is not one of = < <= > >=")),
    })
}

fn cond(v: &Value, path: &str) -> Result<Cond, PatternError> {
    let Value::Object(m) = v else {
        if v.is_array() {
            return err(path, "a list inside a list: give the values in one list");
        }
        return Ok(Cond::Exact(v.clone()));
    };
    if m.len() != 1 {
        return err(
            path,
            "each condition object has exactly one operator (prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists)",
        );
    }
    let (name, arg) = m
        .iter()
        .next()
        .map(|(k, a)| (k.as_str(), a))
        .ok_or_else(|| PatternError {
            path: path.to_string(),
            why: "empty condition".into(),
        })?;
    Ok(match name {
        "prefix" => {
            let (text, ignore_case) = affix(arg, path, name)?;
            Cond::Prefix { text, ignore_case }
        }
        "suffix" => {
            let (text, ignore_case) = affix(arg, path, name)?;
            Cond::Suffix { text, ignore_case }
        }
        "equals-ignore-case" => Cond::EqualsIgnoreCase(text(arg, path, name)?),
        "wildcard" => Cond::Wildcard(wildcard(text(arg, path, name)?, path)?),
        "exists" => match arg {
            Value::Bool(b) => Cond::Exists(*b),
            _ => return err(path, "\"exists\" takes true or false"),
        },
        "numeric" => {
            let Value::Array(a) = arg else {
                return err(
                    path,
                    "\"numeric\" takes a list such as [\">\", 0, \"<=\", 5]",
                );
            };
            if a.len() != 2 && a.len() != 4 {
                return err(
                    path,
                    "\"numeric\" takes one or two comparisons: [op, n] or [op, n, op, n]",
                );
            }
            let mut cmps = Vec::new();
            for pair in a.chunks(2) {
                let o = op(&pair[0], path)?;
                let n = pair[1].as_f64().ok_or_else(|| PatternError {
                    path: path.to_string(),
                    why: format!("\"numeric\" compares with numbers, not {}", pair[1]),
                })?;
                cmps.push((o, n));
            }
            if let [(lo, a), (hi, b)] = cmps[..] {
                if !matches!(lo, Op::Gt | Op::Ge) || !matches!(hi, Op::Lt | Op::Le) {
                    return err(
                        path,
                        "a numeric range is a lower bound (> or >=) then an upper one (< or <=)",
                    );
                }
                if a > b {
                    return err(path, format!("the numeric range {a}..{b} is empty"));
                }
            }
            Cond::Numeric(cmps)
        }
        "anything-but" => Cond::AnythingBut(match arg {
            Value::Array(a) => {
                if a.is_empty() {
                    return err(path, "\"anything-but\" needs at least one value");
                }
                a.iter()
                    .map(|x| match x {
                        Value::Object(_) | Value::Array(_) => {
                            err(path, "\"anything-but\" lists hold plain values")
                        }
                        _ => Ok(Cond::Exact(x.clone())),
                    })
                    .collect::<Result<_, _>>()?
            }
            Value::Object(inner) if inner.len() == 1 => {
                let (k, a) = inner
                    .iter()
                    .next()
                    .map(|(k, a)| (k.as_str(), a))
                    .ok_or_else(|| PatternError {
                        path: path.to_string(),
                        why: "empty anything-but".into(),
                    })?;
                match k {
                    "prefix" => vec![Cond::Prefix {
                        text: text(a, path, k)?,
                        ignore_case: false,
                    }],
                    "suffix" => vec![Cond::Suffix {
                        text: text(a, path, k)?,
                        ignore_case: false,
                    }],
                    "equals-ignore-case" => strings(a, path, k)?
                        .into_iter()
                        .map(Cond::EqualsIgnoreCase)
                        .collect(),
                    "wildcard" => strings(a, path, k)?
                        .into_iter()
                        .map(|w| wildcard(w, path).map(Cond::Wildcard))
                        .collect::<Result<_, _>>()?,
                    other => {
                        return err(
                            path,
                            format!(
                                "\"anything-but\" does not take \"{other}\" (prefix, suffix, equals-ignore-case, wildcard)"
                            ),
                        );
                    }
                }
            }
            Value::Object(_) => return err(path, "\"anything-but\" takes one operator"),
            other => vec![Cond::Exact(other.clone())],
        }),
        "cidr" => return err(path, "\"cidr\" is not supported by this server"),
        other => return err(path, format!("unknown operator \"{other}\"")),
    })
}

impl Obj {
    fn matches(&self, v: Option<&Value>) -> bool {
        self.fields.iter().all(|(k, sub)| {
            let child = v.and_then(|v| v.get(k));
            match sub {
                Sub::Obj(o) => o.matches(child),
                Sub::Conds(cs) => cs.iter().any(|c| c.matches_field(child)),
            }
        }) && self
            .ors
            .iter()
            .all(|alts| alts.iter().any(|a| a.matches(v)))
    }
}

/// `*`-only wildcard match in linear time: the literal pieces between the stars must appear in
/// order, the first at the start and the last at the end. (Backtracking to the last star, the
/// classic way, is quadratic: a 4 KB pattern on a 190 KB field took seconds of CPU.)
fn glob(text: &str, pat: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    let [first, .., last] = parts.as_slice() else {
        return text == pat;
    };
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for piece in &parts[1..parts.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

impl Cond {
    /// Whether the field (absent, a value, or an array of values) satisfies this condition.
    fn matches_field(&self, field: Option<&Value>) -> bool {
        match (self, field) {
            (Cond::Exists(want), f) => f.is_some() == *want,
            (_, None) => false,
            (Cond::AnythingBut(not), Some(Value::Array(items))) => {
                !items.iter().any(|x| not.iter().any(|c| c.matches_value(x)))
            }
            (Cond::AnythingBut(not), Some(v)) => !not.iter().any(|c| c.matches_value(v)),
            (_, Some(Value::Array(items))) => items.iter().any(|x| self.matches_value(x)),
            (_, Some(v)) => self.matches_value(v),
        }
    }

    fn matches_value(&self, v: &Value) -> bool {
        let s = v.as_str();
        match self {
            Cond::Exact(want) => match (want, v) {
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                _ => want == v,
            },
            Cond::Prefix { text, ignore_case } => s.is_some_and(|s| {
                if *ignore_case {
                    s.to_lowercase().starts_with(&text.to_lowercase())
                } else {
                    s.starts_with(text.as_str())
                }
            }),
            Cond::Suffix { text, ignore_case } => s.is_some_and(|s| {
                if *ignore_case {
                    s.to_lowercase().ends_with(&text.to_lowercase())
                } else {
                    s.ends_with(text.as_str())
                }
            }),
            Cond::EqualsIgnoreCase(t) => s.is_some_and(|s| s.to_lowercase() == t.to_lowercase()),
            Cond::Wildcard(p) => s.is_some_and(|s| glob(s, p)),
            Cond::Numeric(cmps) => v.as_f64().is_some_and(|x| {
                cmps.iter().all(|(o, n)| match o {
                    Op::Eq => x == *n,
                    Op::Lt => x < *n,
                    Op::Le => x <= *n,
                    Op::Gt => x > *n,
                    Op::Ge => x >= *n,
                })
            }),
            Cond::Exists(_) => true,
            Cond::AnythingBut(not) => !not.iter().any(|c| c.matches_value(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev() -> Value {
        json!({
            "id": "e1", "source": "agentbus", "detail-type": "build.finished",
            "tenant": "acme", "priority": "error",
            "detail": {"status": "FAILED", "duration": 42.5, "tags": ["ci", "nightly"],
                        "repo": {"name": "agentbus-core"}}
        })
    }

    fn m(p: Value) -> bool {
        Pattern::parse(&p).unwrap().matches(&ev())
    }

    #[test]
    fn exact_values_and_nesting() {
        assert!(m(json!({"source": ["agentbus"]})));
        assert!(m(
            json!({"source": ["other", "agentbus"], "priority": ["error"]})
        ));
        assert!(!m(json!({"source": ["agentbus"], "priority": ["info"]})));
        assert!(m(json!({"detail": {"repo": {"name": ["agentbus-core"]}}})));
        assert!(
            m(json!({"detail": {"tags": ["nightly"]}})),
            "arrays match by element"
        );
        assert!(m(json!({"detail": {"duration": [42.5]}})));
        assert!(!m(json!({"detail": {"missing": ["x"]}})));
    }

    #[test]
    fn operators() {
        assert!(m(json!({"detail-type": [{"prefix": "build."}]})));
        assert!(m(
            json!({"detail-type": [{"suffix": {"equals-ignore-case": "FINISHED"}}]})
        ));
        assert!(m(
            json!({"detail": {"status": [{"equals-ignore-case": "failed"}]}})
        ));
        assert!(m(json!({"detail-type": [{"wildcard": "build.*ed"}]})));
        assert!(!m(json!({"detail-type": [{"wildcard": "deploy.*"}]})));
        assert!(m(
            json!({"detail": {"duration": [{"numeric": [">", 40, "<=", 50]}]}})
        ));
        assert!(!m(
            json!({"detail": {"duration": [{"numeric": ["<", 10]}]}})
        ));
        assert!(m(
            json!({"priority": [{"anything-but": ["info", "warning"]}]})
        ));
        assert!(!m(json!({"priority": [{"anything-but": "error"}]})));
        assert!(m(
            json!({"detail-type": [{"anything-but": {"prefix": "deploy."}}]})
        ));
        assert!(
            !m(json!({"detail": {"nope": [{"anything-but": "x"}]}})),
            "anything-but needs the field"
        );
        assert!(m(json!({"detail": {"nope": [{"exists": false}]}})));
        assert!(m(json!({"detail": {"status": [{"exists": true}]}})));
        assert!(m(
            json!({"detail": {"nothing": {"deeper": [{"exists": false}]}}})
        ));
        assert!(m(json!({"source": [{"prefix": ""}]})));
    }

    #[test]
    fn or_alternatives() {
        assert!(m(
            json!({"$or": [{"priority": ["critical"]}, {"detail": {"status": ["FAILED"]}}]})
        ));
        assert!(!m(
            json!({"$or": [{"priority": ["critical"]}, {"source": ["x"]}]})
        ));
    }

    #[test]
    fn bad_patterns_say_where_and_why() {
        let e = |p: Value| Pattern::parse(&p).unwrap_err().to_string();
        assert!(e(json!([])).contains("JSON object"));
        assert!(e(json!({})).contains("every event"));
        assert!(e(json!({"source": "agentbus"})).contains("at source: must be a list"));
        assert!(e(json!({"source": []})).contains("matches nothing"));
        assert!(
            e(json!({"detail": {"x": [{"regex": "a"}]}}))
                .contains("at detail.x: unknown operator \"regex\"")
        );
        assert!(
            e(json!({"detail": {"x": [{"numeric": ["<", 5, ">", 1]}]}})).contains("lower bound")
        );
        assert!(e(json!({"detail": {"x": [{"numeric": [">", 5, "<", 1]}]}})).contains("empty"));
        assert!(e(json!({"detail": {"x": [{"numeric": ["~", 5]}]}})).contains("not one of"));
        assert!(e(json!({"detail": {"x": [{"prefix": 5}]}})).contains("takes a string"));
        assert!(e(json!({"detail": {"x": [{"exists": "yes"}]}})).contains("true or false"));
        assert!(e(json!({"detail": {"x": [{"wildcard": "a**"}]}})).contains("consecutive"));
        assert!(e(json!({"$or": [{"a": [1]}]})).contains("at least two"));
        assert!(
            e(json!({"detail-typo": ["build"]}))
                .contains("at detail-typo: no event has this field")
        );
        assert!(
            e(json!({"$or": [{"source": ["a"]}, {"sourc": ["b"]}]}))
                .contains("at sourc: no event has this field")
        );
        assert!(e(json!({"source": {"name": ["a"]}})).contains("at source: holds text"));
        assert!(
            e(json!({"detail": {"x": [{"prefix": "a", "suffix": "b"}]}}))
                .contains("exactly one operator")
        );
        assert!(e(json!({"detail": {"x": [["a"]]}})).contains("inside a list"));
        let big = json!({"x": ["a".repeat(5000)]});
        assert!(e(big).contains("at most"));
    }

    #[test]
    fn glob_matching() {
        assert!(glob("abc", "a*c"));
        assert!(glob("abc", "*"));
        assert!(glob("", "*"));
        assert!(!glob("abc", "a*d"));
        assert!(glob("a.b.c", "a.*.c"));
        assert!(glob("aXbXc", "*X*c"));
        assert!(!glob("ab", "ab*ab"));
        assert!(glob("abab", "ab*ab"));
        assert!(glob("aaa", "a*a*a"));
        assert!(!glob("aa", "a*a*a"));
        assert!(glob("x", "x"));
        assert!(!glob("xy", "x"));
        assert!(glob("éabü", "é*ü"));
        // The pathological case of backtracking: many stars against a long run of one
        // letter that never completes the pattern. Linear now (it took seconds before).
        let text = "a".repeat(190_000);
        let pat = format!("{}b", "a*".repeat(2_000));
        assert!(!glob(&text, &pat));
        assert!(glob(&format!("{text}b"), &pat));
    }
}
