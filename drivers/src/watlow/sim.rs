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
//!
//! [`ThermalModel`]: crate::chamber::thermal::ThermalModel

use super::wire::{self, Loop, alarm, mode, reg};
use crate::Clock;
use crate::chamber::sim::{ChamberSim, ChamberState, SimCore, chamber_handle_methods};
use crate::chamber::thermal::{Air, ThermalParams};
use crate::transport::lock;
use crate::transport::network::{Link, spawn_modbus_while_linked};
use crate::transport::{Endpoint, modbus};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_modbus::server::Service;
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
    /// The loop's set point and mode acting on the chamber's air, alarm 1 and requests
    /// answered with an exception.
    core: SimCore<ExceptionCode>,
    /// Where the chamber's registers are.
    control_loop: Loop,
    /// Raw mode register ([`mode`]).
    mode: u16,
    /// Requests served, refused ones included.
    transactions: u64,
}

impl ChamberState for SimState {
    type Refusal = ExceptionCode;

    fn core(&mut self) -> &mut SimCore<ExceptionCode> {
        &mut self.core
    }
}

impl SimState {
    /// State register of alarm object `n`: alarm 1 carries the handle's alarm, in the state it
    /// names (`high`, `low` or `error`, see [`alarm::ACTIVE`]; any other text is `high`).
    fn alarm_state(&self, n: u8) -> u16 {
        match self.core.alarm() {
            Some(name) if n == 1 => alarm::ACTIVE
                .iter()
                .find(|(_, active)| active.eq_ignore_ascii_case(name))
                .map_or(alarm::HIGH, |(v, _)| *v),
            _ => alarm::NONE,
        }
    }

    fn read_register(&self, addr: u16) -> Result<u16, ExceptionCode> {
        if let Some(n) = (1..=alarm::COUNT).find(|&n| alarm::state_register(n) == Some(addr)) {
            return Ok(self.alarm_state(n));
        }
        let r = self
            .control_loop
            .loop_one_register(addr)
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        if r == reg::MODE {
            return Ok(self.mode);
        }
        let model = &self.core.model;
        let (lo, hi) = model.params.range_c;
        // No profiles or set point ramps here: the set point in force is the one written.
        let floats = [
            (reg::RANGE_LOW, lo),
            (reg::RANGE_HIGH, hi),
            (reg::SET_POINT, model.set_point_c()),
            (reg::CURRENT_SET_POINT, model.set_point_c()),
            (reg::PROCESS_VALUE, model.temperature_c()),
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
            mode::AUTO => self.core.model.set_running(true),
            mode::MANUAL | mode::OFF => self.core.model.set_running(false),
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
            let model = &mut self.core.model;
            let (lo, hi) = model.params.range_c;
            match r + 2 * i as u16 {
                reg::SET_POINT => model
                    .set_set_point(value)
                    .map_err(|_| ExceptionCode::IllegalDataValue)?,
                reg::RANGE_LOW if value < hi => model.params.range_c.0 = value,
                reg::RANGE_HIGH if value > lo => model.params.range_c.1 = value,
                reg::RANGE_LOW | reg::RANGE_HIGH => return Err(ExceptionCode::IllegalDataValue),
                _ => return Err(ExceptionCode::IllegalDataAddress),
            }
        }
        Ok(())
    }

    fn handle(&mut self, req: Request<'static>) -> Result<Response, ExceptionCode> {
        self.transactions += 1;
        self.core.advance();
        if let Some(exception) = self.core.refusal() {
            return Err(exception);
        }
        match req {
            Request::ReadHoldingRegisters(start, count) => {
                let words = modbus::read_block(start, count, |a| self.read_register(a))?;
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

/// Starts simulated F4T controllers.
pub struct WatlowSim;

impl WatlowSim {
    /// Serves a simulated F4T on `listener` until the returned handle is dropped. Must be
    /// called inside a tokio runtime.
    pub fn spawn(listener: TcpListener, config: SimConfig, clock: Clock) -> io::Result<SimHandle> {
        let control_loop = Loop::new(config.loop_n).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "F4T loops are numbered from 1")
        })?;
        let state = Arc::new(Mutex::new(SimState {
            core: SimCore::new(
                config.thermal,
                config.air,
                clock,
                ExceptionCode::ServerDeviceFailure,
            ),
            control_loop,
            mode: mode::OFF,
            transactions: 0,
        }));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let link = Link::up();
        let service = WatlowService {
            state: Arc::clone(&state),
        };
        let addr =
            spawn_modbus_while_linked(listener, service, link.watch(), stop_rx, "watlow sim")?;
        Ok(SimHandle {
            addr,
            sim: ChamberSim::new(state, link, stop_tx),
        })
    }
}

/// A running simulator; dropping it stops the server.
pub struct SimHandle {
    /// Where a client reaches the controller.
    addr: SocketAddr,
    /// The controller's state, its link and its server.
    sim: ChamberSim<SimState>,
}

impl SimHandle {
    chamber_handle_methods!(ExceptionCode);

    /// Where a client reaches the controller.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The same, as an endpoint.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Tcp(self.addr)
    }

    /// Whether the loop regulates (auto mode).
    pub fn running(&self) -> bool {
        self.sim.running()
    }

    /// Requests served so far, refused ones included.
    pub fn transactions(&self) -> u64 {
        self.sim.lock().transactions
    }

    /// Raises alarm 1 in the state named `name` (`high`, `low` or `error`, see
    /// [`alarm::ACTIVE`]; any other text raises `high`), or clears it with `None`. The wire
    /// carries a state, not text.
    pub fn set_alarm(&self, name: Option<&str>) {
        self.sim.set_alarm(name);
    }
}
