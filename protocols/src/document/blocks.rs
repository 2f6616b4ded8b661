//! Blocks: `repeat` and `label`, and the macros that expand into loops: `pulse` (HPPC) and
//! `gitt`.

use serde_saphyr::Spanned;

use super::text::parse_loop_condition;
use super::{Compiler, Node, control_text, describe, is_identifier, join, next};
use crate::error::ProtocolError;
use crate::plan::{ActionStep, Condition, Control, Goto, PlanStep, Record, Termination};
use crate::units::Unit;

const REPEAT_KEYS: &[&str] = &["repeat", "until", "cycle", "steps"];
const LABEL_KEYS: &[&str] = &["label", "steps"];

/// One step of a macro body: its path suffix, control, and conditions each marked whether
/// it leaves the macro's loop (jumps to the final rest).
type MacroStep<'a> = (&'a str, Control, Vec<(Condition, bool)>);

impl Compiler<'_> {
    pub(super) fn repeat(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
        let mut count = 0;
        let mut cycle = false;
        let mut body = None;
        let mut until = Vec::new();
        for (name, _, value) in self.entries(node, path, REPEAT_KEYS)? {
            let p = join(path, name);
            match name {
                "repeat" => count = self.count(value, &p)?,
                "cycle" => match value.value {
                    Node::Bool(b) => cycle = b,
                    _ => return self.error(value, &p, "expected true or false"),
                },
                "until" => {
                    let items: Vec<(&Spanned<Node>, String)> = match &value.value {
                        Node::Seq(items) => items
                            .iter()
                            .enumerate()
                            .map(|(i, n)| (n, format!("{p}[{i}]")))
                            .collect(),
                        _ => vec![(value, p.clone())],
                    };
                    for (n, ip) in items {
                        let text = self.text(n, &ip)?;
                        match parse_loop_condition(&text) {
                            Ok(c) => until.push(c),
                            Err(m) => return self.error(n, &ip, m),
                        }
                    }
                }
                _ => body = Some(value),
            }
        }
        let Some(body) = body else {
            return self.error(
                node,
                &join(path, "steps"),
                "missing `steps` (the loop body)",
            );
        };
        let start = self.steps.len();
        // The end index is patched in once the body has been compiled.
        self.steps.push(PlanStep::LoopStart {
            count,
            cycle,
            end: start,
            until: Vec::new(),
        });
        self.step_list(body, &join(path, "steps"))?;
        let end = self.steps.len();
        self.steps.push(PlanStep::LoopEnd { start });
        self.steps[start] = PlanStep::LoopStart {
            count,
            cycle,
            end,
            until,
        };
        Ok(())
    }

    pub(super) fn label(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
        let mut body = None;
        let mut label = None;
        for (name, _, value) in self.entries(node, path, LABEL_KEYS)? {
            let p = join(path, name);
            if name == "label" {
                let l = match &value.value {
                    Node::Str(s)
                        if is_identifier(s.trim()) && !matches!(s.trim(), "next" | "end") =>
                    {
                        s.trim().to_owned()
                    }
                    _ => {
                        return self.error(
                            value,
                            &p,
                            "a label must be letters, digits and _ (not starting with a digit, not `next` or `end`)",
                        );
                    }
                };
                if self.labels.contains_key(&l) {
                    return self.error(value, &p, format!("the label `{l}` is used twice"));
                }
                self.labels.insert(l.clone(), self.steps.len());
                label = Some(l);
            } else {
                body = Some(value);
            }
        }
        match body {
            Some(body) => {
                self.pending_label = label;
                self.step_list(body, &join(path, "steps"))?;
                self.pending_label = None;
                Ok(())
            }
            None => self.error(
                node,
                &join(path, "steps"),
                "missing `steps` (the labelled block)",
            ),
        }
    }

    /// HPPC: at each of `count` SOC levels, a discharge pulse, rest, optional charge pulse,
    /// rest, then a discharge of `soc_step` of the capacity and a rest. Reaching `v_min`
    /// anywhere jumps to a final rest after the loop.
    pub(super) fn pulse(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
        const KEYS: &[&str] = &[
            "pulse",
            "charge",
            "duration",
            "rest",
            "soc_step",
            "soc_current",
            "soc_rest",
            "count",
            "v_min",
            "v_max",
            "record",
        ];
        let entries = self.entries(node, path, KEYS)?;
        let get = |k: &str| entries.iter().find(|(n, _, _)| *n == k).map(|(_, _, v)| *v);
        let req = |k: &str| match get(k) {
            Some(v) => Ok(v),
            None => self.error(
                node,
                &join(path, k),
                format!("the pulse (HPPC) step needs `{k}`"),
            ),
        };
        let pulse = self.current(req("pulse")?, &join(path, "pulse"))?;
        let charge = match get("charge") {
            Some(c) => Some(self.current(c, &join(path, "charge"))?),
            None => Some(0.75 * pulse),
        };
        let duration = match get("duration") {
            Some(d) => self.duration(d, &join(path, "duration"))?,
            None => 10.0,
        };
        let rest = match get("rest") {
            Some(d) => self.duration(d, &join(path, "rest"))?,
            None => 40.0,
        };
        let soc_step = match get("soc_step") {
            Some(s) => self.percent(s, &join(path, "soc_step"))?,
            None => 0.1,
        };
        let soc_current = match get("soc_current") {
            Some(c) => self.current(c, &join(path, "soc_current"))?,
            None => self.current_text("C/3", node, path)?,
        };
        let soc_rest = match get("soc_rest") {
            Some(d) => self.duration(d, &join(path, "soc_rest"))?,
            None => 3600.0,
        };
        let count = match get("count") {
            Some(c) => self.count(c, &join(path, "count"))?,
            None => ((1.0 / soc_step).round() as u32).saturating_sub(1).max(1),
        };
        let v_min = self.quantity(
            req("v_min")?,
            &join(path, "v_min"),
            Unit::Volt,
            "a voltage such as \"2.5 V\"",
        )?;
        let v_max = match get("v_max") {
            Some(v) => Some(self.quantity(
                v,
                &join(path, "v_max"),
                Unit::Volt,
                "a voltage such as \"4.2 V\"",
            )?),
            None => None,
        };
        let Some(capacity) = self.capacity() else {
            return self.error(
                node,
                path,
                "the pulse (HPPC) step needs params.capacity to size the SOC steps",
            );
        };
        let record = match get("record") {
            Some(r) => self
                .record
                .overridden_by(&self.record_rule(r, &join(path, "record"))?),
            None => self.record,
        };
        let soc_time = soc_step * capacity / soc_current * 3600.0;
        let mut body = vec![
            (
                "discharge_pulse",
                Control::Current { amps: -pulse },
                vec![
                    (Condition::StepTime(duration), false),
                    (Condition::VoltageAtMost(v_min), true),
                ],
            ),
            (
                "rest",
                Control::Rest,
                vec![(Condition::StepTime(rest), false)],
            ),
        ];
        if let Some(c) = charge.filter(|c| *c > 0.0) {
            // Reaching v_max only shortens the charge pulse (near full charge).
            let mut t = vec![(Condition::StepTime(duration), false)];
            t.extend(v_max.map(|v| (Condition::VoltageAtLeast(v), false)));
            body.push(("charge_pulse", Control::Current { amps: c }, t));
            body.push((
                "rest_after_charge",
                Control::Rest,
                vec![(Condition::StepTime(rest), false)],
            ));
        }
        body.push((
            "soc_step",
            Control::Current { amps: -soc_current },
            vec![
                (Condition::StepTime(soc_time), false),
                (Condition::VoltageAtMost(v_min), true),
            ],
        ));
        body.push((
            "soc_rest",
            Control::Rest,
            vec![(Condition::StepTime(soc_rest), false)],
        ));
        self.macro_loop(path, "HPPC", count, body, rest, record);
        Ok(())
    }

    /// GITT: `count` pulses of `gitt` current for `pulse`, each followed by `rest`, until the
    /// voltage reaches `until` (then a final rest).
    pub(super) fn gitt(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
        const KEYS: &[&str] = &[
            "gitt",
            "direction",
            "pulse",
            "rest",
            "until",
            "count",
            "record",
        ];
        let entries = self.entries(node, path, KEYS)?;
        let get = |k: &str| entries.iter().find(|(n, _, _)| *n == k).map(|(_, _, v)| *v);
        let req = |k: &str| match get(k) {
            Some(v) => Ok(v),
            None => self.error(node, &join(path, k), format!("the gitt step needs `{k}`")),
        };
        let amps = self.current(req("gitt")?, &join(path, "gitt"))?;
        let sign = match get("direction") {
            None => -1.0,
            Some(d) => match self.text(d, &join(path, "direction"))?.trim() {
                "charge" => 1.0,
                "discharge" => -1.0,
                other => {
                    return self.error(
                        d,
                        &join(path, "direction"),
                        format!("expected `charge` or `discharge`, found \"{other}\""),
                    );
                }
            },
        };
        let pulse = self.duration(req("pulse")?, &join(path, "pulse"))?;
        let rest = self.duration(req("rest")?, &join(path, "rest"))?;
        let v = self.quantity(
            req("until")?,
            &join(path, "until"),
            Unit::Volt,
            "the end voltage such as \"3.0 V\"",
        )?;
        let count = match (get("count"), self.capacity()) {
            (Some(c), _) => self.count(c, &join(path, "count"))?,
            // Enough pulses to move the whole capacity, plus margin: the voltage ends it.
            (None, Some(cap)) => ((cap / amps * 3600.0 / pulse).ceil() as u32)
                .saturating_add(5)
                .max(1),
            (None, None) => {
                return self.error(
                    node,
                    &join(path, "count"),
                    "the gitt step needs `count` (or params.capacity to derive it)",
                );
            }
        };
        let record = match get("record") {
            Some(r) => self
                .record
                .overridden_by(&self.record_rule(r, &join(path, "record"))?),
            None => self.record,
        };
        let stop = if sign > 0.0 {
            Condition::VoltageAtLeast(v)
        } else {
            Condition::VoltageAtMost(v)
        };
        let body = vec![
            (
                "pulse",
                Control::Current { amps: sign * amps },
                vec![(Condition::StepTime(pulse), false), (stop, true)],
            ),
            (
                "rest",
                Control::Rest,
                vec![(Condition::StepTime(rest), false)],
            ),
        ];
        self.macro_loop(path, "GITT", count, body, rest, record);
        Ok(())
    }

    /// Emits `LoopStart; body...; LoopEnd; final rest`; a body condition marked `true` jumps
    /// to the final rest (leaving the loop), the others go to the next step.
    pub(super) fn macro_loop(
        &mut self,
        path: &str,
        name: &str,
        count: u32,
        body: Vec<MacroStep>,
        final_rest: f64,
        record: Record,
    ) {
        let start = self.steps.len();
        let end = start + body.len() + 1;
        let final_index = end + 1;
        self.steps.push(PlanStep::LoopStart {
            count,
            cycle: false,
            end,
            until: Vec::new(),
        });
        for (part, control, conditions) in body {
            let terminations: Vec<Termination> = conditions
                .into_iter()
                .map(|(condition, exit)| Termination {
                    condition,
                    goto: if exit {
                        Goto::Step(final_index)
                    } else {
                        Goto::Next
                    },
                })
                .collect();
            let description = format!("{name} {}", describe(&control_text(control), &terminations));
            self.push_action(ActionStep {
                path: format!("{path}.{part}"),
                description,
                control,
                terminations,
                record,
                ..ActionStep::default()
            });
        }
        self.steps.push(PlanStep::LoopEnd { start });
        self.push_action(ActionStep {
            path: format!("{path}.final_rest"),
            description: format!("{name} final rest for {final_rest} s"),
            control: Control::Rest,
            terminations: vec![next(Condition::StepTime(final_rest))],
            record,
            ..ActionStep::default()
        });
    }
}
