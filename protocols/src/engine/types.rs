//! The engine's vocabulary: the measurement it is fed, the command it answers, and what it
//! reports (updates, step summaries, phase and status).

use serde::{Deserialize, Serialize};

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

/// The result of one [`Engine::update`](super::Engine::update).
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
    /// Created or restored before [`Engine::start`](super::Engine::start).
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
    /// Cycle number, from 1. Every pass of a counting `cycle: true` loop (the innermost, when
    /// cycling loops nest) is one cycle; charging or discharging steps outside such loops are a
    /// cycle of their own; rests and chamber waits outside them stay in the cycle in progress
    /// (cycle 1 before anything else). The rule in full: `docs/protocols.md`, "Cycles".
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
    /// The plan ran to its end (a fault is reported through [`Engine::phase`](super::Engine::phase)).
    pub finished: bool,
}
