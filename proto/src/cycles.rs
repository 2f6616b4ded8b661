//! What a cycle's numbers mean, written once for every cycler and both peers: the daemon's
//! [`CycleTracker`] turns a test's samples into [`CycleSummary`] rows as they are taken (stepped
//! and native channels alike, since it reads only the samples' columns), and the hub, the
//! exports and the live view derive efficiency, mean voltages and retention from those rows
//! with the methods below.
//!
//! Definitions:
//! - A cycle is the samples that carry its cycle number (the protocol's cycle rule decides it).
//! - Its charge (discharge) capacity and energy are the cumulative columns' value at its last
//!   sample minus their value at the previous cycle's last sample (zero before the first), so
//!   the cycles' throughputs add up to the test's and nothing between two samples is lost.
//! - Coulombic efficiency is discharge over charge capacity of the same cycle; energy
//!   efficiency likewise with energy; mean charge (discharge) voltage is energy over capacity.
//! - A full cycle has both a charge and a discharge; retention is a cycle's discharge capacity
//!   over the first full cycle's.
//! - DC internal resistance is dV/dI across the cycle's first change from rest into a current
//!   at a step boundary, between the last rest sample and the first sample under current: its
//!   time base is the sampling interval.

use serde::{Deserialize, Serialize};

use crate::hub::CycleRow;
use crate::ingest::CycleSummary;

/// Below this current magnitude (A) a sample counts as rest for the resistance.
const REST_A: f64 = 1e-3;

/// One sample as the tracker reads it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub seq: u64,
    pub test_time_s: f64,
    pub voltage_v: f64,
    pub current_a: f64,
    pub cycle: u32,
    pub step: u32,
    pub charge_capacity_ah: f64,
    pub discharge_capacity_ah: f64,
    pub charge_energy_wh: f64,
    pub discharge_energy_wh: f64,
    /// Cell temperature, if the channel has a sensor and it read.
    pub temperature_c: Option<f64>,
}

impl Point {
    /// The four cumulative columns: charge and discharge capacity, charge and discharge energy.
    pub(crate) fn cumulative(&self) -> [f64; 4] {
        [
            self.charge_capacity_ah,
            self.discharge_capacity_ah,
            self.charge_energy_wh,
            self.discharge_energy_wh,
        ]
    }
}

/// The cycle being taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Open {
    cycle: u32,
    step: u32,
    first_seq: u64,
    last_seq: u64,
    start_test_time_s: f64,
    end_test_time_s: f64,
    /// Cumulative charge and discharge capacity and energy at its last sample.
    cumulative: [f64; 4],
    max_temperature_c: Option<f64>,
    dcir_ohm: Option<f64>,
    /// Voltage and current of its last sample, for the resistance.
    last_v: f64,
    last_i: f64,
    /// Cumulative values at the previous step's last sample: where its step's throughput
    /// counts from (absent in a checkpoint from before it was kept: then the cycle's start).
    #[serde(default)]
    step_base: Option<[f64; 4]>,
}

/// Turns a test's samples, in order, into per-cycle summaries. Its state is small and
/// serialisable, so a resumed test goes on where it was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleTracker {
    open: Option<Open>,
    /// Cumulative values at the previous cycle's last sample (zero at the test's start).
    baseline: [f64; 4],
    /// The last complete cycle with both a charge and a discharge, and its baseline.
    #[serde(default)]
    last_full: Option<(Open, [f64; 4])>,
}

/// Charge and discharge capacity (Ah) within the step and within the cycle a reading is in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SoFar {
    pub step_charge_ah: f64,
    pub step_discharge_ah: f64,
    pub cycle_charge_ah: f64,
    pub cycle_discharge_ah: f64,
}

impl CycleTracker {
    /// Takes the next sample of `test_id`; returns the summaries it settles: the cycle so far
    /// when a step of it ended, the whole cycle when the next one begins.
    pub fn observe(&mut self, test_id: &str, p: &Point) -> Vec<CycleSummary> {
        let mut out = Vec::new();
        let finite = |v: f64| v.is_finite();
        if !(finite(p.test_time_s) && p.cumulative().into_iter().all(finite)) {
            // A sample the hub would refuse says nothing about the cycle.
            return out;
        }
        match &mut self.open {
            Some(open) if open.cycle == p.cycle => {
                if open.step != p.step {
                    out.push(summary(test_id, open, &self.baseline, false));
                    open.step_base = Some(open.cumulative);
                    // A change of step out of rest into a current: the cycle's resistance.
                    if open.dcir_ohm.is_none()
                        && open.last_i.abs() < REST_A
                        && p.current_a.abs() >= 10.0 * REST_A
                        && finite(p.voltage_v - open.last_v)
                    {
                        open.dcir_ohm =
                            Some((p.voltage_v - open.last_v) / (p.current_a - open.last_i));
                    }
                }
                extend(open, p);
            }
            _ => {
                if let Some(done) = self.open.take() {
                    let row = summary(test_id, &done, &self.baseline, true);
                    if row.is_full() {
                        self.last_full = Some((done.clone(), self.baseline));
                    }
                    out.push(row);
                    self.baseline = done.cumulative;
                }
                self.open = Some(Open {
                    cycle: p.cycle,
                    step: p.step,
                    first_seq: p.seq,
                    last_seq: p.seq,
                    start_test_time_s: p.test_time_s,
                    end_test_time_s: p.test_time_s,
                    cumulative: p.cumulative(),
                    max_temperature_c: p.temperature_c.filter(|t| t.is_finite()),
                    dcir_ohm: None,
                    last_v: p.voltage_v,
                    last_i: p.current_a,
                    step_base: Some(self.baseline),
                });
            }
        }
        out
    }

    /// The cycle being taken, as it stands (`complete` when the test has ended).
    pub fn current(&self, test_id: &str, complete: bool) -> Option<CycleSummary> {
        self.open
            .as_ref()
            .map(|open| summary(test_id, open, &self.baseline, complete))
    }

    /// The last complete cycle with both a charge and a discharge (see [`CycleSummary::is_full`]).
    pub fn last_full(&self, test_id: &str) -> Option<CycleSummary> {
        self.last_full
            .as_ref()
            .map(|(open, baseline)| summary(test_id, open, baseline, true))
    }

    /// The step's and the cycle's throughput so far for a reading in `cycle` and `step` whose
    /// cumulative charge and discharge capacity are `charge_ah` and `discharge_ah`: the reading
    /// may be newer than the last sample observed (a live reading the recording rules skip). A
    /// step or cycle no sample of which was observed yet counts from the last sample observed.
    pub fn so_far(&self, cycle: u32, step: u32, charge_ah: f64, discharge_ah: f64) -> SoFar {
        let (cycle_base, step_base) = match &self.open {
            None => (self.baseline, self.baseline),
            Some(open) if open.cycle != cycle => (open.cumulative, open.cumulative),
            Some(open) if open.step != step => (self.baseline, open.cumulative),
            Some(open) => (self.baseline, open.step_base.unwrap_or(self.baseline)),
        };
        let delta = |now: f64, base: f64| (now - base).max(0.0);
        SoFar {
            step_charge_ah: delta(charge_ah, step_base[0]),
            step_discharge_ah: delta(discharge_ah, step_base[1]),
            cycle_charge_ah: delta(charge_ah, cycle_base[0]),
            cycle_discharge_ah: delta(discharge_ah, cycle_base[1]),
        }
    }
}

fn extend(open: &mut Open, p: &Point) {
    open.step = p.step;
    open.last_seq = p.seq;
    open.end_test_time_s = p.test_time_s;
    open.cumulative = p.cumulative();
    if let Some(t) = p.temperature_c.filter(|t| t.is_finite()) {
        open.max_temperature_c = Some(open.max_temperature_c.map_or(t, |m| m.max(t)));
    }
    open.last_v = p.voltage_v;
    open.last_i = p.current_a;
}

fn summary(test_id: &str, open: &Open, baseline: &[f64; 4], complete: bool) -> CycleSummary {
    let delta = |k: usize| (open.cumulative[k] - baseline[k]).max(0.0);
    CycleSummary {
        test_id: test_id.to_owned(),
        cycle: open.cycle,
        complete,
        start_test_time_s: open.start_test_time_s,
        end_test_time_s: open.end_test_time_s,
        charge_capacity_ah: delta(0),
        discharge_capacity_ah: delta(1),
        charge_energy_wh: delta(2),
        discharge_energy_wh: delta(3),
        max_temperature_c: open.max_temperature_c.unwrap_or(f64::NAN),
        dcir_ohm: open.dcir_ohm.unwrap_or(f64::NAN),
        first_seq: open.first_seq,
        last_seq: open.last_seq,
    }
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0 && num.is_finite() && den.is_finite()).then(|| num / den)
}

impl CycleSummary {
    /// Test time from the cycle's first to its last sample.
    pub fn duration_s(&self) -> f64 {
        self.end_test_time_s - self.start_test_time_s
    }

    /// Discharge over charge capacity; `None` without a charge.
    pub fn coulombic_efficiency(&self) -> Option<f64> {
        ratio(self.discharge_capacity_ah, self.charge_capacity_ah)
    }

    /// Discharge over charge energy; `None` without a charge.
    pub fn energy_efficiency(&self) -> Option<f64> {
        ratio(self.discharge_energy_wh, self.charge_energy_wh)
    }

    /// Charge energy over charge capacity; `None` without a charge.
    pub fn mean_charge_voltage_v(&self) -> Option<f64> {
        ratio(self.charge_energy_wh, self.charge_capacity_ah)
    }

    /// Discharge energy over discharge capacity; `None` without a discharge.
    pub fn mean_discharge_voltage_v(&self) -> Option<f64> {
        ratio(self.discharge_energy_wh, self.discharge_capacity_ah)
    }

    /// Both a charge and a discharge: the kind of cycle retention is measured against.
    pub fn is_full(&self) -> bool {
        self.charge_capacity_ah > 0.0 && self.discharge_capacity_ah > 0.0
    }

    /// This cycle's discharge capacity over `first`'s (the test's first full cycle).
    pub fn retention(&self, first: &CycleSummary) -> Option<f64> {
        ratio(self.discharge_capacity_ah, first.discharge_capacity_ah)
    }

    /// The highest cell temperature, if the channel has a sensor.
    pub fn max_temperature(&self) -> Option<f64> {
        self.max_temperature_c
            .is_finite()
            .then_some(self.max_temperature_c)
    }

    /// The resistance, if the cycle stepped out of rest into a current.
    pub fn dcir(&self) -> Option<f64> {
        self.dcir_ohm.is_finite().then_some(self.dcir_ohm)
    }
}

/// The first full cycle among `rows` (in cycle order), the reference of retention.
pub fn first_full(rows: &[CycleSummary]) -> Option<&CycleSummary> {
    rows.iter().find(|r| r.complete && r.is_full())
}

/// The rows of `summaries` (in cycle order) with their derived values, as the hub serves them:
/// retention of each full cycle against the first complete full cycle among them (a cycle that
/// only charges or only discharges has none).
pub fn rows(summaries: &[CycleSummary]) -> Vec<CycleRow> {
    let first = first_full(summaries);
    summaries
        .iter()
        .map(|c| CycleRow {
            cycle: c.cycle,
            complete: c.complete,
            start_test_time_s: c.start_test_time_s,
            end_test_time_s: c.end_test_time_s,
            duration_s: c.duration_s(),
            charge_capacity_ah: c.charge_capacity_ah,
            discharge_capacity_ah: c.discharge_capacity_ah,
            charge_energy_wh: c.charge_energy_wh,
            discharge_energy_wh: c.discharge_energy_wh,
            coulombic_efficiency: c.coulombic_efficiency(),
            energy_efficiency: c.energy_efficiency(),
            mean_charge_voltage_v: c.mean_charge_voltage_v(),
            mean_discharge_voltage_v: c.mean_discharge_voltage_v(),
            max_temperature_c: c.max_temperature(),
            capacity_retention: first.filter(|_| c.is_full()).and_then(|f| c.retention(f)),
            dcir_ohm: c.dcir(),
            first_seq: c.first_seq,
            last_seq: c.last_seq,
        })
        .collect()
}

/// The table's columns: title, unit line, width. 77 characters with the spaces between.
const TABLE: [(&str, &str, usize); 11] = [
    ("cycle", "", 5),
    ("duration", "h", 8),
    ("charge", "Ah", 7),
    ("dischg", "Ah", 7),
    ("CE", "%", 6),
    ("EE", "%", 6),
    ("V chg", "V", 5),
    ("V dch", "V", 5),
    ("max T", "°C", 5),
    ("retent.", "%", 7),
    ("DCIR", "mΩ", 6),
];

/// `v` with at most `decimals` decimals, as many as fit `width` (fewer for large values).
fn fit(v: f64, width: usize, decimals: usize) -> String {
    (0..=decimals)
        .rev()
        .map(|d| format!("{v:.d$}"))
        .find(|s| s.chars().count() <= width)
        .unwrap_or_else(|| format!("{v:.0}"))
}

/// One table row's cells, in [`TABLE`] order; empty where the cycle has no such value.
fn cells(c: &CycleRow) -> [String; 11] {
    let opt = |v: Option<f64>, scale: f64, width: usize, decimals: usize| {
        v.map_or_else(String::new, |v| fit(v * scale, width, decimals))
    };
    [
        format!("{}{}", c.cycle, if c.complete { "" } else { "*" }),
        fit(c.duration_s / 3600.0, 8, 2),
        fit(c.charge_capacity_ah, 7, 4),
        fit(c.discharge_capacity_ah, 7, 4),
        opt(c.coulombic_efficiency, 100.0, 6, 2),
        opt(c.energy_efficiency, 100.0, 6, 2),
        opt(c.mean_charge_voltage_v, 1.0, 5, 3),
        opt(c.mean_discharge_voltage_v, 1.0, 5, 3),
        opt(c.max_temperature_c, 1.0, 5, 1),
        opt(c.capacity_retention, 100.0, 7, 2),
        opt(c.dcir_ohm, 1000.0, 6, 2),
    ]
}

/// `rows` as the per-cycle table `cyclerhub cycles` and `cyclerctl protocol simulate` print:
/// a title line, a unit line, a line per cycle (a `*` marks the cycle still going on), within
/// 80 columns; blank where a cycle has no such value.
pub fn table(rows: &[CycleRow]) -> Vec<String> {
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut text = String::new();
        for (cell, (_, _, width)) in cells.zip(TABLE) {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&format!("{cell:>width$}"));
        }
        // A blank last column leaves no trailing spaces.
        text.trim_end().to_owned()
    };
    let mut out = vec![
        line(&mut TABLE.iter().map(|c| c.0.to_owned())),
        line(&mut TABLE.iter().map(|c| c.1.to_owned())),
    ];
    out.extend(rows.iter().map(|c| line(&mut cells(c).into_iter())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A cell cycled at 1 A: rest 10 s, charge 3600 s, discharge until `q_out` Ah, per cycle,
    /// sampled every 10 s, at 3.7 V charging and 3.6 V discharging.
    fn samples(cycles: u32, q_out: f64) -> Vec<Point> {
        let mut out = Vec::new();
        let (mut t, mut seq) = (0.0, 0u64);
        let (mut qc, mut qd, mut ec, mut ed) = (0.0, 0.0, 0.0, 0.0);
        for cycle in 1..=cycles {
            let mut push = |step: u32, i: f64, v: f64, dt: f64, n: usize, out: &mut Vec<Point>| {
                for _ in 0..n {
                    t += dt;
                    if i > 0.0 {
                        qc += i * dt / 3600.0;
                        ec += i * v * dt / 3600.0;
                    } else {
                        qd -= i * dt / 3600.0;
                        ed -= i * v * dt / 3600.0;
                    }
                    out.push(Point {
                        seq,
                        test_time_s: t,
                        voltage_v: v,
                        current_a: i,
                        cycle,
                        step,
                        charge_capacity_ah: qc,
                        discharge_capacity_ah: qd,
                        charge_energy_wh: ec,
                        discharge_energy_wh: ed,
                        temperature_c: Some(25.0 + f64::from(cycle)),
                    });
                    seq += 1;
                }
            };
            push(1, 0.0, 3.50, 10.0, 1, &mut out);
            push(2, 1.0, 3.70, 10.0, 360, &mut out);
            push(
                3,
                -1.0,
                3.60,
                10.0,
                (q_out * 360.0).round() as usize,
                &mut out,
            );
        }
        out
    }

    fn run(points: &[Point]) -> Vec<CycleSummary> {
        let mut tracker = CycleTracker::default();
        let mut rows: Vec<CycleSummary> = points
            .iter()
            .flat_map(|p| tracker.observe("t", p))
            .filter(|r| r.complete)
            .collect();
        rows.extend(tracker.current("t", true));
        rows
    }

    #[test]
    fn each_cycle_gets_its_own_throughput_efficiency_and_mean_voltages() {
        let rows = run(&samples(3, 0.975));
        assert_eq!(rows.len(), 3);
        for (k, r) in rows.iter().enumerate() {
            assert_eq!(r.cycle, k as u32 + 1);
            assert!((r.charge_capacity_ah - 1.0).abs() < 1e-9, "{r:?}");
            assert!((r.discharge_capacity_ah - 0.975).abs() < 1e-9, "{r:?}");
            assert!((r.coulombic_efficiency().unwrap() - 0.975).abs() < 1e-9);
            assert!((r.mean_charge_voltage_v().unwrap() - 3.7).abs() < 1e-9);
            assert!((r.mean_discharge_voltage_v().unwrap() - 3.6).abs() < 1e-9);
            let ee = 0.975 * 3.6 / 3.7;
            assert!((r.energy_efficiency().unwrap() - ee).abs() < 1e-9);
            assert_eq!(r.max_temperature(), Some(26.0 + k as f64));
            assert!((r.retention(&rows[0]).unwrap() - 1.0).abs() < 1e-9);
        }
        assert_eq!(first_full(&rows), Some(&rows[0]));
    }

    #[test]
    fn the_table_fits_80_columns_and_marks_the_cycle_still_going_on() {
        let mut summaries = run(&samples(3, 0.975));
        summaries[2].complete = false;
        let table = table(&rows(&summaries));
        assert_eq!(table.len(), 5);
        assert!(table.iter().all(|l| l.chars().count() <= 80), "{table:#?}");
        assert!(
            table[2].contains("97.50") && table[2].contains("100.00"),
            "{table:#?}"
        );
        assert!(table[4].trim_start().starts_with("3*"), "{table:#?}");
        // A cycle that only discharges has no retention.
        let mut discharge_only = summaries[0].clone();
        discharge_only.charge_capacity_ah = 0.0;
        let with = rows(&[discharge_only, summaries[1].clone()]);
        assert_eq!(with[0].capacity_retention, None);
        assert_eq!(with[1].capacity_retention, Some(1.0));
    }

    #[test]
    fn the_step_out_of_rest_gives_the_cycles_resistance() {
        let mut points = samples(1, 1.0);
        // The first sample under current reads 20 mV above the rest sample at +1 A: 20 mOhm.
        points[1].voltage_v = points[0].voltage_v + 0.020;
        let rows = run(&points);
        assert!((rows[0].dcir().unwrap() - 0.020).abs() < 1e-9, "{rows:?}");
    }

    #[test]
    fn a_step_that_ends_settles_the_cycle_so_far_and_the_next_cycle_the_whole_one() {
        let points = samples(2, 1.0);
        let mut tracker = CycleTracker::default();
        let mut partial = Vec::new();
        let mut whole = Vec::new();
        for p in &points {
            for r in tracker.observe("t", p) {
                if r.complete {
                    whole.push(r)
                } else {
                    partial.push(r)
                }
            }
        }
        // Cycle 1: rest -> charge, charge -> discharge; cycle 2: the same, its end pending.
        assert_eq!(partial.len(), 4, "{partial:?}");
        assert!((partial[1].charge_capacity_ah - 1.0).abs() < 1e-9);
        assert_eq!(partial[1].discharge_capacity_ah, 0.0);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].cycle, 1);
    }

    #[test]
    fn a_tracker_restored_from_its_json_goes_on_as_if_never_stopped() {
        let points = samples(3, 0.98);
        let straight = run(&points);
        let mut tracker = CycleTracker::default();
        let mut rows = Vec::new();
        for (k, p) in points.iter().enumerate() {
            if k == 500 {
                let json = serde_json::to_string(&tracker).unwrap();
                tracker = serde_json::from_str(&json).unwrap();
            }
            rows.extend(tracker.observe("t", p).into_iter().filter(|r| r.complete));
        }
        rows.extend(tracker.current("t", true));
        assert_eq!(rows, straight);
    }

    #[test]
    fn live_readings_count_the_step_and_the_cycle_so_far_and_the_last_full_cycle_stays() {
        let points = samples(2, 0.9);
        let mut tracker = CycleTracker::default();
        assert_eq!(tracker.last_full("t"), None);
        // Before any sample: everything since the test's start.
        let first = tracker.so_far(1, 1, 0.25, 0.0);
        assert!((first.step_charge_ah - 0.25).abs() < 1e-9 && first.cycle_charge_ah == 0.25);
        // Cycle 1 up to the middle of its charge (step 2): 0.5 Ah in the step and the cycle.
        for p in &points[..181] {
            tracker.observe("t", p);
        }
        let mid = points[180];
        let s = tracker.so_far(1, 2, mid.charge_capacity_ah, mid.discharge_capacity_ah);
        assert!((s.step_charge_ah - 0.5).abs() < 1e-9, "{s:?}");
        assert!((s.cycle_charge_ah - 0.5).abs() < 1e-9, "{s:?}");
        // A reading newer than the samples observed, still in the step, counts too.
        let s = tracker.so_far(1, 2, mid.charge_capacity_ah + 0.1, 0.0);
        assert!((s.step_charge_ah - 0.6).abs() < 1e-9, "{s:?}");
        // Through cycle 1 and into cycle 2's discharge: cycle 1 is the last full cycle, and the
        // step counts only the discharge while the cycle counts its charge as well.
        // Cycle 1: rest 1 + charge 360 + discharge 324 samples; then cycle 2 likewise.
        let cycle2_discharge = 685 + 1 + 360 + 100;
        for p in &points[181..cycle2_discharge] {
            tracker.observe("t", p);
        }
        let last = tracker.last_full("t").expect("cycle 1 is full");
        assert_eq!(last.cycle, 1);
        assert!((last.discharge_capacity_ah - 0.9).abs() < 1e-9);
        assert!((last.coulombic_efficiency().unwrap() - 0.9).abs() < 1e-9);
        let p = points[cycle2_discharge - 1];
        assert_eq!((p.cycle, p.step), (2, 3));
        let s = tracker.so_far(2, 3, p.charge_capacity_ah, p.discharge_capacity_ah);
        assert!((s.step_charge_ah).abs() < 1e-9, "{s:?}");
        assert!((s.cycle_charge_ah - 1.0).abs() < 1e-9, "{s:?}");
        assert!(
            (s.step_discharge_ah - s.cycle_discharge_ah).abs() < 1e-9,
            "{s:?}"
        );
        // A reading in the next step, before any of its samples: counts from the last sample.
        let s = tracker.so_far(2, 4, p.charge_capacity_ah, p.discharge_capacity_ah + 0.01);
        assert!((s.step_discharge_ah - 0.01).abs() < 1e-9, "{s:?}");
        // The state survives the checkpoint's JSON, and an old checkpoint still reads.
        let json = serde_json::to_string(&tracker).unwrap();
        assert_eq!(
            serde_json::from_str::<CycleTracker>(&json).unwrap(),
            tracker
        );
        let old = r#"{"open":null,"baseline":[0.0,0.0,0.0,0.0]}"#;
        assert_eq!(
            serde_json::from_str::<CycleTracker>(old).unwrap(),
            CycleTracker::default()
        );
    }

    proptest! {
        #[test]
        fn the_cycles_throughputs_add_up_to_the_tests_whatever_the_samples(
            steps in proptest::collection::vec((0u32..3, 0u32..4, -3.0f64..3.0, 0.0f64..50.0), 1..200),
            nan_at in proptest::option::of(0usize..200),
        ) {
            let (mut t, mut qc, mut qd) = (0.0, 0.0, 0.0);
            let mut cycle = 1;
            let mut points = Vec::new();
            for (k, &(next_cycle, step, i, dt)) in steps.iter().enumerate() {
                cycle += next_cycle.min(1);
                t += dt;
                if i > 0.0 { qc += i * dt / 3600.0 } else { qd -= i * dt / 3600.0 }
                let v = if Some(k) == nan_at { f64::NAN } else { 3.7 };
                points.push(Point {
                    seq: k as u64, test_time_s: t, voltage_v: v, current_a: i, cycle, step,
                    charge_capacity_ah: qc, discharge_capacity_ah: qd,
                    charge_energy_wh: qc * 3.7, discharge_energy_wh: qd * 3.7,
                    temperature_c: None,
                });
            }
            let rows = run(&points);
            let sum_c: f64 = rows.iter().map(|r| r.charge_capacity_ah).sum();
            let sum_d: f64 = rows.iter().map(|r| r.discharge_capacity_ah).sum();
            prop_assert!((sum_c - qc).abs() < 1e-9 * (1.0 + qc));
            prop_assert!((sum_d - qd).abs() < 1e-9 * (1.0 + qd));
            prop_assert!(rows.windows(2).all(|w| w[0].cycle < w[1].cycle));
            for r in &rows {
                prop_assert!(r.duration_s() >= 0.0);
                prop_assert!(r.coulombic_efficiency().is_none_or(f64::is_finite));
            }
        }
    }
}
