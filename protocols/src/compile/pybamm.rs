//! Plan -> PyBaMM experiment, as a Python list literal of step strings or as JSON.
//!
//! PyBaMM's sign convention is the opposite of the plan's (positive current = discharge), so
//! the strings carry magnitudes with the words Charge / Discharge, and the JSON form flips the
//! sign. A step becomes one string (`"Charge at 2.5 A for 1 hour or until 4.2 V"`); a CCCV
//! step becomes the CC string and the Hold string PyBaMM pairs; a top-level loop becomes a
//! cycle repeated with Python list multiplication (`*[("...", "...")] * 500`), with loops
//! nested inside it unrolled into the cycle, since PyBaMM cycles are flat.
//!
//! The JSON form is what `pybamm.Experiment.to_config()` writes (PyBaMM 26.10,
//! `Serialise.serialise_experiment`), so `Experiment.from_config` reads back every field:
//! `{"cycles": [[step, ...], ...]}` with every cycle written out, and each step
//! `{"type", "duration"?, "value"?, "terminations"?, "period"?, "tags"?, "description"}`:
//! `type` is `rest`, `current`, `c-rate`, `voltage`, `power` or `resistance`; `value` (absent
//! on a rest) in A, C, V, W or Ohm with PyBaMM's sign; `duration` and `period` in s, absent
//! when the step has none; `terminations` a list of `{"type": "voltage" | "current" |
//! "c-rate", "value", "operator"?}` with `operator` (`<` / `>`) only where the string writes
//! one. `from_config` ignores unknown keys, so any other spelling silently loses the field.
//!
//! The strings and the JSON mean what the source means to PyBaMM:
//! - A C-rate stays a C-rate (`Charge at C/3`), not its amps, which are wrong on a model of
//!   another capacity and change PyBaMM's default cap (2/C h for a C-rate step, 24 h
//!   otherwise). The plan holds amps only; the C-rate comes from re-parsing the step's
//!   `description` (the source string) with the plan's params, used only when it resolves to
//!   exactly the plan step's control and terminations. Structured steps (`cc: 1C`) and
//!   imported plans have no such source and are written in amps.
//! - A step without a duration is written without one, so PyBaMM applies the same default
//!   cap it applies to the source and keeps `uses_default_duration` (reaching that cap makes
//!   PyBaMM stop the experiment as infeasible; an explicit `for 2 hours` would not).
//! - A voltage `until` keeps `<` / `>` wherever the step's verb does not imply it, and
//!   wherever the source wrote one.
//! - Tags go to the JSON only: PyBaMM 26 no longer reads `[tag]` in a step string.
//!
//! PyBaMM cannot express jumps (any goto other than next), test-time, capacity, energy,
//! temperature or dV/dt terminations, more than one duration or one `until` per step (in the
//! strings), loop early exits, an `End` before the last step, chamber and profile steps
//! (dV/dI recording rules only choose which samples a cycler keeps; PyBaMM keeps its period). [`compile`] refuses them with a [`CompileError`]; [`compile_lossy`]
//! drops them and lists each drop. Safety limits are not part of a PyBaMM experiment (a
//! simulation has no cell to protect) and are not written.

use serde_json::{Value, json};

use super::{CompileError, Target};
use crate::plan::{ActionStep, Condition, Control, Goto, Plan, PlanStep, Termination};
use crate::pybamm::{Params, Written, parse_step};

/// PyBaMM's step verbs.
const REST: &str = "Rest";
const CHARGE: &str = "Charge";
const DISCHARGE: &str = "Discharge";
const HOLD: &str = "Hold";
/// JSON step `type` values.
const TYPE_REST: &str = "rest";
const TYPE_CURRENT: &str = "current";
const TYPE_C_RATE: &str = "c-rate";
const TYPE_VOLTAGE: &str = "voltage";
const TYPE_POWER: &str = "power";
const TYPE_RESISTANCE: &str = "resistance";
/// Unrolled steps allowed in one cycle, so a deeply nested plan fails clearly instead of
/// producing a file nobody can open.
const MAX_CYCLE_STEPS: usize = 100_000;
/// Indentation of the Python literal.
const INDENT: &str = "    ";

/// One PyBaMM step: the string and its JSON object.
#[derive(Clone)]
struct Step {
    text: String,
    json: Value,
}

/// A top-level item: a single step or a repeated cycle.
enum Item {
    Step(Step),
    Cycle { count: u32, steps: Vec<Step> },
}

/// Where a build records what it cannot express: an error when strict, a note when lossy.
struct Sink {
    target: Target,
    lossy: bool,
    dropped: Vec<String>,
    /// The plan's params, to re-read step descriptions with.
    params: Params,
}

impl Sink {
    /// Refuses (strict) or records the drop and lets the caller continue without it (lossy).
    fn refuse(
        &mut self,
        step: &str,
        description: &str,
        message: String,
    ) -> Result<(), CompileError> {
        if self.lossy {
            self.dropped
                .push(format!("{step} ({description}): {message}"));
            Ok(())
        } else {
            Err(CompileError {
                target: self.target,
                step: step.into(),
                description: description.into(),
                message,
            })
        }
    }

    fn refuse_step(&mut self, a: &ActionStep, message: String) -> Result<(), CompileError> {
        self.refuse(&a.path, &a.description, message)
    }
}

/// Compiles `plan` to a Python list literal for `pybamm.Experiment(...)`.
pub fn compile(plan: &Plan) -> Result<String, CompileError> {
    build(plan, Target::Pybamm, false).map(|(items, _)| python(&items))
}

/// Compiles `plan` to PyBaMM's JSON experiment configuration.
pub fn compile_json(plan: &Plan) -> Result<String, CompileError> {
    build(plan, Target::PybammJson, false).map(|(items, _)| json_config(&items))
}

/// Like [`compile`], but drops what PyBaMM cannot express instead of failing, and returns a
/// description of every drop so the user sees exactly how the simulation differs.
pub fn compile_lossy(plan: &Plan) -> (String, Vec<String>) {
    match build(plan, Target::Pybamm, true) {
        Ok((items, dropped)) => (python(&items), dropped),
        // A lossy build refuses nothing; only a structurally invalid plan gets here.
        Err(e) => ("[]\n".into(), vec![e.to_string()]),
    }
}

/// A number in the shortest text that reads back to the same f64 (never an exponent).
fn num(x: f64) -> String {
    format!("{x}")
}

/// A duration as people write it: whole hours or minutes where exact, else seconds.
fn duration(s: f64) -> String {
    let unit =
        |n: f64, one: &str, many: &str| format!("{} {}", num(n), if n == 1.0 { one } else { many });
    if s % 3600.0 == 0.0 {
        unit(s / 3600.0, "hour", "hours")
    } else if s % 60.0 == 0.0 {
        unit(s / 60.0, "minute", "minutes")
    } else {
        unit(s, "second", "seconds")
    }
}

#[allow(unreachable_patterns)] // the IR grows: new step kinds must land in the error arm
fn build(
    plan: &Plan,
    target: Target,
    lossy: bool,
) -> Result<(Vec<Item>, Vec<String>), CompileError> {
    plan.validate().map_err(|e| CompileError {
        target,
        step: "the protocol".into(),
        description: String::new(),
        message: e.to_string(),
    })?;
    let mut sink = Sink {
        target,
        lossy,
        dropped: Vec::new(),
        params: plan.params.clone(),
    };
    let mut items = Vec::new();
    let mut i = 0;
    let last = plan.steps.len() - 1;
    while i < plan.steps.len() {
        match &plan.steps[i] {
            PlanStep::Action(a) => {
                items.extend(action(a, target, &mut sink)?.into_iter().map(Item::Step));
                i += 1;
            }
            PlanStep::LoopStart { count, end, .. } => {
                let steps = unrolled(plan, i + 1, *end, target, &mut sink)?;
                if steps.is_empty() {
                    sink.dropped.push(format!(
                        "the loop at plan index {i}: every step of its body was dropped"
                    ));
                } else {
                    items.push(Item::Cycle {
                        count: *count,
                        steps,
                    });
                }
                loop_exit(plan, i, &mut sink)?;
                i = end + 1;
            }
            PlanStep::End if i == last => i += 1,
            PlanStep::End => {
                sink.refuse(
                    "the protocol",
                    "",
                    format!("an End at plan index {i} ends the test before the last step; PyBaMM runs every step"),
                )?;
                i += 1;
            }
            _ => {
                sink.refuse(
                    "the protocol",
                    "",
                    format!("the step at plan index {i} is of a kind PyBaMM cannot express"),
                )?;
                i += 1;
            }
        }
    }
    Ok((items, sink.dropped))
}

fn loop_exit(plan: &Plan, i: usize, sink: &mut Sink) -> Result<(), CompileError> {
    if let Some(PlanStep::LoopStart { until, .. }) = plan.steps.get(i)
        && !until.is_empty()
    {
        sink.refuse(
            "the protocol",
            "",
            format!("the loop at plan index {i} has an early exit (until); PyBaMM experiments run every cycle"),
        )?;
    }
    Ok(())
}

/// The steps of plan indices `from..to`, with inner loops unrolled.
#[allow(unreachable_patterns)] // the IR grows: new step kinds must land in the error arm
fn unrolled(
    plan: &Plan,
    from: usize,
    to: usize,
    target: Target,
    sink: &mut Sink,
) -> Result<Vec<Step>, CompileError> {
    let mut out = Vec::new();
    let mut i = from;
    while i < to {
        match &plan.steps[i] {
            PlanStep::Action(a) => {
                out.extend(action(a, target, sink)?);
                i += 1;
            }
            PlanStep::LoopStart { count, end, .. } => {
                loop_exit(plan, i, sink)?;
                let body = unrolled(plan, i + 1, *end, target, sink)?;
                let total = body
                    .len()
                    .saturating_mul(*count as usize)
                    .saturating_add(out.len());
                if total > MAX_CYCLE_STEPS {
                    return Err(CompileError {
                        target,
                        step: "the protocol".into(),
                        description: String::new(),
                        message: format!(
                            "unrolling the loop at plan index {i} inside a cycle gives over {MAX_CYCLE_STEPS} steps; PyBaMM cycles cannot nest loops"
                        ),
                    });
                }
                for _ in 0..*count {
                    out.extend(body.iter().cloned());
                }
                i = end + 1;
            }
            _ => {
                sink.refuse(
                    "the protocol",
                    "",
                    format!("the step at plan index {i} cannot appear inside a PyBaMM cycle"),
                )?;
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A C-rate as people write it: `C/n` where exact, else `xC`.
fn c_rate(c: f64) -> String {
    let n = (1.0 / c).round();
    if c < 1.0 && n > 1.0 && 1.0 / n == c {
        format!("C/{}", num(n))
    } else {
        format!("{}C", num(c))
    }
}

/// What the source string wrote (C-rates, operators), when the step's description is a
/// PyBaMM string that resolves to exactly this step; nothing otherwise (structured or
/// imported steps, the halves of a CCCV).
fn written(a: &ActionStep, params: &Params) -> Written {
    match parse_step(&a.description, params) {
        Ok(p) if p.control == a.control && p.terminations == a.terminations => p.written,
        _ => Written::default(),
    }
}

/// The instruction (verb and value), the JSON type and the PyBaMM-signed value (`None` for a
/// rest, which PyBaMM writes without one).
#[allow(unreachable_patterns)] // the IR grows: new controls must land in the error arm
fn instruction(
    control: Control,
    written_c_rate: Option<f64>,
) -> Option<(String, &'static str, Option<f64>)> {
    let verb = |x: f64| if x < 0.0 { DISCHARGE } else { CHARGE };
    Some(match control {
        Control::Rest => (REST.into(), TYPE_REST, None),
        Control::Current { amps } => match written_c_rate {
            Some(c) => (
                format!("{} at {}", verb(amps), c_rate(c)),
                TYPE_C_RATE,
                Some(if amps < 0.0 { c } else { -c }),
            ),
            None => (
                format!("{} at {} A", verb(amps), num(amps.abs())),
                TYPE_CURRENT,
                Some(-amps),
            ),
        },
        Control::Voltage { volts } => (
            format!("{HOLD} at {} V", num(volts)),
            TYPE_VOLTAGE,
            Some(volts),
        ),
        Control::Power { watts } => (
            format!("{} at {} W", verb(watts), num(watts.abs())),
            TYPE_POWER,
            Some(-watts),
        ),
        Control::Resistance { ohms } => (
            format!("{DISCHARGE} at {} Ohm", num(ohms)),
            TYPE_RESISTANCE,
            Some(ohms),
        ),
        _ => return None,
    })
}

/// One plan step as PyBaMM steps (two for a CCCV, none when a lossy build drops it).
#[allow(unreachable_patterns)] // the IR grows: new variants must land in the error arms
fn action(a: &ActionStep, target: Target, sink: &mut Sink) -> Result<Vec<Step>, CompileError> {
    let (lead, control) = match a.control {
        Control::Cccv { amps, volts } => {
            let cc = ActionStep {
                control: Control::Current { amps },
                terminations: vec![Termination {
                    condition: if amps < 0.0 {
                        Condition::VoltageAtMost(volts)
                    } else {
                        Condition::VoltageAtLeast(volts)
                    },
                    goto: Goto::Next,
                }],
                ..a.clone()
            };
            for t in &a.terminations {
                if !matches!(t.condition, Condition::CurrentMagnitudeAtMost(_)) {
                    sink.refuse_step(
                        a,
                        format!(
                            "{:?} on a CCCV step: PyBaMM runs CCCV as a CC and a Hold step, so only |I| cutoffs (on the Hold) keep their meaning",
                            t.condition
                        ),
                    )?;
                }
            }
            (Some(cc), Control::Voltage { volts })
        }
        c => (None, c),
    };
    let mut out = Vec::new();
    if let Some(cc) = lead {
        out.extend(single(&cc, cc.control, target, sink)?);
    }
    let rest = ActionStep {
        terminations: if matches!(a.control, Control::Cccv { .. }) {
            a.terminations
                .iter()
                .filter(|t| matches!(t.condition, Condition::CurrentMagnitudeAtMost(_)))
                .copied()
                .collect()
        } else {
            a.terminations.clone()
        },
        ..a.clone()
    };
    out.extend(single(&rest, control, target, sink)?);
    Ok(out)
}

#[allow(unreachable_patterns)] // the IR grows: new variants must land in the error arms
fn single(
    a: &ActionStep,
    control: Control,
    target: Target,
    sink: &mut Sink,
) -> Result<Option<Step>, CompileError> {
    let w = written(a, &sink.params);
    let Some((instr, kind, value)) = instruction(control, w.c_rate) else {
        sink.refuse_step(a, "PyBaMM has no step of this kind (chamber, profile and CCCV-in-one are not expressible)".into())?;
        return Ok(None);
    };
    let verb = instr.split(' ').next().unwrap_or(REST);
    let mut duration_s: Option<f64> = None;
    let mut untils: Vec<(String, Value)> = Vec::new(); // (in the string, in JSON)
    for t in &a.terminations {
        if t.goto != Goto::Next {
            sink.refuse_step(
                a,
                format!(
                    "{:?} jumps ({:?}); PyBaMM always continues with the next step",
                    t.condition, t.goto
                ),
            )?;
        }
        let volts = |v: f64, op: &str, default_verb: &str| {
            if verb == default_verb && !w.until_operator {
                (
                    format!("{} V", num(v)),
                    json!({"type": TYPE_VOLTAGE, "value": v}),
                )
            } else {
                (
                    format!("{op} {} V", num(v)),
                    json!({"type": TYPE_VOLTAGE, "value": v, "operator": op}),
                )
            }
        };
        match t.condition {
            Condition::StepTime(s) => match duration_s {
                None => duration_s = Some(s),
                Some(_) => sink.refuse_step(
                    a,
                    "two step-time terminations; PyBaMM takes one duration".into(),
                )?,
            },
            Condition::VoltageAtLeast(v) => untils.push(volts(v, ">", CHARGE)),
            Condition::VoltageAtMost(v) => untils.push(volts(v, "<", DISCHARGE)),
            Condition::CurrentMagnitudeAtMost(x) => untils.push(match w.until_c_rate {
                Some(c) => (c_rate(c), json!({"type": TYPE_C_RATE, "value": c})),
                None => (
                    format!("{} A", num(x)),
                    json!({"type": TYPE_CURRENT, "value": x}),
                ),
            }),
            other => sink.refuse_step(
                a,
                format!("{other:?}: PyBaMM steps end on a duration, a voltage or a current only"),
            )?,
        }
    }
    if target == Target::Pybamm && untils.len() > 1 {
        sink.refuse_step(
            a,
            "more than one voltage/current termination; a PyBaMM step string has one \"until\""
                .into(),
        )?;
        untils.truncate(1);
    }
    if duration_s.is_none() && untils.is_empty() {
        sink.refuse_step(
            a,
            "no termination PyBaMM can express is left, so the step is dropped".into(),
        )?;
        return Ok(None);
    }
    // dV/dI recording rules decide which samples a cycler keeps, not what the cell goes
    // through; a simulation keeps its fixed period (`every`) and loses nothing of the protocol.
    let r = &a.record;
    let mut text = instr;
    if let Some(s) = duration_s {
        text += &format!(" for {}", duration(s));
    }
    if let Some((u, _)) = untils.first() {
        text += if duration_s.is_some() {
            " or until "
        } else {
            " until "
        };
        text += u;
    }
    if let Some(p) = r.every_s {
        text += &format!(" ({} period)", duration(p));
    }
    // The keys `to_config()` writes, each only where PyBaMM writes it.
    let mut json = serde_json::Map::new();
    json.insert("type".into(), kind.into());
    if let Some(d) = duration_s {
        json.insert("duration".into(), d.into());
    }
    if let Some(v) = value {
        json.insert("value".into(), v.into());
    }
    if !untils.is_empty() {
        json.insert(
            "terminations".into(),
            untils.iter().map(|(_, j)| j.clone()).collect(),
        );
    }
    if let Some(p) = r.every_s {
        json.insert("period".into(), p.into());
    }
    if !a.tags.is_empty() {
        json.insert("tags".into(), a.tags.clone().into());
    }
    json.insert("description".into(), text.clone().into());
    let json = Value::Object(json);
    Ok(Some(Step { text, json }))
}

/// A Python string literal (JSON escapes are valid Python escapes).
fn literal(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn python(items: &[Item]) -> String {
    let mut out = String::from("[\n");
    for item in items {
        match item {
            Item::Step(s) => out += &format!("{INDENT}{},\n", literal(&s.text)),
            Item::Cycle { count, steps } => {
                out += &format!("{INDENT}*[\n{INDENT}{INDENT}(\n");
                for s in steps {
                    out += &format!("{INDENT}{INDENT}{INDENT}{},\n", literal(&s.text));
                }
                out += &format!("{INDENT}{INDENT})\n{INDENT}] * {count},\n");
            }
        }
    }
    out + "]\n"
}

fn json_config(items: &[Item]) -> String {
    let mut cycles: Vec<Value> = Vec::new();
    for item in items {
        match item {
            Item::Step(s) => cycles.push(json!([s.json])),
            Item::Cycle { count, steps } => {
                let cycle: Vec<Value> = steps.iter().map(|s| s.json.clone()).collect();
                cycles.extend((0..*count).map(|_| Value::Array(cycle.clone())));
            }
        }
    }
    // A JSON value built from strings, finite numbers and nulls always serialises.
    serde_json::to_string_pretty(&json!({ "cycles": cycles })).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::plan_compare::{
        act, deploy_plans, looped, plan, split_cccv, unrolled_actions,
    };
    use crate::plan::{Record, Safety};

    fn three_steps() -> Plan {
        plan(vec![
            act(Control::Rest, &[(Condition::StepTime(600.0), Goto::Next)]),
            act(
                Control::Current { amps: 1.25 },
                &[(Condition::VoltageAtLeast(4.2), Goto::Next)],
            ),
            act(
                Control::Voltage { volts: 4.2 },
                &[
                    (Condition::StepTime(7200.0), Goto::Next),
                    (Condition::CurrentMagnitudeAtMost(0.125), Goto::Next),
                ],
            ),
            PlanStep::End,
        ])
    }

    /// The strings of a compiled experiment with `*[(...)] * N` cycles expanded, read the way
    /// Python evaluates the literal this module writes.
    fn strings(python: &str) -> Vec<String> {
        let mut stack: Vec<Vec<String>> = vec![Vec::new()];
        for line in python.lines().map(str::trim) {
            if line == "*[" {
                stack.push(Vec::new());
            } else if let Some(n) = line.strip_prefix("] * ").and_then(|n| n.strip_suffix(',')) {
                let body = stack.pop().unwrap();
                let n: usize = n.parse().unwrap();
                stack
                    .last_mut()
                    .unwrap()
                    .extend((0..n).flat_map(|_| body.clone()));
            } else if line.starts_with('"') {
                stack
                    .last_mut()
                    .unwrap()
                    .push(serde_json::from_str(line.trim_end_matches(',')).unwrap());
            }
        }
        stack.pop().unwrap()
    }

    /// Re-parses every emitted string with the crate's PyBaMM parser and compares it with the
    /// plan's steps in execution order.
    fn assert_reparses_as(p: &Plan, python: &str) {
        let expected = split_cccv(p);
        let expected = unrolled_actions(&expected, 0, expected.steps.len());
        let got = strings(python);
        assert_eq!(got.len(), expected.len(), "{python}");
        for (text, a) in got.iter().zip(&expected) {
            let parsed = parse_step(text, &p.params).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(parsed.control, a.control, "{text}");
            let mut want: Vec<String> = a
                .terminations
                .iter()
                .map(|t| format!("{:?}", t.condition))
                .collect();
            let mut have: Vec<String> = parsed
                .terminations
                .iter()
                .map(|t| format!("{:?}", t.condition))
                .collect();
            want.sort();
            have.sort();
            assert_eq!(have, want, "{text}");
            assert_eq!(parsed.period_s, a.record.every_s, "{text}");
        }
    }

    #[test]
    fn three_step_protocol_compiles_to_the_exact_python_list() {
        assert_eq!(
            compile(&three_steps()).unwrap(),
            "[\n    \"Rest for 10 minutes\",\n    \"Charge at 1.25 A until 4.2 V\",\n    \"Hold at 4.2 V for 2 hours or until 0.125 A\",\n]\n"
        );
    }

    #[test]
    fn three_step_protocol_compiles_to_the_json_pybamm_to_config_writes() {
        let json: Value = serde_json::from_str(&compile_json(&three_steps()).unwrap()).unwrap();
        assert_eq!(
            json,
            json!({"cycles": [
                [{"type": "rest", "duration": 600.0, "description": "Rest for 10 minutes"}],
                [{"type": "current", "value": -1.25, "terminations": [{"type": "voltage", "value": 4.2}], "description": "Charge at 1.25 A until 4.2 V"}],
                [{"type": "voltage", "duration": 7200.0, "value": 4.2, "terminations": [{"type": "current", "value": 0.125}], "description": "Hold at 4.2 V for 2 hours or until 0.125 A"}],
            ]})
        );
    }

    #[test]
    fn every_deploy_protocol_reparses_as_the_same_steps_or_is_refused_by_name() {
        let mut compiled = 0;
        for (name, p) in deploy_plans() {
            match compile(&p) {
                Ok(python) => {
                    assert_reparses_as(&p, &python);
                    let json: Value = serde_json::from_str(&compile_json(&p).unwrap()).unwrap();
                    let steps: usize = json["cycles"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c.as_array().unwrap().len())
                        .sum();
                    assert_eq!(steps, strings(&python).len(), "{name}");
                    compiled += 1;
                }
                Err(e) => {
                    assert_eq!(e.target, Target::Pybamm, "{name}");
                    assert!(!e.step.is_empty() && !e.message.is_empty(), "{name}: {e}");
                    eprintln!("{name}: refused: {e}");
                }
            }
        }
        assert!(compiled >= 2, "only {compiled} deploy protocols compiled");
    }

    #[test]
    fn c_rates_are_kept_from_source_strings_and_structured_steps_are_written_in_amps() {
        let p = Plan::from_yaml(
            "protocol: t\nversion: 1\nparams:\n  capacity: 2.5 Ah\n  v_max: 4.2 V\nsteps:\n  - \"Charge at C/2 until ${v_max}\"\n  - \"Hold at ${v_max} until C/20\"\n  - cc: 1C\n    direction: discharge\n    until: [\"V <= 3 V\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            compile(&p).unwrap(),
            "[\n    \"Charge at C/2 until 4.2 V\",\n    \"Hold at 4.2 V until C/20\",\n    \"Discharge at 2.5 A until 3 V\",\n]\n"
        );
        let json: Value = serde_json::from_str(&compile_json(&p).unwrap()).unwrap();
        assert_eq!(json["cycles"][0][0]["type"], "c-rate");
        assert_eq!(json["cycles"][0][0]["value"], -0.5);
        assert_eq!(
            json["cycles"][1][0]["terminations"],
            json!([{"type": "c-rate", "value": 0.05}])
        );
        assert_eq!(json["cycles"][2][0]["type"], "current");
    }

    #[test]
    fn nested_loops_unroll_inside_a_repeated_cycle() {
        let mut p = plan(vec![
            looped(500, true, 7),
            act(
                Control::Cccv {
                    amps: 2.5,
                    volts: 4.2,
                },
                &[(Condition::CurrentMagnitudeAtMost(0.125), Goto::Next)],
            ),
            looped(2, false, 5),
            act(
                Control::Power { watts: -5.0 },
                &[(Condition::StepTime(30.0), Goto::Next)],
            ),
            act(
                Control::Resistance { ohms: 4.0 },
                &[(Condition::VoltageAtMost(3.0), Goto::Next)],
            ),
            PlanStep::LoopEnd { start: 2 },
            act(Control::Rest, &[(Condition::StepTime(90.0), Goto::Next)]),
            PlanStep::LoopEnd { start: 0 },
            PlanStep::End,
        ]);
        if let PlanStep::Action(a) = &mut p.steps[6] {
            a.record = Record {
                every_s: Some(10.0),
                ..Record::default()
            };
        }
        p.safety = Safety {
            voltage_min: Some(2.5),
            ..Safety::default()
        };
        let python = compile(&p).unwrap();
        assert_eq!(
            python,
            "[\n    *[\n        (\n            \"Charge at 2.5 A until 4.2 V\",\n            \"Hold at 4.2 V until 0.125 A\",\n            \"Discharge at 5 W for 30 seconds\",\n            \"Discharge at 4 Ohm until 3 V\",\n            \"Discharge at 5 W for 30 seconds\",\n            \"Discharge at 4 Ohm until 3 V\",\n            \"Rest for 90 seconds (10 seconds period)\",\n        )\n    ] * 500,\n]\n"
        );
        assert_reparses_as(&p, &python);
    }

    #[test]
    fn what_pybamm_cannot_express_is_an_error_naming_the_step_and_target() {
        for (condition, goto) in [
            (Condition::StepTime(10.0), Goto::End),
            (Condition::StepCapacity(1.0), Goto::Next),
            (Condition::TestTime(10.0), Goto::Next),
            (Condition::StepEnergy(1.0), Goto::Next),
        ] {
            let p = plan(vec![
                act(Control::Current { amps: 1.0 }, &[(condition, goto)]),
                PlanStep::End,
            ]);
            for (target, result) in [
                (Target::Pybamm, compile(&p)),
                (Target::PybammJson, compile_json(&p)),
            ] {
                let e = result.unwrap_err();
                assert_eq!(e.target, target);
                assert!(
                    e.to_string()
                        .starts_with(&format!("{target} cannot express steps[x] (test step)")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn lossy_compilation_drops_only_what_it_lists() {
        let p = plan(vec![
            act(
                Control::Current { amps: -1.0 },
                &[
                    (Condition::VoltageAtMost(3.0), Goto::Step(1)),
                    (Condition::StepCapacity(2.0), Goto::Next),
                ],
            ),
            act(Control::Rest, &[(Condition::TestTime(100.0), Goto::Next)]),
            PlanStep::End,
        ]);
        let (python, dropped) = compile_lossy(&p);
        assert_eq!(python, "[\n    \"Discharge at 1 A until 3 V\",\n]\n");
        assert_eq!(dropped.len(), 4, "{dropped:#?}");
        assert!(dropped[0].contains("jumps"), "{dropped:#?}");
        assert!(dropped[1].contains("StepCapacity"), "{dropped:#?}");
        assert!(dropped[2].contains("TestTime"), "{dropped:#?}");
        assert!(dropped[3].contains("step is dropped"), "{dropped:#?}");
    }
}
