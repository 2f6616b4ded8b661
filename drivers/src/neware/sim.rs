//! A simulated BTS API server: a cycler of many channels, each with its own cell, that runs the
//! step files it is told to start.
//!
//! It speaks the documented protocol as a real server does: framed XML requests, a login
//! (`connect`) before anything else, `<cmd>NAME_resp</cmd>` replies with per-channel `ok` or
//! `false`. On `start` it reads the step file from the path it was given (through the same kind
//! of folder mapping the BTS PC has), imports it back into a plan and runs the protocol engine
//! against the channel's cell. Time is integrated lazily up to [`Clock::now`] on every request
//! and handle call, in sub-steps; a record is logged every record interval of test time, at
//! every step change and when a test ends, with seqids from 1 and no gaps, kept per test so
//! `download` serves any part of any test's log.
//!
//! Replies list channels in the simulator's own order, whatever the request's, and
//! [`SimConfig::wrong_subdevid`] makes `getchlstatus` report `subdevid="1"` as some real
//! servers do, so a client matching by position or by `subdevid` fails here. Faults are
//! injected through the [`SimHandle`]: a cut link (the cycler keeps running its tests: the
//! link is only the API), reply delays, refused requests and a tripped protection.

use super::wire::{
    self, ChannelRef, ChlStatusItem, DataRow, DevChannel, DfItem, DownloadHeader, InquireItem,
    PathMap, Request, ResultItem, WorkStatus, step_type,
};
use crate::Clock;
use crate::cell::CellParams;
use crate::cycler::{ChannelAddr, Record};
use crate::cycler_sim::{ChannelCell, PlanRun, RunState, load_schedule};
use crate::transport::faults::Faults;
use crate::transport::lock;
use crate::transport::network::{Link, accept_while_linked, delay_unless_cut, unless_cut};
use cyclerd_protocols::import::SourceKind;
use cyclerd_protocols::{Control, Outcome, PlanStep, Safety};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// `log_code` of a test the step file's own protection (`Whole_Prt`) ended. Neware's codes
/// are not in the facts; this one is the simulator's.
pub const SAFETY_LOG_CODE: u32 = 1;

/// What the simulated cycler is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The `ip` attribute of every channel: the unit's address as the server reports it.
    pub ip: String,
    /// The `devtype` of every channel (the cycler model code).
    pub devtype: u32,
    /// The channels as `devid`, `subdevid`, `chlid`; every reply lists them in this order.
    pub channels: Vec<ChannelAddr>,
    /// One cell per channel, in the order of `channels`.
    pub cells: Vec<CellParams>,
    /// The only login `connect` accepts.
    pub username: String,
    pub password: String,
    /// Test time between logged records, s (records are also logged at every step change and
    /// when a test ends).
    pub record_interval_s: f64,
    /// Report `subdevid="1"` for every channel in `getchlstatus`, as real servers have been
    /// seen to.
    pub wrong_subdevid: bool,
    /// Where the step files named in `start` are found: `remote` is the folder as the start
    /// request names it, `local` where the simulator reads it.
    pub steps: PathMap,
}

impl SimConfig {
    /// A cycler `devid` of `units` sub-devices (`subdevid` from 1) with `channels_per_unit`
    /// channels each (`chlid` from 1 in each unit, as Neware numbers them), the same cell on
    /// every channel, devtype 27, login `admin`/`neware`, a record every 10 s, and step files
    /// read from `step_folder` by the paths this machine sees.
    pub fn new(
        devid: u32,
        units: u32,
        channels_per_unit: u32,
        cell: CellParams,
        step_folder: impl Into<PathBuf>,
    ) -> SimConfig {
        let channels: Vec<ChannelAddr> = (1..=units)
            .flat_map(|sub_unit| {
                (1..=channels_per_unit).map(move |channel| ChannelAddr {
                    unit: devid,
                    sub_unit,
                    channel,
                })
            })
            .collect();
        SimConfig {
            ip: "127.0.0.1".into(),
            devtype: 27,
            cells: vec![cell; channels.len()],
            channels,
            username: "admin".into(),
            password: "neware".into(),
            record_interval_s: 10.0,
            wrong_subdevid: false,
            steps: PathMap {
                local: step_folder.into(),
                remote: None,
            },
        }
    }
}

/// How a test ended: the status `getchlstatus` then reports and the `log_code` `inquire`
/// gives.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ended {
    /// `Finish`, `Stop` or `Protect`.
    status: WorkStatus,
    /// Why the test ended in protect (0 otherwise).
    log_code: u32,
}

impl From<Outcome> for Ended {
    fn from(outcome: Outcome) -> Ended {
        match outcome {
            Outcome::Finished => Ended {
                status: WorkStatus::Finish,
                log_code: 0,
            },
            Outcome::Faulted(reason) => {
                tracing::debug!("neware sim: the step file's protection tripped: {reason}");
                Ended {
                    status: WorkStatus::Protect,
                    log_code: SAFETY_LOG_CODE,
                }
            }
        }
    }
}

/// One test a channel ran or runs.
struct Test {
    /// The server-wide test id `inquiredf` reports and `download` selects by.
    id: u64,
    /// The name the test was started under, returned by `inquire`.
    barcode: String,
    /// Neware step number and step type name of each plan step (0 and `--` for loop markers
    /// and the end).
    steps: Vec<(u32, &'static str)>,
    /// The step file's plan running on the channel's cell, with the test's log.
    run: PlanRun<Ended>,
}

impl Test {
    fn status(&self) -> WorkStatus {
        match self.run.state() {
            RunState::Running => WorkStatus::Working,
            RunState::Paused => WorkStatus::Pause,
            RunState::Ended(e) => e.status,
        }
    }

    fn log_code(&self) -> u32 {
        match self.run.state() {
            RunState::Ended(e) => e.log_code,
            _ => 0,
        }
    }

    /// The Neware step number and step type name of plan step `plan_index`.
    fn step(&self, plan_index: usize) -> (u32, &'static str) {
        self.steps
            .get(plan_index)
            .copied()
            .unwrap_or((0, step_type::NONE))
    }
}

struct Channel {
    /// `devid`, `subdevid`, `chlid`.
    addr: ChannelAddr,
    /// The cell on the channel's terminals.
    cell: ChannelCell,
    /// Every test run here, oldest first; the last is the current or latest one.
    tests: Vec<Test>,
}

impl Channel {
    fn test(&self) -> Option<&Test> {
        self.tests.last()
    }

    fn status(&self) -> WorkStatus {
        self.test().map_or(WorkStatus::Stop, Test::status)
    }

    fn current_a(&self) -> f64 {
        self.test()
            .map_or(0.0, |t| t.run.current_a(self.cell.cell()))
    }

    /// Integrates the cell (and runs the test) up to clock time `now`, on the cycler's tick.
    fn advance(&mut self, now: f64) {
        let run = self.tests.last_mut().map(|t| &mut t.run);
        self.cell.advance(run, on_tick(now));
    }

    /// Ends the active test as `ended` (stop or protect); false when none is active.
    fn end_test(&mut self, ended: Ended) -> bool {
        self.tests
            .last_mut()
            .is_some_and(|t| t.run.end(&self.cell, ended))
    }

    fn reference(&self, config: &SimConfig) -> ChannelRef {
        ChannelRef {
            ip: config.ip.clone(),
            devtype: config.devtype,
            addr: self.addr,
        }
    }
}

struct SimState {
    config: SimConfig,
    /// The only time source: every request integrates the channels up to its `now`.
    clock: Clock,
    /// Unix time at clock time 0, for `atime`.
    unix_at_zero: f64,
    /// In the order of `config.channels`.
    channels: Vec<Channel>,
    /// Test ids are unique on the server, as BTS numbers them.
    next_testid: u64,
    /// Injected through the handle: the reply delay, and requests refused
    /// (`<result>false</result>`).
    faults: Faults,
}

impl SimState {
    fn advance(&mut self) {
        let now = self.clock.now();
        for ch in &mut self.channels {
            ch.advance(now);
        }
    }

    fn find(&self, addr: &ChannelAddr) -> Option<usize> {
        self.channels.iter().position(|c| c.addr == *addr)
    }

    /// The requested channels this server has, in its own order.
    fn requested(&self, channels: &[ChannelRef]) -> Vec<usize> {
        (0..self.channels.len())
            .filter(|&i| channels.iter().any(|c| c.addr == self.channels[i].addr))
            .collect()
    }

    /// Answers one request; `files` holds the step files a `start` names, read beforehand.
    fn handle(
        &mut self,
        request: Request,
        files: Vec<Result<String, String>>,
        logged_in: &mut bool,
    ) -> String {
        self.advance();
        if self.faults.failing() {
            return wire::refusal_reply(request.command());
        }
        if !*logged_in && !matches!(request, Request::Connect { .. }) {
            return wire::refusal_reply(request.command());
        }
        let config = &self.config;
        match request {
            Request::Connect {
                username,
                password,
                login_type,
            } => {
                *logged_in = username == config.username
                    && password == config.password
                    && login_type == wire::LOGIN_TYPE;
                wire::connect_reply(*logged_in)
            }
            Request::GetDevInfo => {
                let channels: Vec<DevChannel> = self
                    .channels
                    .iter()
                    .map(|c| DevChannel {
                        channel: c.reference(config),
                        available: true,
                    })
                    .collect();
                wire::getdevinfo_reply(&channels)
            }
            Request::GetChlStatus(list) => {
                let items: Vec<ChlStatusItem> = self
                    .requested(&list)
                    .into_iter()
                    .map(|i| {
                        let c = &self.channels[i];
                        let mut channel = c.reference(config);
                        if config.wrong_subdevid {
                            channel.addr.sub_unit = 1;
                        }
                        ChlStatusItem {
                            channel,
                            status: c.status().name().into(),
                            reserve_pause: false,
                        }
                    })
                    .collect();
                wire::getchlstatus_reply(&items)
            }
            Request::Inquire(list) => {
                let items: Vec<InquireItem> = self
                    .requested(&list)
                    .into_iter()
                    .map(|i| self.inquire_item(i))
                    .collect();
                wire::inquire_reply(&items)
            }
            Request::InquireDf(list) => {
                let items: Vec<DfItem> = self
                    .requested(&list)
                    .into_iter()
                    .map(|i| {
                        let c = &self.channels[i];
                        DfItem {
                            channel: ChannelRef {
                                ip: String::new(),
                                ..c.reference(config)
                            },
                            testid: c.test().map_or(0, |t| t.id),
                            count: c.test().map_or(0, |t| t.run.log().count()),
                            complete: true,
                        }
                    })
                    .collect();
                wire::inquiredf_reply(&items)
            }
            Request::Download(r) => self.download(&r),
            Request::Start { items, .. } => {
                let mut results = Vec::with_capacity(items.len());
                for (item, file) in items.into_iter().zip(files) {
                    let ok = self.start(&item.channel.addr, item.barcode, &item.path, file);
                    results.push(ResultItem {
                        channel: item.channel,
                        ok,
                    });
                }
                wire::result_reply(wire::cmd::START, &results)
            }
            Request::Stop(list) => {
                let results: Vec<ResultItem> = list
                    .into_iter()
                    .map(|c| {
                        let ok = match self.find(&c.addr) {
                            Some(i) => {
                                // Stopping a channel that is not running changes nothing.
                                self.channels[i].end_test(Ended {
                                    status: WorkStatus::Stop,
                                    log_code: 0,
                                });
                                true
                            }
                            None => false,
                        };
                        ResultItem { channel: c, ok }
                    })
                    .collect();
                wire::result_reply(wire::cmd::STOP, &results)
            }
            Request::Other(name) => wire::refusal_reply(&name),
        }
    }

    fn inquire_item(&self, i: usize) -> InquireItem {
        let c = &self.channels[i];
        let current = c.current_a();
        let test = c.test();
        let ((step, kind), cycle, relative, capacity, energy) = match test {
            Some(t) => {
                let s = t.run.engine().status();
                (
                    t.step(s.plan_index),
                    s.cycle,
                    t.run.test_time_s() - s.step_start_s,
                    s.step_charge_ah + s.step_discharge_ah,
                    s.step_energy_wh,
                )
            }
            None => ((0, step_type::NONE), 0, 0.0, 0.0, 0.0),
        };
        InquireItem {
            channel: ChannelRef {
                ip: String::new(),
                ..c.reference(&self.config)
            },
            aux: 0,
            cycle,
            step,
            step_type: kind.into(),
            workstatus: c.status().name().into(),
            barcode: test.map_or_else(String::new, |t| t.barcode.clone()),
            current,
            voltage: c.cell.cell().terminal_voltage(current),
            capacity,
            energy,
            total_time: test.map_or(0.0, |t| t.run.test_time_s()),
            relative_time: relative,
            open: current != 0.0,
            log_code: test.map_or(0, Test::log_code),
            temperature: Some(c.cell.cell().temperature_c()),
        }
    }

    fn download(&self, r: &wire::DownloadRequest) -> String {
        let mut header = DownloadHeader {
            channel: ChannelRef {
                ip: String::new(),
                ..r.channel.clone()
            },
            testid: r.testid,
            startpos: r.startpos,
            count: 0,
            auxid: r.auxid,
        };
        let test = self.find(&r.channel.addr).and_then(|i| {
            let tests = &self.channels[i].tests;
            if r.testid == 0 {
                tests.last()
            } else {
                tests.iter().find(|t| t.id == r.testid)
            }
        });
        // Each record with its step type name and wall time, as `download` writes it.
        let rows: Vec<(Record, &str, f64)> = match test {
            Some(t) => {
                header.testid = t.id;
                let count = usize::try_from(r.count)
                    .unwrap_or(usize::MAX)
                    .min(wire::PAGE_SIZE);
                t.run
                    .log()
                    .page(r.startpos, count)
                    .iter()
                    .map(|s| {
                        let (step, kind) = t.step(s.plan_index);
                        (s.record(step), kind, self.unix_at_zero + s.clock_s)
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        header.count = rows.len() as u64;
        wire::download_reply(
            &header,
            rows.iter().map(|(record, step_type, unix_time_s)| DataRow {
                record,
                step_type,
                unix_time_s: *unix_time_s,
            }),
        )
    }

    /// Starts the step file `file` (read from `path`) on `addr`; false where a real BTS would
    /// answer false.
    fn start(
        &mut self,
        addr: &ChannelAddr,
        barcode: String,
        path: &str,
        file: Result<String, String>,
    ) -> bool {
        let refuse = |why: String| {
            tracing::debug!("neware sim: start on {addr} refused: {why}");
            false
        };
        let Some(i) = self.find(addr) else {
            return refuse("no such channel".into());
        };
        if self.channels[i].test().is_some_and(|t| t.run.is_active()) {
            return refuse("the channel is running a test".into());
        }
        let text = match file {
            Ok(text) => text,
            Err(e) => return refuse(e),
        };
        let engine = match load_schedule(&text, SourceKind::Neware, path, &Safety::default()) {
            Ok(engine) => engine,
            Err(e) => return refuse(e.to_string()),
        };
        let steps = engine.plan().steps.iter().map(step_info).collect();
        let id = self.next_testid;
        self.next_testid += 1;
        let ch = &mut self.channels[i];
        let run = PlanRun::start(engine, &ch.cell, self.config.record_interval_s);
        ch.tests.push(Test {
            id,
            barcode,
            steps,
            run,
        });
        true
    }
}

/// The Neware step number (from the imported step's path, `StepK`) and step type name of a
/// plan step.
fn step_info(step: &PlanStep) -> (u32, &'static str) {
    let PlanStep::Action(a) = step else {
        return (0, step_type::NONE);
    };
    let id = a
        .path
        .strip_prefix("Step")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let kind = match a.control {
        Control::Rest => step_type::REST,
        Control::Current { amps } if amps >= 0.0 => step_type::CC,
        Control::Current { .. } => step_type::DC,
        Control::Voltage { .. } => step_type::CV,
        // CCCV and anything else have no confirmed name.
        _ => step_type::NONE,
    };
    (id, kind)
}

/// The last whole millisecond of clock time `clock_s`, up to which the channels are
/// integrated. Why: a BTS counts test time in whole ms (`testtime` is an integer of ms), so
/// its records fall on whole ms and interval records are exactly the interval apart on the
/// wire. Integrated to the clock's own resolution (20 µs at 20 000x), a step change could land
/// on x.5 ms; `download` rounds each record's time on its own, and float noise sent that record
/// and its neighbours one way and the next interval record the other, 10.001 s apart.
fn on_tick(clock_s: f64) -> f64 {
    (clock_s / wire::units::S_PER_TESTTIME).floor() * wire::units::S_PER_TESTTIME
}

/// Starts simulated BTS servers.
pub struct NewareSim;

impl NewareSim {
    /// Serves a simulated BTS server on `listener` until the returned handle is dropped.
    pub fn spawn(listener: TcpListener, config: SimConfig, clock: Clock) -> io::Result<SimHandle> {
        if config.cells.len() != config.channels.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} cells for {} channels: give one cell per channel",
                    config.cells.len(),
                    config.channels.len()
                ),
            ));
        }
        let addr = listener.local_addr()?;
        let now = clock.now();
        let channels = config
            .channels
            .iter()
            .zip(&config.cells)
            .map(|(&addr, cell)| Channel {
                addr,
                cell: ChannelCell::new(cell.clone(), on_tick(now)),
                tests: Vec::new(),
            })
            .collect();
        let state = Arc::new(Mutex::new(SimState {
            unix_at_zero: clock.unix_time_s() - now,
            clock,
            channels,
            next_testid: 1,
            faults: Faults::none(),
            config,
        }));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let link = Link::up();
        tokio::spawn(serve(listener, Arc::clone(&state), link.watch(), stop_rx));
        Ok(SimHandle {
            addr,
            state,
            link,
            _stop: stop_tx,
        })
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<Mutex<SimState>>,
    link: watch::Receiver<bool>,
    stop: oneshot::Receiver<()>,
) {
    accept_while_linked(listener, link, stop, "neware sim", |stream, link| {
        tokio::spawn(connection(stream, Arc::clone(&state), link));
    })
    .await
}

async fn connection(
    stream: TcpStream,
    state: Arc<Mutex<SimState>>,
    mut link: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    let mut scanned = 0;
    // Each connection logs in on its own, as with BTS.
    let mut logged_in = false;
    loop {
        let end = match wire::frame_end(&buf, scanned) {
            Ok(Some(end)) => end,
            Ok(None) => {
                scanned = wire::resume_scan(&buf);
                // A cut link (or a dropped handle) ends the connection, closing the socket.
                match unless_cut(&mut link, rd.read_buf(&mut buf)).await {
                    None | Some(Ok(0) | Err(_)) => return,
                    Some(Ok(_)) => continue,
                }
            }
            Err(e) => {
                tracing::debug!("neware sim: dropping a connection: {e}");
                return;
            }
        };
        let request = std::str::from_utf8(&buf[..end.document])
            .map_err(|_| wire::WireError::Malformed("a request that is not UTF-8".into()))
            .and_then(wire::parse_request);
        buf.drain(..end.frame);
        scanned = 0;
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("neware sim: dropping a connection after a bad request: {e}");
                return;
            }
        };
        let files = step_files(&state, &request).await;
        let delay = lock(&state).faults.reply_delay();
        if !delay_unless_cut(delay, &mut link).await {
            return;
        }
        // Handled after the delay, as if the request arrived late: a start the client has
        // given up on still takes effect, which is the hazard a slow link poses.
        let reply = lock(&state).handle(request, files, &mut logged_in);
        if wr.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads the step files a `start` names, as the BTS PC would (outside the state lock).
async fn step_files(state: &Mutex<SimState>, request: &Request) -> Vec<Result<String, String>> {
    let Request::Start { items, .. } = request else {
        return Vec::new();
    };
    let map = lock(state).config.steps.clone();
    let mut files = Vec::with_capacity(items.len());
    for item in items {
        files.push(match map.local_path(&item.path) {
            Some(local) => tokio::fs::read_to_string(&local)
                .await
                .map_err(|e| format!("cannot read {}: {e}", local.display())),
            None => Err(format!(
                "{} is not in the step folder {:?}",
                item.path, map.remote
            )),
        });
    }
    files
}

/// A running simulator; dropping it stops the server and closes its connections.
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<Mutex<SimState>>,
    /// Whether the server is on the network; connections watch it.
    link: Link,
    _stop: oneshot::Sender<()>,
}

/// One simulated channel seen from outside, for tests and the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSnapshot {
    /// What `getchlstatus` reports.
    pub status: WorkStatus,
    /// The latest test's id (0: none yet) and how many records it has logged.
    pub testid: u64,
    pub records: u64,
    /// Test time of the latest test, s.
    pub test_time_s: f64,
    /// The cell now: terminal voltage, current (+ = into the cell) and state of charge.
    pub voltage_v: f64,
    pub current_a: f64,
    pub soc: f64,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The channel `addr` now, or `None` if the cycler has no such channel.
    pub fn channel(&self, addr: ChannelAddr) -> Option<ChannelSnapshot> {
        let mut s = lock(&self.state);
        s.advance();
        let c = &s.channels[s.find(&addr)?];
        let current = c.current_a();
        Some(ChannelSnapshot {
            status: c.status(),
            testid: c.test().map_or(0, |t| t.id),
            records: c.test().map_or(0, |t| t.run.log().count()),
            test_time_s: c.test().map_or(0.0, |t| t.run.test_time_s()),
            voltage_v: c.cell.cell().terminal_voltage(current),
            current_a: current,
            soc: c.cell.cell().soc(),
        })
    }

    /// Trips the protection of channel `addr` now, as a cell or channel fault would: the
    /// output goes off, the test ends in `protect` with `log_code`, and its log keeps every
    /// record up to this moment. False when the channel runs no test.
    pub fn raise_protect(&self, addr: ChannelAddr, log_code: u32) -> bool {
        let mut s = lock(&self.state);
        s.advance();
        let ended = Ended {
            status: WorkStatus::Protect,
            log_code,
        };
        s.find(&addr).is_some_and(|i| s.channels[i].end_test(ended))
    }

    /// Pauses (output off, test time stands still) or resumes the test on channel `addr`, as
    /// an operator at the BTS PC would. False when there is no such test to pause or resume.
    pub fn set_paused(&self, addr: ChannelAddr, paused: bool) -> bool {
        let mut s = lock(&self.state);
        s.advance();
        let Some(i) = s.find(&addr) else {
            return false;
        };
        s.channels[i]
            .tests
            .last_mut()
            .is_some_and(|t| t.run.set_paused(paused))
    }

    /// Takes the server off the network, as a pulled LAN cable does: open connections close
    /// and new ones are closed on arrival. The cycler keeps running its tests.
    pub fn cut_link(&self) {
        self.link.cut();
    }

    /// Puts the server back on the network, on the same address.
    pub fn restore_link(&self) {
        self.link.restore();
    }

    /// Delays every reply by `delay` of wall time (zero for none), for timeout tests.
    pub fn set_reply_delay(&self, delay: Duration) {
        lock(&self.state).faults.set_reply_delay(delay);
    }

    /// Refuses the next `n` requests, whatever they are, with `<result>false</result>`.
    pub fn fail_next(&self, n: u32) {
        lock(&self.state).faults.fail_next(n, ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Chemistry;
    use cyclerd_protocols::Plan;
    use cyclerd_protocols::compile::{Target, compile};
    use proptest::prelude::*;

    const CCCV_3_CYCLES: &str = include_str!("../../../deploy/protocols/cccv-3-cycles.yaml");

    /// `Clock::scaled(20_000.0)` as the device tests run it, `ns` of wall time in.
    fn scaled(ns: u64) -> f64 {
        Duration::from_nanos(ns).as_secs_f64() * 20_000.0
    }

    /// A channel of an NMC cell at 30 % SOC running `yaml` compiled into a step file, started
    /// at clock time `now`.
    fn channel(yaml: &str, now: f64) -> Channel {
        let plan = Plan::from_yaml(yaml, "p.yaml").unwrap();
        let text = compile(&plan, Target::Neware).unwrap();
        let engine = load_schedule(&text, SourceKind::Neware, "p.xml", &Safety::default()).unwrap();
        let steps = engine.plan().steps.iter().map(step_info).collect();
        let cell = ChannelCell::new(
            CellParams {
                initial_soc: 0.3,
                ..CellParams::new(Chemistry::Nmc, 2.5)
            },
            now,
        );
        let run = PlanRun::start(engine, &cell, 10.0);
        Channel {
            addr: ChannelAddr {
                unit: 1,
                sub_unit: 1,
                channel: 1,
            },
            cell,
            tests: vec![Test {
                id: 1,
                barcode: "t".into(),
                steps,
                run,
            }],
        }
    }

    /// The channel's log as a client reads it back: through `download`'s wire format.
    fn downloaded(ch: &Channel) -> Vec<Record> {
        let t = ch.test().unwrap();
        let entries = t.run.log().entries();
        let records: Vec<(Record, &str)> = entries
            .iter()
            .map(|s| {
                let (step, kind) = t.step(s.plan_index);
                (s.record(step), kind)
            })
            .collect();
        let header = DownloadHeader {
            channel: ChannelRef {
                ip: String::new(),
                devtype: 27,
                addr: ch.addr,
            },
            testid: 1,
            startpos: 1,
            count: records.len() as u64,
            auxid: 0,
        };
        let frame = wire::download_reply(
            &header,
            records.iter().map(|(record, step_type)| DataRow {
                record,
                step_type,
                unix_time_s: 0.0,
            }),
        );
        let mut out = Vec::new();
        wire::parse_download_reply(&frame, &mut out).unwrap();
        assert_eq!(out.len(), entries.len());
        out
    }

    fn gaps_over(records: &[Record], interval_s: f64) -> Vec<(f64, f64)> {
        records
            .windows(2)
            .filter(|w| w[1].test_time_s - w[0].test_time_s > interval_s + 1e-6)
            .map(|w| (w[0].test_time_s, w[1].test_time_s))
            .collect()
    }

    const TWO_RESTS: &str = "protocol: t\nversion: 1\nparams: {capacity: 2.5 Ah}\n\
        safety: {voltage: [2.5 V, 4.25 V], current: 5 A}\n\
        steps: [\"Rest for 1 second\", \"Rest for 3 hours\"]\n";

    /// A step change half way through a millisecond of test time: the clock's own resolution
    /// at 20 000x (1 ns of wall time is 20 µs) puts 1 step change in 50 there.
    #[test]
    fn a_step_change_half_way_through_a_millisecond_does_not_stretch_an_interval_on_the_wire() {
        let mut ns = 1_000_000;
        let mut ch = channel(TWO_RESTS, scaled(ns));
        // The first step ends at the first sub-step past 1 s: 1.0005 s.
        ns += 49_975;
        ch.advance(scaled(ns));
        ns += 50;
        ch.advance(scaled(ns));
        while ch.test().unwrap().run.is_active() {
            ns += 3_000_000;
            ch.advance(scaled(ns));
        }
        let records = downloaded(&ch);
        assert_eq!(records[0].test_time_s, 0.0);
        assert_eq!(gaps_over(&records, 10.0), []);
        // Every record on a whole millisecond, as a BTS logs them.
        let t = ch.test().unwrap();
        for s in t.run.log().entries() {
            let ms = s.test_time_s * 1e3;
            assert!((ms - ms.round()).abs() < 1e-6, "{s:?}");
        }
        assert_eq!(t.run.state(), &RunState::Ended(Outcome::Finished.into()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// [`CCCV_3_CYCLES`] under a clock read at irregular moments, with the long jumps a
        /// starved task sees: every record comes back at most one interval after the last.
        #[test]
        fn records_come_back_at_most_an_interval_apart_however_the_clock_jumps(
            start in 1_000_000u64..2_000_000,
            jumps in proptest::collection::vec(
                prop_oneof![9 => 1u64..200_000, 1 => 200_000u64..50_000_000],
                1..64,
            ),
        ) {
            let mut ns = start;
            let mut ch = channel(CCCV_3_CYCLES, on_tick(scaled(ns)));
            for jump in jumps.iter().cycle() {
                if !ch.test().unwrap().run.is_active() {
                    break;
                }
                ns += jump;
                ch.advance(scaled(ns));
            }
            let t = ch.test().unwrap();
            prop_assert_eq!(t.run.state(), &RunState::Ended(Outcome::Finished.into()));
            let logged: Vec<f64> = t.run.log().entries().iter().map(|s| s.test_time_s).collect();
            prop_assert!(logged.windows(2).all(|w| w[1] - w[0] <= 10.0 + 1e-6), "{logged:?}");
            let records = downloaded(&ch);
            prop_assert_eq!(gaps_over(&records, 10.0), []);
        }
    }
}
