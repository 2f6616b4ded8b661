//! The stepped channel runner: the daemon is the cycler.
//!
//! Every poll it reads the power stage, feeds the measurement to the engine, writes the setpoint
//! the engine returns when it changes, and appends the sample to a columnar batch that goes to
//! the outbox when it is full or `commit_interval` old. Safety is the engine's first check on
//! every poll; on any fault, on lost communication and on shutdown the output goes off first and
//! the reason is recorded second.

use crate::outbox::Outbox;
use crate::proto::control::ChannelSnapshot;
use crate::proto::ingest::{Event, SampleBatch, TestEnded, TestRegistered, entry::Body};
use cyclerd_drivers::Clock;
use cyclerd_drivers::stage::PowerStage;
use cyclerd_protocols::{Command, Engine, Measurement, Outcome, Plan, Safety};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Samples per outbox entry before a batch is sent regardless of its age.
pub const BATCH_SAMPLES: usize = 2048;

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
    #[error("channel {0} is not running (the daemon is shutting down)")]
    ChannelGone(String),
    #[error("no test is running on channel {0}")]
    NotRunning(String),
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
    pub metadata: HashMap<String, String>,
}

/// Handles shared by every channel of a daemon.
#[derive(Clone)]
pub struct Shared {
    pub clock: Clock,
    pub outbox: Outbox,
    /// Every sample read from any device; `cyclerd demo` compares it with what the hub acked.
    pub acquired: Arc<AtomicU64>,
}

/// One channel's task.
pub struct ChannelRunner<D> {
    spec: ChannelSpec,
    device: D,
    shared: Shared,
    live: watch::Sender<ChannelSnapshot>,
}

/// How a test ended, as recorded.
struct Ending {
    outcome: &'static str,
    reason: String,
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
        }
    }

    /// Serves commands until `shutdown` turns true; the output is off whenever no test runs.
    pub async fn run(
        mut self,
        mut cmds: mpsc::Receiver<ChannelCmd>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if let Err(e) = self.device.output_off().await {
            tracing::warn!(channel = %self.spec.id, "cannot switch output off at startup: {e}");
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(ChannelCmd::Stop { reply, .. }) => {
                        let _ = reply.send(Err(StartError::NotRunning(self.spec.id.clone())));
                    }
                    Some(ChannelCmd::Start { test, reply }) => {
                        let engine = match Engine::new(test.plan.clone(), &self.spec.limits) {
                            Ok(e) => e,
                            Err(e) => {
                                let _ = reply.send(Err(StartError::Protocol(e.to_string())));
                                continue;
                            }
                        };
                        let test_id = uuid::Uuid::now_v7().to_string();
                        let _ = reply.send(Ok(test_id.clone()));
                        self.run_test(test_id, *test, engine, &mut cmds, &mut shutdown).await;
                    }
                },
            }
        }
        if let Err(e) = self.device.output_off().await {
            tracing::error!(channel = %self.spec.id, "cannot switch output off at shutdown: {e}");
        }
    }

    async fn run_test(
        &mut self,
        test_id: String,
        test: TestRequest,
        mut engine: Engine,
        cmds: &mut mpsc::Receiver<ChannelCmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let clock = self.shared.clock.clone();
        let t0 = clock.now();
        let start_unix = clock.unix_time_s();
        let protocol_name = test.plan.name.clone();
        self.append(Body::TestRegistered(TestRegistered {
            test_id: test_id.clone(),
            channel_id: self.spec.id.clone(),
            metadata: test.metadata,
            protocol_name: protocol_name.clone(),
            plan_json: test.plan.to_json(),
            protocol_source: test.source,
            start_unix_s: start_unix,
        }));
        self.live.send_modify(|s| {
            s.state = "running".into();
            s.test_id = test_id.clone();
            s.protocol_name = protocol_name;
            s.reason.clear();
            s.samples = 0;
        });

        let mut batch = Batch::new(&test_id);
        let mut command = engine.start(0.0);
        self.step_event(&test_id, &engine, 0.0);
        let ending = 'test: {
            if let Err(e) = self.device.apply(&command).await {
                break 'test self
                    .fault(format!("cannot write the first setpoint: {e}"))
                    .await;
            }
            let mut ticks = pacer(clock.wall(self.spec.poll_interval_s));
            let mut last_good = Instant::now();
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
                                test_id: test_id.clone(),
                            }));
                            continue;
                        }
                    },
                    _ = ticks.tick() => {}
                }
                let reading = match self.device.read().await {
                    Ok(r) => {
                        last_good = Instant::now();
                        r
                    }
                    Err(e) => {
                        if last_good.elapsed() >= self.spec.comm_timeout {
                            break 'test self
                                .fault(format!(
                                    "lost communication for more than {} ms: {e}",
                                    self.spec.comm_timeout.as_millis()
                                ))
                                .await;
                        }
                        tracing::warn!(channel = %self.spec.id, "read failed, retrying: {e}");
                        continue;
                    }
                };
                let test_time_s = clock.now() - t0;
                let (step_before, cycle_before) = {
                    let s = engine.status();
                    (s.step_count, s.cycle)
                };
                let update = engine.update(&Measurement {
                    test_time_s,
                    voltage_v: reading.voltage_v,
                    current_a: reading.current_a,
                    temperature_c: reading.temperature_c,
                });
                let status = engine.status();
                batch.push(Sample {
                    test_time_s,
                    unix_time_s: start_unix + test_time_s,
                    voltage_v: reading.voltage_v,
                    current_a: reading.current_a,
                    cycle: cycle_before,
                    step: step_before,
                    charge_ah: status.charge_capacity_ah,
                    discharge_ah: status.discharge_capacity_ah,
                    charge_wh: status.charge_energy_wh,
                    discharge_wh: status.discharge_energy_wh,
                    temperature_c: reading.temperature_c,
                });
                self.shared.acquired.fetch_add(1, Ordering::Relaxed);
                let samples = batch.next_seq;
                self.live.send_modify(|s| {
                    s.voltage_v = reading.voltage_v;
                    s.current_a = reading.current_a;
                    s.temperature_c = reading.temperature_c.unwrap_or(f64::NAN);
                    s.test_time_s = test_time_s;
                    s.charge_capacity_ah = status.charge_capacity_ah;
                    s.discharge_capacity_ah = status.discharge_capacity_ah;
                    s.samples = samples;
                });
                if reading.alarm {
                    break 'test self.fault("the device reports an alarm".into()).await;
                }
                if !reading.output_on && command != Command::Off {
                    break 'test self
                        .fault("the device switched its output off by itself".into())
                        .await;
                }
                if let Some(outcome) = update.outcome {
                    break 'test match outcome {
                        Outcome::Finished => {
                            let _ = self.device.output_off().await;
                            Ending {
                                outcome: "finished",
                                reason: String::new(),
                            }
                        }
                        Outcome::Faulted(reason) => self.fault(reason).await,
                    };
                }
                if update.step_changed {
                    self.step_event(&test_id, &engine, test_time_s);
                }
                if update.command != command {
                    command = update.command;
                    if let Err(e) = self.device.apply(&command).await {
                        break 'test self.fault(format!("cannot write a setpoint: {e}")).await;
                    }
                }
                if batch.len() >= BATCH_SAMPLES || batch.age() >= self.spec.commit_interval {
                    self.send_batch(&mut batch);
                }
            }
        };
        self.send_batch(&mut batch);
        let now = clock.now() - t0;
        if !ending.reason.is_empty() {
            self.append(Body::Event(Event {
                test_id: test_id.clone(),
                unix_time_s: start_unix + now,
                test_time_s: now,
                kind: if ending.outcome == "faulted" {
                    "alarm"
                } else {
                    "state"
                }
                .into(),
                message: ending.reason.clone(),
                step: engine.status().step_count,
                cycle: engine.status().cycle,
            }));
        }
        self.append(Body::TestEnded(TestEnded {
            test_id,
            unix_time_s: start_unix + now,
            outcome: ending.outcome.into(),
            reason: ending.reason.clone(),
            sample_count: batch.next_seq,
        }));
        self.live.send_modify(|s| {
            s.state = ending.outcome.into();
            s.reason = ending.reason;
        });
    }

    /// Output off, then the record: the order that protects the cell.
    async fn fault(&mut self, reason: String) -> Ending {
        if let Err(e) = self.device.output_off().await {
            tracing::error!(channel = %self.spec.id, "FAULT and cannot switch the output off: {e}");
        }
        tracing::warn!(channel = %self.spec.id, "test faulted: {reason}");
        Ending {
            outcome: "faulted",
            reason,
        }
    }

    async fn safe_stop(&mut self, reason: &str) -> Ending {
        if let Err(e) = self.device.output_off().await {
            tracing::error!(channel = %self.spec.id, "cannot switch the output off: {e}");
        }
        Ending {
            outcome: "stopped",
            reason: reason.into(),
        }
    }

    fn step_event(&self, test_id: &str, engine: &Engine, test_time_s: f64) {
        let s = engine.status();
        self.append(Body::Event(Event {
            test_id: test_id.into(),
            unix_time_s: self.shared.clock.unix_time_s(),
            test_time_s,
            kind: "step".into(),
            message: s.description.clone(),
            step: s.step_count,
            cycle: s.cycle,
        }));
        let (step, cycle, description) = (s.step_count, s.cycle, s.description.clone());
        self.live.send_modify(|snap| {
            snap.step = step;
            snap.cycle = cycle;
            snap.step_description = description;
        });
    }

    fn send_batch(&self, batch: &mut Batch) {
        if let Some(body) = batch.take() {
            self.append(Body::Samples(body));
        }
    }

    fn append(&self, body: Body) {
        if let Err(e) = self.shared.outbox.append(body) {
            // Only happens when the writer thread is gone, i.e. the daemon is going down.
            tracing::error!(channel = %self.spec.id, "cannot queue to the outbox: {e}");
        }
    }
}

/// Paces polls at the channel's interval of clock time.
///
/// On a fast simulated clock the interval can be shorter than the timer's 1 ms resolution; then
/// missed ticks are made up in bursts, so the average poll rate still matches the configured one
/// (and when the link cannot keep up, polls simply run back to back). At real speed a late poll
/// delays the following ones instead of bunching them.
fn pacer(period: Duration) -> Interval {
    let mut ticks = tokio::time::interval(period.max(Duration::from_micros(1)));
    ticks.set_missed_tick_behavior(if period < Duration::from_millis(1) {
        MissedTickBehavior::Burst
    } else {
        MissedTickBehavior::Delay
    });
    ticks
}

/// One sample as the runner assembles it.
struct Sample {
    test_time_s: f64,
    unix_time_s: f64,
    voltage_v: f64,
    current_a: f64,
    cycle: u32,
    step: u32,
    charge_ah: f64,
    discharge_ah: f64,
    charge_wh: f64,
    discharge_wh: f64,
    temperature_c: Option<f64>,
}

/// Columns being filled; sent as one outbox entry.
struct Batch {
    columns: SampleBatch,
    /// Sequence number the next sample gets; contiguous per test from 0.
    next_seq: u64,
    /// When the oldest sample in the batch was taken (wall), to bound its wait.
    started: Instant,
}

impl Batch {
    fn new(test_id: &str) -> Batch {
        Batch {
            columns: Batch::empty(test_id, 0),
            next_seq: 0,
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
        }
    }

    fn len(&self) -> usize {
        self.columns.voltage_v.len()
    }

    fn age(&self) -> Duration {
        self.started.elapsed()
    }

    fn push(&mut self, s: Sample) {
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
        // The temperature column is empty or as long as the others; gaps are NaN.
        match s.temperature_c {
            Some(t) => {
                c.temperature_c.resize(c.voltage_v.len() - 1, f64::NAN);
                c.temperature_c.push(t);
            }
            None if !c.temperature_c.is_empty() => c.temperature_c.push(f64::NAN),
            None => {}
        }
        self.next_seq += 1;
    }

    /// The filled columns, leaving empty ones that continue the sequence.
    fn take(&mut self) -> Option<SampleBatch> {
        if self.len() == 0 {
            return None;
        }
        let next = Batch::empty(&self.columns.test_id, self.next_seq);
        Some(std::mem::replace(&mut self.columns, next))
    }
}
