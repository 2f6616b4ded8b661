//! Compilers: a plan -> a cycler's native schedule (facts: `shared/protocols.md`).
//!
//! What a target cannot express is a [`CompileError`] naming the step and the target, never a
//! silently different protocol. One module per target; each keeps its format's facts (codes,
//! units, spellings) in tables at its top.

use crate::plan::Plan;
use std::fmt;

pub(crate) mod arbin;
pub(crate) mod biologic;
pub(crate) mod maccor;
pub(crate) mod native;
pub(crate) mod neware;
#[cfg(test)]
pub(crate) mod plan_compare;
pub mod pybamm;
#[cfg(test)]
mod roundtrip;

/// A native schedule format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Maccor procedure (.000, XML).
    Maccor,
    /// Neware BTS step file (XML).
    Neware,
    /// Arbin schedule (.sdu, INI-style).
    Arbin,
    /// BioLogic Modulo Bat settings (.mps, text).
    Biologic,
    /// PyBaMM experiment: a list of step strings (Python list literal).
    Pybamm,
    /// PyBaMM's JSON experiment configuration.
    PybammJson,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Maccor,
        Target::Neware,
        Target::Arbin,
        Target::Biologic,
        Target::Pybamm,
        Target::PybammJson,
    ];

    /// The name used on the command line (`--target`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Maccor => "maccor",
            Target::Neware => "neware",
            Target::Arbin => "arbin",
            Target::Biologic => "biologic",
            Target::Pybamm => "pybamm",
            Target::PybammJson => "pybamm-json",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The usual file extension of the format.
    pub fn extension(self) -> &'static str {
        match self {
            Target::Maccor => "000",
            Target::Neware => "xml",
            Target::Arbin => "sdu",
            Target::Biologic => "mps",
            Target::Pybamm => "py",
            Target::PybammJson => "json",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a plan cannot be compiled for a target.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{target} cannot express {step} ({description}): {message}")]
pub struct CompileError {
    pub target: Target,
    /// The step's path in the protocol (`steps[3].steps[1]`), or "the protocol" for whole-plan
    /// problems.
    pub step: String,
    /// The step as written.
    pub description: String,
    /// What the target lacks, and what to do instead where there is an alternative.
    pub message: String,
}

/// Compiles `plan` to `target`'s native format.
pub fn compile(plan: &Plan, target: Target) -> Result<String, CompileError> {
    match target {
        Target::Maccor => maccor::compile(plan),
        Target::Neware => neware::compile(plan),
        Target::Arbin => arbin::compile(plan),
        Target::Biologic => biologic::compile(plan),
        Target::Pybamm => pybamm::compile(plan),
        Target::PybammJson => pybamm::compile_json(plan),
    }
}
