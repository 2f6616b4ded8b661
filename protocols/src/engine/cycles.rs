//! The cycle rule, the one meaning of "cycle" on every target:
//!
//! - Every pass of a counting loop is exactly one cycle. A counting loop is a `cycle: true`
//!   loop with no `cycle: true` loop inside it: of nested cycling loops only the innermost
//!   counts, and the outer loop's own steps are treated like steps outside cycling loops.
//! - Steps outside counting loops that charge or discharge the cell (a capacity check before
//!   cycle life, a reference test between ageing blocks) form a cycle of their own, which
//!   lasts until the next pass of a counting loop begins.
//! - Rests and chamber waits outside counting loops never begin a cycle: they stay in the
//!   cycle in progress; before anything else has begun a cycle they are in cycle 1 with
//!   what follows.
//! - Cycles are numbered from 1, and the number grows by one whenever a new cycle begins.
//!
//! So a rest, a formation of 3 passes, a rest and N cycle-life passes are 3 + N cycles, each
//! with one charge and one discharge, and no cycle spans two loops' passes.

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::plan::{ActionStep, Control, PlanStep};

/// What the cycle in progress is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum CycleOwner {
    /// A pass of a counting loop.
    Pass,
    /// Charging or discharging steps outside counting loops.
    Stretch,
}

/// Which loops count cycles and which plan steps lie inside one, computed once per plan.
#[derive(Debug, Clone, Default)]
pub(super) struct CycleMap {
    /// Per plan index: a `LoopStart` of a counting loop.
    counts: Vec<bool>,
    /// Per plan index: the step lies inside a counting loop.
    inside: Vec<bool>,
}

impl CycleMap {
    pub(super) fn new(steps: &[PlanStep]) -> CycleMap {
        let n = steps.len();
        let mut counts = vec![false; n];
        let mut inside = vec![false; n];
        for (i, s) in steps.iter().enumerate() {
            if let PlanStep::LoopStart {
                cycle: true, end, ..
            } = *s
            {
                let end = end.min(n.saturating_sub(1)).max(i);
                let nested = steps[i + 1..end]
                    .iter()
                    .any(|s| matches!(s, PlanStep::LoopStart { cycle: true, .. }));
                if !nested {
                    counts[i] = true;
                    inside[i + 1..end].iter_mut().for_each(|x| *x = true);
                }
            }
        }
        CycleMap { counts, inside }
    }

    /// Whether the loop starting at `start` counts cycles.
    pub(super) fn counts(&self, start: usize) -> bool {
        self.counts.get(start).copied().unwrap_or(false)
    }

    /// Whether plan step `i` lies inside a counting loop.
    pub(super) fn inside(&self, i: usize) -> bool {
        self.inside.get(i).copied().unwrap_or(false)
    }
}

/// Whether a step moves charge into or out of the cell (everything but rests, chamber
/// waits and zero-current steps).
pub(super) fn moves_charge(a: &ActionStep) -> bool {
    match a.control {
        Control::Rest | Control::Chamber { .. } => false,
        Control::Current { amps } => amps != 0.0,
        _ => true,
    }
}

impl Engine {
    /// A pass of a counting loop begins: it is a new cycle unless nothing has begun one yet.
    pub(super) fn begin_pass(&mut self) {
        if self.state.cycle_owner.is_some() {
            self.state.status.cycle += 1;
        }
        self.state.cycle_owner = Some(CycleOwner::Pass);
    }

    /// Action step `i` is entered: a step inside a counting loop reached without its loop's
    /// start (a jump into the body) begins a pass; a charging or discharging step outside
    /// counting loops after a pass begins a cycle of its own.
    pub(super) fn enter_for_cycles(&mut self, i: usize, moves_charge: bool) {
        if self.cycles.inside(i) {
            if self.state.cycle_owner != Some(CycleOwner::Pass) {
                self.begin_pass();
            }
        } else if moves_charge {
            match self.state.cycle_owner {
                Some(CycleOwner::Pass) => self.state.status.cycle += 1,
                Some(CycleOwner::Stretch) | None => {}
            }
            self.state.cycle_owner = Some(CycleOwner::Stretch);
        }
    }
}
