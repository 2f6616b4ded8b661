//! The simulated tester's state and what it answers to each request, whichever encoding the
//! request came in (pure: no I/O).

use super::{Channel, Control, SimConfig, Test};
use crate::Clock;
use crate::cycler_sim::load_schedule;
use crate::maccor::wire::{
    self, AuxValues, ChannelStat, DirectStart, Output, Reading, StartTest, StatusBlock, SystemInfo,
    Version, rf1, rf2, stat,
};
use crate::transport::faults::Faults;
use cyclerd_protocols::import::SourceKind;
use std::collections::{HashMap, HashSet};

pub(super) struct Tester {
    pub(super) config: SimConfig,
    pub(super) clock: Clock,
    pub(super) channels: Vec<Channel>,
    /// Procedure texts by upper-case name (Windows file names ignore case).
    pub(super) procedures: HashMap<String, String>,
    /// Upper-case names of every test ever started: their data files exist.
    pub(super) names: HashSet<String>,
    /// For "Random" test names.
    pub(super) random_names: u32,
    /// Injected through the handle: the reply delay, and requests that fail ("MacNet error" in
    /// JSON, an empty binary reply).
    pub(super) faults: Faults,
    /// The next (4,7) is answered with this channel's reading (and number).
    pub(super) misroute: Option<u16>,
}

/// A request, whichever encoding it came in.
pub(super) enum Request {
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
    AuxValues {
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
pub(super) enum Response {
    Echo,
    Version(Version),
    SystemInfo(SystemInfo),
    Status(StatusBlock),
    Reading {
        chan: u16,
        reading: Reading,
    },
    AuxValues {
        chan: u16,
        aux: AuxValues,
    },
    Result {
        chan: u16,
        code: u32,
    },
    /// JSON "Illegal value"; binary empty reply.
    Illegal,
}
impl Tester {
    pub(super) fn advance(&mut self) {
        let now = self.clock.now();
        for ch in &mut self.channels {
            ch.advance(now, &self.config, &self.clock);
        }
    }

    pub(super) fn channel(&self, chan: u16) -> Option<usize> {
        let c = usize::from(chan);
        (c < self.channels.len()).then_some(c)
    }

    pub(super) fn handle(&mut self, request: Request) -> Response {
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
                aux_boards: self.aux_channels().div_ceil(16),
                aux_channels: self.aux_channels(),
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
            Request::AuxValues { chan } => {
                let Some(c) = self.channel(chan) else {
                    return Response::Illegal;
                };
                let inputs = self.config.aux_inputs.get(c).copied().unwrap_or(0);
                Response::AuxValues {
                    chan,
                    aux: AuxValues {
                        values: self.channels[c].aux_values(inputs),
                    },
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

    /// Aux inputs of the tester's channels, all told.
    fn aux_channels(&self) -> u16 {
        let inputs = self.config.aux_inputs.iter().take(self.channels.len());
        inputs.fold(0u16, |n, &i| n.saturating_add(i))
    }

    pub(super) fn with_channel(
        &mut self,
        chan: u16,
        f: impl FnOnce(f64, &mut Channel) -> u32,
    ) -> Response {
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
    pub(super) fn claim_name(&mut self, name: &str) -> Result<String, u32> {
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

    pub(super) fn start(&mut self, c: usize, start: StartTest, select: bool) -> u32 {
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
