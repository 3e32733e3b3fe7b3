//! IAM-style policy documents: parsing and validation.
//!
//! A document is checked against the catalogue when it is submitted, so every error a
//! policy author can make is reported then, naming the statement and the reason, and a
//! stored document always compiles. Actions (with `*` and `?`) are expanded against the
//! catalogue here; resource patterns and conditions are kept for the engine.

use serde_json::{Map, Value};

use super::catalogue::{self, Action, KeyType};
use crate::{CoreError, CoreResult};

/// Longest accepted document, in bytes (IAM allows 6,144 characters; statements here
/// name long resource paths, so a little more room).
pub const MAX_DOCUMENT_BYTES: usize = 10 * 1024;
/// Most statements in one document.
pub const MAX_STATEMENTS: usize = 100;
/// The `Version` values accepted. IAM's language version, so existing documents paste in.
pub const VERSIONS: &[&str] = &["2012-10-17"];

/// A validated policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    pub statements: Vec<Statement>,
}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// One validated statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// The catalogue actions the statement covers (`Action` expanded, `NotAction`
    /// complemented).
    pub actions: Vec<Action>,
    pub resources: ResourceMatch,
    /// All must hold.
    pub conditions: Vec<Condition>,
}

/// Which resources a statement covers. Patterns may hold `*` and principal variables.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceMatch {
    Any,
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// A condition operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    StringEquals,
    StringNotEquals,
    StringLike,
    StringNotLike,
    Bool,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
}

impl Operator {
    pub const ALL: [Operator; 9] = [
        Operator::StringEquals,
        Operator::StringNotEquals,
        Operator::StringLike,
        Operator::StringNotLike,
        Operator::Bool,
        Operator::DateLessThan,
        Operator::DateLessThanEquals,
        Operator::DateGreaterThan,
        Operator::DateGreaterThanEquals,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operator::StringEquals => "StringEquals",
            Operator::StringNotEquals => "StringNotEquals",
            Operator::StringLike => "StringLike",
            Operator::StringNotLike => "StringNotLike",
            Operator::Bool => "Bool",
            Operator::DateLessThan => "DateLessThan",
            Operator::DateLessThanEquals => "DateLessThanEquals",
            Operator::DateGreaterThan => "DateGreaterThan",
            Operator::DateGreaterThanEquals => "DateGreaterThanEquals",
        }
    }

    fn key_type(self) -> KeyType {
        match self {
            Operator::StringEquals | Operator::StringNotEquals | Operator::StringLike | Operator::StringNotLike => {
                KeyType::String
            }
            Operator::Bool => KeyType::Bool,
            _ => KeyType::Date,
        }
    }
}

/// One `operator: {key: values}` test; it holds when any value matches (for negated
/// operators: when none does).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub operator: Operator,
    /// The canonical key name.
    pub key: String,
    pub values: Vec<Operand>,
}

/// A condition value: text (may hold variables) or a time in Unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Text(String),
    Time(i64),
}

/// Parses and validates a policy document.
pub fn parse(text: &str) -> CoreResult<PolicyDocument> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(bad(format!("the policy document is {} bytes; the limit is {MAX_DOCUMENT_BYTES}", text.len())));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("the policy document is not valid JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(bad("the policy document must be a JSON object with \"Version\" and \"Statement\""));
    };
    for key in top.keys() {
        if !matches!(key.as_str(), "Version" | "Statement" | "Id") {
            return Err(bad(format!("unknown top-level key \"{key}\"; expected \"Version\", \"Statement\" or \"Id\"")));
        }
    }
    match top.get("Version") {
        Some(Value::String(v)) if VERSIONS.contains(&v.as_str()) => {}
        Some(v) => return Err(bad(format!("unsupported \"Version\" {v}; use \"{}\"", VERSIONS[0]))),
        None => return Err(bad(format!("\"Version\" is missing; use \"{}\"", VERSIONS[0]))),
    }
    let statements = match top.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => return Err(bad("\"Statement\" must be an object or a list of objects")),
        None => return Err(bad("\"Statement\" is missing")),
    };
    if statements.is_empty() {
        return Err(bad("\"Statement\" is empty; a policy needs at least one statement"));
    }
    if statements.len() > MAX_STATEMENTS {
        return Err(bad(format!("{} statements; the limit is {MAX_STATEMENTS}", statements.len())));
    }
    let mut parsed = Vec::with_capacity(statements.len());
    for (index, statement) in statements.into_iter().enumerate() {
        let statement = parse_statement(statement).map_err(|reason| {
            let sid =
                statement.get("Sid").and_then(Value::as_str).map(|s| format!(" (Sid \"{s}\")")).unwrap_or_default();
            bad(format!("Statement[{index}]{sid}: {reason}"))
        })?;
        if let Some(sid) = &statement.sid {
            if parsed.iter().any(|s: &Statement| s.sid.as_ref() == Some(sid)) {
                return Err(bad(format!("Statement[{index}]: Sid \"{sid}\" is used by an earlier statement")));
            }
        }
        parsed.push(statement);
    }
    Ok(PolicyDocument { statements: parsed })
}

fn bad(message: impl std::fmt::Display) -> CoreError {
    CoreError::malformed("document", message)
}

type Reason = String;

fn parse_statement(value: &Value) -> Result<Statement, Reason> {
    let Value::Object(map) = value else {
        return Err("a statement must be a JSON object".into());
    };
    for key in map.keys() {
        match key.as_str() {
            "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource" | "Condition" => {}
            "Principal" | "NotPrincipal" => {
                return Err(format!(
                    "\"{key}\" does not belong in a policy attached to users and groups; attach the policy to whom it should apply"
                ))
            }
            other => {
                return Err(format!(
                    "unknown key \"{other}\"; expected Sid, Effect, Action, NotAction, Resource, NotResource or Condition"
                ))
            }
        }
    }
    let sid = match map.get("Sid") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric()) => {
            Some(s.clone())
        }
        Some(_) => return Err("\"Sid\" must be 1-128 letters and digits".into()),
    };
    let effect = match map.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => return Err(format!("\"Effect\" must be \"Allow\" or \"Deny\", not \"{other}\"")),
        None => return Err("\"Effect\" is missing".into()),
    };
    let actions = match (map.get("Action"), map.get("NotAction")) {
        (Some(_), Some(_)) => return Err("use either \"Action\" or \"NotAction\", not both".into()),
        (None, None) => return Err("\"Action\" (or \"NotAction\") is missing".into()),
        (Some(list), None) => expand_actions(&strings(list, "Action")?)?,
        (None, Some(list)) => {
            let excluded = expand_actions(&strings(list, "NotAction")?)?;
            Action::ALL.iter().copied().filter(|a| !excluded.contains(a)).collect()
        }
    };
    let resources = match (map.get("Resource"), map.get("NotResource")) {
        (Some(_), Some(_)) => return Err("use either \"Resource\" or \"NotResource\", not both".into()),
        (None, None) => return Err("\"Resource\" (or \"NotResource\") is missing".into()),
        (Some(list), None) => {
            let patterns = resource_patterns(&strings(list, "Resource")?)?;
            if patterns.iter().any(|p| p == "*") {
                ResourceMatch::Any
            } else {
                ResourceMatch::In(patterns)
            }
        }
        (None, Some(list)) => ResourceMatch::NotIn(resource_patterns(&strings(list, "NotResource")?)?),
    };
    let conditions = match map.get("Condition") {
        None => Vec::new(),
        Some(Value::Object(ops)) => parse_conditions(ops)?,
        Some(_) => return Err("\"Condition\" must be an object of operators".into()),
    };
    Ok(Statement { sid, effect, actions, resources, conditions })
}

/// A string or a non-empty list of strings.
fn strings(value: &Value, what: &str) -> Result<Vec<String>, Reason> {
    let list = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("every \"{what}\" entry must be a string")))
            .collect::<Result<_, _>>()?,
        _ => return Err(format!("\"{what}\" must be a string or a list of strings")),
    };
    if list.is_empty() {
        return Err(format!("\"{what}\" is empty"));
    }
    Ok(list)
}

fn expand_actions(patterns: &[String]) -> Result<Vec<Action>, Reason> {
    let services = catalogue::services();
    let mut out = Vec::new();
    for pattern in patterns {
        let matched: Vec<Action> = if pattern == "*" {
            Action::ALL.to_vec()
        } else {
            let Some((service, verb)) = pattern.split_once(':') else {
                return Err(format!("action \"{pattern}\" must be \"service:Verb\" (or \"*\")"));
            };
            if service.contains(['*', '?']) {
                return Err(format!("action \"{pattern}\": wildcards may appear only in the verb, after the ':'"));
            }
            if !services.contains(&service) {
                return Err(format!(
                    "action \"{pattern}\": unknown service \"{service}\"; services are {}",
                    services.join(", ")
                ));
            }
            if verb.is_empty() || !verb.chars().all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?') {
                return Err(format!("action \"{pattern}\": the verb must be letters, digits, '*' or '?'"));
            }
            // Action names compare case-insensitively, as in IAM.
            let verb = verb.to_ascii_lowercase();
            Action::ALL
                .iter()
                .copied()
                .filter(|a| a.def().service == service)
                .filter(|a| glob_match(&verb, &a.name()[service.len() + 1..].to_ascii_lowercase()))
                .collect()
        };
        if matched.is_empty() {
            return Err(format!("action \"{pattern}\" is not in the catalogue"));
        }
        for a in matched {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks resource patterns against the catalogue's resource types.
fn resource_patterns(patterns: &[String]) -> Result<Vec<String>, Reason> {
    patterns.iter().map(|p| check_resource_pattern(p).map(|()| p.clone())).collect()
}

fn check_resource_pattern(pattern: &str) -> Result<(), Reason> {
    if pattern == "*" {
        return Ok(());
    }
    let fail = |why: &str| Err(format!("resource \"{pattern}\": {why}"));
    let Some(rest) = pattern.strip_prefix("atelier:") else {
        return fail("resource names start with \"atelier:<service>:\" (or use \"*\")");
    };
    let Some((service, path)) = rest.split_once(':') else {
        return fail("resource names are \"atelier:<service>:<path>\"");
    };
    if service.contains(['*', '?']) {
        return fail("the service part cannot hold wildcards; use \"*\" for every resource");
    }
    if !catalogue::services().contains(&service) {
        return fail(&format!("unknown service \"{service}\""));
    }
    if pattern.contains('?') {
        // Cedar's `like` has only `*`; rather than approximate `?`, refuse it.
        return fail("'?' is not supported in resource names; use '*'");
    }
    let without_vars = pattern.replace("${atelier:username}", "u").replace("${atelier:userid}", "u");
    if without_vars.contains(['$', '{', '}']) {
        return fail("the only variables allowed in resource names are ${atelier:username} and ${atelier:userid}");
    }
    if !without_vars.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/*@+=,".contains(c)) {
        return fail("resource names hold only letters, digits and - _ . : / * @ + = ,");
    }
    if path == "*" {
        return Ok(());
    }
    let segments: Vec<&str> = path.split('/').collect();
    let fits = catalogue::resource_types().iter().filter(|t| t.service == service).any(|t| {
        let template: Vec<&str> = t.pattern.splitn(3, ':').nth(2).unwrap_or_default().split('/').collect();
        segments.len() <= template.len()
            && segments.iter().zip(&template).enumerate().all(|(i, (seg, tpl))| {
                let last = i + 1 == segments.len();
                let variable = tpl.starts_with('{');
                // A literal segment (`group`, `version`) must be spelled out; a trailing `*`
                // may stand for it and everything below.
                (variable && !seg.is_empty()) || *seg == *tpl || (last && *seg == "*")
            })
            && (segments.len() == template.len() || segments.last().is_some_and(|s| s.ends_with('*')))
    });
    if !fits {
        let known: Vec<&str> =
            catalogue::resource_types().iter().filter(|t| t.service == service).map(|t| t.pattern).collect();
        return fail(&format!("does not fit any {service} resource type ({})", known.join(", ")));
    }
    Ok(())
}

fn parse_conditions(ops: &Map<String, Value>) -> Result<Vec<Condition>, Reason> {
    let mut out = Vec::new();
    for (op_name, keys) in ops {
        let Some(operator) = Operator::ALL.into_iter().find(|o| o.name() == op_name) else {
            let names: Vec<&str> = Operator::ALL.iter().map(|o| o.name()).collect();
            return Err(format!("unknown condition operator \"{op_name}\"; supported: {}", names.join(", ")));
        };
        let Value::Object(keys) = keys else {
            return Err(format!("\"{op_name}\" must map condition keys to values"));
        };
        if keys.is_empty() {
            return Err(format!("\"{op_name}\" names no condition key"));
        }
        for (key_name, values) in keys {
            let Some((key, key_type)) = catalogue::condition_key(key_name) else {
                return Err(format!("unknown condition key \"{key_name}\""));
            };
            if key_type != operator.key_type() {
                return Err(format!("{op_name} cannot test \"{key}\", which holds a {key_type:?} value"));
            }
            let raw: Vec<String> = match values {
                Value::String(s) => vec![s.clone()],
                Value::Bool(b) => vec![b.to_string()],
                Value::Number(n) => vec![n.to_string()],
                Value::Array(items) => items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        Value::Bool(b) => Ok(b.to_string()),
                        Value::Number(n) => Ok(n.to_string()),
                        _ => Err(format!("{op_name} \"{key}\": values must be strings")),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(format!("{op_name} \"{key}\": the value must be a string or a list of strings")),
            };
            if raw.is_empty() {
                return Err(format!("{op_name} \"{key}\" has no values"));
            }
            let values = raw
                .into_iter()
                .map(|v| operand(operator, &key, v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|why| format!("{op_name} \"{key}\": {why}"))?;
            out.push(Condition { operator, key, values });
        }
    }
    Ok(out)
}

fn operand(operator: Operator, key: &str, value: String) -> Result<Operand, Reason> {
    match operator.key_type() {
        KeyType::Date => parse_time(&value).map(Operand::Time),
        KeyType::Bool => match value.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(Operand::Text(value.to_ascii_lowercase())),
            _ => Err(format!("\"{value}\" is not true or false")),
        },
        KeyType::String => {
            if value.len() > 1024 {
                return Err("values are at most 1024 bytes".into());
            }
            if matches!(operator, Operator::StringLike | Operator::StringNotLike) && value.contains('?') {
                return Err("'?' is not supported in StringLike patterns; use '*'".into());
            }
            check_variables(&value, key)?;
            Ok(Operand::Text(value))
        }
    }
}

/// Condition values may use `${atelier:username}`, `${atelier:userid}`, and
/// `${atelier:groups}` as the whole value.
fn check_variables(value: &str, key: &str) -> Result<(), Reason> {
    if value == "${atelier:groups}" {
        return Ok(());
    }
    let rest = value.replace("${atelier:username}", "").replace("${atelier:userid}", "");
    if rest.contains("${") {
        return Err(format!(
            "\"{value}\" for \"{key}\" uses an unknown variable; known: ${{atelier:username}}, ${{atelier:userid}}, ${{atelier:groups}} (alone)"
        ));
    }
    Ok(())
}

/// RFC 3339 or Unix seconds.
fn parse_time(value: &str) -> Result<i64, Reason> {
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs);
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("\"{value}\" is not a date (use RFC 3339, e.g. 2027-01-31T00:00:00Z)"))
}

/// `*` matches any run of characters, `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((bp, bt)) = backtrack {
            pi = bp + 1;
            ti = bt + 1;
            backtrack = Some((bp, bt + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(text) {
            Err(CoreError::Malformed { message, .. }) => message,
            other => panic!("expected a malformed-document error, got {other:?}"),
        }
    }

    fn doc(statements: &str) -> String {
        format!(r#"{{"Version":"2012-10-17","Statement":{statements}}}"#)
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match("get*", "getuser"));
        assert!(glob_match("?etuser", "getuser"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("get?", "getuser"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn actions_expand_against_the_catalogue() {
        let d = parse(&doc(r#"{"Effect":"Allow","Action":["models:Get*","iam:?etUser"],"Resource":"*"}"#))
            .expect("test input");
        assert_eq!(d.statements[0].actions, vec![Action::GetUser, Action::GetModelGroup, Action::GetModelVersion]);
        let d = parse(&doc(r#"[{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}]"#)).expect("test input");
        assert!(!d.statements[0].actions.contains(&Action::CreateUser));
        assert!(d.statements[0].actions.contains(&Action::CreateTrainingJob));
    }

    #[test]
    fn errors_name_the_statement_and_the_reason() {
        let ok = r#"{"Effect":"Allow","Action":"iam:GetUser","Resource":"*"}"#;
        assert!(err(&doc(&format!(r#"[{ok},{{"Effect":"Allow","Action":"models:Aprove*","Resource":"*"}}]"#)))
            .starts_with("Statement[1]: action \"models:Aprove*\" is not in the catalogue"));
        assert!(err(&doc(r#"[{"Sid":"X","Efect":"Allow"}]"#))
            .starts_with("Statement[0] (Sid \"X\"): unknown key \"Efect\""));
        assert!(err(&doc(r#"{"Effect":"Allow","Action":"mod*:Get","Resource":"*"}"#)).contains("only in the verb"));
        assert!(err(&doc(r#"{"Effect":"Allow","Action":"iam:GetUser","Resource":"atelier:m*:x"}"#))
            .contains("service part cannot hold wildcards"));
        assert!(err(&doc(r#"{"Effect":"Allow","Action":"iam:GetUser","Resource":"atelier:models:grp/x"}"#))
            .contains("does not fit any models resource type"));
        assert!(err(&doc(r#"{"Effect":"Allow","Action":"iam:GetUser","Resource":"atelier:models:gr*/x"}"#))
            .contains("does not fit"));
        assert!(
            err(&doc(r#"{"Effect":"Permit","Action":"iam:GetUser","Resource":"*"}"#)).contains("\"Effect\" must be")
        );
        assert!(err(&doc(r#"{"Effect":"Allow","Action":"iam:GetUser","Resource":"*","Condition":{"StringEquals":{"atelier:nope":"x"}}}"#))
            .contains("unknown condition key \"atelier:nope\""));
        assert!(err(&doc(r#"{"Effect":"Allow","Action":"iam:GetUser","Resource":"*","Condition":{"DateLessThan":{"atelier:username":"x"}}}"#))
            .contains("cannot test"));
        assert!(err(&doc(r#"{"Effect":"Allow","Action":"iam:GetUser","Resource":"*","Condition":{"DateLessThan":{"atelier:CurrentTime":"soon"}}}"#))
            .contains("is not a date"));
        assert!(err(&doc(
            r#"{"Effect":"Allow","Action":"iam:GetUser","Resource":"atelier:iam:user/${aws:username}"}"#
        ))
        .contains("only variables allowed"));
        assert!(err(&doc(r#"[{"Sid":"A","Effect":"Allow","Action":"iam:GetUser","Resource":"*"},{"Sid":"A","Effect":"Deny","Action":"iam:GetUser","Resource":"*"}]"#))
            .contains("used by an earlier statement"));
        assert!(err("[]").contains("must be a JSON object"));
        assert!(err("{").contains("not valid JSON"));
        assert!(err(r#"{"Version":"2008-10-17","Statement":[]}"#).contains("unsupported \"Version\""));
        assert!(err(&doc("[]")).contains("at least one statement"));
        assert!(err(&"x".repeat(MAX_DOCUMENT_BYTES + 1)).contains("the limit is"));
    }

    #[test]
    fn resource_patterns_follow_the_resource_types() {
        for ok in [
            "atelier:models:group/fraud",
            "atelier:models:group/fraud/*",
            "atelier:models:group/*/version/3",
            "atelier:models:*",
            "atelier:iam:user/${atelier:username}",
            "atelier:labeling:job/street-signs",
            "atelier:audit:log",
        ] {
            let text = doc(&format!(r#"{{"Effect":"Allow","Action":"iam:GetUser","Resource":"{ok}"}}"#));
            assert!(parse(&text).is_ok(), "{ok}: {:?}", parse(&text).err());
        }
    }
}
