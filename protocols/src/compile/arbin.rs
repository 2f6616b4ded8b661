//! Plan -> Arbin schedule (.sdu): INI-style text, CRLF line ends, latin-1.
//!
//! Layout: `[Version Section]`, `[Schedule]` (global settings and safety scopes), then one
//! `[Schedule_StepN]` section per step (0-based) followed by its `[Schedule_StepN_LimitM]`
//! sections. Each limit holds up to three equations that must all hold (AND); the limits of a
//! step are alternatives (OR), which is how the plan's termination list maps one to one.
//!
//! Loops have no native form. A loop of `count` passes at nesting depth `d` uses the test
//! counter `TC_Counter{d+1}`: a `Set Variable(s)` step resets it before the body, and a
//! `Set Variable(s)` step after the body increments it and jumps back to the body's first
//! label while `TC_Counter{d+1} < count`. That gives at most four nested loops.
//!
//! The returned string holds only characters up to U+00FF, so the caller writes it as latin-1
//! byte for byte.

use std::fmt::Write as _;

use super::{CompileError, StepMap, Target};
use crate::plan::{ActionStep, Condition, Control, Goto, Plan, PlanStep, Safety};

/// The schedule version written in `[Version Section]` (the oldest MITS Pro 7 layout seen in
/// public schedules, which later versions still open).
pub(crate) const SCHEDULE_VERSION: &str = "Schedule Version 7.00.08";
/// Line end of the format.
pub(crate) const CRLF: &str = "\r\n";

/// `m_szStepCtrlType` values.
pub(crate) const CTRL_REST: &str = "Rest";
pub(crate) const CTRL_CURRENT: &str = "Current(A)";
pub(crate) const CTRL_VOLTAGE: &str = "Voltage(V)";
/// Constant current (`m_szCtrlValue`, A) then constant voltage (`m_szExtCtrlValue1`, V).
pub(crate) const CTRL_CCCV: &str = "CCCV";
pub(crate) const CTRL_SET_VARIABLES: &str = "Set Variable(s)";

/// `m_szGotoStep` values other than a label.
pub(crate) const GOTO_NEXT: &str = "Next Step";
pub(crate) const GOTO_END: &str = "End Test";

/// Equation left-hand sides (channel and test variables).
pub(crate) const PV_VOLTAGE: &str = "PV_CHAN_Voltage";
pub(crate) const PV_CURRENT: &str = "PV_CHAN_Current";
pub(crate) const PV_STEP_TIME: &str = "PV_CHAN_Step_Time";
pub(crate) const PV_TEST_TIME: &str = "PV_CHAN_Test_Time";
/// The test counters loops count with, outermost loop first.
pub(crate) const TC_COUNTERS: [&str; 4] =
    ["TC_Counter1", "TC_Counter2", "TC_Counter3", "TC_Counter4"];

/// Log-limit variables: the change since the last logged point that logs a new one.
pub(crate) const DV_TIME: &str = "DV_Time";
pub(crate) const DV_VOLTAGE: &str = "DV_Voltage";
pub(crate) const DV_CURRENT: &str = "DV_Current";

/// Equations per limit section (`Equation0_` .. `Equation2_`).
pub(crate) const EQUATIONS_PER_LIMIT: usize = 3;

/// `Set Variable(s)` bit masks: `m_szCtrlValue` resets, `m_szExtCtrlValue1` increments.
/// Bit positions as a public Arbin schedule simulator reads them (reset: bit 17 + k-1 for
/// `TC_Counter{k}`; increment: bit 0 cycle index, bit k for `TC_Counter{k}`); Arbin does not
/// publish them, so check one loop on a real unit before relying on deep nesting.
pub(crate) const RESET_TC_COUNTER1_BIT: u32 = 17;
pub(crate) const INCREMENT_CYCLE_INDEX: u32 = 1;

/// `[Schedule]` safety keys (`min^max`) and their enable flags.
pub(crate) const VOLTAGE_SCOPE: &str = "m_VoltageSafetyScope";
pub(crate) const CHECK_VOLTAGE: &str = "m_bCheckVoltageSafety";
pub(crate) const CURRENT_SCOPE: &str = "m_CurrentSafetyScope";
pub(crate) const CHECK_CURRENT: &str = "m_bCheckCurrentSafety";
pub(crate) const CAPACITY_SCOPE: &str = "m_CapacitySafetyScope";
pub(crate) const AUX_TEMP_SCOPE: &str = "m_AuxTempSafetyScope";
/// Lower bound written with a temperature maximum: the plan has no minimum, and this is the
/// floor Arbin's own templates use for "no limit".
pub(crate) const AUX_TEMP_FLOOR_C: f64 = -100.0;

/// The label of a `Set Variable(s)` step that resets a loop's counter (`Loop 3 start`) or
/// closes its pass (`Loop 3 end`); `3` is the loop's plan index, so labels are unique.
fn loop_label(start: usize, which: &str) -> String {
    format!("Loop {start} {which}")
}

/// The label of an action step: its plan index, unique and stable across compilations.
fn step_label(index: usize) -> String {
    format!("Step {index}")
}

/// The set bit for `TC_Counter{k}` in a `Set Variable(s)` mask (see the consts above).
pub(crate) fn reset_mask(counter: u32) -> u64 {
    1u64 << (RESET_TC_COUNTER1_BIT + counter - 1)
}

pub(crate) fn increment_mask(counter: u32) -> u64 {
    1u64 << counter
}

/// A number in the shortest text that reads back to the same f64 (Arbin reads plain decimals).
pub(crate) fn num(x: f64) -> String {
    format!("{x}")
}

/// One limit section: its goto and up to three equations (left, sign, right). A log limit
/// (`step: false`) only records a point and never ends the step.
struct Limit {
    step: bool,
    goto: String,
    equations: Vec<(&'static str, &'static str, String)>,
}

struct Step {
    label: String,
    ctrl_type: &'static str,
    ctrl_value: String,
    ext1: String,
    limits: Vec<Limit>,
}

fn error(step: &ActionStep, message: impl Into<String>) -> CompileError {
    CompileError {
        target: Target::Arbin,
        step: step.path.clone(),
        description: step.description.clone(),
        message: message.into(),
    }
}

fn plan_error(message: impl Into<String>) -> CompileError {
    CompileError {
        target: Target::Arbin,
        step: "the protocol".into(),
        description: String::new(),
        message: message.into(),
    }
}

/// Compiles `plan` to an Arbin schedule.
#[cfg(test)]
pub fn compile(plan: &Plan) -> Result<String, CompileError> {
    compile_mapped(plan).map(|(text, _)| text)
}

/// Compiles `plan` to an Arbin schedule, with the map from its step numbers
/// (`[Schedule_StepN]` is step N + 1, as Arbin counts them in its data) to plan steps.
pub fn compile_mapped(plan: &Plan) -> Result<(String, StepMap), CompileError> {
    plan.validate().map_err(|e| plan_error(e.to_string()))?;
    let last = plan.steps.len().saturating_sub(1);
    let mut steps = Vec::new();
    let mut step_map = StepMap::default();
    // Per open loop: (plan index of LoopStart, its counter).
    let mut open: Vec<(usize, u32)> = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if let Some(s) = compile_step(plan, i, last, step, &mut open)? {
            steps.push(s);
            let action = matches!(step, PlanStep::Action(_));
            step_map.plan_steps.push(action.then_some(i));
        }
    }
    Ok((render(plan, &steps)?, step_map))
}

#[allow(unreachable_patterns)] // the IR grows: new step kinds must land in the error arm
fn compile_step(
    plan: &Plan,
    i: usize,
    last: usize,
    step: &PlanStep,
    open: &mut Vec<(usize, u32)>,
) -> Result<Option<Step>, CompileError> {
    Ok(Some(match step {
        PlanStep::Action(a) => action(plan, i, last, a)?,
        PlanStep::LoopStart { until, .. } if !until.is_empty() => {
            return Err(plan_error(format!(
                "the loop at plan index {i} has an early exit (until), which this Arbin compiler does not write yet"
            )));
        }
        PlanStep::LoopStart { .. } => {
            let counter = open.len() as u32 + 1;
            if counter as usize > TC_COUNTERS.len() {
                return Err(plan_error(format!(
                    "the loop at plan index {i} is nested {counter} deep; Arbin has {n} test counters (TC_Counter1-{n}), so loops nest at most {n} deep",
                    n = TC_COUNTERS.len()
                )));
            }
            open.push((i, counter));
            Step {
                label: loop_label(i, "start"),
                ctrl_type: CTRL_SET_VARIABLES,
                ctrl_value: reset_mask(counter).to_string(),
                ext1: "0".into(),
                limits: Vec::new(),
            }
        }
        PlanStep::LoopEnd { start } => {
            let Some((_, counter)) = open.pop() else {
                return Err(plan_error(format!("LoopEnd at index {i} closes no loop")));
            };
            let (count, cycle) = match plan.steps.get(*start) {
                Some(PlanStep::LoopStart { count, cycle, .. }) => (*count, *cycle),
                _ => return Err(plan_error(format!("LoopEnd at index {i} closes no loop"))),
            };
            let body = entry_label(plan, start + 1);
            let variable = TC_COUNTERS[counter as usize - 1];
            let mut increment = increment_mask(counter);
            if cycle {
                increment |= u64::from(INCREMENT_CYCLE_INDEX);
            }
            Step {
                label: loop_label(*start, "end"),
                ctrl_type: CTRL_SET_VARIABLES,
                ctrl_value: "0".into(),
                ext1: increment.to_string(),
                limits: vec![
                    Limit {
                        step: true,
                        goto: body,
                        equations: vec![(variable, "<", count.to_string())],
                    },
                    Limit {
                        step: true,
                        goto: GOTO_NEXT.into(),
                        equations: vec![(variable, ">=", count.to_string())],
                    },
                ],
            }
        }
        PlanStep::End if i == last => return Ok(None),
        PlanStep::End => {
            return Err(plan_error(format!(
                "an End at plan index {i}, before the last step: Arbin ends a test only through a limit (\"End Test\"); end through a termination's jump instead"
            )));
        }
        _ => {
            return Err(plan_error(format!(
                "the step at plan index {i} is of a kind this compiler does not know"
            )));
        }
    }))
}

/// The label execution lands on when it reaches plan index `i`.
fn entry_label(plan: &Plan, i: usize) -> String {
    match plan.steps.get(i) {
        Some(PlanStep::LoopStart { .. }) => loop_label(i, "start"),
        _ => step_label(i),
    }
}

#[allow(unreachable_patterns)] // the IR grows: new variants must land in the error arms
fn action(plan: &Plan, i: usize, last: usize, a: &ActionStep) -> Result<Step, CompileError> {
    let (ctrl_type, ctrl_value) = match a.control {
        Control::Rest => (CTRL_REST, String::new()),
        Control::Current { amps } => (CTRL_CURRENT, num(amps)),
        Control::Voltage { volts } => (CTRL_VOLTAGE, num(volts)),
        Control::Cccv { amps, .. } => (CTRL_CCCV, num(amps)),
        _ => {
            return Err(error(
                a,
                "only rest, current, voltage and CCCV steps are supported (Arbin's power, load, simulation and chamber controls are not confirmed in public material)",
            ));
        }
    };
    let ext1 = match a.control {
        Control::Cccv { volts, .. } => num(volts),
        _ => String::new(),
    };
    let mut limits = Vec::new();
    for t in &a.terminations {
        let equations = match t.condition {
            Condition::VoltageAtLeast(v) => vec![(PV_VOLTAGE, ">=", num(v))],
            Condition::VoltageAtMost(v) => vec![(PV_VOLTAGE, "<=", num(v))],
            // Arbin limits compare signed values; |I| <= x is I <= x AND I >= -x.
            Condition::CurrentMagnitudeAtMost(x) => {
                vec![(PV_CURRENT, "<=", num(x)), (PV_CURRENT, ">=", num(-x))]
            }
            Condition::StepTime(s) => vec![(PV_STEP_TIME, ">=", num(s))],
            Condition::TestTime(s) => vec![(PV_TEST_TIME, ">=", num(s))],
            _ => {
                return Err(error(
                    a,
                    "only voltage, |current|, step-time and test-time terminations are supported: Arbin's capacity and energy variables count from the last reset, not from the step start, and its temperature and dV/dt variable names are not confirmed in public material",
                ));
            }
        };
        limits.push(Limit {
            step: true,
            goto: goto(plan, last, t.goto, a)?,
            equations,
        });
    }
    // Log limits: the step's `record`, or the native default when it sets none.
    let r = a.record.or_native_default();
    for (variable, value) in [
        (DV_TIME, r.every_s),
        (DV_VOLTAGE, r.dv_v),
        (DV_CURRENT, r.di_a),
    ] {
        if let Some(x) = value {
            limits.push(Limit {
                step: false,
                goto: GOTO_NEXT.into(),
                equations: vec![(variable, ">", num(x))],
            });
        }
    }
    Ok(Step {
        label: step_label(i),
        ctrl_type,
        ctrl_value,
        ext1,
        limits,
    })
}

#[allow(unreachable_patterns)] // the IR grows: new variants must land in the error arm
fn goto(plan: &Plan, last: usize, goto: Goto, a: &ActionStep) -> Result<String, CompileError> {
    Ok(match goto {
        Goto::Next => GOTO_NEXT.into(),
        Goto::End => GOTO_END.into(),
        Goto::Step(t) if t == last => GOTO_END.into(),
        Goto::Step(t) => match plan.steps.get(t) {
            Some(PlanStep::Action(_) | PlanStep::LoopStart { .. }) => entry_label(plan, t),
            _ => {
                return Err(error(
                    a,
                    format!("jump target {t} is not an action or a loop start"),
                ));
            }
        },
        _ => return Err(error(a, "this kind of jump is not supported")),
    })
}

/// Latin-1 has no characters past U+00FF, and a line break would end the value.
fn latin1_line(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\r' | '\n' => ' ',
            c if u32::from(c) > 0xFF => '?',
            c => c,
        })
        .collect()
}

fn render(plan: &Plan, steps: &[Step]) -> Result<String, CompileError> {
    let mut lines: Vec<String> = vec![
        "[Version Section]".into(),
        format!("Current_Version={SCHEDULE_VERSION}"),
        "[Schedule]".into(),
        "m_szCreator=cyclerd".into(),
        format!("m_szComments={}", latin1_line(&plan.name)),
    ];
    lines.extend(safety(&plan.safety)?);
    lines.push(format!("m_uStepNum={}", steps.len()));
    for (n, s) in steps.iter().enumerate() {
        lines.push(format!("[Schedule_Step{n}]"));
        lines.push(format!("m_uLimitNum={}", s.limits.len()));
        lines.push(format!("m_szLabel={}", s.label));
        lines.push(format!("m_szStepCtrlType={}", s.ctrl_type));
        lines.push(format!("m_szCtrlValue={}", s.ctrl_value));
        lines.push(format!("m_szExtCtrlValue1={}", s.ext1));
        lines.push("m_szExtCtrlValue2=".into());
        for (m, l) in s.limits.iter().enumerate() {
            lines.push(format!("[Schedule_Step{n}_Limit{m}]"));
            lines.push(format!("m_bStepLimit={}", u8::from(l.step)));
            lines.push("m_bLogDataLimit=1".into());
            lines.push(format!("m_szGotoStep={}", l.goto));
            for e in 0..EQUATIONS_PER_LIMIT {
                let (left, sign, right) = l
                    .equations
                    .get(e)
                    .map_or(("", "", ""), |(l, s, r)| (*l, *s, r.as_str()));
                lines.push(format!("Equation{e}_szLeft={left}"));
                lines.push(format!("Equation{e}_szCompareSign={sign}"));
                lines.push(format!("Equation{e}_szRight={right}"));
            }
        }
    }
    let mut out = String::new();
    for l in lines {
        let _ = write!(out, "{l}{CRLF}");
    }
    Ok(out)
}

/// The `[Schedule]` safety lines. Arbin scopes are `min^max` pairs, so a voltage window needs
/// both bounds; a current limit `x` is the scope `-x^x`, a capacity limit `0^x`.
fn safety(s: &Safety) -> Result<Vec<String>, CompileError> {
    let mut lines = Vec::new();
    match (s.voltage_min, s.voltage_max) {
        (Some(lo), Some(hi)) => {
            lines.push(format!("{CHECK_VOLTAGE}=1"));
            lines.push(format!("{VOLTAGE_SCOPE}={}^{}", num(lo), num(hi)));
        }
        (None, None) => {
            lines.push(format!("{CHECK_VOLTAGE}=0"));
            lines.push(format!("{VOLTAGE_SCOPE}=0^0"));
        }
        _ => {
            return Err(plan_error(
                "safety.voltage sets only one bound; Arbin's voltage safety scope needs both (min^max)",
            ));
        }
    }
    match s.current_max {
        Some(x) => {
            lines.push(format!("{CHECK_CURRENT}=1"));
            lines.push(format!("{CURRENT_SCOPE}={}^{}", num(-x), num(x)));
        }
        None => {
            lines.push(format!("{CHECK_CURRENT}=0"));
            lines.push(format!("{CURRENT_SCOPE}=0^0"));
        }
    }
    if let Some(x) = s.capacity_max {
        lines.push(format!("{CAPACITY_SCOPE}=0^{}", num(x)));
    }
    if let Some(t) = s.temperature_max {
        lines.push(format!(
            "{AUX_TEMP_SCOPE}={}^{}",
            num(AUX_TEMP_FLOOR_C),
            num(t)
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::plan_compare::{
        Compare, act, assert_same, deploy_plans, looped, plan, three_steps,
    };
    use crate::import::{SourceKind, import};
    use crate::plan::Record;

    const EXACT: Compare = Compare {
        cycle: true,
        record_and_safety: true,
    };

    fn round_trip(p: &Plan) -> Plan {
        let text = compile(p).unwrap_or_else(|e| panic!("{e}"));
        import(&text, SourceKind::Arbin, "x.sdu").unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn three_step_protocol_compiles_to_the_exact_sdu_layout() {
        let golden = "\
[Version Section]
Current_Version=Schedule Version 7.00.08
[Schedule]
m_szCreator=cyclerd
m_szComments=Three steps
m_bCheckVoltageSafety=1
m_VoltageSafetyScope=2.5^4.25
m_bCheckCurrentSafety=1
m_CurrentSafetyScope=-5^5
m_uStepNum=3
[Schedule_Step0]
m_uLimitNum=3
m_szLabel=Step 0
m_szStepCtrlType=Rest
m_szCtrlValue=
m_szExtCtrlValue1=
m_szExtCtrlValue2=
[Schedule_Step0_Limit0]
m_bStepLimit=1
m_bLogDataLimit=1
m_szGotoStep=Next Step
Equation0_szLeft=PV_CHAN_Step_Time
Equation0_szCompareSign=>=
Equation0_szRight=600
Equation1_szLeft=
Equation1_szCompareSign=
Equation1_szRight=
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
[Schedule_Step0_Limit1]
m_bStepLimit=0
m_bLogDataLimit=1
m_szGotoStep=Next Step
Equation0_szLeft=DV_Time
Equation0_szCompareSign=>
Equation0_szRight=10
Equation1_szLeft=
Equation1_szCompareSign=
Equation1_szRight=
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
[Schedule_Step0_Limit2]
m_bStepLimit=0
m_bLogDataLimit=1
m_szGotoStep=Next Step
Equation0_szLeft=DV_Voltage
Equation0_szCompareSign=>
Equation0_szRight=0.01
Equation1_szLeft=
Equation1_szCompareSign=
Equation1_szRight=
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
[Schedule_Step1]
m_uLimitNum=3
m_szLabel=Step 1
m_szStepCtrlType=Current(A)
m_szCtrlValue=1.25
m_szExtCtrlValue1=
m_szExtCtrlValue2=
[Schedule_Step1_Limit0]
m_bStepLimit=1
m_bLogDataLimit=1
m_szGotoStep=Next Step
Equation0_szLeft=PV_CHAN_Voltage
Equation0_szCompareSign=>=
Equation0_szRight=4.2
Equation1_szLeft=
Equation1_szCompareSign=
Equation1_szRight=
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
[Schedule_Step1_Limit1]
m_bStepLimit=0
m_bLogDataLimit=1
m_szGotoStep=Next Step
Equation0_szLeft=DV_Time
Equation0_szCompareSign=>
Equation0_szRight=10
Equation1_szLeft=
Equation1_szCompareSign=
Equation1_szRight=
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
[Schedule_Step1_Limit2]
m_bStepLimit=0
m_bLogDataLimit=1
m_szGotoStep=Next Step
Equation0_szLeft=DV_Voltage
Equation0_szCompareSign=>
Equation0_szRight=0.01
Equation1_szLeft=
Equation1_szCompareSign=
Equation1_szRight=
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
[Schedule_Step2]
m_uLimitNum=4
m_szLabel=Step 2
m_szStepCtrlType=Voltage(V)
m_szCtrlValue=4.2
m_szExtCtrlValue1=
m_szExtCtrlValue2=
[Schedule_Step2_Limit0]
m_bStepLimit=1
m_bLogDataLimit=1
m_szGotoStep=Next Step
Equation0_szLeft=PV_CHAN_Current
Equation0_szCompareSign=<=
Equation0_szRight=0.125
Equation1_szLeft=PV_CHAN_Current
Equation1_szCompareSign=>=
Equation1_szRight=-0.125
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
[Schedule_Step2_Limit1]
m_bStepLimit=1
m_bLogDataLimit=1
m_szGotoStep=End Test
Equation0_szLeft=PV_CHAN_Step_Time
Equation0_szCompareSign=>=
Equation0_szRight=7200
Equation1_szLeft=
Equation1_szCompareSign=
Equation1_szRight=
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
[Schedule_Step2_Limit2]
m_bStepLimit=0
m_bLogDataLimit=1
m_szGotoStep=Next Step
Equation0_szLeft=DV_Time
Equation0_szCompareSign=>
Equation0_szRight=10
Equation1_szLeft=
Equation1_szCompareSign=
Equation1_szRight=
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
[Schedule_Step2_Limit3]
m_bStepLimit=0
m_bLogDataLimit=1
m_szGotoStep=Next Step
Equation0_szLeft=DV_Voltage
Equation0_szCompareSign=>
Equation0_szRight=0.01
Equation1_szLeft=
Equation1_szCompareSign=
Equation1_szRight=
Equation2_szLeft=
Equation2_szCompareSign=
Equation2_szRight=
"
        .replace('\n', "\r\n");
        assert_eq!(compile(&three_steps()).unwrap(), golden);
    }

    #[test]
    fn every_deploy_protocol_reads_back_as_the_same_plan_or_is_refused_by_name() {
        let mut compiled = 0;
        for (name, p) in deploy_plans() {
            match compile(&p) {
                Ok(_) => {
                    assert_same(&p, &round_trip(&p), EXACT);
                    compiled += 1;
                }
                Err(e) => {
                    assert_eq!(e.target, Target::Arbin, "{name}");
                    assert!(!e.step.is_empty() && !e.message.is_empty(), "{name}: {e}");
                    eprintln!("{name}: refused: {e}");
                }
            }
        }
        assert!(compiled >= 2, "only {compiled} deploy protocols compiled");
    }

    /// Nested loops (one without cycle counting), a jump back to a loop's start, a jump to the
    /// end, CCCV, test time and record rules: everything this target writes.
    fn rich() -> Plan {
        let every = Record {
            every_s: Some(10.0),
            dv_v: Some(0.005),
            di_a: Some(0.05),
        };
        let mut p = plan(vec![
            act(Control::Rest, &[(Condition::StepTime(60.0), Goto::Next)]),
            looped(3, true, 8),
            act(
                Control::Cccv {
                    amps: 1.0,
                    volts: 4.2,
                },
                &[
                    (Condition::CurrentMagnitudeAtMost(0.05), Goto::Next),
                    (Condition::TestTime(86400.0), Goto::End),
                ],
            ),
            looped(2, false, 6),
            act(
                Control::Current { amps: -0.5 },
                &[
                    (Condition::StepTime(30.0), Goto::Next),
                    (Condition::VoltageAtMost(3.0), Goto::Step(1)),
                ],
            ),
            act(Control::Rest, &[(Condition::StepTime(30.0), Goto::Next)]),
            PlanStep::LoopEnd { start: 3 },
            act(
                Control::Voltage { volts: 3.0 },
                &[(Condition::CurrentMagnitudeAtMost(0.01), Goto::Step(9))],
            ),
            PlanStep::LoopEnd { start: 1 },
            PlanStep::End,
        ]);
        if let PlanStep::Action(a) = &mut p.steps[4] {
            a.record = every;
        }
        p.safety.capacity_max = Some(3.0);
        p.safety.temperature_max = Some(60.0);
        p
    }

    #[test]
    fn loops_jumps_cccv_and_record_rules_read_back_unchanged() {
        let p = rich();
        assert_same(&p, &round_trip(&p), EXACT);
    }

    #[test]
    fn loops_count_with_one_test_counter_per_nesting_level() {
        let text = compile(&rich()).unwrap();
        assert!(text.contains(
            "m_szLabel=Loop 1 start\r\nm_szStepCtrlType=Set Variable(s)\r\nm_szCtrlValue=131072\r\n"
        ));
        assert!(text.contains("m_szLabel=Loop 3 end\r\nm_szStepCtrlType=Set Variable(s)\r\nm_szCtrlValue=0\r\nm_szExtCtrlValue1=4\r\n"));
        assert!(text.contains("m_szGotoStep=Step 2\r\nEquation0_szLeft=TC_Counter1\r\nEquation0_szCompareSign=<\r\nEquation0_szRight=3\r\n"));
        assert!(text.contains("m_szGotoStep=Loop 1 start\r\n"));
    }

    #[test]
    fn output_is_latin1_with_crlf_line_ends() {
        let mut p = three_steps();
        p.name = "Zyklus 25 °C – Ω\nsecond line".into();
        let text = compile(&p).unwrap();
        assert!(text.chars().all(|c| u32::from(c) <= 0xFF));
        assert!(text.contains("m_szComments=Zyklus 25 °C ? ? second line\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn inexpressible_steps_are_errors_naming_the_step_and_target() {
        let cases = [
            (Control::Power { watts: 5.0 }, Condition::StepTime(10.0)),
            (Control::Current { amps: 1.0 }, Condition::StepCapacity(1.0)),
            (Control::Current { amps: 1.0 }, Condition::StepEnergy(1.0)),
            (
                Control::Current { amps: 1.0 },
                Condition::TemperatureAtLeast(45.0),
            ),
        ];
        for (control, condition) in cases {
            let e = compile(&plan(vec![
                act(control, &[(condition, Goto::Next)]),
                PlanStep::End,
            ]))
            .unwrap_err();
            assert_eq!(e.target, Target::Arbin);
            assert_eq!(e.step, "steps[x]");
            assert!(
                e.to_string()
                    .starts_with("arbin cannot express steps[x] (test step)"),
                "{e}"
            );
        }
    }

    #[test]
    fn loops_nested_five_deep_are_an_error() {
        let mut steps = Vec::new();
        for d in 0..5 {
            steps.push(looped(2, true, 10 - d));
        }
        steps.push(act(
            Control::Rest,
            &[(Condition::StepTime(1.0), Goto::Next)],
        ));
        for d in (0..5).rev() {
            steps.push(PlanStep::LoopEnd { start: d });
        }
        steps.push(PlanStep::End);
        let e = compile(&plan(steps)).unwrap_err();
        assert!(e.message.contains("at most 4 deep"), "{e}");
    }

    #[test]
    fn a_half_set_voltage_window_is_an_error() {
        let mut p = three_steps();
        p.safety.voltage_max = None;
        assert!(compile(&p).unwrap_err().message.contains("both"));
    }
}
