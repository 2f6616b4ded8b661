//! The one error type of the crate.
//!
//! Every variant's `Display` is a complete message for the person who wrote the protocol: what
//! is wrong, where (file:line:column, step path, column inside a step string) and, where it
//! helps, what to write instead.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A place in a protocol source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLocation {
    /// The file name (or other origin) given by the caller, so messages point at the file.
    pub origin: String,
    /// 1-based line; `None` when the YAML layer could not tell.
    pub line: Option<u64>,
    /// 1-based column on that line; `None` together with `line`.
    pub column: Option<u64>,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{}:{line}:{column}", self.origin),
            (Some(line), None) => write!(f, "{}:{line}", self.origin),
            _ => f.write_str(&self.origin),
        }
    }
}

/// Everything that can go wrong turning a protocol into a plan, or a plan into a running engine.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ProtocolError {
    /// The file is not valid YAML (or breaks a YAML-level limit such as duplicate keys).
    #[error("{at}: invalid YAML: {message}")]
    Yaml {
        /// Where the YAML parser stopped.
        at: SourceLocation,
        /// The parser's own description of the problem.
        message: String,
    },
    /// Valid YAML, but not a valid protocol document (missing key, unknown key, bad value).
    #[error("{at}: {path}: {message}")]
    Document {
        /// The YAML node the problem is about.
        at: SourceLocation,
        /// The document path (`safety.voltage`, `steps[2].repeat`) so the reader finds the node.
        path: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A step string (PyBaMM experiment syntax) that does not parse.
    #[error("{at}: {path}, column {column}: {message}")]
    Step {
        /// The YAML node holding the step string.
        at: SourceLocation,
        /// The step path (`steps[2].steps[1]`).
        path: String,
        /// 1-based character column inside the step string.
        column: usize,
        /// What was expected at that column.
        message: String,
    },
    /// A plan read from JSON that is not valid JSON or not a plan.
    #[error("invalid plan JSON: {0}")]
    Json(String),
    /// A plan whose structure is inconsistent (bad loop markers, missing `End`, ...).
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    /// The combined lab and protocol safety limits are incomplete or contradict a step.
    #[error("safety limits: {0}")]
    Limits(String),
    /// A checkpoint that does not belong to the plan it is restored with.
    #[error("cannot restore checkpoint: {0}")]
    Checkpoint(String),
}
