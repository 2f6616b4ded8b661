//! The F4T driver: a tokio-modbus client over Modbus TCP, on one control loop.
//!
//! A poll is one block read of the loop's registers (mode, range, set points, process value)
//! and one read per alarm object asked for. Set points are checked against the range the loop
//! reports before they are written, so an out-of-range value is refused here with the range
//! named, whatever the controller would make of it.

use super::wire::{self, Loop, LoopStatus, alarm, mode, reg};
use crate::DriverError;
use crate::chamber::{Chamber, ChamberReading};
use crate::transport::modbus::{flatten, read_holding};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Client, Context, Reader, Writer, tcp};
use tokio_modbus::slave::Slave;

/// How to reach the chamber's loop on an F4T.
#[derive(Debug, Clone, PartialEq)]
pub struct WatlowOptions {
    /// The control loop that regulates the chamber's air temperature (1-based).
    pub loop_n: u8,
    /// Wall-time bound on each transaction; past it the link counts as lost.
    pub timeout: Duration,
    /// Modbus unit id.
    pub unit: u8,
    /// How many alarm objects to read, from alarm 1 on (0 for none; at most
    /// [`alarm::COUNT`]). Their registers are an assumption (see [`super`]): alarms the
    /// controller refuses are left out from then on.
    pub alarms: u8,
}

impl Default for WatlowOptions {
    /// Loop 1, unit 1, a 2 s timeout, alarm 1.
    fn default() -> Self {
        WatlowOptions {
            loop_n: 1,
            timeout: Duration::from_secs(2),
            unit: wire::DEFAULT_UNIT,
            alarms: 1,
        }
    }
}

/// A connected F4T, driving one control loop.
pub struct WatlowClient {
    /// The Modbus TCP connection.
    ctx: Context,
    /// Where the controller is, for reconnecting.
    addr: SocketAddr,
    options: WatlowOptions,
    /// Where the loop's registers are.
    control_loop: Loop,
    /// Alarm objects still read: fewer than asked once the controller refused one.
    alarms: u8,
}

impl WatlowClient {
    /// Connects and reads the loop once, so a wrong address or loop fails here.
    pub async fn connect(
        addr: SocketAddr,
        options: WatlowOptions,
    ) -> Result<WatlowClient, DriverError> {
        let control_loop = Loop::new(options.loop_n).ok_or_else(|| {
            DriverError::Unsupported("F4T loops are numbered from 1; loop 0 does not exist".into())
        })?;
        if options.alarms > alarm::COUNT {
            return Err(DriverError::Unsupported(format!(
                "an F4T has {} alarms; {} were asked for",
                alarm::COUNT,
                options.alarms
            )));
        }
        let ctx = open(addr, options.unit, options.timeout).await?;
        let mut client = WatlowClient {
            ctx,
            addr,
            alarms: options.alarms,
            options,
            control_loop,
        };
        client.status().await?;
        Ok(client)
    }

    /// The loop's mode, range, set points and process value, in one transaction.
    pub async fn status(&mut self) -> Result<LoopStatus, DriverError> {
        let during = "reading the control loop";
        let regs = read_holding(
            &mut self.ctx,
            self.control_loop.at(reg::BLOCK),
            reg::BLOCK_LEN,
            self.options.timeout,
            during,
        )
        .await?;
        let status = LoopStatus::decode(&regs).ok_or(DriverError::BadReply {
            during,
            message: "short loop block".into(),
        })?;
        // A failed sensor must not reach the daemon as a temperature.
        if !(status.process_value_c.is_finite() && status.current_set_point_c.is_finite()) {
            return Err(DriverError::BadReply {
                during,
                message: format!(
                    "loop {} reports process value {} and set point {} (sensor failure?)",
                    self.control_loop.number(),
                    status.process_value_c,
                    status.current_set_point_c
                ),
            });
        }
        Ok(status)
    }

    /// The active alarms among those read, described as `alarm N: STATE`.
    async fn active_alarms(&mut self) -> Result<Vec<String>, DriverError> {
        let during = "reading the alarm states";
        let timeout = self.options.timeout;
        let mut active = Vec::new();
        for n in 1..=self.alarms {
            let Some(addr) = alarm::state_register(n) else {
                break;
            };
            let reply =
                tokio::time::timeout(timeout, self.ctx.read_holding_registers(addr, 1)).await;
            if let Ok(Ok(Err(ExceptionCode::IllegalDataAddress))) = reply {
                tracing::warn!(
                    "the F4T at {} has no alarm {n} state at register {addr}; alarms from {n} \
                     on are not read",
                    self.addr
                );
                self.alarms = n - 1;
                break;
            }
            let state = flatten(reply, timeout, during)?
                .first()
                .copied()
                .ok_or_else(|| DriverError::BadReply {
                    during,
                    message: "empty alarm state".into(),
                })?;
            if let Some(what) = alarm::describe(state) {
                active.push(format!("alarm {n}: {what}"));
            }
        }
        Ok(active)
    }

    async fn write_mode(&mut self, value: u16, during: &'static str) -> Result<(), DriverError> {
        let addr = self.control_loop.at(reg::MODE);
        let reply = tokio::time::timeout(
            self.options.timeout,
            self.ctx.write_single_register(addr, value),
        )
        .await;
        flatten(reply, self.options.timeout, during)
    }
}

impl Chamber for WatlowClient {
    async fn read(&mut self) -> Result<ChamberReading, DriverError> {
        let status = self.status().await?;
        let alarms = self.active_alarms().await?;
        Ok(ChamberReading {
            temperature_c: status.process_value_c,
            set_point_c: status.current_set_point_c,
            humidity_pct: None,
            running: status.running(),
            alarms,
        })
    }

    async fn set_temperature(&mut self, temperature_c: f64) -> Result<(), DriverError> {
        if !temperature_c.is_finite() {
            return Err(DriverError::Unsupported(format!(
                "a set point of {temperature_c} degC (give a finite temperature)"
            )));
        }
        let (lo, hi) = self.status().await?.range_c;
        if !(lo..=hi).contains(&temperature_c) {
            return Err(DriverError::Unsupported(format!(
                "a set point of {temperature_c} degC: loop {} accepts {lo} to {hi} degC",
                self.control_loop.number()
            )));
        }
        let during = "writing the set point";
        let words = wire::encode_float(temperature_c as f32);
        let reply = tokio::time::timeout(
            self.options.timeout,
            self.ctx
                .write_multiple_registers(self.control_loop.at(reg::SET_POINT), &words),
        )
        .await;
        flatten(reply, self.options.timeout, during)
    }

    async fn start(&mut self) -> Result<(), DriverError> {
        self.write_mode(mode::AUTO, "switching the loop to auto")
            .await
    }

    async fn stop(&mut self) -> Result<(), DriverError> {
        self.write_mode(mode::OFF, "switching the loop off").await
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        let _ = tokio::time::timeout(self.options.timeout, self.ctx.disconnect()).await;
        self.ctx = open(self.addr, self.options.unit, self.options.timeout).await?;
        // A listener that accepts and drops connections is no link: prove the loop answers.
        self.status().await.map(|_| ())
    }
}

async fn open(addr: SocketAddr, unit: u8, timeout: Duration) -> Result<Context, DriverError> {
    tokio::time::timeout(timeout, tcp::connect_slave(addr, Slave(unit)))
        .await
        .map_err(|_| DriverError::Timeout {
            during: "connecting",
            timeout_ms: timeout.as_millis() as u64,
        })?
        .map_err(|source| DriverError::Connect { addr, source })
}
