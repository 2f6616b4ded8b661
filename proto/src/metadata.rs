//! What a test's metadata map (`TestRegistered.metadata`) means, for the daemon that checks it
//! before a test starts and the hub that stores it.
//!
//! All three tiers travel in one string map: primary keys as they are (`cell_id`, ...), the
//! others prefixed `secondary.` or `tertiary.`. A lab may register a JSON Schema per free-form
//! tier in its hub; a tier is then validated as the JSON object of its keys without the prefix.
//! Values travel as text, so before validation a value is read as the type the schema declares
//! for its property (`"type": "number"`, `"integer"` or `"boolean"`); every other value, and a
//! text that does not read as the declared type, stays a string and fails that type's check
//! with the schema's own message.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Longest identifier (test, channel, cell, team, instrument name) a hub stores: they key its
/// indexes, and PostgreSQL cannot index an entry much over 2.7 kB. A daemon refuses a longer
/// one before the test starts; a hub rejects it.
pub const MAX_KEY_BYTES: usize = 256;

/// The free-form tiers, as named in keys (`secondary.KEY`) and in schemas.
pub const TIERS: [&str; 2] = ["secondary", "tertiary"];

/// One tier's schema, compiled.
pub struct TierSchema {
    /// `secondary` or `tertiary`.
    pub tier: String,
    /// The schema document as the lab registered it, to re-read the declared property types.
    pub document: Value,
    /// The compiled validator.
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for TierSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierSchema")
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

impl TierSchema {
    /// Compiles the JSON Schema `text` for `tier`. Errors name the tier and say what is wrong:
    /// not a tier, not JSON, not a valid schema, or a reference to another document (a
    /// metadata schema is one self-contained document: nothing is fetched).
    pub fn compile(tier: &str, text: &str) -> Result<TierSchema, String> {
        if !TIERS.contains(&tier) {
            return Err(format!(
                "{tier:?} is not a metadata tier with a schema; the tiers are {}",
                TIERS.join(" and ")
            ));
        }
        let document: Value = serde_json::from_str(text)
            .map_err(|e| format!("the {tier} metadata schema is not JSON: {e}"))?;
        if !document.is_object() {
            return Err(format!(
                "the {tier} metadata schema must be a JSON object (a JSON Schema), not {}",
                kind(&document)
            ));
        }
        let validator = jsonschema::validator_for(&document)
            .map_err(|e| format!("the {tier} metadata schema is not a valid JSON Schema: {e}"))?;
        Ok(TierSchema {
            tier: tier.into(),
            document,
            validator,
        })
    }

    /// The problems of `metadata`'s keys of this tier, one sentence each (empty: valid).
    pub fn problems(&self, metadata: &HashMap<String, String>) -> Vec<String> {
        let object = Value::Object(self.tier_object(metadata));
        self.validator
            .iter_errors(&object)
            .map(|e| {
                let path = e.instance_path().to_string();
                let key = path.trim_start_matches('/').replace('/', ".");
                if key.is_empty() {
                    format!("{} metadata: {e}", self.tier)
                } else {
                    format!("{}.{key}: {e}", self.tier)
                }
            })
            .collect()
    }

    /// This tier's keys without their prefix, each value read as its declared type.
    fn tier_object(&self, metadata: &HashMap<String, String>) -> Map<String, Value> {
        let prefix = format!("{}.", self.tier);
        metadata
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k, v)))
            .map(|(k, v)| (k.to_string(), self.typed(k, v)))
            .collect()
    }

    fn typed(&self, key: &str, text: &str) -> Value {
        let declared = &self.document["properties"][key]["type"];
        let declares = |t: &str| match declared {
            Value::String(s) => s == t,
            Value::Array(types) => types.iter().any(|x| x == t),
            _ => false,
        };
        let trimmed = text.trim();
        if declares("integer")
            && let Ok(i) = trimmed.parse::<i64>()
        {
            return Value::from(i);
        }
        if declares("number")
            && let Some(n) = trimmed
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
        if declares("boolean") {
            match trimmed {
                "true" => return Value::Bool(true),
                "false" => return Value::Bool(false),
                _ => {}
            }
        }
        Value::String(text.to_string())
    }
}

/// What [`check`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Checked {
    /// Where the metadata breaks a schema, one sentence each (empty: it follows them).
    pub problems: Vec<String>,
    /// Schemas that could not be used, and why: they compiled when registered, so this is a
    /// newer feature than this build knows, or a validator failure. The caller decides whether
    /// that is a problem of the test (the hub records it) or only worth a warning (the daemon
    /// does not block a test on the lab's schema).
    pub unusable: Vec<String>,
}

/// Checks `metadata` against a lab's schemas as stored, `(tier, document)`, tier by tier. A
/// validator that panics is caught and reported as unusable: a lab's document must never take
/// down the daemon's start or the hub's ingest.
pub fn check(schemas: &[(String, String)], metadata: &HashMap<String, String>) -> Checked {
    let mut out = Checked::default();
    for (tier, document) in schemas {
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            TierSchema::compile(tier, document).map(|s| s.problems(metadata))
        }));
        match checked {
            Ok(Ok(problems)) => out.problems.extend(problems),
            Ok(Err(e)) => out.unusable.push(e),
            Err(_) => out.unusable.push(format!(
                "the {tier} metadata schema could not be checked (validator failure)"
            )),
        }
    }
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECONDARY: &str = r#"{
        "type": "object",
        "required": ["manufacturer", "form_factor"],
        "properties": {
            "manufacturer": {"type": "string", "minLength": 1},
            "form_factor": {"enum": ["18650", "21700", "pouch", "prismatic"]},
            "mass_g": {"type": "number", "exclusiveMinimum": 0},
            "cells_in_series": {"type": "integer"},
            "formation_done": {"type": "boolean"}
        },
        "additionalProperties": false
    }"#;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn values_are_read_as_the_types_the_schema_declares() {
        let schema = TierSchema::compile("secondary", SECONDARY).unwrap();
        let good = meta(&[
            ("cell_id", "not in this tier"),
            ("secondary.manufacturer", "LG"),
            ("secondary.form_factor", "21700"),
            ("secondary.mass_g", "68.5"),
            ("secondary.cells_in_series", "1"),
            ("secondary.formation_done", "true"),
            ("tertiary.anything", "goes"),
        ]);
        assert_eq!(schema.problems(&good), Vec::<String>::new());
    }

    #[test]
    fn each_problem_names_its_key() {
        let schema = TierSchema::compile("secondary", SECONDARY).unwrap();
        let bad = meta(&[
            ("secondary.form_factor", "AA"),
            ("secondary.mass_g", "heavy"),
            ("secondary.colour", "blue"),
        ]);
        let problems = schema.problems(&bad).join("\n");
        for needle in [
            "secondary.form_factor",
            "secondary.mass_g",
            "manufacturer",
            "colour",
        ] {
            assert!(problems.contains(needle), "{needle} in {problems}");
        }
    }

    #[test]
    fn a_schema_that_is_not_json_or_not_a_schema_is_refused_with_the_reason() {
        let e = TierSchema::compile("secondary", "{not json").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let e = TierSchema::compile("secondary", "[1, 2]").unwrap_err();
        assert!(e.contains("JSON object"), "{e}");
        let e = TierSchema::compile("secondary", r#"{"type": "banana"}"#).unwrap_err();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
        let e = TierSchema::compile("primary", "{}").unwrap_err();
        assert!(e.contains("secondary and tertiary"), "{e}");
    }

    proptest::proptest! {
        /// Whatever a lab registers and whatever an operator types: an answer, never a panic.
        #[test]
        fn any_schema_text_and_any_metadata_get_an_answer(
            text in r#"[{}\[\]":,a-z0-9 .-]{0,80}"#,
            value in ".{0,20}",
        ) {
            let metadata = meta(&[("secondary.mass_g", &value), ("secondary.x", &value)]);
            if let Ok(schema) = TierSchema::compile("secondary", &text) {
                let _ = schema.problems(&metadata);
            }
            let schema = TierSchema::compile("secondary", SECONDARY).unwrap();
            let _ = schema.problems(&metadata);
        }
    }

    #[test]
    fn a_reference_to_another_document_is_refused_not_fetched() {
        let e = TierSchema::compile("tertiary", r#"{"$ref": "https://example.com/s.json"}"#)
            .unwrap_err();
        assert!(e.contains("tertiary"), "{e}");
    }
}
