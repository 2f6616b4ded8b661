//! A simulated Riden: a Modbus RTU server on a pseudo-terminal with one cell on its terminals.
//!
//! It keeps the device's semantics that a driver depends on: the id register tells the model
//! (and so the scaling), setpoints beyond the model's rating are refused with a Modbus exception,
//! the output only sources current and regulates like a real supply (current limit and voltage
//! setpoint, so CC/CV crossover happens in the "device"), a protection trip switches the output
//! off, and actual values are quantised by the register scaling. Requests for another unit id
//! go unanswered, as on a shared RS-485 line.
//!
//! The RTU server talks to an inner pseudo-terminal; a relay copies bytes between it and the
//! client's pseudo-terminal, and is where line faults are injected through the [`SimHandle`]: a
//! cut link (bytes are lost both ways, as with a pulled USB cable; the cell keeps running) and
//! corrupted replies (a reply with a broken CRC). Delayed replies and Modbus exceptions come
//! from the device side.

use super::wire::{self, Model, Round, protection, reg};
use crate::Clock;
use crate::cell::{Cell, CellParams};
use crate::transport::faults::Faults;
use crate::transport::line::{Line, LineControl};
use crate::transport::lock;
use crate::transport::modbus;
use crate::transport::pty::Pty;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio_modbus::server::Service;
use tokio_modbus::server::rtu::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Longest simulated interval integrated in one piece; keeps the CV law stable.
const MAX_SUBSTEP_S: f64 = 0.5;
/// Input voltage the simulated supply reports.
const INPUT_VOLTAGE_V: f64 = 65.0;

/// What the simulated supply is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub model: Model,
    pub serial: u32,
    /// Firmware version x 100, as register 3 holds it.
    pub firmware: u16,
    pub unit: u8,
    pub cell: CellParams,
}

impl SimConfig {
    /// A Riden of model `number` (6006, 6012, 6018, 6024) on unit 1 with the given cell.
    ///
    /// # Panics
    /// For a model number not in [`wire::MODELS`].
    pub fn rd60xx(number: u16, serial: u32, cell: CellParams) -> SimConfig {
        SimConfig {
            model: Model::from_number(number).expect("a known Riden model"),
            serial,
            firmware: 128,
            unit: wire::DEFAULT_UNIT,
            cell,
        }
    }
}

struct SimState {
    config: SimConfig,
    clock: Clock,
    cell: Cell,
    /// Simulated time up to which the cell has been integrated.
    integrated_to: f64,
    set_voltage_raw: u16,
    set_current_raw: u16,
    output: bool,
    keypad_locked: bool,
    protection: u16,
    /// Registers 80.. (presets M0-M9, with OVP/OCP at 82/83), raw.
    presets: [u16; (reg::PRESET_LEN * reg::PRESET_COUNT) as usize],
    /// Current flowing now, + = into the cell; never negative.
    current_a: f64,
    /// Charge and energy delivered since power-on.
    ah: f64,
    wh: f64,
    transactions: u64,
    /// Requests answered with a Modbus exception instead (the reply delay is the handle's
    /// watch, so that a held reply is abandoned when it changes).
    faults: Faults<ExceptionCode>,
}

impl SimState {
    fn set_voltage(&self) -> f64 {
        self.config.model.voltage(self.set_voltage_raw)
    }

    fn set_current(&self) -> f64 {
        self.config.model.current(self.set_current_raw)
    }

    /// The current the regulation settles on now: what holds the voltage setpoint, clamped to
    /// 0..=current limit (the supply cannot sink).
    fn regulated_current(&self) -> f64 {
        if !self.output || self.protection != protection::NONE {
            return 0.0;
        }
        self.cell
            .current_for_voltage(self.set_voltage())
            .clamp(0.0, self.set_current())
    }

    fn advance(&mut self) {
        let now = self.clock.now();
        while self.integrated_to < now {
            let dt = (now - self.integrated_to).min(MAX_SUBSTEP_S);
            self.current_a = self.regulated_current();
            let v = self.cell.terminal_voltage(self.current_a);
            self.cell.step(self.current_a, dt);
            self.ah += self.current_a * dt / 3600.0;
            self.wh += v * self.current_a * dt / 3600.0;
            self.integrated_to += dt;
        }
        self.current_a = self.regulated_current();
    }

    fn voltage(&self) -> f64 {
        self.cell.terminal_voltage(self.current_a)
    }

    fn read_register(&self, addr: u16) -> Result<u16, ExceptionCode> {
        let m = self.config.model;
        let u32_at = |start: u16, value: f64| {
            let v = value.max(0.0).round().min(f64::from(u32::MAX)) as u32;
            wire::u32_to(v)[usize::from(addr - start)]
        };
        Ok(match addr {
            reg::MODEL_ID => m.id(),
            1 | 2 => wire::u32_to(self.config.serial)[usize::from(addr - reg::SERIAL)],
            reg::FIRMWARE => self.config.firmware,
            4 | 5 => wire::temperature_to(30.0)[usize::from(addr - reg::INT_TEMP_SIGN)],
            reg::SET_VOLTAGE => self.set_voltage_raw,
            reg::SET_CURRENT => self.set_current_raw,
            reg::OUT_VOLTAGE => m.voltage_to_raw(self.voltage(), Round::Nearest),
            reg::OUT_CURRENT => m.current_to_raw(self.current_a, Round::Nearest),
            12 | 13 => u32_at(reg::OUT_POWER, self.voltage() * self.current_a * 100.0),
            reg::IN_VOLTAGE => m.voltage_to_raw(INPUT_VOLTAGE_V, Round::Nearest),
            reg::KEYPAD_LOCK => u16::from(self.keypad_locked),
            reg::PROTECTION => self.protection,
            reg::CV_CC => {
                let limited = self.output && self.current_a >= self.set_current() - 1e-9;
                u16::from(limited && self.set_current() > 0.0)
            }
            reg::OUTPUT => u16::from(self.output),
            reg::BATTERY_MODE => 1,
            reg::BATTERY_VOLTAGE => m.voltage_to_raw(self.voltage(), Round::Nearest),
            34 | 35 => wire::temperature_to(self.cell.temperature_c())
                [usize::from(addr - reg::EXT_TEMP_SIGN)],
            38 | 39 => u32_at(reg::AH, self.ah * 1000.0),
            40 | 41 => u32_at(reg::WH, self.wh * 1000.0),
            reg::PRESETS..reg::END => self.presets[usize::from(addr - reg::PRESETS)],
            _ if addr < reg::PRESETS => 0,
            _ => return Err(ExceptionCode::IllegalDataAddress),
        })
    }

    fn write_register(&mut self, addr: u16, word: u16) -> Result<(), ExceptionCode> {
        let m = self.config.model;
        let in_range = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(ExceptionCode::IllegalDataValue)
            }
        };
        match addr {
            reg::SET_VOLTAGE => {
                in_range(word <= m.max_voltage_raw())?;
                self.set_voltage_raw = word;
            }
            reg::SET_CURRENT => {
                in_range(word <= m.max_current_raw())?;
                self.set_current_raw = word;
            }
            reg::KEYPAD_LOCK => {
                in_range(word <= 1)?;
                self.keypad_locked = word == 1;
            }
            reg::OUTPUT => {
                in_range(word <= 1)?;
                self.output = word == 1;
                if self.output {
                    // Switching on again acknowledges a protection trip.
                    self.protection = protection::NONE;
                }
            }
            reg::PRESETS..reg::END => {
                self.presets[usize::from(addr - reg::PRESETS)] = word;
            }
            _ => return Err(ExceptionCode::IllegalDataAddress),
        }
        Ok(())
    }

    fn handle(&mut self, req: Request<'static>) -> Result<Response, ExceptionCode> {
        self.transactions += 1;
        self.advance();
        if let Some(exception) = self.faults.refusal() {
            return Err(exception);
        }
        let response = match req {
            Request::ReadHoldingRegisters(start, count) => {
                Response::ReadHoldingRegisters(modbus::read_block(start, count, |a| {
                    self.read_register(a)
                })?)
            }
            Request::WriteSingleRegister(addr, word) => {
                self.write_register(addr, word)?;
                Response::WriteSingleRegister(addr, word)
            }
            Request::WriteMultipleRegisters(start, words) => {
                for (i, &w) in words.iter().enumerate() {
                    let addr = start
                        .checked_add(i as u16)
                        .ok_or(ExceptionCode::IllegalDataAddress)?;
                    self.write_register(addr, w)?;
                }
                Response::WriteMultipleRegisters(start, words.len() as u16)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        self.current_a = self.regulated_current();
        Ok(response)
    }
}

/// The Modbus service, sharing the device state with the handle.
#[derive(Clone)]
struct RidenService {
    state: Arc<Mutex<SimState>>,
    link: watch::Receiver<bool>,
    delay: watch::Receiver<Duration>,
}

type Reply = Result<Option<Response>, ExceptionCode>;

impl Service for RidenService {
    type Request = SlaveRequest<'static>;
    /// `None` sends nothing: requests for other units, and replies lost with a cut link.
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let state = Arc::clone(&self.state);
        let mut link = self.link.clone();
        let mut delay_rx = self.delay.clone();
        let delay = *delay_rx.borrow_and_update();
        Box::pin(async move {
            if req.slave != lock(&state).config.unit {
                return Ok(None);
            }
            if !delay.is_zero() {
                // The RTU line is half duplex: while this reply is held back nothing else is
                // served. A changed delay or a cut link abandons it (the request is lost).
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = link.wait_for(|up| !up) => return Ok(None),
                    _ = delay_rx.changed() => return Ok(None),
                }
            }
            lock(&state).handle(req.request).map(Some)
        })
    }
}

/// Starts simulated Ridens.
pub struct RidenSim;

impl RidenSim {
    /// Serves a simulated Riden on `pty` (the client opens its slave path) until the returned
    /// handle is dropped. Must be called inside a tokio runtime.
    pub fn spawn(pty: Pty, config: SimConfig, clock: Clock) -> io::Result<SimHandle> {
        let line = Line::open(pty)?;
        let ocp = config
            .model
            .max_current_raw()
            .saturating_add(config.model.max_current_raw() / 50);
        let mut presets = [0; (reg::PRESET_LEN * reg::PRESET_COUNT) as usize];
        presets[usize::from(reg::OVP - reg::PRESETS)] =
            config.model.voltage_to_raw(62.0, Round::Nearest);
        presets[usize::from(reg::OCP - reg::PRESETS)] = ocp;
        let state = Arc::new(Mutex::new(SimState {
            cell: Cell::new(config.cell.clone()),
            integrated_to: clock.now(),
            config,
            clock,
            set_voltage_raw: 0,
            set_current_raw: 0,
            output: false,
            keypad_locked: false,
            protection: protection::NONE,
            presets,
            current_a: 0.0,
            ah: 0.0,
            wh: 0.0,
            transactions: 0,
            faults: Faults::new(ExceptionCode::ServerDeviceFailure),
        }));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (delay_tx, delay_rx) = watch::channel(Duration::ZERO);
        let service = RidenService {
            state: Arc::clone(&state),
            link: line.control.watch(),
            delay: delay_rx,
        };
        let Line {
            path,
            device,
            control,
            relay,
        } = line;
        tokio::spawn(async move {
            let server = Server::new(device).serve_until(service, async {
                let _ = stop_rx.await;
            });
            let result = tokio::select! {
                r = relay => r,
                r = server => r.map(|_| ()),
            };
            if let Err(e) = result {
                tracing::warn!("riden sim stopped: {e}");
            }
        });
        Ok(SimHandle {
            path,
            state,
            line: control,
            delay: delay_tx,
            _stop: stop_tx,
        })
    }
}

/// A running simulator; dropping it stops the server.
pub struct SimHandle {
    path: PathBuf,
    state: Arc<Mutex<SimState>>,
    /// The simulated cable, where line faults are switched.
    line: LineControl,
    delay: watch::Sender<Duration>,
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
    pub keypad_locked: bool,
    pub transactions: u64,
}

impl SimHandle {
    /// The serial port a client opens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn snapshot(&self) -> SimSnapshot {
        let mut s = lock(&self.state);
        s.advance();
        SimSnapshot {
            voltage_v: s.voltage(),
            current_a: s.current_a,
            soc: s.cell.soc(),
            temperature_c: s.cell.temperature_c(),
            output_on: s.output,
            keypad_locked: s.keypad_locked,
            transactions: s.transactions,
        }
    }

    /// Capacity of the simulated cell at beginning of life.
    pub fn capacity_ah(&self) -> f64 {
        lock(&self.state).config.cell.capacity_ah
    }

    /// Trips (over-voltage protection, which switches the output off) or clears the alarm.
    pub fn set_alarm(&self, on: bool) {
        let mut s = lock(&self.state);
        s.advance();
        if on {
            s.protection = protection::OVP;
            s.output = false;
        } else {
            s.protection = protection::NONE;
        }
        s.current_a = s.regulated_current();
    }

    /// Takes the device off the line, as a pulled USB cable does: requests and replies are
    /// lost, so the client sees silence. The output keeps running as it was (a Riden has no
    /// communication watchdog).
    pub fn cut_link(&self) {
        self.line.cut();
    }

    /// Puts the device back on the line, on the same port.
    pub fn restore_link(&self) {
        self.line.restore();
    }

    /// Delays every reply by `delay` of wall time (zero for none), for timeout tests. A reply
    /// held back when the delay changes is abandoned.
    pub fn set_reply_delay(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }

    /// Serves `request` as if another client had sent it (the WiFi board or a second program
    /// on the same Modbus line): the device's rules, not the daemon's.
    pub fn request_from_another_client(
        &self,
        request: Request<'static>,
    ) -> Result<Response, ExceptionCode> {
        lock(&self.state).handle(request)
    }

    /// The voltage and current setpoints as the device holds them, raw.
    pub fn setpoints(&self) -> (u16, u16) {
        let s = lock(&self.state);
        (s.set_voltage_raw, s.set_current_raw)
    }

    /// Answers the next `n` requests with the Modbus exception `code`.
    pub fn fail_next(&self, n: u32, code: ExceptionCode) {
        lock(&self.state).faults.fail_next(n, code);
    }

    /// Sends the next `n` replies with a broken CRC (the client discards them: it sees no
    /// reply).
    pub fn corrupt_next(&self, n: u32) {
        self.line.corrupt_next(n);
    }
}
