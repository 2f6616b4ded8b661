//! The Riden driver: a tokio-modbus RTU client on a serial port.
//!
//! A Riden only sources current. Charging maps onto its two setpoints: constant current is the
//! current limit at `amps` with the voltage setpoint at the compliance voltage (the supply
//! crosses over to CV by itself); constant voltage is the voltage setpoint with the current limit
//! at `current_max`; constant power is emulated by setting the current limit to P / V from the
//! last measured voltage on every apply. Discharge commands are refused.
//!
//! Setpoints are written only when they change: a Riden stores them in its preset memory, and a
//! stepped channel applies a command on every poll. The device has no communication watchdog.

use super::wire::{self, IdentityRegs, Model, Round, Status, reg};
use crate::DriverError;
use crate::stage::{PowerStage, Reading, Setpoints, Written};
use crate::transport::Endpoint;
use crate::transport::modbus::{flatten, read_holding};
use cyclerd_protocols::Command;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_modbus::client::{Client, Context, Writer, rtu};
use tokio_modbus::slave::Slave;

/// Who the device says it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Raw id register, e.g. 60062.
    pub model_id: u16,
    pub serial: u32,
    pub firmware: f64,
}

/// What a stepped channel may ask of this device; the daemon refuses protocols that need more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capabilities {
    /// Whether the device can sink current (discharge a cell): never for a Riden.
    pub can_discharge: bool,
    /// Whether constant power is regulated by the device (false: emulated per poll).
    pub native_constant_power: bool,
    pub max_voltage_v: f64,
    pub max_current_a: f64,
}

/// The setpoints the device is known to hold, so unchanged ones are not rewritten.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Known {
    voltage_raw: u16,
    current_raw: u16,
    output_on: bool,
}

/// A connected Riden with its keypad locked.
pub struct RidenClient {
    ctx: Context,
    /// The serial port, for reconnecting.
    path: PathBuf,
    unit: u8,
    /// Scaling of every voltage and current register; from the id register unless the
    /// configuration overrides it.
    model: Model,
    identity: Identity,
    /// Wall-time bound on each transaction; past it the link counts as lost.
    timeout: Duration,
    known: Option<Known>,
    /// Voltage and current setpoints last written, raw: what a read-back must still show
    /// (`known` follows the device; this follows the daemon).
    written: Option<(u16, u16)>,
    /// Terminal voltage of the last reading, for the constant-power emulation.
    last_voltage_v: Option<f64>,
}

impl RidenClient {
    /// Opens the serial port (115200 8N1), identifies the device and locks its keypad.
    ///
    /// `model_override` replaces the model read from the id register (for firmware that
    /// reports an unknown id).
    pub async fn connect(
        path: impl AsRef<Path>,
        unit: u8,
        timeout: Duration,
        model_override: Option<Model>,
    ) -> Result<RidenClient, DriverError> {
        let path = path.as_ref().to_path_buf();
        let ctx = open(&path, unit)?;
        let mut client = RidenClient {
            ctx,
            path,
            unit,
            model: wire::MODELS[0],
            identity: Identity {
                model_id: 0,
                serial: 0,
                firmware: 0.0,
            },
            timeout,
            known: None,
            written: None,
            last_voltage_v: None,
        };
        client.identity = client.read_identity().await?;
        client.model = match model_override {
            Some(m) => m,
            None => Model::from_id(client.identity.model_id).ok_or_else(|| {
                DriverError::Identity(format!(
                    "{} reports model id {}, which is not a known Riden (RD6006, RD6012, \
                     RD6018, RD6024); set the model for this device in the config",
                    client.path.display(),
                    client.identity.model_id
                ))
            })?,
        };
        client.lock_keypad().await?;
        Ok(client)
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn model(&self) -> Model {
        self.model
    }

    /// Charge-only: a protocol with discharge steps must be refused before it starts.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_discharge: false,
            native_constant_power: false,
            max_voltage_v: self.model.max_voltage_v,
            max_current_a: self.model.max_current_a,
        }
    }

    /// Everything the device reports in one poll, decoded.
    pub async fn status(&mut self) -> Result<Status, DriverError> {
        let during = "reading the output state";
        let regs = self
            .read_registers(reg::READ_BLOCK, reg::READ_BLOCK_LEN, during)
            .await?;
        let status = Status::decode(&self.model, &regs).ok_or(DriverError::BadReply {
            during,
            message: "short status block".into(),
        })?;
        self.known = Some(Known {
            voltage_raw: status.set_voltage_raw,
            current_raw: status.set_current_raw,
            output_on: status.output_on,
        });
        self.last_voltage_v = Some(status.voltage_v);
        Ok(status)
    }

    async fn read_identity(&mut self) -> Result<Identity, DriverError> {
        let during = "reading the identity";
        let regs = self
            .read_registers(reg::IDENTITY_BLOCK, reg::IDENTITY_BLOCK_LEN, during)
            .await?;
        let id = IdentityRegs::decode(&regs).ok_or(DriverError::BadReply {
            during,
            message: "short identity block".into(),
        })?;
        Ok(Identity {
            model_id: id.model_id,
            serial: id.serial,
            firmware: id.firmware,
        })
    }

    /// Locks the front panel so nobody changes setpoints under a running test. The register is
    /// not in the published facts, so a device that refuses it is tolerated.
    async fn lock_keypad(&mut self) -> Result<(), DriverError> {
        match self
            .write_register(reg::KEYPAD_LOCK, 1, "locking the keypad")
            .await
        {
            Err(DriverError::Exception { code, .. }) => {
                tracing::warn!(
                    "{} refused the keypad lock ({code}); its front panel stays usable",
                    self.path.display()
                );
                Ok(())
            }
            other => other,
        }
    }

    async fn read_registers(
        &mut self,
        start: u16,
        count: u16,
        during: &'static str,
    ) -> Result<Vec<u16>, DriverError> {
        read_holding(&mut self.ctx, start, count, self.timeout, during).await
    }

    async fn write_register(
        &mut self,
        addr: u16,
        word: u16,
        during: &'static str,
    ) -> Result<(), DriverError> {
        let reply =
            tokio::time::timeout(self.timeout, self.ctx.write_single_register(addr, word)).await;
        let result = flatten(reply, self.timeout, during);
        if result.is_err() {
            // Whether the write took effect is unknown now.
            self.known = None;
        }
        result
    }

    /// Writes the setpoints that differ from what the device holds, current limit first (so a
    /// lower limit never meets a higher voltage), then switches the output on.
    async fn write_setpoints(&mut self, target: Known) -> Result<(), DriverError> {
        let known = self.known;
        self.written = None;
        if known.map(|k| k.current_raw) != Some(target.current_raw) {
            self.write_register(
                reg::SET_CURRENT,
                target.current_raw,
                "writing the current limit",
            )
            .await?;
        }
        if known.map(|k| k.voltage_raw) != Some(target.voltage_raw) {
            self.write_register(
                reg::SET_VOLTAGE,
                target.voltage_raw,
                "writing the voltage setpoint",
            )
            .await?;
        }
        self.written = Some((target.voltage_raw, target.current_raw));
        if known.map(|k| k.output_on) != Some(true) {
            self.write_register(reg::OUTPUT, 1, "switching the output on")
                .await?;
        }
        self.known = Some(target);
        Ok(())
    }

    /// The setpoints for a charging command; `Err` for anything that needs a sink.
    fn setpoints(&self, command: &Command, voltage_now: f64) -> Result<Known, DriverError> {
        let m = self.model;
        let refuse = |what: &str| {
            Err(DriverError::Unsupported(format!(
                "{} is charge-only: it cannot {what} (pair it with a load, or use a protocol \
                 without discharge steps)",
                m.name()
            )))
        };
        let (volts, amps, volts_round) = match *command {
            Command::Current { amps, .. } if amps < 0.0 => {
                return refuse("sink current");
            }
            Command::Power { watts, .. } if watts < 0.0 => {
                return refuse("sink power");
            }
            Command::Current {
                amps, voltage_max, ..
            } => (voltage_max, amps, Round::Down),
            Command::Voltage { volts, current_max } => (volts, current_max, Round::Nearest),
            Command::Power {
                watts, voltage_max, ..
            } => (voltage_max, watts / voltage_now.max(0.1), Round::Down),
            Command::Off | Command::Chamber { .. } => (0.0, 0.0, Round::Down),
        };
        let voltage_raw = m
            .voltage_to_raw(volts, volts_round)
            .min(m.max_voltage_raw());
        let current_raw = m.current_to_raw(amps, Round::Down).min(m.max_current_raw());
        Ok(Known {
            voltage_raw,
            current_raw,
            output_on: true,
        })
    }
}

impl PowerStage for RidenClient {
    fn can_discharge(&self) -> bool {
        self.capabilities().can_discharge
    }

    async fn read(&mut self) -> Result<Reading, DriverError> {
        let s = self.status().await?;
        // The external probe sits on the cell; a missing probe reads nonsense, reported as none.
        let t = s.external_temperature_c;
        Ok(Reading {
            voltage_v: s.voltage_v,
            current_a: s.current_a,
            temperature_c: (-40.0..=150.0).contains(&t).then_some(t),
            output_on: s.output_on,
            alarm: s.alarm(),
            setpoints: Some(Setpoints {
                voltage_v: Some(self.model.voltage(s.set_voltage_raw)),
                current_a: Some(self.model.current(s.set_current_raw)),
                ..Setpoints::default()
            }),
        })
    }

    async fn apply(&mut self, command: &Command) -> Result<(), DriverError> {
        if !command.output_on() {
            // Off first; then no setpoint stays loaded that a foreign "output on" could drive
            // into the cell.
            self.output_off().await?;
            self.written = None;
            let known = self.known;
            if known.map(|k| k.current_raw) != Some(0) {
                self.write_register(reg::SET_CURRENT, 0, "zeroing the current limit")
                    .await?;
            }
            if known.map(|k| k.voltage_raw) != Some(0) {
                self.write_register(reg::SET_VOLTAGE, 0, "zeroing the voltage setpoint")
                    .await?;
            }
            self.written = Some((0, 0));
            return Ok(());
        }
        // Refuse discharge before touching the device.
        self.setpoints(command, 1.0)?;
        let voltage_now = match (command, self.last_voltage_v) {
            (Command::Power { .. }, None) => self.status().await?.voltage_v,
            (_, v) => v.unwrap_or(1.0),
        };
        let target = self.setpoints(command, voltage_now)?;
        self.write_setpoints(target).await
    }

    fn written(&self) -> Option<Written> {
        let (v, i) = self.written?;
        let m = self.model;
        Some(Written {
            setpoints: Setpoints {
                voltage_v: Some(m.voltage(v)),
                current_a: Some(m.current(i)),
                ..Setpoints::default()
            },
            resolution: Setpoints {
                voltage_v: Some(m.voltage(1)),
                current_a: Some(m.current(1)),
                ..Setpoints::default()
            },
        })
    }

    async fn output_off(&mut self) -> Result<(), DriverError> {
        self.write_register(reg::OUTPUT, 0, "switching the output off")
            .await?;
        if let Some(k) = &mut self.known {
            k.output_on = false;
        }
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        self.known = None;
        // The port is opened exclusively: close the old one first.
        let _ = tokio::time::timeout(self.timeout, self.ctx.disconnect()).await;
        self.ctx = open(&self.path, self.unit)?;
        let identity = self.read_identity().await?;
        if identity.serial != self.identity.serial {
            return Err(DriverError::Identity(format!(
                "after reconnecting, {} answers with serial {}, not {}",
                self.path.display(),
                identity.serial,
                self.identity.serial
            )));
        }
        self.lock_keypad().await
    }
}

/// Opens the port at 115200 8N1, drops whatever a previous session left in its buffers and
/// attaches an RTU client for `unit`.
fn open(path: &Path, unit: u8) -> Result<Context, DriverError> {
    let port = Endpoint::open_serial(&path.to_string_lossy(), wire::BAUD_RATE)?;
    Ok(rtu::attach_slave(port, Slave(unit)))
}
