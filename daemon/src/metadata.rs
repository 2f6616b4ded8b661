//! A test's metadata: the primary keys every test must have, the free-form secondary and
//! tertiary tiers, and the metadata file `cyclerctl start --meta-file` reads.
//!
//! All three tiers travel in one string map: primary keys as they are, the others prefixed
//! `secondary.` or `tertiary.`, so the daemon, the outbox and the hub carry them unchanged.

use crate::channel::StartError;
use std::collections::HashMap;

/// Metadata a test cannot start without (DESIGN.md: "metadata are as important as performance
/// data"). The protocol itself is the seventh item.
pub const PRIMARY_METADATA: [&str; 6] = [
    "cell_id",
    "operator",
    "owner",
    "objective",
    "chemistry",
    "nominal_capacity_ah",
];

/// Primary metadata a test may have: `team`, the lab's team that runs it (the hub lists a
/// lab's tests by team).
pub const OPTIONAL_PRIMARY_METADATA: [&str; 1] = ["team"];

/// Prefixes of the free-form metadata tiers: `secondary.KEY` (e.g. the cell's manufacturer,
/// form factor, test standard) and `tertiary.KEY` (anything else). Other keys are primary.
pub const METADATA_TIERS: [&str; 2] = ["secondary.", "tertiary."];

/// Checks a test's metadata: every primary key present and not blank, no unknown primary key
/// (a typo would otherwise pass for a missing one), a positive nominal capacity.
pub fn check_metadata(metadata: &HashMap<String, String>) -> Result<(), StartError> {
    let missing: Vec<String> = PRIMARY_METADATA
        .iter()
        .filter(|k| metadata.get(**k).is_none_or(|v| v.trim().is_empty()))
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(StartError::MissingMetadata(missing));
    }
    let mut unknown: Vec<&str> = metadata
        .keys()
        .map(String::as_str)
        .filter(|k| {
            !PRIMARY_METADATA.contains(k)
                && !OPTIONAL_PRIMARY_METADATA.contains(k)
                && !METADATA_TIERS.iter().any(|t| k.starts_with(t))
        })
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(StartError::Metadata(format!(
            "unknown primary metadata {}: primary keys are {} (and optionally {}); put \
             anything else under secondary.KEY or tertiary.KEY",
            unknown.join(", "),
            PRIMARY_METADATA.join(", "),
            OPTIONAL_PRIMARY_METADATA.join(", ")
        )));
    }
    for key in ["cell_id", "team"] {
        if let Some(v) = metadata.get(key)
            && v.len() > cyclerd_proto::metadata::MAX_KEY_BYTES
        {
            return Err(StartError::Metadata(format!(
                "{key} is {} bytes long; an identifier may have at most {}",
                v.len(),
                cyclerd_proto::metadata::MAX_KEY_BYTES
            )));
        }
    }
    let capacity = &metadata["nominal_capacity_ah"];
    match capacity.trim().parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(()),
        _ => Err(StartError::Metadata(format!(
            "nominal_capacity_ah {capacity:?} is not a positive number of Ah (e.g. 2.5)"
        ))),
    }
}

/// Reads a metadata file: TOML whose top-level keys are primary metadata and whose
/// `[secondary]` and `[tertiary]` tables are the free-form tiers, e.g.
///
/// ```toml
/// cell_id = "LG-M50-0042"
/// operator = "ana"
/// [secondary]
/// manufacturer = "LG"
/// form_factor = "21700"
/// ```
///
/// Values may be strings, numbers or booleans; they are kept as text.
pub fn from_toml(text: &str, origin: &str) -> Result<HashMap<String, String>, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("{origin}: {e}"))?;
    let mut out = HashMap::new();
    for (key, value) in table {
        match (key.as_str(), value) {
            (tier @ ("secondary" | "tertiary"), toml::Value::Table(entries)) => {
                for (k, v) in entries {
                    let v = scalar(&v).ok_or_else(|| {
                        format!("{origin}: {tier}.{k} must be a string, number or boolean")
                    })?;
                    out.insert(format!("{tier}.{k}"), v);
                }
            }
            (_, v) => {
                let v = scalar(&v).ok_or_else(|| {
                    format!(
                        "{origin}: {key} must be a string, number or boolean (tables are only \
                         [secondary] and [tertiary])"
                    )
                })?;
                out.insert(key, v);
            }
        }
    }
    Ok(out)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> HashMap<String, String> {
        from_toml(
            "cell_id = \"C1\"\noperator = \"ana\"\nowner = \"lab\"\nobjective = \"rpt\"\n\
             chemistry = \"NMC\"\nnominal_capacity_ah = 2.5\n[secondary]\nform_factor = \"21700\"\n\
             [tertiary]\nshelf = 3\n",
            "meta.toml",
        )
        .unwrap()
    }

    #[test]
    fn a_metadata_file_gives_primary_keys_and_prefixed_tiers() {
        let m = complete();
        assert_eq!(m["nominal_capacity_ah"], "2.5");
        assert_eq!(m["secondary.form_factor"], "21700");
        assert_eq!(m["tertiary.shelf"], "3");
        assert_eq!(check_metadata(&m), Ok(()));
    }

    #[test]
    fn missing_unknown_and_malformed_metadata_are_refused_naming_the_key() {
        let mut m = complete();
        m.remove("owner");
        assert_eq!(
            check_metadata(&m),
            Err(StartError::MissingMetadata(vec!["owner".into()]))
        );
        let mut m = complete();
        m.insert("opertor".into(), "x".into());
        let e = check_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("opertor") && e.contains("secondary.KEY"), "{e}");
        let mut m = complete();
        m.insert("nominal_capacity_ah".into(), "2.5 Ah".into());
        let e = check_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("positive number"), "{e}");
        let e = from_toml("[other]\nx = 1\n", "m.toml").unwrap_err();
        assert!(e.contains("m.toml: other"), "{e}");
        assert!(
            from_toml("cell_id = ", "m.toml")
                .unwrap_err()
                .starts_with("m.toml:")
        );
    }
}
