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

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};

use crate::error::{ProtocolError, SourceLocation};
use crate::plan::{
    ActionStep, Condition, Control, Goto, LoopCondition, Plan, PlanStep, Profile, ProfileKind,
    Record, Safety, Termination,
};
use crate::pybamm::{self, Params};
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
const REPEAT_KEYS: &[&str] = &["repeat", "until", "cycle", "steps"];
const LABEL_KEYS: &[&str] = &["label", "steps"];
/// A YAML node with everything serde-saphyr tells about it.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
                // Beyond i128 nothing in a protocol is valid anyway; keep it as text for messages.
                Ok(i128::try_from(v).map_or_else(|_| Node::Str(v.to_string()), Node::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

impl Node {
    /// A scalar as text ("2.5 Ah", "5", "true"), for values parsed by the unit lexer.
    fn scalar_text(&self) -> Option<String> {
        match self {
            Node::Str(s) => Some(s.clone()),
            Node::Int(i) => Some(i.to_string()),
            Node::Float(f) => Some(f.to_string()),
            Node::Bool(b) => Some(b.to_string()),
            Node::Null | Node::Seq(_) | Node::Map(_) => None,
        }
    }
}

/// Compiles a YAML protocol document into a validated plan.
pub(crate) fn compile(
    source: &str,
    origin: &str,
    resolver: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Plan, ProtocolError> {
    let root: Spanned<Node> = serde_saphyr::from_str(source).map_err(|e| yaml_error(&e, origin))?;
    let mut c = Compiler {
        origin,
        params: Params::new(),
        labels: BTreeMap::new(),
        pending_label: None,
        gotos: Vec::new(),
        record: Record::default(),
        resolver,
        steps: Vec::new(),
    };
    let plan = c.document(&root, source)?;
    plan.validate()?;
    Ok(plan)
}

fn yaml_error(e: &serde_saphyr::Error, origin: &str) -> ProtocolError {
    let location = e.location().filter(|l| *l != Location::UNKNOWN);
    let mut message = e.without_snippet().render_with_options(
        serde_saphyr::render_options! {snippets: serde_saphyr::SnippetMode::Off},
    );
    // The plain rendering appends the position, which the message prefix already gives.
    if let Some(l) = location {
        let suffix = format!(" at line {}, column {}", l.line(), l.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    // The library suggests a Rust-side option; a protocol author needs to remove the key.
    let message = message.replace(
        ", set DuplicateKeyPolicy in Options if acceptable",
        " (each key may appear once)",
    );
    ProtocolError::Yaml {
        at: SourceLocation {
            origin: origin.to_owned(),
            line: location.map(|l| l.line()),
            column: location.map(|l| l.column()),
        },
        message,
    }
}

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

    fn document(&mut self, root: &Spanned<Node>, source: &str) -> Result<Plan, ProtocolError> {
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
            safety,
            steps,
        })
    }

    /// Reads `params`; returns the nominal capacity in Ah when `capacity` is among them.
    fn params(&mut self, node: &Spanned<Node>) -> Result<Option<f64>, ProtocolError> {
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

    fn safety(&self, node: &Spanned<Node>) -> Result<Safety, ProtocolError> {
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

    fn positive(
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
    fn quantity(
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

    fn step_list(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
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

    fn step(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
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

    fn pybamm_step(
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
    fn push_action(&mut self, mut a: ActionStep) {
        if a.label.is_none() {
            a.label = self.pending_label.take();
        }
        if a.record.is_empty() {
            a.record = self.record;
        }
        self.steps.push(PlanStep::Action(a));
    }

    /// A structured single step: rest, cc, cv, cccv, cp, cr, profile or chamber.
    fn structured(
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

    /// `tags: [a, b]`.
    fn tags(&self, node: &Spanned<Node>, path: &str) -> Result<Vec<String>, ProtocolError> {
        let Node::Seq(items) = &node.value else {
            return self.error(node, path, "expected a list of tags such as [ocv, relax]");
        };
        items
            .iter()
            .enumerate()
            .map(|(i, t)| self.text(t, &format!("{path}[{i}]")))
            .collect()
    }

    /// Inline profile points `[[time_s, value], ...]`, checked like a CSV.
    fn inline_points(
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
    fn terminations(
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
    fn load_profile(&self, file: &str, sign: f64) -> Result<Vec<(f64, f64)>, String> {
        let text = (self.resolver)(file).map_err(|e| format!("profile \"{file}\": {e}"))?;
        parse_profile_csv(&text, sign).map_err(|e| format!("profile \"{file}\": {e}"))
    }

    /// A whole number >= 1.
    fn count(&self, node: &Spanned<Node>, path: &str) -> Result<u32, ProtocolError> {
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
    fn text(&self, node: &Spanned<Node>, path: &str) -> Result<String, ProtocolError> {
        let Some(raw) = node.value.scalar_text() else {
            return self.error(node, path, "expected a single value (text or number)");
        };
        self.substitute(node, path, &raw)
    }

    fn substitute(
        &self,
        node: &Spanned<Node>,
        path: &str,
        raw: &str,
    ) -> Result<String, ProtocolError> {
        substitute(raw, &self.params).or_else(|m| self.error(node, path, m))
    }

    fn duration(&self, node: &Spanned<Node>, path: &str) -> Result<f64, ProtocolError> {
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
    fn current(&self, node: &Spanned<Node>, path: &str) -> Result<f64, ProtocolError> {
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
    fn record_rule(&self, node: &Spanned<Node>, path: &str) -> Result<Record, ProtocolError> {
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

    fn repeat(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
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

    fn label(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
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
    fn pulse(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
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
    fn gitt(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
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
    fn macro_loop(
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

    fn capacity(&self) -> Option<f64> {
        self.params
            .get("capacity")
            .and_then(|c| units::parse_quantity(c).ok())
            .filter(|q| q.unit == Unit::AmpHour)
            .map(|q| q.value)
    }

    fn current_text(
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
    fn percent(&self, node: &Spanned<Node>, path: &str) -> Result<f64, ProtocolError> {
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

/// One step of a macro body: its path suffix, control, and conditions each marked whether
/// it leaves the macro's loop (jumps to the final rest).
type MacroStep<'a> = (&'a str, Control, Vec<(Condition, bool)>);

/// Where a label jump still has to be resolved (labels may be defined after their use).
struct PendingGoto {
    index: usize,
    termination: usize,
    label: String,
    at: SourceLocation,
    path: String,
}

/// The structured step kinds, in the order a map's kind is recognised: kinds whose key is
/// also a field of another kind come after it (`rest` is a field of `pulse` and `gitt`,
/// `pulse` of `gitt`, `repeat` of `profile`).
const STEP_KINDS: &[&str] = &[
    "gitt", "pulse", "profile", "chamber", "cccv", "cc", "cv", "cp", "cr", "label", "end", "rest",
    "repeat",
];

fn next(condition: Condition) -> Termination {
    Termination {
        condition,
        goto: Goto::Next,
    }
}

fn chamber_control(
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

fn control_text(c: Control) -> String {
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
fn describe(what: &str, terminations: &[Termination]) -> String {
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

/// Replaces every `${name}` and `{name}` by the parameter's text.
pub(crate) fn substitute(raw: &str, params: &Params) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.find('{') {
        let dollar = open > 0 && rest.as_bytes()[open - 1] == b'$';
        out.push_str(&rest[..if dollar { open - 1 } else { open }]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!(
                "unclosed parameter reference in \"{raw}\": expected \"}}\""
            ));
        };
        let name = after[..close].trim();
        match params.get(name) {
            Some(v) => out.push_str(v.trim()),
            None => {
                return Err(format!(
                    "unknown parameter \"{name}\"; define it under params"
                ));
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn to_amps(q: units::Quantity, params: &Params) -> Result<f64, String> {
    match q.unit {
        Unit::Ampere => Ok(q.value),
        Unit::CRate => {
            let cap = params
                .get("capacity")
                .and_then(|c| units::parse_quantity(c).ok())
                .filter(|c| c.unit == Unit::AmpHour)
                .ok_or_else(|| {
                    "a C-rate needs params.capacity in Ah (e.g. \"capacity: 2.5 Ah\")".to_owned()
                })?;
            Ok(q.value * cap.value)
        }
        other => Err(format!(
            "expected a current (A or C-rate), found a value in {other}"
        )),
    }
}

/// `80%` -> 0.8, `0.8` -> 0.8.
fn parse_fraction(text: &str) -> Option<f64> {
    let t = text.trim();
    let f = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => t.parse::<f64>().ok()?,
    };
    f.is_finite().then_some(f)
}

/// One termination of a structured step: `V >= 4.2 V`, `I <= C/20`, `t >= 2 h`, `T >= 10 h`,
/// `Ah >= 1 Ah`, `Wh >= 3 Wh`, `Temp >= 45 degC`, `dV/dt <= 1 mV/min`, or a bare PyBaMM value
/// (`4.2 V`: direction from the step's `sign`; `C/20`: |I| <=).
fn parse_condition(text: &str, sign: f64, params: &Params) -> Result<Condition, String> {
    let text = substitute(text, params)?;
    let t = text.trim();
    const VARS: &[&str] = &["dV/dt", "Temp", "Ah", "Wh", "V", "I", "t", "T"];
    let var = VARS.iter().find(|v| {
        t.strip_prefix(**v)
            .is_some_and(|r| r.trim_start().starts_with(['<', '>']))
    });
    let Some(var) = var else {
        // Bare value, PyBaMM style.
        let q = units::parse_quantity(t).map_err(|e| {
            format!("expected a condition such as \"V >= 4.2 V\", \"I <= C/20\", \"t >= 1 h\", \"Ah >= 2 Ah\", \"Temp >= 45 degC\" or \"dV/dt <= 1 mV/min\": {}", e.message)
        })?;
        return match q.unit {
            Unit::Volt if sign > 0.0 => Ok(Condition::VoltageAtLeast(q.value)),
            Unit::Volt if sign < 0.0 => Ok(Condition::VoltageAtMost(q.value)),
            Unit::Volt => {
                Err("a bare voltage needs a direction here: write \"V >= x\" or \"V <= x\"".into())
            }
            _ => Ok(Condition::CurrentMagnitudeAtMost(to_amps(q, params)?.abs())),
        };
    };
    let r = t[var.len()..].trim_start();
    let (at_least, r) = if let Some(r) = r.strip_prefix(">=") {
        (true, r)
    } else if let Some(r) = r.strip_prefix("<=") {
        (false, r)
    } else if let Some(r) = r.strip_prefix('>') {
        (true, r)
    } else {
        (false, &r[1..])
    };
    let r = r.trim();
    let quantity = |unit: Unit, what: &str| -> Result<f64, String> {
        match units::parse_quantity(r) {
            Ok(q) if q.unit == unit => Ok(q.value),
            Ok(q) => Err(format!(
                "expected {what} after the operator, found \"{r}\" ({})",
                q.unit
            )),
            Err(e) => Err(format!("expected {what} after the operator: {}", e.message)),
        }
    };
    let only = |ok: bool, c: Condition| {
        if ok {
            Ok(c)
        } else {
            Err(format!(
                "\"{var}\" only takes {}",
                if at_least { "<=" } else { ">=" }
            ))
        }
    };
    match *var {
        "V" => {
            let v = quantity(Unit::Volt, "a voltage such as \"4.2 V\"")?;
            Ok(if at_least {
                Condition::VoltageAtLeast(v)
            } else {
                Condition::VoltageAtMost(v)
            })
        }
        "I" => {
            let q = units::parse_quantity(r)
                .map_err(|e| format!("expected a current after the operator: {}", e.message))?;
            only(
                !at_least,
                Condition::CurrentMagnitudeAtMost(to_amps(q, params)?.abs()),
            )
        }
        "t" | "T" => {
            let d = units::parse_duration(r)
                .map_err(|e| format!("expected a duration such as \"2 h\": {}", e.message))?;
            only(
                at_least,
                if *var == "t" {
                    Condition::StepTime(d)
                } else {
                    Condition::TestTime(d)
                },
            )
        }
        "Ah" => only(
            at_least,
            Condition::StepCapacity(quantity(Unit::AmpHour, "a capacity such as \"1 Ah\"")?),
        ),
        "Wh" => only(
            at_least,
            Condition::StepEnergy(quantity(Unit::WattHour, "an energy such as \"3 Wh\"")?),
        ),
        "Temp" => {
            let v = quantity(Unit::Celsius, "a temperature such as \"45 degC\"")?;
            Ok(if at_least {
                Condition::TemperatureAtLeast(v)
            } else {
                Condition::TemperatureAtMost(v)
            })
        }
        _ => {
            // dV/dt: a voltage per time unit, "1 mV/min", "0.1 mV/s".
            let (v, per) = r
                .split_once('/')
                .ok_or_else(|| format!("expected a rate such as \"1 mV/min\", found \"{r}\""))?;
            let volts = match units::parse_quantity(v) {
                Ok(q) if q.unit == Unit::Volt => q.value,
                _ => {
                    return Err(format!(
                        "expected a rate such as \"1 mV/min\", found \"{r}\""
                    ));
                }
            };
            let seconds = units::seconds_per(per.trim()).ok_or_else(|| {
                format!("expected a time unit (s, min, h) after \"/\" in \"{r}\"")
            })?;
            let rate = volts / seconds;
            Ok(if at_least {
                Condition::VoltageRateMagnitudeAtLeast(rate)
            } else {
                Condition::VoltageRateMagnitudeAtMost(rate)
            })
        }
    }
}

/// One exit condition of a loop: `discharge_capacity < 80% first`,
/// `discharge_capacity < 2 Ah`, `cycle >= 100`.
fn parse_loop_condition(text: &str) -> Result<LoopCondition, String> {
    let t = text.trim();
    let expected = "expected a loop exit such as \"discharge_capacity < 80% first\", \"discharge_capacity < 2 Ah\" or \"cycle >= 100\"";
    if let Some(r) = t.strip_prefix("discharge_capacity") {
        let r = r.trim_start();
        let r = r
            .strip_prefix("<=")
            .or_else(|| r.strip_prefix('<'))
            .ok_or_else(|| format!("{expected}; found \"{t}\""))?
            .trim();
        if let Some(f) = r.strip_suffix("first") {
            return match parse_fraction(f) {
                Some(f) if f > 0.0 => Ok(LoopCondition::DischargeCapacityBelowFractionOfFirst(f)),
                _ => Err(format!(
                    "{expected}; \"{}\" is not a fraction such as 80%",
                    f.trim()
                )),
            };
        }
        return match units::parse_quantity(r) {
            Ok(q) if q.unit == Unit::AmpHour => Ok(LoopCondition::DischargeCapacityBelow(q.value)),
            _ => Err(format!("{expected}; found \"{t}\"")),
        };
    }
    if let Some(r) = t.strip_prefix("cycle") {
        let r = r.trim_start();
        let r = r
            .strip_prefix(">=")
            .ok_or_else(|| format!("{expected}; found \"{t}\""))?
            .trim();
        return match r.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(LoopCondition::CycleAtLeast(n)),
            _ => Err(format!("{expected}; \"{r}\" is not a cycle number")),
        };
    }
    Err(format!("{expected}; found \"{t}\""))
}

/// `time_s, value` rows; an optional header line; blank lines and `#` comments skipped;
/// comma, semicolon or tab separated. Times must start at 0 and increase.
fn parse_profile_csv(text: &str, sign: f64) -> Result<Vec<(f64, f64)>, String> {
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split([',', ';', '\t']).map(str::trim).collect();
        let nums: Option<Vec<f64>> = cols
            .iter()
            .take(2)
            .map(|c| c.parse::<f64>().ok().filter(|x| x.is_finite()))
            .collect();
        match nums {
            Some(v) if v.len() == 2 => {
                if let Some((last, _)) = points.last()
                    && v[0] <= *last
                {
                    return Err(format!("line {}: time {} s does not increase", n + 1, v[0]));
                }
                if points.is_empty() && v[0] != 0.0 {
                    return Err(format!(
                        "line {}: the first time must be 0 s, found {}",
                        n + 1,
                        v[0]
                    ));
                }
                points.push((v[0], sign * v[1]));
            }
            // One header line before the data.
            _ if points.is_empty() && cols.len() >= 2 && cols[0].parse::<f64>().is_err() => {}
            _ => {
                return Err(format!(
                    "line {}: expected two numbers \"time_s,value\", found \"{line}\"",
                    n + 1
                ));
            }
        }
    }
    if points.is_empty() {
        return Err("no data rows (expected \"time_s,value\" lines)".into());
    }
    Ok(points)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `${name}` or `{name}` as the whole value -> `name`.
fn reference_name(text: &str) -> Option<&str> {
    let t = text.trim();
    let inner = t
        .strip_prefix("${")
        .or_else(|| t.strip_prefix('{'))?
        .strip_suffix('}')?;
    Some(inner.trim())
}

fn sha256_hex(source: &str) -> String {
    Sha256::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Condition, Control, Goto, LoopCondition, ProfileKind, Record, Termination};
    use proptest::prelude::*;

    const HEAD: &str = "protocol: Test\nversion: 1\nparams:\n  capacity: 2.5 Ah\n  v_max: 4.2 V\nsafety:\n  voltage: [2.5 V, 4.25 V]\n  current: 5 A\n";

    fn plan(steps: &str) -> Result<Plan, ProtocolError> {
        Plan::from_yaml(&format!("{HEAD}steps:\n{steps}"), "test.yaml")
    }

    fn message(r: Result<Plan, ProtocolError>) -> String {
        r.map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let top = message(Plan::from_yaml(&format!("{HEAD}stepz: []\n"), "t.yaml"));
        assert!(
            top.starts_with("t.yaml:9:1: stepz: unknown key `stepz`"),
            "{top}"
        );
        let nested = message(plan(
            "  - repeat: 2\n    cycles: true\n    steps: [\"Rest for 1 s\"]\n",
        ));
        assert!(
            nested.contains("test.yaml:11:5: steps[0].cycles: unknown key `cycles`"),
            "{nested}"
        );
        let safety = message(Plan::from_yaml(
            "protocol: x\nversion: 1\nsafety:\n  power: 5 W\nsteps: [\"Rest for 1 s\"]\n",
            "s.yaml",
        ));
        assert!(
            safety.contains("s.yaml:4:3: safety.power: unknown key `power`"),
            "{safety}"
        );
    }

    #[test]
    fn error_names_step_and_column() {
        let m = message(plan(
            "  - \"Rest for 1 s\"\n  - repeat: 2\n    steps:\n      - \"Charge at 1.5 for 1 hour\"\n",
        ));
        assert_eq!(
            m,
            "test.yaml:13:9: steps[1].steps[0], column 15: expected a unit (A, V, W, Ohm, C) after \"1.5\""
        );
    }

    #[test]
    fn c_rate_without_capacity_param_is_an_error() {
        let m = message(Plan::from_yaml(
            "protocol: x\nversion: 1\nsteps: [\"Charge at 1C until 4.2 V\"]\n",
            "t.yaml",
        ));
        assert!(
            m.contains("steps[0], column 11") && m.contains("capacity"),
            "{m}"
        );
    }

    #[test]
    fn missing_name_or_version_is_an_error() {
        let m = message(Plan::from_yaml(
            "version: 1\nsteps: [\"Rest for 1 s\"]\n",
            "t.yaml",
        ));
        assert!(m.contains("missing required key `protocol`"), "{m}");
        let m = message(Plan::from_yaml(
            "protocol: x\nsteps: [\"Rest for 1 s\"]\n",
            "t.yaml",
        ));
        assert!(m.contains("missing required key `version`"), "{m}");
        let m = message(Plan::from_yaml(
            "protocol: x\nversion: 2\nsteps: [\"Rest for 1 s\"]\n",
            "t.yaml",
        ));
        assert!(
            m.contains("t.yaml:2:10: version: unsupported language version 2"),
            "{m}"
        );
    }

    #[test]
    fn invalid_yaml_reports_line_and_column() {
        let e = Plan::from_yaml("protocol: x\nsteps: [\n", "bad.yaml").unwrap_err();
        let ProtocolError::Yaml { at, .. } = &e else {
            panic!("expected a YAML error, got {e}");
        };
        assert_eq!(at.origin, "bad.yaml");
        assert!(at.line.is_some() && at.column.is_some(), "{e}");
        assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
    }

    #[test]
    fn repeat_compiles_to_loop_markers_with_matching_indices() {
        let p = plan("  - \"Rest for 1 s\"\n  - repeat: 3\n    cycle: true\n    steps:\n      - \"Charge at 1 A for 1 s\"\n      - repeat: 2\n        steps: [\"Rest for 2 s\"]\n").unwrap();
        assert_eq!(p.steps.len(), 8);
        assert_eq!(
            p.steps[1],
            PlanStep::LoopStart {
                count: 3,
                cycle: true,
                end: 6,
                until: vec![],
            }
        );
        assert_eq!(
            p.steps[3],
            PlanStep::LoopStart {
                count: 2,
                cycle: false,
                end: 5,
                until: vec![],
            }
        );
        assert_eq!(p.steps[5], PlanStep::LoopEnd { start: 3 });
        assert_eq!(p.steps[6], PlanStep::LoopEnd { start: 1 });
        assert_eq!(p.steps[7], PlanStep::End);
        let PlanStep::Action(a) = &p.steps[4] else {
            panic!("not an action")
        };
        assert_eq!(a.path, "steps[1].steps[1].steps[0]");
        assert_eq!(a.terminations[0].condition, Condition::StepTime(2.0));
    }

    #[test]
    fn label_blocks_flatten_and_duplicate_labels_are_errors() {
        let p = plan("  - label: capacity\n    steps: [\"Rest for 1 s\", \"Charge at C/3 until ${v_max}\"]\n").unwrap();
        assert_eq!(p.steps.len(), 3);
        let PlanStep::Action(a) = &p.steps[1] else {
            panic!("not an action")
        };
        assert_eq!(a.path, "steps[0].steps[1]");
        assert!(matches!(a.control, Control::Current { amps } if (amps - 2.5 / 3.0).abs() < 1e-12));
        let m = message(plan(
            "  - label: a\n    steps: [\"Rest for 1 s\"]\n  - label: a\n    steps: [\"Rest for 1 s\"]\n",
        ));
        assert!(
            m.contains("steps[1].label: the label `a` is used twice"),
            "{m}"
        );
    }

    #[test]
    fn safety_and_capacity_are_read_in_si() {
        let p = Plan::from_yaml(
            "protocol: x\nversion: 1\nparams: {capacity: 2500 mAh, lo: 2400 mV}\nsafety:\n  voltage: [\"${lo}\", 4.25 V]\n  current: 7500 mA\n  temperature: 60 degC\n  capacity: 3.0 Ah\nsteps: [\"Rest for 1 s\"]\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(p.capacity_ah, Some(2.5));
        assert_eq!(
            p.safety,
            Safety {
                voltage_min: Some(2.4),
                voltage_max: Some(4.25),
                current_max: Some(7.5),
                temperature_max: Some(60.0),
                capacity_max: Some(3.0),
            }
        );
    }

    #[test]
    fn wrong_unit_in_safety_is_an_error_at_the_value() {
        let m = message(Plan::from_yaml(
            "protocol: x\nversion: 1\nsafety:\n  current: 5 V\nsteps: [\"Rest for 1 s\"]\n",
            "t.yaml",
        ));
        assert_eq!(
            m,
            "t.yaml:4:12: safety.current: expected a current such as \"7.5 A\", found \"5 V\" (V)"
        );
    }

    #[test]
    fn empty_or_malformed_step_lists_are_errors() {
        assert!(message(plan("  []\n")).contains("at least one step"));
        assert!(
            message(plan("  - repeat: 0\n    steps: [\"Rest for 1 s\"]\n")).contains("1 or more")
        );
        assert!(message(plan("  - repeat: 2\n")).contains("missing `steps`"));
        assert!(message(plan("  - 42\n")).contains("expected a step string"));
        assert!(message(Plan::from_yaml("", "t.yaml")).contains("empty"));
    }

    #[test]
    fn plan_round_trips_through_json() {
        let p = plan("  - \"Rest for 1 s\"\n  - repeat: 2\n    cycle: true\n    steps: [\"Charge at C/2 for 10 min or until 4.2 V\", \"Hold at 4.2 V until C/20\", \"Discharge at 5 W until 3 V\"]\n").unwrap();
        let back = Plan::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
        assert!(matches!(Plan::from_json("{"), Err(ProtocolError::Json(_))));
    }

    #[test]
    fn source_hash_is_sha256_of_the_text() {
        let source = format!("{HEAD}steps: [\"Rest for 1 s\"]\n");
        let p = Plan::from_yaml(&source, "t.yaml").unwrap();
        assert_eq!(p.source_sha256.len(), 64);
        assert_eq!(p.source_sha256, sha256_hex(&source));
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    fn action(p: &Plan, i: usize) -> &ActionStep {
        match &p.steps[i] {
            PlanStep::Action(a) => a,
            other => panic!("index {i} is not an action: {other:?}"),
        }
    }

    fn conditions(a: &ActionStep) -> Vec<Condition> {
        a.terminations.iter().map(|t| t.condition).collect()
    }

    #[test]
    fn structured_steps_compile_to_resolved_controls() {
        let p = plan(concat!(
            "  - rest: 10 min\n",
            "  - cc: 1C\n    direction: charge\n    until: \"V >= ${v_max}\"\n",
            "  - cv: \"{v_max}\"\n    until: [\"I <= C/20\", \"t >= 1 h\"]\n",
            "  - cccv: C/2\n    voltage: 4.2 V\n    cutoff: 50 mA\n",
            "  - cp: 5 W\n    direction: discharge\n    until: [\"V <= 3 V\"]\n",
            "  - cr: 4 Ohm\n    for: 30 min\n",
            "  - chamber: 25 degC\n    wait: {within: 0.5 degC, for: 30 min}\n    timeout: 4 h\n",
        ))
        .unwrap();
        assert_eq!(action(&p, 0).control, Control::Rest);
        assert_eq!(conditions(action(&p, 0)), [Condition::StepTime(600.0)]);
        assert_eq!(action(&p, 1).control, Control::Current { amps: 2.5 });
        assert_eq!(conditions(action(&p, 1)), [Condition::VoltageAtLeast(4.2)]);
        assert_eq!(action(&p, 2).control, Control::Voltage { volts: 4.2 });
        assert_eq!(
            conditions(action(&p, 2)),
            [
                Condition::CurrentMagnitudeAtMost(0.125),
                Condition::StepTime(3600.0)
            ]
        );
        assert_eq!(
            action(&p, 3).control,
            Control::Cccv {
                amps: 1.25,
                volts: 4.2
            }
        );
        assert!(
            matches!(conditions(action(&p, 3))[..], [Condition::CurrentMagnitudeAtMost(x)] if (x - 0.05).abs() < 1e-12)
        );
        assert_eq!(action(&p, 4).control, Control::Power { watts: -5.0 });
        assert_eq!(action(&p, 5).control, Control::Resistance { ohms: 4.0 });
        assert_eq!(
            action(&p, 6).control,
            Control::Chamber {
                temperature_c: 25.0,
                within_c: 0.5,
                hold_s: 1800.0,
                timeout_s: Some(14400.0)
            }
        );
        assert!(action(&p, 6).terminations.is_empty());
    }

    #[test]
    fn every_termination_kind_parses_with_its_goto() {
        let p = plan(concat!(
            "  - label: top\n    steps:\n",
            "      - rest: true\n        until:\n",
            "          - \"V >= 4.1 V\"\n          - \"V <= 3 V -> end\"\n          - \"I <= 100 mA -> next\"\n",
            "          - \"t >= 2 h -> top\"\n          - \"T >= 10 h -> later\"\n          - \"Ah >= 1.5 Ah\"\n",
            "          - \"Wh >= 5 Wh\"\n          - \"Temp >= 45 degC\"\n          - \"Temp < 10 degC\"\n",
            "          - \"dV/dt <= 1 mV/min\"\n          - \"dV/dt >= 0.5 mV/s\"\n",
            "  - label: later\n    steps: [\"Rest for 1 s\"]\n",
        ))
        .unwrap();
        let a = action(&p, 0);
        assert_eq!(a.label.as_deref(), Some("top"));
        assert_eq!(action(&p, 1).label.as_deref(), Some("later"));
        let got: Vec<(Condition, Goto)> = a
            .terminations
            .iter()
            .map(|t| (t.condition, t.goto))
            .collect();
        assert_eq!(got[0], (Condition::VoltageAtLeast(4.1), Goto::Next));
        assert_eq!(got[1], (Condition::VoltageAtMost(3.0), Goto::End));
        assert_eq!(got[2], (Condition::CurrentMagnitudeAtMost(0.1), Goto::Next));
        assert_eq!(got[3], (Condition::StepTime(7200.0), Goto::Step(0)));
        assert_eq!(got[4], (Condition::TestTime(36000.0), Goto::Step(1)));
        assert_eq!(got[5].0, Condition::StepCapacity(1.5));
        assert_eq!(got[6].0, Condition::StepEnergy(5.0));
        assert_eq!(got[7].0, Condition::TemperatureAtLeast(45.0));
        assert_eq!(got[8].0, Condition::TemperatureAtMost(10.0));
        assert!(
            matches!(got[9].0, Condition::VoltageRateMagnitudeAtMost(x) if (x - 1e-3 / 60.0).abs() < 1e-15)
        );
        assert!(
            matches!(got[10].0, Condition::VoltageRateMagnitudeAtLeast(x) if (x - 5e-4).abs() < 1e-15)
        );
    }

    #[test]
    fn bad_termination_names_file_line_column_and_path() {
        let m = message(plan(
            "  - cc: 1 A\n    direction: charge\n    until: [\"t >= 1 h\", \"X >= 3\"]\n",
        ));
        assert!(
            m.starts_with(
                "test.yaml:12:25: steps[0].until[1]: in \"X >= 3\": expected a condition"
            ),
            "{m}"
        );
        let m = message(plan("  - rest: 1 h\n    until: \"V >= 4 V -> nowhere\"\n"));
        assert!(m.contains("steps[0].until: unknown label `nowhere`"), "{m}");
        let m = message(plan("  - cc: 1 A\n    until: \"V >= 4 V\"\n"));
        assert!(
            m.contains("steps[0].direction: a `cc` step needs `direction: charge`"),
            "{m}"
        );
        let m = message(plan("  - cc: 1 A\n    direction: charge\n"));
        assert!(m.contains("never ends"), "{m}");
        let m = message(plan("  - cv: 4.2 A\n    for: 1 h\n"));
        assert!(
            m.contains("test.yaml:10:9: steps[0].cv: expected a voltage"),
            "{m}"
        );
        let m = message(plan("  - rest: 1 h\n    until: \"t <= 1 h\"\n"));
        assert!(m.contains("only takes >="), "{m}");
        let m = message(plan("  - bogus: 1\n"));
        assert!(m.contains("steps[0].bogus: unknown key `bogus`"), "{m}");
    }

    #[test]
    fn repeat_until_compiles_loop_exits() {
        let p = plan(concat!(
            "  - repeat: 500\n    until: [discharge_capacity < 80% first, \"cycle >= 300\", discharge_capacity < 1.5 Ah]\n",
            "    cycle: true\n    steps: [\"Rest for 1 s\"]\n",
        ))
        .unwrap();
        let PlanStep::LoopStart { until, count, .. } = &p.steps[0] else {
            panic!()
        };
        assert_eq!(*count, 500);
        assert_eq!(
            until[..],
            [
                LoopCondition::DischargeCapacityBelowFractionOfFirst(0.8),
                LoopCondition::CycleAtLeast(300),
                LoopCondition::DischargeCapacityBelow(1.5)
            ]
        );
        let m = message(plan(
            "  - repeat: 5\n    until: capacity < 80%\n    steps: [\"Rest for 1 s\"]\n",
        ));
        assert!(m.contains("steps[0].until: expected a loop exit"), "{m}");
    }

    #[test]
    fn record_rules_default_from_the_document_and_override_per_step() {
        let source = format!(
            "{HEAD}record: {{every: 10 s, dv: 5 mV, di: 50 mA}}\nsteps:\n  - \"Rest for 1 h\"\n  - \"Rest for 1 h (1 minute period)\"\n  - rest: 1 h\n    record: {{dv: 1 mV}}\n  - rest: 1 h\n    ocv: true\n"
        );
        let p = Plan::from_yaml(&source, "t.yaml").unwrap();
        let base = Record {
            every_s: Some(10.0),
            dv_v: Some(0.005),
            di_a: Some(0.05),
        };
        assert_eq!(action(&p, 0).record, base);
        assert_eq!(
            action(&p, 1).record,
            Record {
                every_s: Some(60.0),
                ..base
            }
        );
        assert_eq!(
            action(&p, 2).record,
            Record {
                dv_v: Some(0.001),
                ..base
            }
        );
        assert_eq!(
            action(&p, 3).record,
            Record {
                every_s: Some(1.0),
                dv_v: Some(0.001),
                ..base
            }
        );
    }

    #[test]
    fn profiles_load_csv_through_the_resolver() {
        let csv = |name: &str| -> Result<String, String> {
            match name {
                "us06.csv" => Ok("time_s,current_a\n0,1.0\n1,-2.0\n2,0.5\n".into()),
                "bad.csv" => Ok("0,1\n0,2\n".into()),
                _ => Err("no such file".into()),
            }
        };
        let source = HEAD.replace("  v_max: 4.2 V\n", "  v_max: 4.2 V\n  US06: us06.csv\n")
            + "steps:\n  - profile: us06.csv\n    repeat: 2\n  - \"Run US06 (A)\"\n";
        let p = Plan::from_yaml_with(&source, "t.yaml", &csv).unwrap();
        let a = action(&p, 0);
        assert_eq!(
            a.control,
            Control::Profile {
                kind: ProfileKind::Current
            }
        );
        assert_eq!(
            a.profile.as_ref().map(|p| p.points.clone()),
            Some(vec![(0.0, 1.0), (1.0, -2.0), (2.0, 0.5)])
        );
        assert_eq!(conditions(a), [Condition::StepTime(6.0)]);
        // PyBaMM's sign (positive = discharge) is flipped.
        let b = action(&p, 1);
        assert_eq!(b.profile.as_ref().map(|p| p.points[0]), Some((0.0, -1.0)));
        assert_eq!(conditions(b), [Condition::StepTime(3.0)]);
        let m = message(Plan::from_yaml(&source, "t.yaml"));
        assert!(
            m.contains("steps[0].profile: profile \"us06.csv\": cannot read"),
            "{m}"
        );
        let m = message(plan_with("  - profile: bad.csv\n", &csv));
        assert!(m.contains("line 2: time 0 s does not increase"), "{m}");
        let m = message(plan_with("  - \"Run nope.csv (A)\"\n", &csv));
        assert!(
            m.contains("steps[0], column 5: profile \"nope.csv\": no such file"),
            "{m}"
        );
    }

    fn plan_with(
        steps: &str,
        resolver: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Plan, ProtocolError> {
        Plan::from_yaml_with(&format!("{HEAD}steps:\n{steps}"), "test.yaml", resolver)
    }

    #[test]
    fn profiles_and_tags_can_be_written_inline() {
        let p =
            plan("  - profile: [[0, 1.5], [10, -2]]\n    kind: power\n    tags: [drive, us06]\n")
                .unwrap();
        let a = action(&p, 0);
        assert_eq!(
            a.control,
            Control::Profile {
                kind: ProfileKind::Power
            }
        );
        assert_eq!(
            a.profile.as_ref().map(|p| p.points.clone()),
            Some(vec![(0.0, 1.5), (10.0, -2.0)])
        );
        assert_eq!(a.tags, ["drive", "us06"]);
        let m = message(plan("  - profile: [[0, 1.5], [10]]\n"));
        assert!(m.contains("steps[0].profile[1]: expected a pair"), "{m}");
        let m = message(plan("  - profile: [[5, 1.5]]\n"));
        assert!(
            m.contains("inline profile: line 1: the first time must be 0 s"),
            "{m}"
        );
    }

    #[test]
    fn every_new_feature_survives_writing_back_to_yaml() {
        let p = plan(concat!(
            "  - chamber: 30 degC\n    wait: {within: 0.5 degC, for: 1 min}\n    timeout: 2 h\n",
            "  - \"Rest for 1 h at 25oC [a, b]\"\n",
            "  - label: main\n    steps:\n      - repeat: 10\n        cycle: true\n",
            "        until: [discharge_capacity < 80% first, \"cycle >= 5\", discharge_capacity < 1 Ah]\n",
            "        steps:\n          - cccv: 1C\n            voltage: 4.2 V\n            cutoff: C/20\n            record: {every: 5 s}\n",
            "          - cr: 4 Ohm\n            until: [\"V <= 3 V -> main\", \"Temp >= 45 degC -> end\", \"dV/dt >= 1 mV/s\"]\n",
            "          - profile: [[0, 1.5], [10, -2]]\n            repeat: 3\n            until: \"Temp <= 10 degC\"\n",
            "          - rest: 1 h\n            ocv: true\n            until: \"dV/dt <= 1 mV/min\"\n",
            "  - pulse: 1C\n    count: 2\n    v_min: 2.6 V\n    v_max: 4.2 V\n",
            "  - end\n",
            "  - gitt: C/20\n    pulse: 10 min\n    rest: 1 h\n    until: 3 V\n",
        ))
        .unwrap();
        let yaml = p.to_yaml();
        let back = Plan::from_yaml(&yaml, "back.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let strip = |p: &Plan| {
            let mut p = p.clone();
            p.source_sha256.clear();
            for s in &mut p.steps {
                if let PlanStep::Action(a) = s {
                    a.path.clear();
                    a.description.clear();
                    a.label = None;
                }
            }
            p
        };
        assert_eq!(strip(&back), strip(&p), "{yaml}");
    }

    #[test]
    fn legacy_temperature_becomes_a_chamber_step_before_the_action() {
        let p = plan("  - \"Discharge at 1C until 3 V at 25oC [cap]\"\n").unwrap();
        assert!(
            matches!(action(&p, 0).control, Control::Chamber { temperature_c, .. } if temperature_c == 25.0)
        );
        assert_eq!(action(&p, 0).path, "steps[0].at");
        assert_eq!(action(&p, 1).control, Control::Current { amps: -2.5 });
        assert_eq!(action(&p, 1).tags, ["cap"]);
    }

    #[test]
    fn pulse_and_gitt_macros_expand_to_loops_with_an_exit_rest() {
        let p = plan("  - pulse: 1C\n    soc_step: 10%\n    count: 9\n    v_min: 2.5 V\n").unwrap();
        // LoopStart, 6 body steps, LoopEnd, final rest, End.
        assert_eq!(p.steps.len(), 10);
        assert!(matches!(
            p.steps[0],
            PlanStep::LoopStart {
                count: 9,
                end: 7,
                ..
            }
        ));
        assert_eq!(action(&p, 1).control, Control::Current { amps: -2.5 });
        assert_eq!(action(&p, 1).terminations[1].goto, Goto::Step(8));
        assert_eq!(action(&p, 3).control, Control::Current { amps: 1.875 });
        assert_eq!(
            action(&p, 3).terminations.len(),
            1,
            "no v_max given: the charge pulse is timed only"
        );
        let soc = action(&p, 5);
        assert!(
            matches!(soc.control, Control::Current { amps } if (amps + 2.5 / 3.0).abs() < 1e-12)
        );
        assert!(
            matches!(soc.terminations[0].condition, Condition::StepTime(t) if (t - 1080.0).abs() < 1e-9)
        );
        let g = plan("  - gitt: C/20\n    pulse: 10 min\n    rest: 1 h\n    until: 3 V\n").unwrap();
        assert!(matches!(
            g.steps[0],
            PlanStep::LoopStart {
                count: 125,
                end: 3,
                ..
            }
        ));
        assert_eq!(
            action(&g, 1).terminations[1],
            Termination {
                condition: Condition::VoltageAtMost(3.0),
                goto: Goto::Step(4)
            }
        );
        let m = message(plan("  - gitt: C/20\n    pulse: 10 min\n    rest: 1 h\n"));
        assert!(
            m.contains("steps[0].until: the gitt step needs `until`"),
            "{m}"
        );
    }

    #[test]
    fn end_steps_end_the_test_early() {
        let p =
            plan("  - \"Rest for 1 s\"\n  - end: true\n  - \"Rest for 2 s\"\n  - end\n").unwrap();
        assert_eq!(p.steps[1], PlanStep::End);
        assert_eq!(p.steps[3], PlanStep::End);
    }

    #[test]
    fn params_substitute_in_every_structured_field() {
        let source = HEAD.replace(
            "  v_max: 4.2 V\n",
            "  v_max: 4.2 V\n  passes: 3\n  i: 500 mA\n  dur: 20 min\n",
        ) + "steps:\n  - repeat: ${passes}\n    steps:\n      - cc: \"{i}\"\n        direction: discharge\n        for: ${dur}\n";
        let p = Plan::from_yaml(&source, "t.yaml").unwrap();
        assert!(matches!(p.steps[0], PlanStep::LoopStart { count: 3, .. }));
        assert_eq!(action(&p, 1).control, Control::Current { amps: -0.5 });
        assert_eq!(conditions(action(&p, 1)), [Condition::StepTime(1200.0)]);
        let m = message(plan("  - rest: ${nope}\n"));
        assert!(
            m.contains("steps[0].rest: unknown parameter \"nope\""),
            "{m}"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC*") {
            let _ = Plan::from_yaml(&s, "fuzz.yaml");
        }

        #[test]
        fn arbitrary_conditions_and_csv_never_panic(s in "\\PC*") {
            let _ = parse_condition(&s, 1.0, &Params::new());
            let _ = parse_loop_condition(&s);
            let _ = parse_profile_csv(&s, -1.0);
            let _ = substitute(&s, &Params::new());
        }

        #[test]
        fn yaml_like_text_never_panics(parts in proptest::collection::vec(
            prop_oneof![
                Just("protocol: x\n"), Just("version: 1\n"), Just("steps:\n"), Just("  - "),
                Just("- "), Just("repeat: 2\n"), Just("repeat: -1\n"), Just("cycle: true\n"),
                Just("label: a\n"), Just("\"Rest for 1 s\"\n"), Just("\"Charge at 1C until 4.2 V\"\n"),
                Just("params: {capacity: 2.5 Ah}\n"), Just("safety:\n"), Just("  voltage: [2.5 V, 4.2 V]\n"),
                Just("  current: 5 A\n"), Just("    "), Just("["), Just("]"), Just("{"), Just("}"),
                Just(": "), Just("&a "), Just("*a "), Just("!!str "), Just("~\n"), Just("\n"),
                Just("${capacity}"), Just("'"), Just("\""), Just("#"), Just("<<: "),
                Just("cc: 1C\n"), Just("direction: charge\n"), Just("until: "), Just("\"V >= 4 V -> a\"\n"),
                Just("cccv: C/2\n"), Just("voltage: 4.2 V\n"), Just("cutoff: C/20\n"), Just("rest: 1 h\n"),
                Just("chamber: 25 degC\n"), Just("wait: {within: 1 degC, for: 1 h}\n"), Just("pulse: 1C\n"),
                Just("v_min: 2.5 V\n"), Just("gitt: C/20\n"), Just("profile: x.csv\n"), Just("record: {every: 1 s}\n"),
                Just("until: discharge_capacity < 80% first\n"), Just("end: true\n"), Just("cr: 2 Ohm\n"),
                Just("\"Run US06 (A)\"\n"), Just("\"Rest for 1 h at 25oC [a]\"\n"), Just("dV/dt <= 1 mV/min"),
            ],
            0..24,
        )) {
            let _ = Plan::from_yaml(&parts.concat(), "fuzz.yaml");
            let csv = |_: &str| -> Result<String, String> { Ok("0,1\n1,2\n".into()) };
            let _ = Plan::from_yaml_with(&parts.concat(), "fuzz.yaml", &csv);
        }
    }
}
