//! A channel: where one cell is tested, stepped by the daemon or followed on a cycler.
//!
//! This module holds the vocabulary every kind of channel shares: what a channel knows about
//! itself ([`ChannelSpec`]), the requests it serves ([`ChannelCmd`], [`TestRequest`]), why a
//! start is refused ([`StartError`]), how a test ends ([`Ending`]), and what a channel's task is
//! started with ([`ChannelStart`]). Its children use it; it uses none of them.
//!
//! - [`journal`]: [`journal::TestJournal`], the only code that builds a test's outbox entries
//!   and checkpoints, and its live state's test fields.
//! - [`stepped`]: the stepped runner: the daemon is the cycler (engine, power stage, safety).
//! - [`native`]: the native runner: a cycler runs the schedule, the daemon follows it.
//! - [`offline`]: the channels of a device that does not answer yet (see [`crate::retry`]).

pub mod journal;
pub mod native;
pub mod offline;
mod quality;
pub mod stepped;

use crate::chamber::ChamberLink;
use crate::config::ResumePolicy;
use crate::outbox::{Checkpoint, Outbox};
use crate::proto::control::ChannelSnapshot;
use cyclerd_drivers::Clock;
use cyclerd_protocols::{Control, Plan, PlanStep, Safety};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// What a channel shows of itself, to the control API and the daemon's status.
pub type Live = watch::Sender<ChannelSnapshot>;

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
    /// Answered from the channel's loop between two of its steps: a loop that answers is not
    /// stuck (the service watchdog, [`crate::Daemon::stuck_channels`]).
    Ping { reply: oneshot::Sender<()> },
}

/// A validated request to run a protocol.
pub struct TestRequest {
    /// The plan, resolved with the test's parameters ([`Plan::params`]).
    pub plan: Plan,
    pub source: String,
    /// Where the protocol came from, for messages.
    pub origin: String,
    pub metadata: HashMap<String, String>,
    /// What the operator should know of how the test was set up (which capacity its C-rates
    /// use, parameters given at start): answered to the start and recorded as events.
    pub notes: Vec<String>,
}

/// Handles shared by every channel of a daemon.
#[derive(Clone)]
pub struct Shared {
    pub clock: Clock,
    pub outbox: Outbox,
    /// Every sample read from any device since the daemon started.
    pub acquired: Arc<AtomicU64>,
    /// Failed reads of any channel's device (each failed poll) since the daemon started.
    pub device_errors: Arc<AtomicU64>,
    /// Links to a device made again after it was lost, since the daemon started.
    pub reconnects: Arc<AtomicU64>,
    /// The thresholds of the quality checks (`[quality]`), by protocol.
    pub quality: Arc<crate::proto::quality::config::Layered>,
}

impl Shared {
    /// Counts a failed read of a device.
    pub fn device_error(&self) {
        self.device_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a reconnection when `result` says it was made.
    pub fn reconnected<E>(&self, result: Result<(), E>) -> Result<(), E> {
        if result.is_ok() {
            self.reconnects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }
}

/// Everything a channel task needs besides its device.
pub struct ChannelStart {
    pub spec: ChannelSpec,
    pub shared: Shared,
    pub live: Live,
    pub resume: Option<(Checkpoint, ResumePolicy)>,
    pub cmds: mpsc::Receiver<ChannelCmd>,
    pub stop: watch::Receiver<bool>,
    /// Turns true once every device was tried at start: an interrupted test resumes only
    /// then, so that a start that fails on another device keeps it for the next one.
    pub started: watch::Receiver<bool>,
}

/// How a test ended, with why (a finished test needs no reason).
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The protocol ran to its end.
    Finished,
    /// Someone or something stopped it: the operator, the cycler.
    Stopped(String),
    /// A fault ended it: a limit, an alarm, lost communication, an unsafe chamber.
    Faulted(String),
    /// Not ended: the daemon stopped under it (a clean shutdown, e.g. `systemctl restart` for an
    /// upgrade). Its output is off and its checkpoint stays, so the next start takes it up by
    /// the `[daemon] resume` policy, exactly as after a crash; ending it is `cyclerctl stop`.
    Interrupted(String),
}

impl Ending {
    /// The outcome as the hub records it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Ending::Finished => "finished",
            Ending::Stopped(_) => "stopped",
            Ending::Faulted(_) => "faulted",
            Ending::Interrupted(_) => "interrupted",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Ending::Finished => "",
            Ending::Stopped(reason) | Ending::Faulted(reason) | Ending::Interrupted(reason) => {
                reason
            }
        }
    }

    /// The kind of the event that records why: a fault is an alarm.
    pub fn event_kind(&self) -> &'static str {
        match self {
            Ending::Faulted(_) => "alarm",
            _ => "state",
        }
    }

    /// The daemon shuts down while the test runs: it is left interrupted, for the next start.
    pub fn daemon_stopped() -> Ending {
        Ending::Interrupted(
            "the daemon stopped with the test running: output off, the test interrupted; the \
             next start takes it up by the [daemon] resume policy"
                .into(),
        )
    }

    /// A stop asked with `reason`, or the operator's stop when it gives none.
    pub fn stopped_by(reason: String) -> Ending {
        if reason.is_empty() {
            Ending::Stopped("stopped by the operator".into())
        } else {
            Ending::Stopped(reason)
        }
    }
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
