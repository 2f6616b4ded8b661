//! The top level of a document: `protocol`, `version`, `params`, `safety` and `record`,
//! then the steps and the resolution of label jumps.

use serde_saphyr::Spanned;

use super::{Compiler, Node, is_identifier, join};
use crate::SourceLocation;
use crate::error::ProtocolError;
use crate::plan::{Goto, Plan, PlanStep, Safety, sha256_hex};
use crate::units::{self, Unit};

/// The only language version this crate reads.
const VERSION: i128 = 1;

const TOP_KEYS: &[&str] = &[
    "protocol",
    "version",
    "description",
    "params",
    "safety",
    "record",
    "steps",
];
const SAFETY_KEYS: &[&str] = &["voltage", "current", "temperature", "capacity"];

impl Compiler<'_> {
    pub(super) fn document(
        &mut self,
        root: &Spanned<Node>,
        source: &str,
    ) -> Result<Plan, ProtocolError> {
        if matches!(root.value, Node::Null) {
            return self.error(
                root,
                "(document)",
                "the document is empty; expected protocol, version and steps",
            );
        }
        let entries = self.entries(root, "", TOP_KEYS)?;
        let get = |k: &str| entries.iter().find(|(n, _, _)| *n == k).map(|(_, _, v)| *v);

        let name = match get("protocol") {
            None => {
                return self.error(
                    root,
                    "protocol",
                    "missing required key `protocol` (the protocol's name)",
                );
            }
            Some(n) => match n.value.scalar_text() {
                Some(s) if !s.trim().is_empty() => s.trim().to_owned(),
                _ => return self.error(n, "protocol", "expected the protocol's name as text"),
            },
        };
        match get("version") {
            None => {
                return self.error(
                    root,
                    "version",
                    "missing required key `version`; add `version: 1`",
                );
            }
            Some(n) if matches!(n.value, Node::Int(VERSION)) => {}
            Some(n) => {
                let found = n
                    .value
                    .scalar_text()
                    .unwrap_or_else(|| "a non-scalar".into());
                return self.error(
                    n,
                    "version",
                    format!("unsupported language version {found}; this cyclerd reads version 1"),
                );
            }
        }
        if let Some(n) = get("description")
            && !matches!(n.value, Node::Str(_) | Node::Null)
        {
            return self.error(n, "description", "expected text");
        }
        let capacity_ah = match get("params") {
            Some(n) => self.params(n)?,
            None => None,
        };
        let capacity_ah = self.apply_overrides(capacity_ah)?;
        let safety = match get("safety") {
            Some(n) => self.safety(n)?,
            None => Safety::default(),
        };
        if let Some(n) = get("record") {
            self.record = self.record_rule(n, "record")?;
        }
        match get("steps") {
            Some(n) => self.step_list(n, "steps")?,
            None => {
                return self.error(
                    root,
                    "steps",
                    "missing required key `steps` (the list of steps)",
                );
            }
        }
        let mut steps = std::mem::take(&mut self.steps);
        steps.push(PlanStep::End);
        for g in std::mem::take(&mut self.gotos) {
            let Some(&target) = self.labels.get(&g.label) else {
                let known: Vec<&str> = self.labels.keys().map(String::as_str).collect();
                return Err(ProtocolError::Document {
                    at: g.at,
                    path: g.path,
                    message: format!(
                        "unknown label `{}`; expected next, end or a label defined with `label:` ({})",
                        g.label,
                        if known.is_empty() {
                            "none defined".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                });
            };
            if let Some(PlanStep::Action(a)) = steps.get_mut(g.index)
                && let Some(t) = a.terminations.get_mut(g.termination)
            {
                t.goto = Goto::Step(target);
            }
        }
        Ok(Plan {
            name,
            source_sha256: sha256_hex(source),
            capacity_ah,
            params: self.params.clone(),
            safety,
            steps,
        })
    }

    /// Puts the values given at start over the document's parameters; returns the capacity
    /// then in force. A name the document does not define is refused (a typo would otherwise
    /// silently change nothing), except `capacity`.
    fn apply_overrides(&mut self, capacity_ah: Option<f64>) -> Result<Option<f64>, ProtocolError> {
        let mut capacity_ah = capacity_ah;
        for (name, value) in self.overrides {
            let refuse = |message: String| ProtocolError::Document {
                at: SourceLocation {
                    origin: self.origin.to_owned(),
                    line: None,
                    column: None,
                },
                path: join("params", name),
                message,
            };
            if !is_identifier(name) {
                return Err(refuse(format!(
                    "parameter {name:?} given at start: a name is letters, digits and _ (not \
                     starting with a digit)"
                )));
            }
            if name == "capacity" {
                let ah = units::parse_quantity(value)
                    .ok()
                    .filter(|q| q.unit == Unit::AmpHour && q.value.is_finite() && q.value > 0.0)
                    .ok_or_else(|| {
                        refuse(format!(
                            "capacity given at start must be a capacity such as \"5 Ah\", not \
                             {value:?}"
                        ))
                    })?;
                capacity_ah = Some(ah.value);
            } else if !self.params.contains_key(name) {
                let known: Vec<&str> = self
                    .params
                    .keys()
                    .map(String::as_str)
                    .filter(|k| *k != "capacity")
                    .collect();
                return Err(refuse(format!(
                    "unknown parameter \"{name}\" given at start; the protocol defines {} \
                     (capacity may always be given)",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            self.params.insert(name.clone(), value.trim().to_owned());
        }
        Ok(capacity_ah)
    }

    /// Reads `params`; returns the nominal capacity in Ah when `capacity` is among them.
    pub(super) fn params(&mut self, node: &Spanned<Node>) -> Result<Option<f64>, ProtocolError> {
        let Node::Map(map) = &node.value else {
            return self.error(
                node,
                "params",
                "expected a mapping of names to values, e.g. `capacity: 2.5 Ah`",
            );
        };
        for (key, value) in map {
            let name = match &key.value {
                Node::Str(s) if is_identifier(s) => s.clone(),
                _ => {
                    return self.error(key, "params", "a parameter name must be letters, digits and _ (not starting with a digit)");
                }
            };
            let path = join("params", &name);
            let Some(text) = value.value.scalar_text() else {
                return self.error(value, &path, "expected a single value such as \"4.2 V\"");
            };
            self.params.insert(name, text);
        }
        // Checked here, where the node is at hand, so a bad capacity is reported at its line
        // even when no step uses a C-rate.
        let capacity = map
            .iter()
            .find(|(k, _)| matches!(&k.value, Node::Str(s) if s == "capacity"));
        match capacity {
            Some((_, value)) => {
                let ah = self.positive(
                    value,
                    "params.capacity",
                    Unit::AmpHour,
                    "a capacity such as \"2.5 Ah\"",
                )?;
                Ok(Some(ah))
            }
            None => Ok(None),
        }
    }

    pub(super) fn safety(&self, node: &Spanned<Node>) -> Result<Safety, ProtocolError> {
        let mut s = Safety::default();
        for (name, _, value) in self.entries(node, "safety", SAFETY_KEYS)? {
            let path = join("safety", name);
            match name {
                "voltage" => {
                    let items = match &value.value {
                        Node::Seq(items) if items.len() == 2 => items,
                        _ => {
                            return self.error(
                                value,
                                &path,
                                "expected [min, max], e.g. [2.5 V, 4.25 V]",
                            );
                        }
                    };
                    let min = self.quantity(
                        &items[0],
                        &format!("{path}[0]"),
                        Unit::Volt,
                        "a voltage such as \"2.5 V\"",
                    )?;
                    let max = self.quantity(
                        &items[1],
                        &format!("{path}[1]"),
                        Unit::Volt,
                        "a voltage such as \"4.25 V\"",
                    )?;
                    if min >= max {
                        return self.error(
                            value,
                            &path,
                            format!("the minimum {min} V must be below the maximum {max} V"),
                        );
                    }
                    s.voltage_min = Some(min);
                    s.voltage_max = Some(max);
                }
                "current" => {
                    s.current_max = Some(self.positive(
                        value,
                        &path,
                        Unit::Ampere,
                        "a current such as \"7.5 A\"",
                    )?)
                }
                "temperature" => {
                    s.temperature_max = Some(self.quantity(
                        value,
                        &path,
                        Unit::Celsius,
                        "a temperature such as \"60 degC\"",
                    )?);
                }
                _ => {
                    s.capacity_max = Some(self.positive(
                        value,
                        &path,
                        Unit::AmpHour,
                        "a capacity such as \"3.0 Ah\"",
                    )?)
                }
            }
        }
        Ok(s)
    }
}
