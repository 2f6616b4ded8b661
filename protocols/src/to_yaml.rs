//! A plan written back as a protocol document, for `cyclerctl protocol import`: a native
//! schedule becomes a YAML protocol the lab can read, edit and run anywhere.
//!
//! Steps are written as PyBaMM strings where the string grammar can say them (the form people
//! read most easily), and as structured steps otherwise. Values are absolute (amps, volts,
//! seconds): a plan no longer knows which currents were C-rates.

use crate::plan::{
    ActionStep, Condition, Control, Goto, LoopCondition, Plan, PlanStep, ProfileKind, Record,
};
use std::collections::BTreeSet;
use std::fmt::Write;

impl Plan {
    /// The plan as a protocol document that parses back into an equivalent plan.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "protocol: {}", quote(&self.name));
        out.push_str("version: 1\n");
        if !self.params.is_empty() || self.capacity_ah.is_some() {
            out.push_str("params:\n");
            for (name, value) in &self.params {
                let _ = writeln!(out, "  {name}: {}", quote(value));
            }
            if let (Some(c), false) = (self.capacity_ah, self.params.contains_key("capacity")) {
                let _ = writeln!(out, "  capacity: {c} Ah");
            }
        }
        let s = &self.safety;
        let mut safety = String::new();
        if let (Some(lo), Some(hi)) = (s.voltage_min, s.voltage_max) {
            let _ = writeln!(safety, "  voltage: [{lo} V, {hi} V]");
        }
        if let Some(i) = s.current_max {
            let _ = writeln!(safety, "  current: {i} A");
        }
        if let Some(t) = s.temperature_max {
            let _ = writeln!(safety, "  temperature: {t} degC");
        }
        if let Some(c) = s.capacity_max {
            let _ = writeln!(safety, "  capacity: {c} Ah");
        }
        if !safety.is_empty() {
            out.push_str("safety:\n");
            out.push_str(&safety);
        }
        out.push_str("steps:\n");
        let targets: BTreeSet<usize> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                PlanStep::Action(a) => Some(a.terminations.iter()),
                _ => None,
            })
            .flatten()
            .filter_map(|t| match t.goto {
                Goto::Step(i) => Some(i),
                _ => None,
            })
            .collect();
        let end = self.steps.len().saturating_sub(1);
        write_block(&mut out, &self.steps, 0, end, 1, &targets);
        out
    }
}

/// The label naming plan index `index`: the step's own label when it has one, else
/// `step_<index>`.
fn label(steps: &[PlanStep], index: usize) -> String {
    match steps.get(index) {
        Some(PlanStep::Action(ActionStep { label: Some(l), .. })) => l.clone(),
        _ => format!("step_{index}"),
    }
}

/// Writes steps `from..to` (exclusive) at `depth` levels of indentation.
fn write_block(
    out: &mut String,
    steps: &[PlanStep],
    from: usize,
    to: usize,
    depth: usize,
    targets: &BTreeSet<usize>,
) {
    let mut i = from;
    while i < to {
        let pad = "  ".repeat(depth);
        // A jump target (or a step that had a label) is wrapped in a label block naming it.
        let labelled = matches!(&steps[i], PlanStep::Action(a) if a.label.is_some());
        let (pad, inner_depth) = if targets.contains(&i) || labelled {
            let _ = writeln!(out, "{pad}- label: {}", label(steps, i));
            let _ = writeln!(out, "{pad}  steps:");
            ("  ".repeat(depth + 1), depth + 1)
        } else {
            (pad, depth)
        };
        match &steps[i] {
            PlanStep::Action(a) => {
                write_action(out, a, &pad, steps);
                i += 1;
            }
            PlanStep::LoopStart {
                count,
                cycle,
                end,
                until,
            } => {
                let _ = writeln!(out, "{pad}- repeat: {count}");
                if *cycle {
                    let _ = writeln!(out, "{pad}  cycle: true");
                }
                if !until.is_empty() {
                    let exits: Vec<String> = until
                        .iter()
                        .map(|c| {
                            quote(&match *c {
                                LoopCondition::DischargeCapacityBelowFractionOfFirst(f) => {
                                    format!("discharge_capacity < {f} first")
                                }
                                LoopCondition::DischargeCapacityBelow(q) => {
                                    format!("discharge_capacity < {q} Ah")
                                }
                                LoopCondition::CycleAtLeast(n) => format!("cycle >= {n}"),
                            })
                        })
                        .collect();
                    let _ = writeln!(out, "{pad}  until: [{}]", exits.join(", "));
                }
                let _ = writeln!(out, "{pad}  steps:");
                write_block(out, steps, i + 1, *end, inner_depth + 1, targets);
                i = end + 1;
            }
            PlanStep::LoopEnd { .. } => i += 1,
            // The final End is outside the written range; one inside it ends the test early.
            PlanStep::End => {
                let _ = writeln!(out, "{pad}- end");
                i += 1;
            }
        }
    }
}

fn write_action(out: &mut String, a: &ActionStep, pad: &str, steps: &[PlanStep]) {
    let plain = a.record == Record::default() && a.tags.is_empty() && a.profile.is_none();
    if let Some(text) = pybamm_string(a).filter(|_| plain) {
        let _ = writeln!(out, "{pad}- {}", quote(&text));
        return;
    }
    let (key, value, direction) = match a.control {
        Control::Rest => ("rest", String::from("true"), None),
        Control::Current { amps } => ("cc", format!("{} A", amps.abs()), Some(amps >= 0.0)),
        Control::Voltage { volts } => ("cv", format!("{volts} V"), None),
        Control::Power { watts } => ("cp", format!("{} W", watts.abs()), Some(watts >= 0.0)),
        Control::Cccv { amps, .. } => ("cccv", format!("{} A", amps.abs()), Some(amps >= 0.0)),
        Control::Resistance { ohms } => ("cr", format!("{ohms} Ohm"), None),
        Control::Profile { .. } => {
            let points: Vec<String> = a
                .profile
                .iter()
                .flat_map(|p| p.points.iter())
                .map(|(t, v)| format!("[{t:?}, {v:?}]"))
                .collect();
            ("profile", format!("[{}]", points.join(", ")), None)
        }
        Control::Chamber { temperature_c, .. } => {
            ("chamber", format!("{temperature_c} degC"), None)
        }
    };
    let _ = writeln!(out, "{pad}- {key}: {value}");
    if let Some(charge) = direction {
        let _ = writeln!(
            out,
            "{pad}  direction: {}",
            if charge { "charge" } else { "discharge" }
        );
    }
    // The terminations a structured step adds by itself are not written again.
    let mut implicit = 0;
    match a.control {
        Control::Cccv { volts, .. } => {
            let _ = writeln!(out, "{pad}  voltage: {volts} V");
        }
        Control::Profile { kind } => {
            let kind = match kind {
                ProfileKind::Current => "current",
                ProfileKind::Power => "power",
                ProfileKind::Voltage => "voltage",
            };
            let _ = writeln!(out, "{pad}  kind: {kind}");
            if let Some(p) = &a.profile {
                let _ = writeln!(out, "{pad}  repeat: {}", p.repeat);
            }
            implicit = 1;
        }
        Control::Chamber {
            within_c,
            hold_s,
            timeout_s,
            ..
        } => {
            if within_c.is_finite() {
                let _ = writeln!(
                    out,
                    "{pad}  wait: {{within: {within_c} degC, for: {hold_s} s}}"
                );
            }
            if let Some(t) = timeout_s {
                let _ = writeln!(out, "{pad}  timeout: {t} s");
            }
        }
        _ => {}
    }
    if a.record != Record::default() {
        let mut rules = Vec::new();
        if let Some(x) = a.record.every_s {
            rules.push(format!("every: {x} s"));
        }
        if let Some(x) = a.record.dv_v {
            rules.push(format!("dv: {x} V"));
        }
        if let Some(x) = a.record.di_a {
            rules.push(format!("di: {x} A"));
        }
        let _ = writeln!(out, "{pad}  record: {{{}}}", rules.join(", "));
    }
    if !a.tags.is_empty() {
        let tags: Vec<String> = a.tags.iter().map(|t| quote(t)).collect();
        let _ = writeln!(out, "{pad}  tags: [{}]", tags.join(", "));
    }
    let until: Vec<String> = a
        .terminations
        .iter()
        .skip(implicit)
        .map(|t| {
            let goto = match t.goto {
                Goto::Next => String::new(),
                Goto::End => " -> end".into(),
                Goto::Step(i) => format!(" -> {}", label(steps, i)),
            };
            quote(&format!("{}{goto}", condition(&t.condition)))
        })
        .collect();
    if !until.is_empty() {
        let _ = writeln!(out, "{pad}  until: [{}]", until.join(", "));
    }
}

/// The structured form of a condition (`V >= 4.2 V`).
fn condition(c: &Condition) -> String {
    match *c {
        Condition::VoltageAtLeast(v) => format!("V >= {v} V"),
        Condition::VoltageAtMost(v) => format!("V <= {v} V"),
        Condition::CurrentMagnitudeAtMost(i) => format!("I <= {i} A"),
        Condition::StepTime(s) => format!("t >= {s} s"),
        Condition::TestTime(s) => format!("T >= {s} s"),
        Condition::StepCapacity(ah) => format!("Ah >= {ah} Ah"),
        Condition::StepEnergy(wh) => format!("Wh >= {wh} Wh"),
        Condition::TemperatureAtLeast(t) => format!("Temp >= {t} degC"),
        Condition::TemperatureAtMost(t) => format!("Temp <= {t} degC"),
        Condition::VoltageRateMagnitudeAtMost(r) => format!("dV/dt <= {r} V/s"),
        Condition::VoltageRateMagnitudeAtLeast(r) => format!("dV/dt >= {r} V/s"),
    }
}

/// The step as a PyBaMM string, when the string grammar can say it: every termination goes to
/// the next step, at most one duration and one voltage or current condition.
fn pybamm_string(a: &ActionStep) -> Option<String> {
    if a.terminations.iter().any(|t| t.goto != Goto::Next) {
        return None;
    }
    let mut duration = None;
    let mut until = None;
    for t in &a.terminations {
        match t.condition {
            Condition::StepTime(s) if duration.is_none() => duration = Some(s),
            Condition::VoltageAtLeast(v) if until.is_none() => until = Some(format!(">{v} V")),
            Condition::VoltageAtMost(v) if until.is_none() => until = Some(format!("<{v} V")),
            Condition::CurrentMagnitudeAtMost(i) if until.is_none() => {
                until = Some(format!("{i} A"))
            }
            _ => return None,
        }
    }
    let instruction = match a.control {
        Control::Rest => "Rest".to_string(),
        Control::Current { amps } if amps >= 0.0 => format!("Charge at {amps} A"),
        Control::Current { amps } => format!("Discharge at {} A", -amps),
        Control::Voltage { volts } => format!("Hold at {volts} V"),
        Control::Power { watts } if watts >= 0.0 => format!("Charge at {watts} W"),
        Control::Power { watts } => format!("Discharge at {} W", -watts),
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let mut text = instruction;
    match (duration, until) {
        (Some(d), Some(u)) => {
            let _ = write!(text, " for {d} seconds or until {u}");
        }
        (Some(d), None) => {
            let _ = write!(text, " for {d} seconds");
        }
        (None, Some(u)) => {
            let _ = write!(text, " until {u}");
        }
        (None, None) => return None,
    }
    Some(text)
}

/// A YAML double-quoted scalar.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04x}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::plan_compare::without_names;

    /// Two plans are the same protocol: same steps, controls, terminations and limits.
    fn same_protocol(a: &Plan, b: &Plan) -> bool {
        without_names(a) == without_names(b)
    }

    #[test]
    fn the_deploy_protocols_written_back_parse_into_the_same_plan() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/protocols");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let Ok(plan) = Plan::from_yaml(&std::fs::read_to_string(&path).unwrap(), "p") else {
                continue;
            };
            let yaml = plan.to_yaml();
            let back = Plan::from_yaml(&yaml, "written back")
                .unwrap_or_else(|e| panic!("{}: {e}\n{yaml}", path.display()));
            assert!(same_protocol(&plan, &back), "{}:\n{yaml}", path.display());
            checked += 1;
        }
        assert!(checked >= 2);
    }

    #[test]
    fn names_with_quotes_survive() {
        assert_eq!(quote("a \"b\"\n"), "\"a \\\"b\\\"\\n\"");
    }
}
