//! The power-stage trait: what a stepped channel needs from a device.
//!
//! Small required core (read, apply, output off); families add capabilities in their clients.

use crate::DriverError;
use cyclerd_protocols::Command;
use std::future::Future;

/// One measurement of a power stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub voltage_v: f64,
    /// Positive when current flows into the cell (charging), as BDF and the engine count it.
    pub current_a: f64,
    /// Cell or device temperature, if the stage has a sensor.
    pub temperature_c: Option<f64>,
    /// Whether the output stage is switched on; a stage that turned itself off is a fault.
    pub output_on: bool,
    /// The device reports an alarm (over-voltage, over-temperature, ...).
    pub alarm: bool,
}

/// A device the daemon steps itself. Futures are `Send` so a runner can live on any worker.
pub trait PowerStage: Send {
    /// Reads voltage, current and state in as few transactions as the device allows.
    fn read(&mut self) -> impl Future<Output = Result<Reading, DriverError>> + Send;
    /// Writes the setpoints for `command` and switches the output as it requires.
    fn apply(&mut self, command: &Command) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Safe state: output off. Must be callable at any time, repeatedly.
    fn output_off(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Re-establishes a lost link (and whatever session state the device needs, such as remote
    /// control), so polling can go on.
    fn reconnect(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;
}
