//! Thresholds as a lab configures them: its own, and overrides by name (a protocol's in the
//! daemon's `[quality.protocols.NAME]`, a lab's in the hub's `[lab.NAME]`), each override
//! taking the lab's value for every key it does not set.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Thresholds;

/// Thresholds with overrides by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layered {
    /// For everything no override names.
    pub base: Thresholds,
    /// By name, resolved over [`Layered::base`].
    pub overrides: BTreeMap<String, Thresholds>,
}

impl Layered {
    /// Reads `table`: threshold keys, and a table `section` of override tables by name.
    /// `context` names the table in errors (`quality` for the daemon's `[quality]`); every
    /// error names the key (`quality.protocols."CC-CV".max_gap_s must be above 0, not 0`).
    pub fn from_table(
        mut table: Map<String, Value>,
        section: &str,
        context: &str,
    ) -> Result<Layered, String> {
        let overrides = table.remove(section);
        let base = read(Value::Object(table.clone()), context)?;
        let mut out = Layered {
            base,
            overrides: BTreeMap::new(),
        };
        let Some(overrides) = overrides else {
            return Ok(out);
        };
        let Value::Object(overrides) = overrides else {
            return Err(format!(
                "{context}.{section} must be a table of tables by name"
            ));
        };
        for (name, keys) in overrides {
            let where_ = format!("{context}.{section}.{name:?}");
            let Value::Object(keys) = keys else {
                return Err(format!("{where_} must be a table of thresholds"));
            };
            let mut merged = table.clone();
            merged.extend(keys);
            out.overrides
                .insert(name, read(Value::Object(merged), &where_)?);
        }
        Ok(out)
    }

    /// The thresholds for `name` (its override, else the base).
    pub fn for_name(&self, name: &str) -> &Thresholds {
        self.overrides.get(name).unwrap_or(&self.base)
    }
}

/// Thresholds from `value`, checked; errors say where (`context`).
fn read(value: Value, context: &str) -> Result<Thresholds, String> {
    let t: Thresholds = serde_json::from_value(value).map_err(|e| format!("{context}: {e}"))?;
    t.validate()
        .map_err(|e| format!("{context}: {}", e.trim_start_matches("quality.")))?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_override_takes_the_labs_value_for_the_keys_it_does_not_set() {
        let l = Layered::from_table(
            table(r#"{"max_gap_s": 10, "protocols": {"slow": {"stuck_samples": 20}}}"#),
            "protocols",
            "quality",
        )
        .unwrap();
        assert_eq!(l.base.max_gap_s, 10.0);
        let slow = l.for_name("slow");
        assert_eq!((slow.max_gap_s, slow.stuck_samples), (10.0, 20));
        assert_eq!(l.for_name("other"), &l.base);
    }

    #[test]
    fn a_bad_or_unknown_key_is_refused_naming_it_and_its_table() {
        let e = Layered::from_table(
            table(r#"{"protocols": {"p": {"max_gap_s": 0}}}"#),
            "protocols",
            "quality",
        )
        .unwrap_err();
        assert!(
            e.contains("quality.protocols.\"p\"") && e.contains("max_gap_s"),
            "{e}"
        );
        let e =
            Layered::from_table(table(r#"{"max_gap": 5}"#), "protocols", "quality").unwrap_err();
        assert!(e.contains("max_gap"), "{e}");
    }
}
