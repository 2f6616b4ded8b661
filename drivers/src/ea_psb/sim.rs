//! A simulated PSB: a Modbus TCP server (or a Modbus RTU server on a pseudo-terminal, as the
//! USB port presents itself) with one cell on its terminals.
//!
//! It keeps the device's semantics that a driver depends on: setpoint writes need remote
//! control, setpoints above 102 % are refused, the output regulates like a real bidirectional
//! supply (source current limit, sink current limit and the voltage setpoint, so CC/CV crossover
//! happens in the "device"), and actual values are quantised by the register scaling.
//!
//! Faults are injected through the [`SimHandle`]: a cut link (every connection closes, new ones
//! are closed on arrival, the cell keeps running), delayed replies and Modbus exceptions.

use super::wire::{self, Nominal, coil, reg, state};
use crate::Clock;
use crate::cell::{Cell, CellParams};
use crate::transport::Endpoint;
use crate::transport::faults::Faults;
use crate::transport::lock;
use crate::transport::network::{Link, delay_unless_cut, spawn_modbus_while_linked};
#[cfg(unix)]
use crate::transport::{line::Line, pty::Pty};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response};

/// Longest simulated interval integrated in one piece; keeps the CV law stable.
const MAX_SUBSTEP_S: f64 = 0.5;

/// What the simulated supply is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Reported in registers 1-20; the driver derives the nominal ratings from it.
    pub device_type: String,
    pub serial: String,
    pub nominal: Nominal,
    /// Modbus unit answered on a serial line (a TCP server answers every unit id, as the PSB
    /// does).
    pub unit: u8,
    pub cell: CellParams,
    /// Whether registers 503-504 answer (with 0), so that one read spans the setpoints, the
    /// state and the actual values; false plays firmware that does not map them.
    pub gap_mapped: bool,
}

impl SimConfig {
    /// A PSB 10060-60 (60 V, 60 A, 1500 W) with the given cell.
    pub fn psb_10060_60(serial: &str, cell: CellParams) -> SimConfig {
        SimConfig {
            device_type: "PSB 10060-60".into(),
            serial: serial.into(),
            nominal: Nominal {
                voltage_v: 60.0,
                current_a: 60.0,
                power_w: 1500.0,
            },
            unit: 1,
            cell,
            gap_mapped: true,
        }
    }
}

struct SimState {
    config: SimConfig,
    clock: Clock,
    cell: Cell,
    /// Simulated time up to which the cell has been integrated.
    integrated_to: f64,
    remote: bool,
    output: bool,
    /// Setpoint block 498..=502, raw.
    setpoints: [u16; reg::SETPOINT_BLOCK_LEN as usize],
    /// Current flowing now, + = into the cell.
    current_a: f64,
    alarm: bool,
    transactions: u64,
    /// Injected through the handle, for tests of the driver's and the daemon's error paths:
    /// the reply delay, and requests answered with a Modbus exception instead.
    faults: Faults<ExceptionCode>,
    /// A stuck voltage readback: the raw value every read of the actual voltage gives while
    /// set (the output keeps regulating on the true voltage), for the quality checks' tests.
    stuck_voltage: Option<u16>,
    /// A wrong current sign in the readback: the state word's sink-mode flag inverted.
    inverted_sign: bool,
}

impl SimState {
    fn set(&self, addr: u16) -> f64 {
        let raw = self.setpoints[usize::from(addr - reg::SETPOINT_BLOCK)];
        let n = self.config.nominal;
        match addr {
            reg::SET_VOLTAGE => wire::from_raw(raw, n.voltage_v),
            reg::SET_CURRENT | reg::SET_SINK_CURRENT => wire::from_raw(raw, n.current_a),
            _ => wire::from_raw(raw, n.power_w),
        }
    }

    /// The current the regulation settles on now: what holds the voltage setpoint, clamped by
    /// the source and sink current and power limits.
    fn regulated_current(&self) -> f64 {
        if !self.output || self.alarm {
            return 0.0;
        }
        let wanted = self.cell.current_for_voltage(self.set(reg::SET_VOLTAGE));
        let v = self.cell.terminal_voltage(wanted).max(0.1);
        let source_max = self.set(reg::SET_CURRENT).min(self.set(reg::SET_POWER) / v);
        let sink_max = self
            .set(reg::SET_SINK_CURRENT)
            .min(self.set(reg::SET_SINK_POWER) / v);
        wanted.clamp(-sink_max, source_max)
    }

    fn advance(&mut self) {
        let now = self.clock.now();
        while self.integrated_to < now {
            let dt = (now - self.integrated_to).min(MAX_SUBSTEP_S);
            self.current_a = self.regulated_current();
            self.cell.step(self.current_a, dt);
            self.integrated_to += dt;
        }
        self.current_a = self.regulated_current();
    }

    fn state_word(&self) -> u32 {
        let mut word = 0;
        if self.output {
            word |= state::OUTPUT_ON;
        }
        if self.remote {
            word |= state::REMOTE;
        }
        if self.alarm {
            word |= state::ALARM;
        }
        if (self.current_a < 0.0) != self.inverted_sign {
            word |= state::SINK_MODE;
        }
        word
    }

    fn actual_voltage_raw(&self) -> u16 {
        let n = self.config.nominal;
        wire::to_raw(
            self.cell.terminal_voltage(self.current_a),
            n.voltage_v,
            wire::Round::Nearest,
        )
    }

    fn read_register(&self, addr: u16) -> Result<u16, ExceptionCode> {
        let n = self.config.nominal;
        let string_at = |start: u16, s: &str| {
            wire::encode_string(s, reg::STRING_REGS)[usize::from(addr - start)]
        };
        let in_string = |start: u16| (start..start + reg::STRING_REGS).contains(&addr);
        Ok(match addr {
            reg::DEVICE_CLASS => 0x0010,
            _ if in_string(reg::DEVICE_TYPE) => {
                string_at(reg::DEVICE_TYPE, &self.config.device_type)
            }
            _ if in_string(reg::MANUFACTURER) => {
                string_at(reg::MANUFACTURER, "Elektro-Automatik (simulated)")
            }
            _ if in_string(reg::SERIAL) => string_at(reg::SERIAL, &self.config.serial),
            reg::SET_SINK_POWER..=reg::SET_POWER => {
                self.setpoints[usize::from(addr - reg::SETPOINT_BLOCK)]
            }
            503 | 504 if self.config.gap_mapped => 0,
            reg::STATE => (self.state_word() >> 16) as u16,
            506 => self.state_word() as u16,
            reg::ACTUAL_VOLTAGE => self
                .stuck_voltage
                .unwrap_or_else(|| self.actual_voltage_raw()),
            reg::ACTUAL_CURRENT => {
                wire::to_raw(self.current_a.abs(), n.current_a, wire::Round::Nearest)
            }
            reg::ACTUAL_POWER => {
                let p = (self.cell.terminal_voltage(self.current_a) * self.current_a).abs();
                wire::to_raw(p, n.power_w, wire::Round::Nearest)
            }
            _ => return Err(ExceptionCode::IllegalDataAddress),
        })
    }

    fn handle(&mut self, req: Request<'static>) -> Result<Response, ExceptionCode> {
        self.transactions += 1;
        self.advance();
        if let Some(exception) = self.faults.refusal() {
            return Err(exception);
        }
        match req {
            Request::ReadHoldingRegisters(start, count) => {
                let end = start
                    .checked_add(count)
                    .ok_or(ExceptionCode::IllegalDataAddress)?;
                if count == 0 || count > 125 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                let words = (start..end)
                    .map(|a| self.read_register(a))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Response::ReadHoldingRegisters(words))
            }
            Request::WriteSingleCoil(addr, on) => {
                match addr {
                    coil::REMOTE => {
                        self.remote = on;
                        if !on {
                            // Leaving remote control switches the output off, as the device does.
                            self.output = false;
                        }
                    }
                    coil::OUTPUT => {
                        self.require_remote()?;
                        self.output = on;
                    }
                    coil::UIR_MODE => self.require_remote()?,
                    _ => return Err(ExceptionCode::IllegalDataAddress),
                }
                self.current_a = self.regulated_current();
                Ok(Response::WriteSingleCoil(addr, on))
            }
            Request::WriteMultipleRegisters(start, words) => {
                self.require_remote()?;
                let end = start
                    .checked_add(words.len() as u16)
                    .ok_or(ExceptionCode::IllegalDataAddress)?;
                if start < reg::SETPOINT_BLOCK
                    || end > reg::SETPOINT_BLOCK + reg::SETPOINT_BLOCK_LEN
                {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                if words.iter().any(|&w| w > wire::MAX_SETPOINT) {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                for (i, &w) in words.iter().enumerate() {
                    self.setpoints[usize::from(start - reg::SETPOINT_BLOCK) + i] = w;
                }
                self.current_a = self.regulated_current();
                Ok(Response::WriteMultipleRegisters(start, words.len() as u16))
            }
            Request::WriteSingleRegister(addr, word) => {
                self.require_remote()?;
                if !(reg::SET_SINK_POWER..=reg::SET_POWER).contains(&addr) {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                if word > wire::MAX_SETPOINT {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                self.setpoints[usize::from(addr - reg::SETPOINT_BLOCK)] = word;
                self.current_a = self.regulated_current();
                Ok(Response::WriteSingleRegister(addr, word))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    fn require_remote(&self) -> Result<(), ExceptionCode> {
        // A PSB under local (front panel) control refuses remote writes.
        if self.remote {
            Ok(())
        } else {
            Err(ExceptionCode::ServerDeviceFailure)
        }
    }
}

/// The Modbus service; one per connection, all sharing the device state.
#[derive(Clone)]
struct PsbService {
    state: Arc<Mutex<SimState>>,
    /// Whether the link is up (see [`SimHandle::cut_link`]).
    link: watch::Receiver<bool>,
}

type Reply = Result<Option<Response>, ExceptionCode>;

impl Service for PsbService {
    type Request = Request<'static>;
    /// `None` sends nothing: a reply still pending when the link is cut is lost with it.
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let state = Arc::clone(&self.state);
        let mut link = self.link.clone();
        let delay = lock(&state).faults.reply_delay();
        Box::pin(async move {
            if !delay_unless_cut(delay, &mut link).await {
                return Ok(None);
            }
            // Handled after the delay, as if the request arrived late: a write the client has
            // given up on still takes effect, which is the hazard a slow link poses.
            lock(&state).handle(req).map(Some)
        })
    }
}

/// Starts simulated PSBs.
pub struct PsbSim;

impl PsbSim {
    /// Serves a simulated PSB on `listener` until the returned handle is shut down or dropped.
    pub fn spawn(listener: TcpListener, config: SimConfig, clock: Clock) -> io::Result<SimHandle> {
        let state = new_state(config, clock);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let link = Link::up();
        let service = PsbService {
            state: Arc::clone(&state),
            link: link.watch(),
        };
        let addr = spawn_modbus_while_linked(listener, service, link.watch(), stop_rx, "psb sim")?;
        Ok(SimHandle {
            endpoint: Endpoint::Tcp(addr),
            state,
            link,
            _stop: stop_tx,
        })
    }

    /// Serves a simulated PSB over Modbus RTU on `pty` (the client opens its slave path at any
    /// baud rate) until the returned handle is dropped. Must be called inside a tokio runtime.
    #[cfg(unix)]
    pub fn spawn_serial(pty: Pty, config: SimConfig, clock: Clock) -> io::Result<SimHandle> {
        let line = Line::open(pty)?;
        let unit = config.unit;
        let state = new_state(config, clock);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let service = RtuService {
            inner: PsbService {
                state: Arc::clone(&state),
                link: line.control.watch(),
            },
            unit,
        };
        let Line {
            path,
            device,
            control,
            relay,
        } = line;
        tokio::spawn(async move {
            let server =
                tokio_modbus::server::rtu::Server::new(device).serve_until(service, async {
                    let _ = stop_rx.await;
                });
            let result = tokio::select! {
                r = relay => r,
                r = server => r.map(|_| ()),
            };
            if let Err(e) = result {
                tracing::warn!("psb sim stopped: {e}");
            }
        });
        Ok(SimHandle {
            endpoint: Endpoint::Serial {
                path: path.to_string_lossy().into_owned(),
                baud: 115_200,
            },
            state,
            link: control.link().clone(),
            _stop: stop_tx,
        })
    }
}

fn new_state(config: SimConfig, clock: Clock) -> Arc<Mutex<SimState>> {
    Arc::new(Mutex::new(SimState {
        cell: Cell::new(config.cell.clone()),
        integrated_to: clock.now(),
        config,
        clock,
        remote: false,
        output: false,
        setpoints: [0; reg::SETPOINT_BLOCK_LEN as usize],
        current_a: 0.0,
        alarm: false,
        transactions: 0,
        faults: Faults::new(ExceptionCode::ServerDeviceFailure),
        stuck_voltage: None,
        inverted_sign: false,
    }))
}

/// The PSB service behind an RTU server: answers its own unit only, as on a shared line.
#[cfg(unix)]
#[derive(Clone)]
struct RtuService {
    inner: PsbService,
    unit: u8,
}

#[cfg(unix)]
impl Service for RtuService {
    type Request = tokio_modbus::SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if req.slave != self.unit {
            return Box::pin(async { Ok(None) });
        }
        self.inner.call(req.request)
    }
}

/// A running simulator; dropping it stops the server.
pub struct SimHandle {
    /// Where a client reaches the simulator.
    endpoint: Endpoint,
    state: Arc<Mutex<SimState>>,
    /// The network link, or the serial line's cable.
    link: Link,
    _stop: oneshot::Sender<()>,
}

/// What the simulated device shows from the outside, for tests and the demo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimSnapshot {
    pub voltage_v: f64,
    pub current_a: f64,
    pub soc: f64,
    pub temperature_c: f64,
    pub output_on: bool,
    pub remote: bool,
    pub transactions: u64,
}

impl SimHandle {
    /// Where a client reaches the simulator.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    pub fn snapshot(&self) -> SimSnapshot {
        let mut s = lock(&self.state);
        s.advance();
        SimSnapshot {
            voltage_v: s.cell.terminal_voltage(s.current_a),
            current_a: s.current_a,
            soc: s.cell.soc(),
            temperature_c: s.cell.temperature_c(),
            output_on: s.output,
            remote: s.remote,
            transactions: s.transactions,
        }
    }

    /// Capacity of the simulated cell at beginning of life.
    pub fn capacity_ah(&self) -> f64 {
        lock(&self.state).config.cell.capacity_ah
    }

    /// Raises or clears the device alarm (the output stage stops while it is raised).
    pub fn set_alarm(&self, on: bool) {
        lock(&self.state).alarm = on;
    }

    /// Pulls the cable: on the network open connections close and new ones are closed on
    /// arrival; on a serial line requests and replies are lost. The output keeps running as it
    /// was (the simulated PSB has no communication watchdog).
    pub fn cut_link(&self) {
        self.link.cut();
    }

    /// Plugs the cable back in, on the same address or port.
    pub fn restore_link(&self) {
        self.link.restore();
    }

    /// Delays every reply by `delay` of wall time (zero for none), for timeout tests.
    pub fn set_reply_delay(&self, delay: Duration) {
        lock(&self.state).faults.set_reply_delay(delay);
    }

    /// Serves `request` as if another Modbus client on the device had sent it (a second
    /// connection, a PLC, a script): same rules as any client, remote control included.
    pub fn request_from_another_client(
        &self,
        request: Request<'static>,
    ) -> Result<Response, ExceptionCode> {
        lock(&self.state).handle(request)
    }

    /// The setpoint block 498..=502 as the device holds it, raw.
    pub fn setpoints(&self) -> [u16; reg::SETPOINT_BLOCK_LEN as usize] {
        lock(&self.state).setpoints
    }

    /// Answers the next `n` requests with the Modbus exception `code`.
    pub fn fail_next(&self, n: u32, code: ExceptionCode) {
        lock(&self.state).faults.fail_next(n, code);
    }

    /// Sticks the voltage readback at what it reads now (a frozen sense input or converter),
    /// or lets it follow the cell again; the output stage keeps regulating on the true voltage.
    pub fn stick_voltage(&self, stuck: bool) {
        let mut s = lock(&self.state);
        s.advance();
        s.stuck_voltage = stuck.then(|| s.actual_voltage_raw());
    }

    /// Reads the current back with the wrong sign (the sink-mode flag of the state word
    /// inverted, as a faulty readback would), or rightly again.
    pub fn invert_current_sign(&self, inverted: bool) {
        lock(&self.state).inverted_sign = inverted;
    }
}
