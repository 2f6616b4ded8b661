//! The stepping engine: a pure state machine that executes a [`Plan`].
//!
//! The channel runner feeds it one [`Measurement`] per poll and applies the [`Command`] it
//! returns. There is no I/O and no clock: time arrives with each measurement, which is what
//! lets a 20-hour protocol run in milliseconds in tests. The whole state is serialisable
//! ([`EngineState`]) so a stepped test survives a daemon restart.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::plan::{Condition, Control, Goto, LoopCondition, Plan, PlanStep, ProfileKind, Safety};

/// One poll of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Seconds since the test started; drives step times, test time and integration.
    pub test_time_s: f64,
    /// Cell voltage in V.
    pub voltage_v: f64,
    /// Cell current in A; positive = charge.
    pub current_a: f64,
    /// Cell temperature in degC, when the channel has a sensor.
    pub temperature_c: Option<f64>,
    /// Air temperature of the chamber the cell is in, degC, when it is in one. A chamber step
    /// waits for this to settle (for the cell's own temperature when there is no chamber
    /// reading).
    pub chamber_c: Option<f64>,
}

/// What the channel should do now. Every command that sources energy carries the device-side
/// compliance limits, so the hardware itself stops at the safety window between polls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Output off: rest, finished or faulted.
    Off,
    /// Constant current.
    Current {
        /// Signed current in A; positive = charge.
        amps: f64,
        /// Compliance: the device must not drive the cell above this voltage.
        voltage_max: f64,
        /// Compliance: the device must not drive the cell below this voltage.
        voltage_min: f64,
    },
    /// Constant voltage.
    Voltage {
        /// Target voltage in V.
        volts: f64,
        /// Compliance: the largest current magnitude the device may source or sink.
        current_max: f64,
    },
    /// Constant power.
    Power {
        /// Signed power in W; positive = charge.
        watts: f64,
        /// Compliance: upper voltage bound.
        voltage_max: f64,
        /// Compliance: lower voltage bound.
        voltage_min: f64,
    },
    /// Set the thermal chamber bound to the channel to this temperature; the cell output is
    /// off meanwhile (a chamber step waits for the temperature to settle).
    Chamber {
        /// Chamber setpoint in degC.
        temperature_c: f64,
    },
}

impl Command {
    /// Whether the cell's power stage output is on under this command: false for `Off` and
    /// for `Chamber` (the cell rests while the chamber settles). Runners use it to tell an
    /// output the device switched off by itself from one the protocol asked off.
    pub fn output_on(&self) -> bool {
        !matches!(self, Command::Off | Command::Chamber { .. })
    }
}

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The plan ran to its end.
    Finished,
    /// A safety limit tripped (or a measurement was unusable); the reason names value and limit.
    Faulted(String),
}

/// The result of one [`Engine::update`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// What to apply to the channel now (sent every time, so re-applying is idempotent).
    pub command: Command,
    /// A new step was entered (or the test ended) on this update: log a step event.
    pub step_changed: bool,
    /// Set exactly once, on the update where the test finished or faulted.
    pub outcome: Option<Outcome>,
    /// Totals of the step that ended on this update, for the step table of the test record
    /// (the [`Status`] already shows the next step's zeroed counters).
    pub ended_step: Option<StepSummary>,
}

/// Totals of one completed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    /// Plan index of the step.
    pub plan_index: usize,
    /// Its [`Status::step_count`] (which pass through the plan this was).
    pub step_count: u32,
    /// How long the step ran, in s.
    pub duration_s: f64,
    /// Charge passed into the cell during the step, in Ah.
    pub charge_ah: f64,
    /// Charge taken from the cell during the step, in Ah.
    pub discharge_ah: f64,
    /// Energy throughput of the step (charge plus discharge), in Wh.
    pub energy_wh: f64,
}

/// Where the engine is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Phase {
    /// Created or restored before [`Engine::start`].
    NotStarted,
    /// Executing an action step.
    Running,
    /// The plan ran to its end.
    Finished,
    /// Stopped by a safety violation; the reason names value and limit.
    Faulted(String),
}

/// What operators and the data record see about a running test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Index of the current plan step (the `End` step once finished).
    pub plan_index: usize,
    /// Steps entered so far (1 = first step); the per-test step number in the data.
    pub step_count: u32,
    /// Cycle number, from 1; grows by one on every pass after the first of a `cycle: true` loop.
    pub cycle: u32,
    /// Test time at which the current step started, in s.
    pub step_start_s: f64,
    /// Charge passed into the cell since the test started, in Ah.
    pub charge_capacity_ah: f64,
    /// Charge taken from the cell since the test started, in Ah (positive).
    pub discharge_capacity_ah: f64,
    /// Energy into the cell since the test started, in Wh.
    pub charge_energy_wh: f64,
    /// Energy out of the cell since the test started, in Wh (positive).
    pub discharge_energy_wh: f64,
    /// Charge passed into the cell in the current step, in Ah.
    pub step_charge_ah: f64,
    /// Charge taken from the cell in the current step, in Ah (positive).
    pub step_discharge_ah: f64,
    /// Energy throughput of the current step (charge plus discharge), in Wh.
    pub step_energy_wh: f64,
    /// The current step as written in the protocol, for display.
    pub description: String,
    /// The plan ran to its end (a fault is reported through [`Engine::phase`]).
    pub finished: bool,
}

/// One open loop: which loop and which pass of it is running.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct LoopFrame {
    start: usize,
    pass: u32,
    /// Cumulative discharge capacity when this pass began, so a pass's own discharge
    /// capacity is known at its end (loop exits).
    #[serde(default)]
    pass_start_discharge_ah: f64,
    /// Discharge capacity of the first pass (the reference of `< 80% first`).
    #[serde(default)]
    first_pass_discharge_ah: Option<f64>,
}

/// The part of the previous measurement that integration needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Sample {
    t: f64,
    v: f64,
    i: f64,
}

/// Everything the engine knows beyond its plan: checkpoint it, restore it with the same plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// The plan this state belongs to, so a checkpoint is never resumed on another protocol.
    plan_sha256: String,
    phase: Phase,
    status: Status,
    loops: Vec<LoopFrame>,
    last: Option<Sample>,
    /// The test ended inside `start` (a plan that reaches `End` before any action), so the
    /// outcome is still owed to the next update.
    outcome_pending: bool,
    /// In a chamber step: since when (test time, s) the temperature has been in the band.
    #[serde(default)]
    band_since: Option<f64>,
}

/// The limits the engine enforces, with the ones it cannot run without unpacked.
#[derive(Debug, Clone, PartialEq)]
struct Limits {
    voltage_min: f64,
    voltage_max: f64,
    current_max: f64,
    temperature_max: Option<f64>,
    capacity_max: Option<f64>,
}

/// Executes one plan on one channel.
#[derive(Debug, Clone)]
pub struct Engine {
    plan: Plan,
    effective: Safety,
    limits: Limits,
    state: EngineState,
}

impl Engine {
    /// Prepares `plan` for execution under the stricter of its own and the lab's limits.
    /// Fails when the voltage window or the current limit is unknown, or when a step's setpoint
    /// or termination lies outside the limits (it would fault instead of running).
    pub fn new(plan: Plan, lab_limits: &Safety) -> Result<Engine, ProtocolError> {
        plan.validate()?;
        let effective = plan.safety.stricter(lab_limits);
        let limits = Limits::resolve(&effective)?;
        limits.check_plan(&plan)?;
        let state = EngineState {
            plan_sha256: plan.source_sha256.clone(),
            phase: Phase::NotStarted,
            status: Status {
                plan_index: 0,
                step_count: 0,
                cycle: 1,
                step_start_s: 0.0,
                charge_capacity_ah: 0.0,
                discharge_capacity_ah: 0.0,
                charge_energy_wh: 0.0,
                discharge_energy_wh: 0.0,
                step_charge_ah: 0.0,
                step_discharge_ah: 0.0,
                step_energy_wh: 0.0,
                description: String::new(),
                finished: false,
            },
            loops: Vec::new(),
            last: None,
            outcome_pending: false,
            band_since: None,
        };
        Ok(Engine {
            plan,
            effective,
            limits,
            state,
        })
    }

    /// Enters the first action step at `test_time_s` and returns its command. Calling it again
    /// (or after a restore) changes nothing and returns the current command.
    pub fn start(&mut self, test_time_s: f64) -> Command {
        if self.state.phase == Phase::NotStarted {
            self.state.phase = Phase::Running;
            self.walk(0, test_time_s);
            self.state.outcome_pending = self.state.phase == Phase::Finished;
        }
        self.command()
    }

    /// Feeds one measurement: integrates capacity and energy, checks safety, then the current
    /// step's terminations, and returns what the channel should do. An update before
    /// [`Engine::start`] starts the test at the measurement's time.
    pub fn update(&mut self, m: &Measurement) -> Update {
        let mut step_changed = false;
        if self.state.phase == Phase::NotStarted {
            self.start(m.test_time_s);
            step_changed = true;
        }
        if self.state.outcome_pending {
            self.state.outcome_pending = false;
            return Update {
                command: Command::Off,
                step_changed,
                outcome: self.outcome(),
                ended_step: None,
            };
        }
        if self.state.phase != Phase::Running {
            return Update {
                command: Command::Off,
                step_changed: false,
                outcome: None,
                ended_step: None,
            };
        }
        if !(m.test_time_s.is_finite() && m.voltage_v.is_finite() && m.current_a.is_finite()) {
            return self.fault(format!(
                "unusable measurement (t = {} s, V = {} V, I = {} A): values must be finite",
                m.test_time_s, m.voltage_v, m.current_a
            ));
        }
        let sample = Sample {
            t: m.test_time_s,
            v: m.voltage_v,
            i: m.current_a,
        };
        let mut slope = None;
        if let Some(prev) = self.state.last {
            self.integrate(prev, sample);
            // dV/dt only between two polls of this step (not across the step change).
            if prev.t > self.state.status.step_start_s && sample.t > prev.t {
                slope = Some((sample.v - prev.v) / (sample.t - prev.t));
            }
        }
        self.state.last = Some(sample);

        if let Some(reason) = self.safety_violation(m) {
            return self.fault(reason);
        }
        let settled = match self.chamber_wait(m) {
            Ok(settled) => settled,
            Err(reason) => return self.fault(reason),
        };

        let mut ended_step = None;
        if let Some(goto) = self.fired(m, slope).or(settled.then_some(Goto::Next)) {
            ended_step = Some(self.summary(m.test_time_s));
            step_changed = true;
            match goto {
                Goto::Next => self.walk(self.state.status.plan_index + 1, m.test_time_s),
                Goto::End => self.finish(),
                Goto::Step(target) => {
                    self.leave_loops_not_containing(target);
                    self.walk(target, m.test_time_s);
                }
            }
        }
        Update {
            command: self.command(),
            step_changed,
            outcome: if self.state.phase == Phase::Finished && step_changed {
                Some(Outcome::Finished)
            } else {
                None
            },
            ended_step,
        }
    }

    /// The live status.
    pub fn status(&self) -> &Status {
        &self.state.status
    }

    /// Whether the test is running, finished or faulted.
    pub fn phase(&self) -> &Phase {
        &self.state.phase
    }

    /// The plan being executed.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The limits actually enforced (the stricter of plan and lab limits).
    pub fn limits(&self) -> &Safety {
        &self.effective
    }

    /// A snapshot of the state, to persist and later hand to [`Engine::restore`].
    pub fn checkpoint(&self) -> EngineState {
        self.state.clone()
    }

    /// Rebuilds an engine from a checkpoint taken with the same plan.
    pub fn restore(
        plan: Plan,
        lab_limits: &Safety,
        state: EngineState,
    ) -> Result<Engine, ProtocolError> {
        let mut engine = Engine::new(plan, lab_limits)?;
        let bad = |m: &str| Err(ProtocolError::Checkpoint(m.to_owned()));
        if state.plan_sha256 != engine.plan.source_sha256 {
            return bad("it was taken with a different protocol (source hash differs)");
        }
        let steps = &engine.plan.steps;
        if state.phase == Phase::Running
            && !matches!(
                steps.get(state.status.plan_index),
                Some(PlanStep::Action(_))
            )
        {
            return bad("its current step is not an action step of this plan");
        }
        for frame in &state.loops {
            match steps.get(frame.start) {
                Some(PlanStep::LoopStart { count, .. }) if (1..=*count).contains(&frame.pass) => {}
                _ => return bad("its loop counters do not match this plan"),
            }
        }
        engine.state = state;
        Ok(engine)
    }

    fn outcome(&self) -> Option<Outcome> {
        match &self.state.phase {
            Phase::Finished => Some(Outcome::Finished),
            Phase::Faulted(reason) => Some(Outcome::Faulted(reason.clone())),
            Phase::NotStarted | Phase::Running => None,
        }
    }

    fn fault(&mut self, reason: String) -> Update {
        self.state.phase = Phase::Faulted(reason.clone());
        Update {
            command: Command::Off,
            step_changed: false,
            outcome: Some(Outcome::Faulted(reason)),
            ended_step: None,
        }
    }

    /// The command for the current step. Resistance and profile steps depend on the latest
    /// measurement (voltage, step time), so this is recomputed on every update.
    fn command(&self) -> Command {
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
    fn walk(&mut self, mut i: usize, t: f64) {
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
                    i += 1;
                }
                Some(&PlanStep::LoopEnd { start }) => {
                    let (count, cycle, until) = match self.plan.steps.get(start) {
                        Some(PlanStep::LoopStart {
                            count,
                            cycle,
                            until,
                            ..
                        }) => (*count, *cycle, until.as_slice()),
                        // Unreachable for a validated plan; leaving the loop is the safe reading.
                        _ => (1, false, &[][..]),
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
                        if cycle {
                            self.state.status.cycle += 1;
                        }
                        i = start + 1;
                    } else {
                        self.state.loops.pop();
                        i += 1;
                    }
                }
                Some(PlanStep::Action(a)) => {
                    let s = &mut self.state.status;
                    s.plan_index = i;
                    s.step_count += 1;
                    s.step_start_s = t;
                    s.step_charge_ah = 0.0;
                    s.step_discharge_ah = 0.0;
                    s.step_energy_wh = 0.0;
                    s.description.clone_from(&a.description);
                    self.state.band_since = None;
                    return;
                }
            }
        }
    }

    fn finish(&mut self) {
        self.state.phase = Phase::Finished;
        self.state.loops.clear();
        let s = &mut self.state.status;
        s.finished = true;
        s.plan_index = self.plan.steps.len().saturating_sub(1);
        s.description = "End".to_owned();
    }

    /// Before a jump: closes the loops the target lies outside of, so their counters restart
    /// if they are entered again.
    fn leave_loops_not_containing(&mut self, target: usize) {
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

    fn integrate(&mut self, prev: Sample, now: Sample) {
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

    fn safety_violation(&self, m: &Measurement) -> Option<String> {
        let l = &self.limits;
        let s = &self.state.status;
        let reason = if m.voltage_v < l.voltage_min {
            format!(
                "voltage {} V is below the minimum {} V",
                m.voltage_v, l.voltage_min
            )
        } else if m.voltage_v > l.voltage_max {
            format!(
                "voltage {} V is above the maximum {} V",
                m.voltage_v, l.voltage_max
            )
        } else if m.current_a.abs() > l.current_max {
            format!(
                "current {} A exceeds the limit of {} A (magnitude)",
                m.current_a, l.current_max
            )
        } else if let (Some(max), Some(t)) = (l.temperature_max, m.temperature_c)
            // A NaN reading from the sensor is treated as too hot: it cannot be trusted.
            && (t > max || t.is_nan())
        {
            format!("temperature {t} degC is above the maximum {max} degC")
        } else if let Some(max) = l.capacity_max
            && s.step_charge_ah.max(s.step_discharge_ah) > max
        {
            format!(
                "step capacity {} Ah exceeds the maximum {max} Ah",
                s.step_charge_ah.max(s.step_discharge_ah)
            )
        } else {
            return None;
        };
        let step = match self.plan.steps.get(s.plan_index) {
            Some(PlanStep::Action(a)) => format!(" (in {}: \"{}\")", a.path, a.description),
            _ => String::new(),
        };
        Some(format!("{reason}{step}"))
    }

    /// In a chamber step: tracks how long the temperature has been within the band; true
    /// once it has been there for the hold time; an error (fault reason) on timeout.
    fn chamber_wait(&mut self, m: &Measurement) -> Result<bool, String> {
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
    fn fired(&self, m: &Measurement, slope: Option<f64>) -> Option<Goto> {
        let Some(PlanStep::Action(a)) = self.plan.steps.get(self.state.status.plan_index) else {
            return None;
        };
        let s = &self.state.status;
        let step_time = m.test_time_s - s.step_start_s;
        a.terminations
            .iter()
            .find(|t| match t.condition {
                Condition::VoltageAtLeast(v) => m.voltage_v >= v,
                Condition::VoltageAtMost(v) => m.voltage_v <= v,
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

    fn summary(&self, t: f64) -> StepSummary {
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

impl Limits {
    fn resolve(s: &Safety) -> Result<Limits, ProtocolError> {
        let need = |v: Option<f64>, what: &str, key: &str| match v {
            Some(x) if x.is_finite() => Ok(x),
            Some(_) => Err(ProtocolError::Limits(format!(
                "the {what} is not a finite number"
            ))),
            None => Err(ProtocolError::Limits(format!(
                "no {what} is set: add `{key}` under `safety` in the protocol, or set it in the lab's channel limits"
            ))),
        };
        let limits = Limits {
            voltage_min: need(s.voltage_min, "minimum voltage", "voltage: [min, max]")?,
            voltage_max: need(s.voltage_max, "maximum voltage", "voltage: [min, max]")?,
            current_max: need(s.current_max, "current limit", "current")?,
            temperature_max: s.temperature_max,
            capacity_max: s.capacity_max,
        };
        if limits.voltage_min >= limits.voltage_max {
            return Err(ProtocolError::Limits(format!(
                "the combined voltage window [{} V, {} V] is empty",
                limits.voltage_min, limits.voltage_max
            )));
        }
        if limits.current_max <= 0.0 {
            return Err(ProtocolError::Limits(
                "the current limit must be above zero".into(),
            ));
        }
        Ok(limits)
    }

    /// Rejects steps that could only fault: setpoints outside the limits, and voltage
    /// terminations the safety window would trip before they are reached.
    fn check_plan(&self, plan: &Plan) -> Result<(), ProtocolError> {
        for step in &plan.steps {
            let PlanStep::Action(a) = step else { continue };
            let bad = |m: String| {
                Err(ProtocolError::Limits(format!(
                    "{} (\"{}\"): {m}",
                    a.path, a.description
                )))
            };
            match a.control {
                Control::Current { amps } if amps.abs() > self.current_max => {
                    return bad(format!(
                        "asks for {} A, above the current limit of {} A",
                        amps.abs(),
                        self.current_max
                    ));
                }
                Control::Voltage { volts } | Control::Cccv { volts, .. }
                    if !(self.voltage_min..=self.voltage_max).contains(&volts) =>
                {
                    return bad(format!(
                        "holds {volts} V, outside the voltage window [{} V, {} V]",
                        self.voltage_min, self.voltage_max
                    ));
                }
                Control::Cccv { amps, .. } if amps.abs() > self.current_max => {
                    return bad(format!(
                        "asks for {} A, above the current limit of {} A",
                        amps.abs(),
                        self.current_max
                    ));
                }
                Control::Resistance { ohms } if self.voltage_max / ohms > self.current_max => {
                    return bad(format!(
                        "{ohms} Ohm would draw up to {} A at {} V, above the current limit of {} A",
                        self.voltage_max / ohms,
                        self.voltage_max,
                        self.current_max
                    ));
                }
                Control::Profile { kind } => {
                    let values = a
                        .profile
                        .iter()
                        .flat_map(|p| p.points.iter().map(|(_, v)| *v));
                    for v in values {
                        let out = match kind {
                            ProfileKind::Current => v.abs() > self.current_max,
                            ProfileKind::Voltage => {
                                !(self.voltage_min..=self.voltage_max).contains(&v)
                            }
                            ProfileKind::Power => false,
                        };
                        if out {
                            return bad(format!(
                                "the profile value {v} is outside the limits (|I| <= {} A, V in [{} V, {} V])",
                                self.current_max, self.voltage_min, self.voltage_max
                            ));
                        }
                    }
                }
                Control::Chamber { temperature_c, .. }
                    if self.temperature_max.is_some_and(|max| temperature_c > max) =>
                {
                    return bad(format!(
                        "sets the chamber to {temperature_c} degC, above the temperature limit of {} degC",
                        self.temperature_max.unwrap_or(temperature_c)
                    ));
                }
                _ => {}
            }
            for t in &a.terminations {
                match t.condition {
                    Condition::VoltageAtLeast(v) if v > self.voltage_max => {
                        return bad(format!(
                            "stops at {v} V, above the maximum voltage {} V",
                            self.voltage_max
                        ));
                    }
                    Condition::VoltageAtMost(v) if v < self.voltage_min => {
                        return bad(format!(
                            "stops at {v} V, below the minimum voltage {} V",
                            self.voltage_min
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionStep, Termination};
    use proptest::prelude::*;

    const SAFE: &str =
        "safety:\n  voltage: [2.5 V, 4.25 V]\n  current: 5 A\n  temperature: 60 degC\n";

    fn yaml_plan(steps: &str) -> Plan {
        let source =
            format!("protocol: t\nversion: 1\nparams: {{capacity: 2.5 Ah}}\n{SAFE}steps:\n{steps}");
        Plan::from_yaml(&source, "t.yaml").unwrap()
    }

    fn engine(steps: &str) -> Engine {
        Engine::new(yaml_plan(steps), &Safety::default()).unwrap()
    }

    fn at(t: f64, v: f64, i: f64) -> Measurement {
        Measurement {
            chamber_c: None,
            test_time_s: t,
            voltage_v: v,
            current_a: i,
            temperature_c: Some(25.0),
        }
    }

    /// A linear-OCV cell with series resistance that obeys commands like a real power stage,
    /// including voltage compliance on current steps.
    struct Cell {
        capacity_ah: f64,
        soc: f64,
        r: f64,
    }

    impl Cell {
        fn ocv(&self) -> f64 {
            3.0 + 1.2 * self.soc
        }

        fn apply(&mut self, cmd: Command, t: f64, dt: f64) -> Measurement {
            let ocv = self.ocv();
            let i = match cmd {
                Command::Off | Command::Chamber { .. } => 0.0,
                Command::Current {
                    amps,
                    voltage_max,
                    voltage_min,
                } => amps.clamp((voltage_min - ocv) / self.r, (voltage_max - ocv) / self.r),
                Command::Voltage { volts, current_max } => {
                    ((volts - ocv) / self.r).clamp(-current_max, current_max)
                }
                Command::Power { watts, .. } => {
                    (-ocv + (ocv * ocv + 4.0 * self.r * watts).sqrt()) / (2.0 * self.r)
                }
            };
            self.soc += i * dt / 3600.0 / self.capacity_ah;
            at(t, self.ocv() + i * self.r, i)
        }
    }

    /// Runs an engine against the cell with 1 s polls; returns the last update and the number
    /// of polls.
    fn run(engine: &mut Engine, cell: &mut Cell, max_polls: usize) -> (Update, usize) {
        let mut cmd = engine.start(0.0);
        for n in 1..=max_polls {
            let t = n as f64;
            let m = cell.apply(cmd, t, 1.0);
            let u = engine.update(&m);
            if u.outcome.is_some() {
                return (u, n);
            }
            cmd = u.command;
        }
        panic!("the protocol did not end within {max_polls} polls");
    }

    #[test]
    fn demo_protocol_runs_to_completion_with_two_cycles() {
        let plan = Plan::from_yaml(
            include_str!("../../deploy/protocols/demo.yaml"),
            "demo.yaml",
        )
        .unwrap();
        let mut e = Engine::new(plan, &Safety::default()).unwrap();
        let mut cell = Cell {
            capacity_ah: 2.5,
            soc: 0.5,
            r: 0.05,
        };
        let (u, _) = run(&mut e, &mut cell, 100_000);
        assert_eq!(u.outcome, Some(Outcome::Finished));
        assert_eq!(u.command, Command::Off);
        let s = e.status();
        assert!(s.finished);
        assert_eq!(s.cycle, 2);
        assert_eq!(s.step_count, 11);
        // A full CCCV charge and CC discharge each move most of the capacity.
        assert!(s.discharge_capacity_ah > 2.0 * 1.5, "{s:?}");
        assert!(s.charge_capacity_ah > 2.0 * 1.5, "{s:?}");
    }

    #[test]
    fn commands_carry_the_effective_limits_as_compliance() {
        let lab = Safety {
            voltage_max: Some(4.22),
            current_max: Some(4.0),
            ..Safety::default()
        };
        let mut e = Engine::new(
            yaml_plan("  - \"Charge at 1C until 4.2 V\"\n  - \"Hold at 4.2 V until C/20\"\n"),
            &lab,
        )
        .unwrap();
        assert_eq!(
            e.start(0.0),
            Command::Current {
                amps: 2.5,
                voltage_max: 4.22,
                voltage_min: 2.5
            }
        );
        let u = e.update(&at(1.0, 4.2, 2.5));
        assert!(u.step_changed);
        assert_eq!(
            u.command,
            Command::Voltage {
                volts: 4.2,
                current_max: 4.0
            }
        );
        assert_eq!(e.status().description, "Hold at 4.2 V until C/20");
    }

    #[test]
    fn missing_limits_are_an_error() {
        let plan = Plan::from_yaml(
            "protocol: x\nversion: 1\nsteps: [\"Rest for 1 s\"]\n",
            "t.yaml",
        )
        .unwrap();
        let e = Engine::new(plan.clone(), &Safety::default()).unwrap_err();
        assert!(e.to_string().contains("no minimum voltage"), "{e}");
        let lab = Safety {
            voltage_min: Some(2.5),
            voltage_max: Some(4.2),
            current_max: Some(1.0),
            ..Safety::default()
        };
        assert!(Engine::new(plan, &lab).is_ok());
    }

    #[test]
    fn setpoint_beyond_the_limits_is_rejected_before_running() {
        let plan = yaml_plan("  - \"Charge at 3C until 4.2 V\"\n");
        let e = Engine::new(plan, &Safety::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("asks for 7.5 A, above the current limit of 5 A"),
            "{e}"
        );
        let plan = yaml_plan("  - \"Charge at 1 A until 4.3 V\"\n");
        assert!(Engine::new(plan, &Safety::default()).is_err());
    }

    #[test]
    fn safety_violation_faults_and_turns_output_off() {
        let mut e = engine("  - \"Charge at 1 A until 4.2 V\"\n");
        e.start(0.0);
        assert_eq!(e.update(&at(1.0, 4.0, 1.0)).outcome, None);
        let u = e.update(&at(2.0, 4.3, 1.0));
        assert_eq!(u.command, Command::Off);
        let Some(Outcome::Faulted(reason)) = u.outcome else {
            panic!("no fault: {u:?}")
        };
        assert!(
            reason.contains("4.3 V") && reason.contains("4.25 V") && reason.contains("steps[0]"),
            "{reason}"
        );
        assert_eq!(e.phase(), &Phase::Faulted(reason));
        let again = e.update(&at(3.0, 4.0, 0.0));
        assert_eq!(
            again,
            Update {
                command: Command::Off,
                step_changed: false,
                outcome: None,
                ended_step: None
            }
        );
    }

    #[test]
    fn every_limit_is_checked() {
        let unreadable = Measurement {
            temperature_c: Some(f64::NAN),
            ..at(1.0, 3.7, 0.0)
        };
        let hot = Measurement {
            temperature_c: Some(61.0),
            ..at(1.0, 3.7, 0.0)
        };
        let cases = [
            (at(1.0, 2.4, 0.0), "below the minimum"),
            (at(1.0, 3.7, -5.5), "exceeds the limit"),
            (hot, "temperature 61"),
            (unreadable, "temperature NaN"),
        ];
        for (m, expected) in cases {
            let mut e = engine("  - \"Rest for 1 h\"\n");
            e.start(0.0);
            let Some(Outcome::Faulted(reason)) = e.update(&m).outcome else {
                panic!("no fault for {m:?}")
            };
            assert!(reason.contains(expected), "{reason}");
        }
        let mut e = engine("  - \"Rest for 1 h\"\n");
        e.start(0.0);
        let Some(Outcome::Faulted(reason)) = e.update(&at(f64::NAN, 3.7, 0.0)).outcome else {
            panic!("NaN accepted")
        };
        assert!(reason.contains("finite"), "{reason}");
    }

    #[test]
    fn step_capacity_limit_faults_a_runaway_step() {
        let source = "protocol: t\nversion: 1\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A, capacity: 1 Ah}\nsteps: [\"Charge at 2 A until 4.2 V\"]\n";
        let mut e = Engine::new(
            Plan::from_yaml(source, "t.yaml").unwrap(),
            &Safety::default(),
        )
        .unwrap();
        e.start(0.0);
        e.update(&at(0.0, 3.7, 2.0));
        assert_eq!(e.update(&at(1800.0, 3.8, 2.0)).outcome, None);
        let u = e.update(&at(1801.0, 3.8, 2.0));
        assert!(
            matches!(u.outcome, Some(Outcome::Faulted(ref r)) if r.contains("step capacity")),
            "{u:?}"
        );
    }

    #[test]
    fn outcome_is_reported_once_after_finishing() {
        let mut e = engine("  - \"Rest for 10 s\"\n");
        assert_eq!(e.start(0.0), Command::Off);
        assert_eq!(e.update(&at(5.0, 3.7, 0.0)).outcome, None);
        let u = e.update(&at(10.0, 3.7, 0.0));
        assert_eq!(u.outcome, Some(Outcome::Finished));
        assert!(u.step_changed);
        assert_eq!(u.ended_step.map(|s| s.duration_s), Some(10.0));
        assert!(e.status().finished);
        assert_eq!(e.update(&at(11.0, 3.7, 0.0)).outcome, None);
    }

    #[test]
    fn capacity_integrates_with_the_trapezoid_rule() {
        let mut e = engine("  - \"Rest for 10 h\"\n");
        e.start(0.0);
        e.update(&at(0.0, 4.0, 1.0));
        e.update(&at(3600.0, 4.0, 1.0));
        assert!((e.status().charge_capacity_ah - 1.0).abs() < 1e-12);
        assert!((e.status().charge_energy_wh - 4.0).abs() < 1e-12);
        // From +1 A to -1 A over 2 h: half an hour's worth each way around the zero crossing.
        e.update(&at(3.0 * 3600.0, 4.0, -1.0));
        let s = e.status();
        assert!((s.charge_capacity_ah - 1.5).abs() < 1e-12, "{s:?}");
        assert!((s.discharge_capacity_ah - 0.5).abs() < 1e-12, "{s:?}");
        assert!((s.step_energy_wh - 8.0).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn checkpoint_restore_continues_the_same_step() {
        let steps = "  - repeat: 3\n    cycle: true\n    steps: [\"Charge at 1 A for 20 s\", \"Discharge at 1 A for 20 s\"]\n";
        let mut a = engine(steps);
        a.start(0.0);
        for n in 1..=50 {
            a.update(&at(
                f64::from(n),
                3.7,
                if (n / 20) % 2 == 0 { 1.0 } else { -1.0 },
            ));
        }
        let json = serde_json::to_string(&a.checkpoint()).unwrap();
        let state: EngineState = serde_json::from_str(&json).unwrap();
        let mut b = Engine::restore(yaml_plan(steps), &Safety::default(), state).unwrap();
        assert_eq!(a.status(), b.status());
        assert_eq!(b.status().cycle, 2);
        assert_eq!(
            b.start(50.0),
            a.command(),
            "start after restore must not restart the test"
        );
        for n in 51..=200 {
            let m = at(f64::from(n), 3.7, 0.5);
            assert_eq!(a.update(&m), b.update(&m), "diverged at {n} s");
            assert_eq!(a.status(), b.status());
        }
        assert!(b.status().finished);
    }

    #[test]
    fn restore_rejects_a_checkpoint_of_another_protocol() {
        let mut a = engine("  - \"Rest for 10 s\"\n");
        a.start(0.0);
        let other = yaml_plan("  - \"Rest for 20 s\"\n");
        let e = Engine::restore(other, &Safety::default(), a.checkpoint()).unwrap_err();
        assert!(matches!(e, ProtocolError::Checkpoint(_)), "{e}");
    }

    fn action(path: &str, terminations: Vec<Termination>) -> PlanStep {
        PlanStep::Action(ActionStep {
            path: path.into(),
            description: path.into(),
            control: Control::Rest,
            terminations,
            ..ActionStep::default()
        })
    }

    #[test]
    fn gotos_jump_to_steps_and_out_of_loops() {
        let t = |condition, goto| Termination { condition, goto };
        // 0 A; 1 loop x2 { 2 B: V<=3 -> end of test, else after 1 s -> step 4 (C) }; 4 C; 5 End.
        let plan = Plan {
            name: "g".into(),
            source_sha256: "x".into(),
            capacity_ah: None,
            safety: Safety {
                voltage_min: Some(2.0),
                voltage_max: Some(4.5),
                current_max: Some(1.0),
                ..Safety::default()
            },
            steps: vec![
                action("A", vec![t(Condition::StepTime(1.0), Goto::Next)]),
                PlanStep::LoopStart {
                    count: 2,
                    cycle: false,
                    end: 3,
                    until: vec![],
                },
                action(
                    "B",
                    vec![
                        t(Condition::VoltageAtMost(3.0), Goto::End),
                        t(Condition::StepTime(1.0), Goto::Step(4)),
                    ],
                ),
                PlanStep::LoopEnd { start: 1 },
                action("C", vec![t(Condition::StepTime(1.0), Goto::Step(2))]),
                PlanStep::End,
            ],
        };
        let mut e = Engine::new(plan, &Safety::default()).unwrap();
        e.start(0.0);
        let mut seen = vec![e.status().description.clone()];
        for n in 1..=4 {
            e.update(&at(f64::from(n), 3.7, 0.0));
            seen.push(e.status().description.clone());
        }
        assert_eq!(seen, ["A", "B", "C", "B", "C"]);
        assert_eq!(
            e.update(&at(4.5, 2.9, 0.0)).outcome,
            None,
            "C has no voltage termination"
        );
        e.update(&at(5.0, 3.7, 0.0));
        assert_eq!(e.status().description, "B");
        assert_eq!(
            e.update(&at(5.5, 2.9, 0.0)).outcome,
            Some(Outcome::Finished)
        );
    }

    fn cell() -> Cell {
        Cell {
            capacity_ah: 2.5,
            soc: 0.5,
            r: 0.05,
        }
    }

    fn with_temp(m: Measurement, c: Option<f64>) -> Measurement {
        Measurement {
            temperature_c: c,
            ..m
        }
    }

    #[test]
    fn cccv_step_runs_cc_then_cv_by_compliance_and_ends_at_the_cutoff() {
        let mut e = engine("  - cccv: 1C\n    voltage: 4.1 V\n    cutoff: C/20\n");
        assert_eq!(
            e.start(0.0),
            Command::Current {
                amps: 2.5,
                voltage_max: 4.1,
                voltage_min: 2.5
            }
        );
        let mut c = cell();
        let (u, _) = run(&mut e, &mut c, 20_000);
        assert_eq!(u.outcome, Some(Outcome::Finished));
        // The cell ends near 4.1 V open circuit, charged past what CC alone would reach.
        assert!((c.ocv() - 4.1).abs() < 0.01, "ocv {}", c.ocv());
    }

    #[test]
    fn resistance_step_recomputes_the_current_from_each_voltage() {
        let mut e = engine("  - cr: 2 Ohm\n    until: \"V <= 3.2 V\"\n");
        assert_eq!(e.start(0.0), Command::Off, "no voltage known yet");
        let u = e.update(&at(1.0, 4.0, 0.0));
        assert_eq!(
            u.command,
            Command::Current {
                amps: -2.0,
                voltage_max: 4.25,
                voltage_min: 2.5
            }
        );
        let u = e.update(&at(2.0, 3.6, -2.0));
        assert!(matches!(u.command, Command::Current { amps, .. } if (amps + 1.8).abs() < 1e-12));
        assert_eq!(
            e.update(&at(3.0, 3.2, -1.8)).outcome,
            Some(Outcome::Finished)
        );
    }

    #[test]
    fn resistance_that_would_exceed_the_current_limit_is_rejected() {
        let e = Engine::new(
            yaml_plan("  - cr: 0.5 Ohm\n    for: 1 h\n"),
            &Safety::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("above the current limit"), "{e}");
    }

    #[test]
    fn profile_step_holds_each_value_and_ends_after_its_duration() {
        let csv = |_: &str| -> Result<String, String> { Ok("t,i\n0,1\n10,-2\n20,0.5\n".into()) };
        let source =
            format!("protocol: t\nversion: 1\n{SAFE}steps:\n  - profile: p.csv\n    repeat: 2\n");
        let plan = Plan::from_yaml_with(&source, "t.yaml", &csv).unwrap();
        let mut e = Engine::new(plan, &Safety::default()).unwrap();
        let amps = |c: Command| match c {
            Command::Current { amps, .. } => amps,
            other => panic!("not a current: {other:?}"),
        };
        assert_eq!(amps(e.start(0.0)), 1.0);
        let mut seen = Vec::new();
        for t in [5.0, 10.0, 25.0, 31.0, 59.0] {
            seen.push(amps(e.update(&at(t, 3.7, 0.0)).command));
        }
        assert_eq!(seen, [1.0, -2.0, 0.5, 1.0, 0.5]);
        assert_eq!(
            e.update(&at(60.0, 3.7, 0.0)).outcome,
            Some(Outcome::Finished)
        );
    }

    #[test]
    fn chamber_step_waits_for_the_temperature_to_settle() {
        let mut e = engine(
            "  - chamber: 30 degC\n    wait: {within: 0.5 degC, for: 10 s}\n    timeout: 1 h\n  - \"Rest for 1 s\"\n",
        );
        let first = e.start(0.0);
        assert_eq!(
            first,
            Command::Chamber {
                temperature_c: 30.0
            }
        );
        assert!(
            !first.output_on(),
            "the cell rests while the chamber settles"
        );
        let steps = [
            (1.0, Some(25.0)),
            (2.0, Some(29.6)),
            (5.0, None),
            (6.0, Some(29.8)),
            (15.0, Some(30.2)),
        ];
        for (t, temp) in steps {
            let u = e.update(&with_temp(at(t, 3.7, 0.0), temp));
            assert!(!u.step_changed, "ended early at {t}");
            assert_eq!(
                u.command,
                Command::Chamber {
                    temperature_c: 30.0
                }
            );
        }
        // In the band since 6 s: settled at 16 s.
        let u = e.update(&with_temp(at(16.0, 3.7, 0.0), Some(30.1)));
        assert!(u.step_changed);
        assert_eq!(u.command, Command::Off);
    }

    #[test]
    fn a_chamber_step_waits_on_the_chamber_air_when_the_chamber_reports_it() {
        let mut e = engine(
            "  - chamber: 45 degC\n    wait: {within: 0.5 degC, for: 10 s}\n  - \"Rest for 1 s\"\n",
        );
        e.start(0.0);
        let in_chamber = |t: f64, air: f64| Measurement {
            chamber_c: Some(air),
            ..at(t, 3.7, 0.0)
        };
        // The cell (25 degC) lags the air; the step settles on the air.
        assert!(!e.update(&in_chamber(1.0, 44.8)).step_changed);
        assert!(!e.update(&in_chamber(10.0, 45.2)).step_changed);
        assert!(e.update(&in_chamber(11.5, 45.1)).step_changed);
    }

    #[test]
    fn chamber_that_never_settles_faults_at_its_timeout() {
        let mut e = engine(
            "  - chamber: 30 degC\n    wait: {within: 0.5 degC, for: 10 s}\n    timeout: 1 min\n",
        );
        e.start(0.0);
        assert_eq!(e.update(&at(59.0, 3.7, 0.0)).outcome, None);
        let Some(Outcome::Faulted(reason)) = e.update(&at(60.0, 3.7, 0.0)).outcome else {
            panic!("no timeout fault")
        };
        assert!(
            reason.contains("did not settle at 30 degC") && reason.contains("25 degC"),
            "{reason}"
        );
    }

    #[test]
    fn chamber_step_above_the_temperature_limit_is_rejected() {
        let e = Engine::new(yaml_plan("  - chamber: 70 degC\n"), &Safety::default()).unwrap_err();
        assert!(e.to_string().contains("above the temperature limit"), "{e}");
    }

    #[test]
    fn temperature_and_voltage_rate_terminations_fire() {
        let mut e = engine(
            "  - rest: 1 h\n    until: [\"Temp >= 40 degC -> end\", \"dV/dt <= 1 mV/min\"]\n",
        );
        e.start(0.0);
        assert_eq!(
            e.update(&with_temp(at(10.0, 3.70, 0.0), Some(39.0)))
                .outcome,
            None
        );
        // 10 mV in 60 s is faster than 1 mV/min.
        assert_eq!(e.update(&at(70.0, 3.71, 0.0)).outcome, None);
        assert_eq!(
            e.update(&at(130.0, 3.7105, 0.0)).outcome,
            Some(Outcome::Finished)
        );
        let mut e = engine("  - rest: 1 h\n    until: [\"Temp >= 40 degC -> end\"]\n");
        e.start(0.0);
        assert_eq!(
            e.update(&with_temp(at(10.0, 3.7, 0.0), None)).outcome,
            None,
            "no sensor: never fires"
        );
        assert_eq!(
            e.update(&with_temp(at(11.0, 3.7, 0.0), Some(40.0))).outcome,
            Some(Outcome::Finished)
        );
    }

    #[test]
    fn voltage_rate_is_not_measured_across_a_step_change() {
        let mut e =
            engine("  - \"Rest for 10 s\"\n  - rest: 1 h\n    until: \"dV/dt >= 1 mV/s\"\n");
        e.start(0.0);
        e.update(&at(10.0, 3.7, 0.0));
        assert_eq!(e.status().step_count, 2);
        // The first poll of the step has no in-step predecessor, however large the jump.
        assert!(!e.update(&at(11.0, 3.0, 0.0)).step_changed);
        assert!(e.update(&at(12.0, 3.1, 0.0)).step_changed);
    }

    #[test]
    fn loop_exits_on_cycle_count() {
        let mut e = engine(
            "  - repeat: 100\n    cycle: true\n    until: \"cycle >= 4\"\n    steps: [\"Rest for 1 s\"]\n  - \"Rest for 1 s\"\n",
        );
        e.start(0.0);
        for n in 1..=4 {
            e.update(&at(f64::from(n), 3.7, 0.0));
        }
        assert_eq!(e.status().cycle, 4);
        assert_eq!(
            e.status().step_count,
            5,
            "4 passes then the step after the loop"
        );
        assert_eq!(e.status().plan_index, 3);
    }

    #[test]
    fn loop_exits_when_discharge_capacity_falls_below_a_fraction_of_the_first() {
        let mut e = engine(
            "  - repeat: 50\n    cycle: true\n    until: discharge_capacity < 80% first\n    steps: [\"Discharge at 1 A for 1 h\"]\n",
        );
        e.start(0.0);
        // Pass k discharges 1 A for an hour, then the measured current fades 5 % per pass.
        let mut t = 0.0;
        let mut passes = 0;
        let mut current: f64 = 1.0;
        loop {
            e.update(&at(t, 3.7, -current));
            t += 3600.0;
            let u = e.update(&at(t, 3.7, -current));
            passes += 1;
            if u.outcome.is_some() {
                break;
            }
            current *= 0.95;
            assert!(passes < 50);
        }
        // 0.95^4 = 0.815, 0.95^5 = 0.774: the fifth pass after the first is below 80 %.
        assert_eq!(passes, 6);
        assert_eq!(e.status().cycle, 6);
    }

    #[test]
    fn checkpoint_restore_keeps_chamber_wait_and_loop_exit_state() {
        let steps = "  - chamber: 30 degC\n    wait: {within: 1 degC, for: 20 s}\n  - repeat: 10\n    cycle: true\n    until: discharge_capacity < 90% first\n    steps: [\"Discharge at 1 A for 10 s\"]\n";
        let mut a = engine(steps);
        a.start(0.0);
        for n in 1..=15 {
            a.update(&with_temp(at(f64::from(n), 3.7, 0.0), Some(30.0)));
        }
        let state: EngineState =
            serde_json::from_str(&serde_json::to_string(&a.checkpoint()).unwrap()).unwrap();
        let mut b = Engine::restore(yaml_plan(steps), &Safety::default(), state).unwrap();
        for n in 16..=200 {
            let i = if n < 60 { -1.0 } else { -0.5 };
            let m = with_temp(at(f64::from(n), 3.7, i), Some(30.0));
            assert_eq!(a.update(&m), b.update(&m), "diverged at {n} s");
        }
        assert_eq!(a.status(), b.status());
        assert!(b.status().finished);
        assert!(
            b.status().cycle < 10,
            "left the loop early: {:?}",
            b.status()
        );
    }

    proptest! {
        #[test]
        fn cc_charge_never_passes_its_cutoff_by_more_than_one_polls_rise(
            amps in 0.1f64..5.0,
            dt in 0.5f64..30.0,
            cutoff in 3.7f64..4.2,
            r in 0.0f64..0.1,
            soc in 0.0f64..0.5,
        ) {
            let mut e = engine(&format!("  - \"Charge at {amps} A until {cutoff} V\"\n"));
            let mut c = Cell { capacity_ah: 2.5, soc, r };
            let mut cmd = e.start(0.0);
            let mut prev_v = c.ocv();
            for n in 1..200_000 {
                let m = c.apply(cmd, f64::from(n) * dt, dt);
                let u = e.update(&m);
                if u.outcome.is_some() || u.step_changed {
                    prop_assert!(m.voltage_v >= cutoff);
                    prop_assert!(m.voltage_v - cutoff <= m.voltage_v - prev_v + 1e-12,
                        "overshoot {} V with a poll rise of {} V", m.voltage_v - cutoff, m.voltage_v - prev_v);
                    return Ok(());
                }
                prop_assert!(m.voltage_v < cutoff, "passed the cutoff without ending the step");
                prev_v = m.voltage_v;
                cmd = u.command;
            }
            prop_assert!(false, "the charge never reached its cutoff");
        }

        #[test]
        fn capacity_and_energy_are_conserved_across_new_step_kinds(
            polls in proptest::collection::vec((0.1f64..5.0, -4.0f64..4.0, 3.0f64..4.1, 20.0f64..40.0), 1..200),
        ) {
            let mut e = engine("  - repeat: 3\n    steps:\n      - cccv: 1 A\n        voltage: 4.1 V\n        for: 7 s\n      - cr: 2 Ohm\n        for: 5 s\n      - chamber: 30 degC\n        wait: {within: 5 degC, for: 3 s}\n      - rest: 4 s\n        until: \"dV/dt <= 1 mV/s\"\n");
            e.start(0.0);
            let (mut q_in, mut q_out, mut energy) = (0.0, 0.0, 0.0);
            let mut t = 0.0;
            for (dt, i, v, temp) in polls {
                t += dt;
                let u = e.update(&with_temp(at(t, v, i), Some(temp)));
                if let Some(s) = u.ended_step {
                    q_in += s.charge_ah;
                    q_out += s.discharge_ah;
                    energy += s.energy_wh;
                }
                if u.outcome.is_some() {
                    break;
                }
            }
            let s = e.status();
            if !s.finished {
                q_in += s.step_charge_ah;
                q_out += s.step_discharge_ah;
                energy += s.step_energy_wh;
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()));
            prop_assert!(close(q_in, s.charge_capacity_ah));
            prop_assert!(close(q_out, s.discharge_capacity_ah));
            prop_assert!(close(energy, s.charge_energy_wh + s.discharge_energy_wh));
        }
    }

    #[derive(Debug, Clone)]
    enum Block {
        Step,
        Repeat(u32, bool, Vec<Block>),
    }

    fn blocks() -> impl Strategy<Value = Vec<Block>> {
        let block = Just(Block::Step).prop_recursive(3, 24, 3, |inner| {
            (
                1u32..4,
                any::<bool>(),
                proptest::collection::vec(inner, 1..3),
            )
                .prop_map(|(n, cycle, body)| Block::Repeat(n, cycle, body))
        });
        proptest::collection::vec(block, 1..4)
    }

    /// Writes the blocks as YAML and records, per step path, how often it must run, and how
    /// many cycle increments the loops must produce.
    fn emit(
        blocks: &[Block],
        path: &str,
        indent: usize,
        passes: u32,
        out: &mut String,
        expected: &mut Vec<(String, u32)>,
        cycles: &mut u32,
    ) {
        let pad = " ".repeat(indent);
        for (i, b) in blocks.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match b {
                Block::Step => {
                    out.push_str(&format!("{pad}- \"Rest for 1 s\"\n"));
                    expected.push((p, passes));
                }
                Block::Repeat(n, cycle, body) => {
                    out.push_str(&format!(
                        "{pad}- repeat: {n}\n{pad}  cycle: {cycle}\n{pad}  steps:\n"
                    ));
                    if *cycle {
                        *cycles += passes * (n - 1);
                    }
                    emit(
                        body,
                        &format!("{p}.steps"),
                        indent + 4,
                        passes * n,
                        out,
                        expected,
                        cycles,
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn loop_body_runs_exactly_count_times(tree in blocks()) {
            let mut yaml = String::new();
            let mut expected = Vec::new();
            let mut cycles = 0;
            emit(&tree, "steps", 2, 1, &mut yaml, &mut expected, &mut cycles);
            let mut e = engine(&yaml);
            e.start(0.0);
            let path = |e: &Engine| match &e.plan().steps[e.status().plan_index] {
                PlanStep::Action(a) => a.path.clone(),
                other => panic!("not on an action: {other:?}"),
            };
            let mut runs = std::collections::BTreeMap::<String, u32>::new();
            *runs.entry(path(&e)).or_default() += 1;
            let total: u32 = expected.iter().map(|(_, n)| n).sum();
            for n in 1..=total {
                let u = e.update(&at(f64::from(n), 3.7, 0.0));
                prop_assert!(u.step_changed);
                if u.outcome.is_some() {
                    prop_assert_eq!(n, total);
                    break;
                }
                *runs.entry(path(&e)).or_default() += 1;
            }
            prop_assert!(e.status().finished);
            prop_assert_eq!(e.status().step_count, total);
            prop_assert_eq!(e.status().cycle, 1 + cycles);
            for (p, n) in expected {
                prop_assert_eq!(runs.get(&p).copied(), Some(n), "{}", p);
            }
        }

        #[test]
        fn capacity_counters_are_conserved_across_steps(
            steps in proptest::collection::vec((0u8..3, 0.1f64..3.0, 1u32..20), 1..6),
            polls in proptest::collection::vec((0.1f64..5.0, -4.0f64..4.0, 3.0f64..4.1), 1..200),
        ) {
            let yaml: String = steps.iter().map(|(kind, amps, secs)| match kind {
                0 => format!("  - \"Charge at {amps} A for {secs} s\"\n"),
                1 => format!("  - \"Discharge at {amps} A for {secs} s\"\n"),
                _ => format!("  - \"Rest for {secs} s\"\n"),
            }).collect();
            let mut e = engine(&format!("  - repeat: 2\n    steps:\n{}", yaml.replace("  - ", "      - ")));
            e.start(0.0);
            let (mut q_in, mut q_out, mut energy) = (0.0, 0.0, 0.0);
            let mut t = 0.0;
            for (dt, i, v) in polls {
                t += dt;
                let u = e.update(&at(t, v, i));
                if let Some(s) = u.ended_step {
                    q_in += s.charge_ah;
                    q_out += s.discharge_ah;
                    energy += s.energy_wh;
                }
                if u.outcome.is_some() {
                    break;
                }
            }
            let s = e.status();
            if !s.finished {
                q_in += s.step_charge_ah;
                q_out += s.step_discharge_ah;
                energy += s.step_energy_wh;
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()));
            prop_assert!(close(q_in, s.charge_capacity_ah), "{} vs {}", q_in, s.charge_capacity_ah);
            prop_assert!(close(q_out, s.discharge_capacity_ah), "{} vs {}", q_out, s.discharge_capacity_ah);
            prop_assert!(close(energy, s.charge_energy_wh + s.discharge_energy_wh));
            prop_assert!(s.charge_capacity_ah >= 0.0 && s.discharge_capacity_ah >= 0.0);
        }

        #[test]
        fn arbitrary_measurements_never_panic(
            polls in proptest::collection::vec((any::<f64>(), any::<f64>(), any::<f64>(), proptest::option::of(any::<f64>())), 0..50),
        ) {
            let mut e = engine("  - \"Charge at 1 A for 10 s or until 4.2 V\"\n  - \"Hold at 4.2 V until C/20\"\n");
            for (t, v, i, temp) in polls {
                let u = e.update(&Measurement { test_time_s: t, voltage_v: v, current_a: i, temperature_c: temp, chamber_c: None });
                prop_assert!(u.outcome.is_none() || e.phase() != &Phase::Running);
            }
            let _ = serde_json::to_string(&e.checkpoint());
        }
    }
}
