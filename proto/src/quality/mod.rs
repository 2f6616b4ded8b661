//! Plausibility checks of a test's samples as they are recorded, written once for both peers:
//! the daemon runs a [`Checker`] over every sample it records (stepped and native channels
//! alike, since it reads only the samples' columns) and the hub can run the same over what it
//! receives. A finding names the check, the run of samples it holds for (first and last seq)
//! and why, in words; the samples themselves are never corrected.
//!
//! The checks, each over a run of consecutive samples (one finding per run):
//! - `time_not_increasing`: test time did not grow from the sample before;
//! - `time_gap`: more than `max_gap_s` of test time since the sample before;
//! - `voltage_range`, `current_range`, `temperature_range`: a value outside the plausible range
//!   (or not a number);
//! - `voltage_stuck`: the voltage exactly the same for `stuck_samples` samples or more, over
//!   `stuck_min_s` of test time or more, while current flows (a frozen reading: under current
//!   a cell's voltage moves), except in a step that holds the voltage (constant voltage, CCCV)
//!   when the caller says so;
//! - `current_sign`: the current's sign is not the one the step commands (charge positive,
//!   discharge negative), when the caller says which; the first sample of a step is not
//!   checked (it may have been measured as the step before ended);
//! - `current_magnitude`: in a constant-current step, the current is off the commanded one by
//!   more than `current_tolerance` of it (plus `min_current_a`), when the caller says what it
//!   is; not the first sample of a step, nor a sample whose sign is already wrong;
//! - `accounting`: a cumulative capacity or energy went down, or charge capacity grew while
//!   discharging (or discharge capacity while charging): the BDF identities break;
//! - `temperature_rate`: the cell temperature changed faster than `max_temperature_rate_c_per_s`.
//!
//! A run still going is reported too ([`Checker::open_findings`], `open`), so that what is
//! shown of a running test is live; the finding of the same run when it ends replaces it (same
//! check and first seq). [`grade`] turns a test's findings, gaps and metadata into a grade.

pub mod config;
pub mod grade;

use serde::{Deserialize, Serialize};

use crate::cycles::Point;

/// The thresholds of the checks; every one has a documented default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Plausible voltage range, V (default -0.1 to 5.5: any single cell, with headroom).
    pub voltage_min_v: f64,
    pub voltage_max_v: f64,
    /// Largest plausible current magnitude, A (default 1000).
    pub current_max_a: f64,
    /// Plausible cell temperature range, °C (default -40 to 100).
    pub temperature_min_c: f64,
    pub temperature_max_c: f64,
    /// Longest step in test time between two samples before it is a gap, s (default 60).
    pub max_gap_s: f64,
    /// Samples of exactly the same voltage under current before it is stuck (default 300).
    pub stuck_samples: u32,
    /// Test time the same voltage must last under current before it is stuck, s (default 60):
    /// an instrument polled faster than it updates repeats its reading for a moment.
    pub stuck_min_s: f64,
    /// Current magnitude from which the voltage must move, and from which the sign and the
    /// accounting are checked, A (default 0.01).
    pub min_current_a: f64,
    /// Share of the commanded current a constant-current step's current may be off by (default
    /// 0.1: 10 %), beside `min_current_a`.
    pub current_tolerance: f64,
    /// Fastest plausible cell temperature change, °C/s (default 1).
    pub max_temperature_rate_c_per_s: f64,
    /// Slack of the accounting, Ah and Wh (default 1e-6): rounding never counts.
    pub accounting_slack: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            voltage_min_v: -0.1,
            voltage_max_v: 5.5,
            current_max_a: 1000.0,
            temperature_min_c: -40.0,
            temperature_max_c: 100.0,
            max_gap_s: 60.0,
            stuck_samples: 300,
            stuck_min_s: 60.0,
            min_current_a: 0.01,
            current_tolerance: 0.1,
            max_temperature_rate_c_per_s: 1.0,
            accounting_slack: 1e-6,
        }
    }
}

impl Thresholds {
    /// Whether the thresholds make sense; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let finite = [
            ("voltage_min_v", self.voltage_min_v),
            ("voltage_max_v", self.voltage_max_v),
            ("current_max_a", self.current_max_a),
            ("temperature_min_c", self.temperature_min_c),
            ("temperature_max_c", self.temperature_max_c),
            ("max_gap_s", self.max_gap_s),
            ("stuck_min_s", self.stuck_min_s),
            ("min_current_a", self.min_current_a),
            ("current_tolerance", self.current_tolerance),
            (
                "max_temperature_rate_c_per_s",
                self.max_temperature_rate_c_per_s,
            ),
            ("accounting_slack", self.accounting_slack),
        ];
        if let Some((key, v)) = finite.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("quality.{key} must be a number, not {v}"));
        }
        if self.voltage_min_v >= self.voltage_max_v {
            return Err("quality.voltage_min_v must be below voltage_max_v".into());
        }
        if self.temperature_min_c >= self.temperature_max_c {
            return Err("quality.temperature_min_c must be below temperature_max_c".into());
        }
        let positive = [
            ("current_max_a", self.current_max_a),
            ("max_gap_s", self.max_gap_s),
            (
                "max_temperature_rate_c_per_s",
                self.max_temperature_rate_c_per_s,
            ),
        ];
        if let Some((key, v)) = positive.iter().find(|(_, v)| *v <= 0.0) {
            return Err(format!("quality.{key} must be above 0, not {v}"));
        }
        let not_negative = [
            ("min_current_a", self.min_current_a),
            ("accounting_slack", self.accounting_slack),
            ("stuck_min_s", self.stuck_min_s),
            ("current_tolerance", self.current_tolerance),
        ];
        if let Some((key, v)) = not_negative.iter().find(|(_, v)| *v < 0.0) {
            return Err(format!("quality.{key} must not be negative, not {v}"));
        }
        if self.stuck_samples < 2 {
            return Err("quality.stuck_samples must be at least 2".into());
        }
        Ok(())
    }
}

/// Which check a finding is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    TimeNotIncreasing,
    TimeGap,
    VoltageRange,
    CurrentRange,
    TemperatureRange,
    VoltageStuck,
    CurrentSign,
    CurrentMagnitude,
    Accounting,
    TemperatureRate,
}

/// Every check, in the order findings of one sample are given.
pub const CHECKS: [Check; 10] = [
    Check::TimeNotIncreasing,
    Check::TimeGap,
    Check::VoltageRange,
    Check::CurrentRange,
    Check::TemperatureRange,
    Check::VoltageStuck,
    Check::CurrentSign,
    Check::CurrentMagnitude,
    Check::Accounting,
    Check::TemperatureRate,
];

impl Check {
    /// As events, exports and the configuration spell it.
    pub fn name(self) -> &'static str {
        match self {
            Check::TimeNotIncreasing => "time_not_increasing",
            Check::TimeGap => "time_gap",
            Check::VoltageRange => "voltage_range",
            Check::CurrentRange => "current_range",
            Check::TemperatureRange => "temperature_range",
            Check::VoltageStuck => "voltage_stuck",
            Check::CurrentSign => "current_sign",
            Check::CurrentMagnitude => "current_magnitude",
            Check::Accounting => "accounting",
            Check::TemperatureRate => "temperature_rate",
        }
    }

    /// Parses [`Check::name`] back.
    pub fn from_name(name: &str) -> Option<Check> {
        CHECKS.into_iter().find(|c| c.name() == name)
    }
}

/// What the step commands, for the sign check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Charge,
    Discharge,
}

impl Direction {
    /// The direction of a commanded current, power or the like of sign `value` (positive:
    /// charge); none for zero or not a number.
    pub fn of_sign(value: f64) -> Option<Direction> {
        if value > 0.0 {
            Some(Direction::Charge)
        } else if value < 0.0 {
            Some(Direction::Discharge)
        } else {
            None
        }
    }
}

/// What the step a sample was taken in commands, as the checks need it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Expected {
    /// The current's direction, when the step commands one (the sign check).
    pub direction: Option<Direction>,
    /// The step holds the voltage (constant voltage, CCCV): a voltage that does not move there
    /// is the control working, not a stuck sensor.
    pub holds_voltage: bool,
    /// The constant current the step commands, A (positive charging), when it commands one.
    pub amps: Option<f64>,
}

impl Expected {
    /// Per plan step, from the sign of the current each commands (1 charge, -1 discharge, 0
    /// none), whether each holds the voltage and the constant current each commands
    /// (`Plan::commanded_signs`, `holds_voltage`, `commanded_amps`).
    pub fn per_step(signs: &[i8], holds_voltage: &[bool], amps: &[Option<f64>]) -> Vec<Expected> {
        let n = signs.len().max(holds_voltage.len()).max(amps.len());
        (0..n)
            .map(|i| Expected {
                direction: signs.get(i).and_then(|s| Direction::of_sign(f64::from(*s))),
                holds_voltage: holds_voltage.get(i).copied().unwrap_or(false),
                amps: amps.get(i).copied().flatten().filter(|a| a.is_finite()),
            })
            .collect()
    }
}

impl From<Option<Direction>> for Expected {
    fn from(direction: Option<Direction>) -> Expected {
        Expected {
            direction,
            ..Expected::default()
        }
    }
}

/// A check that held for a run of samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub check: Check,
    /// The run's first and last sample.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Why, about the run's first sample, in words.
    pub reason: String,
    /// Test time of the run's first and last sample, to place it without reading samples.
    pub first_test_time_s: f64,
    pub last_test_time_s: f64,
    /// Test time without a sample the run covers (a `time_gap` run's gaps; 0 otherwise): the
    /// grade weighs gaps by the share of the test they took.
    pub missing_s: f64,
    /// The run still goes on (a snapshot of [`Checker::open_findings`]); the finding of the
    /// same check and first seq that comes later replaces it.
    pub open: bool,
}

impl Finding {
    /// The finding as one line: `check seq A..B: reason`.
    pub fn message(&self) -> String {
        format!(
            "{} seq {}..{}: {}",
            self.check.name(),
            self.first_seq,
            self.last_seq,
            self.reason
        )
    }
}

/// A run being followed: its first and last seq and why it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    first_seq: u64,
    last_seq: u64,
    reason: String,
    first_test_time_s: f64,
    last_test_time_s: f64,
    missing_s: f64,
}

impl Run {
    fn finding(&self, check: Check, open: bool) -> Finding {
        Finding {
            check,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            reason: self.reason.clone(),
            first_test_time_s: self.first_test_time_s,
            last_test_time_s: self.last_test_time_s,
            missing_s: self.missing_s,
            open,
        }
    }
}

/// The checks over one test's samples, in seq order. Its state (everything but the thresholds)
/// serialises, so that a hub can go on checking a test batch after batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checker {
    /// Given again after deserialising ([`Checker::with_thresholds`]): where they come from
    /// decides them, not the state.
    #[serde(skip)]
    t: Thresholds,
    /// The sample before.
    last: Option<Point>,
    /// Open runs, by check.
    open: Vec<(Check, Run)>,
    /// Samples in a row with the same voltage under current, and the first of them (seq and
    /// test time).
    same_voltage: (u32, u64, f64),
}

impl Checker {
    pub fn new(t: Thresholds) -> Checker {
        Checker {
            t,
            last: None,
            open: Vec::new(),
            same_voltage: (0, 0, 0.0),
        }
    }

    /// The same state checked with `t` from now on.
    pub fn with_thresholds(mut self, t: Thresholds) -> Checker {
        self.t = t;
        self
    }

    /// The thresholds it checks with.
    pub fn thresholds(&self) -> &Thresholds {
        &self.t
    }

    /// The seq the next sample should have (0 before any), so that a caller can tell a sample
    /// that does not follow on.
    pub fn next_seq(&self) -> u64 {
        self.last.map_or(0, |p| p.seq + 1)
    }

    /// How many runs are going on.
    pub fn open_runs(&self) -> usize {
        self.open.len()
    }

    /// The runs still going on, as findings marked open, in check order.
    pub fn open_findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .open
            .iter()
            .map(|(check, run)| run.finding(*check, true))
            .collect();
        out.sort_by_key(|f| f.check);
        out
    }

    /// Ends the runs still going on and forgets the sample before: the next sample does not
    /// follow on from it (samples are missing). Returns the findings of the runs ended.
    pub fn restart(&mut self) -> Vec<Finding> {
        self.last = None;
        self.same_voltage = (0, 0, 0.0);
        self.finish()
    }

    /// Takes the next sample (`expected`: what its step commands, as far as known, e.g. an
    /// `Option<Direction>`); returns the findings whose runs ended before it.
    pub fn observe(&mut self, p: &Point, expected: impl Into<Expected>) -> Vec<Finding> {
        let holding = self.conditions(p, expected.into());
        let mut ended = Vec::new();
        if holding.is_empty() && self.open.is_empty() {
            // The usual sample: nothing to follow.
            self.last = Some(*p);
            return ended;
        }
        // Runs that do not hold at this sample end at the one before.
        self.open.retain(|(check, run)| {
            let goes_on = holding.iter().any(|(c, _)| c == check);
            if !goes_on {
                ended.push(run.finding(*check, false));
            }
            goes_on
        });
        let missing = self
            .last
            .map_or(0.0, |prev| p.test_time_s - prev.test_time_s);
        for (check, reason) in holding {
            let missing = if check == Check::TimeGap {
                missing
            } else {
                0.0
            };
            match self.open.iter_mut().find(|(c, _)| *c == check) {
                Some((_, run)) => {
                    run.last_seq = p.seq;
                    run.last_test_time_s = p.test_time_s;
                    run.missing_s += missing;
                }
                None => {
                    let (first_seq, first_test_time_s) = if check == Check::VoltageStuck {
                        // A stuck voltage began with the first of its equal samples.
                        (self.same_voltage.1, self.same_voltage.2)
                    } else {
                        (p.seq, p.test_time_s)
                    };
                    self.open.push((
                        check,
                        Run {
                            first_seq,
                            last_seq: p.seq,
                            reason,
                            first_test_time_s,
                            last_test_time_s: p.test_time_s,
                            missing_s: missing,
                        },
                    ))
                }
            }
        }
        self.last = Some(*p);
        ended.sort_by_key(|f| f.check);
        ended
    }

    /// The findings of the runs still open (the test ended).
    pub fn finish(&mut self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .open
            .drain(..)
            .map(|(check, run)| run.finding(check, false))
            .collect();
        out.sort_by_key(|f| f.check);
        out
    }

    /// The checks that hold at `p`, each with why.
    fn conditions(&mut self, p: &Point, expected: Expected) -> Vec<(Check, String)> {
        let t = &self.t;
        let mut out = Vec::new();
        let flowing = p.current_a.abs() >= t.min_current_a;
        if let Some(prev) = &self.last {
            let dt = p.test_time_s - prev.test_time_s;
            if dt.is_nan() || dt <= 0.0 {
                out.push((
                    Check::TimeNotIncreasing,
                    format!("test time {} s after {} s", p.test_time_s, prev.test_time_s),
                ));
            } else if dt > t.max_gap_s {
                out.push((
                    Check::TimeGap,
                    format!("{dt:.1} s without a sample (max_gap_s {})", t.max_gap_s),
                ));
            }
            let slack = t.accounting_slack;
            let went_down = p
                .cumulative()
                .iter()
                .zip(prev.cumulative())
                .zip([
                    "charge capacity",
                    "discharge capacity",
                    "charge energy",
                    "discharge energy",
                ])
                .find(|((now, before), _)| **now < before - slack)
                .map(|((now, before), what)| format!("{what} went down from {before} to {now}"));
            let wrong_side = if p.current_a <= -t.min_current_a
                && p.charge_capacity_ah > prev.charge_capacity_ah + slack
            {
                Some(format!(
                    "charge capacity grew while discharging at {} A",
                    p.current_a
                ))
            } else if p.current_a >= t.min_current_a
                && p.discharge_capacity_ah > prev.discharge_capacity_ah + slack
            {
                Some(format!(
                    "discharge capacity grew while charging at {} A",
                    p.current_a
                ))
            } else {
                None
            };
            if let Some(why) = went_down.or(wrong_side) {
                out.push((Check::Accounting, why));
            }
            if let (Some(now), Some(before)) = (p.temperature_c, prev.temperature_c)
                && dt > 0.0
            {
                let rate = (now - before) / dt;
                if rate.abs() > t.max_temperature_rate_c_per_s {
                    out.push((
                        Check::TemperatureRate,
                        format!(
                            "temperature changed {rate:.2} °C/s (max_temperature_rate_c_per_s {})",
                            t.max_temperature_rate_c_per_s
                        ),
                    ));
                }
            }
            let same = p.voltage_v == prev.voltage_v;
            let counts = same && flowing && !expected.holds_voltage;
            self.same_voltage = match (counts, self.same_voltage.0) {
                (true, 0) => (2, prev.seq, prev.test_time_s),
                (true, n) => (n + 1, self.same_voltage.1, self.same_voltage.2),
                (false, _) => (0, 0, 0.0),
            };
        }
        if !(t.voltage_min_v..=t.voltage_max_v).contains(&p.voltage_v) {
            out.push((
                Check::VoltageRange,
                format!(
                    "voltage {} V outside {} to {} V",
                    p.voltage_v, t.voltage_min_v, t.voltage_max_v
                ),
            ));
        }
        // NaN is out of range too.
        if p.current_a.is_nan() || p.current_a.abs() > t.current_max_a {
            out.push((
                Check::CurrentRange,
                format!("current {} A beyond ±{} A", p.current_a, t.current_max_a),
            ));
        }
        if let Some(c) = p.temperature_c
            && !(t.temperature_min_c..=t.temperature_max_c).contains(&c)
        {
            out.push((
                Check::TemperatureRange,
                format!(
                    "temperature {c} °C outside {} to {} °C",
                    t.temperature_min_c, t.temperature_max_c
                ),
            ));
        }
        if self.same_voltage.0 >= t.stuck_samples
            && p.test_time_s - self.same_voltage.2 >= t.stuck_min_s
        {
            out.push((
                Check::VoltageStuck,
                format!(
                    "voltage {} V unchanged for {} samples under {} A",
                    p.voltage_v, self.same_voltage.0, p.current_a
                ),
            ));
        }
        // The first sample of a step may have been measured as the step before ended.
        let step_began = self.last.is_none_or(|prev| prev.step != p.step);
        let sign_wrong = !step_began
            && match expected.direction {
                Some(Direction::Charge) => p.current_a <= -t.min_current_a,
                Some(Direction::Discharge) => p.current_a >= t.min_current_a,
                None => false,
            };
        let off = match expected.amps {
            Some(amps) if !step_began && !sign_wrong => {
                let tolerance = t.current_tolerance * amps.abs() + t.min_current_a;
                (p.current_a - amps).abs() > tolerance
            }
            _ => false,
        };
        if off {
            out.push((
                Check::CurrentMagnitude,
                format!(
                    "current {} A where the step commands {} A (current_tolerance {})",
                    p.current_a,
                    expected.amps.unwrap_or_default(),
                    t.current_tolerance
                ),
            ));
        }
        if sign_wrong {
            out.push((
                Check::CurrentSign,
                format!(
                    "current {} A in a {} step",
                    p.current_a,
                    if expected.direction == Some(Direction::Charge) {
                        "charge"
                    } else {
                        "discharge"
                    }
                ),
            ));
        }
        out
    }
}

impl Finding {
    /// The finding as the ingest entry of test `test_id` carries it.
    pub fn to_entry(&self, test_id: &str) -> crate::ingest::QualityFinding {
        crate::ingest::QualityFinding {
            test_id: test_id.into(),
            check: self.check.name().into(),
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            reason: self.reason.clone(),
            open: self.open,
            first_test_time_s: self.first_test_time_s,
            last_test_time_s: self.last_test_time_s,
            missing_s: self.missing_s,
        }
    }
}

#[cfg(test)]
mod tests;
