//! Plan -> BioLogic Modulo Bat settings (.mps).
//!
//! The file is a `key : value` header followed by the technique's sequences as a transposed
//! table: one row per field, one 20-character column per sequence. Modulo Bat compares only
//! with `<` and `>`, which is the plan's inclusive threshold for a sampled signal. A CCCV step
//! becomes two sequences (CC until the CV voltage, then CV), and a loop becomes a `Loop`
//! sequence after the body that goes back `ctrl_repeat` = count - 1 times.
//!
//! Not expressible, hence a [`CompileError`]: power, resistance, profile and chamber steps,
//! test-time, capacity, energy, temperature and dV/dt terminations, loop early exits, more
//! than three terminations, a capacity safety limit, and a jump to the first step of a loop
//! body (the file cannot tell it from a jump to the loop's start). Cycle numbering follows the
//! header's `Cycle Definition : Charge/Discharge alternance`, not a loop's `cycle` flag.

use super::{CompileError, Target};
use crate::plan::{ActionStep, Condition, Control, Goto, Plan, PlanStep, Safety};

pub(crate) const HEADER: &str = "BT-LAB SETTING FILE";
pub(crate) const TECHNIQUE: &str = "Modulo Bat";
/// Width of the row-name column and of every sequence column.
pub(crate) const COLUMN: usize = 20;
pub(crate) const CRLF: &str = "\r\n";
/// The BCS-8xx battery cyclers, where Modulo Bat runs.
const DEVICE: &str = "BCS-805";

/// `ctrl_type` values.
pub(crate) const REST: &str = "Rest";
pub(crate) const CC: &str = "CC";
pub(crate) const CV: &str = "CV";
pub(crate) const LOOP: &str = "Loop";
/// `charge/discharge` values.
pub(crate) const CHARGE: &str = "Charge";
pub(crate) const DISCHARGE: &str = "Discharge";
/// `limN_type` values.
pub(crate) const LIM_TIME: &str = "Time";
pub(crate) const LIM_ECELL: &str = "Ecell";
pub(crate) const LIM_ABS_I: &str = "|I|";
/// `limN_action` values.
pub(crate) const NEXT: &str = "Next sequence";
pub(crate) const GOTO: &str = "Goto sequence";
pub(crate) const STOP: &str = "Stop";
/// `recN_type` values: time (s), voltage change (mV), current change (mA) since the last point.
pub(crate) const REC_TIME: &str = "Time";
pub(crate) const REC_ECELL: &str = "Ecell";
pub(crate) const REC_I: &str = "I";
/// Limit and record slots per sequence.
pub(crate) const SLOTS: usize = 3;

/// Fixed current ranges (CC has no auto range), smallest first: the range used is the first
/// whose full scale (mA) covers the setpoint. Ranges above 100 mA are not confirmed in public
/// files; check them against the device's range list.
const I_RANGES: &[(f64, &str)] = &[
    (0.01, "10 µA"),
    (0.1, "100 µA"),
    (1.0, "1 mA"),
    (10.0, "10 mA"),
    (100.0, "100 mA"),
    (1000.0, "1 A"),
    (10000.0, "10 A"),
];

/// One limit: type, comparison, value, unit, action and target sequence.
struct Lim {
    kind: &'static str,
    comp: &'static str,
    value: String,
    unit: &'static str,
    action: &'static str,
    seq: usize,
}

#[derive(Default)]
struct Seq {
    ctrl_type: &'static str,
    ctrl1_val: String,
    ctrl1_unit: &'static str,
    ctrl1_vs: &'static str,
    discharge: bool,
    ctrl_seq: usize,
    ctrl_repeat: u32,
    limits: Vec<Lim>,
    records: Vec<(&'static str, String, &'static str)>,
    i_range: &'static str,
}

fn error(a: &ActionStep, message: impl Into<String>) -> CompileError {
    CompileError {
        target: Target::Biologic,
        step: a.path.clone(),
        description: a.description.clone(),
        message: message.into(),
    }
}

fn plan_error(message: impl Into<String>) -> CompileError {
    CompileError {
        target: Target::Biologic,
        step: "the protocol".into(),
        description: String::new(),
        message: message.into(),
    }
}

/// A value as BioLogic writes it (three decimals), with more digits only where three would
/// change it.
pub(crate) fn num(x: f64) -> String {
    let short = format!("{x:.3}");
    if short.parse::<f64>() == Ok(x) {
        short
    } else {
        format!("{x}")
    }
}

/// Compiles `plan` to Modulo Bat settings.
pub fn compile(plan: &Plan) -> Result<String, CompileError> {
    plan.validate().map_err(|e| plan_error(e.to_string()))?;
    let entry = entries(plan)?;
    let mut seqs = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        sequences(plan, &entry, i, step, &mut seqs)?;
    }
    render(plan, &seqs)
}

/// The sequence index execution lands on at each plan index (loop starts have no sequence of
/// their own: they land on the body's first one; `End` lands one past the last sequence).
#[allow(unreachable_patterns)] // the IR grows: new variants must land in the error arm
fn entries(plan: &Plan) -> Result<Vec<usize>, CompileError> {
    let mut entry = Vec::with_capacity(plan.steps.len());
    let mut n = 0;
    for (i, step) in plan.steps.iter().enumerate() {
        entry.push(n);
        n += match step {
            PlanStep::Action(a) if matches!(a.control, Control::Cccv { .. }) => 2,
            PlanStep::Action(_) | PlanStep::LoopEnd { .. } => 1,
            PlanStep::LoopStart { until, .. } if !until.is_empty() => {
                return Err(plan_error(format!(
                    "the loop at plan index {i} has an early exit (until); a Modulo Bat Loop sequence only counts passes"
                )));
            }
            PlanStep::LoopStart { .. } => 0,
            PlanStep::End if i + 1 == plan.steps.len() => 0,
            PlanStep::End => {
                return Err(plan_error(format!(
                    "an End at plan index {i}, before the last step: end through a termination's jump instead"
                )));
            }
            _ => {
                return Err(plan_error(format!(
                    "the step at plan index {i} is of a kind this compiler does not know"
                )));
            }
        };
    }
    Ok(entry)
}

#[allow(unreachable_patterns)] // the IR grows: new variants must land in the error arm
fn sequences(
    plan: &Plan,
    entry: &[usize],
    i: usize,
    step: &PlanStep,
    seqs: &mut Vec<Seq>,
) -> Result<(), CompileError> {
    match step {
        PlanStep::Action(a) => action(plan, entry, a, seqs),
        PlanStep::LoopEnd { start } => {
            let count = match plan.steps.get(*start) {
                Some(PlanStep::LoopStart { count, .. }) => *count,
                _ => return Err(plan_error(format!("LoopEnd at index {i} closes no loop"))),
            };
            seqs.push(Seq {
                ctrl_type: LOOP,
                ctrl_seq: entry[start + 1],
                ctrl_repeat: count - 1,
                ..Seq::default()
            });
            Ok(())
        }
        _ => Ok(()),
    }
}

fn current_range(a: &ActionStep, amps: f64) -> Result<&'static str, CompileError> {
    let ma = amps.abs() * 1000.0;
    I_RANGES
        .iter()
        .find(|(full, _)| ma <= *full)
        .map(|(_, name)| *name)
        .ok_or_else(|| {
            error(
                a,
                format!(
                    "{ma} mA is above the largest current range ({})",
                    I_RANGES[I_RANGES.len() - 1].1
                ),
            )
        })
}

#[allow(unreachable_patterns)] // the IR grows: new variants must land in the error arms
fn action(
    plan: &Plan,
    entry: &[usize],
    a: &ActionStep,
    seqs: &mut Vec<Seq>,
) -> Result<(), CompileError> {
    let records = records(a);
    let cc = |amps: f64| -> Result<Seq, CompileError> {
        Ok(Seq {
            ctrl_type: CC,
            ctrl1_val: num(amps.abs() * 1000.0),
            ctrl1_unit: "mA",
            ctrl1_vs: "<None>",
            discharge: amps < 0.0,
            i_range: current_range(a, amps)?,
            records: records.clone(),
            ..Seq::default()
        })
    };
    let cv = |volts: f64, i_range: &'static str| Seq {
        ctrl_type: CV,
        ctrl1_val: num(volts),
        ctrl1_unit: "V",
        ctrl1_vs: "Ref",
        i_range,
        records: records.clone(),
        ..Seq::default()
    };
    let mut seq = match a.control {
        Control::Rest => Seq {
            ctrl_type: REST,
            i_range: "Auto",
            records: records.clone(),
            ..Seq::default()
        },
        Control::Current { amps } => cc(amps)?,
        Control::Voltage { volts } => cv(volts, "Auto"),
        Control::Cccv { amps, volts } => {
            if let Some(t) = a
                .terminations
                .iter()
                .find(|t| !matches!(t.condition, Condition::CurrentMagnitudeAtMost(_)))
            {
                return Err(error(
                    a,
                    format!(
                        "a CCCV step becomes a CC and a CV sequence, so only |I| terminations (on the CV sequence) keep their meaning; {:?} would apply to one stage only",
                        t.condition
                    ),
                ));
            }
            let mut first = cc(amps)?;
            let here = seqs.len();
            first.limits.push(Lim {
                kind: LIM_ECELL,
                comp: if amps < 0.0 { "<" } else { ">" },
                value: num(volts),
                unit: "V",
                action: NEXT,
                seq: here + 1,
            });
            let range = first.i_range;
            seqs.push(first);
            cv(volts, range)
        }
        _ => {
            return Err(error(
                a,
                "only rest, CC, CV and CCCV steps are supported (power, resistance, profile and chamber steps have no confirmed Modulo Bat form)",
            ));
        }
    };
    let here = seqs.len();
    if a.terminations.len() > SLOTS {
        return Err(error(
            a,
            format!(
                "{} terminations; a Modulo Bat sequence holds at most {SLOTS} limits",
                a.terminations.len()
            ),
        ));
    }
    for t in &a.terminations {
        let (kind, comp, value, unit) = match t.condition {
            Condition::VoltageAtLeast(v) => (LIM_ECELL, ">", num(v), "V"),
            Condition::VoltageAtMost(v) => (LIM_ECELL, "<", num(v), "V"),
            Condition::CurrentMagnitudeAtMost(x) => (LIM_ABS_I, "<", num(x * 1000.0), "mA"),
            Condition::StepTime(s) => (LIM_TIME, ">", num(s), "s"),
            _ => {
                return Err(error(
                    a,
                    format!(
                        "{:?}: Modulo Bat limits are time, Ecell and |I| only (no test-time, capacity, energy, temperature or dV/dt limit)",
                        t.condition
                    ),
                ));
            }
        };
        let (action, target) = goto(plan, entry, t.goto, here, a)?;
        seq.limits.push(Lim {
            kind,
            comp,
            value,
            unit,
            action,
            seq: target,
        });
    }
    seqs.push(seq);
    Ok(())
}

/// The sequence's record settings: the step's `record`, or
/// [`crate::plan::Record::NATIVE_DEFAULT`] when it sets none (never `rec_nb 0`).
fn records(a: &ActionStep) -> Vec<(&'static str, String, &'static str)> {
    let r = a.record.or_native_default();
    [
        (REC_TIME, r.every_s.map(num), "s"),
        (REC_ECELL, r.dv_v.map(|v| num(v * 1000.0)), "mV"),
        (REC_I, r.di_a.map(|x| num(x * 1000.0)), "mA"),
    ]
    .into_iter()
    .filter_map(|(k, v, u)| Some((k, v?, u)))
    .collect()
}

#[allow(unreachable_patterns)] // the IR grows: new variants must land in the error arm
fn goto(
    plan: &Plan,
    entry: &[usize],
    goto: Goto,
    here: usize,
    a: &ActionStep,
) -> Result<(&'static str, usize), CompileError> {
    let last = plan.steps.len() - 1;
    Ok(match goto {
        Goto::Next => (NEXT, here + 1),
        Goto::End => (STOP, here + 1),
        Goto::Step(t) if t == last => (STOP, here + 1),
        Goto::Step(t) => {
            if t > 0
                && matches!(plan.steps.get(t - 1), Some(PlanStep::LoopStart { .. }))
                && matches!(plan.steps.get(t), Some(PlanStep::Action(_)))
            {
                return Err(error(
                    a,
                    format!(
                        "jumps to plan index {t}, the first step of a loop body: a Modulo Bat goto there cannot be told from a jump to the loop's start (index {}); jump to the loop instead",
                        t - 1
                    ),
                ));
            }
            (GOTO, entry[t])
        }
        _ => return Err(error(a, "this kind of jump is not supported")),
    })
}

fn safety_lines(s: &Safety) -> Result<Vec<String>, CompileError> {
    if s.capacity_max.is_some() {
        return Err(plan_error(
            "safety.capacity: Modulo Bat's safety limits have no per-step capacity limit (remove it, or rely on the lab's daemon-side limit)",
        ));
    }
    let mut lines = vec!["Safety Limits :".to_owned()];
    if let Some(v) = s.voltage_min {
        lines.push(format!("\tEcell min = {} V", num(v)));
    }
    if let Some(v) = s.voltage_max {
        lines.push(format!("\tEcell max = {} V", num(v)));
    }
    if let Some(x) = s.current_max {
        lines.push(format!("\t|I| = {} mA", num(x * 1000.0)));
    }
    if let Some(t) = s.temperature_max {
        lines.push(format!("\tTemperature max = {} °C", num(t)));
    }
    lines.push("\tfor t > 100 ms".into());
    Ok(lines)
}

/// The table rows in file order, each with how a sequence's cell is written.
fn cell(s: &Seq, n: usize, row: &str) -> String {
    let lim = |k: usize| s.limits.get(k);
    let rec = |k: usize| s.records.get(k);
    let slot = |prefix: &str| -> Option<(usize, &str)> {
        let rest = row.strip_prefix(prefix)?;
        let d = rest.chars().next()?.to_digit(10)? as usize;
        Some((d - 1, &rest[1..]))
    };
    if let Some((k, field)) = slot("lim") {
        return lim(k).map_or(
            if field == "_action" {
                NEXT.into()
            } else {
                String::new()
            },
            |l| match field {
                "_type" => l.kind.into(),
                "_comp" => l.comp.into(),
                "_value" => l.value.clone(),
                "_value_unit" => l.unit.into(),
                "_action" => l.action.into(),
                "_seq" => l.seq.to_string(),
                _ => String::new(),
            },
        );
    }
    if let Some((k, field)) = slot("rec") {
        return rec(k).map_or(String::new(), |(kind, value, unit)| match field {
            "_type" => (*kind).into(),
            "_value" => value.clone(),
            "_value_unit" => (*unit).into(),
            _ => String::new(),
        });
    }
    match row {
        "Ns" => n.to_string(),
        "ctrl_type" => s.ctrl_type.into(),
        "Apply I/C" => "I".into(),
        "ctrl1_val" => s.ctrl1_val.clone(),
        "ctrl1_val_unit" => s.ctrl1_unit.into(),
        "ctrl1_val_vs" => s.ctrl1_vs.into(),
        "N" => "1.00".into(),
        "charge/discharge" => if s.discharge { DISCHARGE } else { CHARGE }.into(),
        "ctrl_seq" => s.ctrl_seq.to_string(),
        "ctrl_repeat" => s.ctrl_repeat.to_string(),
        "ctrl_trigger" => "Falling Edge".into(),
        "ctrl_TO_t" => "0.000".into(),
        "ctrl_TO_t_unit" => "d".into(),
        "ctrl_Nd" => "6".into(),
        "ctrl_Na" => "1".into(),
        "ctrl_corr" => "0".into(),
        "lim_nb" => s.limits.len().to_string(),
        "rec_nb" => s.records.len().to_string(),
        "E range min (V)" => "0.000".into(),
        "E range max (V)" => "10.000".into(),
        "I Range" => if s.ctrl_type == LOOP {
            "Auto"
        } else {
            s.i_range
        }
        .into(),
        "I Range min" | "I Range max" | "I Range init" => "Unset".into(),
        "auto rest" => "0".into(),
        "Bandwidth" => "4".into(),
        _ => String::new(),
    }
}

/// Row names in file order (as BT-Lab exports them).
fn rows() -> Vec<String> {
    let mut rows: Vec<String> = [
        "Ns",
        "ctrl_type",
        "Apply I/C",
        "ctrl1_val",
        "ctrl1_val_unit",
        "ctrl1_val_vs",
        "ctrl2_val",
        "ctrl2_val_unit",
        "ctrl2_val_vs",
        "ctrl3_val",
        "ctrl3_val_unit",
        "ctrl3_val_vs",
        "N",
        "charge/discharge",
        "ctrl_seq",
        "ctrl_repeat",
        "ctrl_trigger",
        "ctrl_TO_t",
        "ctrl_TO_t_unit",
        "ctrl_Nd",
        "ctrl_Na",
        "ctrl_corr",
        "lim_nb",
    ]
    .map(String::from)
    .into();
    for k in 1..=SLOTS {
        for f in ["type", "comp", "Q", "value", "value_unit", "action", "seq"] {
            rows.push(format!("lim{k}_{f}"));
        }
    }
    rows.push("rec_nb".into());
    for k in 1..=SLOTS {
        for f in ["type", "value", "value_unit"] {
            rows.push(format!("rec{k}_{f}"));
        }
    }
    rows.extend(
        [
            "E range min (V)",
            "E range max (V)",
            "I Range",
            "I Range min",
            "I Range max",
            "I Range init",
            "auto rest",
            "Bandwidth",
        ]
        .map(String::from),
    );
    rows
}

fn render(plan: &Plan, seqs: &[Seq]) -> Result<String, CompileError> {
    let name: String = plan
        .name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut lines = vec![
        HEADER.to_owned(),
        String::new(),
        "Number of linked techniques : 1".into(),
        String::new(),
        format!("Device : {DEVICE}"),
        "Ecell ctrl range : min = 0.00 V, max = 10.00 V".into(),
    ];
    lines.extend(safety_lines(&plan.safety)?);
    lines.extend([
        format!("Comments : {name}"),
        "Cycle Definition : Charge/Discharge alternance".into(),
        "Turn to OCV between techniques".into(),
        String::new(),
        "Technique : 1".into(),
        TECHNIQUE.into(),
    ]);
    for row in rows() {
        let mut line = format!("{row:<COLUMN$}");
        for (n, s) in seqs.iter().enumerate() {
            let v = cell(s, n, &row);
            if v.chars().count() >= COLUMN {
                return Err(plan_error(format!(
                    "the value \"{v}\" ({row} of sequence {n}) does not fit the {COLUMN}-character column"
                )));
            }
            line.push_str(&format!("{v:<COLUMN$}"));
        }
        lines.push(line);
    }
    Ok(lines.into_iter().map(|l| l + CRLF).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::plan_compare::{
        Compare, act, assert_same, deploy_plans, looped, plan, split_cccv, three_steps,
    };
    use crate::import::{SourceKind, import};
    use crate::plan::Record;

    /// BioLogic numbers cycles by charge/discharge alternance, so loop `cycle` flags are not
    /// compared.
    const SAME: Compare = Compare {
        cycle: false,
        record_and_safety: true,
    };

    fn round_trip(p: &Plan) -> Plan {
        let text = compile(p).unwrap_or_else(|e| panic!("{e}"));
        import(&text, SourceKind::Biologic, "x.mps").unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn three_step_protocol_compiles_to_the_exact_mps_layout() {
        let text = compile(&three_steps()).unwrap();
        let golden_head = "\
BT-LAB SETTING FILE

Number of linked techniques : 1

Device : BCS-805
Ecell ctrl range : min = 0.00 V, max = 10.00 V
Safety Limits :
\tEcell min = 2.500 V
\tEcell max = 4.250 V
\t|I| = 5000.000 mA
\tfor t > 100 ms
Comments : Three steps
Cycle Definition : Charge/Discharge alternance
Turn to OCV between techniques

Technique : 1
Modulo Bat
Ns                  0                   1                   2                   
ctrl_type           Rest                CC                  CV                  
Apply I/C           I                   I                   I                   
ctrl1_val                               1250.000            4.200               
ctrl1_val_unit                          mA                  V                   
ctrl1_val_vs                            <None>              Ref                 
";
        assert!(
            text.starts_with(&golden_head.replace('\n', "\r\n")),
            "{text}"
        );
        for row in [
            "charge/discharge    Charge              Charge              Charge              ",
            "lim_nb              1                   1                   2                   ",
            "lim1_type           Time                Ecell               |I|                 ",
            "lim1_comp           >                   >                   <                   ",
            "lim1_value          600.000             4.200               125.000             ",
            "lim1_value_unit     s                   V                   mA                  ",
            "lim1_action         Next sequence       Next sequence       Next sequence       ",
            "lim1_seq            1                   2                   3                   ",
            "lim2_type                                                   Time                ",
            "lim2_action         Next sequence       Next sequence       Stop                ",
            "I Range             Auto                10 A                Auto                ",
        ] {
            assert!(
                text.contains(&format!("\r\n{row}\r\n")),
                "missing row {row:?} in\n{text}"
            );
        }
    }

    #[test]
    fn every_deploy_protocol_reads_back_as_the_same_plan_or_is_refused_by_name() {
        let mut compiled = 0;
        for (name, p) in deploy_plans() {
            match compile(&p) {
                Ok(_) => {
                    assert_same(&split_cccv(&p), &round_trip(&p), SAME);
                    compiled += 1;
                }
                Err(e) => {
                    assert_eq!(e.target, Target::Biologic, "{name}");
                    assert!(!e.step.is_empty() && !e.message.is_empty(), "{name}: {e}");
                    eprintln!("{name}: refused: {e}");
                }
            }
        }
        assert!(compiled >= 2, "only {compiled} deploy protocols compiled");
    }

    #[test]
    fn loops_jumps_cccv_and_record_rules_read_back_unchanged() {
        let mut p = plan(vec![
            act(Control::Rest, &[(Condition::StepTime(60.0), Goto::Next)]),
            looped(3, true, 8),
            act(
                Control::Cccv {
                    amps: 1.0,
                    volts: 4.2,
                },
                &[(Condition::CurrentMagnitudeAtMost(0.05), Goto::Next)],
            ),
            looped(2, true, 6),
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
            a.record = Record {
                every_s: Some(10.0),
                dv_v: Some(0.005),
                di_a: Some(0.05),
            };
        }
        p.safety.temperature_max = Some(60.0);
        assert_same(&split_cccv(&p), &round_trip(&p), SAME);
        let text = compile(&p).unwrap();
        assert!(text.contains("\r\nctrl_type           Rest                CC                  CV                  CC                  Rest                Loop                CV                  Loop                \r\n"), "{text}");
        assert!(text.contains("\r\nctrl_seq            0                   0                   0                   0                   0                   3                   0                   1                   \r\n"), "{text}");
        assert!(text.contains("\r\nctrl_repeat         0                   0                   0                   0                   0                   1                   0                   2                   \r\n"), "{text}");
    }

    #[test]
    fn inexpressible_steps_are_errors_naming_the_step_and_target() {
        let cases = [
            (
                Control::Power { watts: 5.0 },
                Condition::StepTime(10.0),
                Goto::Next,
            ),
            (
                Control::Current { amps: 1.0 },
                Condition::StepCapacity(1.0),
                Goto::Next,
            ),
            (
                Control::Current { amps: 1.0 },
                Condition::TestTime(100.0),
                Goto::Next,
            ),
            (
                Control::Cccv {
                    amps: 1.0,
                    volts: 4.2,
                },
                Condition::StepTime(10.0),
                Goto::Next,
            ),
            (
                Control::Current { amps: 1.0 },
                Condition::StepTime(10.0),
                Goto::Step(0),
            ),
        ];
        for (control, condition, goto) in cases {
            let p = plan(vec![
                looped(2, true, 2),
                act(control, &[(condition, goto)]),
                PlanStep::LoopEnd { start: 0 },
                PlanStep::End,
            ]);
            let p = if matches!(goto, Goto::Step(_)) {
                // A jump to the first step of a loop body.
                let mut q = p.clone();
                if let PlanStep::Action(a) = &mut q.steps[1] {
                    a.terminations[0].goto = Goto::Step(1);
                }
                q
            } else {
                p
            };
            let e = compile(&p).unwrap_err();
            assert_eq!(e.target, Target::Biologic);
            assert!(
                e.to_string()
                    .starts_with("biologic cannot express steps[x] (test step)"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_capacity_safety_limit_is_an_error() {
        let mut p = three_steps();
        p.safety.capacity_max = Some(3.0);
        assert!(compile(&p).unwrap_err().message.contains("safety.capacity"));
    }
}
