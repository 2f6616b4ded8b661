//! A simulated Binder MB1 controller: RTU frames (the codec in [`super::wire`]) on a
//! pseudo-terminal, as on its RS-422 port, or on TCP, as behind the serial-to-TCP bridge of
//! an Ethernet model. Its chamber's air is a [`ThermalModel`], advanced to the clock's time on
//! every request.
//!
//! It keeps the semantics a driver depends on: function 6 (and every function but 3 and 0x10)
//! is refused with exception 1, floats go word-swapped both ways, measured values and the set
//! points in force cannot be written (exception 8, write denied), set points outside the range
//! are refused (exception 3), a read or write of an address it does not know is refused
//! (exception 2), and requests for another unit go unanswered. Basic mode regulates to the
//! basic set point, manual mode to the manual set point; program mode is refused (exception 3:
//! the simulator holds no programs). Broken frames are skipped a byte at a time until a frame
//! decodes again, as a device resynchronises on a noisy line.
//!
//! Faults are injected through the [`SimHandle`]: a cut link (on a serial line bytes are lost
//! both ways; on the bridge connections close, and new ones are closed on arrival), exception
//! replies, corrupted replies (a broken CRC), the alarm word, and a runaway heater or
//! compressor.
//!
//! [`ThermalModel`]: crate::chamber::thermal::ThermalModel

use super::wire::{self, Exception, Reply, Request, mode, reg};
use crate::Clock;
use crate::chamber::sim::{ChamberSim, ChamberState, SimCore, chamber_handle_methods};
use crate::chamber::thermal::{Air, ThermalParams};
use crate::transport::lock;
use crate::transport::network::unless_cut;
use crate::transport::{Endpoint, SimPort};
use std::io;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

/// What the simulated chamber is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How the controller moves the air; its range bounds both set points.
    pub thermal: ThermalParams,
    /// The air inside the chamber, shared with the simulated cells in it.
    pub air: Air,
    /// Unit address on the line; requests for other units go unanswered.
    pub unit: u8,
    /// Relative humidity the chamber holds, %, or `None` for a chamber without humidity
    /// control (its humidity registers are refused).
    pub humidity_pct: Option<f64>,
    /// The set point of basic mode, degC: what the chamber holds until a client starts it.
    pub basic_set_point_c: f64,
}

impl SimConfig {
    /// A bench-top climate chamber ([`ThermalParams::default`]) on unit 1 around `air`,
    /// holding 50 % humidity and a basic set point of 25 degC.
    pub fn new(air: Air) -> SimConfig {
        SimConfig {
            thermal: ThermalParams::default(),
            air,
            unit: wire::DEFAULT_UNIT,
            humidity_pct: Some(50.0),
            basic_set_point_c: 25.0,
        }
    }
}

struct SimState {
    /// The set point in force, the chamber's air, the alarm (the alarm word reads 1 while it
    /// is raised) and requests answered with an exception.
    core: SimCore<Exception>,
    /// The unit address answered.
    unit: u8,
    /// Humidity held, %, if the chamber has humidity control.
    humidity_pct: Option<f64>,
    /// Raw mode register ([`mode`]).
    mode: u16,
    /// Set point of manual mode, degC.
    manual_set_point_c: f64,
    /// Set point of basic mode, degC.
    basic_set_point_c: f64,
    /// Requests for this unit, by function code.
    requests: [u64; 256],
    /// How many of the next replies go out with a broken CRC.
    corrupting: u32,
}

impl ChamberState for SimState {
    type Refusal = Exception;

    fn core(&mut self) -> &mut SimCore<Exception> {
        &mut self.core
    }
}

impl SimState {
    /// Points the model at the set point of the mode in force; both set points were checked
    /// against the range when written.
    fn apply_mode(&mut self) {
        let set_point = if self.mode == mode::MANUAL {
            self.manual_set_point_c
        } else {
            self.basic_set_point_c
        };
        let _ = self.core.model.set_set_point(set_point);
        self.core.model.set_running(true);
    }

    /// The floats the controller shows: (first register, value), `None` where it has none.
    fn floats(&self) -> [(u16, Option<f64>); 6] {
        [
            (reg::TEMPERATURE, Some(self.core.model.temperature_c())),
            (reg::HUMIDITY, self.humidity_pct),
            (reg::SET_POINT, Some(self.core.model.set_point_c())),
            (reg::HUMIDITY_SET_POINT, self.humidity_pct),
            (reg::MANUAL_SET_POINT, Some(self.manual_set_point_c)),
            (reg::BASIC_SET_POINT, Some(self.basic_set_point_c)),
        ]
    }

    fn read_register(&self, addr: u16) -> Result<u16, Exception> {
        match addr {
            reg::MODE => return Ok(self.mode),
            // The (assumed) alarm word, 0 = none.
            reg::ALARM => return Ok(u16::from(self.core.alarm().is_some())),
            _ => {}
        }
        let (start, value) = self
            .floats()
            .into_iter()
            .find(|(start, _)| (*start..start + 2).contains(&addr))
            .ok_or(Exception::IllegalDataAddress)?;
        let value = value.ok_or(Exception::IllegalDataAddress)?;
        Ok(wire::encode_float(value as f32)[usize::from(addr - start)])
    }

    /// Whether `addr` is one of the registers the controller measures or derives.
    fn read_only(&self, addr: u16) -> bool {
        let floats = [
            reg::TEMPERATURE,
            reg::HUMIDITY,
            reg::SET_POINT,
            reg::HUMIDITY_SET_POINT,
        ];
        let listed = addr == reg::ALARM || floats.iter().any(|&f| (f..f + 2).contains(&addr));
        listed && self.read_register(addr).is_ok()
    }

    /// Writes `words` from `start`: the mode word alone, or one set point float.
    fn write(&mut self, start: u16, words: &[u16]) -> Result<(), Exception> {
        match (start, words) {
            (reg::MODE, &[word]) => {
                if word != mode::MANUAL && word != mode::BASIC {
                    return Err(Exception::IllegalDataValue);
                }
                self.mode = word;
            }
            (reg::MANUAL_SET_POINT | reg::BASIC_SET_POINT, &[low, high]) => {
                let value = f64::from(wire::decode_float([low, high]));
                let (lo, hi) = self.core.model.params.range_c;
                if !(lo..=hi).contains(&value) {
                    return Err(Exception::IllegalDataValue);
                }
                if start == reg::MANUAL_SET_POINT {
                    self.manual_set_point_c = value;
                } else {
                    self.basic_set_point_c = value;
                }
            }
            // What the controller measures or derives is not for writing.
            _ if self.read_only(start) => return Err(Exception::WriteDenied),
            _ => return Err(Exception::IllegalDataAddress),
        }
        self.apply_mode();
        Ok(())
    }

    fn handle(&mut self, request: Request) -> Reply {
        let function = request.function();
        self.requests[usize::from(function)] += 1;
        self.core.advance();
        if let Some(exception) = self.core.refusal() {
            return Reply::Exception {
                function,
                exception,
            };
        }
        let result = match request {
            Request::Read { start, count } => {
                if count == 0 || count > wire::MAX_READ {
                    Err(Exception::IllegalDataValue)
                } else {
                    (u32::from(start)..u32::from(start) + u32::from(count))
                        .map(|a| u16::try_from(a).map_err(|_| Exception::IllegalDataAddress))
                        .map(|a| a.and_then(|a| self.read_register(a)))
                        .collect::<Result<Vec<_>, _>>()
                        .map(Reply::Registers)
                }
            }
            Request::Write { start, words } => self.write(start, &words).map(|()| Reply::Written {
                start,
                count: words.len() as u16,
            }),
            Request::Other { .. } => Err(Exception::IllegalFunction),
            Request::Invalid { .. } => Err(Exception::IllegalDataValue),
        };
        result.unwrap_or_else(|exception| Reply::Exception {
            function,
            exception,
        })
    }

    /// The reply frame to a request frame for `unit`, if it is answered at all.
    fn answer(&mut self, unit: u8, request: Request) -> Option<Vec<u8>> {
        if unit != self.unit {
            return None;
        }
        let mut frame = self.handle(request).encode(self.unit);
        if self.corrupting > 0 {
            self.corrupting -= 1;
            if let Some(last) = frame.last_mut() {
                *last ^= 0x5a;
            }
        }
        Some(frame)
    }
}

/// Serves requests from `stream` until it ends, or until `link` is cut (a bridge connection
/// then closes; a serial line passes a link that is never cut).
async fn session(
    stream: impl AsyncRead + AsyncWrite,
    state: Arc<Mutex<SimState>>,
    mut link: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = Vec::with_capacity(2 * wire::MAX_FRAME);
    let mut chunk = [0u8; wire::MAX_FRAME];
    loop {
        let n = match unless_cut(&mut link, rd.read(&mut chunk)).await {
            None | Some(Ok(0) | Err(_)) => return,
            Some(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match wire::decode_request(&buf) {
                Ok(None) => break,
                Ok(Some((len, unit, request))) => {
                    buf.drain(..len);
                    let reply = lock(&state).answer(unit, request);
                    if let Some(frame) = reply
                        && wr.write_all(&frame).await.is_err()
                    {
                        return;
                    }
                }
                // Noise or a broken frame: look for the next frame one byte further on.
                Err(_) => {
                    buf.remove(0);
                }
            }
        }
    }
}

/// Starts simulated Binder controllers.
pub struct BinderSim;

impl BinderSim {
    /// Serves a simulated controller on `port` (a pseudo-terminal, as its serial port, or a
    /// TCP listener, as its serial-to-TCP bridge) until the returned handle is dropped. Must
    /// be called inside a tokio runtime.
    pub fn spawn(
        port: impl Into<SimPort>,
        config: SimConfig,
        clock: Clock,
    ) -> io::Result<SimHandle> {
        let (lo, hi) = config.thermal.range_c;
        if !(lo..=hi).contains(&config.basic_set_point_c) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "basic set point {} degC is outside the range {lo}..{hi} degC",
                    config.basic_set_point_c
                ),
            ));
        }
        let mut sim = SimState {
            core: SimCore::new(config.thermal, config.air, clock, Exception::DeviceFailure),
            unit: config.unit,
            humidity_pct: config.humidity_pct,
            mode: mode::BASIC,
            manual_set_point_c: config.basic_set_point_c,
            basic_set_point_c: config.basic_set_point_c,
            requests: [0; 256],
            corrupting: 0,
        };
        sim.apply_mode();
        let state = Arc::new(Mutex::new(sim));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let served = Arc::clone(&state);
        let port = port.into().serve(
            "binder sim",
            wire::BAUD_RATE,
            stop_rx,
            move |stream, link| session(stream, Arc::clone(&served), link),
        )?;
        Ok(SimHandle {
            endpoint: port.endpoint,
            sim: ChamberSim::new(state, port.link, stop_tx),
        })
    }
}

/// A running simulator; dropping it stops the server.
pub struct SimHandle {
    /// Where a client reaches the controller.
    endpoint: Endpoint,
    /// The controller's state, its link and its server.
    sim: ChamberSim<SimState>,
}

impl SimHandle {
    chamber_handle_methods!(Exception);

    /// Where a client reaches the controller: the serial port (9600 baud) or the bridge.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// Whether the chamber follows a set point given from outside (manual mode), rather than
    /// idling at its basic set point.
    pub fn running(&self) -> bool {
        mode::running(self.sim.lock().mode)
    }

    /// Requests served so far for this unit, refused ones included.
    pub fn transactions(&self) -> u64 {
        self.sim.lock().requests.iter().sum()
    }

    /// Requests served so far for this unit with function code `function`.
    pub fn requests(&self, function: u8) -> u64 {
        self.sim.lock().requests[usize::from(function)]
    }

    /// Raises an alarm (the alarm word reads 1: the wire carries a word, not the text) or
    /// clears it with `None`.
    pub fn set_alarm(&self, alarm: Option<&str>) {
        self.sim.set_alarm(alarm);
    }

    /// Sends the next `n` replies with a broken CRC.
    pub fn corrupt_next(&self, n: u32) {
        self.sim.lock().corrupting = n;
    }
}
