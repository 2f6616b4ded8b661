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

use super::wire::{self, Exception, Reply, Request, mode, reg};
use crate::Clock;
use crate::chamber::thermal::{Air, ThermalModel, ThermalParams};
#[cfg(unix)]
use crate::transport::line::{Line, LineControl};
use crate::transport::network::accept_while_linked;
use crate::transport::{Endpoint, SimPort};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// Where simulated time comes from.
    clock: Clock,
    /// The set point in force and the chamber's air.
    model: ThermalModel,
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
    /// The (assumed) alarm word, 0 = none.
    alarm_word: u16,
    /// Requests for this unit, by function code.
    requests: [u64; 256],
    /// How many of the next requests are answered with `exception` instead.
    failing: u32,
    /// The exception those get.
    exception: Exception,
    /// How many of the next replies go out with a broken CRC.
    corrupting: u32,
}

impl SimState {
    fn advance(&mut self) {
        self.model.advance(self.clock.now());
    }

    /// Points the model at the set point of the mode in force; both set points were checked
    /// against the range when written.
    fn apply_mode(&mut self) {
        let set_point = if self.mode == mode::MANUAL {
            self.manual_set_point_c
        } else {
            self.basic_set_point_c
        };
        let _ = self.model.set_set_point(set_point);
        self.model.set_running(true);
    }

    /// The floats the controller shows: (first register, value), `None` where it has none.
    fn floats(&self) -> [(u16, Option<f64>); 6] {
        [
            (reg::TEMPERATURE, Some(self.model.temperature_c())),
            (reg::HUMIDITY, self.humidity_pct),
            (reg::SET_POINT, Some(self.model.set_point_c())),
            (reg::HUMIDITY_SET_POINT, self.humidity_pct),
            (reg::MANUAL_SET_POINT, Some(self.manual_set_point_c)),
            (reg::BASIC_SET_POINT, Some(self.basic_set_point_c)),
        ]
    }

    fn read_register(&self, addr: u16) -> Result<u16, Exception> {
        match addr {
            reg::MODE => return Ok(self.mode),
            reg::ALARM => return Ok(self.alarm_word),
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
                let (lo, hi) = self.model.params.range_c;
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
        self.advance();
        if self.failing > 0 {
            self.failing -= 1;
            return Reply::Exception {
                function,
                exception: self.exception,
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

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    // A panic while holding the lock cannot leave the state half-written in a way that matters
    // for a simulator; keep serving.
    state.lock().unwrap_or_else(|e| e.into_inner())
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
        let n = tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = link.wait_for(|up| !up) => return,
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
            model: ThermalModel::new(config.thermal, config.air, clock.now()),
            clock,
            unit: config.unit,
            humidity_pct: config.humidity_pct,
            mode: mode::BASIC,
            manual_set_point_c: config.basic_set_point_c,
            basic_set_point_c: config.basic_set_point_c,
            alarm_word: 0,
            requests: [0; 256],
            failing: 0,
            exception: Exception::DeviceFailure,
            corrupting: 0,
        };
        sim.apply_mode();
        let state = Arc::new(Mutex::new(sim));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (endpoint, link) = match port.into() {
            SimPort::Tcp(listener) => {
                let addr = listener.local_addr()?;
                let (link_tx, link_rx) = watch::channel(true);
                let state = Arc::clone(&state);
                let links = link_rx.clone();
                tokio::spawn(accept_while_linked(
                    listener,
                    link_rx,
                    stop_rx,
                    "binder sim",
                    move |stream| {
                        tokio::spawn(session(stream, Arc::clone(&state), links.clone()));
                    },
                ));
                (Endpoint::Tcp(addr), LinkSwitch::Network(link_tx))
            }
            #[cfg(unix)]
            SimPort::Pty(pty) => {
                let Line {
                    path,
                    device,
                    control,
                    relay,
                } = Line::open(pty)?;
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    // A serial line has no connection to close: the relay loses bytes while
                    // it is cut, and the session goes on.
                    let (_up, never_cut) = watch::channel(true);
                    tokio::select! {
                        _ = stop_rx => {}
                        r = relay => if let Err(e) = r {
                            tracing::warn!("binder sim line stopped: {e}");
                        },
                        () = session(device, state, never_cut) => {}
                    }
                });
                let endpoint = Endpoint::Serial {
                    path: path.to_string_lossy().into_owned(),
                    baud: wire::BAUD_RATE,
                };
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

/// Where a link fault is switched.
enum LinkSwitch {
    /// Whether the bridge is on the network; connections watch it.
    Network(watch::Sender<bool>),
    /// The simulated serial cable.
    #[cfg(unix)]
    Line(LineControl),
}

/// A running simulator; dropping it stops the server.
pub struct SimHandle {
    /// Where a client reaches the controller.
    endpoint: Endpoint,
    /// The controller's state, shared with the server.
    state: Arc<Mutex<SimState>>,
    /// Where link faults are switched.
    link: LinkSwitch,
    /// Dropped with the handle, which stops the server.
    _stop: oneshot::Sender<()>,
}

impl SimHandle {
    /// Where a client reaches the controller: the serial port (9600 baud) or the bridge.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// The air temperature now, degC.
    pub fn temperature_c(&self) -> f64 {
        let mut s = lock(&self.state);
        s.advance();
        s.model.temperature_c()
    }

    /// The set point in force (of the mode in force), degC.
    pub fn set_point_c(&self) -> f64 {
        lock(&self.state).model.set_point_c()
    }

    /// Whether the chamber follows a set point given from outside (manual mode), rather than
    /// idling at its basic set point.
    pub fn running(&self) -> bool {
        mode::running(lock(&self.state).mode)
    }

    /// The chamber's air, to put simulated cells in.
    pub fn air(&self) -> Air {
        lock(&self.state).model.air().clone()
    }

    /// Requests served so far for this unit, refused ones included.
    pub fn transactions(&self) -> u64 {
        lock(&self.state).requests.iter().sum()
    }

    /// Requests served so far for this unit with function code `function`.
    pub fn requests(&self, function: u8) -> u64 {
        lock(&self.state).requests[usize::from(function)]
    }

    /// Pulls the cable: on a serial line requests and replies are lost, so the client sees
    /// silence; on the bridge open connections close and new ones are closed on arrival. The
    /// chamber keeps regulating as it was.
    pub fn cut_link(&self) {
        match &self.link {
            LinkSwitch::Network(link) => {
                link.send_replace(false);
            }
            #[cfg(unix)]
            LinkSwitch::Line(line) => line.cut(),
        }
    }

    /// Plugs the cable back in, on the same port or address.
    pub fn restore_link(&self) {
        match &self.link {
            LinkSwitch::Network(link) => {
                link.send_replace(true);
            }
            #[cfg(unix)]
            LinkSwitch::Line(line) => line.restore(),
        }
    }

    /// Raises an alarm (the alarm word reads 1: the wire carries a word, not the text) or
    /// clears it with `None`.
    pub fn set_alarm(&self, alarm: Option<&str>) {
        lock(&self.state).alarm_word = u16::from(alarm.is_some());
    }

    /// Makes the air run away at `c_per_min` whatever the controller does (see
    /// [`ThermalModel::set_runaway`]), or behave again with `None`.
    pub fn set_runaway(&self, c_per_min: Option<f64>) {
        let mut s = lock(&self.state);
        s.advance();
        s.model.set_runaway(c_per_min);
    }

    /// Answers the next `n` requests with `exception`.
    pub fn fail_next(&self, n: u32, exception: Exception) {
        let mut s = lock(&self.state);
        s.failing = n;
        s.exception = exception;
    }

    /// Sends the next `n` replies with a broken CRC.
    pub fn corrupt_next(&self, n: u32) {
        lock(&self.state).corrupting = n;
    }
}
