//! The catalog reads: which tests match a filter, a test's detail, the cells a lab tested.

use std::collections::HashSet;

use cyclerd_proto::hub::{
    Cell, ListTestsRequest, QualityFindingRow, TestDetail, TestEvent, TestSummary,
};
use cyclerd_proto::quality::grade::parse_letter;

use crate::store::{CellRow, HubStore, StoreError, TestRow};

/// A test filter, as `ListTests` and `cyclerhub tests` take it; empty fields match anything.
#[derive(Debug, Clone, Default)]
pub struct TestFilter {
    /// The lab whose daemons ran the tests.
    pub lab: String,
    /// The team its metadata names (`team`).
    pub team: String,
    /// The daemon that ran them.
    pub daemon_id: String,
    /// Primary metadata `cell_id`.
    pub cell_id: String,
    /// Primary metadata `chemistry`.
    pub chemistry: String,
    /// One of [`STATES`]: "running", "finished", "stopped", "faulted", or "ended" (any of the
    /// three ways a test ends).
    pub state: String,
    /// Start of the start-time window, Unix seconds (0 = open).
    pub started_after_unix_s: f64,
    /// End of the start-time window, Unix seconds (0 = open).
    pub started_before_unix_s: f64,
    /// Only tests graded this letter or better (`A` best to `E`); empty = any.
    pub min_grade: String,
}

/// The states a filter may ask for: a test runs, then ends in one of three ways; `ended` is any
/// of them.
pub const STATES: [&str; 5] = ["running", "finished", "stopped", "faulted", "ended"];

impl From<ListTestsRequest> for TestFilter {
    fn from(r: ListTestsRequest) -> TestFilter {
        TestFilter {
            lab: r.lab,
            team: r.team,
            daemon_id: r.daemon_id,
            cell_id: r.cell_id,
            chemistry: r.chemistry,
            state: r.state,
            started_after_unix_s: r.started_after_unix_s,
            started_before_unix_s: r.started_before_unix_s,
            min_grade: r.min_grade,
        }
    }
}

impl TestFilter {
    /// Refuses a start-time window that cannot mean anything: negative, not a number, or ending
    /// before it begins.
    pub fn check(&self) -> Result<(), String> {
        if !self.state.is_empty() && !STATES.contains(&self.state.as_str()) {
            return Err(format!(
                "no test is in state {:?}: give one of {}",
                self.state,
                STATES.join(", ")
            ));
        }
        if !self.min_grade.is_empty() {
            parse_letter(&self.min_grade)?;
        }
        let (after, before) = (self.started_after_unix_s, self.started_before_unix_s);
        for (name, v) in [("started after", after), ("started before", before)] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "{name} {v} is not a time: give Unix seconds >= 0 (0 = open)"
                ));
            }
        }
        if after > 0.0 && before > 0.0 && before <= after {
            return Err(format!(
                "the start-time window ends ({before}) before it begins ({after}); swap them"
            ));
        }
        Ok(())
    }

    /// Whether `t` passes every filter but the lab (which needs the daemons' labs).
    pub fn matches(&self, t: &TestRow) -> bool {
        let meta = |k: &str| t.metadata.get(k).map_or("", String::as_str);
        (self.daemon_id.is_empty() || t.daemon_id == self.daemon_id)
            && (self.team.is_empty() || t.team.as_deref() == Some(self.team.as_str()))
            && (self.cell_id.is_empty() || meta("cell_id") == self.cell_id)
            && (self.chemistry.is_empty() || meta("chemistry") == self.chemistry)
            && match self.state.as_str() {
                "" => true,
                "ended" => t.outcome.is_some(),
                state => t.state() == state,
            }
            && (self.started_after_unix_s == 0.0 || t.start_unix_s >= self.started_after_unix_s)
            && (self.started_before_unix_s == 0.0 || t.start_unix_s < self.started_before_unix_s)
            && match parse_letter(&self.min_grade) {
                Ok(min) => t.grade.as_ref().is_some_and(|g| g.at_least(min)),
                // Empty (checked elsewhere for anything else): any grade.
                Err(_) => true,
            }
    }

    /// The store's tests that match, newest first, each with its lab (empty when none).
    pub fn select(&self, store: &HubStore) -> Result<Vec<(TestRow, String)>, StoreError> {
        let labs = store.daemon_labs()?;
        let mut tests: Vec<(TestRow, String)> = store
            .list_tests()?
            .into_iter()
            .map(|t| {
                let lab = labs.get(&t.daemon_id).cloned().unwrap_or_default();
                (t, lab)
            })
            .filter(|(t, lab)| (self.lab.is_empty() || *lab == self.lab) && self.matches(t))
            .collect();
        tests.sort_by(|a, b| b.0.start_unix_s.total_cmp(&a.0.start_unix_s));
        Ok(tests)
    }
}
/// Everything the hub has on test `t` of `lab` but its samples, as `GetTest` and `cyclerhub
/// show` give it. Blocking.
pub fn detail(store: &HubStore, t: &TestRow, lab: &str) -> Result<TestDetail, StoreError> {
    let events = store.events(&t.test_id)?;
    let (protocol_source, plan_json) = store.protocol(&t.test_id)?.unwrap_or_default();
    let (has_cell_temperature, has_ambient_temperature) = store.has_temperatures(&t.test_id)?;
    Ok(TestDetail {
        summary: Some(summary(t, lab)),
        metadata: t.metadata.clone().into_iter().collect(),
        reason: t.reason.clone().unwrap_or_default(),
        expected_samples: t.expected_samples.unwrap_or(0),
        events: events
            .into_iter()
            .map(|e| TestEvent {
                unix_time_s: e.unix_time_s,
                test_time_s: e.test_time_s,
                kind: e.kind,
                message: e.message,
                step: e.step,
                cycle: e.cycle,
            })
            .collect(),
        metadata_problems: t.metadata_problems.clone(),
        equipment: store.test_equipment(&t.test_id)?,
        protocol_source,
        plan_json,
        has_cell_temperature,
        has_ambient_temperature,
        grade_reasons: t
            .grade
            .as_ref()
            .map(|g| g.reasons.clone())
            .unwrap_or_default(),
        quality_findings: store
            .quality_findings(&t.test_id)?
            .into_iter()
            .map(|f| QualityFindingRow {
                source: f.source,
                check: f.check,
                first_seq: f.first_seq,
                last_seq: f.last_seq,
                open: f.open,
                first_test_time_s: f.first_test_time_s,
                last_test_time_s: f.last_test_time_s,
                missing_s: f.missing_s,
                reason: f.reason,
            })
            .collect(),
    })
}

/// The cells `lab` tested (empty: every lab's), by lab and id: a cell of the lab with a test
/// the lab still has (a daemon moved to another lab takes its tests along). Blocking.
pub fn cells_of(store: &HubStore, lab: &str) -> Result<Vec<CellRow>, StoreError> {
    let cells = store.cells()?;
    if lab.is_empty() {
        return Ok(cells);
    }
    let filter = TestFilter {
        lab: lab.into(),
        ..TestFilter::default()
    };
    let tested: HashSet<String> = filter
        .select(store)?
        .into_iter()
        .filter_map(|(t, _)| t.metadata.get("cell_id").map(|id| id.trim().to_string()))
        .collect();
    Ok(cells
        .into_iter()
        .filter(|c| c.lab == lab && tested.contains(&c.cell_id))
        .collect())
}

/// A cell as `ListCells` sends it.
pub fn cell(c: &CellRow) -> Cell {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    Cell {
        cell_id: c.cell_id.clone(),
        manufacturer: text(&c.manufacturer),
        model: text(&c.model),
        chemistry: text(&c.chemistry),
        form_factor: text(&c.form_factor),
        nominal_capacity_ah: c.nominal_capacity_ah.unwrap_or(0.0),
        nominal_voltage_v: c.nominal_voltage_v.unwrap_or(0.0),
        first_test_unix_s: c.first_test_unix_s,
        lab: c.lab.clone(),
    }
}
/// A test as `ListTests` answers it, `lab` being its daemon's.
pub fn summary(t: &TestRow, lab: &str) -> TestSummary {
    let meta = |k: &str| t.metadata.get(k).cloned().unwrap_or_default();
    TestSummary {
        test_id: t.test_id.clone(),
        daemon_id: t.daemon_id.clone(),
        channel_id: t.channel_id.clone(),
        protocol_name: t.protocol_name.clone(),
        state: t.state().into(),
        start_unix_s: t.start_unix_s,
        end_unix_s: t.end_unix_s.unwrap_or(0.0),
        sample_count: t.sample_count,
        cell_id: meta("cell_id"),
        chemistry: meta("chemistry"),
        lab: lab.into(),
        team: t.team.clone().unwrap_or_default(),
        shared_from: t
            .shared_from
            .as_ref()
            .map(|f| cyclerd_proto::hub::SharedFrom {
                hub: f.hub.clone(),
                share: f.share.clone(),
                anonymised: f.anonymised,
                selection: f.selection.clone(),
                since_unix_s: f.since_unix_s,
            }),
        grade: t
            .grade
            .as_ref()
            .map(|g| g.letter.to_string())
            .unwrap_or_default(),
        grade_score: t.grade.as_ref().map_or(0, |g| g.score),
    }
}
