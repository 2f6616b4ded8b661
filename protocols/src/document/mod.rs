//! The YAML protocol document, compiled into a [`Plan`].
//!
//! The YAML is first read into a tree of nodes that each carry their source location (the
//! YAML layer's [`Spanned`]), and the document is then checked by hand rather than through
//! derived structs: that way every message can name the file, line, column and document path,
//! and unknown keys are reported by name.
//!
//! What each structured step becomes in the plan:
//!
//! | step | plan |
//! |---|---|
//! | PyBaMM string | one action (`at 25oC` adds a chamber action before it; `Run X (A)` a profile) |
//! | `rest`, `cc`, `cv`, `cp`, `cr` | one action: `Rest`, `Current`, `Voltage`, `Power`, `Resistance` |
//! | `cccv` (+ `voltage`, `cutoff`) | one `Cccv` action; `cutoff` becomes `CurrentMagnitudeAtMost` |
//! | `profile` (CSV name or inline `[[t, v], ...]`, `kind`, `repeat`) | one `Profile` action whose first termination is its total duration |
//! | `chamber` (+ `wait: {within, for}`, `timeout`) | one `Chamber` action (ends by itself when settled) |
//! | `pulse` (HPPC), `gitt` | `LoopStart`, the pulse/rest actions, `LoopEnd`, a final rest that the voltage limits jump to |
//! | `label` + `steps` | its steps; the label names the first one (goto target) |
//! | `repeat` (+ `until`, `cycle`) | `LoopStart { until }` ... `LoopEnd` |
//! | `end`, `"end"` | `End` |
//!
//! Terminations (`until:`) are an OR-list of `V >= x`, `V <= x`, `I <= x`, `t >= d`, `T >= d`,
//! `Ah >= x`, `Wh >= x`, `Temp >= x`, `Temp <= x`, `dV/dt <= r`, `dV/dt >= r` (r as `1 mV/min`)
//! or a bare PyBaMM value, each optionally `-> next | end | LABEL`; labels may be used before
//! they are defined. `${name}` and `{name}` are substituted in every value.
//!
//! # Layout
//!
//! - `node`: the YAML node tree with source locations, and YAML syntax errors.
//! - `header`: the top level: `protocol`, `version`, `params`, `safety`, `record`.
//! - `steps`: the step list, PyBaMM strings and the structured single steps with their
//!   terminations.
//! - `blocks`: `repeat` and `label` blocks, and the `pulse` (HPPC) and `gitt` macros.
//! - `values`: scalar nodes read as text, counts, durations, currents and quantities.
//! - `text`: the texts inside values: conditions, loop conditions, CSV profiles,
//!   `${name}` substitution.
//!
//! This module keeps the `Compiler` state and what every part shares: located errors,
//! checked mapping entries, document paths and step descriptions.

mod blocks;
mod header;
mod node;
mod steps;
mod text;
mod values;

use std::collections::BTreeMap;

use serde_saphyr::{Location, Spanned};

use crate::error::{ProtocolError, SourceLocation};
use crate::plan::{Condition, Control, Goto, Plan, PlanStep, Record, Termination};
use crate::pybamm::Params;

use node::{Node, yaml_error};

/// The largest protocol document read, in bytes: the same limit wherever a protocol is read
/// (`cyclerctl protocol check`, a test's start, the daemon's control API), far above any
/// schedule a cycler takes.
pub const MAX_DOCUMENT_BYTES: usize = 2 << 20;

/// Refuses a document over [`MAX_DOCUMENT_BYTES`], saying so: what every reader of a protocol
/// checks first, and what a client checks before sending one.
pub fn check_size(source: &str, origin: &str) -> Result<(), ProtocolError> {
    if source.len() > MAX_DOCUMENT_BYTES {
        return Err(ProtocolError::Document {
            at: SourceLocation {
                origin: origin.into(),
                line: None,
                column: None,
            },
            path: "(document)".into(),
            message: format!(
                "the protocol is {} bytes; a protocol document takes at most {} bytes ({} MiB)",
                source.len(),
                MAX_DOCUMENT_BYTES,
                MAX_DOCUMENT_BYTES >> 20
            ),
        });
    }
    Ok(())
}

/// Compiles a YAML protocol document into a validated plan.
pub(crate) fn compile(
    source: &str,
    origin: &str,
    resolver: &dyn Fn(&str) -> Result<String, String>,
    overrides: &Params,
) -> Result<Plan, ProtocolError> {
    check_size(source, origin)?;
    let root: Spanned<Node> = serde_saphyr::from_str(source).map_err(|e| yaml_error(&e, origin))?;
    let mut c = Compiler {
        origin,
        params: Params::new(),
        labels: BTreeMap::new(),
        pending_label: None,
        gotos: Vec::new(),
        record: Record::default(),
        resolver,
        overrides,
        steps: Vec::new(),
    };
    let plan = c.document(&root, source)?;
    plan.validate()?;
    Ok(plan)
}

/// One compilation: the document's parameters, labels and pending jumps, and the steps so far.
struct Compiler<'a> {
    origin: &'a str,
    params: Params,
    /// Label -> plan index of the first entry of its block (the goto target).
    labels: BTreeMap<String, usize>,
    /// The label of the block being opened, given to its first action step.
    pending_label: Option<String>,
    /// Label jumps to resolve once every label is known.
    gotos: Vec<PendingGoto>,
    /// The document's default recording rule.
    record: Record,
    /// Loads CSV files named by profile steps (the crate does no I/O).
    resolver: &'a dyn Fn(&str) -> Result<String, String>,
    /// Parameter values given at start (`--param`), over the document's.
    overrides: &'a Params,
    steps: Vec<PlanStep>,
}

type Entries<'n> = Vec<(&'n str, &'n Spanned<Node>, &'n Spanned<Node>)>;

impl Compiler<'_> {
    fn at(&self, node: &Spanned<Node>) -> SourceLocation {
        let known = node.referenced != Location::UNKNOWN;
        SourceLocation {
            origin: self.origin.to_owned(),
            line: known.then(|| node.referenced.line()),
            column: known.then(|| node.referenced.column()),
        }
    }

    fn error<T>(
        &self,
        node: &Spanned<Node>,
        path: &str,
        message: impl Into<String>,
    ) -> Result<T, ProtocolError> {
        Err(ProtocolError::Document {
            at: self.at(node),
            path: path.to_owned(),
            message: message.into(),
        })
    }

    /// The entries of a mapping node, with every key checked against `allowed`.
    fn entries<'n>(
        &self,
        node: &'n Spanned<Node>,
        path: &str,
        allowed: &[&str],
    ) -> Result<Entries<'n>, ProtocolError> {
        let Node::Map(map) = &node.value else {
            return self.error(
                node,
                path,
                format!("expected a mapping with keys {}", allowed.join(", ")),
            );
        };
        let mut out = Vec::with_capacity(map.len());
        for (key, value) in map {
            let Node::Str(name) = &key.value else {
                return self.error(
                    key,
                    path,
                    format!("keys must be text; expected one of {}", allowed.join(", ")),
                );
            };
            let key_path = join(path, name);
            if !allowed.contains(&name.as_str()) {
                let message = format!(
                    "unknown key `{name}`; expected one of {}",
                    allowed.join(", ")
                );
                return self.error(key, &key_path, message);
            }
            out.push((name.as_str(), key, value));
        }
        Ok(out)
    }
}

/// Where a label jump still has to be resolved (labels may be defined after their use).
pub(super) struct PendingGoto {
    index: usize,
    termination: usize,
    label: String,
    at: SourceLocation,
    path: String,
}

pub(super) fn next(condition: Condition) -> Termination {
    Termination {
        condition,
        goto: Goto::Next,
    }
}

pub(super) fn control_text(c: Control) -> String {
    match c {
        Control::Rest => "rest".into(),
        Control::Current { amps } => format!("cc {amps} A"),
        Control::Voltage { volts } => format!("cv {volts} V"),
        Control::Power { watts } => format!("cp {watts} W"),
        Control::Cccv { amps, volts } => format!("cccv {amps} A to {volts} V"),
        Control::Resistance { ohms } => format!("cr {ohms} Ohm"),
        Control::Profile { kind } => format!("profile ({kind:?})"),
        Control::Chamber { temperature_c, .. } => format!("chamber {temperature_c} degC"),
    }
}

/// A readable one-line description of a structured step, for operators.
pub(super) fn describe(what: &str, terminations: &[Termination]) -> String {
    if terminations.is_empty() {
        return what.to_owned();
    }
    let until: Vec<String> = terminations
        .iter()
        .map(|t| {
            let c = match t.condition {
                Condition::VoltageAtLeast(v) => format!("V >= {v} V"),
                Condition::VoltageAtMost(v) => format!("V <= {v} V"),
                Condition::CurrentMagnitudeAtMost(v) => format!("|I| <= {v} A"),
                Condition::StepTime(v) => format!("t >= {v} s"),
                Condition::TestTime(v) => format!("T >= {v} s"),
                Condition::StepCapacity(v) => format!("Ah >= {v}"),
                Condition::StepEnergy(v) => format!("Wh >= {v}"),
                Condition::TemperatureAtLeast(v) => format!("Temp >= {v} degC"),
                Condition::TemperatureAtMost(v) => format!("Temp <= {v} degC"),
                Condition::VoltageRateMagnitudeAtMost(v) => format!("|dV/dt| <= {v} V/s"),
                Condition::VoltageRateMagnitudeAtLeast(v) => format!("|dV/dt| >= {v} V/s"),
            };
            match t.goto {
                Goto::Next => c,
                Goto::End => format!("{c} -> end"),
                Goto::Step(i) => format!("{c} -> step {i}"),
            }
        })
        .collect();
    format!("{what} until {}", until.join(" or "))
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;

/// A protocol document read into a plan: the document's side of [`Plan`], so that the plan
/// (the IR every target reads) knows nothing of the document language.
impl Plan {
    /// Parses a YAML protocol document; `origin` (usually the file name) prefixes error messages.
    ///
    /// Profile steps that name a CSV file need [`Plan::from_yaml_with`]; here they are an
    /// error saying so.
    pub fn from_yaml(source: &str, origin: &str) -> Result<Plan, ProtocolError> {
        let none = |name: &str| -> Result<String, String> {
            Err(format!(
                "cannot read \"{name}\": this caller reads no files (load the protocol with a CSV resolver, e.g. `cyclerctl`, or Plan::from_yaml_with)"
            ))
        };
        compile(source, origin, &none, &Params::new())
    }

    /// Like [`Plan::from_yaml`], with `resolver` returning the text of a CSV file named by a
    /// profile step (`profile: us06.csv`, `"Run US06 (A)"`), or a message why it cannot.
    /// The crate does no I/O: the caller decides where names resolve (usually next to the
    /// protocol file). The profile data is copied into the plan, so the plan (and its hash
    /// of the YAML) is self-contained.
    pub fn from_yaml_with(
        source: &str,
        origin: &str,
        resolver: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Plan, ProtocolError> {
        compile(source, origin, resolver, &Params::new())
    }

    /// Like [`Plan::from_yaml_with`], with parameter values given at start over the document's
    /// `params` (`cyclerctl start --param NAME=VALUE`, or the cell's nominal capacity): each must
    /// name a parameter the document defines, except `capacity`, which C-rates resolve against
    /// and which may always be given. [`Plan::params`] then holds the values used.
    pub fn from_yaml_with_params(
        source: &str,
        origin: &str,
        resolver: &dyn Fn(&str) -> Result<String, String>,
        params: &BTreeMap<String, String>,
    ) -> Result<Plan, ProtocolError> {
        compile(source, origin, resolver, params)
    }
}
