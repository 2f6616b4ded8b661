//! Plan -> Maccor procedure file (.000, XML).
//!
//! Layout and spellings follow the procedure files the Maccor software writes (as collected in
//! TRI's BEEP, whose procedure reader is the reference for what is accepted): a `TestStep` per
//! step with `StepType`, `StepMode`, `StepValue`, `Limits`, `Ends`, `Reports`, `Range`,
//! `Option1-3` and `StepNote`; padded fixed-width field values; `Step` goto targets as 1-based
//! 3-digit step numbers.
//!
//! Mapping: an action step is one `Charge`/`Dischrge`/`Rest` step; a loop is `Do N` ... `Loop N`
//! (N = nesting level) whose `Loop Cnt = count` end leaves the loop, with `AdvCycle` just before
//! `Loop N` when the loop counts cycles; `End` is `End`.

use super::native::{decimal, step_name, voltage_step_charges};
use super::{CompileError, StepMap, Target};
use crate::plan::{ActionStep, Condition, Control, Goto, Plan, PlanStep};
use crate::xml::Element;

/// `<?maccor-application ...?>`: the processing instruction that marks a procedure file.
pub(crate) const PROLOG: &str = r#"maccor-application progid="Maccor Procedure File""#;
pub(crate) const ROOT: &str = "MaccorTestProcedure";
/// Header version fields as written by the Maccor software build the public files come from.
const BUILD_TEST_VERSION: [(&str, &str); 4] = [
    ("major", "1"),
    ("minor", "5"),
    ("release", "7006"),
    ("build", "32043"),
];
const BT_VERSION: &str = "11";

/// `StepType` values, centred in 8 characters as Maccor writes them (`Dischrge` is Maccor's own
/// spelling). `Do N` / `Loop N` are built by [`do_type`] / [`loop_type`].
pub(crate) const TYPE_CHARGE: &str = " Charge ";
pub(crate) const TYPE_DISCHARGE: &str = "Dischrge";
pub(crate) const TYPE_REST: &str = "  Rest  ";
pub(crate) const TYPE_ADV_CYCLE: &str = "AdvCycle";
pub(crate) const TYPE_END: &str = "  End   ";
/// Maccor numbers nested loops `Do 1`..`Do 5` / `Loop 1`..`Loop 5` by nesting level.
pub(crate) const MAX_LOOP_DEPTH: usize = 5;

/// `StepMode` values, padded to 8 characters.
pub(crate) const MODE_CURRENT: &str = "Current ";
pub(crate) const MODE_VOLTAGE: &str = "Voltage ";
pub(crate) const MODE_POWER: &str = "Power   ";
pub(crate) const MODE_NONE: &str = "        ";

/// `EndType` values, padded to 8 characters.
pub(crate) const END_VOLTAGE: &str = "Voltage ";
pub(crate) const END_CURRENT: &str = "Current ";
pub(crate) const END_STEP_TIME: &str = "StepTime";
pub(crate) const END_LOOP_COUNT: &str = "Loop Cnt";

/// `Oper` values, padded to 3 characters.
pub(crate) const OPER_EQ: &str = " = ";
pub(crate) const OPER_GE: &str = ">= ";
pub(crate) const OPER_LE: &str = "<= ";

/// `Step` goto targets are 3-digit step numbers, so a procedure holds at most 999 steps.
pub(crate) const MAX_STEPS: usize = 999;

/// `ReportType` values (padded to 8), one `ReportEntry` per rule of the step's `record` (or
/// of [`crate::plan::Record::NATIVE_DEFAULT`] when it sets none): time since the last record,
/// |dV|, |dI|.
pub(crate) const REPORT_STEP_TIME: &str = "StepTime";
pub(crate) const REPORT_VOLTAGE: &str = "Voltage ";
pub(crate) const REPORT_CURRENT: &str = "Current ";
/// Auto-ranging current range, and options off: what Maccor's own files use for plain steps.
const RANGE_AUTO: &str = "A";
const OPTION_OFF: &str = "N";

/// `Do N` for nesting level `n` (1-based), centred like the other step types.
pub(crate) fn do_type(n: usize) -> String {
    format!("  Do {n}  ")
}

/// `Loop N` for nesting level `n` (1-based).
pub(crate) fn loop_type(n: usize) -> String {
    format!(" Loop {n} ")
}

/// Maccor's duration spelling `hh:mm:ss` (fractional seconds allowed: `00:00:00.5`).
pub(crate) fn duration(seconds: f64) -> String {
    let whole = seconds.trunc();
    let h = (whole / 3600.0).floor();
    let m = ((whole - h * 3600.0) / 60.0).floor();
    let s = seconds - h * 3600.0 - m * 60.0;
    let sec = if s.fract() == 0.0 {
        format!("{:02}", s as u64)
    } else if s < 10.0 {
        format!("0{s}")
    } else {
        format!("{s}")
    };
    format!("{:02}:{:02}:{sec}", h as u64, m as u64)
}

/// Compiles `plan` to a Maccor procedure, with the map from its step numbers to plan steps.
pub fn compile(plan: &Plan) -> Result<(String, StepMap), CompileError> {
    let err = |i: usize, message: String| {
        let (step, description) = step_name(plan, i);
        CompileError {
            target: Target::Maccor,
            step,
            description,
            message,
        }
    };

    // Pass 1: the Maccor step number (1-based) of every plan index, and loop nesting levels.
    let mut number = vec![0usize; plan.steps.len()];
    let mut level = vec![0usize; plan.steps.len()];
    let mut next = 1usize;
    let mut depth = 0usize;
    for (i, step) in plan.steps.iter().enumerate() {
        number[i] = next;
        #[allow(unreachable_patterns)] // the IR grows; new step kinds are refused below
        match step {
            PlanStep::LoopStart { until, .. } if !until.is_empty() => {
                return Err(err(
                    i,
                    "loop exits (until: ...) are not a Maccor loop feature cyclerd writes; the loop would run all its passes".into(),
                ));
            }
            PlanStep::LoopStart { .. } => {
                depth += 1;
                if depth > MAX_LOOP_DEPTH {
                    return Err(err(
                        i,
                        format!("loops nest at most {MAX_LOOP_DEPTH} deep in a procedure"),
                    ));
                }
                level[i] = depth;
                next += 1;
            }
            &PlanStep::LoopEnd { start } => {
                level[i] = depth;
                depth = depth.saturating_sub(1);
                let cycles = matches!(
                    plan.steps.get(start),
                    Some(PlanStep::LoopStart { cycle: true, .. })
                );
                // A LoopEnd is never a jump target; its number is that of its Loop N step.
                if cycles {
                    number[i] = next + 1;
                }
                next += if cycles { 2 } else { 1 };
            }
            PlanStep::Action(_) | PlanStep::End => next += 1,
            _ => {
                return Err(err(
                    i,
                    "this kind of plan step has no Maccor equivalent yet".into(),
                ));
            }
        }
    }
    let total = next - 1;
    if total > MAX_STEPS {
        return Err(err(
            plan.steps.len().saturating_sub(1),
            format!(
                "the procedure needs {total} steps; Maccor step numbers have 3 digits (at most {MAX_STEPS})"
            ),
        ));
    }
    let end_number = number.last().copied().unwrap_or(1);
    let mut step_map = StepMap {
        plan_steps: vec![None; total],
    };
    for (i, step) in plan.steps.iter().enumerate() {
        if matches!(step, PlanStep::Action(_)) {
            step_map.plan_steps[number[i] - 1] = Some(i);
        }
    }

    // Pass 2: the steps.
    let mut steps = Element::new("ProcSteps");
    for (i, step) in plan.steps.iter().enumerate() {
        #[allow(unreachable_patterns)] // refused in pass 1
        match step {
            PlanStep::Action(a) => {
                let goto_number = |g: Goto| match g {
                    Goto::Next => Ok(number[i] + 1),
                    Goto::End => Ok(end_number),
                    Goto::Step(t) => number
                        .get(t)
                        .copied()
                        .ok_or_else(|| format!("jump target {t} is not in the plan")),
                };
                steps
                    .children
                    .push(action_step(plan, i, a, goto_number).map_err(|m| err(i, m))?);
            }
            PlanStep::LoopStart { .. } => {
                steps
                    .children
                    .push(control_step(&do_type(level[i]), Element::new("Ends")));
            }
            &PlanStep::LoopEnd { start } => {
                let Some(&PlanStep::LoopStart { count, cycle, .. }) = plan.steps.get(start) else {
                    return Err(err(i, "loop end without its loop start".into()));
                };
                if cycle {
                    steps
                        .children
                        .push(control_step(TYPE_ADV_CYCLE, Element::new("Ends")));
                }
                let ends = Element::new("Ends").child(end_entry(
                    END_LOOP_COUNT,
                    OPER_EQ,
                    number[i] + 1,
                    count.to_string(),
                ));
                steps
                    .children
                    .push(control_step(&loop_type(level[i]), ends));
            }
            PlanStep::End => steps
                .children
                .push(control_step(TYPE_END, Element::new("Ends"))),
            _ => {
                return Err(err(
                    i,
                    "this kind of plan step has no Maccor equivalent yet".into(),
                ));
            }
        }
    }

    let mut version = Element::new("BuildTestVersion");
    for (k, v) in BUILD_TEST_VERSION {
        version.children.push(Element::text(k, v));
    }
    let header = Element::new("header")
        .child(version)
        .child(Element::new("FileFormatVersion").child(Element::text("BTVersion", BT_VERSION)))
        .child(Element::new("ProcDesc").child(Element::text("desc", plan.name.as_str())));
    let text = Element::new(ROOT)
        .child(header)
        .child(steps)
        .to_document(&[PROLOG]);
    Ok((text, step_map))
}

/// A `TestStep` with no setpoint (Do, Loop, AdvCycle, End), laid out as Maccor writes them.
fn control_step(step_type: &str, ends: Element) -> Element {
    Element::new("TestStep")
        .child(Element::text("StepType", step_type))
        .child(Element::text("StepMode", MODE_NONE))
        .child(Element::text("StepValue", ""))
        .child(Element::new("Limits"))
        .child(ends)
        .child(Element::new("Reports"))
        .child(Element::text("Range", ""))
        .child(Element::text("Option1", ""))
        .child(Element::text("Option2", ""))
        .child(Element::text("Option3", ""))
        .child(Element::text("StepNote", ""))
}

fn end_entry(end_type: &str, oper: &str, goto: usize, value: String) -> Element {
    Element::new("EndEntry")
        .child(Element::text("EndType", end_type))
        .child(Element::text("SpecialType", " "))
        .child(Element::text("Oper", oper))
        .child(Element::text("Step", format!("{goto:03}")))
        .child(Element::text("Value", value))
}

fn action_step(
    plan: &Plan,
    i: usize,
    a: &ActionStep,
    goto_number: impl Fn(Goto) -> Result<usize, String>,
) -> Result<Element, String> {
    let direction = |charge: bool| if charge { TYPE_CHARGE } else { TYPE_DISCHARGE };
    let mut limits = Element::new("Limits");
    let (step_type, mode, value) = match a.control {
        Control::Rest => (TYPE_REST, MODE_NONE, String::new()),
        Control::Current { amps } => (direction(amps >= 0.0), MODE_CURRENT, decimal(amps.abs())),
        Control::Voltage { volts } => {
            // The compliance current of a CV step, as Maccor expects it on voltage steps.
            if let Some(c) = plan.safety.current_max {
                limits.children.push(Element::text("Current", decimal(c)));
            }
            (direction(voltage_step_charges(plan, i)), MODE_VOLTAGE, decimal(volts))
        }
        Control::Power { watts } => (direction(watts >= 0.0), MODE_POWER, decimal(watts.abs())),
        // Maccor's CCCV: a Current step with a Voltage limit.
        Control::Cccv { amps, volts } => {
            limits.children.push(Element::text("Voltage", decimal(volts)));
            (direction(amps >= 0.0), MODE_CURRENT, decimal(amps.abs()))
        }
        _ => return Err("this control has no Maccor step mode cyclerd writes (resistance, profile and chamber steps are not supported)".into()),
    };
    let mut ends = Element::new("Ends");
    for t in &a.terminations {
        let goto = goto_number(t.goto)?;
        let (end_type, oper, value) = match t.condition {
            Condition::VoltageAtLeast(v) => (END_VOLTAGE, OPER_GE, decimal(v)),
            Condition::VoltageAtMost(v) => (END_VOLTAGE, OPER_LE, decimal(v)),
            Condition::CurrentMagnitudeAtMost(c) => (END_CURRENT, OPER_LE, decimal(c)),
            Condition::StepTime(s) if s >= 0.0 => (END_STEP_TIME, OPER_EQ, duration(s)),
            Condition::StepTime(_) => return Err("a negative step time never ends a step".into()),
            Condition::TestTime(_) => return Err(
                "test-time ends (T >= d) are not a Maccor end type cyclerd writes; use a step time"
                    .into(),
            ),
            Condition::StepCapacity(_) => {
                return Err(
                    "capacity ends (Ah >= x) are not a Maccor end type cyclerd writes".into(),
                );
            }
            Condition::StepEnergy(_) => {
                return Err(
                    "energy ends (Wh >= x) are not a Maccor end type cyclerd writes".into(),
                );
            }
            _ => return Err("this termination has no Maccor end type yet".into()),
        };
        ends.children.push(end_entry(end_type, oper, goto, value));
    }
    let mut reports = Element::new("Reports");
    let record = a.record.or_native_default();
    let rules = [
        (REPORT_STEP_TIME, record.every_s.map(duration)),
        (REPORT_VOLTAGE, record.dv_v.map(decimal)),
        (REPORT_CURRENT, record.di_a.map(decimal)),
    ];
    for (report_type, value) in rules {
        if let Some(value) = value {
            reports.children.push(
                Element::new("ReportEntry")
                    .child(Element::text("ReportType", report_type))
                    .child(Element::text("Value", value)),
            );
        }
    }
    Ok(Element::new("TestStep")
        .child(Element::text("StepType", step_type))
        .child(Element::text("StepMode", mode))
        .child(Element::text("StepValue", value))
        .child(limits)
        .child(ends)
        .child(reports)
        .child(Element::text("Range", RANGE_AUTO))
        .child(Element::text("Option1", OPTION_OFF))
        .child(Element::text("Option2", OPTION_OFF))
        .child(Element::text("Option3", OPTION_OFF))
        .child(Element::text("StepNote", a.description.as_str())))
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;

    /// The 3-step protocol of both golden tests: CC charge, CV hold, rest.
    const THREE_STEPS: &str = "protocol: Golden\nversion: 1\nparams: {capacity: 2.5 Ah}\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nsteps:\n  - \"Charge at C/2 until 4.2 V\"\n  - \"Hold at 4.2 V until C/20\"\n  - \"Rest for 10 minutes\"\n";

    #[test]
    fn a_three_step_protocol_compiles_to_exactly_this_procedure() {
        let plan = Plan::from_yaml(THREE_STEPS, "golden.yaml").expect("valid protocol");
        let golden = r#"<?xml version="1.0" encoding="UTF-8"?>
<?maccor-application progid="Maccor Procedure File"?>
<MaccorTestProcedure>
  <header>
    <BuildTestVersion>
      <major>1</major>
      <minor>5</minor>
      <release>7006</release>
      <build>32043</build>
    </BuildTestVersion>
    <FileFormatVersion>
      <BTVersion>11</BTVersion>
    </FileFormatVersion>
    <ProcDesc>
      <desc>Golden</desc>
    </ProcDesc>
  </header>
  <ProcSteps>
    <TestStep>
      <StepType> Charge </StepType>
      <StepMode>Current </StepMode>
      <StepValue>1.25</StepValue>
      <Limits/>
      <Ends>
        <EndEntry>
          <EndType>Voltage </EndType>
          <SpecialType> </SpecialType>
          <Oper>&gt;= </Oper>
          <Step>002</Step>
          <Value>4.2</Value>
        </EndEntry>
      </Ends>
      <Reports>
        <ReportEntry>
          <ReportType>StepTime</ReportType>
          <Value>00:00:10</Value>
        </ReportEntry>
        <ReportEntry>
          <ReportType>Voltage </ReportType>
          <Value>0.01</Value>
        </ReportEntry>
      </Reports>
      <Range>A</Range>
      <Option1>N</Option1>
      <Option2>N</Option2>
      <Option3>N</Option3>
      <StepNote>Charge at C/2 until 4.2 V</StepNote>
    </TestStep>
    <TestStep>
      <StepType> Charge </StepType>
      <StepMode>Voltage </StepMode>
      <StepValue>4.2</StepValue>
      <Limits>
        <Current>5.0</Current>
      </Limits>
      <Ends>
        <EndEntry>
          <EndType>Current </EndType>
          <SpecialType> </SpecialType>
          <Oper>&lt;= </Oper>
          <Step>003</Step>
          <Value>0.125</Value>
        </EndEntry>
      </Ends>
      <Reports>
        <ReportEntry>
          <ReportType>StepTime</ReportType>
          <Value>00:00:10</Value>
        </ReportEntry>
        <ReportEntry>
          <ReportType>Voltage </ReportType>
          <Value>0.01</Value>
        </ReportEntry>
      </Reports>
      <Range>A</Range>
      <Option1>N</Option1>
      <Option2>N</Option2>
      <Option3>N</Option3>
      <StepNote>Hold at 4.2 V until C/20</StepNote>
    </TestStep>
    <TestStep>
      <StepType>  Rest  </StepType>
      <StepMode>        </StepMode>
      <StepValue></StepValue>
      <Limits/>
      <Ends>
        <EndEntry>
          <EndType>StepTime</EndType>
          <SpecialType> </SpecialType>
          <Oper> = </Oper>
          <Step>004</Step>
          <Value>00:10:00</Value>
        </EndEntry>
      </Ends>
      <Reports>
        <ReportEntry>
          <ReportType>StepTime</ReportType>
          <Value>00:00:10</Value>
        </ReportEntry>
        <ReportEntry>
          <ReportType>Voltage </ReportType>
          <Value>0.01</Value>
        </ReportEntry>
      </Reports>
      <Range>A</Range>
      <Option1>N</Option1>
      <Option2>N</Option2>
      <Option3>N</Option3>
      <StepNote>Rest for 10 minutes</StepNote>
    </TestStep>
    <TestStep>
      <StepType>  End   </StepType>
      <StepMode>        </StepMode>
      <StepValue></StepValue>
      <Limits/>
      <Ends/>
      <Reports/>
      <Range></Range>
      <Option1></Option1>
      <Option2></Option2>
      <Option3></Option3>
      <StepNote></StepNote>
    </TestStep>
  </ProcSteps>
</MaccorTestProcedure>
"#;
        assert_eq!(super::compile(&plan).expect("compiles").0, golden);
    }
}
