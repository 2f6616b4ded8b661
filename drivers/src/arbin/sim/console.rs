//! The simulated MITS console's state and its answer to each CTI frame, uploads included
//! (pure: no I/O).

use super::{
    Channel, EndState, MAX_FILE_BYTES, MAX_RECORDS_PER_FEEDBACK, RecordLog, SimConfig, Test,
    UNKNOWN_COMMAND_FEEDBACK,
};
use crate::Clock;
use crate::arbin::wire::{
    self, AssignSchedule, ChannelsInfo, ChannelsInfoRequest, CommonFeedback, Frame, Login,
    LoginFeedback, RecordsFeedback, RecordsRequest, StartTest, StopTest, Upload, UploadFeedback,
    WireError, cmd, login_result, need, result, selection, status, upload_result,
};
use crate::cycler_sim::{PlanRun, RunState, ScheduleError, load_schedule};
use crate::transport::faults::Faults;
use cyclerd_protocols::import::SourceKind;
use cyclerd_protocols::{PlanStep, Safety};
use std::collections::HashMap;

/// A file being uploaded on one connection.
pub(super) struct Partial {
    pub(super) path: String,
    pub(super) file_len: u64,
    pub(super) package_count: u32,
    pub(super) md5: String,
    /// The index the next package must have.
    pub(super) next: u32,
    pub(super) data: Vec<u8>,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Port {
    Control,
    Files,
}

/// What one connection knows about itself.
pub(super) struct Session {
    pub(super) port: Port,
    pub(super) logged_in: bool,
    pub(super) upload: Option<Partial>,
}

/// What to do after a request.
pub(super) enum Reply {
    Send(Frame),
    /// Nothing goes back (an ignored request).
    Silent,
    /// The connection is closed (a request before login).
    Close,
}

pub(super) struct Console {
    pub(super) config: SimConfig,
    /// The only time source: every request integrates the channels up to its `now`.
    pub(super) clock: Clock,
    pub(super) channels: Vec<Channel>,
    /// Uploaded files by name (the path's last component, lower case: Windows names).
    pub(super) files: HashMap<String, String>,
    pub(super) faults: Faults,
}

/// The file name of an upload path (`C:\a\b.sdu` -> `b.sdu`), lower case as Windows compares.
pub(super) fn file_key(path: &str) -> String {
    path.rsplit(['\\', '/'])
        .next()
        .unwrap_or(path)
        .to_lowercase()
}

/// The schedule step number (`Schedule_StepN` -> N + 1) of each plan step.
pub(super) fn step_ids(steps: &[PlanStep]) -> Vec<u32> {
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
    pub(super) fn advance(&mut self) {
        let now = self.clock.now();
        for ch in &mut self.channels {
            ch.advance(now);
        }
    }

    pub(super) fn channel_index(&self, channel: i64) -> Option<usize> {
        usize::try_from(channel)
            .ok()
            .filter(|&i| i < self.channels.len())
    }

    pub(super) fn handle(&mut self, session: &mut Session, frame: &Frame) -> Reply {
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

    pub(super) fn channels_info(&self, r: ChannelsInfoRequest) -> Reply {
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

    pub(super) fn common(command: u32, channel: i32, result: u8) -> Reply {
        Reply::Send(
            CommonFeedback {
                command,
                channel,
                result,
            }
            .to_frame(),
        )
    }

    pub(super) fn assign(&mut self, r: &AssignSchedule) -> Reply {
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

    pub(super) fn start(&mut self, r: &StartTest) -> Reply {
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

    pub(super) fn stop(&mut self, r: &StopTest) -> Reply {
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

    pub(super) fn records(&self, r: &RecordsRequest) -> Reply {
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

    pub(super) fn upload(&mut self, session: &mut Session, u: Upload) -> Reply {
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

pub(super) fn unknown_command() -> Frame {
    Frame::new(
        UNKNOWN_COMMAND_FEEDBACK,
        vec![0; wire::COMMON_FEEDBACK_LEN - wire::HEADER_LEN - wire::CHECKSUM_LEN],
    )
}
