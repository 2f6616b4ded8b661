//! A simulated Weiss / Vötsch controller serving SimServ on a TCP listener, moving a
//! chamber's air with a [`ThermalModel`].
//!
//! It keeps what a driver depends on: 99997 describes it, 11001/11002/11004 set and read the
//! temperature (variable 1; the chamber has no humidity, so other variables are -6), 10012
//! reports 1 idle or 3 running, +8 while an alarm is raised, 14001 starts and stops manual
//! mode. A set point outside the chamber's range is -6, an unknown command -5. The simulated
//! controller stores no programs: 19014 is -6 for any program, 19015 has nothing to stop.
//! Commands are answered with a bare `1`; replies end in CR LF.
//!
//! The air moves to [`Clock::now`] on every request and handle call. Faults are injected
//! through the [`SimHandle`]: a cut link, an alarm, a runaway heater or cooler, and refused
//! requests.

use super::wire::{self, Refusal, Request};
use crate::Clock;
use crate::chamber::thermal::{Air, ROOM_C, ThermalModel, ThermalParams};
use crate::transport::network::accept_while_linked;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// What the simulated chamber is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How the controller moves the air; its range bounds the set point.
    pub thermal: ThermalParams,
    /// The air inside, shared with the simulated cells placed in the chamber.
    pub air: Air,
    /// The 99997 reply.
    pub info: String,
}

impl SimConfig {
    /// A temperature-only bench-top chamber ([`ThermalParams::default`]) acting on `air`.
    pub fn new(air: Air) -> SimConfig {
        SimConfig {
            thermal: ThermalParams::default(),
            air,
            info: "Weiss Technik LabEvent T/64/40 SimServ (simulated)".into(),
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
    /// Set point, manual mode and the air.
    model: ThermalModel,
    /// The 99997 reply.
    info: String,
    /// Whether an alarm is raised (status +8).
    alarm: bool,
    /// How many of the next requests are refused...
    failing: u32,
    /// ...and with what code.
    fail_with: Refusal,
}

impl Controller {
    fn advance(&mut self) {
        self.model.advance(self.clock.now());
    }

    /// Answers one request frame.
    fn handle(&mut self, frame: &[u8]) -> Vec<u8> {
        self.advance();
        if self.failing > 0 {
            self.failing -= 1;
            return wire::encode_refusal(self.fail_with);
        }
        Request::decode(frame)
            .and_then(|request| self.execute(request))
            .unwrap_or_else(wire::encode_refusal)
    }

    fn execute(&mut self, request: Request) -> Result<Vec<u8>, Refusal> {
        let temperature = |variable| {
            if variable == wire::TEMPERATURE {
                Ok(())
            } else {
                Err(Refusal::BadParameters)
            }
        };
        Ok(match request {
            Request::SetSetPoint { variable, value } => {
                temperature(variable)?;
                self.model
                    .set_set_point(value)
                    .map_err(|_| Refusal::BadParameters)?;
                wire::encode_success(&[])
            }
            Request::GetSetPoint { variable } => {
                temperature(variable)?;
                wire::encode_value(self.model.set_point_c())
            }
            Request::GetActual { variable } => {
                temperature(variable)?;
                wire::encode_value(self.model.temperature_c())
            }
            Request::Status => wire::encode_status(self.model.running(), self.alarm),
            Request::ManualMode { on } => {
                self.model.set_running(on);
                wire::encode_success(&[])
            }
            Request::ProgramStart { .. } => return Err(Refusal::BadParameters),
            Request::ProgramStop => wire::encode_success(&[]),
            Request::Info => wire::encode_success(std::slice::from_ref(&self.info)),
        })
    }
}

fn lock(state: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts simulated Weiss controllers.
pub struct WeissSim;

impl WeissSim {
    /// Serves a simulated controller on `listener` until the handle drops; manual mode starts
    /// stopped. Must be called inside a tokio runtime.
    pub fn spawn(listener: TcpListener, config: SimConfig, clock: Clock) -> io::Result<SimHandle> {
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(Controller {
            model: ThermalModel::new(config.thermal, config.air, clock.now()),
            clock,
            info: config.info,
            alarm: false,
            failing: 0,
            fail_with: Refusal::ReadFailed,
        }));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (link_tx, link_rx) = watch::channel(true);
        let links = link_rx.clone();
        let served = Arc::clone(&state);
        tokio::spawn(async move {
            accept_while_linked(listener, link_rx, stop_rx, "weiss sim", |stream| {
                tokio::spawn(connection(stream, Arc::clone(&served), links.clone()));
            })
            .await
        });
        Ok(SimHandle {
            addr,
            state,
            link: link_tx,
            _stop: stop_tx,
        })
    }
}

async fn connection(
    stream: TcpStream,
    state: Arc<Mutex<Controller>>,
    mut link: watch::Receiver<bool>,
) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // A cut link (or a dropped handle) ends the connection, closing the socket.
        let mut limited = (&mut rd).take(wire::MAX_FRAME as u64);
        let read = tokio::select! {
            r = limited.read_until(wire::CR, &mut buf) => r,
            _ = link.wait_for(|up| !up) => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            // Not SimServ: a frame this long has no end in sight.
            Ok(_) if buf.last() != Some(&wire::CR) => return,
            Ok(_) => {}
        }
        // A client ending frames with CR LF leaves the LF before the next frame.
        let frame = buf.strip_prefix(b"\n").unwrap_or(&buf);
        if frame == [wire::CR] {
            continue;
        }
        let reply = lock(&state).handle(frame);
        if wr.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// A running controller; dropping it stops its server.
pub struct SimHandle {
    /// Where the SimServ server listens.
    addr: SocketAddr,
    /// The controller behind every connection.
    state: Arc<Mutex<Controller>>,
    /// Whether the controller is on the network; connections watch it.
    link: watch::Sender<bool>,
    /// Dropped with the handle, which stops the server.
    _stop: oneshot::Sender<()>,
}

impl SimHandle {
    /// Where the SimServ server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

    /// Whether manual mode is running.
    pub fn running(&self) -> bool {
        lock(&self.state).model.running()
    }

    /// The chamber's air, to put simulated cells in it.
    pub fn air(&self) -> Air {
        lock(&self.state).model.air().clone()
    }

    /// Takes the controller off the network, as a pulled LAN cable does: open connections
    /// close and new ones are closed on arrival. The chamber keeps regulating.
    pub fn cut_link(&self) {
        self.link.send_replace(false);
    }

    /// Puts the controller back on the network, on the same address.
    pub fn restore_link(&self) {
        self.link.send_replace(true);
    }

    /// Raises an alarm with the text the controller's display would show, or clears it with
    /// `None`. SimServ as the facts describe it reports only that there is one (status +8),
    /// so the text goes to the log.
    pub fn set_alarm(&self, text: Option<&str>) {
        if let Some(text) = text {
            tracing::info!("weiss sim: alarm raised: {text}");
        }
        lock(&self.state).alarm = text.is_some();
    }

    /// Makes the air run away at `c_per_min` whatever the set point (a stuck heater when
    /// positive, a stuck cooler when negative), or behave again with `None`.
    pub fn set_runaway(&self, c_per_min: Option<f64>) {
        let mut c = lock(&self.state);
        c.advance();
        c.model.set_runaway(c_per_min);
    }

    /// Refuses the next `n` requests, whatever they are, with `refusal`'s code.
    pub fn fail_next(&self, n: u32, refusal: Refusal) {
        let mut c = lock(&self.state);
        c.failing = n;
        c.fail_with = refusal;
    }
}
