//! What the simulators of schedule-running cyclers share, apart from their wire protocols.
//!
//! A simulated cycler reads the schedule it was sent back into a plan ([`load_schedule`]) and
//! runs cyclerd's engine against the channel's cell. The Neware and Arbin simulators run a test
//! as a [`PlanRun`] on a [`ChannelCell`]: time is integrated lazily up to the clock's now in
//! sub-steps, and a [`Sample`] is logged every record interval of test time, at every step
//! change and when a test ends, in a [`Log`] numbered from 1 without gaps. Each family turns
//! samples into its own wire records and names states and ends its own way (the `E` of
//! [`PlanRun`]). Maccor's tester integrates differently (direct mode shares its loop) and uses
//! only [`load_schedule`] and [`Log`].

use crate::cell::{Cell, CellParams};
use crate::cycler::Record;
use crate::stage::ideal_current;
use cyclerd_protocols::import::{SourceKind, import};
use cyclerd_protocols::{Command, Engine, Measurement, Outcome, Safety};
use std::fmt;

/// Longest simulated interval integrated in one piece: keeps the CV law stable and puts
/// terminations within a second of where the cell crossed them.
const MAX_SUBSTEP_S: f64 = 1.0;
/// Tolerance on record times, against floating-point drift in the sub-steps.
const TIME_EPS_S: f64 = 1e-9;

/// Why a schedule a cycler was sent cannot run; vendors answer the two cases differently.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ScheduleError {
    /// The text does not import into a plan.
    Import(String),
    /// The plan imports, but the engine refuses it (limits missing, or a step outside them).
    Refused(String),
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::Import(e) | ScheduleError::Refused(e) => f.write_str(e),
        }
    }
}

/// Imports the schedule `text` (named `origin` in errors) back into a plan and prepares the
/// engine that runs it under `limits`, as the cycler reads what it was sent.
pub(crate) fn load_schedule(
    text: &str,
    kind: SourceKind,
    origin: &str,
    limits: &Safety,
) -> Result<Engine, ScheduleError> {
    let plan = import(text, kind, origin).map_err(|e| ScheduleError::Import(e.to_string()))?;
    Engine::new(plan, limits).map_err(|e| ScheduleError::Refused(e.to_string()))
}

/// A device-side record log: record k (counting from 1, as the vendors do) at position k - 1.
/// Records are only ever appended, so any part can be read again at any time.
#[derive(Debug, Clone)]
pub(crate) struct Log<T> {
    /// The records, oldest first.
    entries: Vec<T>,
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log {
            entries: Vec::new(),
        }
    }
}

impl<T> Log<T> {
    /// How many records there are: the index of the newest one.
    pub(crate) fn count(&self) -> u64 {
        self.entries.len() as u64
    }

    pub(crate) fn push(&mut self, record: T) {
        self.entries.push(record);
    }

    pub(crate) fn last(&self) -> Option<&T> {
        self.entries.last()
    }

    pub(crate) fn entries(&self) -> &[T] {
        &self.entries
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Up to `max` records from index `from` (0 reads as 1), fewer where the log ends: a
    /// slice, so serving a page costs the page, not the log.
    pub(crate) fn page(&self, from: u64, max: usize) -> &[T] {
        let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        let end = start.saturating_add(max).min(self.entries.len());
        self.entries.get(start..end).unwrap_or(&[])
    }
}

/// One record a [`PlanRun`] logged, in cyclerd's units and sign; families turn it into their
/// wire records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Index in the test's log, from 1 without gaps.
    pub index: u64,
    /// Clock time of the record, s, for the vendors' wall-time stamps.
    pub clock_s: f64,
    /// Seconds since the test started (paused time does not count).
    pub test_time_s: f64,
    /// Seconds since the step the engine was in after the record's update started (0 on the
    /// record that closes a step).
    pub step_time_s: f64,
    /// Terminal voltage, V.
    pub voltage_v: f64,
    /// Current, A, positive into the cell.
    pub current_a: f64,
    /// Cell temperature, °C.
    pub temperature_c: Option<f64>,
    /// Plan index of the step the record was measured in, for the vendor's step number.
    pub plan_index: usize,
    /// Cycle number, from 1.
    pub cycle: u32,
    /// Charge moved in the step so far (charge plus discharge), Ah; on the record that closes
    /// a step, that step's total.
    pub step_capacity_ah: f64,
    /// Energy moved in the step so far, Wh; likewise.
    pub step_energy_wh: f64,
}

impl Sample {
    /// The sample as a [`Record`], under the vendor's number `step` for its plan step.
    pub(crate) fn record(&self, step: u32) -> Record {
        Record {
            index: self.index,
            test_time_s: self.test_time_s,
            voltage_v: self.voltage_v,
            current_a: self.current_a,
            temperature_c: self.temperature_c,
            step,
            cycle: self.cycle,
            capacity_ah: self.step_capacity_ah,
            energy_wh: self.step_energy_wh,
        }
    }
}

/// The cell on a channel's terminals and the clock time it has been integrated up to.
#[derive(Debug, Clone)]
pub(crate) struct ChannelCell {
    /// The cell model.
    cell: Cell,
    /// Clock time up to which the cell has been integrated, s.
    t: f64,
}

impl ChannelCell {
    /// A fresh cell of `params`, integrated up to clock time `now`.
    pub(crate) fn new(params: CellParams, now: f64) -> ChannelCell {
        ChannelCell {
            cell: Cell::new(params),
            t: now,
        }
    }

    pub(crate) fn cell(&self) -> &Cell {
        &self.cell
    }

    /// Integrates the cell up to clock time `now`, running `run` (when it is running) on it.
    pub(crate) fn advance<E: From<Outcome>>(&mut self, mut run: Option<&mut PlanRun<E>>, now: f64) {
        while self.t < now {
            let Some(run) = run
                .as_deref_mut()
                .filter(|r| matches!(r.state, RunState::Running))
            else {
                // Nothing flows: the exact RC solution takes any interval in one piece.
                self.cell.step(0.0, now - self.t);
                self.t = now;
                return;
            };
            let mut dt = (now - self.t).min(MAX_SUBSTEP_S);
            let to_record = run.next_record_s - run.test_time_s;
            if to_record > TIME_EPS_S {
                dt = dt.min(to_record);
            }
            self.cell.step(flowing(&self.cell, &run.command), dt);
            self.t += dt;
            run.test_time_s += dt;
            let m = self.measurement(run.test_time_s, flowing(&self.cell, &run.command));
            let (plan_index, cycle) = {
                let s = run.engine.status();
                (s.plan_index, s.cycle)
            };
            let update = run.engine.update(&m);
            let due = run.test_time_s >= run.next_record_s - TIME_EPS_S;
            if update.step_changed || due || update.outcome.is_some() {
                // The record closes the step it was measured in.
                let totals = match &update.ended_step {
                    Some(s) => (s.charge_ah + s.discharge_ah, s.energy_wh),
                    None => run.step_totals(),
                };
                run.log_sample(self.t, &m, plan_index, cycle, totals);
                run.next_record_s = run.test_time_s + run.record_interval_s;
            }
            if let Some(outcome) = update.outcome {
                run.state = RunState::Ended(E::from(outcome));
            }
            run.command = update.command;
        }
    }

    /// What the channel measures now with `current_a` flowing, at `test_time_s`.
    fn measurement(&self, test_time_s: f64, current_a: f64) -> Measurement {
        Measurement {
            chamber_c: None,
            test_time_s,
            voltage_v: self.cell.terminal_voltage(current_a),
            current_a,
            temperature_c: Some(self.cell.temperature_c()),
        }
    }
}

/// The current a channel drives under `command`: what an ideal cycler channel regulates to.
fn flowing(cell: &Cell, command: &Command) -> f64 {
    if command.output_on() {
        ideal_current(cell, command)
    } else {
        0.0
    }
}

/// Where a [`PlanRun`] is; `E` is how the family tells ends apart (finished, stopped, tripped).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RunState<E> {
    Running,
    /// Output off, test time standing still; may be resumed.
    Paused,
    /// Over: no more records. An end the engine reached comes from its [`Outcome`].
    Ended(E),
}

/// One test on a channel: the engine running the imported schedule and the records it logged.
#[derive(Debug, Clone)]
pub(crate) struct PlanRun<E> {
    /// Runs the imported schedule: the cycler's own schedule execution.
    engine: Engine,
    /// What the engine asked for at its last update; applied until the next.
    command: Command,
    /// Running, paused or ended (and how).
    state: RunState<E>,
    /// Test time, s; stands still while paused.
    test_time_s: f64,
    /// Test time at which the next interval record is due.
    next_record_s: f64,
    /// Test time between interval records, s.
    record_interval_s: f64,
    /// The device-side log of the test.
    log: Log<Sample>,
}

impl<E: From<Outcome>> PlanRun<E> {
    /// Starts `engine` on `channel` at test time 0, logging a record every `record_interval_s`
    /// of test time; the first record is the output just switched on.
    pub(crate) fn start(
        mut engine: Engine,
        channel: &ChannelCell,
        record_interval_s: f64,
    ) -> PlanRun<E> {
        let command = engine.start(0.0);
        let mut run = PlanRun {
            engine,
            command,
            state: RunState::Running,
            test_time_s: 0.0,
            next_record_s: record_interval_s,
            record_interval_s,
            log: Log::default(),
        };
        let m = channel.measurement(0.0, run.current_a(channel.cell()));
        let plan_index = run.engine.status().plan_index;
        run.log_sample(channel.t, &m, plan_index, 1, (0.0, 0.0));
        run
    }

    /// Ends the test `why` if it is running or paused, output off, logging the moment it
    /// ended unless a record was just taken. False when it was over already.
    pub(crate) fn end(&mut self, channel: &ChannelCell, why: E) -> bool {
        if !self.is_active() {
            return false;
        }
        let last = self.log.last().map_or(-1.0, |s| s.test_time_s);
        if self.test_time_s > last {
            let m = channel.measurement(self.test_time_s, self.current_a(channel.cell()));
            let s = self.engine.status();
            let (plan_index, cycle) = (s.plan_index, s.cycle);
            let totals = self.step_totals();
            self.log_sample(channel.t, &m, plan_index, cycle, totals);
        }
        self.state = RunState::Ended(why);
        self.command = Command::Off;
        true
    }
}

impl<E> PlanRun<E> {
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn state(&self) -> &RunState<E> {
        &self.state
    }

    /// Running or paused: the test is not over.
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.state, RunState::Running | RunState::Paused)
    }

    pub(crate) fn test_time_s(&self) -> f64 {
        self.test_time_s
    }

    pub(crate) fn log(&self) -> &Log<Sample> {
        &self.log
    }

    /// The current flowing into `cell` now: none unless the test is running.
    pub(crate) fn current_a(&self, cell: &Cell) -> f64 {
        match self.state {
            RunState::Running => flowing(cell, &self.command),
            _ => 0.0,
        }
    }

    /// Pauses a running test or resumes a paused one; false when it is in neither state.
    pub(crate) fn set_paused(&mut self, paused: bool) -> bool {
        self.state = match (&self.state, paused) {
            (RunState::Running, true) => RunState::Paused,
            (RunState::Paused, false) => RunState::Running,
            _ => return false,
        };
        true
    }

    /// Charge (charge plus discharge) and energy of the present step so far.
    fn step_totals(&self) -> (f64, f64) {
        let s = self.engine.status();
        (s.step_charge_ah + s.step_discharge_ah, s.step_energy_wh)
    }

    /// Logs `m`, taken at clock time `clock_s`, as a record of plan step `plan_index` with
    /// the step's counters `totals`.
    fn log_sample(
        &mut self,
        clock_s: f64,
        m: &Measurement,
        plan_index: usize,
        cycle: u32,
        totals: (f64, f64),
    ) {
        let step_start = self.engine.status().step_start_s;
        let sample = Sample {
            index: self.log.count() + 1,
            clock_s,
            test_time_s: m.test_time_s,
            step_time_s: (m.test_time_s - step_start).max(0.0),
            voltage_v: m.voltage_v,
            current_a: m.current_a,
            temperature_c: m.temperature_c,
            plan_index,
            cycle,
            step_capacity_ah: totals.0,
            step_energy_wh: totals.1,
        };
        self.log.push(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Chemistry;
    use cyclerd_protocols::compile::{Target, compile};
    use cyclerd_protocols::{Plan, PlanStep};

    /// How the tests tell ends apart.
    #[derive(Debug, Clone, PartialEq)]
    enum End {
        Engine(Outcome),
        Stopped,
    }

    impl From<Outcome> for End {
        fn from(outcome: Outcome) -> End {
            End::Engine(outcome)
        }
    }

    fn run(steps: &str, channel: &ChannelCell) -> PlanRun<End> {
        let yaml = format!(
            "protocol: t\nversion: 1\nparams: {{capacity: 2.5 Ah}}\n\
             safety: {{voltage: [2.5 V, 4.25 V], current: 5 A}}\nsteps: [\"{steps}\"]\n"
        );
        let plan = Plan::from_yaml(&yaml, "t.yaml").unwrap();
        let engine = Engine::new(plan, &Safety::default()).unwrap();
        PlanRun::start(engine, channel, 10.0)
    }

    fn channel() -> ChannelCell {
        ChannelCell::new(CellParams::new(Chemistry::Nmc, 2.5), 0.0)
    }

    fn times(run: &PlanRun<End>) -> Vec<f64> {
        run.log().entries().iter().map(|s| s.test_time_s).collect()
    }

    #[test]
    fn pages_are_cut_to_the_log() {
        let mut log = Log::default();
        for k in 1..=5u64 {
            log.push(k);
        }
        assert_eq!(log.page(0, 2), [1, 2]);
        assert_eq!(log.page(4, 10), [4, 5]);
        assert!(log.page(6, 1).is_empty());
        assert!(log.page(1, 0).is_empty());
        assert!(log.page(u64::MAX, usize::MAX).is_empty());
        assert_eq!(log.count(), 5);
    }

    #[test]
    fn records_come_every_interval_and_a_pause_holds_test_time_with_the_output_off() {
        let mut ch = channel();
        let mut r = run("Charge at C/5 for 1 hour", &ch);
        ch.advance(Some(&mut r), 100.0);
        assert_eq!(
            times(&r),
            (0..=10).map(|k| f64::from(k) * 10.0).collect::<Vec<_>>()
        );
        assert!((r.current_a(ch.cell()) - 0.5).abs() < 1e-12);

        assert!(r.set_paused(true));
        assert!(!r.set_paused(true));
        ch.advance(Some(&mut r), 200.0);
        assert_eq!(r.test_time_s(), 100.0);
        assert_eq!(r.log().count(), 11);
        assert_eq!(r.current_a(ch.cell()), 0.0);

        assert!(r.set_paused(false));
        ch.advance(Some(&mut r), 255.0);
        assert!((r.test_time_s() - 155.0).abs() < 1e-9);
        // Stopped between two interval records: the moment it ended is logged, once.
        assert!(r.end(&ch, End::Stopped));
        assert!(!r.end(&ch, End::Stopped));
        assert_eq!(r.state(), &RunState::Ended(End::Stopped));
        let last = *r.log().last().unwrap();
        assert_eq!((last.index, last.test_time_s), (17, r.test_time_s()));
        assert_eq!(last.clock_s, 255.0);
        ch.advance(Some(&mut r), 400.0);
        assert_eq!(r.log().count(), 17);
        assert!(r.log().entries().iter().all(|s| s.plan_index == 0));
    }

    #[test]
    fn the_engines_end_ends_the_run_with_its_last_record() {
        let mut ch = channel();
        let mut r = run("Rest for 25 seconds", &ch);
        ch.advance(Some(&mut r), 100.0);
        assert_eq!(r.state(), &RunState::Ended(End::Engine(Outcome::Finished)));
        assert_eq!(times(&r), [0.0, 10.0, 20.0, 25.0]);
        assert!(!r.end(&ch, End::Stopped));
    }

    #[test]
    fn a_schedule_that_does_not_import_is_told_from_one_the_engine_refuses() {
        let err = load_schedule("not XML", SourceKind::Neware, "x.xml", &Safety::default());
        assert!(matches!(err, Err(ScheduleError::Import(_))), "{err:?}");
        // A Maccor procedure carries no limits: without the tester's own there are none.
        let yaml = "protocol: t\nversion: 1\nparams: {capacity: 2.5 Ah}\n\
                    safety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nsteps: [\"Rest for 1 s\"]\n";
        let plan = Plan::from_yaml(yaml, "t.yaml").unwrap();
        let text = compile(&plan, Target::Maccor).unwrap();
        let err = load_schedule(&text, SourceKind::Maccor, "T.000", &Safety::default());
        assert!(matches!(err, Err(ScheduleError::Refused(_))), "{err:?}");
    }

    #[test]
    fn gitt_and_hppc_compiled_for_neware_load_into_the_simulator_with_their_loops_counting_cycles()
    {
        for yaml in [
            include_str!("../../deploy/protocols/gitt.yaml"),
            include_str!("../../deploy/protocols/hppc.yaml"),
        ] {
            let plan = Plan::from_yaml(yaml, "p.yaml").unwrap();
            let text = compile(&plan, Target::Neware).unwrap();
            let engine = load_schedule(&text, SourceKind::Neware, "p.xml", &Safety::default())
                .unwrap_or_else(|e| panic!("{e:?}"));
            let back = &engine.plan().steps;
            assert_eq!(back.len(), plan.steps.len());
            for (a, b) in plan.steps.iter().zip(back) {
                match (a, b) {
                    (
                        PlanStep::LoopStart {
                            count, end, cycle, ..
                        },
                        PlanStep::LoopStart {
                            count: c,
                            end: e,
                            cycle: y,
                            ..
                        },
                    ) => assert!(!cycle && (count, end, true) == (c, e, *y)),
                    (PlanStep::Action(_), PlanStep::Action(_)) => {}
                    _ => assert_eq!(a, b),
                }
            }
        }
    }
}
