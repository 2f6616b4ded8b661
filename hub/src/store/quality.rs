//! The hub's own run of the quality checks (`cyclerd_proto::quality`) over the samples it
//! stores, beside the findings the daemon sends: source `hub`. Its checker's state is kept per
//! test in `quality_state`, so the checks go on from batch to batch (and across hub restarts,
//! and between hub processes on one PostgreSQL); it is dropped when the test ends.
//!
//! On the ingest hot path: per batch one read and one write of the state, the plan read once
//! per test; per sample the checker alone (no allocation unless something is found).

use cyclerd_proto::cycles::Point;
use cyclerd_proto::ingest::SampleBatch;
use cyclerd_proto::quality::config::Layered;
use cyclerd_proto::quality::{Checker, Expected, Finding, Thresholds};
use serde::{Deserialize, Serialize};

use super::batch_writes::{BatchWrites, FindingRecord};
use super::{Source, StoreError};

/// Who the hub's findings are by.
pub(super) const SOURCE_HUB: &str = "hub";
/// Who the daemon's findings are by.
pub(super) const SOURCE_DAEMON: &str = "daemon";

/// The hub's checks of one test between two batches.
#[derive(Serialize, Deserialize)]
struct State {
    /// The sign of the current each plan step commands (`Plan::commanded_signs`).
    signs: Vec<i8>,
    /// Whether each plan step holds the voltage (`Plan::holds_voltage`).
    held: Vec<bool>,
    /// The constant current each plan step commands (`Plan::commanded_amps`).
    #[serde(default)]
    amps: Vec<Option<f64>>,
    checker: Checker,
}

/// Checks the samples of `b` the hub has not checked yet (of the test `key`, whose daemon
/// `source` is) with the thresholds of its daemon's lab, and stores what was found.
pub(super) fn recheck(
    w: &mut dyn BatchWrites,
    layered: &Layered,
    source: &Source<'_>,
    key: i64,
    b: &SampleBatch,
) -> Result<(), StoreError> {
    let thresholds = thresholds_of(w, layered, source)?;
    let state = w
        .quality_state(key)?
        .and_then(|json| serde_json::from_str::<State>(&json).ok());
    let mut state = match state {
        Some(state) => State {
            checker: state.checker.with_thresholds(thresholds),
            ..state
        },
        None => {
            let (signs, held, amps) = commanded(&w.test_plan(key)?);
            State {
                signs,
                held,
                amps,
                checker: Checker::new(thresholds),
            }
        }
    };
    let expected = Expected::per_step(&state.signs, &state.held, &state.amps);
    let mut found = Vec::new();
    let next = state.checker.next_seq();
    if b.first_seq > next && next > 0 {
        // Samples are missing in between: nothing follows on from the sample before.
        found.extend(state.checker.restart());
    }
    let from = next.saturating_sub(b.first_seq) as usize;
    for i in from..b.test_time_s.len() {
        let p = point(b, i);
        let expected = b
            .plan_step
            .get(i)
            .and_then(|s| expected.get(*s as usize))
            .copied()
            .unwrap_or_default();
        found.extend(state.checker.observe(&p, expected));
    }
    found.extend(state.checker.open_findings());
    for f in &found {
        w.upsert_finding(key, &record(SOURCE_HUB, f))?;
    }
    let json = serde_json::to_string(&state)
        .map_err(|e| StoreError::Corrupt(format!("quality checker state: {e}")))?;
    w.set_quality_state(key, Some(&json))
}

/// Ends the hub's checks of the test `key` (it ended): the runs still open are closed, the
/// daemon's too, and the state is dropped.
pub(super) fn finish(w: &mut dyn BatchWrites, key: i64) -> Result<(), StoreError> {
    if let Some(state) = w
        .quality_state(key)?
        .and_then(|json| serde_json::from_str::<State>(&json).ok())
    {
        let mut checker = state.checker;
        for f in checker.finish() {
            w.upsert_finding(key, &record(SOURCE_HUB, &f))?;
        }
    }
    w.set_quality_state(key, None)?;
    w.close_findings(key)
}

/// A finding as stored; seqs beyond i64 (never made by a checker of stored samples) saturate.
pub(super) fn record<'a>(source: &'static str, f: &'a Finding) -> FindingRecord<'a> {
    FindingRecord {
        source,
        check: f.check.name(),
        first_seq: i64::try_from(f.first_seq).unwrap_or(i64::MAX),
        last_seq: i64::try_from(f.last_seq).unwrap_or(i64::MAX),
        open: i64::from(f.open),
        first_test_time_s: finite(f.first_test_time_s),
        last_test_time_s: finite(f.last_test_time_s),
        missing_s: finite(f.missing_s),
        reason: &f.reason,
    }
}

/// Times of samples that were not numbers are stored as 0 (PostgreSQL would take NaN, but a
/// finding's times only place it).
fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// The thresholds for the daemon's lab: its `[lab.NAME]` section, else the file's own.
fn thresholds_of(
    w: &mut dyn BatchWrites,
    layered: &Layered,
    source: &Source<'_>,
) -> Result<Thresholds, StoreError> {
    if layered.overrides.is_empty() {
        return Ok(layered.base.clone());
    }
    let lab = w.daemon_lab(source.daemon_id)?;
    Ok(layered.for_name(lab.as_deref().unwrap_or("")).clone())
}

/// What the plan's steps command (current signs, held voltages, constant currents); nothing
/// when the plan cannot be read (then the checks that need it are skipped).
type Commanded = (Vec<i8>, Vec<bool>, Vec<Option<f64>>);

fn commanded(plan_json: &str) -> Commanded {
    cyclerd_protocols::Plan::from_json(plan_json)
        .map(|p| (p.commanded_signs(), p.holds_voltage(), p.commanded_amps()))
        .unwrap_or_default()
}

/// Sample `i` of `b` as the checker reads it (the batch was validated: columns line up).
fn point(b: &SampleBatch, i: usize) -> Point {
    Point {
        seq: b.first_seq + i as u64,
        test_time_s: b.test_time_s[i],
        voltage_v: b.voltage_v[i],
        current_a: b.current_a[i],
        cycle: b.cycle[i],
        step: b.step[i],
        charge_capacity_ah: b.charge_capacity_ah[i],
        discharge_capacity_ah: b.discharge_capacity_ah[i],
        charge_energy_wh: b.charge_energy_wh[i],
        discharge_energy_wh: b.discharge_energy_wh[i],
        temperature_c: b.temperature_c.get(i).copied().filter(|t| !t.is_nan()),
    }
}
