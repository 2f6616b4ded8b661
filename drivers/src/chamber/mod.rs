//! Thermal chambers: the [`Chamber`] trait a chamber driver implements, and the simulated air
//! inside a chamber that every chamber simulator and the cells inside it share (facts:
//! `shared/devices/chambers.md`).
//!
//! A chamber is shared by every channel inside it. The daemon polls it, records its temperature
//! with every sample of those channels, sets its set point for the one test that owns it, and
//! puts the channels in their safe state when it alarms, stops answering or leaves its limits.
//!
//! - [`thermal`]: [`thermal::Air`] (the air temperature and the heat the cells put into it) and
//!   [`thermal::ThermalModel`] (a first-order lag toward the set point with a ramp limit), which
//!   the four family simulators (Espec, Weiss, Watlow, Binder) run behind their wire protocols.
//! - `sim` (internal): what those four simulators share around the model: the clock, the
//!   alarm, refused requests, and their handles' getters and fault switches.

pub(crate) mod sim;
pub mod thermal;

use crate::DriverError;
use std::future::Future;

/// One reading of a chamber.
#[derive(Debug, Clone, PartialEq)]
pub struct ChamberReading {
    /// Air temperature the controller measures (its process value), degC.
    pub temperature_c: f64,
    /// Temperature set point in force, degC.
    pub set_point_c: f64,
    /// Relative humidity, %, on chambers that measure it.
    pub humidity_pct: Option<f64>,
    /// The controller is regulating (constant or program mode), rather than off or standby.
    pub running: bool,
    /// Alarms the controller reports, in its own words or codes; empty when there are none.
    pub alarms: Vec<String>,
}

/// A thermal chamber's controller. Small required core, like [`crate::stage::PowerStage`];
/// futures are `Send` so the daemon's chamber task can live on any worker.
pub trait Chamber: Send {
    /// Reads temperature, set point, humidity, mode and alarms in as few exchanges as the
    /// controller allows.
    fn read(&mut self) -> impl Future<Output = Result<ChamberReading, DriverError>> + Send;
    /// Sets the temperature set point, degC (the chamber regulates to it once running).
    fn set_temperature(
        &mut self,
        temperature_c: f64,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Starts regulating at the set point (constant / manual mode).
    fn start(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Stops regulating (off or standby, as the controller has it).
    fn stop(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Re-establishes a lost link.
    fn reconnect(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;
}
