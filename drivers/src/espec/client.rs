//! The Espec driver: CR LF request/reply lines over TCP or a serial port, each request
//! prefixed with the controller's address on an RS-485 bus.

use super::wire::{self, ModeSetting, Request, TempSetting, TypeInfo, WireError};
use crate::DriverError;
use crate::chamber::{Chamber, ChamberReading};
use crate::scpi::client::{BoxStream, LineTransport, open};
use crate::transport::Endpoint;
use std::time::Duration;

/// How to talk to one controller.
#[derive(Debug, Clone)]
pub struct EspecOptions {
    /// Bound on each exchange; past it the link counts as lost.
    pub timeout: Duration,
    /// The controller's RS-485 address, put before every request as `ADDR,`; `None` on TCP
    /// and RS-232.
    pub address: Option<u8>,
}

impl Default for EspecOptions {
    fn default() -> EspecOptions {
        EspecOptions {
            timeout: Duration::from_secs(2),
            address: None,
        }
    }
}

/// What the controller says it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The firmware, as `ROM?` names it.
    pub rom: String,
    /// Sensors, controller and highest temperature, from `TYPE?`.
    pub kind: TypeInfo,
}

/// A connected Espec P300 / SCP-220 controller.
pub struct EspecClient {
    /// CR LF lines over the socket or serial port.
    link: LineTransport<BoxStream>,
    /// Where the controller is, for reconnecting.
    endpoint: Endpoint,
    /// Timeout and address.
    options: EspecOptions,
    /// What the controller said it is on connecting; a reconnect must find the same.
    identity: Identity,
}

fn bad_reply(during: &'static str) -> impl Fn(WireError) -> DriverError {
    move |e| DriverError::BadReply {
        during,
        message: e.0,
    }
}

/// Sends one request and returns its reply: an `NA:` reply becomes [`DriverError::Refused`]
/// with the controller's reason, a command's reply must acknowledge it.
async fn exchange(
    link: &mut LineTransport<BoxStream>,
    address: Option<u8>,
    request: Request,
    during: &'static str,
) -> Result<String, DriverError> {
    let body = request.encode();
    let reply = link.query(&wire::frame(address, &body), during).await?;
    let reply = wire::check_reply(&reply).map_err(|na| DriverError::Refused {
        during,
        message: format!(
            "{}{} ({}) in reply to {body:?}",
            wire::REFUSED,
            na.text(),
            na.meaning()
        ),
    })?;
    if request.is_command() && !wire::acknowledges(reply, &body) {
        return Err(DriverError::BadReply {
            during,
            message: format!("{body:?} answered {reply:?}, neither OK nor its echo"),
        });
    }
    Ok(reply.to_string())
}

async fn identify(
    link: &mut LineTransport<BoxStream>,
    address: Option<u8>,
) -> Result<Identity, DriverError> {
    let during = "identifying the chamber";
    let rom = exchange(link, address, Request::Rom, during).await?;
    let kind = exchange(link, address, Request::Type, during).await?;
    Ok(Identity {
        rom: wire::parse_rom(&rom).map_err(bad_reply(during))?,
        kind: wire::parse_type(&kind).map_err(bad_reply(during))?,
    })
}

impl EspecClient {
    /// Connects and identifies the controller (`ROM?`, `TYPE?`).
    pub async fn connect(
        endpoint: impl Into<Endpoint>,
        options: EspecOptions,
    ) -> Result<EspecClient, DriverError> {
        let endpoint = endpoint.into();
        let stream = open(&endpoint, options.timeout).await?;
        let mut link = LineTransport::new(stream, wire::TERMINATOR, options.timeout);
        let identity = identify(&mut link, options.address).await?;
        Ok(EspecClient {
            link,
            endpoint,
            options,
            identity,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    async fn exchange(
        &mut self,
        request: Request,
        during: &'static str,
    ) -> Result<String, DriverError> {
        exchange(&mut self.link, self.options.address, request, during).await
    }
}

impl Chamber for EspecClient {
    /// `MON?` and `TEMP?`, and `ALARM?` only while `MON?` counts alarms.
    async fn read(&mut self) -> Result<ChamberReading, DriverError> {
        let during = "reading the chamber";
        let reply = self
            .exchange(Request::Monitor { detail: false }, during)
            .await?;
        let monitor = wire::parse_monitor(&reply).map_err(bad_reply(during))?;
        let reply = self.exchange(Request::Temperature, during).await?;
        let temp = wire::parse_loop(&reply).map_err(bad_reply(during))?;
        let set_point_c = temp.set_point.ok_or_else(|| DriverError::BadReply {
            during,
            message: format!("TEMP? gives no set point: {reply:?}"),
        })?;
        let alarms = if monitor.alarms > 0 {
            let reply = self.exchange(Request::Alarms, during).await?;
            wire::parse_alarms(&reply).map_err(bad_reply(during))?
        } else {
            Vec::new()
        };
        Ok(ChamberReading {
            temperature_c: monitor.temperature_c,
            set_point_c,
            humidity_pct: monitor.humidity_pct,
            running: monitor.mode.regulating(),
            alarms,
        })
    }

    async fn set_temperature(&mut self, temperature_c: f64) -> Result<(), DriverError> {
        if !temperature_c.is_finite() {
            return Err(DriverError::Unsupported(format!(
                "a set point of {temperature_c} degC"
            )));
        }
        let setting = TempSetting {
            set_point_c: Some(temperature_c),
            upper_c: None,
            lower_c: None,
        };
        self.exchange(
            Request::SetTemperature(setting),
            "setting the temperature set point",
        )
        .await
        .map(drop)
    }

    async fn start(&mut self) -> Result<(), DriverError> {
        self.exchange(
            Request::SetMode(ModeSetting::Constant),
            "starting constant mode",
        )
        .await
        .map(drop)
    }

    /// Standby rather than off: the controller stays on and answers, it only stops regulating.
    async fn stop(&mut self) -> Result<(), DriverError> {
        self.exchange(Request::SetMode(ModeSetting::Standby), "going to standby")
            .await
            .map(drop)
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        // Close the old stream first: a serial port opens exclusively. A detached stand-in
        // keeps the transport valid (and failing) if the reopen fails.
        let (detached, _) = tokio::io::duplex(1);
        self.link = LineTransport::new(Box::new(detached), wire::TERMINATOR, self.options.timeout);
        let stream = open(&self.endpoint, self.options.timeout).await?;
        self.link = LineTransport::new(stream, wire::TERMINATOR, self.options.timeout);
        let identity = identify(&mut self.link, self.options.address).await?;
        if identity != self.identity {
            return Err(DriverError::Identity(format!(
                "after reconnecting, {} answers as {:?}, not {:?}",
                self.endpoint, identity, self.identity
            )));
        }
        Ok(())
    }
}
