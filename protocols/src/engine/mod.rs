//! The stepping engine: a pure state machine that executes a [`Plan`].
//!
//! The channel runner feeds it one [`Measurement`] per poll and applies the [`Command`] it
//! returns. There is no I/O and no clock: time arrives with each measurement, which is what
//! lets a 20-hour protocol run in milliseconds in tests. The whole state is serialisable
//! ([`EngineState`]) so a stepped test survives a daemon restart.
//!
//! # Layout
//!
//! - `types`: what goes in and out: [`Measurement`], [`Command`], [`Update`], [`Status`] and
//!   the rest of the public vocabulary.
//! - `run`: one step of the machine: the command of the current step, walking the plan
//!   (loops, gotos), integration of capacity and energy, terminations and chamber waits.
//! - `limits`: the safety limits: resolved when the engine is built, checked against the plan
//!   and against every measurement.
//!
//! This module keeps the engine, its checkpointable state and the public API.

mod cycles;
mod follow;
mod limits;
mod run;
mod types;

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::plan::{Condition, Goto, Plan, PlanStep, Safety};
use cycles::{CycleMap, CycleOwner};

pub use follow::{CycleFollower, Placed, StepFollower};
pub use types::{Command, Measurement, Outcome, Phase, Status, StepSummary, Update};

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
    /// What the cycle in progress is (a loop pass, or charging steps outside loops); `None`
    /// until something begins cycle 1. See `cycles` for the rule.
    #[serde(default)]
    cycle_owner: Option<CycleOwner>,
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
    /// Which loops count cycles (derived from the plan).
    cycles: CycleMap,
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
            cycle_owner: None,
        };
        Ok(Engine {
            cycles: CycleMap::new(&plan.steps),
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
    /// The engine time at which a time end of the step in progress holds (its step time or
    /// the test time), the earliest of them: a runner polls then, so a timed step lasts its
    /// time and not up to a poll interval more.
    pub fn next_timed_end(&self) -> Option<f64> {
        if self.state.phase != Phase::Running {
            return None;
        }
        let s = &self.state.status;
        let Some(PlanStep::Action(a)) = self.plan.steps.get(s.plan_index) else {
            return None;
        };
        a.terminations
            .iter()
            .filter_map(|t| match t.condition {
                Condition::StepTime(d) => Some(s.step_start_s + d),
                Condition::TestTime(d) => Some(d),
                _ => None,
            })
            .min_by(f64::total_cmp)
    }

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
        // A checkpoint from before the cycle rule was recorded: a cycle is in progress once
        // the count has grown or the test is inside a counting loop.
        if engine.state.cycle_owner.is_none()
            && engine.state.phase != Phase::NotStarted
            && (engine.state.status.cycle > 1
                || engine.cycles.inside(engine.state.status.plan_index))
        {
            engine.state.cycle_owner = Some(CycleOwner::Pass);
        }
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
}

#[cfg(test)]
mod tests;
