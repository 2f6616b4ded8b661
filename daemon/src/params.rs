//! The plan a test runs: its protocol resolved with the parameters given at start and the
//! cell's nominal capacity, and the same plan again when an interrupted test resumes.
//!
//! C-rates resolve against the capacity given at start (`--param capacity=5Ah`), else the
//! cell's `nominal_capacity_ah` (primary metadata, always given), else the protocol's own
//! `params.capacity`: one protocol file serves every cell size.

use crate::channel::StartError;
use crate::outbox::Checkpoint;
use cyclerd_protocols::{Plan, ProtocolError};
use std::collections::{BTreeMap, HashMap};

/// The daemon reads no files for a protocol: a profile step must carry its data inline.
fn no_files(name: &str) -> Result<String, String> {
    Err(format!(
        "cannot read \"{name}\": the daemon reads no files for a protocol; give the profile's \
         points inline, or start it with cyclerctl from the protocol's directory"
    ))
}

/// The plan for a new test, and the notes the operator should see (answered to the start and
/// recorded as events): which capacity its C-rates use when the protocol says another, and
/// the parameters given at start.
pub fn plan_for_start(
    source: &str,
    origin: &str,
    metadata: &HashMap<String, String>,
    given: &BTreeMap<String, String>,
) -> Result<(Plan, Vec<String>), StartError> {
    let protocol = |e: ProtocolError| StartError::Protocol(e.to_string());
    let document = Plan::from_yaml(source, origin).map_err(protocol)?;
    let mut params = given.clone();
    let capacity_given = params.contains_key("capacity");
    if !capacity_given
        && let Some(ah) = metadata
            .get("nominal_capacity_ah")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|ah| ah.is_finite() && *ah > 0.0)
    {
        params.insert("capacity".into(), format!("{ah} Ah"));
    }
    let plan = Plan::from_yaml_with_params(source, origin, &no_files, &params).map_err(protocol)?;
    let mut notes = Vec::new();
    if let (Some(own), Some(used)) = (document.capacity_ah, plan.capacity_ah)
        && (own - used).abs() > 1e-9 * own.max(used)
    {
        let from = if capacity_given {
            "given at start"
        } else {
            "the cell's nominal_capacity_ah"
        };
        notes.push(format!(
            "C-rates use {used} Ah ({from}), not the protocol's capacity of {own} Ah"
        ));
    }
    for (name, value) in given.iter().filter(|(name, _)| *name != "capacity") {
        match document.params.get(name) {
            Some(own) if own != value => notes.push(format!(
                "parameter {name} = {value} given at start (the protocol says {own})"
            )),
            _ => {}
        }
    }
    Ok((plan, notes))
}

/// The plan of an interrupted test, resolved with the parameters it started with.
pub fn plan_of(cp: &Checkpoint) -> Result<Plan, ProtocolError> {
    Plan::from_yaml_with_params(&cp.protocol_source, &cp.origin, &no_files, &cp.params)
}
