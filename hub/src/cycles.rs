//! A test's per-cycle results as the hub serves and exports them: `ListCycles`, `cyclerhub
//! cycles`, the per-cycle file beside every BDF export and Battery Archive's cycle file all
//! read them here, so every one of them shows the same numbers.
//!
//! The rows are the summaries the test's daemon computed ([`HubStore::cycles`]). A test stored
//! before daemons sent them has none: its rows are then computed here from the stored samples
//! with the daemon's own [`CycleTracker`], so the definitions are the same either way
//! ([`cyclerd_proto::cycles`] is the one place they live). The derived values (efficiencies,
//! mean voltages, duration, retention against the first full cycle) come from the same module.

use cyclerd_proto::cycles::{CycleTracker, Point, first_full};
use cyclerd_proto::hub::ListCyclesResponse;
use cyclerd_proto::ingest::CycleSummary;

use crate::store::{HubStore, SampleRow, StoreError};

/// Where a test's cycle rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The summaries its daemon sent.
    Daemon,
    /// Computed by the hub from the stored samples (the daemon sent none).
    Samples,
}

impl Source {
    /// As `ListCyclesResponse.source` names it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Daemon => "daemon",
            Source::Samples => "samples",
        }
    }
}

/// The per-cycle summaries of `test_id`, in cycle order, and where they came from: the
/// daemon's when it sent any, else computed from the samples (a full read of them). Blocking.
pub fn summaries(
    store: &HubStore,
    test_id: &str,
) -> Result<(Vec<CycleSummary>, Source), StoreError> {
    let stored = store.cycles(test_id)?;
    if !stored.is_empty() {
        return Ok((stored, Source::Daemon));
    }
    let test = store
        .test(test_id)?
        .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))?;
    let mut tracker = CycleTracker::default();
    let mut rows = Vec::new();
    store.for_each_sample(test_id, |s: &SampleRow| -> Result<(), StoreError> {
        rows.extend(
            tracker
                .observe(test_id, &point(s))
                .into_iter()
                .filter(|r| r.complete),
        );
        Ok(())
    })?;
    rows.extend(tracker.current(test_id, test.outcome.is_some()));
    Ok((rows, Source::Samples))
}

fn point(s: &SampleRow) -> Point {
    Point {
        seq: s.seq,
        test_time_s: s.test_time_s,
        voltage_v: s.voltage_v,
        current_a: s.current_a,
        cycle: s.cycle,
        step: s.step,
        charge_capacity_ah: s.charge_capacity_ah,
        discharge_capacity_ah: s.discharge_capacity_ah,
        charge_energy_wh: s.charge_energy_wh,
        discharge_energy_wh: s.discharge_energy_wh,
        temperature_c: s.temperature_c,
    }
}

pub use cyclerd_proto::cycles::rows;

/// Everything `ListCycles` answers about `test_id` (which must exist). Blocking.
pub fn list(store: &HubStore, test_id: &str) -> Result<ListCyclesResponse, StoreError> {
    let (summaries, source) = summaries(store, test_id)?;
    Ok(ListCyclesResponse {
        test_id: test_id.to_owned(),
        cycles: rows(&summaries),
        retention_reference_cycle: first_full(&summaries).map(|c| c.cycle),
        source: source.name().to_owned(),
    })
}
