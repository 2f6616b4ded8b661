//! A simulated MITS Pro console serving CTI: many channels, one cell each, on two listeners
//! (control and file operations).
//!
//! It speaks the protocol as the facts and the open clients describe it: every frame's token,
//! length and checksum are checked; each connection must log in before anything else; the
//! control port answers channel info, assign, start and stop, the file port answers uploads.
//! Uploaded schedules are kept by file name; START imports the assigned schedule back into a
//! plan (`import(.., SourceKind::Arbin, ..)`) and runs cyclerd's engine against the channel's
//! cell. Time is the [`Clock`]'s, integrated lazily on every request and handle call in
//! sub-steps; a record is logged every `record_interval_s` of test time, at every step change
//! and when a test ends, numbered from 1 without gaps, in a device-side log that the cyclerd
//! extension GET_RECORDS reads from any index (see the `arbin` module doc).
//!
//! Where the real console's behaviour is not public, the simulator's choice:
//! - a frame with a bad checksum is dropped without a reply (the stream stays in step, since
//!   the length is known); a bad token or an impossible length closes the connection;
//! - any request before a successful login closes the connection;
//! - a command it does not serve (or one sent to the wrong port) is answered with a 128-byte
//!   frame of code [`UNKNOWN_COMMAND_FEEDBACK`] (Arbin's library has an "unknown command"
//!   feedback whose code is not public);
//! - a stopped test leaves the channel Idle with the test's name still reported, a schedule
//!   whose own safety trips leaves it Unsafe with the reason as exit condition;
//! - an upload over an existing file of the same name but other content is refused (result 5).
//!
//! GET_CHANNELS_INFO for one channel is answered with every channel by default, as a MITS 10
//! server was seen to do ([`SimConfig::info_lists_every_channel`]), and
//! [`SimConfig::reverse_info`] lists the channels in reverse order: a client that takes a
//! block by position fails here. Faults are injected through the [`SimHandle`]: a cut link
//! (the channels keep running), reply delays, refused commands, and unsafe, error or paused
//! channels.

use super::client::ArbinConfig;
use super::wire::{
    self, AssignSchedule, AuxValue, ChannelInfo, ChannelsInfo, ChannelsInfoRequest, CommonFeedback,
    DataRecord, Direction, Frame, Login, LoginFeedback, RecordsFeedback, RecordsRequest, StartTest,
    StopTest, Upload, UploadFeedback, WireError, cmd, login_result, need, result, selection,
    status, upload_result,
};
use crate::Clock;
use crate::cell::CellParams;
use crate::cycler_sim::{ChannelCell, PlanRun, RunState, Sample, ScheduleError, load_schedule};
use crate::transport::faults::Faults;
use crate::transport::network::{Link, accept_while_linked, delay_unless_cut, unless_cut};
use cyclerd_protocols::import::SourceKind;
use cyclerd_protocols::{Outcome, PlanStep, Safety};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Largest file the console accepts.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most records one GET_RECORDS feedback carries.
pub const MAX_RECORDS_PER_FEEDBACK: usize = 2000;
/// The simulator's answer to a command it does not serve (see the module doc).
pub const UNKNOWN_COMMAND_FEEDBACK: u32 = 0xEEBA_FFFF;

/// What the simulated console is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One cell per channel; channels are numbered from 0 in this order.
    pub cells: Vec<CellParams>,
    /// The only login accepted.
    pub username: String,
    pub password: String,
    /// Reported in the login feedback.
    pub serial: String,
    /// Test time between logged records, s (records are also logged at every step change and
    /// when a test ends).
    pub record_interval_s: f64,
    /// How the cyclerd GET_RECORDS extension is answered.
    pub record_log: RecordLog,
    /// Answer a one-channel GET_CHANNELS_INFO with every channel, as a MITS 10 server did.
    pub info_lists_every_channel: bool,
    /// List channel blocks from the highest index down.
    pub reverse_info: bool,
}

impl SimConfig {
    /// `channels` channels with a copy of `cell` each, login `admin`/`arbin`, a record every
    /// 10 s, GET_RECORDS served, one-channel info requests answered with every channel, in
    /// index order.
    pub fn new(channels: usize, cell: CellParams) -> SimConfig {
        SimConfig {
            cells: vec![cell; channels],
            username: "admin".into(),
            password: "arbin".into(),
            serial: "SIM-CTI".into(),
            record_interval_s: 10.0,
            record_log: RecordLog::Served,
            info_lists_every_channel: true,
            reverse_info: false,
        }
    }
}

/// How the console answers the cyclerd GET_RECORDS extension, which CTI does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLog {
    /// Records are served from any index.
    Served,
    /// Answered as an unknown command, as a real console presumably does.
    Refused,
    /// Not answered at all.
    Ignored,
}

/// A fault a handle can put a channel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// A safety limit tripped (status 0x08).
    Unsafe,
    /// A hardware or software error (status 0x0E).
    Error,
}

/// How a test ended: the status it leaves the channel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndState {
    Finished,
    /// Stopped by CTI or an operator: the channel is Idle again.
    Stopped,
    Unsafe,
    Error,
}

/// How a test ended, and the exit condition the channel info shows for it.
#[derive(Debug, Clone, PartialEq)]
struct Ended {
    /// The status the end leaves.
    state: EndState,
    /// Why it ended, in the console's words (or the engine's reason).
    exit_condition: String,
}

impl From<Outcome> for Ended {
    fn from(outcome: Outcome) -> Ended {
        match outcome {
            Outcome::Finished => Ended {
                state: EndState::Finished,
                exit_condition: "Schedule finished".into(),
            },
            Outcome::Faulted(reason) => {
                tracing::debug!("arbin sim: schedule safety tripped: {reason}");
                Ended {
                    state: EndState::Unsafe,
                    exit_condition: reason,
                }
            }
        }
    }
}

/// One test a channel runs or ran (kept until the next start).
struct Test {
    /// The test name START gave.
    name: String,
    /// The schedule's step number (from 1) of each plan step (0 for loop markers and the
    /// end).
    step_ids: Vec<u32>,
    /// The schedule's plan running on the channel's cell, with the test's log.
    run: PlanRun<Ended>,
}

impl Test {
    /// The schedule step number of plan step `plan_index`.
    fn step(&self, plan_index: usize) -> u32 {
        self.step_ids.get(plan_index).copied().unwrap_or(0)
    }

    /// The record of `sample` in the GET_RECORDS layout.
    fn record(&self, sample: &Sample) -> DataRecord {
        DataRecord {
            index: sample.index,
            test_time_s: sample.test_time_s,
            step_time_s: sample.step_time_s,
            voltage_v: sample.voltage_v as f32,
            current_a: sample.current_a as f32,
            step_capacity_ah: sample.step_capacity_ah as f32,
            step_energy_wh: sample.step_energy_wh as f32,
            temperature_c: sample.temperature_c.map_or(f32::NAN, |t| t as f32),
            step: self.step(sample.plan_index),
            cycle: sample.cycle,
        }
    }
}

struct Channel {
    /// The cell on the channel's terminals.
    cell: ChannelCell,
    /// The schedule the next START runs.
    assigned: Option<String>,
    /// The running or last test, kept until the next START.
    test: Option<Test>,
}

impl Channel {
    fn current_a(&self) -> f64 {
        self.test
            .as_ref()
            .map_or(0.0, |t| t.run.current_a(self.cell.cell()))
    }

    fn status(&self) -> i16 {
        let Some(t) = &self.test else {
            return status::IDLE;
        };
        match t.run.state() {
            RunState::Running => match self.current_a() {
                i if i > 0.0 => status::CHARGE,
                i if i < 0.0 => status::DISCHARGE,
                _ => status::REST,
            },
            RunState::Paused => status::PAUSE,
            RunState::Ended(e) => match e.state {
                EndState::Finished => status::FINISHED,
                EndState::Stopped => status::IDLE,
                EndState::Unsafe => status::UNSAFE,
                EndState::Error => status::ERROR,
            },
        }
    }

    /// Integrates the cell (and runs the test) up to clock time `now`.
    fn advance(&mut self, now: f64) {
        let run = self.test.as_mut().map(|t| &mut t.run);
        self.cell.advance(run, now);
    }

    /// Ends the active test in `state` with `exit_condition`. False when no test is active.
    fn end_test(&mut self, state: EndState, exit_condition: &str) -> bool {
        let ended = Ended {
            state,
            exit_condition: exit_condition.into(),
        };
        self.test
            .as_mut()
            .is_some_and(|t| t.run.end(&self.cell, ended))
    }

    /// The channel block of GET_CHANNELS_INFO.
    fn info(&self, index: u32, with_aux: bool) -> ChannelInfo {
        let i = self.current_a();
        let v = self.cell.cell().terminal_voltage(i);
        let mut info = ChannelInfo {
            channel: index,
            status: self.status(),
            schedule: self.assigned.clone().unwrap_or_default(),
            voltage_v: v as f32,
            current_a: i as f32,
            power_w: (v * i) as f32,
            ..ChannelInfo::default()
        };
        if with_aux {
            info.aux[wire::aux::TEMPERATURE] = vec![AuxValue {
                value: self.cell.cell().temperature_c() as f32,
                dxdt: 0.0,
            }];
        }
        if let Some(t) = &self.test {
            let s = t.run.engine().status();
            info.test_name = t.name.clone();
            if let RunState::Ended(e) = t.run.state() {
                info.exit_condition = e.exit_condition.clone();
            }
            info.step_and_cycle_text = format!("Step {}, Cycle {}", t.step(s.plan_index), s.cycle);
            info.test_time_s = t.run.test_time_s();
            info.step_time_s = (t.run.test_time_s() - s.step_start_s).max(0.0);
            info.charge_capacity_ah = s.charge_capacity_ah as f32;
            info.discharge_capacity_ah = s.discharge_capacity_ah as f32;
            info.charge_energy_wh = s.charge_energy_wh as f32;
            info.discharge_energy_wh = s.discharge_energy_wh as f32;
        }
        info
    }
}

/// A file being uploaded on one connection.
struct Partial {
    path: String,
    file_len: u64,
    package_count: u32,
    md5: String,
    /// The index the next package must have.
    next: u32,
    data: Vec<u8>,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Control,
    Files,
}

/// What one connection knows about itself.
struct Session {
    port: Port,
    logged_in: bool,
    upload: Option<Partial>,
}

/// What to do after a request.
enum Reply {
    Send(Frame),
    /// Nothing goes back (an ignored request).
    Silent,
    /// The connection is closed (a request before login).
    Close,
}

struct Console {
    config: SimConfig,
    /// The only time source: every request integrates the channels up to its `now`.
    clock: Clock,
    channels: Vec<Channel>,
    /// Uploaded files by name (the path's last component, lower case: Windows names).
    files: HashMap<String, String>,
    faults: Faults,
}

/// The file name of an upload path (`C:\a\b.sdu` -> `b.sdu`), lower case as Windows compares.
fn file_key(path: &str) -> String {
    path.rsplit(['\\', '/'])
        .next()
        .unwrap_or(path)
        .to_lowercase()
}

/// The schedule step number (`Schedule_StepN` -> N + 1) of each plan step.
fn step_ids(steps: &[PlanStep]) -> Vec<u32> {
    steps
        .iter()
        .map(|step| match step {
            PlanStep::Action(a) => a
                .path
                .strip_prefix("Schedule_Step")
                .and_then(|n| n.parse::<u32>().ok())
                .map_or(0, |n| n + 1),
            _ => 0,
        })
        .collect()
}

impl Console {
    fn advance(&mut self) {
        let now = self.clock.now();
        for ch in &mut self.channels {
            ch.advance(now);
        }
    }

    fn channel_index(&self, channel: i64) -> Option<usize> {
        usize::try_from(channel)
            .ok()
            .filter(|&i| i < self.channels.len())
    }

    fn handle(&mut self, session: &mut Session, frame: &Frame) -> Reply {
        self.advance();
        if frame.command == cmd::LOGIN {
            return match Login::from_frame(frame) {
                Ok(login) => {
                    session.logged_in = login.username == self.config.username
                        && login.password == self.config.password;
                    Reply::Send(
                        LoginFeedback {
                            result: if session.logged_in {
                                login_result::SUCCESS
                            } else {
                                login_result::FAIL
                            },
                            serial: self.config.serial.clone(),
                            version: 1,
                            allow_control: 1,
                            channels: self.channels.len() as u32,
                        }
                        .to_frame(),
                    )
                }
                Err(e) => {
                    tracing::debug!("arbin sim: bad login frame: {e}");
                    Reply::Close
                }
            };
        }
        if !session.logged_in {
            tracing::debug!("arbin sim: closing a connection that did not log in");
            return Reply::Close;
        }
        let decoded = match (session.port, frame.command) {
            (Port::Control, cmd::GET_CHANNELS_INFO) => {
                ChannelsInfoRequest::from_frame(frame).map(|r| self.channels_info(r))
            }
            (Port::Control, cmd::ASSIGN_SCHEDULE) => {
                AssignSchedule::from_frame(frame).map(|r| self.assign(&r))
            }
            (Port::Control, cmd::START) => StartTest::from_frame(frame).map(|r| self.start(&r)),
            (Port::Control, cmd::STOP) => StopTest::from_frame(frame).map(|r| self.stop(&r)),
            (Port::Control, cmd::GET_RECORDS) => match self.config.record_log {
                RecordLog::Served => RecordsRequest::from_frame(frame).map(|r| self.records(&r)),
                RecordLog::Refused => Ok(Reply::Send(unknown_command())),
                RecordLog::Ignored => Ok(Reply::Silent),
            },
            (Port::Files, cmd::UPLOAD) => {
                Upload::from_frame(frame).map(|r| self.upload(session, r))
            }
            _ => Ok(Reply::Send(unknown_command())),
        };
        decoded.unwrap_or_else(|e: WireError| {
            tracing::debug!("arbin sim: closing after a malformed {frame}: {e}");
            Reply::Close
        })
    }

    fn channels_info(&self, r: ChannelsInfoRequest) -> Reply {
        let with_aux = r.need & need::AUX != 0;
        let all = r.channel < 0 || self.config.info_lists_every_channel;
        let mut listed: Vec<usize> = (0..self.channels.len())
            .filter(|&i| all || i64::from(r.channel) == i as i64)
            .filter(|&i| {
                let class = status::lookup(self.channels[i].status()).map(|(_, c)| c);
                match r.selection {
                    selection::RUNNING if r.channel < 0 => {
                        matches!(class, Some(status::Class::Running))
                    }
                    selection::UNSAFE if r.channel < 0 => {
                        matches!(class, Some(status::Class::Unsafe))
                    }
                    _ => true,
                }
            })
            .collect();
        if self.config.reverse_info {
            listed.reverse();
        }
        Reply::Send(
            ChannelsInfo {
                channels: listed
                    .into_iter()
                    .map(|i| self.channels[i].info(i as u32, with_aux))
                    .collect(),
            }
            .to_frame(),
        )
    }

    fn common(command: u32, channel: i32, result: u8) -> Reply {
        Reply::Send(
            CommonFeedback {
                command,
                channel,
                result,
            }
            .to_frame(),
        )
    }

    fn assign(&mut self, r: &AssignSchedule) -> Reply {
        let reply = |code| Self::common(cmd::ASSIGN_SCHEDULE, r.channel, code);
        if self.faults.failing() {
            return reply(result::MONITOR_BUSY);
        }
        let targets: Vec<usize> = if r.all {
            (0..self.channels.len()).collect()
        } else {
            match self.channel_index(i64::from(r.channel)) {
                Some(i) => vec![i],
                None => return reply(result::BAD_CHANNEL),
            }
        };
        if r.schedule.is_empty() {
            return reply(result::ASSIGN_NAME_EMPTY);
        }
        if !self.files.contains_key(&file_key(&r.schedule)) {
            return reply(result::ASSIGN_NOT_FOUND);
        }
        if targets.iter().any(|&i| {
            self.channels[i]
                .test
                .as_ref()
                .is_some_and(|t| t.run.is_active())
        }) {
            return reply(result::ASSIGN_CHANNEL_RUNNING);
        }
        for i in targets {
            self.channels[i].assigned = Some(r.schedule.clone());
        }
        reply(result::OK)
    }

    fn start(&mut self, r: &StartTest) -> Reply {
        let first = r.channels.first().map_or(-1, |&c| i32::from(c));
        if self.faults.failing() {
            return Self::common(cmd::START, first, result::MONITOR_BUSY);
        }
        if r.channels.is_empty() {
            return Self::common(cmd::START, first, result::START_NO_CHANNEL_SELECTED);
        }
        if r.test_name.is_empty() {
            return Self::common(cmd::START, first, result::START_NO_TEST_NAME);
        }
        // Every channel is checked before any starts.
        let mut plans = Vec::new();
        for &c in &r.channels {
            let refuse = |code| Self::common(cmd::START, i32::from(c), code);
            let Some(i) = self.channel_index(i64::from(c)) else {
                return refuse(result::BAD_CHANNEL);
            };
            let ch = &self.channels[i];
            // An unsafe channel must be cleared before it takes a test.
            let busy = ch.test.as_ref().is_some_and(|t| match t.run.state() {
                RunState::Ended(e) => e.state == EndState::Unsafe,
                _ => true,
            });
            if busy {
                return refuse(result::START_CHANNEL_RUNNING);
            }
            let Some(schedule) = &ch.assigned else {
                return refuse(result::START_NO_SCHEDULE);
            };
            let Some(text) = self.files.get(&file_key(schedule)) else {
                return refuse(result::START_NO_SCHEDULE);
            };
            match load_schedule(text, SourceKind::Arbin, schedule, &Safety::default()) {
                Ok(engine) => plans.push((i, engine)),
                Err(ScheduleError::Import(e)) => {
                    tracing::debug!("arbin sim: schedule {schedule} does not import: {e}");
                    return refuse(result::START_INCOMPATIBLE);
                }
                Err(ScheduleError::Refused(e)) => {
                    tracing::debug!("arbin sim: schedule {schedule} refused: {e}");
                    return refuse(result::START_SAFETY_PRECHECK);
                }
            }
        }
        let interval = self.config.record_interval_s;
        for (i, engine) in plans {
            let ch = &mut self.channels[i];
            ch.test = Some(Test {
                name: r.test_name.clone(),
                step_ids: step_ids(&engine.plan().steps),
                run: PlanRun::start(engine, &ch.cell, interval),
            });
        }
        Self::common(cmd::START, first, result::OK)
    }

    fn stop(&mut self, r: &StopTest) -> Reply {
        let channel = i32::try_from(r.channel).unwrap_or(-1);
        if self.faults.failing() {
            return Self::common(cmd::STOP, channel, result::MONITOR_BUSY);
        }
        let targets: Vec<usize> = if r.all {
            (0..self.channels.len()).collect()
        } else {
            match self.channel_index(i64::from(r.channel)) {
                Some(i) => vec![i],
                None => return Self::common(cmd::STOP, channel, result::BAD_CHANNEL),
            }
        };
        for i in targets {
            // Stopping a channel that runs nothing changes nothing.
            self.channels[i].end_test(EndState::Stopped, "Stopped by CTI");
        }
        Self::common(cmd::STOP, channel, result::OK)
    }

    fn records(&self, r: &RecordsRequest) -> Reply {
        let mut fb = RecordsFeedback {
            channel: r.channel,
            result: result::OK,
            last: 0,
            records: Vec::new(),
        };
        let Some(i) = self.channel_index(i64::from(r.channel)) else {
            fb.result = result::BAD_CHANNEL;
            return Reply::Send(fb.to_frame());
        };
        let Some(test) = &self.channels[i].test else {
            fb.result = result::RECORDS_NO_TEST;
            return Reply::Send(fb.to_frame());
        };
        let log = test.run.log();
        fb.last = log.count();
        let count = (r.max as usize).min(MAX_RECORDS_PER_FEEDBACK);
        fb.records = log
            .page(r.from, count)
            .iter()
            .map(|s| test.record(s))
            .collect();
        Reply::Send(fb.to_frame())
    }

    fn upload(&mut self, session: &mut Session, u: Upload) -> Reply {
        let reply = |result: u32| {
            Reply::Send(
                UploadFeedback {
                    result,
                    time: u.time,
                    package_count: u.package_count,
                    package_index: u.package_index,
                }
                .to_frame(),
            )
        };
        if self.faults.failing() {
            session.upload = None;
            return reply(upload_result::FAILED);
        }
        if u.package_index == 0 {
            if u.file_len > MAX_FILE_BYTES || u.package_count == 0 || u.path.is_empty() {
                return reply(upload_result::FAILED);
            }
            session.upload = Some(Partial {
                path: u.path.clone(),
                file_len: u.file_len,
                package_count: u.package_count,
                md5: u.md5.clone(),
                next: 0,
                data: Vec::new(),
            });
        }
        let Some(p) = session.upload.as_mut() else {
            return reply(upload_result::FAILED);
        };
        let in_step = p.next == u.package_index
            && p.path == u.path
            && p.package_count == u.package_count
            && p.md5 == u.md5
            && p.file_len == u.file_len
            && (p.data.len() as u64 + u.data.len() as u64) <= p.file_len;
        if !in_step {
            session.upload = None;
            return reply(upload_result::FAILED);
        }
        p.data.extend_from_slice(&u.data);
        p.next += 1;
        if u.package_index + 1 < u.package_count {
            return reply(upload_result::IN_PROGRESS);
        }
        let Some(p) = session.upload.take() else {
            return reply(upload_result::FAILED);
        };
        if p.data.len() as u64 != p.file_len || wire::md5_hex(&p.data) != p.md5 {
            return reply(upload_result::MD5_ERROR);
        }
        // Schedules are latin-1 text: each byte is the character of that code.
        let text: String = p.data.iter().map(|&b| char::from(b)).collect();
        let key = file_key(&p.path);
        match self.files.get(&key) {
            Some(old) if *old == text => reply(upload_result::EXISTS_SAME_MD5),
            Some(_) => reply(upload_result::EXISTS_DIFFERENT_MD5),
            None => {
                self.files.insert(key, text);
                reply(upload_result::SUCCESS)
            }
        }
    }
}

fn unknown_command() -> Frame {
    Frame::new(
        UNKNOWN_COMMAND_FEEDBACK,
        vec![0; wire::COMMON_FEEDBACK_LEN - wire::HEADER_LEN - wire::CHECKSUM_LEN],
    )
}

fn lock(console: &Mutex<Console>) -> MutexGuard<'_, Console> {
    // A panic while holding the lock cannot leave the state half-written in a way that matters
    // for a simulator; keep serving.
    console.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts simulated consoles.
pub struct ArbinSim;

impl ArbinSim {
    /// Serves a simulated console, CTI control on `control` and file operations on `files`,
    /// until the returned handle is dropped.
    pub fn spawn(
        control: TcpListener,
        files: TcpListener,
        config: SimConfig,
        clock: Clock,
    ) -> io::Result<SimHandle> {
        if !(config.record_interval_s.is_finite() && config.record_interval_s > 0.0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "record interval {} s: give a positive number of seconds",
                    config.record_interval_s
                ),
            ));
        }
        let control_addr = control.local_addr()?;
        let file_addr = files.local_addr()?;
        let now = clock.now();
        let console = Arc::new(Mutex::new(Console {
            channels: config
                .cells
                .iter()
                .map(|c| Channel {
                    cell: ChannelCell::new(c.clone(), now),
                    assigned: None,
                    test: None,
                })
                .collect(),
            config,
            clock,
            files: HashMap::new(),
            faults: Faults::none(),
        }));
        let link = Link::up();
        let mut stops = Vec::new();
        for (listener, port) in [(control, Port::Control), (files, Port::Files)] {
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stops.push(stop_tx);
            tokio::spawn(serve(
                listener,
                Arc::clone(&console),
                port,
                link.watch(),
                stop_rx,
            ));
        }
        Ok(SimHandle {
            control_addr,
            file_addr,
            console,
            link,
            _stop: stops,
        })
    }
}

async fn serve(
    listener: TcpListener,
    console: Arc<Mutex<Console>>,
    port: Port,
    link: watch::Receiver<bool>,
    stop: oneshot::Receiver<()>,
) {
    accept_while_linked(listener, link, stop, "arbin sim", |stream, link| {
        tokio::spawn(connection(stream, Arc::clone(&console), port, link));
    })
    .await
}

async fn connection(
    stream: TcpStream,
    console: Arc<Mutex<Console>>,
    port: Port,
    mut link: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    let mut session = Session {
        port,
        logged_in: false,
        upload: None,
    };
    loop {
        let frame = match wire::split_frame(&buf, Direction::Request) {
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                frame
            }
            Ok(None) => {
                buf.reserve(64 * 1024);
                // A cut link (or a dropped handle) ends the connection, closing the socket.
                match unless_cut(&mut link, rd.read_buf(&mut buf)).await {
                    None | Some(Ok(0) | Err(_)) => return,
                    Some(Ok(_)) => continue,
                }
            }
            Err(WireError::Checksum { frame_len, .. }) => {
                tracing::debug!("arbin sim: dropping a frame with a bad checksum");
                buf.drain(..frame_len);
                continue;
            }
            Err(e) => {
                tracing::debug!("arbin sim: closing a connection out of step: {e}");
                return;
            }
        };
        let reply = lock(&console).handle(&mut session, &frame);
        let frame = match reply {
            Reply::Send(frame) => frame,
            Reply::Silent => continue,
            Reply::Close => return,
        };
        let delay = lock(&console).faults.reply_delay();
        if !delay_unless_cut(delay, &mut link).await {
            return;
        }
        if wr
            .write_all(&frame.encode(Direction::Feedback))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A running simulated console; dropping it stops its servers and closes its connections.
pub struct SimHandle {
    control_addr: SocketAddr,
    file_addr: SocketAddr,
    console: Arc<Mutex<Console>>,
    /// Whether the console is on the network; connections watch it.
    link: Link,
    _stop: Vec<oneshot::Sender<()>>,
}

/// One simulated channel seen from outside, for tests and the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSnapshot {
    /// The status code GET_CHANNELS_INFO reports ([`status`]).
    pub status: i16,
    /// The assigned schedule and the test (running or last) on the channel.
    pub schedule: Option<String>,
    pub test: Option<String>,
    /// Records the test has logged, and its test time, s.
    pub records: u64,
    pub test_time_s: f64,
    /// The cell now: terminal voltage, current (+ = into the cell) and state of charge.
    pub voltage_v: f64,
    pub current_a: f64,
    pub soc: f64,
}

impl SimHandle {
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    pub fn file_addr(&self) -> SocketAddr {
        self.file_addr
    }

    /// A client configuration for this console, with its login and `timeout`.
    pub fn client_config(&self, timeout: Duration) -> ArbinConfig {
        let c = lock(&self.console);
        ArbinConfig {
            control_port: self.control_addr.port(),
            file_port: self.file_addr.port(),
            timeout,
            ..ArbinConfig::new(
                self.control_addr.ip(),
                &c.config.username,
                &c.config.password,
            )
        }
    }

    /// Channel `index` now, or `None` if the console has no such channel.
    pub fn channel(&self, index: u32) -> Option<ChannelSnapshot> {
        let mut c = lock(&self.console);
        c.advance();
        let ch = c.channels.get(usize::try_from(index).ok()?)?;
        let current = ch.current_a();
        Some(ChannelSnapshot {
            status: ch.status(),
            schedule: ch.assigned.clone(),
            test: ch.test.as_ref().map(|t| t.name.clone()),
            records: ch.test.as_ref().map_or(0, |t| t.run.log().count()),
            test_time_s: ch.test.as_ref().map_or(0.0, |t| t.run.test_time_s()),
            voltage_v: ch.cell.cell().terminal_voltage(current),
            current_a: current,
            soc: ch.cell.cell().soc(),
        })
    }

    /// The device-side log of the test on channel `index` (record k at index k - 1).
    pub fn records(&self, index: u32) -> Vec<DataRecord> {
        let mut c = lock(&self.console);
        c.advance();
        usize::try_from(index)
            .ok()
            .and_then(|i| c.channels.get(i))
            .and_then(|ch| ch.test.as_ref())
            .map_or_else(Vec::new, |t| {
                t.run.log().entries().iter().map(|s| t.record(s)).collect()
            })
    }

    /// The uploaded file `name` (any case), as text.
    pub fn file(&self, name: &str) -> Option<String> {
        lock(&self.console).files.get(&file_key(name)).cloned()
    }

    /// Trips channel `index` into `fault` now with `reason` as its exit condition: output
    /// off, the test's log kept up to this moment. False when it runs no test.
    pub fn set_fault(&self, index: u32, fault: SimFault, reason: &str) -> bool {
        let mut c = lock(&self.console);
        c.advance();
        let state = match fault {
            SimFault::Unsafe => EndState::Unsafe,
            SimFault::Error => EndState::Error,
        };
        usize::try_from(index)
            .ok()
            .and_then(|i| c.channels.get_mut(i))
            .is_some_and(|ch| ch.end_test(state, reason))
    }

    /// Pauses (output off, test time stands still) or resumes the test on channel `index`,
    /// as an operator at the console would. False when there is no such test.
    pub fn set_paused(&self, index: u32, paused: bool) -> bool {
        let mut c = lock(&self.console);
        c.advance();
        usize::try_from(index)
            .ok()
            .and_then(|i| c.channels.get_mut(i))
            .and_then(|ch| ch.test.as_mut())
            .is_some_and(|t| t.run.set_paused(paused))
    }

    /// Takes the console off the network, as a pulled LAN cable does: open connections close
    /// and new ones are closed on arrival. The channels keep running their tests.
    pub fn cut_link(&self) {
        self.link.cut();
    }

    /// Puts the console back on the network, on the same addresses.
    pub fn restore_link(&self) {
        self.link.restore();
    }

    /// Delays every reply by `delay` of wall time (zero for none), for timeout tests.
    pub fn set_reply_delay(&self, delay: Duration) {
        lock(&self.console).faults.set_reply_delay(delay);
    }

    /// Refuses the next `n` commands that carry a result: ASSIGN_SCHEDULE, START and STOP with
    /// 0x11 (the Monitor & Control window is busy, the usual transient refusal), UPLOAD with
    /// "failed".
    pub fn fail_next(&self, n: u32) {
        lock(&self.console).faults.fail_next(n, ());
    }
}
