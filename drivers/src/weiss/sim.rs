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
//! through the [`SimHandle`]: a cut link (as a pulled LAN cable: open connections close and new
//! ones are closed on arrival), an alarm, a runaway heater or cooler, and refused requests.
//!
//! [`ThermalModel`]: crate::chamber::thermal::ThermalModel

use super::wire::{self, Refusal, Request};
use crate::Clock;
use crate::chamber::sim::{ChamberSim, ChamberState, SimCore, chamber_handle_methods};
use crate::chamber::thermal::{Air, ROOM_C, ThermalParams};
use crate::transport::lock;
use crate::transport::network::{Link, accept_while_linked, read_until_unless_cut};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWriteExt, BufReader};
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
    /// Set point, manual mode (the model running), the air, the alarm (status +8) and
    /// refused requests (refused with a code).
    core: SimCore<Refusal>,
    /// The 99997 reply.
    info: String,
}

impl ChamberState for Controller {
    type Refusal = Refusal;

    fn core(&mut self) -> &mut SimCore<Refusal> {
        &mut self.core
    }
}

impl Controller {
    /// Answers one request frame.
    fn handle(&mut self, frame: &[u8]) -> Vec<u8> {
        self.core.advance();
        if let Some(refusal) = self.core.refusal() {
            return wire::encode_refusal(refusal);
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
        let model = &mut self.core.model;
        Ok(match request {
            Request::SetSetPoint { variable, value } => {
                temperature(variable)?;
                model
                    .set_set_point(value)
                    .map_err(|_| Refusal::BadParameters)?;
                wire::encode_success(&[])
            }
            Request::GetSetPoint { variable } => {
                temperature(variable)?;
                wire::encode_value(model.set_point_c())
            }
            Request::GetActual { variable } => {
                temperature(variable)?;
                wire::encode_value(model.temperature_c())
            }
            Request::Status => wire::encode_status(model.running(), self.core.alarm().is_some()),
            Request::ManualMode { on } => {
                model.set_running(on);
                wire::encode_success(&[])
            }
            Request::ProgramStart { .. } => return Err(Refusal::BadParameters),
            Request::ProgramStop => wire::encode_success(&[]),
            Request::Info => wire::encode_success(std::slice::from_ref(&self.info)),
        })
    }
}

/// Starts simulated Weiss controllers.
pub struct WeissSim;

impl WeissSim {
    /// Serves a simulated controller on `listener` until the handle drops; manual mode starts
    /// stopped. Must be called inside a tokio runtime.
    pub fn spawn(listener: TcpListener, config: SimConfig, clock: Clock) -> io::Result<SimHandle> {
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(Controller {
            core: SimCore::new(config.thermal, config.air, clock, Refusal::ReadFailed),
            info: config.info,
        }));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let link = Link::up();
        let served = Arc::clone(&state);
        tokio::spawn(accept_while_linked(
            listener,
            link.watch(),
            stop_rx,
            "weiss sim",
            move |stream, link| {
                tokio::spawn(connection(stream, Arc::clone(&served), link));
            },
        ));
        Ok(SimHandle {
            addr,
            sim: ChamberSim::new(state, link, stop_tx),
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
        // A cut link (or a dropped handle) ends the connection, closing the socket; so does a
        // frame this long, which is not SimServ.
        if !read_until_unless_cut(&mut rd, wire::CR, wire::MAX_FRAME, &mut buf, &mut link).await
            || buf.last() != Some(&wire::CR)
        {
            return;
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
    /// The controller behind every connection, its link and its server.
    sim: ChamberSim<Controller>,
}

impl SimHandle {
    chamber_handle_methods!(Refusal);

    /// Where the SimServ server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether manual mode is running.
    pub fn running(&self) -> bool {
        self.sim.running()
    }

    /// Raises an alarm with the text the controller's display would show, or clears it with
    /// `None`. SimServ as the facts describe it reports only that there is one (status +8),
    /// so the text goes to the log.
    pub fn set_alarm(&self, text: Option<&str>) {
        if let Some(text) = text {
            tracing::info!("weiss sim: alarm raised: {text}");
        }
        self.sim.set_alarm(text);
    }
}
