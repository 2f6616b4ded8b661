//! Supervised execution: how a plan runs on a native cycler whose schedule format cannot say
//! all of it.
//!
//! A cycler runs what its format can say; the daemon decides the rest from the records it
//! downloads. [`Supervision::new`] sorts every plan index into a [`Role`]:
//! - **native**: compiled into the cycler's schedule as it is;
//! - **watched**: an action whose end the daemon decides in part (a termination the format
//!   lacks: temperature, test time across segments, step capacity or energy, dV/dt) or
//!   wholly (a chamber step: the cycler rests while the daemon sets the chamber and waits for
//!   it to settle). The cycler runs the step with its native terminations (and a long
//!   step-time backstop when none is left); the daemon stops it when its own condition holds.
//! - **daemon loop**: a loop the daemon counts itself (an exit on capacity, retention or cycle
//!   count; a loop the format cannot say; a loop around anything watched).
//!
//! The daemon then runs the plan as a sequence of [`Segment`]s: each a stretch of native steps
//! (whole native loops included) that ends before a daemon loop's marker, before a chamber
//! step, or after a watched step. A segment compiles to an ordinary schedule of the target,
//! with the plan's safety limits as the cycler's own protection (the backstop in every
//! segment), and a step map back to the original plan's indices, so records of every segment
//! are placed in one plan with one step count and one cycle numbering. [`Walker`] is the
//! daemon's control flow between segments (loops it counts, where a segment's end leads);
//! [`StepWatch`] decides a watched step's end from its records.
//!
//! A plan that needs no supervision is one segment: exactly the schedule [`compile`] writes.
//!
//! [`compile`]: crate::compile::compile

mod probe;
mod report;
mod walk;
mod watch;

use probe::{probe, probe_loop};
use report::{condition_text, loop_condition_text, loop_path, watched_text};

pub use walk::{Next, Walker};
pub use watch::{Reading, StepWatch, Verdict};

use crate::compile::{self, CompileError, Compiled, StepMap, Target};
use crate::plan::{ActionStep, Condition, Control, Goto, Plan, PlanStep, Termination};

/// Step-time backstop the cycler gets for a step whose every end the daemon decides: long
/// enough never to end a real step first, short enough for every vendor's time field
/// (Neware's milliseconds in 32 bits).
pub const BACKSTOP_S: f64 = 7.0 * 86_400.0;

/// How one plan index runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// The cycler runs it as compiled (actions, markers of native loops, the end).
    Native,
    /// An action whose end the daemon decides in part or wholly.
    Watched {
        /// Indices (into the step's terminations) of the conditions the daemon checks.
        watched: Vec<usize>,
        /// A chamber step: the cycler rests while the daemon sets the chamber and waits.
        chamber: bool,
    },
    /// A loop marker (start or end) of a loop the daemon counts, with why.
    DaemonLoop(String),
}

/// Which targets a daemon can follow, and so supervise: those with a driver.
pub fn can_supervise(target: Target) -> bool {
    matches!(target, Target::Maccor | Target::Neware | Target::Arbin)
}

/// A plan sorted into native, watched and daemon-counted parts for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Supervision {
    target: Target,
    /// One role per plan index.
    roles: Vec<Role>,
}

/// One line of what `check` says about a plan on a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The step's path in the protocol, or the loop's first step.
    pub path: String,
    /// The step or loop as written.
    pub description: String,
    pub how: How,
}

/// How a step or loop runs on a target.
#[derive(Debug, Clone, PartialEq)]
pub enum How {
    Native,
    /// The daemon decides this, as the text says (with its reaction time).
    Supervised(String),
    /// No path can run it, and why.
    Impossible(String),
}

/// A stretch of the plan the cycler runs as one schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Original plan indices `from..to` (no daemon loop marker, no end inside).
    pub from: usize,
    pub to: usize,
    /// The schedule, with a step map to the *original* plan's indices.
    pub compiled: Compiled,
    /// The watched step that ends the segment, if one does.
    pub watched: Option<usize>,
}

impl Supervision {
    /// Sorts `plan` for `target`. Errors are everything no path can run (all of it, not the
    /// first): a control the target has no form for, or any supervised part on a target the
    /// daemon cannot follow.
    pub fn new(plan: &Plan, target: Target) -> Result<Supervision, Vec<CompileError>> {
        let whole = compile::compile(plan, target).is_ok();
        // Test-time ends are native only where the whole test is one schedule: a later
        // segment's cycler counts its test time from that segment's start.
        let (sup, errors) = Self::sort(plan, target, true);
        let (sup, errors) = if sup.needs_supervision() || !whole {
            Self::sort(plan, target, false)
        } else {
            (sup, errors)
        };
        if errors.is_empty() {
            Ok(sup)
        } else {
            Err(errors)
        }
    }

    fn sort(
        plan: &Plan,
        target: Target,
        test_time_native: bool,
    ) -> (Supervision, Vec<CompileError>) {
        let mut roles = vec![Role::Native; plan.steps.len()];
        // What the target refuses for the whole plan (its safety limits) is said once.
        let rest = ActionStep {
            path: "the protocol".into(),
            ..ActionStep::default()
        };
        if let Err(e) = probe(plan, target, &rest, Control::Rest, &[]) {
            return (Supervision { target, roles }, vec![e]);
        }
        let mut errors = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            let PlanStep::Action(a) = step else { continue };
            let chamber = matches!(a.control, Control::Chamber { .. });
            if !chamber && let Err(e) = probe(plan, target, a, a.control, &[]) {
                errors.push(e);
                continue;
            }
            let control = if chamber { Control::Rest } else { a.control };
            let watched: Vec<usize> = a
                .terminations
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    (matches!(t.condition, Condition::TestTime(_)) && !test_time_native)
                        || probe(plan, target, a, control, &[t.condition]).is_err()
                })
                .map(|(n, _)| n)
                .collect();
            if chamber || !watched.is_empty() {
                roles[i] = Role::Watched { watched, chamber };
            }
        }
        // Innermost loops first: a loop around a daemon loop is one too.
        let mut starts: Vec<usize> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, PlanStep::LoopStart { .. }))
            .map(|(i, _)| i)
            .collect();
        starts.reverse();
        for start in starts {
            let PlanStep::LoopStart {
                count,
                cycle,
                end,
                until,
            } = &plan.steps[start]
            else {
                continue;
            };
            let why = if !until.is_empty() {
                Some(format!(
                    "its exit ({})",
                    until
                        .iter()
                        .map(loop_condition_text)
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))
            } else if let Some(inner) = (start + 1..*end).find(|&j| roles[j] != Role::Native) {
                Some(
                    match &roles[inner] {
                        Role::Watched { chamber: true, .. } => "it holds a chamber step",
                        Role::Watched { .. } => "it holds a step the daemon ends",
                        _ => "it holds a loop the daemon counts",
                    }
                    .to_string(),
                )
            } else {
                probe_loop(plan, target, *count, *cycle)
                    .err()
                    .map(|e| e.message)
            };
            if let Some(why) = why {
                roles[start] = Role::DaemonLoop(why.clone());
                roles[*end] = Role::DaemonLoop(why);
            }
        }
        let sup = Supervision { target, roles };
        if sup.needs_supervision() && !can_supervise(target) {
            for (i, step) in plan.steps.iter().enumerate() {
                let (path, description, what) = match (step, sup.role(i)) {
                    (PlanStep::Action(a), Role::Watched { watched, chamber }) => {
                        let what = if *chamber {
                            "a chamber step".to_string()
                        } else {
                            format!("the end on {}", watched_text(a, watched))
                        };
                        (a.path.clone(), a.description.clone(), what)
                    }
                    (PlanStep::LoopStart { count, .. }, Role::DaemonLoop(why)) => (
                        loop_path(plan, i),
                        format!("loop of at most {count} passes"),
                        format!("a loop whose passes the daemon would count ({why})"),
                    ),
                    _ => continue,
                };
                errors.push(CompileError {
                    target,
                    step: path,
                    description,
                    message: format!(
                        "the format cannot say {what}, and cyclerd has no {target} driver to \
                         supervise it"
                    ),
                });
            }
        }
        (sup, errors)
    }

    /// The target this supervision is for.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The role of plan index `i`.
    pub fn role(&self, i: usize) -> &Role {
        self.roles.get(i).unwrap_or(&Role::Native)
    }

    /// Whether anything is left to the daemon (else the plan is one native schedule).
    pub fn needs_supervision(&self) -> bool {
        self.roles.iter().any(|r| *r != Role::Native)
    }

    /// Whether the daemon checks a cell-temperature end of plan step `i` (a cycler whose
    /// records carry no temperature is then asked for a live reading).
    pub fn watches_temperature(&self, plan: &Plan, i: usize) -> bool {
        let (Role::Watched { watched, .. }, Some(PlanStep::Action(a))) =
            (self.role(i), plan.steps.get(i))
        else {
            return false;
        };
        watched
            .iter()
            .filter_map(|&n| a.terminations.get(n))
            .any(|t| {
                matches!(
                    t.condition,
                    Condition::TemperatureAtLeast(_) | Condition::TemperatureAtMost(_)
                )
            })
    }

    fn is_daemon_loop(&self, i: usize) -> bool {
        matches!(self.role(i), Role::DaemonLoop(_))
    }

    /// The segment that starts at plan index `from` (an action or a native loop's start).
    pub fn segment(&self, plan: &Plan, from: usize) -> Result<Segment, CompileError> {
        let mut to = from;
        let mut watched = None;
        while let Some(step) = plan.steps.get(to) {
            match (step, self.role(to)) {
                (PlanStep::End, _) | (_, Role::DaemonLoop(_)) => break,
                (PlanStep::LoopStart { end, .. }, _) => to = end + 1,
                // Entered by a jump into a loop's body: the walker counts its passes.
                (PlanStep::LoopEnd { start }, _) if *start < from => break,
                (PlanStep::Action(_), Role::Watched { chamber, .. }) => {
                    if *chamber && to > from {
                        break;
                    }
                    watched = Some(to);
                    to += 1;
                    break;
                }
                _ => to += 1,
            }
        }
        if to == from {
            return Err(CompileError {
                target: self.target,
                step: format!("plan index {from}"),
                description: String::new(),
                message: "no segment starts here (a loop marker or the end)".into(),
            });
        }
        let sub = self.sub_plan(plan, from, to);
        let compiled = compile::compile_mapped(&sub, self.target)?;
        let plan_steps = compiled
            .step_map
            .plan_steps
            .iter()
            .map(|s| s.map(|s| s + from))
            .collect();
        Ok(Segment {
            from,
            to,
            compiled: Compiled {
                text: compiled.text,
                step_map: StepMap { plan_steps },
            },
            watched,
        })
    }

    /// Every segment the test can run, in plan order: the stretches a linear reading gives,
    /// and those that begin where a jump out of a segment lands. What `compile` writes.
    pub fn segments(&self, plan: &Plan) -> Result<Vec<Segment>, CompileError> {
        let mut starts = std::collections::BTreeSet::new();
        let mut i = 0;
        while i < plan.steps.len() {
            let begins = match plan.steps[i] {
                PlanStep::Action(_) => true,
                PlanStep::LoopStart { .. } => !self.is_daemon_loop(i),
                _ => false,
            };
            if begins {
                let seg = self.segment(plan, i)?;
                starts.insert(i);
                i = seg.to;
            } else {
                i += 1;
            }
        }
        for step in &plan.steps {
            if let PlanStep::Action(a) = step {
                for t in &a.terminations {
                    if let Goto::Step(j) = t.goto
                        && matches!(plan.steps.get(j), Some(PlanStep::Action(_)))
                        && !starts.iter().any(|&s| {
                            self.segment(plan, s)
                                .is_ok_and(|seg| (seg.from..seg.to).contains(&j))
                        })
                    {
                        starts.insert(j);
                    }
                }
            }
        }
        starts.into_iter().map(|s| self.segment(plan, s)).collect()
    }

    /// Plan indices `from..to` as a plan of their own: jumps inside kept, jumps out become the
    /// schedule's end (the daemon works out where they lead from the last record), watched
    /// ends and chamber controls left to the daemon.
    fn sub_plan(&self, plan: &Plan, from: usize, to: usize) -> Plan {
        let inside = |j: usize| (from..to).contains(&j);
        let mut steps: Vec<PlanStep> = plan.steps[from..to]
            .iter()
            .enumerate()
            .map(|(k, step)| match step {
                PlanStep::Action(a) => {
                    let mut a = a.clone();
                    let i = from + k;
                    if let Role::Watched { watched, chamber } = self.role(i) {
                        if *chamber {
                            a.control = Control::Rest;
                        }
                        a.terminations = a
                            .terminations
                            .iter()
                            .enumerate()
                            .filter(|(n, _)| !watched.contains(n))
                            .map(|(_, t)| *t)
                            .collect();
                        if a.terminations.is_empty() {
                            a.terminations.push(Termination {
                                condition: Condition::StepTime(BACKSTOP_S),
                                goto: Goto::Next,
                            });
                        }
                    }
                    for t in &mut a.terminations {
                        t.goto = match t.goto {
                            Goto::Step(j) if inside(j) => Goto::Step(j - from),
                            Goto::Step(j) if j == to && i + 1 == to => Goto::Next,
                            Goto::Step(_) | Goto::End => Goto::End,
                            Goto::Next => Goto::Next,
                        };
                    }
                    PlanStep::Action(a)
                }
                PlanStep::LoopStart {
                    count,
                    cycle,
                    end,
                    until,
                } => PlanStep::LoopStart {
                    count: *count,
                    cycle: *cycle,
                    end: end - from,
                    until: until.clone(),
                },
                PlanStep::LoopEnd { start } => PlanStep::LoopEnd {
                    start: start - from,
                },
                PlanStep::End => PlanStep::End,
            })
            .collect();
        steps.push(PlanStep::End);
        Plan {
            steps,
            ..plan.clone()
        }
    }

    /// Where a segment that the cycler ended by itself leads: the first termination of the
    /// step it ended in that leaves the segment and holds on its last record (voltage,
    /// current and step time, as the cycler compared them), else [`Goto::Next`]: on from the
    /// index after the segment.
    pub fn exit(&self, plan: &Plan, segment: &Segment, last: LastRecord) -> Goto {
        let Some(PlanStep::Action(a)) = plan.steps.get(last.plan_step) else {
            return Goto::Next;
        };
        let inside = |j: usize| (segment.from..segment.to).contains(&j);
        let leaving: Vec<&Termination> = a
            .terminations
            .iter()
            .filter(|t| match t.goto {
                Goto::End => true,
                Goto::Step(j) => !inside(j),
                Goto::Next => false,
            })
            .collect();
        let holds = |c: &Condition| match *c {
            Condition::VoltageAtLeast(v) => last.voltage_v >= v - VOLTAGE_SLACK_V,
            Condition::VoltageAtMost(v) => last.voltage_v <= v + VOLTAGE_SLACK_V,
            Condition::CurrentMagnitudeAtMost(x) => last.current_a.abs() <= x,
            Condition::StepTime(d) => last.step_time_s >= d - 1.0,
            _ => false,
        };
        if let Some(t) = leaving.iter().find(|t| holds(&t.condition)) {
            return t.goto;
        }
        if last.plan_step + 1 >= segment.to {
            return Goto::Next;
        }
        // Ended mid-segment: only a jump out does that.
        leaving.first().map_or(Goto::Next, |t| t.goto)
    }
}

/// How far past a voltage threshold a cycler's closing record may still read (its ADC and
/// the record taken a moment after the comparison).
const VOLTAGE_SLACK_V: f64 = 0.002;

/// The last record of a segment, as [`Supervision::exit`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastRecord {
    pub plan_step: usize,
    pub voltage_v: f64,
    pub current_a: f64,
    pub step_time_s: f64,
}

#[cfg(test)]
mod tests;
