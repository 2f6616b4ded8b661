//! The power-stage trait: what a stepped channel needs from a device.
//!
//! Small required core (read, apply, output off); families add capabilities in their clients.
//! A stage whose device reports its setpoints returns them in every [`Reading`] and what it
//! wrote from [`PowerStage::written`], so the runner sees a change made by another client.

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
    /// The setpoints the device holds now, read back where it reports them, so a change made
    /// by another client is seen (compared with [`PowerStage::written`]).
    pub setpoints: Option<Setpoints>,
}

/// Setpoints as a device holds them; a field the device has no register for is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Setpoints {
    pub voltage_v: Option<f64>,
    /// Source (charge) current limit.
    pub current_a: Option<f64>,
    /// Source power limit.
    pub power_w: Option<f64>,
    /// Sink (discharge) current limit, a magnitude.
    pub sink_current_a: Option<f64>,
    /// Sink power limit, a magnitude.
    pub sink_power_w: Option<f64>,
}

impl Setpoints {
    /// Every setpoint zero: what a resting channel leaves loaded.
    pub const ZERO: Setpoints = Setpoints {
        voltage_v: Some(0.0),
        current_a: Some(0.0),
        power_w: Some(0.0),
        sink_current_a: Some(0.0),
        sink_power_w: Some(0.0),
    };

    fn fields(&self) -> [(&'static str, &'static str, Option<f64>); 5] {
        [
            ("voltage", "V", self.voltage_v),
            ("current", "A", self.current_a),
            ("power", "W", self.power_w),
            ("sink current", "A", self.sink_current_a),
            ("sink power", "W", self.sink_power_w),
        ]
    }
}

/// The setpoints a stage last wrote and the device's resolution for each (one step of its
/// scaling), so a read-back is compared within what the device can represent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Written {
    pub setpoints: Setpoints,
    pub resolution: Setpoints,
}

impl Written {
    /// What differs in `read` from what was written by more than the device's resolution,
    /// e.g. "current setpoint 0.000 A -> 1.000 A"; empty when nothing did.
    pub fn changes(&self, read: &Setpoints) -> Vec<String> {
        let res = self.resolution.fields();
        self.setpoints
            .fields()
            .into_iter()
            .zip(read.fields())
            .zip(res)
            .filter_map(|(((name, unit, wrote), (_, _, now)), (_, _, step))| {
                let (wrote, now) = (wrote?, now?);
                // Half a step of slack on top of one step: read-backs are rounded, not exact.
                let tolerance = step.unwrap_or(0.0) * 1.5 + 1e-9;
                ((now - wrote).abs() > tolerance)
                    .then(|| format!("{name} setpoint {wrote:.3} {unit} -> {now:.3} {unit}"))
            })
            .collect()
    }
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
    /// The setpoints this stage last wrote, when the device reports its setpoints back in
    /// [`Reading::setpoints`]; the stepped runner faults the test when they differ.
    fn written(&self) -> Option<Written> {
        None
    }
    /// Whether the stage can take current out of the cell; a charge-only supply says no, and
    /// protocols that discharge are refused before they start.
    fn can_discharge(&self) -> bool {
        true
    }
}

/// The current an ideal bidirectional power stage drives into `cell` for `command`: constant
/// current until the compliance voltage, then the voltage held (CC/CV crossover); constant
/// voltage within the current compliance; constant power within the voltage window. Used to
/// simulate protocols without a device.
pub fn ideal_current(cell: &crate::cell::Cell, command: &Command) -> f64 {
    // The current that would put the terminals at `v` now.
    let at = |v: f64| cell.current_for_voltage(v);
    match *command {
        Command::Current {
            amps,
            voltage_max,
            voltage_min,
        } => {
            if amps >= 0.0 {
                amps.min(at(voltage_max).max(0.0))
            } else {
                amps.max(at(voltage_min).min(0.0))
            }
        }
        Command::Voltage { volts, current_max } => at(volts).clamp(-current_max, current_max),
        Command::Power {
            watts,
            voltage_max,
            voltage_min,
        } => {
            // Solve V * I = P with V = OCV' + I * R0 (a quadratic; the root near P / OCV').
            let r0 = cell.params().r0_ohm;
            let e = cell.terminal_voltage(0.0);
            let disc = (e * e + 4.0 * r0 * watts).max(0.0);
            let i = (-e + disc.sqrt()) / (2.0 * r0);
            if watts >= 0.0 {
                i.min(at(voltage_max).max(0.0))
            } else {
                i.max(at(voltage_min).min(0.0))
            }
        }
        #[allow(unreachable_patterns)]
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{Cell, CellParams, Chemistry};

    fn cell(soc: f64) -> Cell {
        Cell::new(CellParams {
            initial_soc: soc,
            ..CellParams::new(Chemistry::Nmc, 2.5)
        })
    }

    #[test]
    fn constant_current_gives_way_to_the_compliance_voltage() {
        let low = cell(0.2);
        let cmd = Command::Current {
            amps: 2.5,
            voltage_max: 4.2,
            voltage_min: 2.5,
        };
        assert_eq!(ideal_current(&low, &cmd), 2.5);
        let full = cell(0.999);
        let i = ideal_current(&full, &cmd);
        assert!(i < 2.5 && (full.terminal_voltage(i) - 4.2).abs() < 1e-9);
    }

    fn written(current_a: f64) -> Written {
        Written {
            setpoints: Setpoints {
                voltage_v: Some(4.2),
                current_a: Some(current_a),
                ..Setpoints::default()
            },
            // One count of a 60 V / 60 A PSB.
            resolution: Setpoints {
                voltage_v: Some(60.0 / f64::from(0xCCCC_u16)),
                current_a: Some(60.0 / f64::from(0xCCCC_u16)),
                ..Setpoints::default()
            },
        }
    }

    #[test]
    fn a_read_back_within_the_devices_resolution_is_no_change() {
        let step = 60.0 / f64::from(0xCCCC_u16);
        let read = Setpoints {
            voltage_v: Some(4.2 - step),
            current_a: Some(1.0 + step),
            // A field only one side has is not compared.
            power_w: Some(1500.0),
            ..Setpoints::default()
        };
        assert_eq!(written(1.0).changes(&read), Vec::<String>::new());
    }

    #[test]
    fn a_setpoint_changed_by_more_than_the_resolution_is_named_with_both_values() {
        let read = Setpoints {
            voltage_v: Some(4.2),
            current_a: Some(1.0),
            ..Setpoints::default()
        };
        assert_eq!(
            written(0.0).changes(&read),
            ["current setpoint 0.000 A -> 1.000 A"]
        );
    }

    #[test]
    fn constant_power_delivers_the_power() {
        let c = cell(0.5);
        let i = ideal_current(
            &c,
            &Command::Power {
                watts: -5.0,
                voltage_max: 4.2,
                voltage_min: 2.5,
            },
        );
        assert!((c.terminal_voltage(i) * i + 5.0).abs() < 1e-6);
    }
}
