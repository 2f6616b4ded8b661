//! A simulated Espec P300 controller on a TCP listener or a pseudo-terminal, moving a
//! chamber's air with a [`ThermalModel`].
//!
//! It keeps what a driver depends on: `ROM?` / `TYPE?` identify it, `MON?` gives temperature,
//! humidity, mode and alarm count in one line, commands are answered `OK:` + the command (the
//! facts leave the real text open), and refusals use the controller's reasons: `CMD ERR` for
//! an unknown request, `PARA ERR` for a bad parameter, `DATA OUT OF RANGE` for a set point or
//! limit outside the chamber's range. With an RS-485 address configured it answers only
//! requests carrying it, keeps silent for other addresses (another controller on the bus) and
//! answers `ADDR ERR` to requests without one (an interpretation). Programs are not
//! simulated: `MODE,RUN n` gets `PARA ERR`.
//!
//! The air moves to [`Clock::now`] on every request and handle call. Faults are injected
//! through the [`SimHandle`]: a cut link, an alarm (reported as a code by `ALARM?` and counted
//! by `MON?`), a runaway heater or cooler, and refused requests.

use super::wire::{self, LoopStatus, Mode, Monitor, Na, Request, TypeInfo};
use crate::Clock;
use crate::chamber::thermal::{Air, ROOM_C, ThermalModel, ThermalParams};
use crate::transport::Endpoint;
use crate::transport::network::accept_while_linked;
#[cfg(unix)]
use crate::transport::{
    line::{Line, LineControl},
    pty::Pty,
};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// What the simulated chamber is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How the controller moves the air; its range bounds set points and limits.
    pub thermal: ThermalParams,
    /// The air inside, shared with the simulated cells placed in the chamber.
    pub air: Air,
    /// The `ROM?` reply.
    pub rom: String,
    /// The controller as `TYPE?` names it.
    pub controller: String,
    /// Relative humidity the chamber reports, %, held constant; `None` for a
    /// temperature-only chamber (empty humidity field in `MON?`, `HUMI?` refused).
    pub humidity_pct: Option<f64>,
    /// The RS-485 address the controller answers to; `None` answers every request, with an
    /// address or without.
    pub address: Option<u8>,
}

impl SimConfig {
    /// A temperature-only P300 bench-top chamber ([`ThermalParams::default`]) acting on
    /// `air`, without an address.
    pub fn new(air: Air) -> SimConfig {
        SimConfig {
            thermal: ThermalParams::default(),
            air,
            rom: "P300 VER 1.10 (simulated)".into(),
            controller: "P300".into(),
            humidity_pct: None,
            address: None,
        }
    }

    /// The same in air at the room temperature, for a chamber with nothing shared.
    pub fn standalone() -> SimConfig {
        SimConfig::new(Air::new(ROOM_C))
    }
}

/// The controller's state behind every connection.
struct Controller {
    /// Where the air's time comes from.
    clock: Clock,
    /// Set point, regulation and the air.
    model: ThermalModel,
    /// What the chamber is (its `thermal` and `air` live on in `model`).
    config: SimConfig,
    /// What `MON?` and `MODE?` report; the model regulates while it is constant.
    mode: Mode,
    /// Upper and lower alarm limits, degC (`TEMP,H..`, `TEMP,L..`), reported by `TEMP?`.
    limits_c: (f64, f64),
    /// Alarm codes raised now, reported by `ALARM?`.
    alarms: Vec<String>,
    /// How many of the next requests are refused...
    failing: u32,
    /// ...and with what reason.
    fail_with: Na,
}

impl Controller {
    /// A controller in standby, its limits at the ends of the range, at clock time now.
    fn new(config: SimConfig, clock: Clock) -> Controller {
        let (lo, hi) = config.thermal.range_c;
        Controller {
            model: ThermalModel::new(config.thermal.clone(), config.air.clone(), clock.now()),
            clock,
            config,
            mode: Mode::Standby,
            limits_c: (hi, lo),
            alarms: Vec::new(),
            failing: 0,
            fail_with: Na::ProtectOn,
        }
    }

    fn advance(&mut self) {
        self.model.advance(self.clock.now());
    }

    /// Answers one request line; `None` when it is addressed to another controller.
    fn handle(&mut self, line: &str) -> Option<String> {
        self.advance();
        let (address, body) = match wire::split_address(line) {
            Ok(split) => split,
            Err(na) => return Some(wire::encode_refusal(&na)),
        };
        match (self.config.address, address) {
            (Some(mine), Some(theirs)) if mine != theirs => return None,
            (Some(_), None) => return Some(wire::encode_refusal(&Na::AddrErr)),
            _ => {}
        }
        if self.failing > 0 {
            self.failing -= 1;
            return Some(wire::encode_refusal(&self.fail_with));
        }
        let reply = Request::parse(body).and_then(|request| self.execute(request, body.trim()));
        Some(reply.unwrap_or_else(|na| wire::encode_refusal(&na)))
    }

    fn execute(&mut self, request: Request, body: &str) -> Result<String, Na> {
        let (lo, hi) = self.model.params.range_c;
        let temperature_c = self.model.temperature_c();
        Ok(match request {
            Request::Rom => self.config.rom.clone(),
            Request::Type => wire::encode_type(&TypeInfo {
                dry_sensor: "T".into(),
                wet_sensor: self.config.humidity_pct.map(|_| "T".into()),
                controller: self.config.controller.clone(),
                max_c: hi,
            }),
            Request::Mode { .. } => wire::encode_mode(self.mode),
            Request::Monitor => wire::encode_monitor(&Monitor {
                temperature_c,
                humidity_pct: self.config.humidity_pct,
                mode: self.mode,
                alarms: self.alarms.len() as u32,
            }),
            Request::Temperature => wire::encode_loop(&LoopStatus {
                process: temperature_c,
                set_point: Some(self.model.set_point_c()),
                upper: self.limits_c.0,
                lower: self.limits_c.1,
            }),
            // CONT NOT READY-1 is what third-party drivers report for "no humidity".
            Request::Humidity => match self.config.humidity_pct {
                Some(h) => wire::encode_loop(&LoopStatus {
                    process: h,
                    set_point: Some(h),
                    upper: 100.0,
                    lower: 0.0,
                }),
                None => return Err(Na::ContNotReady(1)),
            },
            Request::Alarms => wire::encode_alarms(&self.alarms),
            Request::SetMode(setting) => {
                self.mode = setting.mode();
                self.model.set_running(self.mode.regulating());
                wire::encode_acceptance(body)
            }
            Request::SetTemperature(t) => {
                let upper = t.upper_c.unwrap_or(self.limits_c.0);
                let lower = t.lower_c.unwrap_or(self.limits_c.1);
                let in_range = |v: f64| (lo..=hi).contains(&v);
                if !(in_range(upper) && in_range(lower) && lower < upper) {
                    return Err(Na::DataOutOfRange);
                }
                if let Some(s) = t.set_point_c {
                    self.model
                        .set_set_point(s)
                        .map_err(|_| Na::DataOutOfRange)?;
                }
                self.limits_c = (upper, lower);
                wire::encode_acceptance(body)
            }
            Request::PowerOn => {
                if self.mode == Mode::Off {
                    self.mode = Mode::Standby;
                }
                wire::encode_acceptance(body)
            }
        })
    }
}

fn lock(state: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a simulated controller serves.
pub enum SimPort {
    /// Its LAN interface.
    Tcp(TcpListener),
    /// A serial line on a pseudo-terminal (the client opens its slave path at any baud rate).
    #[cfg(unix)]
    Pty(Pty),
}

impl From<TcpListener> for SimPort {
    fn from(listener: TcpListener) -> SimPort {
        SimPort::Tcp(listener)
    }
}

#[cfg(unix)]
impl From<Pty> for SimPort {
    fn from(pty: Pty) -> SimPort {
        SimPort::Pty(pty)
    }
}

/// Starts simulated Espec controllers.
pub struct EspecSim;

impl EspecSim {
    /// Serves a simulated controller on `port` until the handle drops; the chamber starts in
    /// standby. Must be called inside a tokio runtime.
    pub fn spawn(
        port: impl Into<SimPort>,
        config: SimConfig,
        clock: Clock,
    ) -> io::Result<SimHandle> {
        let state = Arc::new(Mutex::new(Controller::new(config, clock)));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (endpoint, link) = match port.into() {
            SimPort::Tcp(listener) => {
                let endpoint = Endpoint::Tcp(listener.local_addr()?);
                let (link_tx, link_rx) = watch::channel(true);
                tokio::spawn(serve(listener, Arc::clone(&state), link_rx, stop_rx));
                (endpoint, LinkSwitch::Network(link_tx))
            }
            #[cfg(unix)]
            SimPort::Pty(pty) => {
                let line = Line::open(pty)?;
                let endpoint = Endpoint::Serial {
                    path: line.path().to_string_lossy().into_owned(),
                    baud: wire::DEFAULT_BAUD,
                };
                let Line {
                    device,
                    control,
                    relay,
                    ..
                } = line;
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    // A serial line has no connection to close: the relay loses bytes while
                    // it is cut, and the session goes on.
                    let (_up, never_cut) = watch::channel(true);
                    tokio::select! {
                        _ = stop_rx => {}
                        r = relay => if let Err(e) = r {
                            tracing::warn!("espec sim line stopped: {e}");
                        },
                        () = connection(device, state, never_cut) => {}
                    }
                });
                (endpoint, LinkSwitch::Line(control))
            }
        };
        Ok(SimHandle {
            endpoint,
            state,
            link,
            _stop: stop_tx,
        })
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<Mutex<Controller>>,
    link: watch::Receiver<bool>,
    stop: oneshot::Receiver<()>,
) {
    let links = link.clone();
    accept_while_linked(listener, link, stop, "espec sim", |stream| {
        tokio::spawn(connection(stream, Arc::clone(&state), links.clone()));
    })
    .await
}

async fn connection(
    stream: impl AsyncRead + AsyncWrite + Send + 'static,
    state: Arc<Mutex<Controller>>,
    mut link: watch::Receiver<bool>,
) {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    // Inside an overlong line: its rest is dropped up to the next line end.
    let mut skipping = false;
    loop {
        buf.clear();
        // A cut link (or a dropped handle) ends the connection, closing the socket.
        let mut limited = (&mut rd).take(wire::MAX_LINE as u64);
        let read = tokio::select! {
            r = limited.read_until(b'\n', &mut buf) => r,
            _ = link.wait_for(|up| !up) => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let complete = buf.last() == Some(&b'\n');
        if std::mem::replace(&mut skipping, !complete) || !complete {
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        let Some(reply) = lock(&state).handle(line.trim_end_matches(['\r', '\n'])) else {
            continue;
        };
        let out = format!("{reply}{}", wire::TERMINATOR);
        if wr.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Where a link fault is switched.
enum LinkSwitch {
    /// Whether the controller is on the network; connections watch it.
    Network(watch::Sender<bool>),
    /// The simulated serial cable.
    #[cfg(unix)]
    Line(LineControl),
}

/// A running controller; dropping it stops its server.
pub struct SimHandle {
    /// Where a client reaches the controller.
    endpoint: Endpoint,
    /// The controller behind every connection.
    state: Arc<Mutex<Controller>>,
    link: LinkSwitch,
    /// Dropped with the handle, which stops the server.
    _stop: oneshot::Sender<()>,
}

impl SimHandle {
    /// Where a client reaches the controller.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// The air temperature now, degC.
    pub fn temperature_c(&self) -> f64 {
        let mut c = lock(&self.state);
        c.advance();
        c.model.temperature_c()
    }

    /// The set point in force, degC.
    pub fn set_point_c(&self) -> f64 {
        lock(&self.state).model.set_point_c()
    }

    /// Whether the controller regulates (constant mode).
    pub fn running(&self) -> bool {
        lock(&self.state).model.running()
    }

    /// The chamber's air, to put simulated cells in it.
    pub fn air(&self) -> Air {
        lock(&self.state).model.air().clone()
    }

    /// Pulls the cable: on the network open connections close and new ones are closed on
    /// arrival; on a serial line requests and replies are lost. The chamber keeps regulating.
    pub fn cut_link(&self) {
        match &self.link {
            LinkSwitch::Network(link) => {
                link.send_replace(false);
            }
            #[cfg(unix)]
            LinkSwitch::Line(line) => line.cut(),
        }
    }

    /// Plugs the cable back in, on the same address or port.
    pub fn restore_link(&self) {
        match &self.link {
            LinkSwitch::Network(link) => {
                link.send_replace(true);
            }
            #[cfg(unix)]
            LinkSwitch::Line(line) => line.restore(),
        }
    }

    /// Raises an alarm with the controller's `code` (a number on real controllers; commas
    /// and line breaks become spaces so the reply stays one line of fields), or clears every
    /// alarm with `None`.
    pub fn set_alarm(&self, code: Option<&str>) {
        let mut c = lock(&self.state);
        c.alarms = code
            .map(|code| code.replace([',', '\r', '\n'], " ").trim().to_string())
            .filter(|code| !code.is_empty())
            .into_iter()
            .collect();
    }

    /// Makes the air run away at `c_per_min` whatever the set point (a stuck heater when
    /// positive, a stuck cooler when negative), or behave again with `None`.
    pub fn set_runaway(&self, c_per_min: Option<f64>) {
        let mut c = lock(&self.state);
        c.advance();
        c.model.set_runaway(c_per_min);
    }

    /// Refuses the next `n` requests, whatever they are, with `NA:` and `reason`.
    pub fn fail_next(&self, n: u32, reason: Na) {
        let mut c = lock(&self.state);
        c.failing = n;
        c.fail_with = reason;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(config: SimConfig) -> Controller {
        Controller::new(config, Clock::manual())
    }

    #[test]
    fn an_addressed_controller_answers_its_address_only() {
        let mut c = controller(SimConfig {
            address: Some(2),
            ..SimConfig::standalone()
        });
        assert_eq!(c.handle("2,MODE?").as_deref(), Some("STANDBY"));
        assert_eq!(c.handle("3,MODE?"), None);
        assert_eq!(c.handle("MODE?").as_deref(), Some("NA:ADDR ERR"));
        let mut c = controller(SimConfig::standalone());
        assert_eq!(c.handle("7,MODE?").as_deref(), Some("STANDBY"));
    }

    #[test]
    fn commands_are_acknowledged_and_limits_bound_the_set_point() {
        let mut c = controller(SimConfig::standalone());
        assert_eq!(c.handle("TEMP, S45.0").as_deref(), Some("OK:TEMP, S45.0"));
        assert_eq!(c.handle("TEMP?").as_deref(), Some("23.0,45.0,150.0,-40.0"));
        assert_eq!(
            c.handle("TEMP,S200").as_deref(),
            Some("NA:DATA OUT OF RANGE")
        );
        assert_eq!(
            c.handle("TEMP,H10 L20").as_deref(),
            Some("NA:DATA OUT OF RANGE")
        );
        assert_eq!(c.handle("HUMI?").as_deref(), Some("NA:CONT NOT READY-1"));
        assert_eq!(c.handle("MODE,OFF").as_deref(), Some("OK:MODE,OFF"));
        assert_eq!(c.handle("POWER,ON").as_deref(), Some("OK:POWER,ON"));
        assert_eq!(c.handle("MON?").as_deref(), Some("23.0,,STANDBY,0"));
    }
}
