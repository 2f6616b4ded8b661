//! The PSB driver: a tokio-modbus client over Modbus TCP, or Modbus RTU on a serial port (the
//! USB port of a PSB is a virtual serial port speaking RTU).

use super::wire::{self, Nominal, Round, coil, reg, state};
use crate::DriverError;
use crate::stage::{PowerStage, Reading, Setpoints, Written};
use crate::transport::Endpoint;
use crate::transport::modbus::{flatten, read_holding};
use cyclerd_protocols::Command;
use std::time::Duration;
use tokio_modbus::client::{Client, Context, Writer, rtu, tcp};
use tokio_modbus::slave::Slave;

/// Who the device says it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub device_type: String,
    pub manufacturer: String,
    pub serial: String,
}

/// A connected PSB with its remote control taken.
pub struct PsbClient {
    ctx: Context,
    /// Where the device is, for reconnecting.
    endpoint: Endpoint,
    unit: u8,
    /// Ratings every scaled register refers to; a wrong value scales every setpoint wrongly,
    /// so it comes from the device's type designation unless the configuration overrides it.
    nominal: Nominal,
    identity: Identity,
    /// Wall-time bound on each transaction; past it the link counts as lost.
    timeout: Duration,
    /// The setpoint block last written, raw: what a read-back must still show.
    written: Option<[u16; reg::SETPOINT_BLOCK_LEN as usize]>,
    /// Whether a poll reads `POLL_SPAN` in one transaction; false once the device answered
    /// that read with an exception (firmware that does not map 503-504).
    span: bool,
}

impl PsbClient {
    /// Connects, identifies the device and takes remote control.
    ///
    /// `nominal_override` replaces the ratings parsed from the type designation (for firmware
    /// that reports an unusual name); power defaults to volts x amps when not given.
    pub async fn connect(
        endpoint: impl Into<Endpoint>,
        unit: u8,
        timeout: Duration,
        nominal_override: Option<Nominal>,
    ) -> Result<PsbClient, DriverError> {
        let endpoint = endpoint.into();
        let ctx = open(&endpoint, unit, timeout).await?;
        let mut client = PsbClient {
            ctx,
            endpoint,
            unit,
            nominal: Nominal {
                voltage_v: 0.0,
                current_a: 0.0,
                power_w: 0.0,
            },
            identity: Identity {
                device_type: String::new(),
                manufacturer: String::new(),
                serial: String::new(),
            },
            timeout,
            written: None,
            span: true,
        };
        client.identity = client.read_identity().await?;
        client.nominal = match nominal_override {
            Some(n) => n,
            None => {
                let (v, a) =
                    wire::nominal_from_type(&client.identity.device_type).ok_or_else(|| {
                        DriverError::Identity(format!(
                            "cannot read nominal ratings from device type {:?}; set \
                             nominal_voltage and nominal_current for this device in the config",
                            client.identity.device_type
                        ))
                    })?;
                Nominal {
                    voltage_v: v,
                    current_a: a,
                    power_w: v * a,
                }
            }
        };
        client
            .write_coil(coil::REMOTE, true, "taking remote control")
            .await?;
        Ok(client)
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn nominal(&self) -> Nominal {
        self.nominal
    }

    async fn read_identity(&mut self) -> Result<Identity, DriverError> {
        let mut strings = Vec::with_capacity(3);
        for start in [reg::DEVICE_TYPE, reg::MANUFACTURER, reg::SERIAL] {
            let regs = self
                .read_registers(start, reg::STRING_REGS, "reading the identity")
                .await?;
            strings.push(wire::decode_string(&regs));
        }
        let serial = strings.pop().unwrap_or_default();
        let manufacturer = strings.pop().unwrap_or_default();
        let device_type = strings.pop().unwrap_or_default();
        Ok(Identity {
            device_type,
            manufacturer,
            serial,
        })
    }

    async fn read_registers(
        &mut self,
        start: u16,
        count: u16,
        during: &'static str,
    ) -> Result<Vec<u16>, DriverError> {
        read_holding(&mut self.ctx, start, count, self.timeout, during).await
    }

    async fn write_registers(
        &mut self,
        start: u16,
        words: &[u16],
        during: &'static str,
    ) -> Result<(), DriverError> {
        let reply = tokio::time::timeout(
            self.timeout,
            self.ctx.write_multiple_registers(start, words),
        )
        .await;
        flatten(reply, self.timeout, during)
    }

    async fn write_coil(
        &mut self,
        addr: u16,
        on: bool,
        during: &'static str,
    ) -> Result<(), DriverError> {
        let reply = tokio::time::timeout(self.timeout, self.ctx.write_single_coil(addr, on)).await;
        flatten(reply, self.timeout, during)
    }

    /// The state + actual values block (505..=509) and the setpoint block (498..=502): in one
    /// transaction where the device answers the span between them, else in two.
    async fn poll_registers(
        &mut self,
        during: &'static str,
    ) -> Result<(Vec<u16>, Vec<u16>), DriverError> {
        if self.span {
            match self
                .read_registers(reg::POLL_SPAN, reg::POLL_SPAN_LEN, during)
                .await
            {
                Ok(mut span) => {
                    let values = span.split_off(usize::from(reg::READ_BLOCK - reg::POLL_SPAN));
                    span.truncate(usize::from(reg::SETPOINT_BLOCK_LEN));
                    return Ok((values, span));
                }
                // Only "not mapped" means the span is the problem; any other exception is the
                // device's answer to every read and is reported as it is.
                Err(DriverError::Exception { code, .. }) if code == "IllegalDataAddress" => {
                    tracing::info!(
                        endpoint = %self.endpoint,
                        %code,
                        "the PSB refuses one read of registers 498-509; reading two blocks per poll"
                    );
                    self.span = false;
                }
                Err(e) => return Err(e),
            }
        }
        let values = self
            .read_registers(reg::READ_BLOCK, reg::READ_BLOCK_LEN, during)
            .await?;
        let block = self
            .read_registers(reg::SETPOINT_BLOCK, reg::SETPOINT_BLOCK_LEN, during)
            .await?;
        Ok((values, block))
    }

    /// The setpoint block 498..=502 in physical units.
    fn physical(&self, block: &[u16]) -> Setpoints {
        let n = self.nominal;
        let at = |r: u16, nominal: f64| {
            let raw = block[usize::from(r - reg::SETPOINT_BLOCK)];
            Some(wire::from_raw(raw, nominal))
        };
        Setpoints {
            voltage_v: at(reg::SET_VOLTAGE, n.voltage_v),
            current_a: at(reg::SET_CURRENT, n.current_a),
            power_w: at(reg::SET_POWER, n.power_w),
            sink_current_a: at(reg::SET_SINK_CURRENT, n.current_a),
            sink_power_w: at(reg::SET_SINK_POWER, n.power_w),
        }
    }

    /// The setpoint block 498..=502 for a command, and whether the output should be on.
    fn setpoints(&self, command: &Command) -> ([u16; reg::SETPOINT_BLOCK_LEN as usize], bool) {
        let n = self.nominal;
        let v = |x: f64, r| wire::to_raw(x, n.voltage_v, r);
        let i = |x: f64| wire::to_raw(x, n.current_a, Round::Down);
        let p = |x: f64| wire::to_raw(x, n.power_w, Round::Down);
        let full = wire::FULL_SCALE;
        // Block order: sink power, sink current, voltage, source current, source power.
        match *command {
            // A chamber step rests the cell; the chamber itself is another device.
            Command::Off | Command::Chamber { .. } => ([0, 0, 0, 0, 0], false),
            Command::Current {
                amps, voltage_max, ..
            } if amps >= 0.0 => ([0, 0, v(voltage_max, Round::Down), i(amps), full], true),
            Command::Current {
                amps, voltage_min, ..
            } => ([full, i(-amps), v(voltage_min, Round::Nearest), 0, 0], true),
            Command::Voltage { volts, current_max } => (
                [
                    full,
                    i(current_max),
                    v(volts, Round::Nearest),
                    i(current_max),
                    full,
                ],
                true,
            ),
            Command::Power {
                watts, voltage_max, ..
            } if watts >= 0.0 => ([0, 0, v(voltage_max, Round::Down), full, p(watts)], true),
            Command::Power {
                watts, voltage_min, ..
            } => (
                [p(-watts), full, v(voltage_min, Round::Nearest), 0, 0],
                true,
            ),
        }
    }
}

impl PowerStage for PsbClient {
    async fn read(&mut self) -> Result<Reading, DriverError> {
        let during = "reading state and actual values";
        let (regs, block) = self.poll_registers(during).await?;
        let word = wire::state_word(regs[0], regs[1]);
        let magnitude = wire::from_raw(regs[3], self.nominal.current_a);
        Ok(Reading {
            voltage_v: wire::from_raw(regs[2], self.nominal.voltage_v),
            current_a: if word & state::SINK_MODE != 0 {
                -magnitude
            } else {
                magnitude
            },
            temperature_c: None,
            output_on: word & state::OUTPUT_ON != 0,
            alarm: word & state::ALARM != 0,
            setpoints: Some(self.physical(&block)),
        })
    }

    async fn apply(&mut self, command: &Command) -> Result<(), DriverError> {
        let (block, output) = self.setpoints(command);
        if !output {
            // Off first; then no setpoint stays loaded that another client's "output on"
            // could drive into the cell.
            self.output_off().await?;
            self.written = None;
            self.write_registers(reg::SETPOINT_BLOCK, &block, "zeroing the setpoints")
                .await?;
            self.written = Some(block);
            return Ok(());
        }
        self.written = None;
        self.write_registers(reg::SETPOINT_BLOCK, &block, "writing setpoints")
            .await?;
        self.written = Some(block);
        self.write_coil(coil::OUTPUT, true, "switching the output on")
            .await
    }

    fn written(&self) -> Option<Written> {
        let n = self.nominal;
        let step = |nominal: f64| Some(nominal / f64::from(wire::FULL_SCALE));
        Some(Written {
            setpoints: self.physical(&self.written?),
            resolution: Setpoints {
                voltage_v: step(n.voltage_v),
                current_a: step(n.current_a),
                power_w: step(n.power_w),
                sink_current_a: step(n.current_a),
                sink_power_w: step(n.power_w),
            },
        })
    }

    async fn output_off(&mut self) -> Result<(), DriverError> {
        self.write_coil(coil::OUTPUT, false, "switching the output off")
            .await
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        // A serial port opens exclusively: close the old one first.
        let _ = tokio::time::timeout(self.timeout, self.ctx.disconnect()).await;
        self.ctx = open(&self.endpoint, self.unit, self.timeout).await?;
        let identity = self.read_identity().await?;
        if identity.serial != self.identity.serial {
            return Err(DriverError::Identity(format!(
                "after reconnecting, {} answers with serial {:?}, not {:?}",
                self.endpoint, identity.serial, self.identity.serial
            )));
        }
        self.write_coil(coil::REMOTE, true, "taking remote control")
            .await
    }
}

async fn open(endpoint: &Endpoint, unit: u8, timeout: Duration) -> Result<Context, DriverError> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            tokio::time::timeout(timeout, tcp::connect_slave(*addr, Slave(unit)))
                .await
                .map_err(|_| DriverError::Timeout {
                    during: "connecting",
                    timeout_ms: timeout.as_millis() as u64,
                })?
                .map_err(|source| DriverError::Connect {
                    addr: *addr,
                    source,
                })
        }
        Endpoint::Serial { path, baud } => Ok(rtu::attach_slave(
            Endpoint::open_serial(path, *baud)?,
            Slave(unit),
        )),
    }
}
