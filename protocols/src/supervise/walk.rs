//! The daemon's control flow between segments: the loops it counts and where an end leads,
//! by the engine's rules (`engine/run.rs`), so a supervised test takes the same path as the
//! same plan stepped by the daemon.

use super::Supervision;
use crate::plan::{Goto, LoopCondition, Plan, PlanStep};
use serde::{Deserialize, Serialize};

/// Where the walk leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start the segment beginning at this plan index.
    Segment(usize),
    /// The test is over.
    End,
}

/// The loops the daemon is in, serialisable so a re-attached test goes on counting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Walker {
    loops: Vec<Frame>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Frame {
    /// Plan index of the loop's start.
    start: usize,
    /// Pass in progress, from 1.
    pass: u32,
    /// The test's discharge capacity when the pass began, Ah.
    pass_start_discharge_ah: f64,
    /// The first pass's discharge capacity, once it ended (retention exits compare with it).
    first_pass_discharge_ah: Option<f64>,
}

impl Walker {
    /// Where a segment's end leads: [`Goto::Next`] on from `after` (the index after the
    /// segment), a jump to its target, or the end. `discharge_ah` is the test's discharge
    /// capacity so far and `cycle` the cycle in progress, for loop exits.
    pub fn follow(
        &mut self,
        sup: &Supervision,
        plan: &Plan,
        goto: Goto,
        after: usize,
        discharge_ah: f64,
        cycle: u32,
    ) -> Next {
        match goto {
            Goto::Next => self.walk(sup, plan, after, discharge_ah, cycle),
            Goto::End => {
                self.loops.clear();
                Next::End
            }
            Goto::Step(target) => {
                self.leave_loops_not_containing(plan, target);
                self.walk(sup, plan, target, discharge_ah, cycle)
            }
        }
    }

    /// From plan index `i` through the loop markers the daemon counts to the next segment.
    pub fn walk(
        &mut self,
        sup: &Supervision,
        plan: &Plan,
        mut i: usize,
        discharge_ah: f64,
        cycle: u32,
    ) -> Next {
        loop {
            match plan.steps.get(i) {
                None | Some(PlanStep::End) => {
                    self.loops.clear();
                    return Next::End;
                }
                Some(PlanStep::LoopStart { .. }) if sup.is_daemon_loop(i) => {
                    self.loops.push(Frame {
                        start: i,
                        pass: 1,
                        pass_start_discharge_ah: discharge_ah,
                        first_pass_discharge_ah: None,
                    });
                    i += 1;
                }
                Some(&PlanStep::LoopEnd { start }) => {
                    let (count, until) = match plan.steps.get(start) {
                        Some(PlanStep::LoopStart { count, until, .. }) => {
                            (*count, until.as_slice())
                        }
                        _ => (1, &[][..]),
                    };
                    // A jump into the middle of a loop arrives without a frame: that is pass 1.
                    if self.loops.last().map(|f| f.start) != Some(start) {
                        self.loops.push(Frame {
                            start,
                            pass: 1,
                            pass_start_discharge_ah: discharge_ah,
                            first_pass_discharge_ah: None,
                        });
                    }
                    let again = self.loops.last_mut().is_some_and(|f| {
                        let pass_q = discharge_ah - f.pass_start_discharge_ah;
                        let first = *f.first_pass_discharge_ah.get_or_insert(pass_q);
                        let exit = until.iter().any(|c| match *c {
                            LoopCondition::DischargeCapacityBelowFractionOfFirst(x) => {
                                f.pass > 1 && pass_q < x * first
                            }
                            LoopCondition::DischargeCapacityBelow(x) => pass_q < x,
                            LoopCondition::CycleAtLeast(n) => cycle >= n,
                        });
                        f.pass_start_discharge_ah = discharge_ah;
                        if f.pass < count && !exit {
                            f.pass += 1;
                            true
                        } else {
                            false
                        }
                    });
                    if again {
                        i = start + 1;
                    } else {
                        self.loops.pop();
                        i += 1;
                    }
                }
                Some(_) => return Next::Segment(i),
            }
        }
    }

    /// The pass in progress of the innermost loop the daemon counts, with its start index.
    pub fn pass(&self) -> Option<(usize, u32)> {
        self.loops.last().map(|f| (f.start, f.pass))
    }

    fn leave_loops_not_containing(&mut self, plan: &Plan, target: usize) {
        while let Some(frame) = self.loops.last() {
            let end = match plan.steps.get(frame.start) {
                Some(&PlanStep::LoopStart { end, .. }) => end,
                _ => frame.start,
            };
            if frame.start < target && target < end {
                break;
            }
            self.loops.pop();
        }
    }
}
