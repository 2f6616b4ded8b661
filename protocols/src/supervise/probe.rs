//! Whether a target can say a step or a loop: the compiler itself is asked, with a one-step
//! (or one-loop) plan, so what supervision leaves native is exactly what compiles.

use crate::compile::{self, CompileError, Target};
use crate::plan::{ActionStep, Condition, Control, Goto, Plan, PlanStep, Termination};

/// Compiles `a` alone with `control` and `conditions` (none: a step-time end) as a one-step
/// plan: whether `target` can say it.
pub(super) fn probe(
    plan: &Plan,
    target: Target,
    a: &ActionStep,
    control: Control,
    conditions: &[Condition],
) -> Result<(), CompileError> {
    // A control alone is tried with the end it is usually given.
    let usual = match control {
        Control::Cccv { amps, .. } => Condition::CurrentMagnitudeAtMost(amps.abs() / 10.0),
        Control::Voltage { .. } => Condition::CurrentMagnitudeAtMost(0.01),
        _ => Condition::StepTime(60.0),
    };
    let conditions = if conditions.is_empty() {
        &[usual][..]
    } else {
        conditions
    };
    let step = ActionStep {
        control,
        terminations: conditions
            .iter()
            .map(|&condition| Termination {
                condition,
                goto: Goto::Next,
            })
            .collect(),
        ..a.clone()
    };
    let probe = Plan {
        steps: vec![PlanStep::Action(step), PlanStep::End],
        ..plan.clone()
    };
    compile::compile(&probe, target)
        .map(|_| ())
        .map_err(|mut e| {
            e.step = a.path.clone();
            e.description = a.description.clone();
            e
        })
}

/// Whether `target` can say a loop of `count` passes (`cycle` or not) around a rest.
pub(super) fn probe_loop(
    plan: &Plan,
    target: Target,
    count: u32,
    cycle: bool,
) -> Result<(), CompileError> {
    let rest = ActionStep {
        path: "probe".into(),
        description: "rest".into(),
        control: Control::Rest,
        terminations: vec![Termination {
            condition: Condition::StepTime(60.0),
            goto: Goto::Next,
        }],
        ..ActionStep::default()
    };
    let probe = Plan {
        steps: vec![
            PlanStep::LoopStart {
                count,
                cycle,
                end: 2,
                until: Vec::new(),
            },
            PlanStep::Action(rest),
            PlanStep::LoopEnd { start: 0 },
            PlanStep::End,
        ],
        ..plan.clone()
    };
    compile::compile(&probe, target).map(|_| ())
}
