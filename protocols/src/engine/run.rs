//! One step of the machine: the command of the current step, walking the plan through loops
//! and gotos, integrating capacity and energy, terminations and chamber waits.

use super::types::{Command, Measurement, Phase, StepSummary};
use super::{Engine, LoopFrame, Sample};
use crate::plan::{Condition, Control, Goto, LoopCondition, PlanStep, ProfileKind};

impl Engine {
    /// The command for the current step. Resistance and profile steps depend on the latest
    /// measurement (voltage, step time), so this is recomputed on every update.
    pub(super) fn command(&self) -> Command {
        let a = match (
            &self.state.phase,
            self.plan.steps.get(self.state.status.plan_index),
        ) {
            (Phase::Running, Some(PlanStep::Action(a))) => a,
            _ => return Command::Off,
        };
        let l = &self.limits;
        let step_start = self.state.status.step_start_s;
        match a.control {
            Control::Cccv { amps, volts } => Command::Current {
                amps,
                // The CV phase is the device's own compliance at the CV voltage.
                voltage_max: if amps >= 0.0 {
                    volts.min(l.voltage_max)
                } else {
                    l.voltage_max
                },
                voltage_min: if amps < 0.0 {
                    volts.max(l.voltage_min)
                } else {
                    l.voltage_min
                },
            },
            Control::Resistance { ohms } => match self.state.last {
                // I = -V/R with the latest voltage; nothing to compute before a measurement.
                Some(last) => Command::Current {
                    amps: (-last.v / ohms).clamp(-l.current_max, l.current_max),
                    voltage_max: l.voltage_max,
                    voltage_min: l.voltage_min,
                },
                None => Command::Off,
            },
            Control::Profile { kind } => {
                let t = self.state.last.map_or(0.0, |s| s.t - step_start);
                let value = a.profile.as_ref().map_or(0.0, |p| p.value_at(t));
                match kind {
                    ProfileKind::Current => Command::Current {
                        amps: value,
                        voltage_max: l.voltage_max,
                        voltage_min: l.voltage_min,
                    },
                    ProfileKind::Power => Command::Power {
                        watts: value,
                        voltage_max: l.voltage_max,
                        voltage_min: l.voltage_min,
                    },
                    ProfileKind::Voltage => Command::Voltage {
                        volts: value,
                        current_max: l.current_max,
                    },
                }
            }
            Control::Chamber { temperature_c, .. } => Command::Chamber { temperature_c },
            Control::Rest => Command::Off,
            Control::Current { amps } => Command::Current {
                amps,
                voltage_max: l.voltage_max,
                voltage_min: l.voltage_min,
            },
            Control::Voltage { volts } => Command::Voltage {
                volts,
                current_max: l.current_max,
            },
            Control::Power { watts } => Command::Power {
                watts,
                voltage_max: l.voltage_max,
                voltage_min: l.voltage_min,
            },
        }
    }

    /// Moves forward from plan index `i` to the next action step, counting loop passes on the
    /// way, and enters it at time `t`; reaching `End` finishes the test.
    pub(super) fn walk(&mut self, mut i: usize, t: f64) {
        loop {
            match self.plan.steps.get(i) {
                None | Some(PlanStep::End) => return self.finish(),
                Some(PlanStep::LoopStart { .. }) => {
                    let q = self.state.status.discharge_capacity_ah;
                    self.state.loops.push(LoopFrame {
                        start: i,
                        pass: 1,
                        pass_start_discharge_ah: q,
                        first_pass_discharge_ah: None,
                    });
                    if self.cycles.counts(i) {
                        self.begin_pass();
                    }
                    i += 1;
                }
                Some(&PlanStep::LoopEnd { start }) => {
                    let (count, until) = match self.plan.steps.get(start) {
                        Some(PlanStep::LoopStart { count, until, .. }) => {
                            (*count, until.as_slice())
                        }
                        // Unreachable for a validated plan; leaving the loop is the safe reading.
                        _ => (1, &[][..]),
                    };
                    let q = self.state.status.discharge_capacity_ah;
                    let cycle_now = self.state.status.cycle;
                    // A jump into the middle of a loop arrives without a frame: that is pass 1.
                    if self.state.loops.last().map(|f| f.start) != Some(start) {
                        self.state.loops.push(LoopFrame {
                            start,
                            pass: 1,
                            pass_start_discharge_ah: q,
                            first_pass_discharge_ah: None,
                        });
                    }
                    let frame = self.state.loops.last_mut().map(|f| {
                        let pass_q = q - f.pass_start_discharge_ah;
                        let first = *f.first_pass_discharge_ah.get_or_insert(pass_q);
                        let exit = until.iter().any(|c| match *c {
                            LoopCondition::DischargeCapacityBelowFractionOfFirst(x) => {
                                f.pass > 1 && pass_q < x * first
                            }
                            LoopCondition::DischargeCapacityBelow(x) => pass_q < x,
                            LoopCondition::CycleAtLeast(n) => cycle_now >= n,
                        });
                        f.pass_start_discharge_ah = q;
                        if f.pass < count && !exit {
                            f.pass += 1;
                            true
                        } else {
                            false
                        }
                    });
                    if frame == Some(true) {
                        if self.cycles.counts(start) {
                            self.begin_pass();
                        }
                        i = start + 1;
                    } else {
                        self.state.loops.pop();
                        i += 1;
                    }
                }
                Some(PlanStep::Action(a)) => {
                    let description = a.description.clone();
                    let moves_charge = super::cycles::moves_charge(a);
                    self.enter_for_cycles(i, moves_charge);
                    let s = &mut self.state.status;
                    s.plan_index = i;
                    s.step_count += 1;
                    s.step_start_s = t;
                    s.step_charge_ah = 0.0;
                    s.step_discharge_ah = 0.0;
                    s.step_energy_wh = 0.0;
                    s.description = description;
                    self.state.band_since = None;
                    return;
                }
            }
        }
    }

    pub(super) fn finish(&mut self) {
        self.state.phase = Phase::Finished;
        self.state.loops.clear();
        let s = &mut self.state.status;
        s.finished = true;
        s.plan_index = self.plan.steps.len().saturating_sub(1);
        s.description = "End".to_owned();
    }

    /// Before a jump: closes the loops the target lies outside of, so their counters restart
    /// if they are entered again.
    pub(super) fn leave_loops_not_containing(&mut self, target: usize) {
        while let Some(frame) = self.state.loops.last() {
            let end = match self.plan.steps.get(frame.start) {
                Some(&PlanStep::LoopStart { end, .. }) => end,
                _ => frame.start,
            };
            if frame.start < target && target < end {
                break;
            }
            self.state.loops.pop();
        }
    }

    pub(super) fn integrate(&mut self, prev: Sample, now: Sample) {
        let dt = now.t - prev.t;
        // Repeated or out-of-order timestamps carry no charge.
        if dt <= 0.0 {
            return;
        }
        let hours = dt / 3600.0;
        let (q_in, q_out) = split_trapezoid(prev.i, now.i, hours);
        let (e_in, e_out) = split_trapezoid(prev.v * prev.i, now.v * now.i, hours);
        let s = &mut self.state.status;
        s.charge_capacity_ah += q_in;
        s.discharge_capacity_ah += q_out;
        s.step_charge_ah += q_in;
        s.step_discharge_ah += q_out;
        s.charge_energy_wh += e_in;
        s.discharge_energy_wh += e_out;
        s.step_energy_wh += e_in + e_out;
    }

    /// In a chamber step: tracks how long the temperature has been within the band; true
    /// once it has been there for the hold time; an error (fault reason) on timeout.
    pub(super) fn chamber_wait(&mut self, m: &Measurement) -> Result<bool, String> {
        let Some(PlanStep::Action(a)) = self.plan.steps.get(self.state.status.plan_index) else {
            return Ok(false);
        };
        let Control::Chamber {
            temperature_c,
            within_c,
            hold_s,
            timeout_s,
        } = a.control
        else {
            return Ok(false);
        };
        let t = m.test_time_s;
        let in_band = hold_s == 0.0 && within_c == f64::INFINITY
            || m.chamber_c
                .or(m.temperature_c)
                .is_some_and(|x| (x - temperature_c).abs() <= within_c);
        if in_band {
            let since = *self.state.band_since.get_or_insert(t);
            if t - since >= hold_s {
                return Ok(true);
            }
        } else {
            self.state.band_since = None;
        }
        let waited = t - self.state.status.step_start_s;
        match timeout_s {
            Some(limit) if waited >= limit => Err(format!(
                "chamber did not settle at {temperature_c} degC (within {within_c} degC for {hold_s} s) in {limit} s; last temperature {} (in {}: \"{}\")",
                m.chamber_c
                    .or(m.temperature_c)
                    .map_or("not measured".to_owned(), |x| format!("{x} degC")),
                a.path,
                a.description
            )),
            _ => Ok(false),
        }
    }

    /// The jump of the first termination of the current step that holds, if any. `slope` is
    /// dV/dt (V/s) since the previous poll of this step.
    pub(super) fn fired(&self, m: &Measurement, slope: Option<f64>) -> Option<Goto> {
        let Some(PlanStep::Action(a)) = self.plan.steps.get(self.state.status.plan_index) else {
            return None;
        };
        let s = &self.state.status;
        let step_time = m.test_time_s - s.step_start_s;
        a.terminations
            .iter()
            .find(|t| match t.condition {
                Condition::VoltageAtLeast(v) => {
                    m.voltage_v >= v || self.held_at_compliance(m, v, true)
                }
                Condition::VoltageAtMost(v) => {
                    m.voltage_v <= v || self.held_at_compliance(m, v, false)
                }
                Condition::CurrentMagnitudeAtMost(i) => m.current_a.abs() <= i,
                Condition::StepTime(d) => step_time >= d,
                Condition::TestTime(d) => m.test_time_s >= d,
                Condition::StepCapacity(q) => s.step_charge_ah.max(s.step_discharge_ah) >= q,
                Condition::StepEnergy(e) => s.step_energy_wh >= e,
                Condition::TemperatureAtLeast(x) => m.temperature_c.is_some_and(|t| t >= x),
                Condition::TemperatureAtMost(x) => m.temperature_c.is_some_and(|t| t <= x),
                Condition::VoltageRateMagnitudeAtMost(x) => slope.is_some_and(|d| d.abs() <= x),
                Condition::VoltageRateMagnitudeAtLeast(x) => slope.is_some_and(|d| d.abs() >= x),
            })
            .map(|t| t.goto)
    }

    /// Whether a constant current or power step whose voltage end `cut` lies at the lab's
    /// limit has reached it as far as a stage can tell: the stage holds the cell at its
    /// compliance voltage (which it can set only to its own resolution, so the reading may stay
    /// a fraction of a millivolt short of the limit forever) and the current has collapsed to
    /// less than half the commanded one. The cell cannot be driven further at the step's
    /// current without crossing the limit: the step's end is reached, as on a cycler.
    fn held_at_compliance(&self, m: &Measurement, cut: f64, charging: bool) -> bool {
        let Some(PlanStep::Action(a)) = self.plan.steps.get(self.state.status.plan_index) else {
            return false;
        };
        let (commanded_a, limit) = match (a.control, self.command()) {
            (
                Control::Current { .. },
                Command::Current {
                    amps,
                    voltage_max,
                    voltage_min,
                },
            ) => (amps, if charging { voltage_max } else { voltage_min }),
            (
                Control::Power { .. },
                Command::Power {
                    watts,
                    voltage_max,
                    voltage_min,
                },
            ) => {
                let limit = if charging { voltage_max } else { voltage_min };
                (watts / limit.max(0.1), limit)
            }
            _ => return false,
        };
        if charging != (commanded_a > 0.0) || (cut - limit).abs() > COMPLIANCE_BAND_V {
            return false;
        }
        (m.voltage_v - limit).abs() <= COMPLIANCE_BAND_V
            && m.current_a.abs() < 0.5 * commanded_a.abs()
    }

    pub(super) fn summary(&self, t: f64) -> StepSummary {
        let s = &self.state.status;
        StepSummary {
            plan_index: s.plan_index,
            step_count: s.step_count,
            duration_s: t - s.step_start_s,
            charge_ah: s.step_charge_ah,
            discharge_ah: s.step_discharge_ah,
            energy_wh: s.step_energy_wh,
        }
    }
}

/// How close to the lab's voltage limit a step's voltage end must lie, and the cell be held,
/// for [`Engine::held_at_compliance`]: a few of a stage's setpoint steps (1.1 mV on an EA PSB
/// 10060, 10 mV on a Riden is the coarsest).
const COMPLIANCE_BAND_V: f64 = 0.01;

/// Trapezoid integral of a linearly interpolated signal from `a` to `b` over `h` hours, split
/// into its positive and negative parts (both returned >= 0) at the zero crossing.
fn split_trapezoid(a: f64, b: f64, h: f64) -> (f64, f64) {
    if a >= 0.0 && b >= 0.0 {
        ((a + b) / 2.0 * h, 0.0)
    } else if a <= 0.0 && b <= 0.0 {
        (0.0, -(a + b) / 2.0 * h)
    } else {
        // The signal crosses zero at fraction |a| / (|a| + |b|) of the interval.
        let f = a.abs() / (a.abs() + b.abs());
        let first = a.abs() * f * h / 2.0;
        let second = b.abs() * (1.0 - f) * h / 2.0;
        if a > 0.0 {
            (first, second)
        } else {
            (second, first)
        }
    }
}
