//! A simulated Maccor tester: MacNet's binary and JSON protocols on two TCP listeners, many
//! channels, one cell per channel.
//!
//! Procedures arrive by (1,6) file transfer and are kept by name; a start imports the procedure
//! back into a plan (`import(.., SourceKind::Maccor, ..)`) and runs cyclerd's engine against
//! the channel's cell. Time is the [`Clock`]'s: every request first integrates every channel up
//! to `clock.now()` in sub-steps, logging a record every `record_interval_s` of test time and at
//! every step change, numbered from 1 without gaps (`LastRec`), in a device-side log that the
//! record-log read request (see the `maccor` module doc) downloads from any index.
//!
//! It keeps what a client depends on: status and RF1/RF2 codes, result codes (19/20 name not
//! unique, 23 channel in use, 24 no channel selected), JSON-RPC errors with MacNet's texts,
//! binary start only after a select, direct mode with outputs refused when less than 100 ms of
//! clock time apart (result 3), the JSON (6,8) unable to set rest ("Illegal value"), and the
//! `MacNetDirectModeWD` watchdog suspending an unfed direct-mode channel.
//!
//! Where the real tester's answer is not public, the simulator's choice is documented at the
//! item: a refused binary request gets an empty reply (Len 0), a start naming a missing
//! procedure gets [`wire::result::SIM_PROCEDURE_UNUSABLE`], suspend/resume of a channel that
//! is not active/suspended gets result 2.
//!
//! Faults are injected through the [`SimHandle`]: a cut link (connections drop, new ones are
//! closed on arrival, the channels keep running), delayed replies, an error reply for the next
//! requests, a reading answered for the wrong channel, and a problem state on a channel.

use super::client::MaccorConfig;
use super::wire::{
    self, ChannelStat, DirectStart, Frame, Function, JsonRequest, Mode, Output, Packet, Reading,
    StartTest, StatusBlock, SystemInfo, Version, json_error, rf1, rf2, stat,
};
use crate::Clock;
use crate::cell::{Cell, CellParams};
use crate::cycler_sim::{Log, load_schedule};
use crate::stage::ideal_current;
use crate::transport::faults::Faults;
use crate::transport::network::{
    Link, accept_while_linked, delay_unless_cut, read_until_unless_cut, unless_cut,
};
use cyclerd_protocols::import::SourceKind;
use cyclerd_protocols::{Command, Engine, Measurement, Outcome, Safety};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Longest simulated interval integrated in one piece; keeps cutoffs and the CV law sharp.
const MAX_SUBSTEP_S: f64 = 0.5;
/// Largest file the simulated tester accepts.
const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Tolerance on record times, against floating-point drift in the sub-steps.
const TIME_EPS_S: f64 = 1e-9;

/// What the simulated tester is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One cell per channel; the tester has as many channels.
    pub cells: Vec<CellParams>,
    /// Simulated seconds between logged records of a procedure test (a record is also logged
    /// at every step change and at the start).
    pub record_interval_s: f64,
    /// The limits procedures run under: a Maccor procedure carries none of its own, the
    /// tester's channel safety limits play that part.
    pub limits: Safety,
    /// Channel current rating, A: a direct-mode current outside 0..=rating means "no limit".
    pub max_current_a: f64,
    /// Channel voltage rating, V: likewise for direct-mode voltages (power: the product).
    pub max_voltage_v: f64,
    /// `MacNetDirectModeWD`: clock seconds without a (6,8) after which a direct-mode channel
    /// suspends; `None` (the tester's 0) disables it.
    pub direct_watchdog_s: Option<f64>,
    /// How the record-log read request is answered (served, or as a tester that knows only
    /// MacNet's documented write direction might).
    pub record_log: RecordLog,
    /// Reported by (1,2).
    pub system_id: String,
}

impl SimConfig {
    /// `channels` channels, each with a copy of `cell`; records every 10 s; limits 2.0-4.4 V,
    /// 10 A, 80 degC; channels rated 10 A and 5 V; no watchdog; the record log served.
    pub fn new(channels: usize, cell: CellParams) -> SimConfig {
        SimConfig {
            cells: vec![cell; channels],
            record_interval_s: 10.0,
            limits: Safety {
                voltage_min: Some(2.0),
                voltage_max: Some(4.4),
                current_max: Some(10.0),
                temperature_max: Some(80.0),
                capacity_max: None,
            },
            max_current_a: 10.0,
            max_voltage_v: 5.0,
            direct_watchdog_s: None,
            record_log: RecordLog::Served,
            system_id: "MacTest sim".into(),
        }
    }
}

/// How the simulated tester answers cyclerd's record-log read request, which MacNet does not
/// document (see the `maccor` module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLog {
    /// Records are served from any index.
    Served,
    /// Answered with an ERROR packet ("unknown opcode").
    Refused,
    /// Not answered at all.
    Ignored,
}

/// What drives a channel's output during a test.
enum Control {
    /// A procedure: the engine and the command it last gave.
    Procedure {
        engine: Box<Engine>,
        command: Command,
    },
    /// Direct mode: the output last set and when (clock time), for the 100 ms rule and the
    /// watchdog.
    Direct { output: Output, set_at: f64 },
}

/// The test on a channel, kept after it ends (its log and name stay until the next start).
struct Test {
    name: String,
    control: Control,
    /// Seconds the test has run (suspended time does not count).
    test_time_s: f64,
    /// Test time of the last logged record.
    last_record_s: f64,
    /// Seconds between records (`None` for none).
    record_every_s: Option<f64>,
    /// Direct mode's charge and energy counters (a procedure's come from the engine).
    capacity_ah: f64,
    energy_wh: f64,
}

/// The counters of a step that just ended, for the record that closes it.
#[derive(Clone, Copy)]
struct StepEnd {
    step: u16,
    duration_s: f64,
    capacity_ah: f64,
    energy_wh: f64,
}

struct Channel {
    cell: Cell,
    /// Clock time up to which the cell has been integrated.
    integrated_to: f64,
    stat: u16,
    rf1: u8,
    rf2: u8,
    selected: bool,
    test: Option<Test>,
    /// Current flowing now, + = into the cell.
    current_a: f64,
    /// The device-side record log of the test; entry `i` is record `i + 1`.
    log: Log<Reading>,
    /// Why the engine faulted, when it did.
    fault: Option<String>,
    /// Clock times of accepted direct outputs and the count of those refused as too fast.
    outputs: Vec<f64>,
    refused_outputs: u32,
}

struct Tester {
    config: SimConfig,
    clock: Clock,
    channels: Vec<Channel>,
    /// Procedure texts by upper-case name (Windows file names ignore case).
    procedures: HashMap<String, String>,
    /// Upper-case names of every test ever started: their data files exist.
    names: HashSet<String>,
    /// For "Random" test names.
    random_names: u32,
    /// Injected through the handle: the reply delay, and requests that fail ("MacNet error" in
    /// JSON, an empty binary reply).
    faults: Faults,
    /// The next (4,7) is answered with this channel's reading (and number).
    misroute: Option<u16>,
}

/// A request, whichever encoding it came in.
enum Request {
    Echo,
    Version,
    SystemInfo,
    Status {
        first: u16,
        count: u16,
    },
    Reading {
        chan: u16,
    },
    Select {
        chan: u16,
    },
    /// `select`: the JSON start selects the channel itself.
    Start {
        chan: u16,
        start: StartTest,
        select: bool,
    },
    Suspend {
        chan: u16,
    },
    Resume {
        chan: u16,
    },
    Reset {
        chan: u16,
    },
    DirectStart {
        chan: u16,
        start: DirectStart,
    },
    DirectOutput {
        chan: u16,
        output: Output,
    },
}

/// What a request is answered with.
enum Response {
    Echo,
    Version(Version),
    SystemInfo(SystemInfo),
    Status(StatusBlock),
    Reading {
        chan: u16,
        reading: Reading,
    },
    Result {
        chan: u16,
        code: u32,
    },
    /// JSON "Illegal value"; binary empty reply.
    Illegal,
}

impl Channel {
    fn new(params: CellParams, now: f64) -> Channel {
        Channel {
            cell: Cell::new(params),
            integrated_to: now,
            stat: stat::AVAILABLE,
            rf1: rf1::AVAILABLE,
            rf2: 0,
            selected: false,
            test: None,
            current_a: 0.0,
            log: Log::default(),
            fault: None,
            outputs: Vec::new(),
            refused_outputs: 0,
        }
    }

    /// The current the channel drives now.
    fn regulated(&self, config: &SimConfig) -> f64 {
        match (&self.test, self.stat) {
            (Some(test), stat::ACTIVE) => match &test.control {
                Control::Procedure { command, .. } => ideal_current(&self.cell, command),
                Control::Direct { output, .. } => direct_current(&self.cell, output, config),
            },
            _ => 0.0,
        }
    }

    /// RF1 while active: the direction the output drives.
    fn active_rf1(&self) -> u8 {
        if self.current_a > 1e-9 {
            rf1::CHARGE
        } else if self.current_a < -1e-9 {
            rf1::DISCHARGE
        } else {
            match &self.test {
                Some(Test {
                    control: Control::Direct { output, .. },
                    ..
                }) => match output.mode {
                    Mode::Charge => rf1::CHARGE,
                    Mode::Discharge => rf1::DISCHARGE,
                    Mode::Rest => rf1::REST,
                },
                _ => rf1::REST,
            }
        }
    }

    /// The (4,7) reading now; `ended` replaces the step counters in the record that closes a
    /// step.
    fn reading(&self, clock: &Clock, ended: Option<StepEnd>) -> Reading {
        let voltage = self.cell.terminal_voltage(self.current_a);
        let (cycle, step, test_time, step_time, cap, energy) = match &self.test {
            None => (0, 0, 0.0, 0.0, 0.0, 0.0),
            Some(t) => match &t.control {
                Control::Procedure { engine, .. } => {
                    let s = engine.status();
                    (
                        s.cycle.saturating_sub(1),
                        (s.plan_index + 1) as u16,
                        t.test_time_s,
                        t.test_time_s - s.step_start_s,
                        s.step_charge_ah + s.step_discharge_ah,
                        s.step_energy_wh,
                    )
                }
                // Direct mode is one step.
                Control::Direct { .. } => (
                    0,
                    1,
                    t.test_time_s,
                    t.test_time_s,
                    t.capacity_ah,
                    t.energy_wh,
                ),
            },
        };
        let (step, step_time, cap, energy) = ended.map_or((step, step_time, cap, energy), |e| {
            (e.step, e.duration_s, e.capacity_ah, e.energy_wh)
        });
        Reading {
            rf1: self.rf1,
            rf2: self.rf2,
            stat: self.stat,
            last_rec: self.log.count() as u32,
            cycle,
            step,
            test_time_s: test_time as f32,
            step_time_s: step_time as f32,
            capacity_ah: cap as f32,
            energy_wh: energy as f32,
            // A magnitude, its direction in RF1, as in Maccor's data files.
            current_a: self.current_a.abs() as f32,
            voltage_v: voltage as f32,
            tester_time_ms: Some((clock.unix_time_s() * 1000.0) as u64),
        }
    }

    fn log_record(&mut self, clock: &Clock, ended: Option<StepEnd>) {
        let mut r = self.reading(clock, ended);
        r.last_rec = self.log.count() as u32 + 1;
        self.log.push(r);
        if let Some(t) = &mut self.test {
            t.last_record_s = t.test_time_s;
        }
    }

    fn set_state(&mut self, stat_code: u16, rf1_code: u8, rf2_code: u8) {
        self.stat = stat_code;
        self.rf1 = rf1_code;
        self.rf2 = rf2_code;
        if stat_code != stat::ACTIVE {
            self.current_a = 0.0;
        }
    }

    /// Integrates the channel up to clock time `now`.
    fn advance(&mut self, now: f64, config: &SimConfig, clock: &Clock) {
        while self.integrated_to < now {
            let active = self.stat == stat::ACTIVE && self.test.is_some();
            if !active {
                // Resting: exact for any interval.
                self.cell.step(0.0, now - self.integrated_to);
                self.integrated_to = now;
                self.current_a = 0.0;
                break;
            }
            let Some(test) = &self.test else { break };
            let mut end = now.min(self.integrated_to + MAX_SUBSTEP_S);
            if let Some(every) = test.record_every_s {
                let due = self.integrated_to + (test.last_record_s + every - test.test_time_s);
                if due <= self.integrated_to + TIME_EPS_S {
                    self.log_record(clock, None);
                    continue;
                }
                end = end.min(due);
            }
            if let (Control::Direct { set_at, .. }, Some(wd)) =
                (&test.control, config.direct_watchdog_s)
            {
                let deadline = set_at + wd;
                if deadline <= self.integrated_to {
                    // MacNetDirectModeWD: an unfed direct-mode channel suspends.
                    self.set_state(stat::SUSPENDED, rf1::SUSPENDED, rf2::SUSPEND_OR_PAUSE);
                    self.log_record(clock, None);
                    continue;
                }
                end = end.min(deadline);
            }
            let dt = end - self.integrated_to;
            self.current_a = self.regulated(config);
            let v_before = self.cell.terminal_voltage(self.current_a);
            self.cell.step(self.current_a, dt);
            self.integrated_to = end;
            let v = self.cell.terminal_voltage(self.current_a);
            let i = self.current_a;
            let temperature = self.cell.temperature_c();
            let Some(test) = &mut self.test else { break };
            test.test_time_s += dt;
            let t = test.test_time_s;
            let outcome = match &mut test.control {
                Control::Direct { .. } => {
                    test.capacity_ah += i.abs() * dt / 3600.0;
                    test.energy_wh += (v_before + v) / 2.0 * i.abs() * dt / 3600.0;
                    None
                }
                Control::Procedure { engine, command } => {
                    let update = engine.update(&Measurement {
                        chamber_c: None,
                        test_time_s: t,
                        voltage_v: v,
                        current_a: i,
                        temperature_c: Some(temperature),
                    });
                    *command = update.command;
                    let ended = update.ended_step.map(|s| StepEnd {
                        step: (s.plan_index + 1) as u16,
                        duration_s: s.duration_s,
                        capacity_ah: s.charge_ah + s.discharge_ah,
                        energy_wh: s.energy_wh,
                    });
                    Some((update.step_changed, ended, update.outcome))
                }
            };
            if let Some((step_changed, ended, outcome)) = outcome {
                if step_changed {
                    // The record that ends a step shows its cutoff and its totals, while the
                    // step's current still flows.
                    self.current_a = i;
                    self.rf1 = self.active_rf1();
                    self.log_record(clock, ended);
                }
                match outcome {
                    Some(Outcome::Finished) => {
                        self.set_state(stat::COMPLETED, rf1::COMPLETE, rf2::NORMAL_END)
                    }
                    Some(Outcome::Faulted(reason)) => {
                        let code = if reason.contains("voltage") {
                            rf2::VOLTAGE_SAFETY
                        } else {
                            rf2::ABSOLUTE_SAFETY
                        };
                        self.fault = Some(reason);
                        self.set_state(stat::PROBLEM, rf1::PROBLEM, code);
                        self.log_record(clock, None);
                    }
                    None => {}
                }
            }
            if self.stat == stat::ACTIVE {
                self.current_a = self.regulated(config);
                self.rf1 = self.active_rf1();
            }
        }
    }

    /// The channel can take a new test.
    fn free(&self) -> bool {
        matches!(self.stat, stat::AVAILABLE | stat::SELECTED)
    }

    fn begin(
        &mut self,
        name: String,
        control: Control,
        record_every_s: Option<f64>,
        clock: &Clock,
    ) {
        self.test = Some(Test {
            name,
            control,
            test_time_s: 0.0,
            last_record_s: 0.0,
            record_every_s,
            capacity_ah: 0.0,
            energy_wh: 0.0,
        });
        self.log.clear();
        self.fault = None;
        self.outputs.clear();
        self.refused_outputs = 0;
        self.selected = false;
        self.set_state(stat::ACTIVE, rf1::REST, 0);
        self.rf1 = self.active_rf1();
        self.log_record(clock, None);
    }
}

/// What a direct-mode output drives into `cell`: current, voltage, power and resistance limit
/// each other; a value outside the channel's range is no limit.
fn direct_current(cell: &Cell, out: &Output, config: &SimConfig) -> f64 {
    let within = |x: f32, max: f64| {
        let x = f64::from(x);
        (x.is_finite() && (0.0..=max).contains(&x)).then_some(x)
    };
    let max_i = config.max_current_a;
    let i_set = within(out.current_a, max_i).unwrap_or(max_i);
    let v_set = within(out.voltage_v, config.max_voltage_v);
    let p_set = within(out.power_w, max_i * config.max_voltage_v);
    let v_now = cell.terminal_voltage(0.0).max(0.1);
    match out.mode {
        Mode::Rest => 0.0,
        Mode::Charge => {
            let mut i = i_set;
            if let Some(v) = v_set {
                i = i.min(cell.current_for_voltage(v).max(0.0));
            }
            if let Some(p) = p_set {
                i = i.min(p / v_now);
            }
            i.max(0.0)
        }
        Mode::Discharge => {
            let mut i = i_set;
            if let Some(v) = v_set {
                i = i.min((-cell.current_for_voltage(v)).max(0.0));
            }
            if let Some(p) = p_set {
                i = i.min(p / v_now);
            }
            if out.resistance_ohm > 0.0 {
                i = i.min(v_now / f64::from(out.resistance_ohm));
            }
            -i.max(0.0)
        }
    }
}

impl Tester {
    fn advance(&mut self) {
        let now = self.clock.now();
        for ch in &mut self.channels {
            ch.advance(now, &self.config, &self.clock);
        }
    }

    fn channel(&self, chan: u16) -> Option<usize> {
        let c = usize::from(chan);
        (c < self.channels.len()).then_some(c)
    }

    fn handle(&mut self, request: Request) -> Response {
        self.advance();
        let now = self.clock.now();
        match request {
            Request::Echo => Response::Echo,
            Request::Version => Response::Version(Version {
                api: 1,
                exe: [3, 2, 18],
                dll: [3, 2, 18],
            }),
            Request::SystemInfo => Response::SystemInfo(SystemInfo {
                system_id: self.config.system_id.clone(),
                system_type: 0,
                controller_boards: self.channels.len().div_ceil(16) as u16,
                test_channels: self.channels.len() as u16,
                aux_boards: 0,
                aux_channels: 0,
            }),
            Request::Status { first, count } => {
                let end = usize::from(first) + usize::from(count);
                if count == 0 || count > wire::MAX_STATUS_CHANNELS || end > self.channels.len() {
                    return Response::Illegal;
                }
                Response::Status(StatusBlock {
                    first,
                    entries: self.channels[usize::from(first)..end]
                        .iter()
                        .map(|c| ChannelStat {
                            rf1: c.rf1,
                            rf2: c.rf2,
                            stat: c.stat,
                        })
                        .collect(),
                })
            }
            Request::Reading { chan } => {
                let Some(mut c) = self.channel(chan) else {
                    return Response::Illegal;
                };
                let mut chan = chan;
                if let Some(other) = self.misroute.take()
                    && let Some(o) = self.channel(other)
                {
                    (c, chan) = (o, other);
                }
                Response::Reading {
                    chan,
                    reading: self.channels[c].reading(&self.clock, None),
                }
            }
            Request::Select { chan } => self.with_channel(chan, |_, ch| {
                if !ch.free() {
                    return wire::result::CHANNEL_IN_USE;
                }
                ch.selected = true;
                ch.stat = stat::SELECTED;
                wire::result::OK
            }),
            Request::Start {
                chan,
                start,
                select,
            } => {
                let Some(c) = self.channel(chan) else {
                    return Response::Illegal;
                };
                let code = self.start(c, start, select);
                Response::Result { chan, code }
            }
            Request::Suspend { chan } => self.with_channel(chan, |_, ch| {
                if ch.stat != stat::ACTIVE {
                    return wire::direct_result::NOT_ACTIVE;
                }
                ch.set_state(stat::SUSPENDED, rf1::SUSPENDED, rf2::SUSPEND_OR_PAUSE);
                wire::result::OK
            }),
            Request::Resume { chan } => self.with_channel(chan, |now, ch| {
                if ch.stat != stat::SUSPENDED {
                    return wire::direct_result::NOT_ACTIVE;
                }
                if let Some(Test {
                    control: Control::Direct { set_at, .. },
                    ..
                }) = &mut ch.test
                {
                    *set_at = now;
                }
                ch.set_state(stat::ACTIVE, rf1::REST, 0);
                ch.current_a = 0.0;
                ch.rf1 = ch.active_rf1();
                wire::result::OK
            }),
            Request::Reset { chan } => self.with_channel(chan, |_, ch| {
                ch.selected = false;
                ch.set_state(stat::AVAILABLE, rf1::AVAILABLE, 0);
                wire::result::OK
            }),
            Request::DirectStart { chan, start } => {
                let Some(c) = self.channel(chan) else {
                    return Response::Illegal;
                };
                if !self.channels[c].free() {
                    return Response::Result {
                        chan,
                        code: wire::result::CHANNEL_IN_USE,
                    };
                }
                let name = match self.claim_name(&start.test_name) {
                    Ok(name) => name,
                    Err(code) => return Response::Result { chan, code },
                };
                let every = f64::from(start.record_every_s);
                let clock = self.clock.clone();
                let ch = &mut self.channels[c];
                ch.begin(
                    name,
                    Control::Direct {
                        output: start.output,
                        set_at: now,
                    },
                    (every > 0.0).then_some(every),
                    &clock,
                );
                ch.current_a = ch.regulated(&self.config);
                ch.rf1 = ch.active_rf1();
                Response::Result {
                    chan,
                    code: wire::result::OK,
                }
            }
            Request::DirectOutput { chan, output } => {
                let Some(c) = self.channel(chan) else {
                    return Response::Illegal;
                };
                let ch = &mut self.channels[c];
                let active = ch.stat == stat::ACTIVE;
                let code = match &mut ch.test {
                    Some(Test {
                        control:
                            Control::Direct {
                                output: out,
                                set_at,
                            },
                        ..
                    }) if active => {
                        if now - *set_at < wire::MIN_OUTPUT_INTERVAL_S {
                            ch.refused_outputs += 1;
                            wire::direct_result::TOO_FAST
                        } else {
                            *out = output;
                            *set_at = now;
                            ch.outputs.push(now);
                            wire::direct_result::OK
                        }
                    }
                    Some(Test {
                        control: Control::Direct { .. },
                        ..
                    }) => wire::direct_result::NOT_ACTIVE,
                    _ if !active => wire::direct_result::NOT_ACTIVE,
                    _ => wire::direct_result::NOT_DIRECT,
                };
                ch.current_a = ch.regulated(&self.config);
                if ch.stat == stat::ACTIVE {
                    ch.rf1 = ch.active_rf1();
                }
                Response::Result { chan, code }
            }
        }
    }

    fn with_channel(&mut self, chan: u16, f: impl FnOnce(f64, &mut Channel) -> u32) -> Response {
        let now = self.clock.now();
        match self.channel(chan) {
            Some(c) => Response::Result {
                chan,
                code: f(now, &mut self.channels[c]),
            },
            None => Response::Illegal,
        }
    }

    /// Checks a new test name against every data file; "Random" makes one up.
    fn claim_name(&mut self, name: &str) -> Result<String, u32> {
        let name = if name == "Random" {
            self.random_names += 1;
            format!("Random{:05}", self.random_names)
        } else {
            name.to_string()
        };
        let key = name.to_ascii_uppercase();
        if name.is_empty() || name.len() > wire::NAME_LEN {
            return Err(wire::result::NAME_NOT_UNIQUE);
        }
        if self.names.contains(&key) {
            let running = self.channels.iter().any(|c| {
                !c.free()
                    && c.test
                        .as_ref()
                        .is_some_and(|t| t.name.eq_ignore_ascii_case(&name))
            });
            // 19 for a name a test on the tester is using, 20 for an old data file.
            return Err(if running {
                wire::result::NAME_NOT_UNIQUE
            } else {
                wire::result::NAME_NOT_UNIQUE_2
            });
        }
        self.names.insert(key);
        Ok(name)
    }

    fn start(&mut self, c: usize, start: StartTest, select: bool) -> u32 {
        let ch = &self.channels[c];
        if !ch.free() {
            return wire::result::CHANNEL_IN_USE;
        }
        if !select && !ch.selected {
            return wire::result::NO_CHANNEL_SELECTED;
        }
        let Some(text) = self
            .procedures
            .get(&start.procedure.to_ascii_uppercase())
            .cloned()
        else {
            tracing::debug!("maccor sim: no procedure {:?}", start.procedure);
            return wire::result::SIM_PROCEDURE_UNUSABLE;
        };
        let origin = format!("{}.000", start.procedure);
        let engine = load_schedule(&text, SourceKind::Maccor, &origin, &self.config.limits);
        let mut engine = match engine {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!("maccor sim: procedure {origin} cannot run: {e}");
                return wire::result::SIM_PROCEDURE_UNUSABLE;
            }
        };
        let name = match self.claim_name(&start.test_name) {
            Ok(name) => name,
            Err(code) => return code,
        };
        let command = engine.start(0.0);
        let every = self.config.record_interval_s;
        let clock = self.clock.clone();
        let ch = &mut self.channels[c];
        ch.begin(
            name,
            Control::Procedure {
                engine: Box::new(engine),
                command,
            },
            (every > 0.0).then_some(every),
            &clock,
        );
        ch.current_a = ch.regulated(&self.config);
        ch.rf1 = ch.active_rf1();
        wire::result::OK
    }
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

fn json_request(req: &JsonRequest) -> Result<Request, (i64, &'static str)> {
    let p = &req.params;
    let chan = || req.chan.ok_or(json_error::INVALID_PARAMS);
    let invalid = |_| json_error::INVALID_PARAMS;
    Ok(match req.function {
        Function { class: 0, .. } => Request::Echo,
        wire::VERSION => Request::Version,
        wire::SYSTEM_INFO => Request::SystemInfo,
        wire::STATUS => Request::Status {
            first: chan()?,
            count: p
                .get("Len")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or(json_error::INVALID_PARAMS)?,
        },
        wire::READING => Request::Reading { chan: chan()? },
        wire::SELECT => Request::Select { chan: chan()? },
        wire::START => Request::Start {
            chan: chan()?,
            start: StartTest::from_json(p).map_err(invalid)?,
            select: true,
        },
        wire::SUSPEND => Request::Suspend { chan: chan()? },
        wire::RESUME => Request::Resume { chan: chan()? },
        wire::RESET => Request::Reset { chan: chan()? },
        wire::DIRECT_START => Request::DirectStart {
            chan: chan()?,
            start: DirectStart::from_json(p).map_err(invalid)?,
        },
        wire::DIRECT_OUTPUT => {
            let output = Output::from_json(p).map_err(invalid)?;
            // The JSON (6,8) cannot set rest (a known MacNet limitation; the binary form can).
            if output.mode == Mode::Rest {
                return Err(json_error::ILLEGAL_VALUE);
            }
            Request::DirectOutput {
                chan: chan()?,
                output,
            }
        }
        Function {
            class: 1 | 4 | 6, ..
        } => return Err(json_error::INVALID_FNUM),
        _ => return Err(json_error::INVALID_FCLASS),
    })
}

fn json_reply(tester: &mut Tester, line: &str) -> String {
    let req = match wire::parse_json_request(line) {
        Ok(req) => req,
        Err((id, e)) => return wire::json_error_line(&id, e),
    };
    if tester.faults.failing() {
        return wire::json_error_line(&req.id, json_error::MACNET_ERROR);
    }
    let request = match json_request(&req) {
        Ok(r) => r,
        Err(e) => return wire::json_error_line(&req.id, e),
    };
    let f = req.function;
    match tester.handle(request) {
        Response::Echo => wire::json_result(&req.id, f, req.chan, req.params.clone()),
        Response::Version(v) => wire::json_result(&req.id, f, None, v.to_json()),
        Response::SystemInfo(s) => wire::json_result(&req.id, f, None, s.to_json()),
        Response::Status(block) => wire::json_result(&req.id, f, None, block.to_json()),
        Response::Reading { chan, reading } => {
            wire::json_result(&req.id, f, None, reading.to_json(chan))
        }
        Response::Result { chan, code } => {
            wire::json_result(&req.id, f, Some(chan), wire::json_result_field(code))
        }
        Response::Illegal => wire::json_error_line(&req.id, json_error::ILLEGAL_VALUE),
    }
}

// ---------------------------------------------------------------------------------------------
// Binary
// ---------------------------------------------------------------------------------------------

fn binary_request(frame: &Frame) -> Option<Request> {
    let chan = frame.chan;
    Some(match frame.function {
        Function { class: 0, .. } => Request::Echo,
        wire::VERSION => Request::Version,
        wire::SYSTEM_INFO => Request::SystemInfo,
        wire::STATUS => Request::Status {
            first: chan,
            count: frame.len,
        },
        wire::READING => Request::Reading { chan },
        wire::SELECT => Request::Select { chan },
        wire::START => Request::Start {
            chan,
            start: StartTest::from_frame(frame).ok()?,
            select: false,
        },
        wire::SUSPEND => Request::Suspend { chan },
        wire::RESUME => Request::Resume { chan },
        wire::RESET => Request::Reset { chan },
        wire::DIRECT_START => Request::DirectStart {
            chan,
            start: DirectStart::from_frame(frame).ok()?,
        },
        wire::DIRECT_OUTPUT => Request::DirectOutput {
            chan,
            output: Output::from_frame(frame).ok()?,
        },
        _ => return None,
    })
}

/// An empty reply: how the simulator answers a binary request it refuses.
fn empty(frame: &Frame) -> Frame {
    Frame::with_data(frame.function, frame.chan, Vec::new())
}

/// A file being written to the tester on one connection.
struct Upload {
    /// Upper-case procedure name without `.000`.
    key: String,
    next_block: u16,
    bytes: Vec<u8>,
}

/// Records being read from the tester on one connection.
struct Download {
    chan: u16,
    bytes: Vec<u8>,
    /// The last block sent.
    block: u16,
}

/// One binary connection's transfer state.
#[derive(Default)]
struct Session {
    upload: Option<Upload>,
    download: Option<Download>,
}

impl Download {
    /// DATA block `block` of the records.
    fn data(&self, block: u16) -> Packet {
        let start = (usize::from(block) - 1) * wire::BLOCK_SIZE;
        let end = (start + wire::BLOCK_SIZE).min(self.bytes.len());
        Packet::Data {
            block,
            bytes: self.bytes.get(start..end).unwrap_or_default().to_vec(),
        }
    }

    /// Whether block `block` ended the transfer (shorter than a full one).
    fn ends_with(&self, block: u16) -> bool {
        usize::from(block) * wire::BLOCK_SIZE > self.bytes.len()
    }
}

fn transfer_error(code: u16, message: &str) -> Packet {
    Packet::Error {
        code,
        message: message.into(),
    }
}

/// One (1,6) packet; `None` sends nothing (the acknowledgement of a download's last block).
fn transfer(tester: &mut Tester, session: &mut Session, frame: &Frame) -> Option<Frame> {
    use wire::transfer_error as e;
    let chan = frame.chan;
    let packet = match Packet::from_frame(frame) {
        Ok(p) => p,
        Err(err) => {
            return Some(transfer_error(e::ILLEGAL_OPERATION, &err.to_string()).to_frame(chan));
        }
    };
    let reply = match packet {
        Packet::Write { file_type, name } => {
            let stem = name
                .rsplit_once('.')
                .filter(|(_, ext)| ext.eq_ignore_ascii_case("000"))
                .map(|(stem, _)| stem);
            match stem {
                _ if file_type != wire::FILE_TYPE_PROCEDURE => transfer_error(
                    e::ACCESS_VIOLATION,
                    "only procedures (file type 3) are accepted",
                ),
                Some(stem)
                    if !stem.is_empty()
                        && stem.len() <= wire::NAME_LEN
                        && !stem.contains(['/', '\\', ':']) =>
                {
                    session.upload = Some(Upload {
                        key: stem.to_ascii_uppercase(),
                        next_block: 1,
                        bytes: Vec::new(),
                    });
                    Packet::Ack { block: 0 }
                }
                _ => transfer_error(
                    e::ACCESS_VIOLATION,
                    "a procedure name is up to 25 characters and ends in .000",
                ),
            }
        }
        Packet::Data { block, bytes } => match &mut session.upload {
            Some(up) if block == up.next_block => {
                up.bytes.extend_from_slice(&bytes);
                if up.bytes.len() > MAX_FILE_BYTES {
                    session.upload = None;
                    transfer_error(e::NOT_DEFINED, "file too large")
                } else {
                    up.next_block = up.next_block.wrapping_add(1);
                    if bytes.len() < wire::BLOCK_SIZE
                        && let Some(up) = session.upload.take()
                    {
                        let text = String::from_utf8_lossy(&up.bytes).into_owned();
                        tester.procedures.insert(up.key, text);
                    }
                    Packet::Ack { block }
                }
            }
            Some(up) => transfer_error(
                e::ILLEGAL_OPERATION,
                &format!("expected block {}, got {block}", up.next_block),
            ),
            None => transfer_error(e::ILLEGAL_OPERATION, "no transfer open"),
        },
        Packet::Read {
            file_type,
            from,
            max,
        } => {
            let c = tester.channel(chan);
            match c {
                _ if tester.config.record_log == RecordLog::Ignored => return None,
                _ if tester.config.record_log == RecordLog::Refused => {
                    transfer_error(e::ILLEGAL_OPERATION, "unknown opcode")
                }
                Some(c) if file_type == wire::FILE_TYPE_RECORD_LOG => {
                    tester.advance();
                    let page = tester.channels[c].log.page(u64::from(from), max as usize);
                    let download = Download {
                        chan,
                        bytes: page.iter().flat_map(Reading::to_bytes).collect(),
                        block: 1,
                    };
                    let first = download.data(1);
                    session.download = (!download.ends_with(1)).then_some(download);
                    first
                }
                _ => transfer_error(e::NOT_FOUND, "no such channel or file type"),
            }
        }
        Packet::Ack { block } => match &mut session.download {
            Some(d) if block == d.block && d.chan == chan => {
                d.block += 1;
                let next = d.data(d.block);
                if d.ends_with(d.block) {
                    session.download = None;
                }
                next
            }
            // The acknowledgement of a download's last block needs no answer.
            None => return None,
            Some(_) => transfer_error(e::ILLEGAL_OPERATION, "unexpected acknowledgement"),
        },
        Packet::Error { .. } => {
            session.upload = None;
            session.download = None;
            return None;
        }
    };
    Some(reply.to_frame(chan))
}

fn binary_reply(tester: &mut Tester, session: &mut Session, frame: &Frame) -> Option<Frame> {
    if tester.faults.failing() {
        return Some(empty(frame));
    }
    if frame.function == wire::FILE_TRANSFER {
        return transfer(tester, session, frame);
    }
    let Some(request) = binary_request(frame) else {
        return Some(empty(frame));
    };
    let f = frame.function;
    Some(match tester.handle(request) {
        Response::Echo => Frame::with_data(f, frame.chan, frame.data.clone()),
        Response::Version(v) => Frame::with_data(f, frame.chan, v.to_bytes()),
        Response::SystemInfo(s) => Frame::with_data(f, frame.chan, s.to_bytes()),
        Response::Status(block) => block.to_frame(),
        Response::Reading { chan, reading } => reading.to_frame(chan),
        Response::Result { chan, code } => wire::result_frame(f, chan, code),
        Response::Illegal => empty(frame),
    })
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

fn lock(tester: &Mutex<Tester>) -> MutexGuard<'_, Tester> {
    // A panic while holding the lock cannot leave the state half-written in a way that matters
    // for a simulator; keep serving.
    tester.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy)]
enum Protocol {
    Json,
    Binary,
}

/// Starts simulated testers.
pub struct MaccorSim;

impl MaccorSim {
    /// Serves a simulated tester, JSON on `json` and binary on `binary`, until the returned
    /// handle is dropped.
    pub fn spawn(
        json: TcpListener,
        binary: TcpListener,
        config: SimConfig,
        clock: Clock,
    ) -> io::Result<SimHandle> {
        let json_addr = json.local_addr()?;
        let binary_addr = binary.local_addr()?;
        let now = clock.now();
        let tester = Arc::new(Mutex::new(Tester {
            channels: config
                .cells
                .iter()
                .map(|c| Channel::new(c.clone(), now))
                .collect(),
            config,
            clock,
            procedures: HashMap::new(),
            names: HashSet::new(),
            random_names: 0,
            faults: Faults::none(),
            misroute: None,
        }));
        let link = Link::up();
        let mut stops = Vec::new();
        for (listener, protocol) in [(json, Protocol::Json), (binary, Protocol::Binary)] {
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stops.push(stop_tx);
            tokio::spawn(serve(
                listener,
                Arc::clone(&tester),
                protocol,
                link.watch(),
                stop_rx,
            ));
        }
        Ok(SimHandle {
            json_addr,
            binary_addr,
            tester,
            link,
            _stop: stops,
        })
    }
}

async fn serve(
    listener: TcpListener,
    tester: Arc<Mutex<Tester>>,
    protocol: Protocol,
    link: watch::Receiver<bool>,
    stop: oneshot::Receiver<()>,
) {
    accept_while_linked(listener, link, stop, "maccor sim", |stream, link| {
        let tester = Arc::clone(&tester);
        match protocol {
            Protocol::Json => tokio::spawn(json_connection(stream, tester, link)),
            Protocol::Binary => tokio::spawn(binary_connection(stream, tester, link)),
        };
    })
    .await
}

/// Waits out the injected reply delay; false when the link was cut meanwhile.
async fn delay(tester: &Mutex<Tester>, link: &mut watch::Receiver<bool>) -> bool {
    let delay = lock(tester).faults.reply_delay();
    delay_unless_cut(delay, link).await
}

async fn json_connection(
    stream: TcpStream,
    tester: Arc<Mutex<Tester>>,
    mut link: watch::Receiver<bool>,
) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        // A cut link (or a dropped handle) ends the connection, closing the socket; so does a
        // line too long.
        if !read_until_unless_cut(&mut rd, b'\n', wire::MAX_JSON_LINE, &mut buf, &mut link).await
            || buf.last() != Some(&b'\n')
        {
            return;
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        let reply = json_reply(&mut lock(&tester), &line);
        if !delay(&tester, &mut link).await || wr.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn binary_connection(
    stream: TcpStream,
    tester: Arc<Mutex<Tester>>,
    mut link: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    let mut session = Session::default();
    loop {
        while let Some((frame, used)) = wire::split_frame(&buf, wire::Direction::Request) {
            buf.drain(..used);
            let reply = binary_reply(&mut lock(&tester), &mut session, &frame);
            let Some(reply) = reply else { continue };
            if !delay(&tester, &mut link).await || wr.write_all(&reply.encode()).await.is_err() {
                return;
            }
        }
        let mut chunk = [0u8; 4096];
        match unless_cut(&mut link, rd.read(&mut chunk)).await {
            None | Some(Ok(0) | Err(_)) => return,
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A running simulated tester; dropping it stops its servers.
pub struct SimHandle {
    json_addr: SocketAddr,
    binary_addr: SocketAddr,
    tester: Arc<Mutex<Tester>>,
    /// Whether the tester is on the network; connections watch it.
    link: Link,
    _stop: Vec<oneshot::Sender<()>>,
}

/// One channel as the simulator sees it, for tests and the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSnapshot {
    /// The MacNet codes the channel reports now.
    pub stat: u16,
    pub rf1: u8,
    pub rf2: u8,
    /// The test on the channel (or the last one), with its name on the tester.
    pub test: Option<String>,
    /// Records in the channel's log (its newest index).
    pub last_rec: u32,
    /// Terminal voltage and current (+ = into the cell), to check what the client reports.
    pub voltage_v: f64,
    pub current_a: f64,
    /// The cell's state of charge, to check that the channel really drove it.
    pub soc: f64,
    /// Why the engine faulted, when it did.
    pub fault: Option<String>,
}

impl SimHandle {
    pub fn json_addr(&self) -> SocketAddr {
        self.json_addr
    }

    pub fn binary_addr(&self) -> SocketAddr {
        self.binary_addr
    }

    /// A client configuration for this tester with `timeout`.
    pub fn client_config(&self, timeout: Duration) -> MaccorConfig {
        MaccorConfig {
            address: self.json_addr.ip(),
            binary_port: self.binary_addr.port(),
            json_port: self.json_addr.port(),
            timeout,
        }
    }

    pub fn snapshot(&self, chan: u16) -> ChannelSnapshot {
        let mut t = lock(&self.tester);
        t.advance();
        let c = &t.channels[usize::from(chan)];
        ChannelSnapshot {
            stat: c.stat,
            rf1: c.rf1,
            rf2: c.rf2,
            test: c.test.as_ref().map(|t| t.name.clone()),
            last_rec: c.log.count() as u32,
            voltage_v: c.cell.terminal_voltage(c.current_a),
            current_a: c.current_a,
            soc: c.cell.soc(),
            fault: c.fault.clone(),
        }
    }

    /// The channel's device-side record log (record `i + 1` at index `i`).
    pub fn records(&self, chan: u16) -> Vec<Reading> {
        let mut t = lock(&self.tester);
        t.advance();
        t.channels[usize::from(chan)].log.entries().to_vec()
    }

    /// Names of the procedures received (upper case, without `.000`).
    pub fn procedures(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.tester).procedures.keys().cloned().collect();
        names.sort();
        names
    }

    /// Clock times at which direct outputs on `chan` were accepted.
    pub fn direct_outputs(&self, chan: u16) -> Vec<f64> {
        lock(&self.tester).channels[usize::from(chan)]
            .outputs
            .clone()
    }

    /// How many direct outputs on `chan` were refused as sent too fast (result 3).
    pub fn refused_outputs(&self, chan: u16) -> u32 {
        lock(&self.tester).channels[usize::from(chan)].refused_outputs
    }

    /// Puts `chan` in a problem state (Stat 5, RF1 29) with `rf2` as the cause, output off,
    /// as a tripped channel safety limit does.
    pub fn set_problem(&self, chan: u16, rf2: u8) {
        let mut t = lock(&self.tester);
        t.advance();
        let clock = t.clock.clone();
        let ch = &mut t.channels[usize::from(chan)];
        ch.set_state(stat::PROBLEM, rf1::PROBLEM, rf2);
        ch.log_record(&clock, None);
    }

    /// Takes the tester off the network, as a pulled LAN cable does: open connections close
    /// and new ones are closed on arrival. The channels keep running their tests.
    pub fn cut_link(&self) {
        self.link.cut();
    }

    /// Puts the tester back on the network, on the same addresses.
    pub fn restore_link(&self) {
        self.link.restore();
    }

    /// Delays every reply by `delay` of wall time (zero for none), for timeout tests.
    pub fn set_reply_delay(&self, delay: Duration) {
        lock(&self.tester).faults.set_reply_delay(delay);
    }

    /// Answers the next `n` requests (either protocol) with an error: JSON "MacNet error",
    /// binary an empty reply.
    pub fn fail_next(&self, n: u32) {
        lock(&self.tester).faults.fail_next(n, ());
    }

    /// Answers the next (4,7) reading with channel `other`'s reading and number, as a confused
    /// server might; a client must not take it for the channel it asked for.
    pub fn misroute_next_reading(&self, other: u16) {
        lock(&self.tester).misroute = Some(other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Chemistry;
    use serde_json::Map;

    fn config() -> SimConfig {
        SimConfig::new(
            2,
            CellParams {
                initial_soc: 0.5,
                ..CellParams::new(Chemistry::Nmc, 2.5)
            },
        )
    }

    #[test]
    fn direct_outputs_limit_each_other() {
        let cfg = config();
        let cell = Cell::new(cfg.cells[0].clone());
        let charge = Output {
            current_a: 2.0,
            voltage_v: wire::IGNORE,
            power_w: wire::IGNORE,
            resistance_ohm: 0.0,
            range: 4,
            mode: Mode::Charge,
        };
        assert_eq!(direct_current(&cell, &charge, &cfg), 2.0);
        let capped = Output {
            voltage_v: cell.terminal_voltage(1.0) as f32,
            ..charge
        };
        assert!((direct_current(&cell, &capped, &cfg) - 1.0).abs() < 1e-3);
        let discharge = Output {
            mode: Mode::Discharge,
            power_w: 3.0,
            ..charge
        };
        let i = direct_current(&cell, &discharge, &cfg);
        assert!(i < 0.0 && i > -1.0, "{i}");
        assert_eq!(direct_current(&cell, &Output::rest(4), &cfg), 0.0);
    }

    fn tester() -> Tester {
        Tester {
            channels: config()
                .cells
                .iter()
                .map(|c| Channel::new(c.clone(), 0.0))
                .collect(),
            config: config(),
            clock: Clock::manual(),
            procedures: HashMap::new(),
            names: HashSet::new(),
            random_names: 0,
            faults: Faults::none(),
            misroute: None,
        }
    }

    #[test]
    fn json_errors_use_macnet_texts() {
        let mut t = tester();
        let ask = |t: &mut Tester, line: &str| match wire::parse_json_reply(&json_reply(t, line)) {
            Ok(wire::JsonReply::Error { message, .. }) => message,
            other => format!("{other:?}"),
        };
        assert_eq!(ask(&mut t, "{not json"), "Parse error");
        let req = |c: u16, n: u16, extra: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","method":"MacNet","params":{{"FClass":{c},"FNum":{n}{extra}}},"id":1}}"#
            )
        };
        assert_eq!(ask(&mut t, &req(9, 1, "")), "Invalid FClass");
        assert_eq!(ask(&mut t, &req(4, 99, "")), "Invalid FNum");
        assert_eq!(ask(&mut t, &req(1, 6, "")), "Invalid FNum");
        assert_eq!(ask(&mut t, &req(4, 7, "")), "Invalid params");
        assert_eq!(ask(&mut t, &req(4, 7, r#","Chan":7"#)), "Illegal value");
        let rest = r#","Chan":0,"Current":0,"Voltage":4.2,"Power":10,"ChMode":"R""#;
        assert_eq!(ask(&mut t, &req(6, 8, rest)), "Illegal value");
        t.faults.fail_next(1, ());
        assert_eq!(ask(&mut t, &req(1, 2, "")), "MacNet error");
    }

    #[test]
    fn fclass_0_echoes_in_both_encodings() {
        let mut t = tester();
        let mut session = Session::default();
        let echo = Frame::request(wire::ECHO, 1, 0);
        let reply = binary_reply(&mut t, &mut session, &echo).unwrap();
        assert_eq!(reply.encode(), echo.encode());
        let line = wire::json_request(3, wire::ECHO, Some(1), Map::new());
        match wire::parse_json_reply(&json_reply(&mut t, &line)).unwrap() {
            wire::JsonReply::Result {
                id, function, chan, ..
            } => {
                assert_eq!((id, function, chan), (Some(3), wire::ECHO, Some(1)));
            }
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        /// Whatever arrives on either port, the handlers answer without panicking.
        #[test]
        fn arbitrary_requests_never_panic_the_handlers(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            function in 0u16..10,
            num in 0u16..12,
        ) {
            let mut t = tester();
            let mut session = Session::default();
            let mut rest: &[u8] = &bytes;
            while let Some((frame, used)) = wire::split_frame(rest, wire::Direction::Request) {
                let _ = binary_reply(&mut t, &mut session, &frame);
                rest = &rest[used..];
            }
            let f = Function { class: function, num };
            for chan in [0, 1, 7] {
                let _ = binary_reply(&mut t, &mut session, &Frame::with_data(f, chan, bytes.clone()));
                let _ = binary_reply(&mut t, &mut session, &Frame::with_data(wire::FILE_TRANSFER, chan, bytes.clone()));
            }
            let _ = json_reply(&mut t, &String::from_utf8_lossy(&bytes));
        }
    }
}
