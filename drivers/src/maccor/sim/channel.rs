//! One simulated channel: its cell, the procedure or direct-mode output driving it, its
//! state codes and its logged records.

use super::{MAX_SUBSTEP_S, SimConfig, TIME_EPS_S};
use crate::Clock;
use crate::cell::{Cell, CellParams};
use crate::cycler_sim::Log;
use crate::maccor::wire::{Mode, Output, Reading, rf1, rf2, stat};
use crate::stage::ideal_current;
use cyclerd_protocols::{Command, Engine, Measurement, Outcome};

/// What drives a channel's output during a test.
pub(super) enum Control {
    /// A procedure: the engine and the command it last gave.
    Procedure {
        engine: Box<Engine>,
        command: Command,
    },
    /// Direct mode: the output last set and when (clock time), for the 100 ms rule and the
    /// watchdog.
    Direct { output: Output, set_at: f64 },
}

/// The test on a channel, kept after it ends (its log and name stay until the next start).
pub(super) struct Test {
    pub(super) name: String,
    pub(super) control: Control,
    /// Seconds the test has run (suspended time does not count).
    pub(super) test_time_s: f64,
    /// Test time of the last logged record.
    pub(super) last_record_s: f64,
    /// Seconds between records (`None` for none).
    pub(super) record_every_s: Option<f64>,
    /// Direct mode's charge and energy counters (a procedure's come from the engine).
    pub(super) capacity_ah: f64,
    pub(super) energy_wh: f64,
}

/// The counters of a step that just ended, for the record that closes it.
#[derive(Clone, Copy)]
pub(super) struct StepEnd {
    pub(super) step: u16,
    pub(super) duration_s: f64,
    pub(super) capacity_ah: f64,
    pub(super) energy_wh: f64,
}

pub(super) struct Channel {
    pub(super) cell: Cell,
    /// Clock time up to which the cell has been integrated.
    pub(super) integrated_to: f64,
    pub(super) stat: u16,
    pub(super) rf1: u8,
    pub(super) rf2: u8,
    pub(super) selected: bool,
    pub(super) test: Option<Test>,
    /// Current flowing now, + = into the cell.
    pub(super) current_a: f64,
    /// The device-side record log of the test; entry `i` is record `i + 1`.
    pub(super) log: Log<Reading>,
    /// Why the engine faulted, when it did.
    pub(super) fault: Option<String>,
    /// Clock times of accepted direct outputs and the count of those refused as too fast.
    pub(super) outputs: Vec<f64>,
    pub(super) refused_outputs: u32,
}
impl Channel {
    pub(super) fn new(params: CellParams, now: f64) -> Channel {
        Channel {
            cell: Cell::new(params),
            integrated_to: now,
            stat: stat::AVAILABLE,
            rf1: rf1::AVAILABLE,
            rf2: 0,
            selected: false,
            test: None,
            current_a: 0.0,
            log: Log::default(),
            fault: None,
            outputs: Vec::new(),
            refused_outputs: 0,
        }
    }

    /// What `inputs` aux inputs read now: the cell's temperature, then the air around it.
    pub(super) fn aux_values(&self, inputs: u16) -> Vec<f64> {
        let params = self.cell.params();
        let air = params
            .air
            .as_ref()
            .map_or(params.ambient_c, |a| a.temperature_c());
        (0..inputs)
            .map(|i| {
                if i == 0 {
                    self.cell.temperature_c()
                } else {
                    air
                }
            })
            .collect()
    }

    /// The current the channel drives now.
    pub(super) fn regulated(&self, config: &SimConfig) -> f64 {
        match (&self.test, self.stat) {
            (Some(test), stat::ACTIVE) => match &test.control {
                Control::Procedure { command, .. } => ideal_current(&self.cell, command),
                Control::Direct { output, .. } => direct_current(&self.cell, output, config),
            },
            _ => 0.0,
        }
    }

    /// RF1 while active: the direction the output drives.
    pub(super) fn active_rf1(&self) -> u8 {
        if self.current_a > 1e-9 {
            rf1::CHARGE
        } else if self.current_a < -1e-9 {
            rf1::DISCHARGE
        } else {
            match &self.test {
                Some(Test {
                    control: Control::Direct { output, .. },
                    ..
                }) => match output.mode {
                    Mode::Charge => rf1::CHARGE,
                    Mode::Discharge => rf1::DISCHARGE,
                    Mode::Rest => rf1::REST,
                },
                _ => rf1::REST,
            }
        }
    }

    /// The (4,7) reading now; `ended` replaces the step counters in the record that closes a
    /// step.
    pub(super) fn reading(&self, clock: &Clock, ended: Option<StepEnd>) -> Reading {
        let voltage = self.cell.terminal_voltage(self.current_a);
        let (cycle, step, test_time, step_time, cap, energy) = match &self.test {
            None => (0, 0, 0.0, 0.0, 0.0, 0.0),
            Some(t) => match &t.control {
                Control::Procedure { engine, .. } => {
                    let s = engine.status();
                    (
                        s.cycle.saturating_sub(1),
                        procedure_step(engine, s.plan_index),
                        t.test_time_s,
                        t.test_time_s - s.step_start_s,
                        s.step_charge_ah + s.step_discharge_ah,
                        s.step_energy_wh,
                    )
                }
                // Direct mode is one step.
                Control::Direct { .. } => (
                    0,
                    1,
                    t.test_time_s,
                    t.test_time_s,
                    t.capacity_ah,
                    t.energy_wh,
                ),
            },
        };
        let (step, step_time, cap, energy) = ended.map_or((step, step_time, cap, energy), |e| {
            (e.step, e.duration_s, e.capacity_ah, e.energy_wh)
        });
        Reading {
            rf1: self.rf1,
            rf2: self.rf2,
            stat: self.stat,
            last_rec: self.log.count() as u32,
            cycle,
            step,
            test_time_s: test_time as f32,
            step_time_s: step_time as f32,
            capacity_ah: cap as f32,
            energy_wh: energy as f32,
            // A magnitude, its direction in RF1, as in Maccor's data files.
            current_a: self.current_a.abs() as f32,
            voltage_v: voltage as f32,
            tester_time_ms: Some((clock.unix_time_s() * 1000.0) as u64),
        }
    }

    pub(super) fn log_record(&mut self, clock: &Clock, ended: Option<StepEnd>) {
        let mut r = self.reading(clock, ended);
        r.last_rec = self.log.count() as u32 + 1;
        self.log.push(r);
        if let Some(t) = &mut self.test {
            t.last_record_s = t.test_time_s;
        }
    }

    pub(super) fn set_state(&mut self, stat_code: u16, rf1_code: u8, rf2_code: u8) {
        self.stat = stat_code;
        self.rf1 = rf1_code;
        self.rf2 = rf2_code;
        if stat_code != stat::ACTIVE {
            self.current_a = 0.0;
        }
    }

    /// Integrates the channel up to clock time `now`.
    pub(super) fn advance(&mut self, now: f64, config: &SimConfig, clock: &Clock) {
        while self.integrated_to < now {
            let active = self.stat == stat::ACTIVE && self.test.is_some();
            if !active {
                // Resting: exact for any interval.
                self.cell.step(0.0, now - self.integrated_to);
                self.integrated_to = now;
                self.current_a = 0.0;
                break;
            }
            let Some(test) = &self.test else { break };
            let mut end = now.min(self.integrated_to + MAX_SUBSTEP_S);
            if let Some(every) = test.record_every_s {
                let due = self.integrated_to + (test.last_record_s + every - test.test_time_s);
                if due <= self.integrated_to + TIME_EPS_S {
                    self.log_record(clock, None);
                    continue;
                }
                end = end.min(due);
            }
            if let (Control::Direct { set_at, .. }, Some(wd)) =
                (&test.control, config.direct_watchdog_s)
            {
                let deadline = set_at + wd;
                if deadline <= self.integrated_to {
                    // MacNetDirectModeWD: an unfed direct-mode channel suspends.
                    self.set_state(stat::SUSPENDED, rf1::SUSPENDED, rf2::SUSPEND_OR_PAUSE);
                    self.log_record(clock, None);
                    continue;
                }
                end = end.min(deadline);
            }
            let dt = end - self.integrated_to;
            self.current_a = self.regulated(config);
            let v_before = self.cell.terminal_voltage(self.current_a);
            self.cell.step(self.current_a, dt);
            self.integrated_to = end;
            let v = self.cell.terminal_voltage(self.current_a);
            let i = self.current_a;
            let temperature = self.cell.temperature_c();
            let Some(test) = &mut self.test else { break };
            test.test_time_s += dt;
            let t = test.test_time_s;
            let outcome = match &mut test.control {
                Control::Direct { .. } => {
                    test.capacity_ah += i.abs() * dt / 3600.0;
                    test.energy_wh += (v_before + v) / 2.0 * i.abs() * dt / 3600.0;
                    None
                }
                Control::Procedure { engine, command } => {
                    let update = engine.update(&Measurement {
                        chamber_c: None,
                        test_time_s: t,
                        voltage_v: v,
                        current_a: i,
                        temperature_c: Some(temperature),
                    });
                    *command = update.command;
                    let ended = update.ended_step.map(|s| StepEnd {
                        step: procedure_step(engine, s.plan_index),
                        duration_s: s.duration_s,
                        capacity_ah: s.charge_ah + s.discharge_ah,
                        energy_wh: s.energy_wh,
                    });
                    Some((update.step_changed, ended, update.outcome))
                }
            };
            if let Some((step_changed, ended, outcome)) = outcome {
                if step_changed {
                    // The record that ends a step shows its cutoff and its totals, while the
                    // step's current still flows.
                    self.current_a = i;
                    self.rf1 = self.active_rf1();
                    self.log_record(clock, ended);
                }
                match outcome {
                    Some(Outcome::Finished) => {
                        self.set_state(stat::COMPLETED, rf1::COMPLETE, rf2::NORMAL_END)
                    }
                    Some(Outcome::Faulted(reason)) => {
                        let code = if reason.contains("voltage") {
                            rf2::VOLTAGE_SAFETY
                        } else {
                            rf2::ABSOLUTE_SAFETY
                        };
                        self.fault = Some(reason);
                        self.set_state(stat::PROBLEM, rf1::PROBLEM, code);
                        self.log_record(clock, None);
                    }
                    None => {}
                }
            }
            if self.stat == stat::ACTIVE {
                self.current_a = self.regulated(config);
                self.rf1 = self.active_rf1();
            }
        }
    }

    /// The channel can take a new test.
    pub(super) fn free(&self) -> bool {
        matches!(self.stat, stat::AVAILABLE | stat::SELECTED)
    }

    pub(super) fn begin(
        &mut self,
        name: String,
        control: Control,
        record_every_s: Option<f64>,
        clock: &Clock,
    ) {
        self.test = Some(Test {
            name,
            control,
            test_time_s: 0.0,
            last_record_s: 0.0,
            record_every_s,
            capacity_ah: 0.0,
            energy_wh: 0.0,
        });
        self.log.clear();
        self.fault = None;
        self.outputs.clear();
        self.refused_outputs = 0;
        self.selected = false;
        self.set_state(stat::ACTIVE, rf1::REST, 0);
        self.rf1 = self.active_rf1();
        self.log_record(clock, None);
    }
}

/// What a direct-mode output drives into `cell`: current, voltage, power and resistance limit
/// each other; a value outside the channel's range is no limit.
pub(super) fn direct_current(cell: &Cell, out: &Output, config: &SimConfig) -> f64 {
    let within = |x: f32, max: f64| {
        let x = f64::from(x);
        (x.is_finite() && (0.0..=max).contains(&x)).then_some(x)
    };
    let max_i = config.max_current_a;
    let i_set = within(out.current_a, max_i).unwrap_or(max_i);
    let v_set = within(out.voltage_v, config.max_voltage_v);
    let p_set = within(out.power_w, max_i * config.max_voltage_v);
    let v_now = cell.terminal_voltage(0.0).max(0.1);
    match out.mode {
        Mode::Rest => 0.0,
        Mode::Charge => {
            let mut i = i_set;
            if let Some(v) = v_set {
                i = i.min(cell.current_for_voltage(v).max(0.0));
            }
            if let Some(p) = p_set {
                i = i.min(p / v_now);
            }
            i.max(0.0)
        }
        Mode::Discharge => {
            let mut i = i_set;
            if let Some(v) = v_set {
                i = i.min((-cell.current_for_voltage(v)).max(0.0));
            }
            if let Some(p) = p_set {
                i = i.min(p / v_now);
            }
            if out.resistance_ohm > 0.0 {
                i = i.min(v_now / f64::from(out.resistance_ohm));
            }
            -i.max(0.0)
        }
    }
}

/// The procedure's own step number (from 1, counting its `Do`, `Loop` and `AdvCycle` steps, as
/// a Maccor logs it) of plan step `plan_index` of the imported procedure: its action steps
/// keep their procedure step as their path (`step 7`); anything else, the plan index + 1.
fn procedure_step(engine: &Engine, plan_index: usize) -> u16 {
    match engine.plan().steps.get(plan_index) {
        Some(cyclerd_protocols::PlanStep::Action(a)) => a
            .path
            .strip_prefix("step ")
            .and_then(|n| n.parse().ok())
            .unwrap_or((plan_index + 1) as u16),
        _ => (plan_index + 1) as u16,
    }
}
