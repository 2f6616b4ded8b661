//! The step list: PyBaMM strings, and the structured single steps (`rest`, `cc`, `cv`,
//! `cccv`, `cp`, `cr`, `profile`, `chamber`, `end`) with their terminations.

use serde_saphyr::Spanned;

use super::text::{parse_condition, parse_profile_csv};
use super::{Compiler, Node, PendingGoto, describe, is_identifier, join, next};
use crate::error::ProtocolError;
use crate::plan::{
    ActionStep, Condition, Control, Goto, PlanStep, Profile, ProfileKind, Record, Termination,
};
use crate::pybamm;
use crate::units::Unit;

/// The structured step kinds, in the order a map's kind is recognised: kinds whose key is
/// also a field of another kind come after it (`rest` is a field of `pulse` and `gitt`,
/// `pulse` of `gitt`, `repeat` of `profile`).
pub(super) const STEP_KINDS: &[&str] = &[
    "gitt", "pulse", "profile", "chamber", "cccv", "cc", "cv", "cp", "cr", "label", "end", "rest",
    "repeat",
];

impl Compiler<'_> {
    pub(super) fn step_list(
        &mut self,
        node: &Spanned<Node>,
        path: &str,
    ) -> Result<(), ProtocolError> {
        let Node::Seq(items) = &node.value else {
            return self.error(node, path, "expected a list of steps");
        };
        if items.is_empty() {
            return self.error(node, path, "expected at least one step");
        }
        for (i, item) in items.iter().enumerate() {
            self.step(item, &format!("{path}[{i}]"))?;
        }
        Ok(())
    }

    pub(super) fn step(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
        match &node.value {
            Node::Str(text) if text.trim().eq_ignore_ascii_case("end") => {
                self.steps.push(PlanStep::End);
                Ok(())
            }
            Node::Str(text) => self.pybamm_step(node, text, path),
            Node::Map(map) => {
                let kind = STEP_KINDS.iter().find(|k| {
                    map.iter()
                        .any(|(key, _)| matches!(&key.value, Node::Str(s) if s == *k))
                });
                match kind.copied() {
                    Some("repeat") => self.repeat(node, path),
                    Some("label") => self.label(node, path),
                    Some("end") => {
                        self.entries(node, path, &["end"])?;
                        self.steps.push(PlanStep::End);
                        Ok(())
                    }
                    Some("pulse") => self.pulse(node, path),
                    Some("gitt") => self.gitt(node, path),
                    Some(kind) => self.structured(node, path, kind),
                    None => {
                        // Reports the first unknown key by name.
                        self.entries(node, path, STEP_KINDS)?;
                        self.error(
                            node,
                            path,
                            format!("expected a step string or a structured step with one of the keys {}", STEP_KINDS.join(", ")),
                        )
                    }
                }
            }
            _ => self.error(
                node,
                path,
                "expected a step string such as \"Rest for 1 hour\", or a structured step (rest, cc, cv, cccv, cp, cr, profile, pulse, gitt, chamber, label, repeat, end)",
            ),
        }
    }

    pub(super) fn pybamm_step(
        &mut self,
        node: &Spanned<Node>,
        text: &str,
        path: &str,
    ) -> Result<(), ProtocolError> {
        let at = self.at(node);
        let step_error = |column: usize, message: String| ProtocolError::Step {
            at: at.clone(),
            path: path.to_owned(),
            column,
            message,
        };
        let parsed =
            pybamm::parse_step(text, &self.params).map_err(|e| step_error(e.column, e.message))?;
        if let Some(t) = parsed.temperature_c {
            self.push_action(ActionStep {
                path: join(path, "at"),
                description: format!("Set chamber to {t} degC ({text})"),
                control: chamber_control(t, f64::INFINITY, 0.0, None),
                ..ActionStep::default()
            });
        }
        let mut terminations = parsed.terminations;
        let mut profile = None;
        if let Some(run) = &parsed.run {
            // PyBaMM's sign is positive = discharge; voltages keep their sign.
            let sign = if run.kind == ProfileKind::Voltage {
                1.0
            } else {
                -1.0
            };
            let points = self
                .load_profile(&run.file, sign)
                .map_err(|m| step_error(run.column, m))?;
            let p = Profile { points, repeat: 1 };
            terminations.push(next(Condition::StepTime(p.pass_duration_s())));
            profile = Some(p);
        }
        let record = self.record.overridden_by(&Record {
            every_s: parsed.period_s,
            ..Record::default()
        });
        self.push_action(ActionStep {
            path: path.to_owned(),
            description: text.to_owned(),
            control: parsed.control,
            terminations,
            record,
            tags: parsed.tags,
            profile,
            ..ActionStep::default()
        });
        Ok(())
    }

    /// Appends an action step, giving it the label of the block it opens (if any).
    pub(super) fn push_action(&mut self, mut a: ActionStep) {
        if a.label.is_none() {
            a.label = self.pending_label.take();
        }
        if a.record.is_empty() {
            a.record = self.record;
        }
        self.steps.push(PlanStep::Action(a));
    }

    /// A structured single step: rest, cc, cv, cccv, cp, cr, profile or chamber.
    pub(super) fn structured(
        &mut self,
        node: &Spanned<Node>,
        path: &str,
        kind: &str,
    ) -> Result<(), ProtocolError> {
        let allowed: &[&str] = match kind {
            "rest" => &["rest", "for", "until", "record", "tags", "ocv"],
            "cc" | "cp" => &[kind, "direction", "for", "until", "record", "tags"],
            "cv" => &["cv", "for", "until", "record", "tags"],
            "cccv" => &[
                "cccv",
                "voltage",
                "cutoff",
                "direction",
                "for",
                "until",
                "record",
                "tags",
            ],
            "cr" => &["cr", "for", "until", "record", "tags"],
            "profile" => &["profile", "kind", "repeat", "until", "record", "tags"],
            _ => &["chamber", "wait", "timeout", "until", "record", "tags"],
        };
        let entries = self.entries(node, path, allowed)?;
        let get = |k: &str| entries.iter().find(|(n, _, _)| *n == k).map(|(_, _, v)| *v);
        let value = get(kind).unwrap_or(node);
        let vpath = join(path, kind);
        let direction = match get("direction") {
            None => None,
            Some(d) => match self.text(d, &join(path, "direction"))?.trim() {
                "charge" => Some(1.0),
                "discharge" => Some(-1.0),
                other => {
                    return self.error(
                        d,
                        &join(path, "direction"),
                        format!("expected `charge` or `discharge`, found \"{other}\""),
                    );
                }
            },
        };
        let need_direction = |c: &Self| match direction {
            Some(d) => Ok(d),
            None => c.error(
                node,
                &join(path, "direction"),
                format!("a `{kind}` step needs `direction: charge` or `direction: discharge`"),
            ),
        };
        let mut terminations = Vec::new();
        let mut profile = None;
        let mut record_over = Record::default();
        let (control, what) = match kind {
            "rest" => {
                if !matches!(value.value, Node::Null | Node::Bool(true)) {
                    let d = self.duration(value, &vpath)?;
                    terminations.push(next(Condition::StepTime(d)));
                }
                if let Some(o) = get("ocv") {
                    match o.value {
                        Node::Bool(true) => {
                            record_over = Record {
                                every_s: Some(1.0),
                                dv_v: Some(0.001),
                                di_a: None,
                            };
                        }
                        Node::Bool(false) => {}
                        _ => return self.error(o, &join(path, "ocv"), "expected true or false"),
                    }
                }
                (Control::Rest, "rest".to_owned())
            }
            "cc" => {
                let amps = self.current(value, &vpath)?;
                let d = need_direction(self)?;
                (
                    Control::Current { amps: d * amps },
                    format!("cc {} A", d * amps),
                )
            }
            "cv" => {
                let volts =
                    self.quantity(value, &vpath, Unit::Volt, "a voltage such as \"4.2 V\"")?;
                (Control::Voltage { volts }, format!("cv {volts} V"))
            }
            "cccv" => {
                let amps = self.current(value, &vpath)?;
                let d = direction.unwrap_or(1.0);
                let Some(v) = get("voltage") else {
                    return self.error(
                        node,
                        &join(path, "voltage"),
                        "a `cccv` step needs `voltage:` (the CV voltage, e.g. 4.2 V)",
                    );
                };
                let volts = self.quantity(
                    v,
                    &join(path, "voltage"),
                    Unit::Volt,
                    "a voltage such as \"4.2 V\"",
                )?;
                if let Some(c) = get("cutoff") {
                    let cut = self.current(c, &join(path, "cutoff"))?;
                    terminations.push(next(Condition::CurrentMagnitudeAtMost(cut)));
                }
                (
                    Control::Cccv {
                        amps: d * amps,
                        volts,
                    },
                    format!("cccv {} A to {volts} V", d * amps),
                )
            }
            "cp" => {
                let watts = self.positive(value, &vpath, Unit::Watt, "a power such as \"5 W\"")?;
                let d = need_direction(self)?;
                (
                    Control::Power { watts: d * watts },
                    format!("cp {} W", d * watts),
                )
            }
            "cr" => {
                let ohms =
                    self.positive(value, &vpath, Unit::Ohm, "a resistance such as \"4 Ohm\"")?;
                (Control::Resistance { ohms }, format!("cr {ohms} Ohm"))
            }
            "profile" => {
                let kind_node = get("kind");
                let pkind = match kind_node {
                    None => ProfileKind::Current,
                    Some(k) => match self.text(k, &join(path, "kind"))?.trim() {
                        "current" => ProfileKind::Current,
                        "power" => ProfileKind::Power,
                        "voltage" => ProfileKind::Voltage,
                        other => {
                            return self.error(
                                k,
                                &join(path, "kind"),
                                format!("expected current, power or voltage, found \"{other}\""),
                            );
                        }
                    },
                };
                let repeat = match get("repeat") {
                    None => 1,
                    Some(r) => self.count(r, &join(path, "repeat"))?,
                };
                // A CSV file name, or the points inline: [[0, 1.5], [10, -2.0], ...].
                let (points, file) = match &value.value {
                    Node::Seq(rows) => (
                        self.inline_points(value, rows, &vpath)?,
                        "(inline)".to_owned(),
                    ),
                    _ => {
                        let file = self.text(value, &vpath)?;
                        match self.load_profile(file.trim(), 1.0) {
                            Ok(p) => (p, file),
                            Err(m) => return self.error(value, &vpath, m),
                        }
                    }
                };
                let p = Profile { points, repeat };
                terminations.push(next(Condition::StepTime(
                    p.pass_duration_s() * f64::from(repeat),
                )));
                profile = Some(p);
                (
                    Control::Profile { kind: pkind },
                    format!("profile {}", file.trim()),
                )
            }
            _ => {
                let t = self.quantity(
                    value,
                    &vpath,
                    Unit::Celsius,
                    "a temperature such as \"25 degC\"",
                )?;
                let (mut within, mut hold) = (f64::INFINITY, 0.0);
                if let Some(w) = get("wait") {
                    let wp = join(path, "wait");
                    for (name, _, v) in self.entries(w, &wp, &["within", "for"])? {
                        if name == "within" {
                            within = self.quantity(
                                v,
                                &join(&wp, name),
                                Unit::Celsius,
                                "a band such as \"0.5 degC\"",
                            )?;
                        } else {
                            hold = self.duration(v, &join(&wp, name))?;
                        }
                    }
                    if !within.is_finite() {
                        within = 0.5;
                    }
                }
                let timeout = match get("timeout") {
                    None => None,
                    Some(n) => Some(self.duration(n, &join(path, "timeout"))?),
                };
                (
                    chamber_control(t, within, hold, timeout),
                    format!("chamber {t} degC"),
                )
            }
        };
        if let Some(f) = get("for") {
            let d = self.duration(f, &join(path, "for"))?;
            terminations.push(next(Condition::StepTime(d)));
        }
        let sign = match control {
            Control::Current { amps: x }
            | Control::Power { watts: x }
            | Control::Cccv { amps: x, .. } => x,
            Control::Resistance { .. } => -1.0,
            _ => 0.0,
        };
        let index = self.steps.len();
        if let Some(u) = get("until") {
            self.terminations(u, &join(path, "until"), sign, index, &mut terminations)?;
        }
        if terminations.is_empty() && !matches!(control, Control::Chamber { .. }) {
            return self.error(
                node,
                path,
                format!(
                    "the `{kind}` step never ends: add `for: 1 h` or `until: [\"V >= 4.2 V\"]`"
                ),
            );
        }
        let step_record = match get("record") {
            Some(r) => self.record_rule(r, &join(path, "record"))?,
            None => Record::default(),
        };
        let record = self
            .record
            .overridden_by(&record_over)
            .overridden_by(&step_record);
        let tags = match get("tags") {
            Some(t) => self.tags(t, &join(path, "tags"))?,
            None => Vec::new(),
        };
        let description = describe(&what, &terminations);
        self.push_action(ActionStep {
            path: path.to_owned(),
            description,
            control,
            terminations,
            record,
            tags,
            profile,
            ..ActionStep::default()
        });
        Ok(())
    }

    /// Inline profile points `[[time_s, value], ...]`, checked like a CSV.
    pub(super) fn inline_points(
        &self,
        node: &Spanned<Node>,
        rows: &[Spanned<Node>],
        path: &str,
    ) -> Result<Vec<(f64, f64)>, ProtocolError> {
        let number = |n: &Spanned<Node>| match n.value {
            Node::Int(i) => Some(i as f64),
            Node::Float(f) if f.is_finite() => Some(f),
            _ => None,
        };
        let mut csv = String::new();
        for (i, row) in rows.iter().enumerate() {
            let pair = match &row.value {
                Node::Seq(p) if p.len() == 2 => number(&p[0]).zip(number(&p[1])),
                _ => None,
            };
            let Some((t, v)) = pair else {
                return self.error(
                    row,
                    &format!("{path}[{i}]"),
                    "expected a pair [time_s, value] of numbers",
                );
            };
            csv.push_str(&format!("{t:?},{v:?}\n"));
        }
        parse_profile_csv(&csv, 1.0)
            .or_else(|m| self.error(node, path, format!("inline profile: {m}")))
    }

    /// `until:` of an action step: one termination string or a list of them.
    pub(super) fn terminations(
        &mut self,
        node: &Spanned<Node>,
        path: &str,
        sign: f64,
        index: usize,
        out: &mut Vec<Termination>,
    ) -> Result<(), ProtocolError> {
        let items: Vec<(&Spanned<Node>, String)> = match &node.value {
            Node::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (n, format!("{path}[{i}]")))
                .collect(),
            _ => vec![(node, path.to_owned())],
        };
        for (n, p) in items {
            let text = self.text(n, &p)?;
            let (condition, goto) = match text.split_once("->") {
                Some((c, g)) => (c, Some(g.trim())),
                None => (text.as_str(), None),
            };
            let condition = match parse_condition(condition, sign, &self.params) {
                Ok(c) => c,
                Err(m) => return self.error(n, &p, format!("in \"{}\": {m}", text.trim())),
            };
            let goto = match goto {
                None | Some("next") => Goto::Next,
                Some("end") => Goto::End,
                Some(label) if is_identifier(label) => {
                    self.gotos.push(PendingGoto {
                        index,
                        termination: out.len(),
                        label: label.to_owned(),
                        at: self.at(n),
                        path: p.clone(),
                    });
                    Goto::Next
                }
                Some(other) => {
                    return self.error(
                        n,
                        &p,
                        format!(
                            "expected `next`, `end` or a label after \"->\", found \"{other}\""
                        ),
                    );
                }
            };
            out.push(Termination { condition, goto });
        }
        Ok(())
    }

    /// Reads a CSV profile through the caller's resolver: `time_s, value` rows, an optional
    /// header, `#` comments; values multiplied by `sign`.
    pub(super) fn load_profile(&self, file: &str, sign: f64) -> Result<Vec<(f64, f64)>, String> {
        let text = (self.resolver)(file).map_err(|e| format!("profile \"{file}\": {e}"))?;
        parse_profile_csv(&text, sign).map_err(|e| format!("profile \"{file}\": {e}"))
    }
}

pub(super) fn chamber_control(
    temperature_c: f64,
    within_c: f64,
    hold_s: f64,
    timeout_s: Option<f64>,
) -> Control {
    Control::Chamber {
        temperature_c,
        within_c,
        hold_s,
        timeout_s,
    }
}
