//! A checker for the JSON Schemas in docs/schemas/: the subset of JSON Schema (2020-12) they
//! are written in, small enough to read whole. `type`, `const`, `enum`, `required`,
//! `properties`, `additionalProperties` (false or a schema), `items`, `minimum`, `allOf`,
//! `anyOf`, `$ref` to `#/$defs/NAME`, and `format: date-time` (RFC 3339 in UTC, as twtrace
//! writes every time). Anything else in a schema is an error, so a schema cannot silently
//! ask for more than is checked.

use serde_json::Value;

/// `docs/schemas/NAME.json`, built into the test binary: the VM guests have no source tree.
pub fn load(name: &str) -> Value {
    let text = match name {
        "doctor" => include_str!("../../../docs/schemas/doctor.json"),
        "probes" => include_str!("../../../docs/schemas/probes.json"),
        "mark" => include_str!("../../../docs/schemas/mark.json"),
        "stat" => include_str!("../../../docs/schemas/stat.json"),
        "trace" => include_str!("../../../docs/schemas/trace.json"),
        "churn" => include_str!("../../../docs/schemas/churn.json"),
        "report" => include_str!("../../../docs/schemas/report.json"),
        "scenario" => include_str!("../../../docs/schemas/scenario.json"),
        other => panic!("no schema docs/schemas/{other}.json"),
    };
    serde_json::from_str(text).unwrap_or_else(|e| panic!("docs/schemas/{name}.json: {e}"))
}

/// Every way `value` breaks `schema`, each as `PATH: why`; empty when it conforms.
pub fn check(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    at(schema, schema, value, "$", &mut errors);
    errors
}

/// Panics with every problem, naming the document, when `value` does not conform.
pub fn assert_conforms(schema: &Value, value: &Value, what: &str) {
    let errors = check(schema, value);
    assert!(errors.is_empty(), "{what} does not match its schema:\n{}\n{value:#}", errors.join("\n"));
}

const KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "$comment",
    "title",
    "description",
    "type",
    "const",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minimum",
    "allOf",
    "anyOf",
    "$ref",
    "format",
];

fn at(root: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            errors.push(format!("{path}: not allowed here"));
        }
        return;
    };
    for key in schema.keys() {
        assert!(
            KEYWORDS.contains(&key.as_str()),
            "the schema uses `{key}` at {path}, which this checker does not know"
        );
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.strip_prefix("#/$defs/").unwrap_or_else(|| panic!("unsupported $ref {reference}"));
        let target = root.get("$defs").and_then(|d| d.get(name)).unwrap_or_else(|| panic!("no $defs/{name}"));
        at(root, target, value, path, errors);
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type at {path}"),
        };
        if !types.iter().any(|t| is_type(value, t)) {
            errors.push(format!("{path}: {} is not of type {}", brief(value), types.join(" or ")));
            return;
        }
    }
    if let Some(c) = schema.get("const") {
        if c != value {
            errors.push(format!("{path}: {} is not {c}", brief(value)));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            errors.push(format!("{path}: {} is not one of {}", brief(value), Value::Array(options.clone())));
        }
    }
    if let (Some(min), Some(v)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
        if v < min {
            errors.push(format!("{path}: {v} is below {min}"));
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time") {
        if let Some(text) = value.as_str() {
            if !rfc3339_utc(text) {
                errors.push(format!("{path}: {text:?} is not an RFC 3339 time in UTC"));
            }
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                errors.push(format!("{path}: `{name}` is missing"));
            }
        }
        for (key, v) in object {
            let inner = format!("{path}.{key}");
            match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                (Some(s), _) => at(root, s, v, &inner, errors),
                (None, Some(Value::Bool(false))) => errors.push(format!("{inner}: not in the schema")),
                (None, Some(extra)) => at(root, extra, v, &inner, errors),
                (None, None) => {}
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            at(root, items, v, &format!("{path}[{i}]"), errors);
        }
    }
    for s in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        at(root, s, value, path, errors);
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let mut why = Vec::new();
        if !options.iter().any(|s| {
            let mut e = Vec::new();
            at(root, s, value, path, &mut e);
            why.extend(e.first().cloned());
            e.is_empty()
        }) {
            errors.push(format!("{path}: matches none of anyOf ({})", why.join("; ")));
        }
    }
}

fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

/// `2026-12-08T10:11:12Z`, with or without fractional seconds.
fn rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && text.ends_with('Z')
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1)))
}

fn brief(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 { format!("{}...", &text[..57]) } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_finds_what_breaks_a_schema() {
        let schema = serde_json::json!({
            "type": "object", "required": ["a"], "additionalProperties": false,
            "properties": {"a": {"type": "integer", "minimum": 0}, "t": {"type": "string", "format": "date-time"},
                           "k": {"anyOf": [{"const": 1}, {"type": "string"}]}}
        });
        assert!(check(&schema, &serde_json::json!({"a": 1, "t": "2026-12-08T10:11:12.5Z", "k": "x"})).is_empty());
        let errors = check(&schema, &serde_json::json!({"t": "yesterday", "x": 1, "k": 2}));
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert_eq!(check(&schema, &serde_json::json!({"a": -1})).len(), 1);
    }
}
