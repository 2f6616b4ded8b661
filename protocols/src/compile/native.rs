//! Helpers shared by the native-schedule compilers and importers.

use crate::plan::{Control, Plan, PlanStep};

/// Whether the constant-voltage step at plan index `i` is written as a charge.
///
/// A plan's voltage step lets the current follow in either direction, but Maccor and Neware
/// make the operator pick a charge or a discharge CV step. A hold almost always continues the
/// direction of the current or power step before it ("Charge at C/2 until 4.2 V" then "Hold at
/// 4.2 V until C/20"), so that direction is used; with no such step before it, charge.
pub(crate) fn voltage_step_charges(plan: &Plan, i: usize) -> bool {
    plan.steps[..i]
        .iter()
        .rev()
        .find_map(|s| match s {
            PlanStep::Action(a) => match a.control {
                Control::Current { amps: x } | Control::Power { watts: x } => Some(x >= 0.0),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or(true)
}

/// A number as the vendors write it: shortest exact decimal, and at least one decimal digit
/// for whole numbers (`1.0`, `0.05`), never an exponent.
pub(crate) fn decimal(x: f64) -> String {
    let s = format!("{x}");
    if s.contains('.') || !x.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

/// Parses a decimal number written by a person or a vendor tool; `None` for anything that is
/// not a finite number (formulas such as `{Cap_mAh*0.02}`, empty fields).
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Whether plan index `i` lies inside the body of the loop starting at `start`.
pub(crate) fn inside_loop(plan: &Plan, start: usize, i: usize) -> bool {
    match plan.steps.get(start) {
        Some(&PlanStep::LoopStart { end, .. }) => start < i && i < end,
        _ => false,
    }
}

/// The step path and description a compile error names for plan index `i`: an action names
/// itself; a loop marker names the loop by the first action of its body.
pub(crate) fn step_name(plan: &Plan, i: usize) -> (String, String) {
    let start = match plan.steps.get(i) {
        Some(PlanStep::Action(a)) => return (a.path.clone(), a.description.clone()),
        Some(&PlanStep::LoopEnd { start }) => start,
        _ => i,
    };
    let first = plan.steps.iter().skip(start).find_map(|s| match s {
        PlanStep::Action(a) => Some(a),
        _ => None,
    });
    match (plan.steps.get(i), first) {
        (Some(PlanStep::LoopStart { .. } | PlanStep::LoopEnd { .. }), Some(a)) => (
            format!("the loop starting at {}", a.path),
            format!("repeat {}", loop_count(plan, start)),
        ),
        _ => (format!("plan step {i}"), String::new()),
    }
}

fn loop_count(plan: &Plan, start: usize) -> u32 {
    match plan.steps.get(start) {
        Some(&PlanStep::LoopStart { count, .. }) => count,
        _ => 0,
    }
}
