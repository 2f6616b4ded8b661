//! What `check` says: every step and daemon-counted loop of a plan on a target, in words.

use super::{Finding, How, Role, Supervision};
use crate::plan::{ActionStep, Condition, Plan, PlanStep};

impl Supervision {
    /// What runs natively, what the daemon decides (and how fast) and what is impossible, step
    /// by step; impossible steps come from [`Supervision::new`]'s errors, so a caller lists
    /// both.
    pub fn findings(&self, plan: &Plan) -> Vec<Finding> {
        let mut out = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            match (step, self.role(i)) {
                (PlanStep::Action(a), Role::Native) => out.push(Finding {
                    path: a.path.clone(),
                    description: a.description.clone(),
                    how: How::Native,
                }),
                (PlanStep::Action(a), Role::Watched { watched, chamber }) => {
                    let mut parts = Vec::new();
                    if *chamber {
                        parts.push(
                            "the daemon sets the chamber and waits for it to settle while the \
                             cycler rests the cell, then starts the next segment"
                                .to_string(),
                        );
                    }
                    if !watched.is_empty() {
                        parts.push(format!(
                            "the daemon checks {} on every record it downloads and stops the \
                             cycler's step when it holds (reaction: one poll, 100 ms by default, \
                             after the cycler logs the record; this step logs {})",
                            watched_text(a, watched),
                            record_text(a)
                        ));
                    }
                    out.push(Finding {
                        path: a.path.clone(),
                        description: a.description.clone(),
                        how: How::Supervised(parts.join("; ")),
                    });
                }
                (PlanStep::LoopStart { count, .. }, Role::DaemonLoop(why)) => {
                    out.push(Finding {
                        path: loop_path(plan, i),
                        description: format!("loop of at most {count} passes"),
                        how: How::Supervised(if why.starts_with("its exit") {
                            format!(
                                "the daemon counts the passes and checks {why} at the end of \
                                 every pass; the cycler runs each pass's steps"
                            )
                        } else {
                            format!(
                                "the daemon counts the passes ({why}); the cycler runs each \
                                 pass's steps"
                            )
                        }),
                    });
                }
                _ => {}
            }
        }
        out
    }
}

/// Where a loop is in the protocol: its first step's path.
pub(super) fn loop_path(plan: &Plan, start: usize) -> String {
    plan.steps[start..]
        .iter()
        .find_map(|s| match s {
            PlanStep::Action(a) => Some(format!("the loop at {}", a.path)),
            _ => None,
        })
        .unwrap_or_else(|| format!("the loop at plan index {start}"))
}

/// The watched conditions of `a`, as a phrase.
pub(super) fn watched_text(a: &ActionStep, watched: &[usize]) -> String {
    watched
        .iter()
        .filter_map(|&n| a.terminations.get(n))
        .map(|t| condition_text(&t.condition))
        .collect::<Vec<_>>()
        .join(" or ")
}

pub(super) fn condition_text(c: &Condition) -> String {
    match *c {
        Condition::VoltageAtLeast(v) => format!("V >= {v} V"),
        Condition::VoltageAtMost(v) => format!("V <= {v} V"),
        Condition::CurrentMagnitudeAtMost(x) => format!("|I| <= {x} A"),
        Condition::StepTime(s) => format!("t >= {s} s"),
        Condition::TestTime(s) => format!("test time >= {s} s"),
        Condition::StepCapacity(q) => format!("step capacity >= {q} Ah"),
        Condition::StepEnergy(e) => format!("step energy >= {e} Wh"),
        Condition::TemperatureAtLeast(x) => format!("T >= {x} degC"),
        Condition::TemperatureAtMost(x) => format!("T <= {x} degC"),
        Condition::VoltageRateMagnitudeAtMost(x) => format!("|dV/dt| <= {x} V/s"),
        Condition::VoltageRateMagnitudeAtLeast(x) => format!("|dV/dt| >= {x} V/s"),
    }
}

pub(super) fn loop_condition_text(c: &crate::plan::LoopCondition) -> String {
    use crate::plan::LoopCondition as L;
    match *c {
        L::DischargeCapacityBelowFractionOfFirst(x) => {
            format!("discharge capacity < {}% of the first pass's", x * 100.0)
        }
        L::DischargeCapacityBelow(q) => format!("discharge capacity < {q} Ah"),
        L::CycleAtLeast(n) => format!("cycle >= {n}"),
    }
}

pub(super) fn record_text(a: &ActionStep) -> String {
    let r = a.record.or_native_default();
    let mut parts = Vec::new();
    if let Some(s) = r.every_s {
        parts.push(format!("every {s} s"));
    }
    if let Some(v) = r.dv_v {
        parts.push(format!("on {} mV", v * 1000.0));
    }
    if let Some(i) = r.di_a {
        parts.push(format!("on {} mA", i * 1000.0));
    }
    parts.join(", ")
}
