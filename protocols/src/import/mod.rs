//! Importers: a cycler's native schedule (or aurora-unicycler's JSON protocol) -> a plan, so a simulator can run what it was sent and
//! compile -> import is checked on every protocol.

use crate::plan::{Plan, PlanStep, Safety, sha256_hex};
use crate::xml::{self, Element};
use std::fmt;

mod arbin;
mod biologic;
mod maccor;
mod neware;
mod sweep;
mod unicycler;

/// A native schedule format that can be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Maccor,
    Neware,
    Arbin,
    Biologic,
    /// aurora-unicycler's JSON protocol (Empa's open cross-vendor schema).
    Unicycler,
}

impl SourceKind {
    pub const ALL: [SourceKind; 5] = [
        SourceKind::Maccor,
        SourceKind::Neware,
        SourceKind::Arbin,
        SourceKind::Biologic,
        SourceKind::Unicycler,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Maccor => "maccor",
            SourceKind::Neware => "neware",
            SourceKind::Arbin => "arbin",
            SourceKind::Biologic => "biologic",
            SourceKind::Unicycler => "unicycler",
        }
    }

    pub fn from_name(name: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Guesses the format from the file's first bytes.
    pub fn detect(text: &str) -> Option<SourceKind> {
        let head: String = text.chars().take(4096).collect();
        if head.contains("MaccorTestProcedure") || head.contains("maccor-application") {
            Some(SourceKind::Maccor)
        } else if head.contains("Step_Info")
            || head.contains("<root>") && head.contains("Step File")
        {
            Some(SourceKind::Neware)
        } else if head.contains("[Schedule]") {
            Some(SourceKind::Arbin)
        } else if head.contains("BT-LAB SETTING FILE") || head.contains("EC-LAB SETTING FILE") {
            Some(SourceKind::Biologic)
        } else if head.trim_start().starts_with('{') && head.contains("\"method\"") {
            // A JSON object with a method list: what aurora-unicycler writes.
            Some(SourceKind::Unicycler)
        } else {
            None
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a native file could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}: {kind} schedule{}: {message}", location.as_deref().map(|l| format!(" ({l})")).unwrap_or_default())]
pub struct ImportError {
    pub kind: SourceKind,
    pub origin: String,
    /// Where in the file (line, element or section), when known.
    pub location: Option<String>,
    pub message: String,
}

impl ImportError {
    /// An importer's error builder: `kind` and `origin` fixed, location and message given.
    fn builder(kind: SourceKind, origin: &str) -> impl Fn(String, String) -> ImportError + '_ {
        move |location, message| ImportError {
            kind,
            origin: origin.to_owned(),
            location: Some(location),
            message,
        }
    }
}

/// The root element of an XML schedule (Maccor, Neware), which must be `<root>`; XML errors
/// keep their byte location.
fn xml_root(
    text: &str,
    root: &str,
    err: impl Fn(String, String) -> ImportError,
) -> Result<Element, ImportError> {
    let element = xml::parse(text).map_err(|e| err(e.location, e.message))?;
    if element.name != root {
        return Err(err(
            "root element".into(),
            format!("expected <{root}>, found <{}>", element.name),
        ));
    }
    Ok(element)
}

/// The plan an importer read from `text`, still to be validated: native files state no
/// capacity, and the plan carries its source's hash as a parsed one does.
fn imported(name: String, text: &str, safety: Safety, steps: Vec<PlanStep>) -> Plan {
    Plan {
        name,
        source_sha256: sha256_hex(text),
        capacity_ah: None,
        params: Default::default(),
        safety,
        steps,
    }
}

/// Reads a native schedule of `kind`; `origin` (the file name) prefixes errors.
pub fn import(text: &str, kind: SourceKind, origin: &str) -> Result<Plan, ImportError> {
    match kind {
        SourceKind::Maccor => maccor::import(text, origin),
        SourceKind::Neware => neware::import(text, origin),
        SourceKind::Arbin => arbin::import(text, origin),
        SourceKind::Biologic => biologic::import(text, origin),
        SourceKind::Unicycler => unicycler::import(text, origin),
    }
}
