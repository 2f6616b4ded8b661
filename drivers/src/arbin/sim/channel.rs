//! One simulated channel: the test it runs on its cell, how that test ended, its status code
//! and its channel-info block.

use crate::arbin::wire::{self, AuxValue, ChannelInfo, DataRecord, status};
use crate::cycler_sim::{ChannelCell, PlanRun, RunState, Sample};
use cyclerd_protocols::Outcome;

/// How a test ended: the status it leaves the channel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EndState {
    Finished,
    /// Stopped by CTI or an operator: the channel is Idle again.
    Stopped,
    Unsafe,
    Error,
}

/// How a test ended, and the exit condition the channel info shows for it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Ended {
    /// The status the end leaves.
    pub(super) state: EndState,
    /// Why it ended, in the console's words (or the engine's reason).
    pub(super) exit_condition: String,
}

impl From<Outcome> for Ended {
    fn from(outcome: Outcome) -> Ended {
        match outcome {
            Outcome::Finished => Ended {
                state: EndState::Finished,
                exit_condition: "Schedule finished".into(),
            },
            Outcome::Faulted(reason) => {
                tracing::debug!("arbin sim: schedule safety tripped: {reason}");
                Ended {
                    state: EndState::Unsafe,
                    exit_condition: reason,
                }
            }
        }
    }
}

/// One test a channel runs or ran (kept until the next start).
pub(super) struct Test {
    /// The test name START gave.
    pub(super) name: String,
    /// The schedule's step number (from 1) of each plan step (0 for loop markers and the
    /// end).
    pub(super) step_ids: Vec<u32>,
    /// The schedule's plan running on the channel's cell, with the test's log.
    pub(super) run: PlanRun<Ended>,
}

impl Test {
    /// The schedule step number of plan step `plan_index`.
    pub(super) fn step(&self, plan_index: usize) -> u32 {
        self.step_ids.get(plan_index).copied().unwrap_or(0)
    }

    /// The record of `sample` in the GET_RECORDS layout.
    pub(super) fn record(&self, sample: &Sample) -> DataRecord {
        DataRecord {
            index: sample.index,
            test_time_s: sample.test_time_s,
            step_time_s: sample.step_time_s,
            voltage_v: sample.voltage_v as f32,
            current_a: sample.current_a as f32,
            step_capacity_ah: sample.step_capacity_ah as f32,
            step_energy_wh: sample.step_energy_wh as f32,
            temperature_c: sample.temperature_c.map_or(f32::NAN, |t| t as f32),
            step: self.step(sample.plan_index),
            cycle: sample.cycle,
        }
    }
}

pub(super) struct Channel {
    /// The cell on the channel's terminals.
    pub(super) cell: ChannelCell,
    /// The schedule the next START runs.
    pub(super) assigned: Option<String>,
    /// The running or last test, kept until the next START.
    pub(super) test: Option<Test>,
}

impl Channel {
    pub(super) fn current_a(&self) -> f64 {
        self.test
            .as_ref()
            .map_or(0.0, |t| t.run.current_a(self.cell.cell()))
    }

    pub(super) fn status(&self) -> i16 {
        let Some(t) = &self.test else {
            return status::IDLE;
        };
        match t.run.state() {
            RunState::Running => match self.current_a() {
                i if i > 0.0 => status::CHARGE,
                i if i < 0.0 => status::DISCHARGE,
                _ => status::REST,
            },
            RunState::Paused => status::PAUSE,
            RunState::Ended(e) => match e.state {
                EndState::Finished => status::FINISHED,
                EndState::Stopped => status::IDLE,
                EndState::Unsafe => status::UNSAFE,
                EndState::Error => status::ERROR,
            },
        }
    }

    /// Integrates the cell (and runs the test) up to clock time `now`.
    pub(super) fn advance(&mut self, now: f64) {
        let run = self.test.as_mut().map(|t| &mut t.run);
        self.cell.advance(run, now);
    }

    /// Ends the active test in `state` with `exit_condition`. False when no test is active.
    pub(super) fn end_test(&mut self, state: EndState, exit_condition: &str) -> bool {
        let ended = Ended {
            state,
            exit_condition: exit_condition.into(),
        };
        self.test
            .as_mut()
            .is_some_and(|t| t.run.end(&self.cell, ended))
    }

    /// The channel block of GET_CHANNELS_INFO.
    pub(super) fn info(&self, index: u32, with_aux: bool) -> ChannelInfo {
        let i = self.current_a();
        let v = self.cell.cell().terminal_voltage(i);
        let mut info = ChannelInfo {
            channel: index,
            status: self.status(),
            schedule: self.assigned.clone().unwrap_or_default(),
            voltage_v: v as f32,
            current_a: i as f32,
            power_w: (v * i) as f32,
            ..ChannelInfo::default()
        };
        if with_aux {
            info.aux[wire::aux::TEMPERATURE] = vec![AuxValue {
                value: self.cell.cell().temperature_c() as f32,
                dxdt: 0.0,
            }];
        }
        if let Some(t) = &self.test {
            let s = t.run.engine().status();
            info.test_name = t.name.clone();
            if let RunState::Ended(e) = t.run.state() {
                info.exit_condition = e.exit_condition.clone();
            }
            info.step_and_cycle_text = format!("Step {}, Cycle {}", t.step(s.plan_index), s.cycle);
            info.test_time_s = t.run.test_time_s();
            info.step_time_s = (t.run.test_time_s() - s.step_start_s).max(0.0);
            info.charge_capacity_ah = s.charge_capacity_ah as f32;
            info.discharge_capacity_ah = s.discharge_capacity_ah as f32;
            info.charge_energy_wh = s.charge_energy_wh as f32;
            info.discharge_energy_wh = s.discharge_energy_wh as f32;
        }
        info
    }
}
