//! Scalar nodes read as values: text with parameters substituted, counts, durations,
//! currents (absolute or C-rates), percentages and quantities of a unit.

use serde_saphyr::Spanned;

use super::text::{parse_fraction, reference_name, substitute, to_amps};
use super::{Compiler, Node, join};
use crate::error::ProtocolError;
use crate::plan::Record;
use crate::units::{self, Unit};

impl Compiler<'_> {
    pub(super) fn positive(
        &self,
        node: &Spanned<Node>,
        path: &str,
        unit: Unit,
        what: &str,
    ) -> Result<f64, ProtocolError> {
        let v = self.quantity(node, path, unit, what)?;
        if v > 0.0 {
            Ok(v)
        } else {
            self.error(node, path, format!("expected {what} above zero"))
        }
    }

    /// A scalar quantity of the given unit; a whole-value parameter reference (`${v_max}`) is
    /// resolved first.
    pub(super) fn quantity(
        &self,
        node: &Spanned<Node>,
        path: &str,
        unit: Unit,
        what: &str,
    ) -> Result<f64, ProtocolError> {
        let Some(raw) = node.value.scalar_text() else {
            return self.error(node, path, format!("expected {what}"));
        };
        let text = match reference_name(&raw) {
            Some(name) => match self.params.get(name) {
                Some(v) => v.clone(),
                None => {
                    return self.error(
                        node,
                        path,
                        format!("unknown parameter \"{name}\"; define it under params"),
                    );
                }
            },
            None => raw,
        };
        match units::parse_quantity(&text) {
            Ok(q) if q.unit == unit => Ok(q.value),
            Ok(q) => self.error(
                node,
                path,
                format!("expected {what}, found \"{}\" ({})", text.trim(), q.unit),
            ),
            Err(e) => self.error(node, path, format!("expected {what}: {}", e.message)),
        }
    }

    /// `tags: [a, b]`.
    pub(super) fn tags(
        &self,
        node: &Spanned<Node>,
        path: &str,
    ) -> Result<Vec<String>, ProtocolError> {
        let Node::Seq(items) = &node.value else {
            return self.error(node, path, "expected a list of tags such as [ocv, relax]");
        };
        items
            .iter()
            .enumerate()
            .map(|(i, t)| self.text(t, &format!("{path}[{i}]")))
            .collect()
    }

    /// A whole number >= 1.
    pub(super) fn count(&self, node: &Spanned<Node>, path: &str) -> Result<u32, ProtocolError> {
        let n = match &node.value {
            Node::Int(n) => Some(*n),
            Node::Str(s) => self.substitute(node, path, s)?.trim().parse::<i128>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= 1 => {
                u32::try_from(n).or_else(|_| self.error(node, path, "the number is too large"))
            }
            _ => self.error(node, path, "expected a whole number, 1 or more"),
        }
    }

    /// A scalar as text with `${name}` / `{name}` references substituted.
    pub(super) fn text(&self, node: &Spanned<Node>, path: &str) -> Result<String, ProtocolError> {
        let Some(raw) = node.value.scalar_text() else {
            return self.error(node, path, "expected a single value (text or number)");
        };
        self.substitute(node, path, &raw)
    }

    pub(super) fn substitute(
        &self,
        node: &Spanned<Node>,
        path: &str,
        raw: &str,
    ) -> Result<String, ProtocolError> {
        substitute(raw, &self.params).or_else(|m| self.error(node, path, m))
    }

    pub(super) fn duration(&self, node: &Spanned<Node>, path: &str) -> Result<f64, ProtocolError> {
        let text = self.text(node, path)?;
        match units::parse_duration(&text) {
            Ok(s) if s > 0.0 => Ok(s),
            Ok(_) => self.error(node, path, "a duration must be longer than zero"),
            Err(e) => self.error(
                node,
                path,
                format!("expected a duration such as \"30 min\": {}", e.message),
            ),
        }
    }

    /// A current magnitude in A from `2 A`, `500 mA`, `1C` or `C/20`.
    pub(super) fn current(&self, node: &Spanned<Node>, path: &str) -> Result<f64, ProtocolError> {
        let text = self.text(node, path)?;
        match units::parse_quantity(&text) {
            Ok(q) => to_amps(q, &self.params)
                .and_then(|a| {
                    if a > 0.0 {
                        Ok(a)
                    } else {
                        Err("a current must be above zero".into())
                    }
                })
                .or_else(|m| self.error(node, path, m)),
            Err(e) => self.error(
                node,
                path,
                format!(
                    "expected a current such as \"2 A\" or \"C/3\": {}",
                    e.message
                ),
            ),
        }
    }

    /// `record: {every, dv, di}`.
    pub(super) fn record_rule(
        &self,
        node: &Spanned<Node>,
        path: &str,
    ) -> Result<Record, ProtocolError> {
        let mut r = Record::default();
        for (name, _, v) in self.entries(node, path, &["every", "dv", "di"])? {
            let p = join(path, name);
            match name {
                "every" => r.every_s = Some(self.duration(v, &p)?),
                "dv" => {
                    r.dv_v =
                        Some(self.positive(v, &p, Unit::Volt, "a voltage step such as \"5 mV\"")?)
                }
                _ => r.di_a = Some(self.current(v, &p)?),
            }
        }
        Ok(r)
    }

    pub(super) fn capacity(&self) -> Option<f64> {
        self.params
            .get("capacity")
            .and_then(|c| units::parse_quantity(c).ok())
            .filter(|q| q.unit == Unit::AmpHour)
            .map(|q| q.value)
    }

    pub(super) fn current_text(
        &self,
        text: &str,
        node: &Spanned<Node>,
        path: &str,
    ) -> Result<f64, ProtocolError> {
        match units::parse_quantity(text)
            .map_err(|e| e.message)
            .and_then(|q| to_amps(q, &self.params))
        {
            Ok(a) => Ok(a),
            Err(m) => self.error(node, path, m),
        }
    }

    /// `10%` or `0.1` -> 0.1.
    pub(super) fn percent(&self, node: &Spanned<Node>, path: &str) -> Result<f64, ProtocolError> {
        let text = self.text(node, path)?;
        match parse_fraction(&text) {
            Some(f) if f > 0.0 && f <= 1.0 => Ok(f),
            _ => self.error(
                node,
                path,
                format!(
                    "expected a fraction such as \"10%\" or 0.1, found \"{}\"",
                    text.trim()
                ),
            ),
        }
    }
}
