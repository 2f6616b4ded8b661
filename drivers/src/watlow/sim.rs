//! A simulated F4T: a Modbus TCP server whose control loop runs a chamber's air
//! ([`ThermalModel`]), advanced to the clock's time on every request.
//!
//! It keeps the semantics a driver depends on: the loop's registers sit at the loop's offset
//! (other loops' addresses are refused), floats go low word first, set points outside the
//! range are refused with an exception, only the documented mode values are accepted, and
//! registers a controller computes (current set point, process value) cannot be written.
//! Undocumented registers inside the loop's block read as 0, so the driver's block read works.
//! Manual mode holds a fixed output power on a real controller; the simulator has none, so
//! its air drifts to the room as when the loop is off.
//!
//! Faults are injected through the [`SimHandle`]: a cut link (every connection closes, new
//! ones are closed on arrival, the air keeps moving), Modbus exceptions, an alarm state and a
//! runaway heater or compressor.

use super::wire::{self, Loop, alarm, mode, reg};
use crate::Clock;
use crate::chamber::thermal::{Air, ThermalModel, ThermalParams};
use crate::transport::Endpoint;
use crate::transport::network::LinkStream;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

/// What the simulated chamber is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How the loop moves the air; its range is the loop's set point range.
    pub thermal: ThermalParams,
    /// The air inside the chamber, shared with the simulated cells in it.
    pub air: Air,
    /// The control loop that carries the chamber (1-based); other loops' registers are
    /// refused.
    pub loop_n: u8,
}

impl SimConfig {
    /// A bench-top chamber ([`ThermalParams::default`]) on loop 1, around `air`.
    pub fn new(air: Air) -> SimConfig {
        SimConfig {
            thermal: ThermalParams::default(),
            air,
            loop_n: 1,
        }
    }
}

struct SimState {
    /// Where simulated time comes from.
    clock: Clock,
    /// The loop's set point and mode acting on the chamber's air.
    model: ThermalModel,
    /// Where the chamber's registers are.
    control_loop: Loop,
    /// Raw mode register ([`mode`]).
    mode: u16,
    /// State register of each alarm object.
    alarm_states: [u16; alarm::COUNT as usize],
    /// Requests served, refused ones included.
    transactions: u64,
    /// How many of the next requests are answered with `exception` instead.
    failing: u32,
    /// The exception those get.
    exception: ExceptionCode,
}

impl SimState {
    fn advance(&mut self) {
        self.model.advance(self.clock.now());
    }

    fn read_register(&self, addr: u16) -> Result<u16, ExceptionCode> {
        if let Some(n) = (1..=alarm::COUNT).find(|&n| alarm::state_register(n) == Some(addr)) {
            return Ok(self.alarm_states[usize::from(n - 1)]);
        }
        let r = self
            .control_loop
            .loop_one_register(addr)
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        if r == reg::MODE {
            return Ok(self.mode);
        }
        let (lo, hi) = self.model.params.range_c;
        // No profiles or set point ramps here: the set point in force is the one written.
        let floats = [
            (reg::RANGE_LOW, lo),
            (reg::RANGE_HIGH, hi),
            (reg::SET_POINT, self.model.set_point_c()),
            (reg::CURRENT_SET_POINT, self.model.set_point_c()),
            (reg::PROCESS_VALUE, self.model.temperature_c()),
        ];
        Ok(floats
            .iter()
            .find(|(start, _)| (*start..start + 2).contains(&r))
            .map_or(0, |&(start, value)| {
                wire::encode_float(value as f32)[usize::from(r - start)]
            }))
    }

    fn set_mode(&mut self, value: u16) -> Result<(), ExceptionCode> {
        match value {
            mode::AUTO => self.model.set_running(true),
            mode::MANUAL | mode::OFF => self.model.set_running(false),
            _ => return Err(ExceptionCode::IllegalDataValue),
        }
        self.mode = value;
        Ok(())
    }

    /// Writes `words` from `addr`: the mode register alone, or whole floats.
    fn write(&mut self, addr: u16, words: &[u16]) -> Result<(), ExceptionCode> {
        let r = self
            .control_loop
            .loop_one_register(addr)
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        if r == reg::MODE {
            let &[value] = words else {
                return Err(ExceptionCode::IllegalDataAddress);
            };
            return self.set_mode(value);
        }
        if words.is_empty() || !words.len().is_multiple_of(2) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        for (i, pair) in words.chunks(2).enumerate() {
            let value = f64::from(wire::decode_float([pair[0], pair[1]]));
            if !value.is_finite() {
                return Err(ExceptionCode::IllegalDataValue);
            }
            let (lo, hi) = self.model.params.range_c;
            match r + 2 * i as u16 {
                reg::SET_POINT => self
                    .model
                    .set_set_point(value)
                    .map_err(|_| ExceptionCode::IllegalDataValue)?,
                reg::RANGE_LOW if value < hi => self.model.params.range_c.0 = value,
                reg::RANGE_HIGH if value > lo => self.model.params.range_c.1 = value,
                reg::RANGE_LOW | reg::RANGE_HIGH => return Err(ExceptionCode::IllegalDataValue),
                _ => return Err(ExceptionCode::IllegalDataAddress),
            }
        }
        Ok(())
    }

    fn handle(&mut self, req: Request<'static>) -> Result<Response, ExceptionCode> {
        self.transactions += 1;
        self.advance();
        if self.failing > 0 {
            self.failing -= 1;
            return Err(self.exception);
        }
        match req {
            Request::ReadHoldingRegisters(start, count) => {
                if count == 0 || count > 125 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                let end = start
                    .checked_add(count)
                    .ok_or(ExceptionCode::IllegalDataAddress)?;
                let words = (start..end)
                    .map(|a| self.read_register(a))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Response::ReadHoldingRegisters(words))
            }
            Request::WriteSingleRegister(addr, word) => {
                self.write(addr, &[word])?;
                Ok(Response::WriteSingleRegister(addr, word))
            }
            Request::WriteMultipleRegisters(start, words) => {
                self.write(start, &words)?;
                Ok(Response::WriteMultipleRegisters(start, words.len() as u16))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

/// The Modbus service; one per connection, all sharing the controller's state.
#[derive(Clone)]
struct WatlowService {
    /// The controller's state, shared with the handle.
    state: Arc<Mutex<SimState>>,
}

impl Service for WatlowService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(lock(&self.state).handle(req))
    }
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    // A panic while holding the lock cannot leave the state half-written in a way that matters
    // for a simulator; keep serving.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts simulated F4T controllers.
pub struct WatlowSim;

impl WatlowSim {
    /// Serves a simulated F4T on `listener` until the returned handle is dropped. Must be
    /// called inside a tokio runtime.
    pub fn spawn(listener: TcpListener, config: SimConfig, clock: Clock) -> io::Result<SimHandle> {
        let addr = listener.local_addr()?;
        let control_loop = Loop::new(config.loop_n).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "F4T loops are numbered from 1")
        })?;
        let state = Arc::new(Mutex::new(SimState {
            model: ThermalModel::new(config.thermal, config.air, clock.now()),
            clock,
            control_loop,
            mode: mode::OFF,
            alarm_states: [alarm::NONE; alarm::COUNT as usize],
            transactions: 0,
            failing: 0,
            exception: ExceptionCode::ServerDeviceFailure,
        }));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (link_tx, link_rx) = watch::channel(true);
        let service = WatlowService {
            state: Arc::clone(&state),
        };
        tokio::spawn(async move {
            // The listener stays bound through a cut, so the controller comes back on the same
            // address; while cut, connections are accepted and closed at once.
            let server = Server::new(listener);
            let new_service = move |_addr: SocketAddr| Ok(Some(service.clone()));
            let on_connected = move |stream: TcpStream, socket_addr| {
                let new_service = new_service.clone();
                let link = link_rx.clone();
                async move {
                    if !*link.borrow() {
                        return Ok(None);
                    }
                    Ok(accept_tcp_connection(stream, socket_addr, new_service)?
                        .map(|(service, stream)| (service, LinkStream::new(stream, link))))
                }
            };
            let stop = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = server
                .serve_until(
                    &on_connected,
                    |e| tracing::debug!("watlow sim connection: {e}"),
                    stop,
                )
                .await
            {
                tracing::warn!("watlow sim on {addr} stopped: {e}");
            }
        });
        Ok(SimHandle {
            addr,
            state,
            link: link_tx,
            _stop: stop_tx,
        })
    }
}

/// A running simulator; dropping it stops the server.
pub struct SimHandle {
    /// Where a client reaches the controller.
    addr: SocketAddr,
    /// The controller's state, shared with the server.
    state: Arc<Mutex<SimState>>,
    /// Whether the controller is on the network; connections watch it.
    link: watch::Sender<bool>,
    /// Dropped with the handle, which stops the server.
    _stop: oneshot::Sender<()>,
}

impl SimHandle {
    /// Where a client reaches the controller.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The same, as an endpoint.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Tcp(self.addr)
    }

    /// The air temperature now, degC.
    pub fn temperature_c(&self) -> f64 {
        let mut s = lock(&self.state);
        s.advance();
        s.model.temperature_c()
    }

    /// The loop's set point, degC.
    pub fn set_point_c(&self) -> f64 {
        lock(&self.state).model.set_point_c()
    }

    /// Whether the loop regulates (auto mode).
    pub fn running(&self) -> bool {
        lock(&self.state).model.running()
    }

    /// The chamber's air, to put simulated cells in.
    pub fn air(&self) -> Air {
        lock(&self.state).model.air().clone()
    }

    /// Requests served so far, refused ones included.
    pub fn transactions(&self) -> u64 {
        lock(&self.state).transactions
    }

    /// Pulls the network cable: open connections close and new ones are closed on arrival.
    /// The loop keeps regulating as it was.
    pub fn cut_link(&self) {
        self.link.send_replace(false);
    }

    /// Plugs it back in, on the same address.
    pub fn restore_link(&self) {
        self.link.send_replace(true);
    }

    /// Raises alarm 1 in the state named `name` (`high`, `low` or `error`, see
    /// [`alarm::ACTIVE`]; any other text raises `high`), or clears it with `None`. The wire
    /// carries a state, not text.
    pub fn set_alarm(&self, name: Option<&str>) {
        let state = match name {
            None => alarm::NONE,
            Some(name) => alarm::ACTIVE
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(name))
                .map_or(alarm::HIGH, |(v, _)| *v),
        };
        lock(&self.state).alarm_states[0] = state;
    }

    /// Makes the air run away at `c_per_min` whatever the loop does (see
    /// [`ThermalModel::set_runaway`]), or behave again with `None`.
    pub fn set_runaway(&self, c_per_min: Option<f64>) {
        let mut s = lock(&self.state);
        s.advance();
        s.model.set_runaway(c_per_min);
    }

    /// Answers the next `n` requests with the Modbus exception `code`.
    pub fn fail_next(&self, n: u32, code: ExceptionCode) {
        let mut s = lock(&self.state);
        s.failing = n;
        s.exception = code;
    }
}
