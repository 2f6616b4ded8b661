//! The native channel runner: the cycler runs the schedule, the daemon follows it.
//!
//! One task per cycler owns the connection and serves every configured channel of it: a start
//! compiles the protocol to the cycler's schedule format, delivers and starts it; every poll
//! asks the status of all channels in one call, then downloads each followed test's records
//! from the index after the last one stored. A record's place in the test is the cycler's own
//! record index, so a gap of any length (a cut link, the outbox full, a daemon restart) is
//! filled from the cycler's log with nothing stored twice. The follow state travels with every
//! sample batch as the channel's checkpoint, so a restarted daemon re-attaches exactly after the
//! last committed record.
//!
//! The cycler owns the cell's safety here: the lab's limits are compiled into the schedule's own
//! protection. Lost communication is recorded but does not end the test (the cycler keeps
//! running it); the daemon reconnects and catches up.
//!
//! What the cycler's schedule format cannot say, the daemon supervises: the test runs as a
//! sequence of segments (`segments.rs`); a plan the format says whole is one segment.
//!
//! This file holds the runner's life (start, stop, re-attach, end); `follow.rs` the polls;
//! `segments.rs` supervised execution.

mod follow;
mod segments;

use super::journal::{RunnerState, TestJournal};
use super::{
    ChannelCmd, ChannelSpec, Ending, Live, Shared, StartError, TestRequest, claim_chamber,
};
use crate::outbox::Checkpoint;
use cyclerd_drivers::cycler::{ChannelAddr, ChannelState, Cycler, Record, Schedule};
use cyclerd_protocols::compile::{self, StepMap, Target};
use cyclerd_protocols::{Engine, Plan, PlanStep, StepFollower};
use segments::{Course, SegmentState};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{StreamExt, StreamMap};

/// Records asked for in one download call (Neware's page size).
const PAGE_RECORDS: usize = 1000;
/// Download calls per channel per poll, so one long backfill does not starve the others.
const PAGES_PER_POLL: usize = 20;
/// Shortest wall time between two polls of a cycler.
const MIN_POLL_WALL: std::time::Duration = std::time::Duration::from_millis(2);
/// Oldest chamber reading that still stands for a record's air temperature, clock s.
const AMBIENT_MAX_AGE_S: f64 = 120.0;
/// Polls a freshly started test may still show the channel idle before the start counts as
/// failed (a cycler takes a moment to load a schedule).
const START_GRACE_POLLS: u32 = 50;

/// One configured channel of a cycler.
pub struct NativeChannel {
    pub spec: ChannelSpec,
    /// Where the channel is on the cycler.
    pub addr: ChannelAddr,
    pub live: Live,
    pub cmds: mpsc::Receiver<ChannelCmd>,
    /// The test this channel followed when the daemon last stopped, to re-attach to.
    pub resume: Option<Checkpoint>,
}

/// What the runner must remember about a followed test, checkpointed with every batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FollowState {
    /// The name the test runs under on the cycler, to tell it from someone else's.
    cycler_test: String,
    /// The cycler's index of the next record to download (records count from 1).
    next_index: u64,
    /// Step count and cycle of the last stored record (by the plan, not the cycler's own
    /// counters), for events and the live view.
    step: u32,
    cycle: u32,
    /// Places the cycler's records in the plan: the compiler's map from the schedule's step
    /// numbers to plan steps, the step count and the cycle by the engine's rule. Kept here so
    /// a re-attached test goes on counting where it left off.
    #[serde(default)]
    steps: StepFollower,
    /// Test time, voltage and current of the last stored record, for the integrals.
    last: Option<(f64, f64, f64)>,
    /// The cell temperature of the last stored record, when the cycler logs one.
    #[serde(default)]
    last_temperature_c: Option<f64>,
    /// Charge and energy into and out of the cell since the test started, integrated from the
    /// records, so every vendor's data has the same cumulative columns whatever its own
    /// counters mean.
    charge_ah: f64,
    discharge_ah: f64,
    charge_wh: f64,
    discharge_wh: f64,
    /// The cycler has shown the test active; an idle channel after that means it was cleared.
    seen_active: bool,
    /// The segment running and the daemon's part of the plan.
    #[serde(default)]
    seg: SegmentState,
}

impl FollowState {
    /// Adds the record's interval to the integrals (trapezoids between records).
    fn integrate(&mut self, r: &Record) {
        if let Some((t0, v0, i0)) = self.last {
            let dt_h = (r.test_time_s - t0).max(0.0) / 3600.0;
            let q = (i0 + r.current_a) / 2.0 * dt_h;
            let e = (i0 * v0 + r.current_a * r.voltage_v) / 2.0 * dt_h;
            if q >= 0.0 {
                self.charge_ah += q;
            } else {
                self.discharge_ah -= q;
            }
            if e >= 0.0 {
                self.charge_wh += e;
            } else {
                self.discharge_wh -= e;
            }
        }
        self.last = Some((r.test_time_s, r.voltage_v, r.current_a));
    }
}

/// A test this daemon follows on a channel.
struct Follow {
    /// The test's record; records' test time counts from its start.
    journal: TestJournal,
    /// The test's plan: the step texts and the loops the records are placed in.
    plan: Plan,
    state: FollowState,
    /// The cycler's state at the last poll, to record changes once.
    last_state: ChannelState,
    /// The operator's stop (with why), once it was sent to the cycler.
    stop_reason: Option<Ending>,
    /// Polls since the start that showed the channel idle.
    idle_polls: u32,
    /// Why the daemon stopped the test on the cycler for safety (its chamber), once it did:
    /// the test then ends as faulted.
    fault: Option<String>,
    /// The plan sorted for the cycler and the segment it runs.
    course: Course,
    /// The daemon decided to stop the cycler's step but the stop did not get through: tried
    /// again every poll.
    stop_pending: bool,
    /// The cycler did not answer the start of the segment: sent again if it does not show.
    start_unconfirmed: bool,
}

impl FollowState {
    /// The follow state as the checkpoint keeps it.
    fn runner_state(&self) -> RunnerState {
        RunnerState {
            json: serde_json::to_string(self).unwrap_or_default(),
            paused_s: 0.0,
        }
    }
}

impl Follow {
    /// Test time now, by `clock`.
    fn now(&self, clock: &cyclerd_drivers::Clock) -> f64 {
        clock.unix_time_s() - self.journal.start_unix_s()
    }
}

/// A channel slot on the cycler.
struct Slot {
    spec: ChannelSpec,
    addr: ChannelAddr,
    live: Live,
    run: Option<Follow>,
}

/// The task that owns one cycler.
pub struct CyclerRunner<C> {
    /// The device's name in the configuration, for messages.
    device: String,
    cycler: C,
    /// The schedule format this cycler takes.
    target: Target,
    shared: Shared,
    /// Clock seconds between polls (the shortest of the channels').
    poll_interval_s: f64,
    slots: Vec<Slot>,
    /// Unix time at which the link went quiet, and why, while it is.
    link_lost: Option<(f64, String)>,
    /// The outbox was full at the last poll (downloads wait; the cycler keeps the records).
    deferred: bool,
}

/// The schedule format a cycler family takes, with the map from its step numbers to plan
/// steps.
pub fn schedule_file(
    plan: &Plan,
    target: Target,
    test_name: &str,
) -> Result<(Schedule, StepMap), String> {
    let compiled = compile::compile_mapped(plan, target).map_err(|e| e.to_string())?;
    let schedule = Schedule {
        file_name: format!("{test_name}.{}", target.extension()),
        text: compiled.text,
    };
    Ok((schedule, compiled.step_map))
}

/// The text of plan step `i` as the protocol wrote it (the live view and step events show it).
fn step_text(plan: &Plan, i: usize) -> String {
    match plan.steps.get(i) {
        Some(PlanStep::Action(a)) => a.description.clone(),
        _ => String::new(),
    }
}

/// The name a test runs under on the cycler: short and plain enough for every vendor's field
/// (MacNet's 25 bytes, Neware's barcode, a Windows file name) so no client has to change it,
/// and unique per start.
pub fn cycler_test_name(test_id: &str) -> String {
    let hex: String = test_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!("cyclerd-{}", &hex[hex.len().saturating_sub(12)..])
}

fn state_name(state: &ChannelState) -> &'static str {
    match state {
        ChannelState::Idle => "idle",
        ChannelState::Running => "running",
        ChannelState::Paused => "paused",
        ChannelState::Finished => "finished",
        ChannelState::Stopped => "stopped",
        ChannelState::Fault { .. } => "faulted",
    }
}

impl<C: Cycler> CyclerRunner<C> {
    pub fn new(
        device: String,
        cycler: C,
        target: Target,
        shared: Shared,
        channels: &[NativeChannel],
    ) -> Self {
        let poll_interval_s = channels
            .iter()
            .map(|c| c.spec.poll_interval_s)
            .fold(f64::INFINITY, f64::min);
        CyclerRunner {
            device,
            cycler,
            target,
            shared,
            poll_interval_s: if poll_interval_s.is_finite() {
                poll_interval_s
            } else {
                1.0
            },
            slots: Vec::new(),
            link_lost: None,
            deferred: false,
        }
    }

    /// Re-attaches interrupted tests, then follows the channels and serves their commands
    /// until `shutdown`. Tests keep running on the cycler when the daemon stops.
    pub async fn run(mut self, channels: Vec<NativeChannel>, mut shutdown: watch::Receiver<bool>) {
        let mut cmds = StreamMap::new();
        for (k, ch) in channels.into_iter().enumerate() {
            cmds.insert(k, ReceiverStream::new(ch.cmds));
            self.slots.push(Slot {
                spec: ch.spec,
                addr: ch.addr,
                live: ch.live,
                run: None,
            });
            if let Some(cp) = ch.resume {
                self.reattach(k, cp);
            }
        }
        // A cycler logs on its own: polling it faster than every few ms of wall time (as a fast
        // simulated clock would ask) only burns CPU; the download catches up in pages.
        let mut ticks = self
            .shared
            .clock
            .pacer_at_most_every(self.poll_interval_s, MIN_POLL_WALL);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some((k, cmd)) = cmds.next() => self.command(k, cmd).await,
                _ = ticks.tick() => self.poll().await,
            }
            if *shutdown.borrow() {
                break;
            }
        }
        for k in 0..self.slots.len() {
            self.send_batch(k);
            if self.slots[k].run.is_some() {
                self.slots[k].live.send_modify(|s| {
                    s.reason = "the daemon stopped; the test goes on on the cycler".into();
                });
            }
        }
    }

    async fn command(&mut self, k: usize, cmd: ChannelCmd) {
        match cmd {
            ChannelCmd::Start { test, reply } => {
                let _ = reply.send(self.start(k, *test).await);
            }
            ChannelCmd::Stop { reason, reply } => {
                let _ = reply.send(self.stop(k, reason).await);
            }
            ChannelCmd::Ping { reply } => {
                let _ = reply.send(());
            }
        }
    }

    async fn start(&mut self, k: usize, test: TestRequest) -> Result<String, StartError> {
        let slot = &self.slots[k];
        if let Some(run) = &slot.run {
            return Err(StartError::Busy {
                channel: slot.spec.id.clone(),
                test_id: run.journal.test_id().into(),
            });
        }
        // The lab's limits go into the schedule's own protection: the cycler enforces them.
        let mut plan = test.plan.clone();
        plan.safety = plan.safety.stricter(&slot.spec.limits);
        Engine::new(plan.clone(), &slot.spec.limits)
            .map_err(|e| StartError::Protocol(e.to_string()))?;
        let test_id = uuid::Uuid::now_v7().to_string();
        let name = segments::segment_name(&test_id, 1);
        let (course, walker) = segments::first_course(&plan, self.target)?;
        let schedule = segments::schedule_of(&course.segment, self.target, &name);
        // Claimed only for a test that compiled, and given back if the cycler refuses it.
        claim_chamber(&slot.spec, &plan, &test_id).await?;
        if let (Some(t), Some(chamber)) = (
            segments::chamber_set_point(&plan, &course.segment),
            &slot.spec.chamber,
        ) {
            chamber.set_point(&test_id, t);
        }
        let addr = slot.addr;
        if let Err(e) = self.cycler.start(addr, &schedule, &name).await {
            if let Some(chamber) = &self.slots[k].spec.chamber {
                chamber.release(&test_id);
            }
            return Err(StartError::Device(format!(
                "{} refused to start {} on channel {} ({addr}): {e}",
                self.device, schedule.file_name, slot.spec.id
            )));
        }
        let start_unix_s = self.shared.clock.unix_time_s();
        let state = FollowState {
            cycler_test: name.clone(),
            next_index: 1,
            cycle: 1,
            steps: StepFollower::new(course.segment.compiled.step_map.clone()),
            seg: SegmentState {
                number: 1,
                from: course.segment.from,
                walker,
                ..SegmentState::default()
            },
            ..FollowState::default()
        };
        let supervised = course.sup.needs_supervision();
        let first_step = plan
            .steps
            .iter()
            .position(|s| matches!(s, PlanStep::Action(_)))
            .map(|i| step_text(&plan, i))
            .unwrap_or_default();
        let slot = &self.slots[k];
        let journal = TestJournal::register(
            &self.shared,
            &slot.spec,
            &slot.live,
            (test_id.clone(), start_unix_s),
            test,
            state.runner_state(),
            ((0, 1), first_step),
        );
        tracing::info!(channel = %slot.spec.id, %test_id, "started {} on {} as {name}", schedule.file_name, self.device);
        self.slots[k].run = Some(Follow {
            journal,
            plan,
            state,
            last_state: ChannelState::Idle,
            stop_reason: None,
            idle_polls: 0,
            fault: None,
            course,
            stop_pending: false,
            start_unconfirmed: false,
        });
        let how = if supervised {
            "; the daemon supervises what the schedule format cannot say and runs the test as \
             segments (this is segment 1)"
        } else {
            ""
        };
        self.event(
            k,
            0.0,
            "state",
            format!(
                "started on {} as {name} ({}){how}",
                self.device, schedule.file_name
            ),
        );
        Ok(test_id)
    }

    async fn stop(&mut self, k: usize, reason: String) -> Result<(), StartError> {
        let slot = &self.slots[k];
        if slot.run.is_none() {
            return Err(StartError::NotRunning(slot.spec.id.clone()));
        }
        let addr = slot.addr;
        if let Err(e) = self.cycler.stop(addr).await {
            return Err(StartError::Device(format!(
                "{} did not stop channel {} ({addr}): {e}; the test goes on",
                self.device, slot.spec.id
            )));
        }
        if let Some(run) = self.slots[k].run.as_mut() {
            run.stop_reason = Some(Ending::stopped_by(reason));
        }
        Ok(())
    }

    /// Follows a test that was running when the daemon stopped.
    fn reattach(&mut self, k: usize, cp: Checkpoint) {
        let slot = &self.slots[k];
        let mut state: FollowState = match serde_json::from_str(&cp.progress.engine_json) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!(
                    "not re-attached after the daemon restarted: its checkpoint is unreadable \
                     ({e}); the records stay in {}'s own data",
                    self.device
                );
                tracing::error!(channel = %slot.spec.id, test_id = %cp.test_id, "{reason}");
                TestJournal::reopen(&self.shared, &cp).end_unread(Ending::Faulted(reason));
                return;
            }
        };
        // The test's plan, as stored with it; a test whose plan cannot be read any more is
        // followed with an empty one (its records keep the cycler's place, no step texts).
        let plan = crate::params::plan_of(&cp).unwrap_or_else(|_| Plan {
            name: String::new(),
            source_sha256: String::new(),
            capacity_ah: None,
            params: Default::default(),
            safety: Default::default(),
            steps: vec![PlanStep::End],
        });
        // A checkpoint from before step maps were kept: the map of the schedule the plan
        // compiles to (the numbering does not depend on the limits merged into it).
        if state.steps.map().plan_steps.is_empty()
            && let Ok((_, map)) = schedule_file(&plan, self.target, &state.cycler_test)
        {
            state.steps = StepFollower::new(map);
        }
        // The segment it runs, compiled again (the same plan compiles the same way); a
        // checkpoint from before segments ran the whole plan, its first segment.
        let course = match segments::first_course(&plan, self.target) {
            Ok((mut course, walker)) => {
                if state.seg.number == 0 {
                    state.seg = SegmentState {
                        number: 1,
                        from: course.segment.from,
                        walker,
                        ..SegmentState::default()
                    };
                }
                match course.sup.segment(&plan, state.seg.from) {
                    Ok(segment) => {
                        course.segment = segment;
                        Ok(course)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let course = match course {
            Ok(c) => c,
            Err(e) => {
                let reason = format!(
                    "not re-attached after the daemon restarted: its segment does not compile \
                     any more ({e}); the records stay in {}'s own data",
                    self.device
                );
                tracing::error!(channel = %slot.spec.id, test_id = %cp.test_id, "{reason}");
                TestJournal::reopen(&self.shared, &cp).end_unread(Ending::Faulted(reason));
                return;
            }
        };
        let message = format!(
            "daemon restarted: re-attached to {} on {}, downloading from record {}",
            state.cycler_test, self.device, state.next_index
        );
        tracing::info!(channel = %slot.spec.id, test_id = %cp.test_id, "{message}");
        let description = state
            .steps
            .last()
            .map(|p| step_text(&plan, p.plan_step))
            .unwrap_or_default();
        let mut journal = TestJournal::reopen(&self.shared, &cp);
        journal.check_with(&self.shared, &plan);
        let run = Follow {
            journal,
            plan,
            last_state: ChannelState::Running,
            stop_reason: None,
            idle_polls: 0,
            fault: None,
            course,
            stop_pending: false,
            start_unconfirmed: false,
            state,
        };
        let place = (run.state.step, run.state.cycle);
        run.journal
            .show_running(&slot.live, run.plan.name.clone(), (place, description));
        let t = run.state.last.map_or(0.0, |(t, _, _)| t);
        self.slots[k].run = Some(run);
        self.event(k, t, "interruption", message);
    }

    /// Records the end of the test on channel `k` and forgets it.
    fn end(&mut self, k: usize, ending: Ending) {
        self.send_batch(k);
        let Some(run) = self.slots[k].run.take() else {
            return;
        };
        let t = run
            .state
            .last
            .map_or_else(|| run.now(&self.shared.clock), |(t, _, _)| t);
        let slot = &self.slots[k];
        let test_id = run.journal.test_id();
        match &ending {
            Ending::Faulted(reason) => {
                tracing::warn!(channel = %slot.spec.id, %test_id, "test faulted: {reason}")
            }
            _ => tracing::info!(channel = %slot.spec.id, %test_id, "test {}", ending.outcome()),
        }
        let place = (run.state.step, run.state.cycle);
        if let Some(chamber) = &slot.spec.chamber {
            chamber.release(test_id);
        }
        run.journal.end(&slot.live, t, place, ending);
    }

    /// Sends the batch when it is full or old enough.
    fn maybe_send(&mut self, k: usize) {
        let commit = self.slots[k].spec.commit_interval;
        if let Some(run) = &self.slots[k].run
            && run.journal.is_due(commit)
        {
            self.send_batch(k);
        }
    }

    /// Sends channel `k`'s batch with the follow state that accounts for exactly its records.
    fn send_batch(&mut self, k: usize) {
        if let Some(run) = self.slots[k].run.as_mut() {
            let state = &run.state;
            run.journal.flush(|| state.runner_state());
        }
    }

    fn event(&self, k: usize, test_time_s: f64, kind: &str, message: String) {
        if let Some(run) = &self.slots[k].run {
            let place = (run.state.step, run.state.cycle);
            run.journal.event(test_time_s, kind, message, place);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycler_test_names_fit_every_vendor_unchanged() {
        let name = cycler_test_name("0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e7f");
        assert_eq!(name, "cyclerd-2a3b4c5d6e7f");
        assert_eq!(cyclerd_drivers::maccor::wire::short_name(&name), name);
        assert_eq!(cyclerd_drivers::neware::wire::barcode(&name), name);
        assert_eq!(cyclerd_drivers::arbin::wire::test_name(&name), name);
    }

    #[test]
    fn integrals_split_charge_and_discharge_by_the_sign_of_the_current() {
        let mut s = FollowState::default();
        let rec = |t: f64, v: f64, i: f64| Record {
            index: 0,
            test_time_s: t,
            voltage_v: v,
            current_a: i,
            temperature_c: None,
            step: 1,
            cycle: 1,
            capacity_ah: 0.0,
            energy_wh: 0.0,
        };
        s.integrate(&rec(0.0, 4.0, 2.0));
        s.integrate(&rec(3600.0, 4.0, 2.0));
        s.integrate(&rec(3600.0, 3.5, -1.0));
        s.integrate(&rec(5400.0, 3.5, -1.0));
        assert!((s.charge_ah - 2.0).abs() < 1e-12);
        assert!((s.charge_wh - 8.0).abs() < 1e-12);
        assert!((s.discharge_ah - 0.5).abs() < 1e-12);
        assert!((s.discharge_wh - 1.75).abs() < 1e-12);
    }
}
