//! The stepped channel runner: the daemon is the cycler.
//!
//! Every poll it reads the power stage, feeds the measurement to the engine, writes the setpoint
//! the engine returns when it changes, and appends the sample to a columnar batch that goes to
//! the outbox when it is full or `commit_interval` old, together with a checkpoint of the engine
//! (same transaction), so a restarted daemon resumes exactly after the last committed sample.
//! Safety is the engine's first check on every poll; on any fault, on lost communication and on
//! shutdown the output goes off first and the reason is recorded second. Every poll also reads
//! back the output state and (where the device reports them) the setpoints: an output on while
//! the step keeps it off, or a setpoint other than the one written (beyond the device's
//! resolution), is a change made by someone else and faults the test, naming what changed. A
//! shutdown does not end the test: it stays interrupted, its checkpoint kept, and the next start
//! resumes it by the `[daemon] resume` policy as after a crash. When the outbox is full the
//! channel pauses at rest, output off, and resumes when there is room again.
//!
//! This file holds the runner's life (start, resume, end, safe stops); `poll.rs` its poll loop.

mod poll;

use super::journal::{Place, RunnerState, TestJournal};
use super::{
    ChannelCmd, ChannelSpec, Ending, Live, Shared, StartError, TestRequest, claim_chamber,
};
use crate::config::ResumePolicy;
use crate::outbox::Checkpoint;
use cyclerd_drivers::stage::PowerStage;
use cyclerd_protocols::plan::Record;
use cyclerd_protocols::{Command, Control, Engine, EngineState, Plan, PlanStep};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How often a channel that lost its device tries again to switch the output off.
const OFF_RETRY: Duration = Duration::from_secs(1);
/// How often a channel without a test reads its cell's open-circuit voltage (wall time).
pub(crate) const IDLE_READ: Duration = Duration::from_secs(2);

/// One channel's task.
pub struct ChannelRunner<D> {
    spec: ChannelSpec,
    device: D,
    shared: Shared,
    live: Live,
    /// The output could not be confirmed off (device unreachable): keep trying while idle.
    output_unconfirmed: bool,
    /// When the device last answered an idle reading, and whether the channel shows it
    /// offline since (it stopped answering for longer than `comm_timeout`).
    idle_read: (tokio::time::Instant, bool),
}

/// A test in progress on this channel.
struct Run {
    /// The test's record: samples, events, checkpoints.
    journal: TestJournal,
    engine: Engine,
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
/// `cyclerctl protocol simulate` keeps its rows with the same recorder.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// Test time, voltage and current of the last kept sample.
    last_kept: Option<(f64, f64, f64)>,
    /// The next sample is the first of a step.
    pub(crate) step_began: bool,
    /// How much sooner than `every` a sample still counts as due (half the poll interval):
    /// polls come a period apart give or take the link's jitter, and `record: every 0.1 s`
    /// at 10 Hz means every poll, not the two thirds that land 0.1 s or more after the last.
    slack_s: f64,
}

impl Recorder {
    /// A recorder for polls every `poll_interval_s`.
    pub(crate) fn polled_every(poll_interval_s: f64) -> Recorder {
        Recorder {
            slack_s: (poll_interval_s / 2.0).max(0.0),
            ..Recorder::default()
        }
    }

    pub(crate) fn keep(
        &mut self,
        rule: &Record,
        t: f64,
        v: f64,
        i: f64,
        something_fired: bool,
    ) -> bool {
        let keep = rule.is_empty()
            || something_fired
            || std::mem::take(&mut self.step_began)
            || self.last_kept.is_none_or(|(t0, v0, i0)| {
                rule.every_s
                    .is_some_and(|e| t - t0 >= e - self.slack_s.min(e / 2.0))
                    || rule.dv_v.is_some_and(|d| (v - v0).abs() >= d)
                    || rule.di_a.is_some_and(|d| (i - i0).abs() >= d)
            });
        if keep {
            self.last_kept = Some((t, v, i));
        }
        keep
    }
}

/// The engine's state to continue from, and the test time it left out.
fn runner_state(engine: &Engine, paused_s: f64) -> RunnerState {
    RunnerState {
        json: serde_json::to_string(&engine.checkpoint()).unwrap_or_default(),
        paused_s,
    }
}

impl Run {
    fn state(&self) -> RunnerState {
        runner_state(&self.engine, self.paused_s)
    }

    /// Step and cycle the engine is in.
    fn place(&self) -> Place {
        let s = self.engine.status();
        (s.step_count, s.cycle)
    }

    /// Test time now, by `clock`.
    fn now(&self, clock: &cyclerd_drivers::Clock) -> f64 {
        clock.unix_time_s() - self.journal.start_unix_s()
    }

    /// Sends the batch with a checkpoint that accounts for exactly its samples.
    fn flush(&mut self) {
        let (engine, paused_s) = (&self.engine, self.paused_s);
        self.journal.flush(|| runner_state(engine, paused_s));
    }

    fn event(&self, test_time_s: f64, kind: &str, message: String) {
        self.journal.event(test_time_s, kind, message, self.place());
    }
}

impl<D: PowerStage> ChannelRunner<D> {
    pub fn new(spec: ChannelSpec, device: D, shared: Shared, live: Live) -> Self {
        ChannelRunner {
            spec,
            device,
            shared,
            live,
            output_unconfirmed: false,
            idle_read: (tokio::time::Instant::now(), false),
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
        // Without a test the channel shows its cell's open-circuit voltage, read with the
        // output off; a read never switches it on.
        let mut idle_reads = tokio::time::interval(IDLE_READ);
        idle_reads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.idle_read.0 = tokio::time::Instant::now();
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
                _ = idle_reads.tick(), if !self.output_unconfirmed => self.read_idle().await,
                _ = retry_off => {
                    if self.shared.reconnected(self.device.reconnect().await).is_ok() {
                        self.switch_off("after regaining the device").await;
                        self.idle_once_off();
                    }
                }
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(ChannelCmd::Stop { reply, .. }) => {
                        let _ = reply.send(Err(StartError::NotRunning(self.spec.id.clone())));
                    }
                    Some(ChannelCmd::Ping { reply }) => {
                        let _ = reply.send(());
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
                        // The cell's voltage at once after the test, then every IDLE_READ.
                        idle_reads.reset_immediately();
                        self.idle_read.0 = tokio::time::Instant::now();
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

    /// Reads the idle channel's device (its output off) and shows the cell's open-circuit
    /// voltage; a device that has not answered for `comm_timeout` shows the channel offline,
    /// with why, until it answers again.
    async fn read_idle(&mut self) {
        let reading = self.device.read().await;
        let air = self
            .spec
            .chamber
            .as_ref()
            .and_then(|c| c.state().temperature_c);
        match reading {
            Ok(r) => {
                let was_offline = std::mem::replace(&mut self.idle_read, (Instant::now(), false)).1;
                let read_at = self.shared.clock.unix_time_s();
                self.live.send_modify(|s| {
                    s.reading_unix_s = read_at;
                    s.voltage_v = r.voltage_v;
                    // No test drives a current; an output someone else switched on does.
                    s.current_a = if r.output_on { r.current_a } else { 0.0 };
                    s.temperature_c = r.temperature_c.unwrap_or(f64::NAN);
                    s.ambient_temperature_c = air.unwrap_or(f64::NAN);
                    if was_offline && s.state == "offline" {
                        s.state = "idle".into();
                        s.reason.clear();
                    }
                });
            }
            Err(e) => {
                self.shared.device_error();
                let silent = self.idle_read.0.elapsed() >= self.spec.comm_timeout;
                let newly = silent && !self.idle_read.1;
                if newly {
                    tracing::warn!(channel = %self.spec.id, "the idle channel's device does not answer: {e}");
                    self.idle_read.1 = true;
                    let reason = format!("the device does not answer: {e}");
                    self.live.send_modify(|s| {
                        s.state = "offline".into();
                        s.reason = reason;
                        s.voltage_v = f64::NAN;
                        s.current_a = 0.0;
                    });
                }
                if e.is_link_lost()
                    && let Err(e) = self.shared.reconnected(self.device.reconnect().await)
                {
                    tracing::debug!(channel = %self.spec.id, "reconnect failed: {e}");
                }
            }
        }
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
        let start_unix_s = self.shared.clock.unix_time_s();
        let command = engine.start(0.0);
        let status = engine.status();
        let place = (
            (status.step_count, status.cycle),
            status.description.clone(),
        );
        let journal = TestJournal::register(
            &self.shared,
            &self.spec,
            &self.live,
            (test_id, start_unix_s),
            test,
            runner_state(&engine, 0.0),
            place,
        );
        let run = Run {
            journal,
            engine,
            paused_s: 0.0,
            command,
            recorder: Recorder::polled_every(self.spec.poll_interval_s),
        };
        self.step_event(&run, 0.0);
        run
    }

    /// Picks up a test that was running when the daemon stopped (killed, or shut down cleanly).
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
        let restored = crate::params::plan_of(&cp)
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
                return self.abandon(&cp, &why);
            }
            (ResumePolicy::Continue, Err(e)) => {
                let why = format!("cannot restore its checkpoint: {e}");
                return self.abandon(&cp, &why);
            }
            (ResumePolicy::Continue, Ok(engine)) => engine,
        };
        let mut journal = TestJournal::reopen(&self.shared, &cp);
        journal.check_with(&self.shared, engine.plan());
        let run = Run {
            journal,
            engine,
            paused_s: cp.progress.paused_s + gap_s,
            command: Command::Off,
            recorder: Recorder::polled_every(self.spec.poll_interval_s),
        };
        let status = run.engine.status();
        let message = format!(
            "interrupted for {gap_s:.1} s (daemon restart); continuing step {} ({}) of cycle {}",
            status.step_count, status.description, status.cycle
        );
        tracing::warn!(channel = %self.spec.id, test_id = %cp.test_id, "{message}");
        run.journal.checkpointed_event(
            test_time_s,
            ("interruption", message),
            run.place(),
            run.state(),
        );
        let plan_name = run.engine.plan().name.clone();
        let place = (
            (status.step_count, status.cycle),
            status.description.clone(),
        );
        run.journal.show_running(&self.live, plan_name, place);
        // The engine asks for its setpoint again on the first measurement; until then: off.
        self.drive(run, cmds, shutdown).await;
    }

    /// Ends an interrupted test that will not be continued.
    fn abandon(&mut self, cp: &Checkpoint, why: &str) {
        if let Some(chamber) = &self.spec.chamber {
            chamber.release(&cp.test_id);
        }
        let reason = format!("not resumed after the daemon restarted: {why}");
        TestJournal::reopen(&self.shared, cp).end_interrupted(&self.live, Ending::Faulted(reason));
    }

    /// Records the end: last samples, why, and the end marker (which retires the checkpoint); an
    /// interrupted test keeps its checkpoint instead (the chamber is given back either way: a
    /// resumed test claims it again).
    fn finish(&mut self, mut run: Run, ending: Ending) {
        if let Some(chamber) = &self.spec.chamber {
            chamber.release(run.journal.test_id());
        }
        let now = run.now(&self.shared.clock);
        run.flush();
        let place = run.place();
        if let Ending::Interrupted(reason) = &ending {
            let state = run.state();
            return run
                .journal
                .interrupt(&self.live, (now, place), reason, state);
        }
        run.journal.end(&self.live, now, place, ending);
    }

    /// Output off, then the record: the order that protects the cell.
    async fn fault(&mut self, reason: String) -> Ending {
        self.switch_off("after a fault").await;
        tracing::warn!(channel = %self.spec.id, "test faulted: {reason}");
        Ending::Faulted(reason)
    }

    /// Output off, then the test ends (or is interrupted) for `why`.
    async fn safe_stop(&mut self, why: Ending) -> Ending {
        self.switch_off("when stopping").await;
        why
    }

    /// A step began: recorded as an event that also checkpoints the engine.
    fn step_event(&self, run: &Run, test_time_s: f64) {
        let s = run.engine.status();
        run.journal.checkpointed_event(
            test_time_s,
            ("step", s.description.clone()),
            run.place(),
            run.state(),
        );
        let (step, cycle, description) = (s.step_count, s.cycle, s.description.clone());
        self.live.send_modify(|snap| {
            snap.step = step;
            snap.cycle = cycle;
            snap.step_description = description;
        });
    }
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

#[cfg(test)]
mod recorder_tests {
    use super::*;

    fn every(s: f64) -> Record {
        Record {
            every_s: Some(s),
            ..Record::default()
        }
    }

    /// Poll times a period apart, each late by 0 to 3 ms (a link's jitter).
    fn polls(period: f64, n: usize) -> impl Iterator<Item = f64> {
        (0..n).map(move |k| k as f64 * period + ((k * 7919) % 31) as f64 * 1e-4)
    }

    #[test]
    fn recording_every_poll_period_keeps_every_poll_whatever_the_jitter() {
        let mut r = Recorder::polled_every(0.1);
        let kept = polls(0.1, 1000)
            .filter(|&t| r.keep(&every(0.1), t, 3.7, 1.0, false))
            .count();
        assert_eq!(kept, 1000);
    }

    #[test]
    fn recording_every_second_at_ten_hertz_keeps_one_poll_a_second() {
        let mut r = Recorder::polled_every(0.1);
        let kept: Vec<f64> = polls(0.1, 1001)
            .filter(|&t| r.keep(&every(1.0), t, 3.7, 1.0, false))
            .collect();
        assert_eq!(kept.len(), 101, "{kept:?}");
        for w in kept.windows(2) {
            assert!((w[1] - w[0] - 1.0).abs() < 0.01, "{w:?}");
        }
    }
}
