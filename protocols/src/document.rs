//! The YAML protocol document, compiled into a [`Plan`].
//!
//! The YAML is first read into a tree of nodes that each carry their source location (the
//! YAML layer's [`Spanned`]), and the document is then checked by hand rather than through
//! derived structs: that way every message can name the file, line, column and document path,
//! and unknown keys are reported by name.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};

use crate::error::{ProtocolError, SourceLocation};
use crate::plan::{ActionStep, Plan, PlanStep, Safety};
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
    "steps",
];
const SAFETY_KEYS: &[&str] = &["voltage", "current", "temperature", "capacity"];
const REPEAT_KEYS: &[&str] = &["repeat", "cycle", "steps"];
const LABEL_KEYS: &[&str] = &["label", "steps"];
/// Keys the protocol language defines but this version does not implement yet; they get a
/// clearer message than an unknown key would.
const LATER_KEYS: &[&str] = &[
    "record",
    "until",
    "chamber",
    "wait",
    "rest",
    "cc",
    "cv",
    "cccv",
    "cp",
    "cr",
    "profile",
    "pulse",
    "gitt",
    "end",
    "ocv",
    "direction",
];

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
pub(crate) fn compile(source: &str, origin: &str) -> Result<Plan, ProtocolError> {
    let root: Spanned<Node> = serde_saphyr::from_str(source).map_err(|e| yaml_error(&e, origin))?;
    let mut c = Compiler {
        origin,
        params: Params::new(),
        labels: BTreeSet::new(),
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
    labels: BTreeSet<String>,
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
                let message = if LATER_KEYS.contains(&name.as_str()) {
                    format!(
                        "`{name}` is part of the protocol language but not supported by this version yet"
                    )
                } else {
                    format!(
                        "unknown key `{name}`; expected one of {}",
                        allowed.join(", ")
                    )
                };
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
            Node::Str(text) => {
                let parsed = pybamm::parse_step(text, &self.params).map_err(|e| ProtocolError::Step {
                    at: self.at(node),
                    path: path.to_owned(),
                    column: e.column,
                    message: e.message,
                })?;
                self.steps.push(PlanStep::Action(ActionStep {
                    path: path.to_owned(),
                    description: text.clone(),
                    control: parsed.control,
                    terminations: parsed.terminations,
                }));
                Ok(())
            }
            Node::Map(map) => {
                let has = |k: &str| map.iter().any(|(key, _)| matches!(&key.value, Node::Str(s) if s == k));
                if has("repeat") {
                    self.repeat(node, path)
                } else if has("label") {
                    self.label(node, path)
                } else {
                    // Reports the first key: unknown, or a structured step not supported yet.
                    self.entries(node, path, &["repeat", "label"]).map(|_| ())?;
                    self.error(node, path, "expected a step string or a `repeat:` or `label:` block")
                }
            }
            _ => self.error(
                node,
                path,
                "expected a step string such as \"Rest for 1 hour\", or a `repeat:` or `label:` block",
            ),
        }
    }

    fn repeat(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
        let mut count = 0;
        let mut cycle = false;
        let mut body = None;
        for (name, _, value) in self.entries(node, path, REPEAT_KEYS)? {
            let p = join(path, name);
            match name {
                "repeat" => {
                    count = match value.value {
                        Node::Int(n) if n >= 1 => u32::try_from(n)
                            .or_else(|_| self.error(value, &p, "the repeat count is too large"))?,
                        _ => {
                            return self.error(
                                value,
                                &p,
                                "expected a whole number of passes, 1 or more",
                            );
                        }
                    }
                }
                "cycle" => match value.value {
                    Node::Bool(b) => cycle = b,
                    _ => return self.error(value, &p, "expected true or false"),
                },
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
        });
        self.step_list(body, &join(path, "steps"))?;
        let end = self.steps.len();
        self.steps.push(PlanStep::LoopEnd { start });
        self.steps[start] = PlanStep::LoopStart { count, cycle, end };
        Ok(())
    }

    fn label(&mut self, node: &Spanned<Node>, path: &str) -> Result<(), ProtocolError> {
        let mut body = None;
        for (name, _, value) in self.entries(node, path, LABEL_KEYS)? {
            let p = join(path, name);
            if name == "label" {
                let label = match &value.value {
                    Node::Str(s) if is_identifier(s.trim()) => s.trim().to_owned(),
                    _ => {
                        return self.error(
                            value,
                            &p,
                            "a label must be letters, digits and _ (not starting with a digit)",
                        );
                    }
                };
                if !self.labels.insert(label.clone()) {
                    return self.error(value, &p, format!("the label `{label}` is used twice"));
                }
            } else {
                body = Some(value);
            }
        }
        match body {
            Some(body) => self.step_list(body, &join(path, "steps")),
            None => self.error(
                node,
                &join(path, "steps"),
                "missing `steps` (the labelled block)",
            ),
        }
    }
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
    use crate::plan::{Condition, Control};
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
    fn keys_of_the_full_language_are_reported_as_not_supported_yet() {
        let m = message(Plan::from_yaml(
            &format!("{HEAD}record:\n  every: 10 s\nsteps: [\"Rest for 1 s\"]\n"),
            "t.yaml",
        ));
        assert!(
            m.contains("`record` is part of the protocol language but not supported"),
            "{m}"
        );
        let m = message(plan("  - cc: 1C\n    direction: charge\n"));
        assert!(m.contains("steps[0].cc"), "{m}");
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
                end: 6
            }
        );
        assert_eq!(
            p.steps[3],
            PlanStep::LoopStart {
                count: 2,
                cycle: false,
                end: 5
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

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC*") {
            let _ = Plan::from_yaml(&s, "fuzz.yaml");
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
            ],
            0..24,
        )) {
            let _ = Plan::from_yaml(&parts.concat(), "fuzz.yaml");
        }
    }
}
