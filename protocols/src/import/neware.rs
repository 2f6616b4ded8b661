//! Neware BTS step file (XML) -> plan.
//!
//! Reads what [`crate::compile::neware`] writes and the plain step files BTS writes: CC, CV and
//! rest steps with their stop fields (`Stop_Volt`, `Stop_Curr`, `Time`) and conditions, cycle
//! steps, end steps, the `Whole_Prt/Protect` voltage window and current limit, and the
//! `Whole_Prt/Record` logging rule (a step's own `Record` overrides it), and voltage-scan steps
//! (Step_Type 25, written by aurora-unicycler) as a voltage staircase ([`super::sweep`]).
//! Anything else (CCCV in one step, pause, C-rate-only values, capacity stops, per-step protection...)
//! is an [`ImportError`] naming the step, never a guess.

use super::{ImportError, SourceKind};
use crate::compile::native::parse_number;
use crate::compile::neware::{
    CC_CHARGE, CC_DISCHARGE, CCCV_CHARGE, CCCV_DISCHARGE, CMP_GE, CMP_GT, CMP_LE, CMP_LT,
    COND_COMPARE, COND_CURRENT, COND_JUMP, COND_PREFIX, COND_TIME, COND_TYPE, COND_VALUE,
    COND_VOLTAGE, CONFIG, CONFIG_TYPE, CV_CHARGE, CV_DISCHARGE, CYCLE, END, JUMP_NEXT,
    JUMP_PROTECT, JUMP_STOP, MA_PER_A, MS_PER_S, PAUSE, RECORD_CURR, RECORD_TIME, RECORD_VOLT,
    REST, ROOT, TENTH_MV_PER_V, VOLTAGE_SCAN,
};
use crate::plan::{
    ActionStep, Condition, Control, Goto, Plan, PlanStep, Record, Safety, Termination,
};
use crate::xml::Element;

/// Step children beside `Limit`: a step's own logging rule (read like `Whole_Prt/Record`).
const IGNORED_STEP_CHILDREN: [&str; 1] = ["Record"];

/// A cycle step: body from Neware step `start` to the step before `end` (1-based ids).
struct Cycle {
    start: usize,
    end: usize,
    count: u32,
}

/// Reads a Neware step file; `origin` (the file name) prefixes errors.
pub fn import(text: &str, origin: &str) -> Result<Plan, ImportError> {
    let err = ImportError::builder(SourceKind::Neware, origin);
    let root = super::xml_root(text, ROOT, &err)?;
    let config = root
        .find(CONFIG)
        .ok_or_else(|| err(ROOT.into(), format!("expected a <{CONFIG}> element")))?;
    if config.get_attr("type") != Some(CONFIG_TYPE) {
        return Err(err(
            CONFIG.into(),
            format!(
                "expected type=\"{CONFIG_TYPE}\", found {:?}",
                config.get_attr("type")
            ),
        ));
    }
    let name = config
        .find("Head_Info")
        .and_then(|h| h.find("Remark"))
        .and_then(|r| r.get_attr("Value"))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(origin)
        .to_owned();
    let safety = config
        .find("Whole_Prt")
        .and_then(|w| w.find("Protect"))
        .and_then(|p| p.find("Main"))
        .map(protect)
        .transpose()
        .map_err(|m| err("Whole_Prt/Protect".into(), m))?
        .unwrap_or_default();
    // The file's logging rule: every action step's record, unless the step has its own.
    let whole_record = config
        .find("Whole_Prt")
        .and_then(|w| w.find("Record"))
        .map(record)
        .transpose()
        .map_err(|m| err("Whole_Prt/Record".into(), m))?
        .unwrap_or_default();
    let info = config
        .find("Step_Info")
        .ok_or_else(|| err(CONFIG.into(), "expected a <Step_Info> element".into()))?;
    let elements = &info.children;
    if let Some(num) = info.get_attr("Num")
        && num.trim().parse::<usize>().ok() != Some(elements.len())
    {
        return Err(err(
            "Step_Info".into(),
            format!("Num=\"{num}\" but it holds {} steps", elements.len()),
        ));
    }
    let at = |k: usize| format!("Step{k}");

    // Step types, checked ids, and cycles.
    let mut codes = Vec::with_capacity(elements.len());
    let mut cycles: Vec<Cycle> = Vec::new();
    for (n, e) in elements.iter().enumerate() {
        let k = n + 1;
        if e.name != at(k) || e.get_attr("Step_ID").map(str::trim) != Some(k.to_string().as_str()) {
            return Err(err(
                at(k),
                format!(
                    "found <{} Step_ID={:?}>: expected <Step{k} Step_ID=\"{k}\"> (steps numbered in order from 1)",
                    e.name,
                    e.get_attr("Step_ID")
                ),
            ));
        }
        let code = e
            .get_attr("Step_Type")
            .and_then(|c| c.trim().parse::<u32>().ok())
            .ok_or_else(|| err(at(k), "expected a numeric Step_Type".into()))?;
        if code == CYCLE {
            let other = e.find("Limit").and_then(|l| l.find("Other"));
            let field = |name: &str| {
                other
                    .and_then(|o| o.find(name))
                    .and_then(|f| f.get_attr("Value"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .ok_or_else(|| {
                        err(
                            at(k),
                            format!("a cycle step needs Limit/Other/{name} Value=\"n\""),
                        )
                    })
            };
            let start = field("Start_Step")? as usize;
            let count = field("Cycle_Count")?;
            if start == 0 || start >= k {
                return Err(err(
                    at(k),
                    format!(
                        "Start_Step {start}: expected a step before this cycle step (1 to {})",
                        k - 1
                    ),
                ));
            }
            if count == 0 {
                return Err(err(at(k), "Cycle_Count 0: expected at least 1 pass".into()));
            }
            // Cycles must nest: one that starts inside this one must also end inside it.
            if let Some(c) = cycles.iter().find(|c| c.start < start && start <= c.end) {
                return Err(err(
                    at(k),
                    format!(
                        "this cycle (steps {start}-{}) overlaps the cycle of steps {}-{} without containing it",
                        k - 1,
                        c.start,
                        c.end - 1
                    ),
                ));
            }
            cycles.push(Cycle {
                start,
                end: k,
                count,
            });
        }
        codes.push(code);
    }

    // Plan layout: before Neware step j, the starts of the cycles beginning at j (outermost
    // first), then the step itself.
    let mut starts_at: Vec<Vec<usize>> = vec![Vec::new(); elements.len() + 1];
    let mut order: Vec<usize> = (0..cycles.len()).collect();
    order.sort_by_key(|&c| (cycles[c].start, std::cmp::Reverse(cycles[c].end)));
    for c in order {
        starts_at[cycles[c].start].push(c);
    }
    let mut loop_start_index = vec![0usize; cycles.len()];
    let mut step_index = vec![0usize; elements.len() + 1];
    let mut next = 0usize;
    for j in 1..=elements.len() {
        for &c in &starts_at[j] {
            loop_start_index[c] = next;
            next += 1;
        }
        step_index[j] = next;
        next += 1;
    }

    // Jump target: the step, or the start of a cycle beginning there that the jumping step `k`
    // is not inside (jumping to the first step of the cycle one is in continues that cycle).
    let resolve = |k: usize, target: u32| -> Result<Goto, String> {
        match target {
            JUMP_NEXT => return Ok(Goto::Next),
            JUMP_STOP => return Ok(Goto::End),
            JUMP_PROTECT => {
                return Err(format!(
                    "jump {JUMP_PROTECT} (protection) has no plan equivalent: a plan ends a step normally or faults on its safety limits"
                ));
            }
            _ => {}
        }
        let j = target as usize;
        match codes.get(j.wrapping_sub(1)) {
            None => Err(format!(
                "jump to step {j}, but the file has {} steps",
                codes.len()
            )),
            Some(&CYCLE) => Err(format!(
                "jump to step {j}, a cycle step: expected a jump to an action or end step"
            )),
            Some(&END) => Ok(Goto::End),
            Some(_) => Ok(Goto::Step(
                starts_at[j]
                    .iter()
                    .find(|&&c| !(cycles[c].start <= k && k < cycles[c].end))
                    .map_or(step_index[j], |&c| loop_start_index[c]),
            )),
        }
    };

    let mut steps = Vec::with_capacity(next);
    for (n, e) in elements.iter().enumerate() {
        let k = n + 1;
        for &c in &starts_at[k] {
            let cy = &cycles[c];
            steps.push(PlanStep::LoopStart {
                count: cy.count,
                cycle: true,
                end: step_index[cy.end],
                until: Vec::new(),
            });
        }
        match codes[n] {
            CYCLE => {
                let c = cycles.iter().position(|c| c.end == k).unwrap_or_default();
                steps.push(PlanStep::LoopEnd {
                    start: loop_start_index[c],
                });
            }
            END => steps.push(PlanStep::End),
            code => {
                let action = action(e, code, |t| resolve(k, t)).map_err(|m| err(at(k), m))?;
                let own = e
                    .find("Record")
                    .map(record)
                    .transpose()
                    .map_err(|m| err(at(k), m))?
                    .unwrap_or_default();
                steps.push(PlanStep::Action(ActionStep {
                    path: at(k),
                    record: whole_record.overridden_by(&own),
                    ..action
                }));
            }
        }
    }
    let plan = super::imported(name, text, safety, steps);
    plan.validate()
        .map_err(|e| err("Step_Info".into(), e.to_string()))?;
    Ok(plan)
}

/// The `Value` attribute of child `name`, as a number.
fn number(parent: &Element, name: &str) -> Result<Option<f64>, String> {
    let Some(e) = parent.find(name) else {
        return Ok(None);
    };
    let v = e.get_attr("Value").unwrap_or("");
    parse_number(v)
        .map(Some)
        .ok_or_else(|| format!("{name} Value={v:?}: expected a number"))
}

/// A `Record` element (`Whole_Prt/Record` or a step's own) as a record rule: `Main/Time` ms,
/// `Main/Volt` 0.1 mV, `Main/Curr` mA; a zero or absent field sets no rule of its kind.
fn record(e: &Element) -> Result<Record, String> {
    let empty = Element::default();
    let main = e.find("Main").unwrap_or(&empty);
    let field = |name: &str, unit: f64| -> Result<Option<f64>, String> {
        match number(main, name)? {
            Some(v) if v < 0.0 => Err(format!(
                "Record/Main/{name} {v}: expected a non-negative value"
            )),
            Some(v) if v > 0.0 => Ok(Some(v / unit)),
            _ => Ok(None),
        }
    };
    Ok(Record {
        every_s: field(RECORD_TIME, MS_PER_S)?,
        dv_v: field(RECORD_VOLT, TENTH_MV_PER_V)?,
        di_a: field(RECORD_CURR, MA_PER_A)?,
    })
}

fn protect(main: &Element) -> Result<Safety, String> {
    let get = |group: &str, bound: &str| match main.find(group) {
        Some(g) => number(g, bound),
        None => Ok(None),
    };
    Ok(Safety {
        voltage_max: get("Volt", "Upper")?.map(|v| v / TENTH_MV_PER_V),
        voltage_min: get("Volt", "Lower")?.map(|v| v / TENTH_MV_PER_V),
        current_max: get("Curr", "Upper")?.map(|c| c.abs() / MA_PER_A),
        ..Safety::default()
    })
}

/// An action step (its path is filled in by the caller).
fn action(
    e: &Element,
    code: u32,
    resolve: impl Fn(u32) -> Result<Goto, String>,
) -> Result<ActionStep, String> {
    if code == VOLTAGE_SCAN {
        return super::sweep::neware_scan(e, IGNORED_STEP_CHILDREN);
    }
    for c in &e.children {
        if c.name != "Limit" && !IGNORED_STEP_CHILDREN.contains(&c.name.as_str()) {
            return Err(format!(
                "unsupported <{}> in a step: expected only Limit (and Record)",
                c.name
            ));
        }
    }
    let limit = e.find("Limit");
    let empty = Element::default();
    let main = limit.and_then(|l| l.find("Main")).unwrap_or(&empty);
    let other = limit.and_then(|l| l.find("Other")).unwrap_or(&empty);
    let known: &[&str] = match code {
        CC_CHARGE | CC_DISCHARGE => &["Curr", "Rate", "Time", "Stop_Volt"],
        CV_CHARGE | CV_DISCHARGE => &["Curr", "Rate", "Volt", "Time", "Stop_Curr", "Stop_Rate"],
        REST => &["Time"],
        CCCV_CHARGE | CCCV_DISCHARGE => &["Curr", "Rate", "Volt", "Time", "Stop_Curr", "Stop_Rate"],
        PAUSE => {
            return Err(format!(
                "Step_Type {PAUSE} (pause) waits for an operator: a plan has no such step"
            ));
        }
        _ => {
            return Err(format!(
                "Step_Type {code}: expected {CC_CHARGE} CC charge, {CC_DISCHARGE} CC discharge, {CV_CHARGE} CV charge, {CV_DISCHARGE} CV discharge, {REST} rest, {VOLTAGE_SCAN} voltage scan, {CYCLE} cycle or {END} end"
            ));
        }
    };
    if let Some(c) = main
        .children
        .iter()
        .find(|c| !known.contains(&c.name.as_str()))
    {
        return Err(format!(
            "Limit/Main/{} on a Step_Type {code} step: expected only {}",
            c.name,
            known.join(", ")
        ));
    }
    let required = |name: &str| {
        number(main, name)?
            .ok_or_else(|| format!("a Step_Type {code} step needs Limit/Main/{name}"))
    };
    let control = match code {
        CC_CHARGE | CC_DISCHARGE => {
            let ma = required("Curr")?;
            if ma < 0.0 {
                return Err(format!(
                    "Curr {ma}: expected a magnitude (the step type gives the direction)"
                ));
            }
            let amps = ma / MA_PER_A;
            Control::Current {
                amps: if code == CC_CHARGE { amps } else { -amps },
            }
        }
        CV_CHARGE | CV_DISCHARGE => Control::Voltage {
            volts: required("Volt")? / TENTH_MV_PER_V,
        },
        CCCV_CHARGE | CCCV_DISCHARGE => {
            let amps = required("Curr")?.abs() / MA_PER_A;
            Control::Cccv {
                amps: if code == CCCV_CHARGE { amps } else { -amps },
                volts: required("Volt")? / TENTH_MV_PER_V,
            }
        }
        _ => Control::Rest,
    };

    let mut terminations = Vec::new();
    let non_negative = |name: &str| -> Result<Option<f64>, String> {
        match number(main, name)? {
            Some(v) if v < 0.0 => Err(format!("{name} {v}: expected a non-negative value")),
            v => Ok(v),
        }
    };
    if let Some(v) = non_negative("Stop_Volt")? {
        let v = v / TENTH_MV_PER_V;
        terminations.push(voltage(code == CC_CHARGE, v));
    }
    if let Some(ma) = non_negative("Stop_Curr")? {
        terminations.push(Condition::CurrentMagnitudeAtMost(ma / MA_PER_A));
    }
    if let Some(ms) = non_negative("Time")? {
        terminations.push(Condition::StepTime(ms / MS_PER_S));
    }
    let mut terminations: Vec<Termination> = terminations
        .into_iter()
        .map(|condition| Termination {
            condition,
            goto: Goto::Next,
        })
        .collect();

    for c in &other.children {
        let Some(n) = c.name.strip_prefix(COND_PREFIX) else {
            return Err(format!(
                "Limit/Other/{} on an action step: expected conditions {COND_PREFIX}1, {COND_PREFIX}2...",
                c.name
            ));
        };
        let fail = |m: String| format!("condition {COND_PREFIX}{n}: {m}");
        let attr = |name: &str| -> Result<f64, String> {
            let v = c.get_attr(name).unwrap_or("");
            parse_number(v).ok_or_else(|| fail(format!("{name}={v:?}: expected a number")))
        };
        let code_attr = |name: &str| -> Result<u32, String> {
            let v = c.get_attr(name).unwrap_or("");
            v.trim()
                .parse::<u32>()
                .map_err(|_| fail(format!("{name}={v:?}: expected a code")))
        };
        let kind = code_attr(COND_TYPE)?;
        let compare = code_attr(COND_COMPARE)?;
        let value = attr(COND_VALUE)?;
        if value < 0.0 {
            return Err(fail(format!(
                "Value {value}: expected a non-negative value"
            )));
        }
        let goto = resolve(code_attr(COND_JUMP)?).map_err(fail)?;
        // Plan thresholds are inclusive; a strict comparison differs only when a sample equals
        // the threshold exactly, so `>` reads as `>=` and `<` as `<=`.
        let at_least = matches!(compare, CMP_GE | CMP_GT);
        let at_most = matches!(compare, CMP_LE | CMP_LT);
        let condition = match kind {
            COND_VOLTAGE if at_least || at_most => voltage(at_least, value / TENTH_MV_PER_V),
            COND_CURRENT if at_most => Condition::CurrentMagnitudeAtMost(value / MA_PER_A),
            COND_TIME if at_least => Condition::StepTime(value / MS_PER_S),
            _ => {
                return Err(fail(format!(
                    "Type {kind} with Compare {compare}: expected voltage ({COND_VOLTAGE}) >= or <=, current ({COND_CURRENT}) <=, or time ({COND_TIME}) >= (compare {CMP_GT} >, {CMP_GE} >=, {CMP_LT} <, {CMP_LE} <=)"
                )));
            }
        };
        terminations.push(Termination { condition, goto });
    }
    let description = match control {
        Control::Current { amps } => format!("Step_Type {code}: {} mA", amps.abs() * MA_PER_A),
        Control::Voltage { volts } => format!("Step_Type {code}: {volts} V"),
        Control::Cccv { amps, volts } => {
            format!(
                "Step_Type {code}: {} mA to {volts} V",
                amps.abs() * MA_PER_A
            )
        }
        _ => format!("Step_Type {code}: rest"),
    };
    Ok(ActionStep {
        description,
        control,
        terminations,
        ..ActionStep::default()
    })
}

/// A voltage condition by direction: `>=` when `rising` (reached charging), else `<=`.
fn voltage(rising: bool, volts: f64) -> Condition {
    if rising {
        Condition::VoltageAtLeast(volts)
    } else {
        Condition::VoltageAtMost(volts)
    }
}

#[cfg(test)]
mod tests {
    use super::import;
    use crate::plan::{Condition, Control, Goto, PlanStep};

    fn file(steps: &str, num: usize) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><root><config type="Step File" version="17"><Head_Info><Remark Value="t"/></Head_Info><Step_Info Num="{num}">{steps}</Step_Info></config></root>"#
        )
    }

    #[test]
    fn a_bts_file_with_cccv_cycles_and_stops_reads_as_a_plan() {
        let text = file(
            r#"<Step1 Step_ID="1" Step_Type="4"><Limit><Main><Time Value="180000"/></Main></Limit></Step1>
               <Step2 Step_ID="2" Step_Type="7"><Limit><Main><Curr Value="1250"/><Volt Value="42000"/><Stop_Curr Value="125"/></Main></Limit></Step2>
               <Step3 Step_ID="3" Step_Type="2"><Limit><Main><Curr Value="2500"/><Stop_Volt Value="30000"/></Main></Limit></Step3>
               <Step4 Step_ID="4" Step_Type="5"><Limit><Other><Start_Step Value="2"/><Cycle_Count Value="3"/></Other></Limit></Step4>
               <Step5 Step_ID="5" Step_Type="6"/>"#,
            5,
        );
        let plan = import(&text, "s.xml").expect("valid step file");
        assert_eq!(plan.steps.len(), 6);
        assert_eq!(
            plan.steps[1],
            PlanStep::LoopStart {
                count: 3,
                cycle: true,
                end: 4,
                until: vec![]
            }
        );
        let PlanStep::Action(cccv) = &plan.steps[2] else {
            panic!("{plan:?}")
        };
        assert_eq!(
            cccv.control,
            Control::Cccv {
                amps: 1.25,
                volts: 4.2
            }
        );
        assert_eq!(
            cccv.terminations[0].condition,
            Condition::CurrentMagnitudeAtMost(0.125)
        );
        let PlanStep::Action(dchg) = &plan.steps[3] else {
            panic!("{plan:?}")
        };
        assert_eq!(
            dchg.terminations[0].condition,
            Condition::VoltageAtMost(3.0)
        );
        assert_eq!(dchg.terminations[0].goto, Goto::Next);
    }

    #[test]
    fn malformed_step_files_are_errors_saying_where_and_what_was_expected() {
        let rest = |extra: &str| {
            file(
                &format!(
                    r#"<Step1 Step_ID="1" Step_Type="4"><Limit><Main><Time Value="1000"/></Main>{extra}</Limit></Step1><Step2 Step_ID="2" Step_Type="6"/>"#
                ),
                2,
            )
        };
        let cases = [
            ("<root><config>".to_owned(), "never closed"),
            (file("", 3), "Num=\"3\""),
            (
                file(r#"<Step1 Step_ID="1" Step_Type="99"/>"#, 1),
                "Step_Type 99",
            ),
            (
                file(r#"<Step2 Step_ID="2" Step_Type="4"/>"#, 1),
                "expected <Step1",
            ),
            (
                rest(r#"<Other><Cnd1 Type="1" Compare="4" Value="42000" Jump="7"/></Other>"#),
                "the file has 2 steps",
            ),
            (
                rest(r#"<Other><Cnd1 Type="9" Compare="4" Value="1" Jump="65526"/></Other>"#),
                "Type 9",
            ),
            (
                rest(r#"<Other><Cnd1 Type="1" Compare="4" Value="1" Jump="65534"/></Other>"#),
                "protection",
            ),
            (
                file(
                    r#"<Step1 Step_ID="1" Step_Type="1"><Limit><Main><Curr Value="{Cap_mAh*0.5}"/></Main></Limit></Step1>"#,
                    1,
                ),
                "expected a number",
            ),
        ];
        for (text, expected) in cases {
            let e = import(&text, "s.xml").unwrap_err();
            assert!(e.location.is_some(), "{e}");
            assert!(
                e.to_string().contains(expected),
                "{e} should mention {expected:?}"
            );
        }
    }
}
