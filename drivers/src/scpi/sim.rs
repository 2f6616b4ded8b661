//! Simulated SCPI instruments on raw TCP sockets or pseudo-terminals, backed by one cell.
//!
//! A *bench* is one cell with one or more instruments on its terminals (a supply and a load
//! share a cell in [`ScpiSim::spawn_bench`]); every instrument serves its dialect on its own
//! port. Each keeps the semantics a driver depends on: `*IDN?` answers a realistic identity,
//! EA refuses setpoints and output changes until `SYST:LOCK ON`, out-of-range setpoints and
//! unknown headers go to the `SYST:ERR?` queue (`-222,"Data out of range"`,
//! `-113,"Undefined header"`) and leave the setting as it was, and the output regulates like
//! the real stage: CC/CV crossover at the limits for supplies and SMUs, sinking only for a load.
//!
//! Faults are injected through the [`SimHandle`]: a cut link, delayed replies, an alarm (the
//! output stage stops while it is raised) and entries pushed into the error queue.

use super::wire::{self, Ratings};
use crate::Clock;
use crate::cell::{Cell, CellParams};
pub use crate::transport::SimPort;
#[cfg(unix)]
use crate::transport::line::LineControl;
use crate::transport::lock;
use crate::transport::network::{Link, delay_unless_cut, read_until_unless_cut};
use crate::transport::{Endpoint, Served};
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{oneshot, watch};

/// Longest simulated interval integrated in one piece; keeps the CV law stable.
const MAX_SUBSTEP_S: f64 = 0.5;
/// Error queue depth; the last entry becomes a queue overflow beyond it, as SCPI requires.
const QUEUE_DEPTH: usize = 10;
/// Longest command line served; a longer one closes the connection.
const MAX_LINE: usize = 4096;

/// Which instrument the simulator pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimDialect {
    /// EA PSB over SCPI: bidirectional, needs `SYST:LOCK ON`, `MEAS:ARR?` with units.
    EaPsb,
    /// Keithley 2450 SMU.
    Keithley2450,
    /// Keysight B2901A SMU.
    KeysightB2901,
    /// B&K Precision 8600 electronic load: sinks only.
    Bk8600,
    /// ITECH IT6012C-80-300 bidirectional supply in CV priority; bare-number replies.
    ItechIt6000,
}

/// What the simulated instrument is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub dialect: SimDialect,
    /// The full `*IDN?` reply.
    pub idn: String,
    /// Setpoints beyond these (102 % for EA) are out of range.
    pub ratings: Ratings,
}

impl SimConfig {
    /// A realistic instrument of `dialect` with serial number `serial`.
    pub fn new(dialect: SimDialect, serial: &str) -> SimConfig {
        let (idn, ratings) = match dialect {
            SimDialect::EaPsb => (
                format!(
                    "EA Elektro-Automatik GmbH & Co. KG, PSB 10060-60, {serial}, V2.10 03.05.2021"
                ),
                Ratings {
                    voltage_v: 60.0,
                    current_a: 60.0,
                    power_w: 1500.0,
                },
            ),
            SimDialect::Keithley2450 => (
                format!("KEITHLEY INSTRUMENTS,MODEL 2450,{serial},1.7.12b"),
                ratings("2450"),
            ),
            SimDialect::KeysightB2901 => (
                format!("Keysight Technologies,B2901A,{serial},5.0.1982.7300"),
                ratings("B290"),
            ),
            SimDialect::Bk8600 => (
                format!("B&K Precision, 8600, {serial}, 1.37-1.42"),
                ratings("8600"),
            ),
            SimDialect::ItechIt6000 => (
                format!("ITECH Ltd., IT6012C-80-300, {serial}, 1.09-1.08"),
                ratings("IT6012C-80-300"),
            ),
        };
        SimConfig {
            dialect,
            idn,
            ratings,
        }
    }
}

fn ratings(model: &str) -> Ratings {
    wire::ratings_for_model(model).unwrap_or(Ratings {
        voltage_v: 0.0,
        current_a: 0.0,
        power_w: 0.0,
    })
}

/// The source function of an SMU or load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Current,
    Voltage,
    Power,
}

#[derive(Debug)]
struct Instrument {
    config: SimConfig,
    output: bool,
    /// EA: `SYST:LOCK ON`; BK: `SYST:REM`.
    remote: bool,
    func: Func,
    volt: f64,
    curr: f64,
    pow: f64,
    sink_curr: f64,
    sink_pow: f64,
    /// SMU compliance limits.
    vlim: f64,
    ilim: f64,
    errors: VecDeque<(i32, String)>,
    alarm: bool,
    /// Current flowing now through this instrument, + = into the cell.
    current_a: f64,
    transactions: u64,
    reply_delay: Duration,
}

impl Instrument {
    fn new(config: SimConfig) -> Instrument {
        let mut i = Instrument {
            config,
            output: false,
            remote: false,
            func: Func::Voltage,
            volt: 0.0,
            curr: 0.0,
            pow: 0.0,
            sink_curr: 0.0,
            sink_pow: 0.0,
            vlim: 0.0,
            ilim: 0.0,
            errors: VecDeque::new(),
            alarm: false,
            current_a: 0.0,
            transactions: 0,
            reply_delay: Duration::ZERO,
        };
        i.reset();
        i
    }

    /// `*RST` defaults: output off, setpoints zero, SMU compliance at its power-on values.
    fn reset(&mut self) {
        self.output = false;
        self.func = match self.config.dialect {
            SimDialect::Bk8600 => Func::Current,
            _ => Func::Voltage,
        };
        self.volt = 0.0;
        self.curr = 0.0;
        self.pow = 0.0;
        self.sink_curr = 0.0;
        self.sink_pow = 0.0;
        self.vlim = 21.0;
        self.ilim = 1.05e-4;
    }

    fn push_error(&mut self, code: i32, message: &str) {
        if self.errors.len() >= QUEUE_DEPTH {
            if let Some(last) = self.errors.back_mut() {
                *last = (-350, "Queue overflow".into());
            }
            return;
        }
        self.errors.push_back((code, message.into()));
    }

    /// The current this instrument drives into `cell` now, + = into the cell.
    fn regulated(&self, cell: &Cell) -> f64 {
        if !self.output || self.alarm {
            return 0.0;
        }
        let at = |v: f64| cell.current_for_voltage(v);
        let r = self.config.ratings;
        match self.config.dialect {
            // CV priority with source and sink limits; CC priority is not modelled.
            SimDialect::EaPsb | SimDialect::ItechIt6000 => {
                let wanted = at(self.volt);
                let v = cell.terminal_voltage(wanted).max(0.1);
                let source_max = self.curr.min(self.pow / v).max(0.0);
                let sink_max = self.sink_curr.min(self.sink_pow / v).max(0.0);
                wanted.clamp(-sink_max, source_max)
            }
            SimDialect::Keithley2450 | SimDialect::KeysightB2901 => match self.func {
                // The compliance voltage is a magnitude: |V| <= vlim.
                Func::Current if self.curr >= 0.0 => self.curr.min(at(self.vlim).max(0.0)),
                Func::Current => self.curr.max(at(-self.vlim).min(0.0)),
                _ => at(self.volt).clamp(-self.ilim, self.ilim),
            },
            SimDialect::Bk8600 => {
                // A load never pushes current in, nor pulls the terminals below 0 V.
                let floor = at(0.0).min(0.0);
                let i = match self.func {
                    Func::Current => -self.curr,
                    Func::Voltage => at(self.volt).min(0.0).max(-r.current_a),
                    Func::Power => {
                        // Sink P: (E + i R0) i = -P, the root near -P / E.
                        let r0 = cell.params().r0_ohm;
                        let e = cell.terminal_voltage(0.0);
                        let disc = e * e - 4.0 * r0 * self.pow;
                        if disc >= 0.0 {
                            (-e + disc.sqrt()) / (2.0 * r0)
                        } else {
                            -e / (2.0 * r0)
                        }
                    }
                };
                i.max(floor).min(0.0)
            }
        }
    }
}

struct Bench {
    clock: Clock,
    cell: Cell,
    integrated_to: f64,
    instruments: Vec<Instrument>,
}

impl Bench {
    fn total_current(&mut self) -> f64 {
        let mut total = 0.0;
        for inst in &mut self.instruments {
            inst.current_a = inst.regulated(&self.cell);
            total += inst.current_a;
        }
        total
    }

    fn advance(&mut self) {
        let now = self.clock.now();
        while self.integrated_to < now {
            let dt = (now - self.integrated_to).min(MAX_SUBSTEP_S);
            let i = self.total_current();
            self.cell.step(i, dt);
            self.integrated_to += dt;
        }
        self.total_current();
    }

    fn voltage(&self) -> f64 {
        let total: f64 = self.instruments.iter().map(|i| i.current_a).sum();
        self.cell.terminal_voltage(total)
    }

    /// One received line: `;`-separated commands, the replies of its queries joined by `;`.
    fn handle_line(&mut self, idx: usize, line: &str) -> Option<String> {
        self.advance();
        let mut replies = Vec::new();
        for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let voltage = self.voltage();
            let inst = &mut self.instruments[idx];
            inst.transactions += 1;
            if let Some(reply) = execute(inst, part, voltage) {
                replies.push(reply);
            }
            // A setting takes effect at once.
            self.total_current();
        }
        (!replies.is_empty()).then(|| replies.join(";"))
    }
}

/// Scientific notation as SMUs print it: `+4.200000E+00`.
fn sci(x: f64) -> String {
    let s = format!("{:.6E}", x.abs());
    let (mantissa, exp) = s.split_once('E').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if x < 0.0 { '-' } else { '+' };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}E{esign}{:02}", exp.abs())
}

fn on_off(arg: &str) -> Option<bool> {
    wire::parse_bool(arg)
}

/// Executes one command on `inst`; `voltage` is the terminal voltage now.
fn execute(inst: &mut Instrument, part: &str, voltage: f64) -> Option<String> {
    let (header, arg) = match part.split_once(char::is_whitespace) {
        Some((h, a)) => (h, a.trim()),
        None => (part, ""),
    };
    let mut header = wire::normalize_header(header);
    let dialect = inst.config.dialect;
    if matches!(
        dialect,
        SimDialect::EaPsb | SimDialect::Bk8600 | SimDialect::ItechIt6000
    ) {
        // The SOURce node is optional in these command sets.
        if let Some(rest) = header.strip_prefix("SOUR:") {
            header = rest.to_string();
        }
    }
    let r = inst.config.ratings;
    let current = inst.current_a;
    // Common commands.
    match header.as_str() {
        "*IDN?" => return Some(inst.config.idn.clone()),
        "*CLS" => {
            inst.errors.clear();
            return None;
        }
        "*RST" => {
            inst.reset();
            return None;
        }
        "*OPC?" => return Some("1".into()),
        "SYST:ERR?" => {
            let (code, msg) = inst
                .errors
                .pop_front()
                .unwrap_or((0, "No error".to_string()));
            let code = if dialect == SimDialect::KeysightB2901 {
                format!("{code:+}")
            } else {
                code.to_string()
            };
            return Some(format!("{code},\"{msg}\""));
        }
        _ => {}
    }
    // A numeric setpoint within 0..=max, or an error in the queue.
    let number = |inst: &mut Instrument, lo: f64, hi: f64| -> Option<f64> {
        match wire::parse_number(arg) {
            None => {
                inst.push_error(-104, "Data type error");
                None
            }
            Some(v) if v < lo || v > hi => {
                inst.push_error(-222, "Data out of range");
                None
            }
            Some(v) => Some(v),
        }
    };
    let func = |inst: &mut Instrument, allowed: &[(&str, Func)]| {
        let a = wire::normalize_header(arg);
        match allowed.iter().find(|(name, _)| *name == a) {
            Some(&(_, f)) => inst.func = f,
            None => inst.push_error(-224, "Illegal parameter value"),
        }
    };
    let switch = |inst: &mut Instrument| match on_off(arg) {
        Some(on) => inst.output = on,
        None => inst.push_error(-224, "Illegal parameter value"),
    };
    match dialect {
        SimDialect::EaPsb => {
            let max = 1.02;
            let locked = inst.remote;
            let protected = |inst: &mut Instrument| {
                if !locked {
                    inst.push_error(-203, "Command protected");
                }
                !locked
            };
            match header.as_str() {
                "SYST:LOCK" => match on_off(arg) {
                    Some(on) => {
                        inst.remote = on;
                        if !on {
                            // Giving up remote control switches the output off.
                            inst.output = false;
                        }
                    }
                    None => inst.push_error(-224, "Illegal parameter value"),
                },
                "SYST:LOCK:OWN?" => {
                    return Some(if locked { "REMOTE" } else { "NONE" }.into());
                }
                "SYST:NOM:VOLT?" => return Some(format!("{:.1} V", r.voltage_v)),
                "SYST:NOM:CURR?" => return Some(format!("{:.1} A", r.current_a)),
                "SYST:NOM:POW?" => return Some(format!("{:.0} W", r.power_w)),
                "VOLT" | "CURR" | "POW" | "SINK:CURR" | "SINK:POW" => {
                    if protected(inst) {
                        return None;
                    }
                    let hi = match header.as_str() {
                        "VOLT" => r.voltage_v,
                        "CURR" | "SINK:CURR" => r.current_a,
                        _ => r.power_w,
                    } * max;
                    if let Some(v) = number(inst, 0.0, hi) {
                        match header.as_str() {
                            "VOLT" => inst.volt = v,
                            "CURR" => inst.curr = v,
                            "POW" => inst.pow = v,
                            "SINK:CURR" => inst.sink_curr = v,
                            _ => inst.sink_pow = v,
                        }
                    }
                }
                "VOLT?" => return Some(format!("{:.2} V", inst.volt)),
                "CURR?" => return Some(format!("{:.2} A", inst.curr)),
                "POW?" => return Some(format!("{:.1} W", inst.pow)),
                "SINK:CURR?" => return Some(format!("{:.2} A", inst.sink_curr)),
                "SINK:POW?" => return Some(format!("{:.1} W", inst.sink_pow)),
                "OUTP" => {
                    if !protected(inst) {
                        switch(inst);
                    }
                }
                "OUTP?" => return Some(if inst.output { "ON" } else { "OFF" }.into()),
                "MEAS:ARR?" => {
                    return Some(format!(
                        "{:.3} V, {:.3} A, {:.2} W",
                        voltage,
                        current,
                        voltage * current
                    ));
                }
                "MEAS:VOLT?" => return Some(format!("{voltage:.3} V")),
                "MEAS:CURR?" => return Some(format!("{current:.3} A")),
                "STAT:QUES:COND?" => return Some(if inst.alarm { "1" } else { "0" }.into()),
                _ => inst.push_error(-113, "Undefined header"),
            }
        }
        SimDialect::Keithley2450 | SimDialect::KeysightB2901 => {
            let keysight = dialect == SimDialect::KeysightB2901;
            let funcs = [("CURR", Func::Current), ("VOLT", Func::Voltage)];
            match (header.as_str(), keysight) {
                ("SOUR:FUNC", false) | ("SOUR:FUNC:MODE", true) => func(inst, &funcs),
                ("SOUR:FUNC?", false) | ("SOUR:FUNC:MODE?", true) => {
                    return Some(
                        if inst.func == Func::Current {
                            "CURR"
                        } else {
                            "VOLT"
                        }
                        .into(),
                    );
                }
                ("SOUR:CURR", _) => {
                    if let Some(v) = number(inst, -r.current_a, r.current_a) {
                        inst.curr = v;
                    }
                }
                ("SOUR:VOLT", _) => {
                    if let Some(v) = number(inst, -r.voltage_v, r.voltage_v) {
                        inst.volt = v;
                    }
                }
                ("SOUR:CURR:VLIM", false) | ("SENS:VOLT:PROT", true) => {
                    if let Some(v) = number(inst, 0.02, r.voltage_v) {
                        inst.vlim = v;
                    }
                }
                ("SOUR:VOLT:ILIM", false) | ("SENS:CURR:PROT", true) => {
                    if let Some(v) = number(inst, 1e-8, r.current_a) {
                        inst.ilim = v;
                    }
                }
                ("FORM:ELEM:SENS", true) => {}
                ("OUTP", _) => switch(inst),
                ("OUTP?", _) => return Some(if inst.output { "1" } else { "0" }.into()),
                ("MEAS:VOLT?", _) => return Some(sci(voltage)),
                ("MEAS:CURR?", _) | ("READ?", false) => return Some(sci(current)),
                ("MEAS?", true) => return Some(format!("{},{}", sci(voltage), sci(current))),
                _ => inst.push_error(-113, "Undefined header"),
            }
        }
        SimDialect::ItechIt6000 => {
            // Sink limits may be written with either sign (uncertain which the device wants).
            let signed = |inst: &mut Instrument, hi: f64| number(inst, -hi, hi).map(f64::abs);
            match header.as_str() {
                "SYST:REM" => inst.remote = true,
                "SYST:LOC" => inst.remote = false,
                "FUNC" => func(inst, &[("VOLT", Func::Voltage), ("CURR", Func::Current)]),
                "VOLT" => {
                    if let Some(v) = number(inst, 0.0, r.voltage_v) {
                        inst.volt = v;
                    }
                }
                "CURR:LIM" => {
                    if let Some(v) = number(inst, 0.0, r.current_a) {
                        inst.curr = v;
                    }
                }
                "CURR:LIM:NEG" => {
                    if let Some(v) = signed(inst, r.current_a) {
                        inst.sink_curr = v;
                    }
                }
                "POW:LIM" => {
                    if let Some(v) = number(inst, 0.0, r.power_w) {
                        inst.pow = v;
                    }
                }
                "POW:LIM:NEG" => {
                    if let Some(v) = signed(inst, r.power_w) {
                        inst.sink_pow = v;
                    }
                }
                "OUTP" => switch(inst),
                "OUTP?" => return Some(if inst.output { "1" } else { "0" }.into()),
                "MEAS:VOLT?" => return Some(format!("{voltage:.4}")),
                "MEAS:CURR?" => return Some(format!("{current:.4}")),
                "MEAS:POW?" => return Some(format!("{:.4}", voltage * current)),
                _ => inst.push_error(-113, "Undefined header"),
            }
        }
        SimDialect::Bk8600 => {
            let funcs = [
                ("CURR", Func::Current),
                ("VOLT", Func::Voltage),
                ("POW", Func::Power),
            ];
            match header.as_str() {
                "SYST:REM" => inst.remote = true,
                "SYST:LOC" => {
                    inst.remote = false;
                    inst.output = false;
                }
                "FUNC" => func(inst, &funcs),
                "CURR" => {
                    if let Some(v) = number(inst, 0.0, r.current_a) {
                        inst.curr = v;
                    }
                }
                "VOLT" => {
                    if let Some(v) = number(inst, 0.0, r.voltage_v) {
                        inst.volt = v;
                    }
                }
                "POW" => {
                    if let Some(v) = number(inst, 0.0, r.power_w) {
                        inst.pow = v;
                    }
                }
                "INP" => switch(inst),
                "INP?" => return Some(if inst.output { "1" } else { "0" }.into()),
                "MEAS:VOLT?" => return Some(format!("{voltage:.4}")),
                "MEAS:CURR?" => return Some(format!("{:.4}", current.abs())),
                "MEAS:POW?" => return Some(format!("{:.4}", (voltage * current).abs())),
                _ => inst.push_error(-113, "Undefined header"),
            }
        }
    }
    None
}

/// Starts simulated SCPI instruments.
pub struct ScpiSim;

impl ScpiSim {
    /// Serves one simulated instrument with its own cell on `port` until the handle drops.
    pub fn spawn(
        port: impl Into<SimPort>,
        config: SimConfig,
        cell: CellParams,
        clock: Clock,
    ) -> io::Result<SimHandle> {
        let mut handles = ScpiSim::spawn_bench(vec![(port.into(), config)], cell, clock)?;
        Ok(handles.remove(0))
    }

    /// Serves several instruments wired to one cell (a supply and a load, say), each on its
    /// own port; handles come back in the given order. Must be called inside a tokio runtime.
    pub fn spawn_bench(
        instruments: Vec<(SimPort, SimConfig)>,
        cell: CellParams,
        clock: Clock,
    ) -> io::Result<Vec<SimHandle>> {
        let (ports, configs): (Vec<_>, Vec<_>) = instruments.into_iter().unzip();
        let bench = Arc::new(Mutex::new(Bench {
            cell: Cell::new(cell),
            integrated_to: clock.now(),
            clock,
            instruments: configs.into_iter().map(Instrument::new).collect(),
        }));
        let mut handles = Vec::new();
        for (idx, port) in ports.into_iter().enumerate() {
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let served = Arc::clone(&bench);
            let Served {
                endpoint,
                link,
                #[cfg(unix)]
                line,
            } = port.serve("scpi sim", 9600, stop_rx, move |stream, link| {
                connection(stream, Arc::clone(&served), idx, link)
            })?;
            handles.push(SimHandle {
                endpoint,
                idx,
                bench: Arc::clone(&bench),
                link,
                #[cfg(unix)]
                line,
                _stop: stop_tx,
            });
        }
        Ok(handles)
    }
}

async fn connection(
    stream: impl AsyncRead + AsyncWrite + Send + 'static,
    bench: Arc<Mutex<Bench>>,
    idx: usize,
    mut link: watch::Receiver<bool>,
) {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        // A cut link (or a dropped handle) ends the connection, closing the socket.
        if !read_until_unless_cut(&mut rd, b'\n', MAX_LINE, &mut buf, &mut link).await
            || (buf.last() != Some(&b'\n') && buf.len() >= MAX_LINE)
        {
            return;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\r', '\n']);
        let (reply, delay) = {
            let mut b = lock(&bench);
            let reply = b.handle_line(idx, line);
            (reply, b.instruments[idx].reply_delay)
        };
        let Some(reply) = reply else { continue };
        if !delay_unless_cut(delay, &mut link).await {
            return;
        }
        let mut out = reply.into_bytes();
        out.push(b'\n');
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A running instrument; dropping it stops its server (the bench lives while any handle does).
pub struct SimHandle {
    /// Where a client reaches the instrument.
    endpoint: Endpoint,
    /// Which instrument of the bench this is.
    idx: usize,
    bench: Arc<Mutex<Bench>>,
    /// The network link, or the serial line's cable.
    link: Link,
    /// The serial line's fault switches, when the instrument is on one.
    #[cfg(unix)]
    line: Option<LineControl>,
    _stop: oneshot::Sender<()>,
}

/// What the simulated instrument and its cell show from the outside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimSnapshot {
    pub voltage_v: f64,
    /// Through this instrument, + = into the cell.
    pub current_a: f64,
    /// Through the cell, all instruments together.
    pub cell_current_a: f64,
    pub soc: f64,
    pub temperature_c: f64,
    pub output_on: bool,
    pub remote: bool,
    pub transactions: u64,
}

impl SimHandle {
    /// Where a client reaches the instrument.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    pub fn snapshot(&self) -> SimSnapshot {
        let mut b = lock(&self.bench);
        b.advance();
        let cell_current_a = b.instruments.iter().map(|i| i.current_a).sum();
        let inst = &b.instruments[self.idx];
        SimSnapshot {
            voltage_v: b.voltage(),
            current_a: inst.current_a,
            cell_current_a,
            soc: b.cell.soc(),
            temperature_c: b.cell.temperature_c(),
            output_on: inst.output,
            remote: inst.remote,
            transactions: inst.transactions,
        }
    }

    /// Capacity of the simulated cell at beginning of life.
    pub fn capacity_ah(&self) -> f64 {
        lock(&self.bench).cell.params().capacity_ah
    }

    /// Raises or clears the instrument's alarm (its output stage stops while raised).
    pub fn set_alarm(&self, on: bool) {
        let mut b = lock(&self.bench);
        b.advance();
        b.instruments[self.idx].alarm = on;
        b.total_current();
    }

    /// Pulls the cable: on the network open connections close and new ones are closed on
    /// arrival; on a serial line commands and replies are lost. The output keeps running as
    /// it was.
    pub fn cut_link(&self) {
        self.link.cut();
    }

    /// Plugs the cable back in, on the same address or port.
    pub fn restore_link(&self) {
        self.link.restore();
    }

    /// Breaks the next `n` replies on a serial line (they lose their terminator, so the
    /// client times out); no effect on the network.
    pub fn corrupt_next(&self, n: u32) {
        #[cfg(unix)]
        if let Some(line) = &self.line {
            line.corrupt_next(n);
        }
        #[cfg(not(unix))]
        let _ = n;
    }

    /// Delays every reply by `delay` of wall time (zero for none).
    pub fn set_reply_delay(&self, delay: Duration) {
        lock(&self.bench).instruments[self.idx].reply_delay = delay;
    }

    /// Executes `line` (e.g. `OUTP ON`) as if another client had sent it: a second socket, the
    /// front panel's equivalent, a colleague's script. Returns the replies of its queries.
    pub fn line_from_another_client(&self, line: &str) -> Option<String> {
        let mut b = lock(&self.bench);
        b.handle_line(self.idx, line)
    }

    /// Puts an entry into the error queue, answered by the next `SYST:ERR?`.
    pub fn push_error(&self, code: i32, message: &str) {
        lock(&self.bench).instruments[self.idx].push_error(code, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smu_numbers_print_like_an_smu() {
        assert_eq!(sci(4.2), "+4.200000E+00");
        assert_eq!(sci(-0.001), "-1.000000E-03");
        assert_eq!(sci(0.0), "+0.000000E+00");
        assert_eq!(wire::parse_number(&sci(-12.5)), Some(-12.5));
    }
}
