//! Following a native cycler's run through the plan: a cycler that runs a compiled schedule
//! logs its own step numbers, which differ per target (Maccor counts its `Do`/`Loop`/`AdvCycle`
//! steps, Arbin its `Set Variable(s)` steps, Neware its cycle steps) and its own cycle counter,
//! which counts where the schedule's cycle increments sit rather than by the engine's rule.
//! [`StepFollower`] turns each record's native step into the plan step (by the compiler's
//! [`StepMap`]), counts step changes per test as the engine does, and numbers cycles by the
//! engine's rule ([`super::cycles`]) from the sequence of plan steps, so a native test stores
//! the same (cycle, plan step) sequence as the same protocol stepped by the daemon.

use serde::{Deserialize, Serialize};

use super::cycles::{CycleMap, CycleOwner, moves_charge};
use crate::compile::StepMap;
use crate::plan::{Plan, PlanStep};

/// Where a record belongs in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Index of the plan's action step the record was taken in.
    pub plan_step: usize,
    /// Step count of the test: 1 for the first step, one more at every step change.
    pub step_count: u32,
    /// Cycle number by the engine's rule, from 1.
    pub cycle: u32,
    /// This record begins a new step (not for the test's first record).
    pub changed: bool,
}

/// Numbers cycles by the engine's rule from the plan steps a run enters, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleFollower {
    cycle: u32,
    owner: Option<CycleOwner>,
}

impl Default for CycleFollower {
    fn default() -> Self {
        CycleFollower {
            cycle: 1,
            owner: None,
        }
    }
}

impl CycleFollower {
    /// The cycle in progress.
    pub fn cycle(&self) -> u32 {
        self.cycle
    }

    /// Plan action step `i` is entered after `previous` (`None` at the test's start);
    /// `again` says the run entered the same step anew (a new pass of a one-step loop body).
    /// Returns the cycle step `i` is in.
    pub fn enter(&mut self, plan: &Plan, i: usize, previous: Option<usize>, again: bool) -> u32 {
        let cycles = CycleMap::new(&plan.steps);
        let counting = plan
            .steps
            .iter()
            .enumerate()
            .find_map(|(s, step)| match *step {
                PlanStep::LoopStart { end, .. } if cycles.counts(s) && s < i && i < end => {
                    Some((s, end))
                }
                _ => None,
            });
        match counting {
            Some((start, end)) => {
                // A new pass: the loop entered from outside, or its body started over.
                let new_pass = match previous {
                    Some(p) if start < p && p < end => i < p || (i == p && again),
                    _ => true,
                };
                if new_pass || self.owner != Some(CycleOwner::Pass) {
                    if self.owner.is_some() {
                        self.cycle += 1;
                    }
                    self.owner = Some(CycleOwner::Pass);
                }
            }
            None => {
                let charges = match plan.steps.get(i) {
                    Some(PlanStep::Action(a)) => moves_charge(a),
                    _ => false,
                };
                if charges {
                    if self.owner == Some(CycleOwner::Pass) {
                        self.cycle += 1;
                    }
                    self.owner = Some(CycleOwner::Stretch);
                }
            }
        }
        self.cycle
    }
}

/// Whether plan step `i` is the only action of the innermost loop around it.
fn alone_in_loop(plan: &Plan, i: usize) -> bool {
    let innermost = plan
        .steps
        .iter()
        .enumerate()
        .filter_map(|(s, step)| match *step {
            PlanStep::LoopStart { end, .. } if s < i && i < end => Some((s, end)),
            _ => None,
        })
        .next_back();
    innermost.is_some_and(|(s, end)| {
        plan.steps[s + 1..end]
            .iter()
            .filter(|x| matches!(x, PlanStep::Action(_)))
            .count()
            == 1
    })
}

/// Follows a native run's records through the plan (see the module documentation). Its
/// state is serialisable, so a runner checkpoints it with the records it accounts for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepFollower {
    /// The compiler's map from the schedule's step numbers to plan steps.
    map: StepMap,
    /// Native step and cycle of the last record that ran a plan step.
    native: Option<(u32, u32)>,
    /// Plan step and step count of the last such record.
    plan_step: Option<usize>,
    step_count: u32,
    cycles: CycleFollower,
    /// A new schedule (the next segment of a supervised test) numbers its steps anew: its
    /// first record is a step change from the last plan step, whatever its native numbers.
    #[serde(default)]
    restarted: bool,
}

impl StepFollower {
    pub fn new(map: StepMap) -> StepFollower {
        StepFollower {
            map,
            ..StepFollower::default()
        }
    }

    /// The compiler's step map this follower translates with.
    pub fn map(&self) -> &StepMap {
        &self.map
    }

    /// Follows the records of a new schedule (the next segment of a supervised test), whose
    /// step numbers `map` places: step count and cycles go on from the last record.
    pub fn restart(&mut self, map: StepMap) {
        self.map = map;
        self.native = None;
        self.restarted = true;
    }

    /// Where the last record was, once there was one.
    pub fn last(&self) -> Option<Placed> {
        Some(Placed {
            plan_step: self.plan_step?,
            step_count: self.step_count,
            cycle: self.cycles.cycle(),
            changed: false,
        })
    }

    /// Places the next record, logged by the cycler in its step `native_step` and cycle
    /// `native_cycle`. A record of a step that runs no plan action (a loop or cycle step)
    /// stays in the plan step before it; one before any plan step, in the plan's first action.
    pub fn place(&mut self, plan: &Plan, native_step: u32, native_cycle: u32) -> Placed {
        let Some(i) = self.map.plan_step(native_step) else {
            return self.last().unwrap_or_else(|| {
                let first = plan
                    .steps
                    .iter()
                    .position(|s| matches!(s, PlanStep::Action(_)))
                    .unwrap_or(0);
                self.enter(plan, first, None)
            });
        };
        let native = (native_step, native_cycle);
        let restarted = std::mem::take(&mut self.restarted);
        match self.native.replace(native) {
            None if restarted && self.plan_step.is_some() => {
                let previous = self.plan_step;
                let mut placed = self.enter(plan, i, previous.map(|p| (p, p == i)));
                placed.changed = true;
                placed
            }
            None => self.enter(plan, i, None),
            Some(before) if before == native => self.last().expect("a step was entered"),
            // The same cycler step with another cycle number: the cycler's counter moved on,
            // which is a new step only where a loop's body is this one step (it ran again).
            // Elsewhere it is no change: a record that closes a step may already carry the
            // next pass's cycle number.
            Some((step_before, _)) if step_before == native_step && !alone_in_loop(plan, i) => {
                self.last().expect("a step was entered")
            }
            Some((step_before, _)) => {
                let again = step_before == native_step;
                let previous = self.plan_step;
                let mut placed = self.enter(plan, i, previous.map(|p| (p, again)));
                placed.changed = true;
                placed
            }
        }
    }

    fn enter(&mut self, plan: &Plan, i: usize, previous: Option<(usize, bool)>) -> Placed {
        let cycle = self.cycles.enter(
            plan,
            i,
            previous.map(|(p, _)| p),
            previous.is_some_and(|(_, again)| again),
        );
        self.plan_step = Some(i);
        self.step_count += 1;
        Placed {
            plan_step: i,
            step_count: self.step_count,
            cycle,
            changed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{Target, compile_mapped};

    #[test]
    fn maccor_records_become_plan_steps_step_counts_and_the_engines_cycles() {
        let source = "protocol: f\nversion: 1\nparams: {capacity: 2.5 Ah}\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nsteps:\n  - \"Charge at C/2 until 4.1 V\"\n  - repeat: 2\n    cycle: true\n    steps:\n      - \"Discharge at C/2 until 3.3 V\"\n      - \"Charge at C/2 until 4.1 V\"\n  - \"Rest for 10 minutes\"\n";
        let plan = Plan::from_yaml(source, "f.yaml").unwrap();
        let map = compile_mapped(&plan, Target::Maccor).unwrap().step_map;
        let mut f = StepFollower::new(map);
        // Maccor: 1 Charge, 2 Do, 3 Dischrge, 4 Charge, 5 AdvCycle, 6 Loop, 7 Rest, 8 End; its
        // own cycle counter from 0, advanced by AdvCycle at the end of every pass.
        // The record that closes a pass's last step may carry the next pass's cycle already.
        let records = [
            (1, 0),
            (1, 0),
            (3, 0),
            (4, 0),
            (4, 1),
            (3, 1),
            (4, 1),
            (6, 2),
            (7, 2),
        ];
        let placed: Vec<(usize, u32, u32, bool)> = records
            .iter()
            .map(|&(step, cycle)| {
                let p = f.place(&plan, step, cycle);
                (p.plan_step, p.step_count, p.cycle, p.changed)
            })
            .collect();
        assert_eq!(
            placed,
            [
                (0, 1, 1, false),
                (0, 1, 1, false),
                (2, 2, 2, true),
                (3, 3, 2, true),
                (3, 3, 2, false),
                (2, 4, 3, true),
                (3, 5, 3, true),
                // A record of the Loop step stays in the step before it.
                (3, 5, 3, false),
                (5, 6, 3, true),
            ]
        );
    }

    #[test]
    fn a_one_step_loop_body_run_again_is_a_new_step_and_a_new_cycle() {
        let source = "protocol: f\nversion: 1\nparams: {capacity: 2.5 Ah}\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nsteps:\n  - repeat: 3\n    cycle: true\n    steps:\n      - \"Discharge at C/2 for 1 minute\"\n  - \"Rest for 10 minutes\"\n";
        let plan = Plan::from_yaml(source, "f.yaml").unwrap();
        let map = compile_mapped(&plan, Target::Neware).unwrap().step_map;
        let mut f = StepFollower::new(map);
        let placed: Vec<(u32, u32)> = [(1, 1), (1, 2), (1, 3), (3, 3)]
            .iter()
            .map(|&(s, c)| {
                let p = f.place(&plan, s, c);
                (p.step_count, p.cycle)
            })
            .collect();
        assert_eq!(placed, [(1, 1), (2, 2), (3, 3), (4, 3)]);
    }

    #[test]
    fn a_neware_cycle_step_written_for_a_loop_that_does_not_count_cycles_leaves_the_protocols_cycles_alone()
     {
        // Neware: 1 charge, 2 discharge, 3 rest, 4 cycle (x3, cycle: false), 5 rest, 6 end; the
        // cycler's counter moves on at every pass of the loop.
        let source = "protocol: f\nversion: 1\nparams: {capacity: 2.5 Ah}\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nsteps:\n  - \"Charge at C/2 until 4.1 V\"\n  - repeat: 3\n    steps:\n      - \"Discharge at C/2 for 1 minute\"\n      - \"Rest for 1 minute\"\n  - \"Rest for 10 minutes\"\n";
        let plan = Plan::from_yaml(source, "f.yaml").unwrap();
        let map = compile_mapped(&plan, Target::Neware).unwrap().step_map;
        let steps = [1, 2, 3, 2, 3, 2, 3, 5];
        let follow = |counter: &dyn Fn(usize) -> u32| -> Vec<(usize, u32, u32)> {
            let mut f = StepFollower::new(map.clone());
            steps
                .iter()
                .enumerate()
                .map(|(k, &s)| {
                    let p = f.place(&plan, s, counter(k));
                    (p.plan_step, p.step_count, p.cycle)
                })
                .collect()
        };
        let counting = follow(&|k| [1, 1, 1, 2, 2, 3, 3, 4][k]);
        assert_eq!(counting, follow(&|_| 1));
        assert_eq!(
            counting.iter().map(|p| p.1).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
    }
}
