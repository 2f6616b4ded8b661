//! Deciding a watched step's end from the records the daemon downloads, by the engine's
//! conditions (`engine/run.rs`): step integrals from the step's first record, dV/dt between
//! two records of the step, a chamber's settling by its air temperature.

use super::{Role, Supervision};
use crate::plan::{Condition, Control, Goto, Plan, PlanStep};
use serde::{Deserialize, Serialize};

/// What a watched step's records decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A condition the daemon checks held: stop the cycler's step and go on here.
    Go(Goto, String),
    /// The step cannot end well (a chamber that never settled): the test faults.
    Fault(String),
}

/// The state of the watched step in progress, serialisable with the follow state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepWatch {
    /// The plan step watched; a record of another step starts over.
    step: Option<usize>,
    /// Test time of the step's first record, s.
    start_s: f64,
    charge_ah: f64,
    discharge_ah: f64,
    energy_wh: f64,
    /// Test time, voltage and current of the step's previous record.
    last: Option<(f64, f64, f64)>,
    /// Since when (test time) a chamber step's temperature has been in its band.
    band_since: Option<f64>,
}

/// One record as the watch reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Test time (of the whole test, not the segment), s.
    pub test_time_s: f64,
    pub voltage_v: f64,
    pub current_a: f64,
    /// Cell temperature, degC.
    pub temperature_c: Option<f64>,
    /// The chamber's air temperature at the record, degC.
    pub chamber_c: Option<f64>,
}

impl StepWatch {
    /// Takes a record of plan step `i`; a verdict when one of the conditions the daemon
    /// checks for that step holds.
    pub fn record(
        &mut self,
        sup: &Supervision,
        plan: &Plan,
        i: usize,
        r: Reading,
    ) -> Option<Verdict> {
        let Role::Watched { watched, chamber } = sup.role(i) else {
            self.step = None;
            return None;
        };
        let Some(PlanStep::Action(a)) = plan.steps.get(i) else {
            return None;
        };
        if self.step != Some(i) {
            *self = StepWatch {
                step: Some(i),
                start_s: r.test_time_s,
                ..StepWatch::default()
            };
        }
        let mut slope = None;
        if let Some((t0, v0, i0)) = self.last {
            let dt = r.test_time_s - t0;
            if dt > 0.0 {
                let h = dt / 3600.0;
                let q = (i0 + r.current_a) / 2.0 * h;
                if q >= 0.0 {
                    self.charge_ah += q;
                } else {
                    self.discharge_ah -= q;
                }
                self.energy_wh += ((i0 * v0 + r.current_a * r.voltage_v) / 2.0 * h).abs();
                slope = Some((r.voltage_v - v0) / dt);
            }
        }
        self.last = Some((r.test_time_s, r.voltage_v, r.current_a));
        let step_time = r.test_time_s - self.start_s;
        for &n in watched {
            let Some(t) = a.terminations.get(n) else {
                continue;
            };
            let holds = match t.condition {
                Condition::VoltageAtLeast(v) => r.voltage_v >= v,
                Condition::VoltageAtMost(v) => r.voltage_v <= v,
                Condition::CurrentMagnitudeAtMost(x) => r.current_a.abs() <= x,
                Condition::StepTime(d) => step_time >= d,
                Condition::TestTime(d) => r.test_time_s >= d,
                Condition::StepCapacity(q) => self.charge_ah.max(self.discharge_ah) >= q,
                Condition::StepEnergy(e) => self.energy_wh >= e,
                Condition::TemperatureAtLeast(x) => r.temperature_c.is_some_and(|t| t >= x),
                Condition::TemperatureAtMost(x) => r.temperature_c.is_some_and(|t| t <= x),
                Condition::VoltageRateMagnitudeAtMost(x) => slope.is_some_and(|d| d.abs() <= x),
                Condition::VoltageRateMagnitudeAtLeast(x) => slope.is_some_and(|d| d.abs() >= x),
            };
            if holds {
                let why = format!(
                    "{} held at {:.1} s into the step",
                    super::condition_text(&t.condition),
                    step_time
                );
                return Some(Verdict::Go(t.goto, why));
            }
        }
        if *chamber
            && let Control::Chamber {
                temperature_c,
                within_c,
                hold_s,
                timeout_s,
            } = a.control
        {
            let air = r.chamber_c.or(r.temperature_c);
            let in_band = hold_s == 0.0 && within_c == f64::INFINITY
                || air.is_some_and(|x| (x - temperature_c).abs() <= within_c);
            if in_band {
                let since = *self.band_since.get_or_insert(r.test_time_s);
                if r.test_time_s - since >= hold_s {
                    let why = format!(
                        "the chamber settled at {temperature_c} degC (within {within_c} degC \
                         for {hold_s} s)"
                    );
                    return Some(Verdict::Go(Goto::Next, why));
                }
            } else {
                self.band_since = None;
            }
            if let Some(limit) = timeout_s
                && step_time >= limit
            {
                return Some(Verdict::Fault(format!(
                    "chamber did not settle at {temperature_c} degC (within {within_c} degC for \
                     {hold_s} s) in {limit} s; last temperature {} (in {}: \"{}\")",
                    air.map_or("not measured".to_owned(), |x| format!("{x} degC")),
                    a.path,
                    a.description
                )));
            }
        }
        None
    }
}
