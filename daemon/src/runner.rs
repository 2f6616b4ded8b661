//! The stepped channel runner: the daemon is the cycler.
//!
//! Every poll it reads the power stage, feeds the measurement to the engine, writes the setpoint
//! the engine returns when it changes, and appends the sample to a columnar batch that goes to
//! the outbox when it is full or `commit_interval` old, together with a checkpoint of the engine
//! (same transaction), so a restarted daemon resumes exactly after the last committed sample.
//! Safety is the engine's first check on every poll; on any fault, on lost communication and on
//! shutdown the output goes off first and the reason is recorded second. When the outbox is full
//! the channel pauses at rest, output off, and resumes when there is room again.

use crate::chamber::ChamberLink;
use crate::config::ResumePolicy;
use crate::outbox::{Checkpoint, CheckpointOp, Outbox, Progress};
use crate::proto::control::ChannelSnapshot;
use crate::proto::ingest::{Event, SampleBatch, TestEnded, TestRegistered, entry::Body};
use cyclerd_drivers::Clock;
use cyclerd_drivers::stage::{PowerStage, Reading};
use cyclerd_protocols::plan::Record;
use cyclerd_protocols::{
    Command, Control, Engine, EngineState, Measurement, Outcome, Plan, PlanStep, Safety,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Samples per outbox entry before a batch is sent regardless of its age.
pub const BATCH_SAMPLES: usize = 2048;
/// How often a channel that lost its device tries again to switch the output off.
const OFF_RETRY: Duration = Duration::from_secs(1);

/// What a channel needs to know about itself.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub id: String,
    /// Clock seconds between polls.
    pub poll_interval_s: f64,
    /// Wall time without a good reply after which the test faults.
    pub comm_timeout: Duration,
    /// Lab limits narrowed by the channel's own; the protocol can narrow them further.
    pub limits: Safety,
    /// Longest a sample waits in memory before it goes to the outbox.
    pub commit_interval: Duration,
    /// The thermal chamber the channel's cell sits in, if any.
    pub chamber: Option<ChamberLink>,
    /// The instruments a test here runs on, recorded with each test at the hub.
    pub equipment: Vec<crate::proto::ingest::Equipment>,
}

/// Why a test could not start.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum StartError {
    #[error("channel {0} does not exist")]
    NoSuchChannel(String),
    #[error("channel {channel} is busy with test {test_id}; stop it first")]
    Busy { channel: String, test_id: String },
    #[error("{0}")]
    Protocol(String),
    #[error("missing primary metadata: {}", .0.join(", "))]
    MissingMetadata(Vec<String>),
    /// Metadata present but wrong (an unknown primary key, a capacity that is no number).
    #[error("{0}")]
    Metadata(String),
    #[error("channel {0} is not running (the daemon is shutting down)")]
    ChannelGone(String),
    #[error("no test is running on channel {0}")]
    NotRunning(String),
    /// The chamber cannot serve the test (owned by another test, or unsafe).
    #[error("{0}")]
    Chamber(String),
    /// The cycler refused or could not be reached; the message names the device and why.
    #[error("{0}")]
    Device(String),
}

/// Requests to a channel task.
pub enum ChannelCmd {
    Start {
        test: Box<TestRequest>,
        reply: oneshot::Sender<Result<String, StartError>>,
    },
    Stop {
        reason: String,
        reply: oneshot::Sender<Result<(), StartError>>,
    },
}

/// A validated request to run a protocol.
pub struct TestRequest {
    pub plan: Plan,
    pub source: String,
    /// Where the protocol came from, for messages.
    pub origin: String,
    pub metadata: HashMap<String, String>,
}

/// Handles shared by every channel of a daemon.
#[derive(Clone)]
pub struct Shared {
    pub clock: Clock,
    pub outbox: Outbox,
    /// Every sample read from any device since the daemon started.
    pub acquired: Arc<AtomicU64>,
}

/// One channel's task.
pub struct ChannelRunner<D> {
    spec: ChannelSpec,
    device: D,
    shared: Shared,
    live: watch::Sender<ChannelSnapshot>,
    /// The output could not be confirmed off (device unreachable): keep trying while idle.
    output_unconfirmed: bool,
}

/// How a test ended, as recorded.
pub(crate) struct Ending {
    pub(crate) outcome: &'static str,
    pub(crate) reason: String,
}

/// A test in progress on this channel.
struct Run {
    test_id: String,
    engine: Engine,
    batch: Batch,
    /// Unix time (of the clock) at which the test started; test time counts from it.
    start_unix_s: f64,
    /// Test time spent paused or interrupted; the engine's clock leaves it out so steps keep
    /// their elapsed time.
    paused_s: f64,
    /// The setpoint in force.
    command: Command,
    /// Which samples the store keeps.
    recorder: Recorder,
}

/// Applies the protocol's recording rules. A protocol without any rule keeps every poll; with
/// rules, a sample is kept when one fires, and always at a step's first and last sample and
/// whenever something fired (a termination, the end, an alarm). Live monitoring sees every poll.
#[derive(Debug, Default)]
struct Recorder {
    /// Test time, voltage and current of the last kept sample.
    last_kept: Option<(f64, f64, f64)>,
    /// The next sample is the first of a step.
    step_began: bool,
}

impl Recorder {
    fn keep(&mut self, rule: &Record, t: f64, v: f64, i: f64, something_fired: bool) -> bool {
        let keep = rule.is_empty()
            || something_fired
            || std::mem::take(&mut self.step_began)
            || self.last_kept.is_none_or(|(t0, v0, i0)| {
                rule.every_s.is_some_and(|e| t - t0 >= e)
                    || rule.dv_v.is_some_and(|d| (v - v0).abs() >= d)
                    || rule.di_a.is_some_and(|d| (i - i0).abs() >= d)
            });
        if keep {
            self.last_kept = Some((t, v, i));
        }
        keep
    }
}

impl Run {
    fn progress(&self, test_time_s: f64) -> Progress {
        Progress {
            engine_json: serde_json::to_string(&self.engine.checkpoint()).unwrap_or_default(),
            next_seq: self.batch.next_seq,
            test_time_s,
            unix_s: self.start_unix_s + test_time_s,
            paused_s: self.paused_s,
        }
    }
}

impl<D: PowerStage> ChannelRunner<D> {
    pub fn new(
        spec: ChannelSpec,
        device: D,
        shared: Shared,
        live: watch::Sender<ChannelSnapshot>,
    ) -> Self {
        ChannelRunner {
            spec,
            device,
            shared,
            live,
            output_unconfirmed: false,
        }
    }

    /// Puts the output in its safe state, resumes an interrupted test if there is one (once
    /// `started`: the daemon's whole start succeeded), then serves commands until `shutdown`
    /// turns true. The output is off whenever no test runs.
    pub async fn run(
        mut self,
        resume: Option<(Checkpoint, ResumePolicy)>,
        mut cmds: mpsc::Receiver<ChannelCmd>,
        (mut shutdown, mut started): (watch::Receiver<bool>, watch::Receiver<bool>),
    ) {
        self.switch_off("at startup").await;
        tokio::select! {
            _ = started.wait_for(|s| *s) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
        if *shutdown.borrow() || !*started.borrow() {
            // The daemon's start failed elsewhere: output off, and an interrupted test keeps
            // its checkpoint for the next start.
            return;
        }
        if resume.is_none() {
            self.idle_once_off();
        }
        if let Some((checkpoint, policy)) = resume {
            self.resume(checkpoint, policy, &mut cmds, &mut shutdown)
                .await;
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            let retry_off = async {
                if self.output_unconfirmed {
                    tokio::time::sleep(OFF_RETRY).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = retry_off => {
                    if self.device.reconnect().await.is_ok() {
                        self.switch_off("after regaining the device").await;
                        self.idle_once_off();
                    }
                }
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(ChannelCmd::Stop { reply, .. }) => {
                        let _ = reply.send(Err(StartError::NotRunning(self.spec.id.clone())));
                    }
                    Some(ChannelCmd::Start { test, reply }) => {
                        if !self.device.can_discharge()
                            && let Some(step) = first_discharge(&test.plan)
                        {
                            let _ = reply.send(Err(StartError::Protocol(format!(
                                "channel {} is charge-only and cannot run this protocol: {step} \
                                 discharges the cell; run it on a bidirectional channel",
                                self.spec.id
                            ))));
                            continue;
                        }
                        let engine = match Engine::new(test.plan.clone(), &self.spec.limits) {
                            Ok(e) => e,
                            Err(e) => {
                                let _ = reply.send(Err(StartError::Protocol(e.to_string())));
                                continue;
                            }
                        };
                        let test_id = uuid::Uuid::now_v7().to_string();
                        if let Err(e) = claim_chamber(&self.spec, &test.plan, &test_id).await {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                        // Registered and shown as running before the caller hears of it, so
                        // whoever waits for the test to end cannot see the idle channel first.
                        let run = self.begin(test_id.clone(), *test, engine);
                        let _ = reply.send(Ok(test_id));
                        self.drive(run, &mut cmds, &mut shutdown).await;
                    }
                },
            }
        }
        self.switch_off("at shutdown").await;
    }

    /// A channel that waited for its device since the daemon started (see `offline`) is idle
    /// once its output is confirmed off, not before.
    fn idle_once_off(&self) {
        let confirmed = !self.output_unconfirmed;
        self.live.send_if_modified(|s| {
            if s.state != "offline" {
                return false;
            }
            if confirmed {
                s.state = "idle".into();
                s.reason.clear();
            } else {
                s.reason = "the device answers, but its output is not confirmed off yet".into();
            }
            true
        });
    }

    async fn switch_off(&mut self, when: &str) {
        match self.device.output_off().await {
            Ok(()) => self.output_unconfirmed = false,
            Err(e) => {
                self.output_unconfirmed = true;
                tracing::error!(channel = %self.spec.id, "cannot switch the output off {when}: {e}");
            }
        }
    }

    /// Registers a new test with the hub (through the outbox) and its first checkpoint.
    fn begin(&mut self, test_id: String, test: TestRequest, mut engine: Engine) -> Run {
        let clock = &self.shared.clock;
        let start_unix_s = clock.unix_time_s();
        let command = engine.start(0.0);
        let run = Run {
            test_id: test_id.clone(),
            engine,
            batch: Batch::new(&test_id, 0),
            start_unix_s,
            paused_s: 0.0,
            command,
            recorder: Recorder::default(),
        };
        let checkpoint = Checkpoint {
            test_id: test_id.clone(),
            channel_id: self.spec.id.clone(),
            protocol_source: test.source.clone(),
            origin: test.origin,
            metadata: test.metadata.clone(),
            start_unix_s,
            progress: run.progress(0.0),
        };
        self.append(
            Body::TestRegistered(TestRegistered {
                test_id: test_id.clone(),
                channel_id: self.spec.id.clone(),
                metadata: test.metadata,
                protocol_name: test.plan.name.clone(),
                plan_json: test.plan.to_json(),
                protocol_source: test.source,
                start_unix_s,
                equipment: self.spec.equipment.clone(),
            }),
            Some(CheckpointOp::Begin(Box::new(checkpoint))),
        );
        self.live.send_modify(|s| {
            s.state = "running".into();
            s.test_id = test_id;
            s.protocol_name = test.plan.name;
            s.reason.clear();
            s.samples = 0;
        });
        self.step_event(&run, 0.0);
        run
    }

    /// Picks up a test that was running when the daemon stopped uncleanly.
    async fn resume(
        &mut self,
        cp: Checkpoint,
        policy: ResumePolicy,
        cmds: &mut mpsc::Receiver<ChannelCmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        if let Some(chamber) = self.spec.chamber.clone() {
            // A chamber the daemon has no reading of yet: wait for one, or for its verdict that
            // it is unsafe (at most its communication timeout); a shutdown first leaves the
            // test interrupted.
            let mut state = chamber.watch();
            if let Some(why) = state.borrow().unread.clone() {
                self.live.send_modify(|s| {
                    s.state = "offline".into();
                    s.test_id.clone_from(&cp.test_id);
                    s.reason = format!("test {} waits: {why}", cp.test_id);
                });
            }
            tokio::select! {
                _ = state.wait_for(|s| s.unread.is_none() || s.fault.is_some()) => {}
                _ = shutdown.changed() => return,
            }
        }
        let clock = self.shared.clock.clone();
        let test_time_s = clock.unix_time_s() - cp.start_unix_s;
        let gap_s = (test_time_s - cp.progress.test_time_s).max(0.0);
        let restored = Plan::from_yaml(&cp.protocol_source, &cp.origin)
            .map_err(|e| e.to_string())
            .and_then(|plan| {
                let state: EngineState =
                    serde_json::from_str(&cp.progress.engine_json).map_err(|e| e.to_string())?;
                Engine::restore(plan, &self.spec.limits, state).map_err(|e| e.to_string())
            });
        let restored = match restored {
            Ok(engine) => claim_chamber(&self.spec, engine.plan(), &cp.test_id)
                .await
                .map(|()| engine)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let engine = match (policy, restored) {
            (ResumePolicy::Abort, _) => {
                let why = format!("interrupted for {gap_s:.1} s and resume = \"abort\"");
                return self.abandon(&cp, &why).await;
            }
            (ResumePolicy::Continue, Err(e)) => {
                let why = format!("cannot restore its checkpoint: {e}");
                return self.abandon(&cp, &why).await;
            }
            (ResumePolicy::Continue, Ok(engine)) => engine,
        };
        let run = Run {
            test_id: cp.test_id.clone(),
            engine,
            batch: Batch::new(&cp.test_id, cp.progress.next_seq),
            start_unix_s: cp.start_unix_s,
            paused_s: cp.progress.paused_s + gap_s,
            command: Command::Off,
            recorder: Recorder::default(),
        };
        let status = run.engine.status();
        let message = format!(
            "interrupted for {gap_s:.1} s (daemon restart); continuing step {} ({}) of cycle {}",
            status.step_count, status.description, status.cycle
        );
        tracing::warn!(channel = %self.spec.id, test_id = %cp.test_id, "{message}");
        let progress = run.progress(test_time_s);
        self.append(
            Body::Event(Event {
                test_id: cp.test_id.clone(),
                unix_time_s: cp.start_unix_s + test_time_s,
                test_time_s,
                kind: "interruption".into(),
                message,
                step: status.step_count,
                cycle: status.cycle,
            }),
            Some(CheckpointOp::Progress {
                test_id: cp.test_id.clone(),
                progress,
            }),
        );
        let plan_name = run.engine.plan().name.clone();
        let (step, cycle, description) =
            (status.step_count, status.cycle, status.description.clone());
        let samples = run.batch.next_seq;
        self.live.send_modify(|s| {
            s.state = "running".into();
            s.test_id = cp.test_id.clone();
            s.protocol_name = plan_name;
            s.step = step;
            s.cycle = cycle;
            s.step_description = description;
            s.samples = samples;
            s.reason.clear();
        });
        // The engine asks for its setpoint again on the first measurement; until then: off.
        self.drive(run, cmds, shutdown).await;
    }

    /// Ends an interrupted test that will not be continued.
    async fn abandon(&mut self, cp: &Checkpoint, why: &str) {
        if let Some(chamber) = &self.spec.chamber {
            chamber.release(&cp.test_id);
        }
        let reason = format!("not resumed after the daemon restarted: {why}");
        end_interrupted(&self.shared, &self.live, cp, "faulted", reason);
    }

    /// Polls until the test ends, is stopped, or the daemon shuts down.
    async fn drive(
        &mut self,
        mut run: Run,
        cmds: &mut mpsc::Receiver<ChannelCmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let clock = self.shared.clock.clone();
        let mut space = self.shared.outbox.space();
        let ending = 'test: {
            if let Err(e) = self.device.apply(&run.command).await {
                break 'test self.fault(format!("cannot write the setpoint: {e}")).await;
            }
            if let (Command::Chamber { temperature_c }, Some(chamber)) =
                (run.command, &self.spec.chamber)
            {
                chamber.set_point(&run.test_id, temperature_c);
            }
            let mut ticks = pacer(clock.wall(self.spec.poll_interval_s));
            let mut last_good = Instant::now();
            // Test time at which the link went quiet, while it is.
            let mut link_lost_at: Option<f64> = None;
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => {
                        break 'test self.safe_stop("the daemon shut down").await;
                    }
                    Some(cmd) = cmds.recv() => match cmd {
                        ChannelCmd::Stop { reason, reply } => {
                            let _ = reply.send(Ok(()));
                            let reason = if reason.is_empty() { "stopped by the operator".to_string() } else { reason };
                            break 'test self.safe_stop(&reason).await;
                        }
                        ChannelCmd::Start { reply, .. } => {
                            let _ = reply.send(Err(StartError::Busy {
                                channel: self.spec.id.clone(),
                                test_id: run.test_id.clone(),
                            }));
                            continue;
                        }
                    },
                    _ = ticks.tick() => {}
                }
                let has_room = *space.borrow_and_update();
                if !has_room {
                    if let Some(ending) = self
                        .pause_for_space(&mut run, &mut space, cmds, shutdown)
                        .await
                    {
                        break 'test ending;
                    }
                    last_good = Instant::now();
                    continue;
                }
                let reading = match self.device.read().await {
                    Ok(r) => {
                        last_good = Instant::now();
                        if let Some(since) = link_lost_at.take() {
                            let now = clock.unix_time_s() - run.start_unix_s;
                            self.event(
                                &run,
                                now,
                                "link",
                                format!("communication restored after {:.1} s", now - since),
                            );
                        }
                        r
                    }
                    Err(e) => {
                        if link_lost_at.is_none() {
                            let now = clock.unix_time_s() - run.start_unix_s;
                            link_lost_at = Some(now);
                            self.send_batch(&mut run, now);
                            self.event(&run, now, "link", format!("communication lost: {e}"));
                        }
                        if last_good.elapsed() >= self.spec.comm_timeout {
                            break 'test self
                                .fault(format!(
                                    "lost communication for more than {} ms: {e}",
                                    self.spec.comm_timeout.as_millis()
                                ))
                                .await;
                        }
                        tracing::warn!(channel = %self.spec.id, "read failed, retrying: {e}");
                        if e.is_link_lost()
                            && let Err(e) = self.device.reconnect().await
                        {
                            tracing::warn!(channel = %self.spec.id, "reconnect failed: {e}");
                        }
                        continue;
                    }
                };
                match self.step(&mut run, &reading).await {
                    Ok(None) => {}
                    Ok(Some(ending)) => break 'test ending,
                    Err(reason) => break 'test self.fault(reason).await,
                }
            }
        };
        self.finish(run, ending);
    }

    /// One poll's worth of work after a good reading; `Ok(Some)` when the test ends.
    async fn step(&mut self, run: &mut Run, reading: &Reading) -> Result<Option<Ending>, String> {
        let clock = &self.shared.clock;
        let test_time_s = clock.unix_time_s() - run.start_unix_s;
        let (step_before, cycle_before, rule) = {
            let s = run.engine.status();
            let rule = match run.engine.plan().steps.get(s.plan_index) {
                Some(PlanStep::Action(a)) => a.record,
                _ => Record::default(),
            };
            (s.step_count, s.cycle, rule)
        };
        let (chamber_c, chamber_fault) = match &self.spec.chamber {
            Some(link) => {
                let state = link.state();
                (state.temperature_c, state.fault.clone())
            }
            None => (None, None),
        };
        let update = run.engine.update(&Measurement {
            chamber_c,
            test_time_s: test_time_s - run.paused_s,
            voltage_v: reading.voltage_v,
            current_a: reading.current_a,
            temperature_c: reading.temperature_c,
        });
        let status = run.engine.status();
        let fired = update.step_changed
            || update.outcome.is_some()
            || chamber_fault.is_some()
            || reading.alarm
            || (!reading.output_on && run.command.output_on());
        let kept = run.recorder.keep(
            &rule,
            test_time_s,
            reading.voltage_v,
            reading.current_a,
            fired,
        );
        if update.step_changed {
            run.recorder.step_began = true;
        }
        if kept {
            self.shared.acquired.fetch_add(1, Ordering::Relaxed);
            run.batch.push(Sample {
                test_time_s,
                unix_time_s: run.start_unix_s + test_time_s,
                voltage_v: reading.voltage_v,
                current_a: reading.current_a,
                cycle: cycle_before,
                step: step_before,
                charge_ah: status.charge_capacity_ah,
                discharge_ah: status.discharge_capacity_ah,
                charge_wh: status.charge_energy_wh,
                discharge_wh: status.discharge_energy_wh,
                temperature_c: reading.temperature_c,
                ambient_c: chamber_c,
            });
        }
        let samples = run.batch.next_seq;
        let (charge, discharge) = (status.charge_capacity_ah, status.discharge_capacity_ah);
        self.live.send_modify(|s| {
            s.voltage_v = reading.voltage_v;
            s.current_a = reading.current_a;
            s.temperature_c = reading.temperature_c.unwrap_or(f64::NAN);
            s.ambient_temperature_c = chamber_c.unwrap_or(f64::NAN);
            s.test_time_s = test_time_s;
            s.charge_capacity_ah = charge;
            s.discharge_capacity_ah = discharge;
            s.samples = samples;
        });
        if let Some(fault) = chamber_fault {
            return Err(fault);
        }
        if reading.alarm {
            return Err("the device reports an alarm".into());
        }
        if !reading.output_on && run.command.output_on() {
            return Err("the device switched its output off by itself".into());
        }
        if let Some(outcome) = update.outcome {
            return match outcome {
                Outcome::Finished => {
                    self.switch_off("at the end of the protocol").await;
                    Ok(Some(Ending {
                        outcome: "finished",
                        reason: String::new(),
                    }))
                }
                Outcome::Faulted(reason) => Err(reason),
            };
        }
        if update.step_changed {
            self.send_batch(run, test_time_s);
            self.step_event(run, test_time_s);
        }
        if update.command != run.command {
            run.command = update.command;
            if let (Command::Chamber { temperature_c }, Some(chamber)) =
                (run.command, &self.spec.chamber)
            {
                chamber.set_point(&run.test_id, temperature_c);
            }
            if let Err(e) = self.device.apply(&run.command).await {
                return Err(format!("cannot write a setpoint: {e}"));
            }
        }
        if run.batch.len() >= BATCH_SAMPLES || run.batch.age() >= self.spec.commit_interval {
            self.send_batch(run, test_time_s);
        }
        Ok(None)
    }

    /// The outbox is full: rest with the output off until there is room again.
    async fn pause_for_space(
        &mut self,
        run: &mut Run,
        space: &mut watch::Receiver<bool>,
        cmds: &mut mpsc::Receiver<ChannelCmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Ending> {
        self.switch_off("while the outbox is full").await;
        let clock = self.shared.clock.clone();
        let paused_at = clock.unix_time_s() - run.start_unix_s;
        self.send_batch(run, paused_at);
        self.event(run, paused_at, "state", "paused: the outbox is full (store.max_bytes or disk); output off until the hub takes the backlog".into());
        self.live.send_modify(|s| {
            s.state = "paused".into();
            s.reason = "outbox full".into();
        });
        tracing::warn!(channel = %self.spec.id, "paused: the outbox is full");
        let ending = loop {
            tokio::select! {
                _ = shutdown.changed() => break Some(self.safe_stop("the daemon shut down").await),
                Some(cmd) = cmds.recv() => match cmd {
                    ChannelCmd::Stop { reason, reply } => {
                        let _ = reply.send(Ok(()));
                        break Some(self.safe_stop(if reason.is_empty() { "stopped by the operator" } else { &reason }).await);
                    }
                    ChannelCmd::Start { reply, .. } => {
                        let _ = reply.send(Err(StartError::Busy { channel: self.spec.id.clone(), test_id: run.test_id.clone() }));
                    }
                },
                room = async { space.wait_for(|room| *room).await.is_ok() } => {
                    if !room {
                        break Some(self.safe_stop("the outbox writer stopped").await);
                    }
                    break None;
                }
            }
        };
        let resumed_at = clock.unix_time_s() - run.start_unix_s;
        run.paused_s += resumed_at - paused_at;
        if ending.is_none() {
            self.event(
                run,
                resumed_at,
                "state",
                format!(
                    "resumed after {:.1} s paused for outbox space",
                    resumed_at - paused_at
                ),
            );
            self.live.send_modify(|s| {
                s.state = "running".into();
                s.reason.clear();
            });
            if let Err(e) = self.device.apply(&run.command).await {
                return Some(
                    self.fault(format!("cannot write the setpoint after a pause: {e}"))
                        .await,
                );
            }
        }
        ending
    }

    /// Records the end: last samples, why, and the end marker (which retires the checkpoint).
    fn finish(&mut self, mut run: Run, ending: Ending) {
        if let Some(chamber) = &self.spec.chamber {
            chamber.release(&run.test_id);
        }
        let now = self.shared.clock.unix_time_s() - run.start_unix_s;
        self.send_batch(&mut run, now);
        if !ending.reason.is_empty() {
            let kind = if ending.outcome == "faulted" {
                "alarm"
            } else {
                "state"
            };
            self.event(&run, now, kind, ending.reason.clone());
        }
        self.append(
            Body::TestEnded(TestEnded {
                test_id: run.test_id.clone(),
                unix_time_s: run.start_unix_s + now,
                outcome: ending.outcome.into(),
                reason: ending.reason.clone(),
                sample_count: run.batch.next_seq,
            }),
            Some(CheckpointOp::End {
                test_id: run.test_id.clone(),
            }),
        );
        self.live.send_modify(|s| {
            s.state = ending.outcome.into();
            s.reason = ending.reason;
        });
    }

    /// Output off, then the record: the order that protects the cell.
    async fn fault(&mut self, reason: String) -> Ending {
        self.switch_off("after a fault").await;
        tracing::warn!(channel = %self.spec.id, "test faulted: {reason}");
        Ending {
            outcome: "faulted",
            reason,
        }
    }

    async fn safe_stop(&mut self, reason: &str) -> Ending {
        self.switch_off("when stopping").await;
        Ending {
            outcome: "stopped",
            reason: reason.into(),
        }
    }

    fn event(&self, run: &Run, test_time_s: f64, kind: &str, message: String) {
        self.event_with(run, test_time_s, kind, message, None);
    }

    fn event_with(
        &self,
        run: &Run,
        test_time_s: f64,
        kind: &str,
        message: String,
        checkpoint: Option<CheckpointOp>,
    ) {
        let s = run.engine.status();
        let at = (run.start_unix_s, test_time_s);
        let body = event_body(&run.test_id, at, kind, message, (s.step_count, s.cycle));
        self.append(body, checkpoint);
    }

    /// A step began: recorded as an event that also checkpoints the engine.
    fn step_event(&self, run: &Run, test_time_s: f64) {
        let s = run.engine.status();
        let checkpoint = CheckpointOp::Progress {
            test_id: run.test_id.clone(),
            progress: run.progress(test_time_s),
        };
        self.event_with(
            run,
            test_time_s,
            "step",
            s.description.clone(),
            Some(checkpoint),
        );
        let (step, cycle, description) = (s.step_count, s.cycle, s.description.clone());
        self.live.send_modify(|snap| {
            snap.step = step;
            snap.cycle = cycle;
            snap.step_description = description;
        });
    }

    /// Sends the batch with a checkpoint that accounts for exactly its samples.
    fn send_batch(&self, run: &mut Run, test_time_s: f64) {
        if let Some(body) = run.batch.take() {
            let last = body.test_time_s.last().copied().unwrap_or(test_time_s);
            let progress = run.progress(last);
            self.append(
                Body::Samples(body),
                Some(CheckpointOp::Progress {
                    test_id: run.test_id.clone(),
                    progress,
                }),
            );
        }
    }

    fn append(&self, body: Body, checkpoint: Option<CheckpointOp>) {
        if let Err(e) = self.shared.outbox.append_with(body, checkpoint) {
            // Only happens when the writer thread is gone, i.e. the daemon is going down.
            tracing::error!(channel = %self.spec.id, "cannot queue to the outbox: {e}");
        }
    }
}

/// Ends the interrupted test of checkpoint `cp` with `outcome` and `reason`, recorded as an
/// interruption event and the test's end (nothing of it runs: no runner drives it).
pub(crate) fn end_interrupted(
    shared: &Shared,
    live: &watch::Sender<ChannelSnapshot>,
    cp: &Checkpoint,
    outcome: &str,
    reason: String,
) {
    tracing::warn!(channel = %cp.channel_id, test_id = %cp.test_id, "{reason}");
    let now = shared.clock.unix_time_s();
    let appended = shared
        .outbox
        .append_with(
            Body::Event(Event {
                test_id: cp.test_id.clone(),
                unix_time_s: now,
                test_time_s: now - cp.start_unix_s,
                kind: "interruption".into(),
                message: reason.clone(),
                ..Default::default()
            }),
            None,
        )
        .and_then(|()| {
            shared.outbox.append_with(
                Body::TestEnded(TestEnded {
                    test_id: cp.test_id.clone(),
                    unix_time_s: now,
                    outcome: outcome.into(),
                    reason: reason.clone(),
                    sample_count: cp.progress.next_seq,
                }),
                Some(CheckpointOp::End {
                    test_id: cp.test_id.clone(),
                }),
            )
        });
    if let Err(e) = appended {
        // Only happens when the writer thread is gone, i.e. the daemon is going down.
        tracing::error!(channel = %cp.channel_id, "cannot queue to the outbox: {e}");
    }
    live.send_modify(|s| {
        s.state = outcome.into();
        s.test_id = cp.test_id.clone();
        s.reason = reason;
    });
}

/// Takes the chamber's set point for `test_id` when `plan` has chamber steps: refused when the
/// channel is in no chamber, the chamber is unsafe, or another test owns it. A plan without
/// chamber steps shares the chamber freely (but must still find it safe).
pub(crate) async fn claim_chamber(
    spec: &ChannelSpec,
    plan: &Plan,
    test_id: &str,
) -> Result<(), StartError> {
    let step = chamber_step(plan);
    let Some(chamber) = &spec.chamber else {
        return match step {
            Some(step) => Err(StartError::Protocol(format!(
                "{step} sets a chamber, but channel {} is in no [[chamber]]; list it in the \
                 chamber's channels",
                spec.id
            ))),
            None => Ok(()),
        };
    };
    let unsafe_or_unread = {
        let state = chamber.state();
        state.fault.clone().or_else(|| state.unread.clone())
    };
    if let Some(why) = unsafe_or_unread {
        return Err(StartError::Chamber(format!(
            "channel {} cannot start: {why}",
            spec.id
        )));
    }
    if step.is_some() {
        chamber.claim(test_id).await.map_err(StartError::Chamber)?;
    }
    Ok(())
}

/// The first chamber step of `plan` (path and description).
fn chamber_step(plan: &Plan) -> Option<String> {
    plan.steps.iter().find_map(|step| match step {
        PlanStep::Action(a) if matches!(a.control, Control::Chamber { .. }) => {
            Some(format!("{} ({})", a.path, a.description))
        }
        _ => None,
    })
}

/// An event of `test_id` at `(start_unix_s, test_time_s)` in `(step, cycle)`.
pub(crate) fn event_body(
    test_id: &str,
    (start_unix_s, test_time_s): (f64, f64),
    kind: &str,
    message: String,
    (step, cycle): (u32, u32),
) -> Body {
    Body::Event(Event {
        test_id: test_id.into(),
        unix_time_s: start_unix_s + test_time_s,
        test_time_s,
        kind: kind.into(),
        message,
        step,
        cycle,
    })
}

/// The first step of `plan` that takes current out of the cell (path and description).
fn first_discharge(plan: &Plan) -> Option<String> {
    plan.steps.iter().find_map(|step| {
        let PlanStep::Action(a) = step else {
            return None;
        };
        let discharges = match a.control {
            Control::Current { amps } | Control::Cccv { amps, .. } => amps < 0.0,
            Control::Power { watts } => watts < 0.0,
            Control::Resistance { .. } => true,
            Control::Profile { .. } => a
                .profile
                .as_ref()
                .is_some_and(|p| p.points.iter().any(|&(_, v)| v < 0.0)),
            // A voltage hold after a charge only sources; a charge-only supply can run it.
            _ => false,
        };
        discharges.then(|| format!("{} ({})", a.path, a.description))
    })
}

/// Paces polls at the channel's interval of clock time.
///
/// On a fast simulated clock the interval can be shorter than the timer's 1 ms resolution; then
/// missed ticks are made up in bursts, so the average poll rate still matches the configured one
/// (and when the link cannot keep up, polls simply run back to back). At real speed a late poll
/// delays the following ones instead of bunching them.
pub(crate) fn pacer(period: Duration) -> Interval {
    let mut ticks = tokio::time::interval(period.max(Duration::from_micros(1)));
    ticks.set_missed_tick_behavior(if period < Duration::from_millis(1) {
        MissedTickBehavior::Burst
    } else {
        MissedTickBehavior::Delay
    });
    ticks
}

/// One sample as a runner assembles it.
pub(crate) struct Sample {
    pub(crate) test_time_s: f64,
    pub(crate) unix_time_s: f64,
    pub(crate) voltage_v: f64,
    pub(crate) current_a: f64,
    pub(crate) cycle: u32,
    pub(crate) step: u32,
    pub(crate) charge_ah: f64,
    pub(crate) discharge_ah: f64,
    pub(crate) charge_wh: f64,
    pub(crate) discharge_wh: f64,
    pub(crate) temperature_c: Option<f64>,
    /// Air temperature of the chamber the cell is in, when it is in one.
    pub(crate) ambient_c: Option<f64>,
}

/// Pushes sample `n - 1`'s value of an optional column: the column stays empty until a sample
/// has a value, and is then as long as the others, with NaN in the gaps.
fn push_optional(column: &mut Vec<f64>, n: usize, value: Option<f64>) {
    match value {
        Some(v) => {
            column.resize(n - 1, f64::NAN);
            column.push(v);
        }
        None if !column.is_empty() => column.push(f64::NAN),
        None => {}
    }
}

/// Columns being filled; sent as one outbox entry.
pub(crate) struct Batch {
    columns: SampleBatch,
    /// Sequence number the next sample gets; contiguous per test from 0.
    pub(crate) next_seq: u64,
    /// When the oldest sample in the batch was taken (wall), to bound its wait.
    started: Instant,
}

impl Batch {
    pub(crate) fn new(test_id: &str, next_seq: u64) -> Batch {
        Batch {
            columns: Batch::empty(test_id, next_seq),
            next_seq,
            started: Instant::now(),
        }
    }

    fn empty(test_id: &str, first_seq: u64) -> SampleBatch {
        let col = || Vec::with_capacity(BATCH_SAMPLES);
        SampleBatch {
            test_id: test_id.into(),
            first_seq,
            test_time_s: col(),
            unix_time_s: col(),
            voltage_v: col(),
            current_a: col(),
            cycle: Vec::with_capacity(BATCH_SAMPLES),
            step: Vec::with_capacity(BATCH_SAMPLES),
            charge_capacity_ah: col(),
            discharge_capacity_ah: col(),
            charge_energy_wh: col(),
            discharge_energy_wh: col(),
            temperature_c: Vec::new(),
            ambient_temperature_c: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.columns.voltage_v.len()
    }

    pub(crate) fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn push(&mut self, s: Sample) {
        if self.len() == 0 {
            self.started = Instant::now();
        }
        let c = &mut self.columns;
        c.test_time_s.push(s.test_time_s);
        c.unix_time_s.push(s.unix_time_s);
        c.voltage_v.push(s.voltage_v);
        c.current_a.push(s.current_a);
        c.cycle.push(s.cycle);
        c.step.push(s.step);
        c.charge_capacity_ah.push(s.charge_ah);
        c.discharge_capacity_ah.push(s.discharge_ah);
        c.charge_energy_wh.push(s.charge_wh);
        c.discharge_energy_wh.push(s.discharge_wh);
        let n = c.voltage_v.len();
        push_optional(&mut c.temperature_c, n, s.temperature_c);
        push_optional(&mut c.ambient_temperature_c, n, s.ambient_c);
        self.next_seq += 1;
    }

    /// The filled columns, leaving empty ones that continue the sequence.
    pub(crate) fn take(&mut self) -> Option<SampleBatch> {
        if self.len() == 0 {
            return None;
        }
        let next = Batch::empty(&self.columns.test_id, self.next_seq);
        Some(std::mem::replace(&mut self.columns, next))
    }
}
