//! The JSON Schema of the protocol document (`protocols/schema/protocol.schema.json`) must
//! accept every protocol of the standard library and reject structurally wrong documents.
//!
//! The schema is checked with a small validator for exactly the keywords it uses (`$ref` to
//! `#/$defs/...`, `type`, `const`, `enum`, `anyOf`, `oneOf`, `properties`, `required`,
//! `additionalProperties`, `items`, `minItems`, `maxItems`, `minLength`) rather than the
//! `jsonschema` crate, whose dependency tree is large and not needed for this subset. An
//! unknown keyword fails the test, so the schema cannot silently outgrow the validator.

mod common;

use serde_json::Value;

const IGNORED: &[&str] = &["$schema", "$id", "title", "description", "$defs"];

fn resolve<'a>(root: &'a Value, reference: &str) -> &'a Value {
    let name = reference
        .strip_prefix("#/$defs/")
        .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
    &root["$defs"][name]
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        other => panic!("unknown type {other}"),
    }
}

/// Errors of `v` against `schema`, each with its JSON path.
fn validate(root: &Value, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        panic!("schema at {path} is not an object");
    };
    let len = |x: &Value| x.as_u64().unwrap_or(0) as usize;
    for (key, s) in map {
        match key.as_str() {
            k if IGNORED.contains(&k) => {}
            "$ref" => validate(
                root,
                resolve(root, s.as_str().unwrap_or("")),
                v,
                path,
                errors,
            ),
            "type" => {
                let ok = match s {
                    Value::String(t) => type_ok(t, v),
                    Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap_or(""), v)),
                    _ => panic!("bad type keyword at {path}"),
                };
                if !ok {
                    errors.push(format!("{path}: expected type {s}, found {v}"));
                }
            }
            "const" if v != s => errors.push(format!("{path}: expected {s}, found {v}")),
            "enum" if !s.as_array().is_some_and(|a| a.contains(v)) => {
                errors.push(format!("{path}: expected one of {s}, found {v}"));
            }
            "anyOf" | "oneOf" => {
                let branches = s.as_array().map(Vec::as_slice).unwrap_or_default();
                let matching = branches
                    .iter()
                    .filter(|b| {
                        let mut e = Vec::new();
                        validate(root, b, v, path, &mut e);
                        e.is_empty()
                    })
                    .count();
                let ok = if key == "anyOf" {
                    matching >= 1
                } else {
                    matching == 1
                };
                if !ok {
                    errors.push(format!(
                        "{path}: {matching} of the {key} branches match {v}"
                    ));
                }
            }
            "properties" => {
                if let (Some(obj), Some(props)) = (v.as_object(), s.as_object()) {
                    for (k, sub) in props {
                        if let Some(x) = obj.get(k) {
                            validate(root, sub, x, &format!("{path}.{k}"), errors);
                        }
                    }
                }
            }
            "required" => {
                if let Some(obj) = v.as_object() {
                    for k in s.as_array().into_iter().flatten() {
                        let k = k.as_str().unwrap_or("");
                        if !obj.contains_key(k) {
                            errors.push(format!("{path}: missing required key {k}"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(obj) = v.as_object() {
                    let known = map.get("properties").and_then(Value::as_object);
                    for (k, x) in obj {
                        if known.is_some_and(|p| p.contains_key(k)) {
                            continue;
                        }
                        match s {
                            Value::Bool(false) => errors.push(format!("{path}: unknown key {k}")),
                            Value::Bool(true) => {}
                            sub => validate(root, sub, x, &format!("{path}.{k}"), errors),
                        }
                    }
                }
            }
            "items" => {
                for (i, x) in v.as_array().into_iter().flatten().enumerate() {
                    validate(root, s, x, &format!("{path}[{i}]"), errors);
                }
            }
            "minItems" if v.as_array().is_some_and(|a| a.len() < len(s)) => {
                errors.push(format!("{path}: fewer than {s} items"));
            }
            "maxItems" if v.as_array().is_some_and(|a| a.len() > len(s)) => {
                errors.push(format!("{path}: more than {s} items"));
            }
            "minLength" if v.as_str().is_some_and(|t| t.chars().count() < len(s)) => {
                errors.push(format!("{path}: shorter than {s} characters"));
            }
            "const" | "enum" | "minItems" | "maxItems" | "minLength" => {}
            other => panic!("the test validator does not implement keyword {other} (at {path})"),
        }
    }
}

fn schema() -> Value {
    serde_json::from_str(include_str!("../schema/protocol.schema.json"))
        .expect("the schema is valid JSON")
}

fn errors_of(yaml: &str) -> Vec<String> {
    let root = schema();
    let doc: Value = serde_saphyr::from_str(yaml).expect("valid YAML");
    let mut errors = Vec::new();
    validate(&root, &root, &doc, "$", &mut errors);
    errors
}

#[test]
fn every_library_protocol_validates_against_the_schema() {
    let dir = common::library_dir();
    let mut checked = 0;
    for (path, source) in common::library() {
        let errors = errors_of(&source);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 9,
        "expected the standard library in {}",
        dir.display()
    );
}

#[test]
fn schema_rejects_structurally_wrong_documents() {
    let head = "protocol: x\nversion: 1\n";
    for (body, expected) in [
        ("steps: []\n", "fewer than 1 items"),
        ("stepz: [\"Rest for 1 s\"]\n", "unknown key stepz"),
        ("steps:\n  - cc: 1 A\n    until: \"V >= 4 V\"\n", "anyOf"),
        ("steps:\n  - repeat: 2\n", "anyOf"),
        (
            "safety: {voltage: [2.5 V]}\nsteps: [\"Rest for 1 s\"]\n",
            "fewer than 2 items",
        ),
    ] {
        let errors = errors_of(&format!("{head}{body}"));
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{body}: {errors:?}"
        );
    }
    assert!(!errors_of("protocol: x\nversion: 2\nsteps: [end]\n").is_empty());
}
