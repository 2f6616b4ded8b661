//! Plan -> Neware BTS step file (XML).
//!
//! Layout follows the step files BTS 8 writes (as read and written by public tools): `<root>`
//! / `<config type="Step File" version="17">` with `Head_Info`, `Whole_Prt` (`Protect`,
//! `Record`) and `Step_Info Num="n"` holding `StepK Step_ID="K" Step_Type="code"` elements,
//! each with `Limit/Main` setpoints and stops and `Limit/Other` loop fields or conditions.
//!
//! Mapping: an action step is one Neware step; a loop is a cycle step (type 5) after its body
//! with `Start_Step` = the body's first step and `Cycle_Count` = passes; `End` is an end step
//! (type 6). A Neware cycle step counts a cycle on every pass, and there is no other loop step,
//! so a `cycle: false` loop (GITT pulses, HPPC SOC levels) is written as a cycle step too: the
//! cycler's own file then counts each of its passes as a cycle, while cyclerd's record numbers
//! cycles by the protocol (the daemon derives every record's cycle from the plan steps, see
//! docs/protocols.md, "Cycles on dedicated cyclers"). Reading the file back gives the loop
//! `cycle: true`, which is what the file says.
//! Terminations that all continue with the next step and fit the step type's own stop fields
//! (`Stop_Volt` in the step's direction, `Stop_Curr` on CV steps, `Time`) are written there,
//! as BTS users write them; otherwise every termination of the step becomes a condition
//! `CndN` in `Limit/Other`, in order, with its jump.

use super::native::{inside_loop, step_name, voltage_step_charges};
use super::{CompileError, StepMap, Target};
use crate::plan::{ActionStep, Condition, Control, Goto, Plan, PlanStep, Record};
use crate::xml::Element;

pub(crate) const ROOT: &str = "root";
pub(crate) const CONFIG: &str = "config";
pub(crate) const CONFIG_TYPE: &str = "Step File";
const CONFIG_VERSION: &str = "17";

/// `Step_Type` codes confirmed in public material (CP, CR, pulse and simulation exist, but their
/// numbers are not confirmed: steps needing them are refused).
pub(crate) const CC_CHARGE: u32 = 1;
pub(crate) const CC_DISCHARGE: u32 = 2;
pub(crate) const CV_CHARGE: u32 = 3;
pub(crate) const REST: u32 = 4;
pub(crate) const CYCLE: u32 = 5;
pub(crate) const END: u32 = 6;
pub(crate) const CCCV_CHARGE: u32 = 7;
pub(crate) const PAUSE: u32 = 13;
pub(crate) const CV_DISCHARGE: u32 = 19;
pub(crate) const CCCV_DISCHARGE: u32 = 20;
/// Voltage scan (linear sweep), as aurora-unicycler writes it: a `Slope` child holding
/// `Slope1 StartValue EndValue` (0.1 mV) and `Value` (scan rate, mV/s). Read by the importer;
/// not written (a plan has no ramp control).
pub(crate) const VOLTAGE_SCAN: u32 = 25;

/// Units: currents in mA, voltages in 0.1 mV, times in ms.
pub(crate) const MA_PER_A: f64 = 1000.0;
pub(crate) const TENTH_MV_PER_V: f64 = 10_000.0;
pub(crate) const MS_PER_S: f64 = 1000.0;

/// Condition `Type` codes.
pub(crate) const COND_VOLTAGE: u32 = 1;
pub(crate) const COND_CURRENT: u32 = 2;
pub(crate) const COND_TIME: u32 = 3;
/// Condition `Compare` codes.
pub(crate) const CMP_GT: u32 = 3;
pub(crate) const CMP_GE: u32 = 4;
pub(crate) const CMP_LT: u32 = 5;
pub(crate) const CMP_LE: u32 = 6;
/// Condition `Jump` codes beside step numbers.
pub(crate) const JUMP_NEXT: u32 = 65526;
pub(crate) const JUMP_STOP: u32 = 65533;
pub(crate) const JUMP_PROTECT: u32 = 65534;
/// Step numbers must stay below the reserved jump codes.
const MAX_STEPS: usize = JUMP_NEXT as usize - 1;

/// Condition element name prefix (`Cnd1`, `Cnd2`...) and its attributes.
pub(crate) const COND_PREFIX: &str = "Cnd";
pub(crate) const COND_TYPE: &str = "Type";
pub(crate) const COND_COMPARE: &str = "Compare";
pub(crate) const COND_VALUE: &str = "Value";
pub(crate) const COND_JUMP: &str = "Jump";

/// Head_Info fields: `Operate`/`Scale` as BTS writes them, absolute (not C-rate) values.
const OPERATE: &str = "66";
const SCALE: &str = "1";
const CREATOR: &str = "cyclerd";
pub(crate) const RATE_TYPE_ABSOLUTE: &str = "103";
/// `Whole_Prt/Record/Main` fields: log a point every `Time` ms, at every `Volt` (0.1 mV)
/// change, at every `Curr` (mA) change.
pub(crate) const RECORD_TIME: &str = "Time";
pub(crate) const RECORD_VOLT: &str = "Volt";
pub(crate) const RECORD_CURR: &str = "Curr";

/// `value * unit` as the whole number Neware stores; refuses a value the unit's resolution
/// would change (a silently different setpoint).
fn whole(value: f64, unit: f64, what: &str) -> Result<String, String> {
    let scaled = value * unit;
    let r = scaled.round();
    if (scaled - r).abs() > 1e-6 || r.abs() >= f64::from(i32::MAX) {
        return Err(format!(
            "{what} {value} is not a whole number of Neware's units (x{unit})"
        ));
    }
    Ok(format!("{}", r as i64))
}

/// Milliamps from amps, to the nanoamp (far below any cycler's resolution).
fn milliamps(amps: f64) -> String {
    format!("{}", (amps.abs() * MA_PER_A * 1e6).round() / 1e6)
}

fn value(name: &str, v: String) -> Element {
    Element::new(name).attr("Value", v)
}

/// Compiles `plan` to a Neware step file, with the map from its `Step_ID`s to plan steps.
pub fn compile(plan: &Plan) -> Result<(String, StepMap), CompileError> {
    let err = |i: usize, message: String| {
        let (step, description) = step_name(plan, i);
        CompileError {
            target: Target::Neware,
            step,
            description,
            message,
        }
    };

    // Pass 1: the Neware step number of every plan index; a loop start has no step of its own
    // and takes the number of the first step of its body.
    let mut id = vec![0usize; plan.steps.len()];
    let mut next = 1usize;
    for (i, step) in plan.steps.iter().enumerate() {
        id[i] = next;
        #[allow(unreachable_patterns)] // the IR grows; new step kinds are refused here
        match step {
            PlanStep::LoopStart { until, .. } if !until.is_empty() => {
                return Err(err(
                    i,
                    "loop exits (until: ...) have no confirmed Neware cycle-step field; the loop would run all its passes".into(),
                ));
            }
            PlanStep::LoopStart { .. } => {}
            PlanStep::Action(_) | PlanStep::LoopEnd { .. } | PlanStep::End => next += 1,
            _ => {
                return Err(err(
                    i,
                    "this kind of plan step has no Neware equivalent yet".into(),
                ));
            }
        }
    }
    if next - 1 > MAX_STEPS {
        return Err(err(
            0,
            format!("a step file holds at most {MAX_STEPS} steps"),
        ));
    }

    let mut step_map = StepMap {
        plan_steps: vec![None; next - 1],
    };
    for (i, step) in plan.steps.iter().enumerate() {
        if matches!(step, PlanStep::Action(_)) {
            step_map.plan_steps[id[i] - 1] = Some(i);
        }
    }
    let mut info = Element::new("Step_Info").attr("Num", (next - 1).to_string());
    for (i, step) in plan.steps.iter().enumerate() {
        let element = |code: u32| {
            Element::new(&format!("Step{}", id[i]))
                .attr("Step_ID", id[i].to_string())
                .attr("Step_Type", code.to_string())
        };
        #[allow(unreachable_patterns)] // refused in pass 1
        match step {
            PlanStep::Action(a) => {
                let jump = |g: Goto| -> Result<String, String> {
                    Ok(match g {
                        Goto::Next => JUMP_NEXT.to_string(),
                        Goto::End => JUMP_STOP.to_string(),
                        Goto::Step(t) if inside_loop(plan, t, i) => {
                            return Err(format!(
                                "jumping back to the start of the loop this step is in restarts the loop's pass count, which a Neware cycle step cannot do (jump target {t})"
                            ));
                        }
                        Goto::Step(t) => id
                            .get(t)
                            .ok_or_else(|| format!("jump target {t} is not in the plan"))?
                            .to_string(),
                    })
                };
                let (code, limit) = action(plan, i, a, jump).map_err(|m| err(i, m))?;
                info.children.push(element(code).child(limit));
            }
            PlanStep::LoopStart { .. } => {}
            &PlanStep::LoopEnd { start } => {
                // Every loop, `cycle: false` ones included, is a cycle step: the only loop step
                // Neware has. Its cycle counter is the cycler file's numbering only; cyclerd
                // numbers cycles from the plan steps the records show.
                let Some(&PlanStep::LoopStart { count, .. }) = plan.steps.get(start) else {
                    return Err(err(i, "loop end without its loop start".into()));
                };
                let other = Element::new("Other")
                    .child(value("Start_Step", id[start].to_string()))
                    .child(value("Cycle_Count", count.to_string()));
                info.children
                    .push(element(CYCLE).child(Element::new("Limit").child(other)));
            }
            PlanStep::End => info.children.push(element(END)),
            _ => {
                return Err(err(
                    i,
                    "this kind of plan step has no Neware equivalent yet".into(),
                ));
            }
        }
    }

    let head = Element::new("Head_Info")
        .child(value("Operate", OPERATE.into()))
        .child(value("Scale", SCALE.into()))
        .child(value("Start_Step", "1".into()).attr("Hide_Ctrl_Step", "0"))
        .child(value("Creator", CREATOR.into()))
        .child(value("Remark", plan.name.clone()))
        .child(value("RateType", RATE_TYPE_ABSOLUTE.into()));
    let whole_prt = Element::new("Whole_Prt")
        .child(Element::new("Protect").child(protect(plan).map_err(|m| err(0, m))?))
        .child(record(plan).map_err(|(i, m)| err(i, m))?);
    let config = Element::new(CONFIG)
        .attr("type", CONFIG_TYPE)
        .attr("version", CONFIG_VERSION)
        .child(head)
        .child(whole_prt)
        .child(info);
    Ok((Element::new(ROOT).child(config).to_document(&[]), step_map))
}

/// `Whole_Prt/Record`: one rule for the whole file (per-step record fields are not confirmed
/// in public step files), so each field is the finest any action step asks for, with
/// [`Record::NATIVE_DEFAULT`] standing in for a step that sets no rule. Steps asking for a
/// coarser rule (or none of a kind) are logged finer than asked: more points, never fewer.
/// A value Neware's units cannot hold exactly is an error naming the step that asks for it.
fn record(plan: &Plan) -> Result<Element, (usize, String)> {
    let mut rules: Vec<(usize, Record)> = plan
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            PlanStep::Action(a) => Some((i, a.record.or_native_default())),
            _ => None,
        })
        .collect();
    if rules.is_empty() {
        rules.push((0, Record::NATIVE_DEFAULT));
    }
    let finest = |field: fn(&Record) -> Option<f64>| {
        rules
            .iter()
            .filter_map(|(i, r)| field(r).map(|x| (*i, x)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    };
    let mut main = Element::new("Main");
    if let Some((i, s)) = finest(|r| r.every_s) {
        main.children.push(value(
            RECORD_TIME,
            whole(s, MS_PER_S, "record interval (s)").map_err(|m| (i, m))?,
        ));
    }
    if let Some((i, v)) = finest(|r| r.dv_v) {
        main.children.push(value(
            RECORD_VOLT,
            whole(v, TENTH_MV_PER_V, "record voltage change (V)").map_err(|m| (i, m))?,
        ));
    }
    if let Some((_, a)) = finest(|r| r.di_a) {
        main.children.push(value(RECORD_CURR, milliamps(a)));
    }
    Ok(Element::new("Record").child(main))
}

/// `Whole_Prt/Protect/Main`: the plan's voltage window and current limit. Temperature and
/// per-step capacity limits stay with the daemon, which checks them on every sample.
fn protect(plan: &Plan) -> Result<Element, String> {
    let s = &plan.safety;
    let mut main = Element::new("Main");
    if s.voltage_max.is_some() || s.voltage_min.is_some() {
        let mut volt = Element::new("Volt");
        if let Some(v) = s.voltage_max {
            volt.children
                .push(value("Upper", whole(v, TENTH_MV_PER_V, "voltage limit")?));
        }
        if let Some(v) = s.voltage_min {
            volt.children
                .push(value("Lower", whole(v, TENTH_MV_PER_V, "voltage limit")?));
        }
        main.children.push(volt);
    }
    if let Some(c) = s.current_max {
        main.children
            .push(Element::new("Curr").child(value("Upper", milliamps(c))));
    }
    Ok(main)
}

/// The step type code and `Limit` element of an action step.
fn action(
    plan: &Plan,
    i: usize,
    a: &ActionStep,
    jump: impl Fn(Goto) -> Result<String, String>,
) -> Result<(u32, Element), String> {
    let mut main = Element::new("Main");
    let code = match a.control {
        Control::Rest => REST,
        Control::Current { amps } => {
            main.children.push(value("Curr", milliamps(amps)));
            if amps >= 0.0 { CC_CHARGE } else { CC_DISCHARGE }
        }
        Control::Voltage { volts } => {
            // The compliance current of the hold.
            if let Some(c) = plan.safety.current_max {
                main.children.push(value("Curr", milliamps(c)));
            }
            main.children
                .push(value("Volt", whole(volts, TENTH_MV_PER_V, "voltage")?));
            if voltage_step_charges(plan, i) { CV_CHARGE } else { CV_DISCHARGE }
        }
        Control::Power { .. } => {
            return Err(
                "constant power: the Neware Step_Type code for CP is not confirmed in public material"
                    .into(),
            );
        }
        Control::Cccv { amps, volts } => {
            main.children.push(value("Curr", milliamps(amps)));
            main.children
                .push(value("Volt", whole(volts, TENTH_MV_PER_V, "voltage")?));
            if amps >= 0.0 { CCCV_CHARGE } else { CCCV_DISCHARGE }
        }
        _ => return Err("this control has no confirmed Neware step type (resistance, profile and chamber steps are not supported)".into()),
    };

    // The step type's own stop field for a termination, if it has one.
    let cv = [CV_CHARGE, CV_DISCHARGE, CCCV_CHARGE, CCCV_DISCHARGE].contains(&code);
    let stop_field = |c: Condition| match c {
        Condition::VoltageAtLeast(v) if code == CC_CHARGE => Some(("Stop_Volt", v, TENTH_MV_PER_V)),
        Condition::VoltageAtMost(v) if code == CC_DISCHARGE => {
            Some(("Stop_Volt", v, TENTH_MV_PER_V))
        }
        Condition::CurrentMagnitudeAtMost(x) if cv => Some(("Stop_Curr", x, MA_PER_A)),
        Condition::StepTime(s) => Some(("Time", s, MS_PER_S)),
        _ => None,
    };
    let fields: Vec<_> = a
        .terminations
        .iter()
        .filter(|t| t.goto == Goto::Next)
        .filter_map(|t| stop_field(t.condition))
        .collect();
    let distinct = fields
        .iter()
        .enumerate()
        .all(|(k, f)| fields[..k].iter().all(|g| g.0 != f.0));
    let mut limit = Element::new("Limit");
    if fields.len() == a.terminations.len() && distinct {
        // Main element order as BTS writes it: setpoints, then Time, then stops.
        for name in ["Time", "Stop_Volt", "Stop_Curr"] {
            if let Some(&(_, v, unit)) = fields.iter().find(|f| f.0 == name) {
                let text = if name == "Stop_Curr" {
                    milliamps(v)
                } else {
                    whole(v, unit, name)?
                };
                main.children.push(value(name, text));
            }
        }
        return Ok((code, limit.child(main)));
    }
    let mut other = Element::new("Other");
    for (n, t) in a.terminations.iter().enumerate() {
        let (kind, compare, text) = match t.condition {
            Condition::VoltageAtLeast(v) => {
                (COND_VOLTAGE, CMP_GE, whole(v, TENTH_MV_PER_V, "voltage")?)
            }
            Condition::VoltageAtMost(v) => {
                (COND_VOLTAGE, CMP_LE, whole(v, TENTH_MV_PER_V, "voltage")?)
            }
            Condition::CurrentMagnitudeAtMost(x) => (COND_CURRENT, CMP_LE, milliamps(x)),
            Condition::StepTime(s) => (COND_TIME, CMP_GE, whole(s, MS_PER_S, "step time")?),
            Condition::TestTime(_) => {
                return Err("test-time conditions (T >= d) are not a Neware condition type; use a step time".into());
            }
            Condition::StepCapacity(_) => {
                return Err(
                    "capacity conditions (Ah >= x) are not a confirmed Neware condition type"
                        .into(),
                );
            }
            Condition::StepEnergy(_) => {
                return Err(
                    "energy conditions (Wh >= x) are not a confirmed Neware condition type".into(),
                );
            }
            _ => return Err("this termination has no Neware condition type yet".into()),
        };
        other.children.push(
            Element::new(&format!("{COND_PREFIX}{}", n + 1))
                .attr(COND_TYPE, kind.to_string())
                .attr(COND_COMPARE, compare.to_string())
                .attr(COND_VALUE, text)
                .attr(COND_JUMP, jump(t.goto)?),
        );
    }
    if !main.children.is_empty() {
        limit.children.push(main);
    }
    Ok((code, limit.child(other)))
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;

    /// The 3-step protocol of both golden tests: CC charge, CV hold, rest.
    const THREE_STEPS: &str = "protocol: Golden\nversion: 1\nparams: {capacity: 2.5 Ah}\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nsteps:\n  - \"Charge at C/2 until 4.2 V\"\n  - \"Hold at 4.2 V until C/20\"\n  - \"Rest for 10 minutes\"\n";

    #[test]
    fn a_three_step_protocol_compiles_to_exactly_this_step_file() {
        let plan = Plan::from_yaml(THREE_STEPS, "golden.yaml").expect("valid protocol");
        let golden = r#"<?xml version="1.0" encoding="UTF-8"?>
<root>
  <config type="Step File" version="17">
    <Head_Info>
      <Operate Value="66"/>
      <Scale Value="1"/>
      <Start_Step Value="1" Hide_Ctrl_Step="0"/>
      <Creator Value="cyclerd"/>
      <Remark Value="Golden"/>
      <RateType Value="103"/>
    </Head_Info>
    <Whole_Prt>
      <Protect>
        <Main>
          <Volt>
            <Upper Value="42500"/>
            <Lower Value="25000"/>
          </Volt>
          <Curr>
            <Upper Value="5000"/>
          </Curr>
        </Main>
      </Protect>
      <Record>
        <Main>
          <Time Value="10000"/>
          <Volt Value="100"/>
        </Main>
      </Record>
    </Whole_Prt>
    <Step_Info Num="4">
      <Step1 Step_ID="1" Step_Type="1">
        <Limit>
          <Main>
            <Curr Value="1250"/>
            <Stop_Volt Value="42000"/>
          </Main>
        </Limit>
      </Step1>
      <Step2 Step_ID="2" Step_Type="3">
        <Limit>
          <Main>
            <Curr Value="5000"/>
            <Volt Value="42000"/>
            <Stop_Curr Value="125"/>
          </Main>
        </Limit>
      </Step2>
      <Step3 Step_ID="3" Step_Type="4">
        <Limit>
          <Main>
            <Time Value="600000"/>
          </Main>
        </Limit>
      </Step3>
      <Step4 Step_ID="4" Step_Type="6"/>
    </Step_Info>
  </config>
</root>
"#;
        assert_eq!(super::compile(&plan).expect("compiles").0, golden);
    }
}
