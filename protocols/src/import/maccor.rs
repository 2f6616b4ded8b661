//! Maccor procedure file (.000, XML) -> plan.
//!
//! Reads what [`crate::compile::maccor`] writes and the plain procedures the Maccor software
//! writes: Charge/Dischrge/Rest steps in Current, Voltage or Power mode, Voltage/Current/StepTime
//! ends with gotos, `Do N`/`Loop N` loops (with `AdvCycle` just before `Loop N` for cycle
//! counting) and `End`. Anything else (CCCV as a Current step with a Voltage limit, C-rate
//! values, other end types, resistance mode...) is an [`ImportError`] naming the step, never a
//! guess.

use super::{ImportError, SourceKind};
use crate::compile::maccor::{
    END_CURRENT, END_LOOP_COUNT, END_STEP_TIME, END_VOLTAGE, MAX_LOOP_DEPTH, MODE_CURRENT,
    MODE_POWER, MODE_VOLTAGE, OPER_EQ, OPER_GE, OPER_LE, REPORT_CURRENT, REPORT_STEP_TIME,
    REPORT_VOLTAGE, ROOT, TYPE_ADV_CYCLE, TYPE_CHARGE, TYPE_DISCHARGE, TYPE_END, TYPE_REST,
};
use crate::compile::native::parse_number;
use crate::plan::{
    ActionStep, Condition, Control, Goto, Plan, PlanStep, Record, Safety, Termination,
};
use crate::xml::Element;

/// What a `TestStep` is, before gotos are resolved.
enum Kind<'a> {
    Action {
        element: &'a Element,
        control: Control,
    },
    Do(usize),
    Loop(usize),
    AdvCycle,
    End,
}

/// Reads a Maccor procedure; `origin` (the file name) prefixes errors.
pub fn import(text: &str, origin: &str) -> Result<Plan, ImportError> {
    let err = ImportError::builder(SourceKind::Maccor, origin);
    let root = super::xml_root(text, ROOT, &err)?;
    let name = root
        .find("header")
        .and_then(|h| h.find("ProcDesc"))
        .and_then(|d| d.find("desc"))
        .map(|d| d.text_or_empty().trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| origin.to_owned());
    let proc_steps = root
        .find("ProcSteps")
        .ok_or_else(|| err(ROOT.into(), "expected a <ProcSteps> element".into()))?;
    let elements = &proc_steps.children;
    if let Some(other) = elements.iter().find(|e| e.name != "TestStep") {
        return Err(err(
            "ProcSteps".into(),
            format!("expected only <TestStep> elements, found <{}>", other.name),
        ));
    }
    let at = |k: usize| format!("step {}", k + 1);

    // Classify every step.
    let kinds = elements
        .iter()
        .enumerate()
        .map(|(k, e)| classify(e).map_err(|m| err(at(k), m)))
        .collect::<Result<Vec<_>, _>>()?;

    // Pair loops, and give every Maccor step its plan index (AdvCycle has none).
    let mut plan_index: Vec<Option<usize>> = vec![None; kinds.len()];
    let mut open: Vec<(usize, usize)> = Vec::new(); // (Maccor step, level)
    let mut loop_of_do: Vec<Option<usize>> = vec![None; kinds.len()];
    let mut next = 0usize;
    for (k, kind) in kinds.iter().enumerate() {
        match kind {
            Kind::Do(n) => open.push((k, *n)),
            Kind::Loop(n) => match open.pop() {
                Some((d, level)) if level == *n => loop_of_do[d] = Some(k),
                Some((d, level)) => {
                    return Err(err(
                        at(k),
                        format!(
                            "Loop {n} closes Do {level} of step {}: expected Loop {level}",
                            d + 1
                        ),
                    ));
                }
                None => return Err(err(at(k), format!("Loop {n} without a Do {n} before it"))),
            },
            Kind::AdvCycle => {
                if !matches!(kinds.get(k + 1), Some(Kind::Loop(_))) {
                    return Err(err(
                        at(k),
                        "expected AdvCycle directly before a Loop step (where cyclerd counts a cycle per pass)".into(),
                    ));
                }
                continue;
            }
            _ => {}
        }
        plan_index[k] = Some(next);
        next += 1;
    }
    if let Some((d, level)) = open.pop() {
        return Err(err(
            at(d),
            format!("Do {level} is never closed by a Loop {level}"),
        ));
    }

    // Resolves a 1-based `Step` target of an end of Maccor step `k`.
    let resolve = |k: usize, target: usize| -> Result<Goto, String> {
        if target == k + 2 {
            return Ok(Goto::Next);
        }
        match kinds.get(target.wrapping_sub(1)) {
            Some(Kind::End) => Ok(Goto::End),
            Some(Kind::Action { .. } | Kind::Do(_)) => {
                Ok(Goto::Step(plan_index[target - 1].unwrap_or_default()))
            }
            Some(Kind::Loop(_) | Kind::AdvCycle) => Err(format!(
                "an end jumps to step {target}, a Loop/AdvCycle step: expected a jump to an action, Do or End step"
            )),
            None => Err(format!(
                "an end jumps to step {target}, but the procedure has {} steps",
                kinds.len()
            )),
        }
    };

    let mut steps = Vec::with_capacity(next);
    for (k, kind) in kinds.iter().enumerate() {
        match kind {
            Kind::Action { element, control } => {
                let terminations =
                    terminations(element, |t| resolve(k, t)).map_err(|m| err(at(k), m))?;
                let note = element.find("StepNote").map(|n| n.text_or_empty().trim());
                let description = match note {
                    Some(n) if !n.is_empty() => n.to_owned(),
                    _ => summary(element),
                };
                steps.push(PlanStep::Action(ActionStep {
                    path: at(k),
                    description,
                    control: *control,
                    terminations,
                    record: record(element).map_err(|m| err(at(k), m))?,
                    ..ActionStep::default()
                }));
            }
            Kind::Do(_) => {
                let l = loop_of_do[k].unwrap_or(k);
                let count = loop_count(&elements[l], l).map_err(|m| err(at(l), m))?;
                steps.push(PlanStep::LoopStart {
                    count,
                    cycle: matches!(kinds.get(l.wrapping_sub(1)), Some(Kind::AdvCycle)),
                    end: plan_index[l].unwrap_or_default(),
                    until: Vec::new(),
                });
            }
            Kind::Loop(_) => {
                let d = (0..k)
                    .rev()
                    .find(|&d| loop_of_do[d] == Some(k))
                    .unwrap_or_default();
                steps.push(PlanStep::LoopEnd {
                    start: plan_index[d].unwrap_or_default(),
                });
            }
            Kind::AdvCycle => {}
            Kind::End => steps.push(PlanStep::End),
        }
    }
    let plan = super::imported(name, text, Safety::default(), steps);
    plan.validate()
        .map_err(|e| err("procedure".into(), e.to_string()))?;
    Ok(plan)
}

/// The text of child `name`, or "" when absent.
fn field<'a>(e: &'a Element, name: &str) -> &'a str {
    e.find(name).map(Element::text_or_empty).unwrap_or("")
}

fn classify(e: &Element) -> Result<Kind<'_>, String> {
    let step_type = field(e, "StepType").trim();
    let mode = field(e, "StepMode").trim();
    let value = field(e, "StepValue").trim();
    let same = |spelling: &str| step_type == spelling.trim();
    if let Some(n) = step_type.strip_prefix("Do ") {
        return level(n).map(Kind::Do);
    }
    if let Some(n) = step_type.strip_prefix("Loop ") {
        return level(n).map(Kind::Loop);
    }
    if same(TYPE_ADV_CYCLE) {
        return Ok(Kind::AdvCycle);
    }
    if same(TYPE_END) {
        return Ok(Kind::End);
    }
    let charge = if same(TYPE_CHARGE) {
        true
    } else if same(TYPE_DISCHARGE) {
        false
    } else if same(TYPE_REST) {
        if !mode.is_empty() {
            return Err(format!(
                "a Rest step has StepMode {mode:?}: expected it blank"
            ));
        }
        return Ok(Kind::Action {
            element: e,
            control: Control::Rest,
        });
    } else {
        return Err(format!(
            "StepType {step_type:?}: expected Charge, Dischrge, Rest, Do N, Loop N, AdvCycle or End"
        ));
    };
    if value.ends_with(['C', 'c']) {
        return Err(format!(
            "StepValue {value:?} is a C-rate: a procedure does not carry the cell capacity; write the current in amps"
        ));
    }
    let x = parse_number(value)
        .filter(|x| *x >= 0.0)
        .ok_or_else(|| format!("StepValue {value:?}: expected a non-negative number"))?;
    let signed = if charge { x } else { -x };
    let limits: Vec<&Element> = e
        .find("Limits")
        .map(|l| l.children.iter().collect())
        .unwrap_or_default();
    let limit_names: Vec<&str> = limits.iter().map(|l| l.name.as_str()).collect();
    let control = if mode == MODE_CURRENT.trim() {
        match limits.as_slice() {
            [] => Control::Current { amps: signed },
            // Maccor's CCCV: a Current step with a Voltage limit.
            [l] if l.name == "Voltage" => Control::Cccv {
                amps: signed,
                volts: parse_number(l.text_or_empty())
                    .filter(|v| *v >= 0.0)
                    .ok_or_else(|| {
                        format!("Voltage limit {:?}: expected a number", l.text_or_empty())
                    })?,
            },
            _ => {
                return Err(format!(
                    "a Current step with limits {:?}: expected none, or a single Voltage limit (CCCV)",
                    limits.iter().map(|l| l.name.as_str()).collect::<Vec<_>>()
                ));
            }
        }
    } else if mode == MODE_VOLTAGE.trim() {
        // A Current limit is the compliance current of the hold; the plan takes it from safety.
        if let Some(other) = limit_names.iter().find(|l| **l != "Current") {
            return Err(format!(
                "a Voltage step with a {other} limit: expected only a Current limit"
            ));
        }
        Control::Voltage { volts: x }
    } else if mode == MODE_POWER.trim() {
        if !limits.is_empty() {
            return Err(format!(
                "a Power step with limits {limit_names:?}: expected no limits"
            ));
        }
        Control::Power { watts: signed }
    } else {
        return Err(format!(
            "StepMode {mode:?}: expected Current, Voltage or Power"
        ));
    };
    Ok(Kind::Action {
        element: e,
        control,
    })
}

fn level(n: &str) -> Result<usize, String> {
    n.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LOOP_DEPTH).contains(n))
        .ok_or_else(|| format!("loop level {n:?}: expected 1 to {MAX_LOOP_DEPTH}"))
}

/// The pass count of a `Loop N` step: its single `Loop Cnt = n` end, which must leave the loop
/// (jump to the step after it).
fn loop_count(e: &Element, k: usize) -> Result<u32, String> {
    let entries = e
        .find("Ends")
        .map(|x| x.children.as_slice())
        .unwrap_or_default();
    let [entry] = entries else {
        return Err(format!(
            "a Loop step has {} ends: expected exactly one Loop Cnt end",
            entries.len()
        ));
    };
    if field(entry, "EndType").trim() != END_LOOP_COUNT
        || field(entry, "Oper").trim() != OPER_EQ.trim()
    {
        return Err("a Loop step's end: expected EndType Loop Cnt with Oper =".into());
    }
    let step = field(entry, "Step").trim();
    if step.parse::<usize>().ok() != Some(k + 2) {
        return Err(format!(
            "the Loop Cnt end jumps to step {step:?}: expected {:03}, the step after the loop",
            k + 2
        ));
    }
    let value = field(entry, "Value").trim();
    value
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("Loop Cnt {value:?}: expected a whole number of passes, at least 1"))
}

fn terminations(
    e: &Element,
    resolve: impl Fn(usize) -> Result<Goto, String>,
) -> Result<Vec<Termination>, String> {
    let mut out = Vec::new();
    for (n, entry) in e
        .find("Ends")
        .map(|x| x.children.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let fail = |m: String| format!("end {}: {m}", n + 1);
        if entry.name != "EndEntry" {
            return Err(fail(format!("expected <EndEntry>, found <{}>", entry.name)));
        }
        let end_type = field(entry, "EndType").trim();
        let oper = field(entry, "Oper").trim();
        let value = field(entry, "Value").trim();
        let step = field(entry, "Step").trim();
        let target = step
            .parse::<usize>()
            .ok()
            .ok_or_else(|| fail(format!("Step {step:?}: expected a step number such as 003")))?;
        let goto = resolve(target).map_err(fail)?;
        let number = || {
            parse_number(value)
                .filter(|x| *x >= 0.0)
                .ok_or_else(|| fail(format!("Value {value:?}: expected a non-negative number")))
        };
        let condition = if end_type == END_VOLTAGE.trim() && oper == OPER_GE.trim() {
            Condition::VoltageAtLeast(number()?)
        } else if end_type == END_VOLTAGE.trim() && oper == OPER_LE.trim() {
            Condition::VoltageAtMost(number()?)
        } else if end_type == END_CURRENT.trim() && oper == OPER_LE.trim() {
            Condition::CurrentMagnitudeAtMost(number()?)
        } else if end_type == END_STEP_TIME && (oper == OPER_EQ.trim() || oper == OPER_GE.trim()) {
            Condition::StepTime(parse_duration(value).ok_or_else(|| {
                fail(format!(
                    "StepTime {value:?}: expected hh:mm:ss (such as 00:15:00 or ::.01)"
                ))
            })?)
        } else {
            return Err(fail(format!(
                "EndType {end_type:?} with Oper {oper:?}: expected Voltage >= or <=, Current <=, or StepTime ="
            )));
        };
        out.push(Termination { condition, goto });
    }
    Ok(out)
}

/// The step's `Reports` as its record rule.
fn record(e: &Element) -> Result<Record, String> {
    let mut r = Record::default();
    for entry in e
        .find("Reports")
        .map(|x| x.children.as_slice())
        .unwrap_or_default()
    {
        let kind = field(entry, "ReportType").trim();
        let value = field(entry, "Value").trim();
        let bad = || format!("report {kind} {value:?}: expected a non-negative value");
        let number = || parse_number(value).filter(|x| *x >= 0.0).ok_or_else(bad);
        if kind == REPORT_STEP_TIME.trim() {
            r.every_s = Some(parse_duration(value).ok_or_else(bad)?);
        } else if kind == REPORT_VOLTAGE.trim() {
            r.dv_v = Some(number()?);
        } else if kind == REPORT_CURRENT.trim() {
            r.di_a = Some(number()?);
        } else {
            return Err(format!(
                "ReportType {kind:?}: expected StepTime, Voltage or Current"
            ));
        }
    }
    Ok(r)
}

/// Parses Maccor's `hh:mm:ss` (any part may be empty: `::.01` is 10 ms).
pub(crate) fn parse_duration(s: &str) -> Option<f64> {
    let parts: Vec<&str> = s.split(':').collect();
    let [h, m, sec] = parts.as_slice() else {
        return None;
    };
    let part = |p: &str| {
        if p.trim().is_empty() {
            Some(0.0)
        } else {
            parse_number(p).filter(|x| *x >= 0.0)
        }
    };
    Some(part(h)? * 3600.0 + part(m)? * 60.0 + part(sec)?).filter(|x| x.is_finite())
}

/// "Charge Current 1.25" when a step has no note: what the step does, as Maccor shows it.
fn summary(e: &Element) -> String {
    ["StepType", "StepMode", "StepValue"]
        .iter()
        .map(|f| field(e, f).trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::import;
    use crate::plan::{Condition, Control, Goto, PlanStep};

    fn step(step_type: &str, mode: &str, value: &str, ends: &str) -> String {
        format!(
            "<TestStep><StepType>{step_type}</StepType><StepMode>{mode}</StepMode><StepValue>{value}</StepValue><Limits/><Ends>{ends}</Ends><Reports/></TestStep>"
        )
    }

    fn end(end_type: &str, oper: &str, step: &str, value: &str) -> String {
        format!(
            "<EndEntry><EndType>{end_type}</EndType><Oper>{oper}</Oper><Step>{step}</Step><Value>{value}</Value></EndEntry>"
        )
    }

    fn procedure(steps: &[String]) -> String {
        format!(
            "<?xml version=\"1.0\"?><?maccor-application progid=\"Maccor Procedure File\"?><MaccorTestProcedure><header><ProcDesc><desc>t</desc></ProcDesc></header><ProcSteps>{}</ProcSteps></MaccorTestProcedure>",
            steps.concat()
        )
    }

    #[test]
    fn a_counted_cycle_loop_with_adv_cycle_reads_as_a_cycling_loop() {
        let text = procedure(&[
            step("  Do 1  ", "", "", ""),
            step(
                "Dischrge",
                "Current ",
                "2.0",
                &end("Voltage ", "&lt;= ", "003", "3.0"),
            ),
            step("AdvCycle", "", "", ""),
            step(" Loop 1 ", "", "", &end("Loop Cnt", " = ", "005", "20")),
            step("  End   ", "", "", ""),
        ]);
        let plan = import(&text, "p.000").expect("valid procedure");
        assert_eq!(
            plan.steps[0],
            PlanStep::LoopStart {
                count: 20,
                cycle: true,
                end: 2,
                until: vec![]
            }
        );
        let PlanStep::Action(a) = &plan.steps[1] else {
            panic!("{plan:?}")
        };
        assert_eq!(a.control, Control::Current { amps: -2.0 });
        assert_eq!(a.terminations[0].condition, Condition::VoltageAtMost(3.0));
        assert_eq!(a.terminations[0].goto, Goto::Next);
        assert_eq!(plan.steps[2], PlanStep::LoopEnd { start: 0 });
    }

    #[test]
    fn malformed_procedures_are_errors_saying_where_and_what_was_expected() {
        let cases = [
            ("<MaccorTestProcedure><ProcSteps>", "never closed"),
            ("<Other/>", "expected <MaccorTestProcedure>"),
            (
                &procedure(&[step("Charge", "Current ", "1C", "")]),
                "C-rate",
            ),
            (
                &procedure(&[step(
                    "Charge",
                    "Current ",
                    "1",
                    &end("Voltage ", "&gt;= ", "009", "4.2"),
                )]),
                "jumps to step 9",
            ),
            (
                &procedure(&[step(" Loop 1 ", "", "", "")]),
                "without a Do 1",
            ),
            (
                &procedure(&[step(
                    "Charge",
                    "Current ",
                    "1",
                    &end("StepTime", " = ", "002", "1 hour"),
                )]),
                "hh:mm:ss",
            ),
            (
                &procedure(&[step("Discharge", "Current ", "1", "")]),
                "expected Charge, Dischrge",
            ),
        ];
        for (text, expected) in cases {
            let e = import(text, "p.000").unwrap_err();
            assert!(e.location.is_some(), "{e}");
            assert!(
                e.to_string().contains(expected),
                "{e} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn colon_durations_with_empty_fields_are_read() {
        assert_eq!(super::parse_duration("::.01"), Some(0.01));
        assert_eq!(super::parse_duration("01:30:00"), Some(5400.0));
        assert_eq!(super::parse_duration("1:30"), None);
    }
}
