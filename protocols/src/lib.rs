//! cyclerd's protocol language: one protocol for any cycler.
//!
//! A protocol is a YAML document whose steps are PyBaMM experiment strings ("Charge at C/2
//! until 4.2 V") grouped in `repeat` and `label` blocks, with parameters and safety limits.
//! It compiles into a [`Plan`], a flat list of resolved steps in SI units (positive current =
//! charge), which the [`Engine`] executes one measurement at a time.
//!
//! ```
//! use cyclerd_protocols::{Engine, Measurement, Plan, Safety};
//!
//! let yaml = r#"
//! protocol: Quick charge
//! version: 1
//! params: {capacity: 2.5 Ah}
//! safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
//! steps: ["Charge at C/2 until 4.2 V"]
//! "#;
//! let plan = Plan::from_yaml(yaml, "quick.yaml")?;
//! let mut engine = Engine::new(plan, &Safety::default())?;
//! engine.start(0.0);
//! let m = Measurement { test_time_s: 1.0, voltage_v: 4.2, current_a: 1.25, temperature_c: None, chamber_c: None };
//! assert!(engine.update(&m).outcome.is_some()); // 4.2 V reached: the single step ends the test
//! # Ok::<(), cyclerd_protocols::ProtocolError>(())
//! ```
//!
//! The crate does no I/O and reads no clock: everything is a pure function of its inputs, so
//! protocols and the engine are cheap to test exhaustively.
//!
//! # Layout
//!
//! * [`units`]: numbers with units ("500mA", "2.5 Ah", "C/20") and durations ("30 minutes"),
//!   converted to SI.
//! * [`pybamm`]: the PyBaMM step-string grammar (today's and the legacy forms), with
//!   column-accurate errors.
//! * `document` (private): the YAML document (`protocol`, `version`, `params`, `safety`,
//!   `steps`) checked node by node and compiled into a plan; reached through
//!   [`Plan::from_yaml`]. A folder: the YAML node tree, the top level, steps, blocks and
//!   macros, scalar values, and the texts inside values (conditions, CSV, substitution).
//! * [`plan`]: the plan (IR) types, their JSON form and structural validation.
//! * [`engine`]: the stepping state machine: measurement in, command out, checkpointable. A
//!   folder: the public vocabulary (`types`), one step of the machine (`run`), the safety
//!   limits (`limits`).
//! * [`compile`]: plan -> native schedules (Maccor, Neware, Arbin, BioLogic, PyBaMM).
//! * [`import`]: native schedules -> plan.
//! * [`xml`]: the workspace's one XML element tree, written and read whole: the Maccor and
//!   Neware compilers and importers use it, and so does the Neware BTS wire in
//!   `cyclerd-drivers` (with a streamed element for its large download pages).
//! * [`bdf`]: the Battery Data Format columns every BDF file cyclerd writes has (hub exports,
//!   `cyclerctl protocol simulate`), and the rule that gives a step its BDF step type.
//! * [`error`]: [`ProtocolError`], whose messages say what, where and what to do.

pub mod bdf;
pub mod compile;
mod document;
pub mod engine;
pub mod error;
pub mod import;
pub mod plan;
pub mod pybamm;
pub mod supervise;
mod to_yaml;
pub mod units;
pub mod xml;

pub use document::{MAX_DOCUMENT_BYTES, check_size};
pub use engine::{
    Command, CycleFollower, Engine, EngineState, Measurement, Outcome, Phase, Placed, Status,
    StepFollower, StepSummary, Update,
};
pub use error::{ProtocolError, SourceLocation};
pub use plan::{
    ActionStep, Condition, Control, Goto, LoopCondition, Plan, PlanStep, Profile, ProfileKind,
    Record, Safety, Termination,
};
