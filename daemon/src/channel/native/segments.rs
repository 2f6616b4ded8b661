//! Supervised execution (`cyclerd_protocols::supervise`): a test runs on the cycler as a
//! sequence of segments, each an ordinary schedule; between them the daemon counts the loops
//! it owns, sets the chamber, and decides where an end leads. Within a segment it checks the
//! conditions the schedule could not say on every record it downloads and stops the cycler's
//! step when one holds. A plan the cycler can say whole is one segment.
//!
//! One test id and one record throughout: every segment's records are stored under the test
//! with its test time (the cycler counts each segment's from 0; the daemon adds the time the
//! segment started), placed in the one plan by the segment's step map, with the step count,
//! cycles and capacity going on across segments.

use super::{CyclerRunner, FollowState, START_GRACE_POLLS, Slot, cycler_test_name, step_text};
use crate::channel::{Ending, StartError};
use cyclerd_drivers::DriverError;
use cyclerd_drivers::cycler::{Cycler, Schedule};
use cyclerd_protocols::compile::Target;
use cyclerd_protocols::supervise::{
    LastRecord, Next, Reading, Segment, StepWatch, Supervision, Verdict, Walker,
};
use cyclerd_protocols::{Control, Goto, Plan, PlanStep};
use serde::{Deserialize, Serialize};

/// The segment a test runs, checkpointed with the follow state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct SegmentState {
    /// Segments started so far; 0 in checkpoints from before segments (one whole schedule).
    pub number: u32,
    /// First plan index of the segment running.
    pub from: usize,
    /// Test time at which it started: its records' test time counts from here.
    pub time_base_s: f64,
    /// The loops the daemon counts.
    pub walker: Walker,
    /// The watched step in progress.
    pub watch: StepWatch,
    /// Where the test goes on once the cycler has stopped the step the daemon ended.
    pub exit: Option<Goto>,
    /// Test time at which the plan step of the last record began (the cycler's step time,
    /// for working out where a segment's own end leads).
    pub step_start_s: f64,
}

/// What a test on a native cycler runs: the plan sorted for the target and the segment on
/// the cycler now.
pub(super) struct Course {
    pub sup: Supervision,
    pub segment: Segment,
}

/// A decision the records of a poll brought, acted on once they are stored.
pub(super) enum Decision {
    /// Stop the cycler's step; go on at this goto.
    Stop(Goto, String),
    /// Stop the cycler's step; the test faults.
    Fault(String),
}

/// The name segment `number` runs under on the cycler: the test's name for the first (as
/// before segments existed), with the segment number after it for the others.
pub(super) fn segment_name(test_id: &str, number: u32) -> String {
    let base = cycler_test_name(test_id);
    if number <= 1 {
        base
    } else {
        format!("{base}-{number:x}")
    }
}

/// Sorts `plan` for `target` and compiles its first segment.
pub(super) fn first_course(plan: &Plan, target: Target) -> Result<(Course, Walker), StartError> {
    let sup = Supervision::new(plan, target).map_err(|errors| {
        StartError::Protocol(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let mut walker = Walker::default();
    let Next::Segment(from) = walker.walk(&sup, plan, 0, 0.0, 1) else {
        return Err(StartError::Protocol(
            "the protocol has no step to run".into(),
        ));
    };
    let segment = sup
        .segment(plan, from)
        .map_err(|e| StartError::Protocol(e.to_string()))?;
    Ok((Course { sup, segment }, walker))
}

/// The segment's schedule file for the cycler.
pub(super) fn schedule_of(segment: &Segment, target: Target, name: &str) -> Schedule {
    Schedule {
        file_name: format!("{name}.{}", target.extension()),
        text: segment.compiled.text.clone(),
    }
}

/// The chamber set point of a segment that begins with a chamber step.
pub(super) fn chamber_set_point(plan: &Plan, segment: &Segment) -> Option<f64> {
    match plan.steps.get(segment.from) {
        Some(PlanStep::Action(a)) => match a.control {
            Control::Chamber { temperature_c, .. } => Some(temperature_c),
            _ => None,
        },
        _ => None,
    }
}

impl FollowState {
    /// Checks one stored record of plan step `plan_step` against what the daemon watches.
    pub(super) fn watch(
        &mut self,
        course: &Course,
        plan: &Plan,
        plan_step: usize,
        reading: Reading,
    ) -> Option<Decision> {
        if self.seg.exit.is_some() {
            return None;
        }
        match self
            .seg
            .watch
            .record(&course.sup, plan, plan_step, reading)?
        {
            Verdict::Go(goto, why) => {
                self.seg.exit = Some(goto);
                Some(Decision::Stop(goto, why))
            }
            Verdict::Fault(why) => Some(Decision::Fault(why)),
        }
    }

    /// Where the segment the cycler ended by itself leads, from its last record.
    fn own_exit(&self, course: &Course, plan: &Plan) -> Goto {
        let (Some(placed), Some((t, v, i))) = (self.steps.last(), self.last) else {
            return Goto::Next;
        };
        let last = LastRecord {
            plan_step: placed.plan_step,
            voltage_v: v,
            current_a: i,
            step_time_s: t - self.seg.step_start_s,
        };
        course.sup.exit(plan, &course.segment, last)
    }
}

impl<C: Cycler> CyclerRunner<C> {
    /// Acts on what a record decided: stops the cycler's step (the test goes on where the
    /// decision says once the cycler shows it stopped, or faults).
    pub(super) async fn decide(&mut self, k: usize, decision: Decision) {
        let addr = self.slots[k].addr;
        let Some(run) = self.slots[k].run.as_mut() else {
            return;
        };
        let t = run.state.last.map_or(0.0, |(t, _, _)| t);
        let (kind, message) = match &decision {
            Decision::Stop(goto, why) => {
                let whither = match goto {
                    Goto::Next => "the next step".to_string(),
                    Goto::End => "the end of the test".to_string(),
                    Goto::Step(j) => format!("\"{}\"", step_text(&run.plan, *j)),
                };
                (
                    "step",
                    format!("{why}: the daemon stops the cycler's step and goes on to {whither}"),
                )
            }
            Decision::Fault(why) => {
                run.fault = Some(why.clone());
                ("alarm", why.clone())
            }
        };
        tracing::info!(channel = %self.slots[k].spec.id, "{message}");
        self.send_batch(k);
        self.event(k, t, kind, message);
        if let Err(e) = self.cycler.stop(addr).await {
            // The exit stays pending; the step is stopped again on the next poll.
            tracing::warn!(channel = %self.slots[k].spec.id, "cannot stop the cycler's step: {e}");
            if let Some(run) = self.slots[k].run.as_mut() {
                run.stop_pending = true;
            }
        }
    }

    /// A cycler whose records carry no cell temperature (Maccor) is asked for a live reading
    /// while the daemon watches a temperature end of the step in progress; the reading is
    /// checked with the last record's other values.
    pub(super) async fn watch_live_temperature(&mut self, k: usize) -> Result<(), DriverError> {
        let Some(run) = self.slots[k].run.as_ref() else {
            return Ok(());
        };
        let (Some(placed), Some((t, v, i))) = (run.state.steps.last(), run.state.last) else {
            return Ok(());
        };
        if run.fault.is_some()
            || run.state.seg.exit.is_some()
            || run.state.last_temperature_c.is_some()
            || !run
                .course
                .sup
                .watches_temperature(&run.plan, placed.plan_step)
        {
            return Ok(());
        }
        let addr = self.slots[k].addr;
        let Some(temperature) = self.cycler.cell_temperature(addr).await? else {
            return Ok(());
        };
        let Some(run) = self.slots[k].run.as_mut() else {
            return Ok(());
        };
        let reading = Reading {
            test_time_s: t,
            voltage_v: v,
            current_a: i,
            temperature_c: Some(temperature),
            chamber_c: None,
        };
        let decision = run
            .state
            .watch(&run.course, &run.plan, placed.plan_step, reading);
        if let Some(decision) = decision {
            self.decide(k, decision).await;
        }
        Ok(())
    }

    /// A freshly started segment does not show on the cycler yet: wait a few polls; a start
    /// the cycler did not answer is sent again halfway; then the start counts as failed.
    pub(super) async fn not_started_yet(&mut self, k: usize) {
        let addr = self.slots[k].addr;
        let Some(run) = self.slots[k].run.as_mut() else {
            return;
        };
        run.idle_polls += 1;
        if run.start_unconfirmed && run.idle_polls == START_GRACE_POLLS / 2 {
            let name = run.state.cycler_test.clone();
            let schedule = schedule_of(&run.course.segment, self.target, &name);
            match self.cycler.start(addr, &schedule, &name).await {
                Ok(()) => {
                    if let Some(run) = self.slots[k].run.as_mut() {
                        run.start_unconfirmed = false;
                        let t = run.now(&self.shared.clock);
                        self.event(k, t, "state", format!("{name} sent again and started"));
                    }
                }
                Err(e) => {
                    tracing::warn!(channel = %self.slots[k].spec.id, "{name} sent again: {e}")
                }
            }
            return;
        }
        if run.idle_polls > START_GRACE_POLLS {
            let reason = format!(
                "the cycler does not show {} running {START_GRACE_POLLS} polls after it was \
                 started: it did not start",
                run.state.cycler_test
            );
            self.end(k, Ending::Faulted(reason));
        }
    }

    /// The segment on channel `k` is over (the cycler ended it, or the daemon did): the test
    /// ends, or the next segment starts where `goto` leads.
    pub(super) async fn segment_over(&mut self, k: usize, goto: Option<Goto>) {
        let Some(run) = self.slots[k].run.as_mut() else {
            return;
        };
        let goto = goto.unwrap_or_else(|| run.state.own_exit(&run.course, &run.plan));
        let (discharge, cycle) = (run.state.discharge_ah, run.state.cycle);
        let after = run.course.segment.to;
        let next =
            run.state
                .seg
                .walker
                .follow(&run.course.sup, &run.plan, goto, after, discharge, cycle);
        let from = match next {
            Next::End => return self.end(k, Ending::Finished),
            Next::Segment(from) => from,
        };
        let segment = match run.course.sup.segment(&run.plan, from) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("the next segment does not compile: {e}");
                return self.end(k, Ending::Faulted(reason));
            }
        };
        if let Err(reason) = self.start_segment(k, segment).await {
            self.end(k, Ending::Faulted(reason));
        }
    }

    /// Starts `segment` of the test on channel `k` on the cycler.
    async fn start_segment(&mut self, k: usize, segment: Segment) -> Result<(), String> {
        let clock = self.shared.clock.clone();
        let Slot {
            spec, addr, run, ..
        } = &mut self.slots[k];
        let run = run.as_mut().expect("a test runs");
        let number = run.state.seg.number + 1;
        let name = segment_name(run.journal.test_id(), number);
        if let (Some(t), Some(chamber)) = (chamber_set_point(&run.plan, &segment), &spec.chamber) {
            chamber.set_point(run.journal.test_id(), t);
        }
        let schedule = schedule_of(&segment, self.target, &name);
        // A start the cycler did not answer may have been carried out: the next polls tell
        // (the channel runs the segment's name), and the start is sent again if not.
        let unconfirmed = match self.cycler.start(*addr, &schedule, &name).await {
            Ok(()) => None,
            Err(e) if e.is_link_lost() => Some(e.to_string()),
            Err(e) => {
                return Err(format!(
                    "{} refused to start the next segment ({}) of the test: {e}; the channel \
                     is off",
                    self.device, schedule.file_name
                ));
            }
        };
        let now = run.now(&clock);
        let s = &mut run.state;
        s.cycler_test = name.clone();
        s.next_index = 1;
        s.seen_active = false;
        s.last = None;
        s.steps.restart(segment.compiled.step_map.clone());
        s.seg.number = number;
        s.seg.from = segment.from;
        s.seg.time_base_s = now;
        s.seg.exit = None;
        run.idle_polls = 0;
        run.stop_pending = false;
        run.start_unconfirmed = unconfirmed.is_some();
        run.last_state = cyclerd_drivers::cycler::ChannelState::Idle;
        let first = step_text(&run.plan, segment.from);
        let message = match &unconfirmed {
            None => format!(
                "segment {number} started on {} as {name}: plan steps from \"{first}\"",
                self.device
            ),
            Some(e) => format!(
                "segment {number} sent to {} as {name} (plan steps from \"{first}\"), but the \
                 start was not answered ({e}): the next polls tell whether it runs",
                self.device
            ),
        };
        run.course.segment = segment;
        tracing::debug!(channel = %spec.id, "{message}");
        self.send_batch(k);
        self.event(k, now, "state", message);
        Ok(())
    }
}
